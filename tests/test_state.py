"""``VMState.same_but_timing``: derived from the dataclass's fields, so none is missed."""

from __future__ import annotations

import dataclasses

import pytest

from qmp_exporter.config import MonitorConfig
from qmp_exporter.fleet.state import TIMING_FIELDS, Counters, Identity, VMState, VncState

BEFORE = VMState(MonitorConfig("vm", "unix:/run/vm.qmp"))
#: A value different from ``BEFORE``'s for every field.
OTHER = {
    "monitor": MonitorConfig("vm", "unix:/run/other.qmp"),
    "up": True,
    "identity": Identity(version="7.2.0"),
    "status": "running",
    "running": True,
    "vnc": VncState(enabled=True),
    "samples": (("qemu_x", (), 1.0),),
    "collector_results": (("block", True),),
    "error_reason": "connect",
    "error": "refused",
    "last_success": 1.0,
    "last_poll": 2.0,
    "poll_duration": 0.5,
    "counters": Counters(connections=1),
}


def test_every_field_has_a_case_here():
    assert {f.name for f in dataclasses.fields(VMState)} == OTHER.keys()


@pytest.mark.parametrize("name", sorted(OTHER))
def test_only_the_timing_fields_are_ignored(name):
    changed = dataclasses.replace(BEFORE, **{name: OTHER[name]})
    assert changed.same_but_timing(BEFORE) == (name in TIMING_FIELDS)
    assert BEFORE.same_but_timing(changed) == (name in TIMING_FIELDS)
