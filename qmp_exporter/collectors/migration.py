"""Live migration status and progress from ``query-migrate``.

Sample output (progress series only while QEMU reports them)::

    qemu_migration_status{vm="web1",status="active"} 1
    qemu_migration_ram_total_bytes{vm="web1"} 67641344
    qemu_migration_ram_remaining_bytes{vm="web1"} 1048576
    qemu_migration_ram_transferred_bytes{vm="web1"} 603263
    qemu_migration_total_time_seconds{vm="web1"} 0.01
    qemu_migration_downtime_seconds{vm="web1"} 0.001
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from qmp_exporter.collectors.base import Collector, Query
from qmp_exporter.collectors.values import as_count, as_dict, as_str
from qmp_exporter.textformat import Family, Sample

#: A QAPI ``MigrationStatus`` value (none, setup, active, completed, failed, ...).
_STATUS = re.compile(r"^[a-z][a-z-]{0,31}$")
STATUS = Family("qemu_migration_status", "gauge", "Current migration status; value 1.")
RAM_TOTAL = Family("qemu_migration_ram_total_bytes", "gauge", "Guest RAM to migrate.")
RAM_REMAINING = Family("qemu_migration_ram_remaining_bytes", "gauge", "Guest RAM still to send.")
RAM_TRANSFERRED = Family("qemu_migration_ram_transferred_bytes", "gauge", "Bytes sent so far.")
TOTAL_TIME = Family("qemu_migration_total_time_seconds", "gauge", "Time the migration has taken.")
DOWNTIME = Family("qemu_migration_downtime_seconds", "gauge", "Time the guest was stopped.")
#: (family, member of the answer (``ram.`` for the RAM section), divisor to base units)
_PROGRESS = (
    (RAM_TOTAL, "ram.total", 1),
    (RAM_REMAINING, "ram.remaining", 1),
    (RAM_TRANSFERRED, "ram.transferred", 1),
    (TOTAL_TIME, "total-time", 1000),
    (DOWNTIME, "downtime", 1000),
)


class MigrationCollector(Collector):
    """The current (or last) migration's status as one series with value 1, and its
    progress. ``status="none"`` when the VM has never migrated (QEMU answers ``{}``)."""

    name = "migration"
    required_commands = ("query-migrate",)
    poll_commands = ("query-migrate",)
    families = (STATUS, *(family for family, _, _ in _PROGRESS))

    async def collect(self, query: Query) -> Sequence[Sample]:
        return parse_migrate(await query("query-migrate", None))


def parse_migrate(answer: Any) -> list[Sample]:
    """Samples from a ``query-migrate`` answer."""
    info = as_dict(answer, "query-migrate")
    status = as_str(info.get("status", "none"), "query-migrate.status")
    if not _STATUS.match(status):
        raise ValueError(f"query-migrate.status: {status[:40]!r} is not a migration status")
    samples = [STATUS.sample((("status", status),), 1)]
    ram = as_dict(info.get("ram", {}), "query-migrate.ram")
    for family, member, divisor in _PROGRESS:
        section, key = (ram, member[4:]) if member.startswith("ram.") else (info, member)
        if key in section:
            value = as_count(section[key], f"query-migrate.{member}")
            samples.append(family.sample((), value / divisor if divisor != 1 else value))
    return samples
