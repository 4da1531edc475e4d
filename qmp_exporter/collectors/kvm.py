"""Whether the VM runs with KVM acceleration, from ``query-kvm``.

Sample output::

    qemu_kvm_enabled{vm="web1"} 1
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from qmp_exporter.collectors.base import Collector, Query
from qmp_exporter.collectors.values import as_bool, as_dict
from qmp_exporter.textformat import Family, Sample

KVM_ENABLED = Family("qemu_kvm_enabled", "gauge", "1 if the VM uses KVM acceleration.")


class KvmCollector(Collector):
    """1 when KVM accelerates the VM, 0 under TCG. The accelerator is fixed for the life of
    a QEMU process, so this asks once per connection and repeats the answer."""

    name = "kvm"
    required_commands = ("query-kvm",)
    families = (KVM_ENABLED,)

    def __init__(self, available_commands: frozenset[str] | None) -> None:
        super().__init__(available_commands)
        self._samples: tuple[Sample, ...] | None = None

    async def collect(self, query: Query) -> Sequence[Sample]:
        if self._samples is None:
            self._samples = tuple(parse_kvm(await query("query-kvm", None)))
        return self._samples


def parse_kvm(answer: Any) -> list[Sample]:
    """Samples from a ``query-kvm`` answer."""
    info = as_dict(answer, "query-kvm")
    return [KVM_ENABLED.sample((), int(as_bool(info.get("enabled"), "enabled")))]
