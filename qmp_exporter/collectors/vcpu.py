"""Virtual CPUs from ``query-cpus-fast``.

Sample output::

    qemu_vcpus{vm="web1"} 2
    qemu_vcpu_info{vm="web1",vcpu="0",thread_id="13551"} 1
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from qmp_exporter.collectors.base import Collector, Query
from qmp_exporter.collectors.values import as_count, as_dict, as_list
from qmp_exporter.textformat import Family, Sample

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

    async def collect(self, query: Query) -> Sequence[Sample]:
        return parse_cpus_fast(await query("query-cpus-fast", None))


def parse_cpus_fast(answer: Any) -> list[Sample]:
    """Samples from a ``query-cpus-fast`` answer (``[]`` on ``-M none``)."""
    cpus = as_list(answer, "query-cpus-fast")
    samples = [VCPUS.sample((), len(cpus))]
    seen: set[int] = set()
    for position, item in enumerate(cpus):
        cpu = as_dict(item, f"query-cpus-fast[{position}]")
        index = as_count(cpu.get("cpu-index"), f"query-cpus-fast[{position}].cpu-index")
        thread = as_count(cpu.get("thread-id"), f"query-cpus-fast[{position}].thread-id")
        if index in seen:
            raise ValueError(f"query-cpus-fast: cpu-index {index} listed twice")
        seen.add(index)
        samples.append(VCPU_INFO.sample((("vcpu", str(index)), ("thread_id", str(thread))), 1))
    return samples
