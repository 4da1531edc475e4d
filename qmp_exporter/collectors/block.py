"""Block device I/O counters from ``query-blockstats``.

Sample output (``vm`` is added by the renderer)::

    qemu_block_read_bytes_total{vm="web1",device="disk0"} 512
    qemu_block_written_bytes_total{vm="web1",device="disk0"} 0
    qemu_block_read_operations_total{vm="web1",device="disk0"} 1
    qemu_block_write_operations_total{vm="web1",device="disk0"} 0
    qemu_block_flush_operations_total{vm="web1",device="disk0"} 0
    qemu_block_read_time_seconds_total{vm="web1",device="disk0"} 0.000275548
    qemu_block_write_time_seconds_total{vm="web1",device="disk0"} 0
    qemu_block_flush_time_seconds_total{vm="web1",device="disk0"} 0
    qemu_block_failed_operations_total{vm="web1",device="disk0",operation="read"} 0
    qemu_block_invalid_operations_total{vm="web1",device="disk0",operation="write"} 0
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from qmp_exporter.collectors.base import Collector, Query
from qmp_exporter.collectors.values import (
    MAX_LABEL_CHARS,
    as_count,
    as_dict,
    as_list,
    bounded,
)
from qmp_exporter.textformat import Family, Sample

READ_BYTES = Family("qemu_block_read_bytes_total", "counter", "Bytes read from the device.")
WRITTEN_BYTES = Family("qemu_block_written_bytes_total", "counter", "Bytes written to the device.")
READ_OPERATIONS = Family(
    "qemu_block_read_operations_total", "counter", "Read operations completed."
)
WRITE_OPERATIONS = Family(
    "qemu_block_write_operations_total", "counter", "Write operations completed."
)
FLUSH_OPERATIONS = Family(
    "qemu_block_flush_operations_total", "counter", "Flush operations completed."
)
READ_TIME = Family("qemu_block_read_time_seconds_total", "counter", "Time spent on reads.")
WRITE_TIME = Family("qemu_block_write_time_seconds_total", "counter", "Time spent on writes.")
FLUSH_TIME = Family("qemu_block_flush_time_seconds_total", "counter", "Time spent on flushes.")
FAILED_OPERATIONS = Family(
    "qemu_block_failed_operations_total", "counter", "Operations that failed, by operation."
)
INVALID_OPERATIONS = Family(
    "qemu_block_invalid_operations_total",
    "counter",
    "Invalid operations (bad offset or size), by operation.",
)
#: (family, ``query-blockstats`` member, divisor to base units)
_PLAIN = (
    (READ_BYTES, "rd_bytes", 1),
    (WRITTEN_BYTES, "wr_bytes", 1),
    (READ_OPERATIONS, "rd_operations", 1),
    (WRITE_OPERATIONS, "wr_operations", 1),
    (FLUSH_OPERATIONS, "flush_operations", 1),
    (READ_TIME, "rd_total_time_ns", 1e9),
    (WRITE_TIME, "wr_total_time_ns", 1e9),
    (FLUSH_TIME, "flush_total_time_ns", 1e9),
)
_OPERATIONS = (("read", "rd"), ("write", "wr"), ("flush", "flush"), ("unmap", "unmap"))


class BlockCollector(Collector):
    """Per-device read/write/flush counters; label ``device`` (the drive id, else the
    guest device's ``qdev`` path, else the node name, as under libvirt's ``-blockdev``)."""

    name = "block"
    required_commands = ("query-blockstats",)
    poll_commands = ("query-blockstats",)
    families = (*(family for family, _, _ in _PLAIN), FAILED_OPERATIONS, INVALID_OPERATIONS)

    async def collect(self, query: Query) -> Sequence[Sample]:
        return parse_blockstats(await query("query-blockstats", None))


def device_label(entry: dict[str, Any]) -> str:
    """The drive id, or the ``qdev`` path, or the node name; ``""`` when none is given."""
    for key in ("device", "qdev", "node-name"):
        value = entry.get(key)
        if isinstance(value, str) and value:
            return bounded(value)
    return ""


def parse_blockstats(answer: Any) -> list[Sample]:
    """Samples from a ``query-blockstats`` answer; members a QEMU lacks are left out."""
    samples: list[Sample] = []
    seen: set[str] = set()
    for index, item in enumerate(as_list(answer, "query-blockstats")):
        entry = as_dict(item, f"query-blockstats[{index}]")
        device = device_label(entry)
        if not device:
            continue
        if device in seen:
            # Two entries with one name would print duplicate series; name the node too.
            node = entry.get("node-name")
            suffix = node if isinstance(node, str) and node else str(index)
            device = bounded(f"{device}:{bounded(suffix)}", 2 * MAX_LABEL_CHARS + 1)
            if device in seen:
                continue
        seen.add(device)
        stats = as_dict(entry.get("stats"), f"query-blockstats[{index}].stats")
        labels = (("device", device),)
        for family, member, divisor in _PLAIN:
            if member in stats:
                value = as_count(stats[member], f"{device}.{member}")
                samples.append(family.sample(labels, value / divisor if divisor != 1 else value))
        for family, prefix in ((FAILED_OPERATIONS, "failed_"), (INVALID_OPERATIONS, "invalid_")):
            for operation, short in _OPERATIONS:
                member = f"{prefix}{short}_operations"
                if member in stats:
                    value = as_count(stats[member], f"{device}.{member}")
                    samples.append(family.sample((*labels, ("operation", operation)), value))
    return samples
