"""Guest RAM size from ``query-memory-size-summary``.

Sample output::

    qemu_memory_base_bytes{vm="web1"} 67108864
    qemu_memory_plugged_bytes{vm="web1"} 0
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from qmp_exporter.collectors.base import Collector, Query
from qmp_exporter.collectors.values import as_count, as_dict
from qmp_exporter.textformat import Family, Sample

BASE_BYTES = Family("qemu_memory_base_bytes", "gauge", "RAM given to the guest at start.")
PLUGGED_BYTES = Family("qemu_memory_plugged_bytes", "gauge", "RAM hot-plugged into the guest.")


class MemoryCollector(Collector):
    """Boot-time RAM and hot-plugged RAM (DIMMs, virtio-mem)."""

    name = "memory"
    required_commands = ("query-memory-size-summary",)
    poll_commands = ("query-memory-size-summary",)
    families = (BASE_BYTES, PLUGGED_BYTES)

    async def collect(self, query: Query) -> Sequence[Sample]:
        return parse_memory_size_summary(await query("query-memory-size-summary", None))


def parse_memory_size_summary(answer: Any) -> list[Sample]:
    """Samples from a ``query-memory-size-summary`` answer (``plugged-memory`` is optional)."""
    summary = as_dict(answer, "query-memory-size-summary")
    samples = [BASE_BYTES.sample((), as_count(summary.get("base-memory"), "base-memory"))]
    if "plugged-memory" in summary:
        plugged = as_count(summary["plugged-memory"], "plugged-memory")
        samples.append(PLUGGED_BYTES.sample((), plugged))
    return samples
