"""The fleet's listener API (``added``, ``changed(timing_only)``, ``removed``) with the QMP
monitor source's real pollers against a scripted monitor."""

from __future__ import annotations

import asyncio
from pathlib import Path

from qmp_exporter.config import MonitorConfig
from qmp_exporter.fleet.hub import Fleet
from qmp_exporter.fleet.state import VMState
from qmp_exporter.polling.monitors import MonitorSource
from qmp_exporter.polling.poller import PollSettings
from tests.helpers.scripted_monitor import ScriptedMonitor
from tests.helpers.waiting import wait_until

SETTINGS = PollSettings(interval=0.05, timeout=2.0, start_spread=0)


class Recorder:
    """A fleet listener that writes down what it hears."""

    def __init__(self) -> None:
        self.heard: list[tuple[str, str, VMState | None, bool | None]] = []

    def added(self, name: str, state: VMState) -> None:
        self.heard.append(("added", name, state, None))

    def removed(self, name: str) -> None:
        self.heard.append(("removed", name, None, None))

    def changed(self, name: str, state: VMState, timing_only: bool) -> None:
        self.heard.append(("changed", name, state, timing_only))

    def changes(self) -> list[tuple[VMState, bool]]:
        return [(s, t) for _, _, s, t in self.heard if s is not None and t is not None]


def monitors_in(fleet: Fleet) -> MonitorSource:
    """The QMP monitors' source of ``fleet``."""
    return MonitorSource(fleet.source("qmp"), SETTINGS)


def test_listener_hears_added_then_changes_then_removed(tmp_path: Path) -> None:
    async def scenario() -> Recorder:
        async with ScriptedMonitor(str(tmp_path / "vm.qmp")) as monitor:
            fleet = Fleet()
            source = monitors_in(fleet)
            recorder = Recorder()
            fleet.subscribe(recorder)
            await source.apply([MonitorConfig("vm", monitor.address, labels=(("team", "ops"),))])
            await wait_until(lambda: any(t for _, t in recorder.changes()))
            await source.apply([])
            return recorder

    recorder = asyncio.run(scenario())
    kind, name, state, _ = recorder.heard[0]
    assert (kind, name) == ("added", "vm")
    assert state is not None and not state.up and state.monitor.labels == (("team", "ops"),)
    first_poll, timing_only = recorder.changes()[0]
    assert first_poll.up and first_poll.counters.connections == 1 and not timing_only
    later, timing_only = next(c for c in recorder.changes() if c[1])
    assert later.up and later.same_but_timing(first_poll)
    assert recorder.heard[-1] == ("removed", "vm", None, None)


def test_late_subscriber_hears_every_vm_added(tmp_path: Path) -> None:
    async def scenario() -> tuple[Recorder, list[str]]:
        fleet = Fleet()
        source = monitors_in(fleet)
        monitors = [MonitorConfig(n, f"unix:{tmp_path}/{n}.qmp", "poll") for n in ("x", "y")]
        await source.apply(monitors)
        recorder = Recorder()
        fleet.subscribe(recorder)
        names = sorted(fleet.states)
        await source.close()
        return recorder, names

    recorder, names = asyncio.run(scenario())
    assert names == ["x", "y"]
    added = [name for kind, name, _, _ in recorder.heard if kind == "added"]
    removed = [name for kind, name, _, _ in recorder.heard if kind == "removed"]
    assert sorted(added) == ["x", "y"] and sorted(removed) == ["x", "y"]
    assert [kind for kind, *_ in recorder.heard[:2]] == ["added", "added"]


def test_changed_monitor_is_published_with_its_counters_kept(tmp_path: Path) -> None:
    async def scenario() -> tuple[Recorder, int]:
        async with ScriptedMonitor(str(tmp_path / "vm.qmp")) as monitor:
            fleet = Fleet()
            source = monitors_in(fleet)
            recorder = Recorder()
            fleet.subscribe(recorder)
            await source.apply([MonitorConfig("vm", monitor.address)])
            await wait_until(lambda: any(s.up for s, _ in recorder.changes()))
            await source.apply([MonitorConfig("vm", monitor.address, labels=(("team", "db"),))])
            relabelled = len(recorder.heard)
            await source.close()
            return recorder, relabelled

    recorder, relabelled = asyncio.run(scenario())
    kind, _, state, timing_only = recorder.heard[relabelled - 1]
    assert kind == "changed" and timing_only is False
    assert state is not None and state.monitor.labels == (("team", "db"),)
    assert state.counters.connections >= 1, "counters survive a restart"
