"""Virtual CPUs from ``query-cpus-fast``.

Sample output::

    qemu_vcpus{vm="web1"} 2
    qemu_vcpu_info{vm="web1",vcpu="0",thread_id="13551"} 1

A monitor may list any number of vCPUs: the first :data:`MAX_VCPUS` get series (here and in
the ``host`` collector), the rest are left out, logged once per VM.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from qmp_exporter.collectors.base import Collector, Connection, Query
from qmp_exporter.collectors.values import as_count, as_dict, as_list
from qmp_exporter.textformat import Family, Sample

log = logging.getLogger(__name__)

#: vCPUs given series per VM (and so distinct vCPU threads read by the ``host`` collector):
#: QEMU's largest x86 machines have 4,096 (``-M q35`` with x2APIC); a monitor listing more
#: is not believed past that.
MAX_VCPUS = 4096

VCPUS = Family("qemu_vcpus", "gauge", "Number of virtual CPUs.")
VCPU_INFO = Family(
    "qemu_vcpu_info", "gauge", "One series per vCPU with its host thread id; value 1."
)


class VcpuCollector(Collector):
    """The number of vCPUs, and each vCPU's host thread id (to match with per-thread
    metrics such as process_exporter's) as an info series."""

    name = "vcpu"
    required_commands = ("query-cpus-fast",)
    poll_commands = ("query-cpus-fast",)
    families = (VCPUS, VCPU_INFO)

    def __init__(self, available_commands: frozenset[str] | None, vm: str = "") -> None:
        super().__init__(available_commands)
        self.vm = vm
        self._capped = False  # logged that the list was cut

    @classmethod
    def for_connection(cls, connection: Connection) -> VcpuCollector:
        return cls(connection.available_commands, connection.vm)

    def serves_again(self, connection: Connection) -> bool:
        """Kept across a ``poll``-mode monitor's connections: it holds only whether it has
        logged a list cut at :data:`MAX_VCPUS` (once per VM, not per poll)."""
        return True

    async def collect(self, query: Query) -> Sequence[Sample]:
        answer = await query("query-cpus-fast", None)
        samples = parse_cpus_fast(answer)
        listed = samples[0][2]
        if listed > MAX_VCPUS and not self._capped:
            self._capped = True
            text = "VM %r lists %d vCPUs: only the first %d get series"
            log.warning(text, self.vm, listed, MAX_VCPUS)
        return samples


def parse_cpus_fast(answer: Any) -> list[Sample]:
    """Samples from a ``query-cpus-fast`` answer (``[]`` on ``-M none``): the number
    listed, and the first :data:`MAX_VCPUS` vCPUs."""
    cpus = as_list(answer, "query-cpus-fast")
    samples = [VCPUS.sample((), len(cpus))]
    seen: set[int] = set()
    for position, item in enumerate(cpus[:MAX_VCPUS]):
        cpu = as_dict(item, f"query-cpus-fast[{position}]")
        index = as_count(cpu.get("cpu-index"), f"query-cpus-fast[{position}].cpu-index")
        thread = as_count(cpu.get("thread-id"), f"query-cpus-fast[{position}].thread-id")
        if index in seen:
            raise ValueError(f"query-cpus-fast: cpu-index {index} listed twice")
        seen.add(index)
        samples.append(VCPU_INFO.sample((("vcpu", str(index)), ("thread_id", str(thread))), 1))
    return samples
