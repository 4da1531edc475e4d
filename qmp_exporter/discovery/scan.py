"""One scan of the host for monitors: what the globs and the process scan find now, as one
frozen :class:`Scan`.

:func:`scan` is a pure function of the configuration, the filesystem and the host's
processes. Configured monitors win every clash; then the globs, the first entry and path
(sorted) first; then the processes, the oldest first. Only processes that are VMs by the
trust model take part (``docs/security.md``). One VM is one VM however found: keyed by the
resolved socket path (and a process by its PID).
"""

from __future__ import annotations

import glob
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from qmp_exporter.config import DiscoveryConfig, MonitorConfig
from qmp_exporter.discovery.processes import ProcessRow, process_monitors
from qmp_exporter.discovery.sockets import address_key, is_socket, monitor_for
from qmp_exporter.host import Host
from qmp_exporter.host.processes import QemuProcess, SkippedProcess
from qmp_exporter.host.unwatched import UnwatchedHost

CONFIGURED = "a configured monitor"


@dataclass(frozen=True)
class Scan:
    """What one scan found, handed whole to whoever listens (see
    :class:`~qmp_exporter.discovery.discoverer.Discoverer`)."""

    #: The monitors to watch (none of them clashes with a configured one).
    monitors: tuple[MonitorConfig, ...] = ()
    #: A row per QEMU process of a ``processes`` entry; ``None`` without such an entry.
    processes: tuple[ProcessRow, ...] | None = None
    #: The host figures of the processes nothing watches, read during the scan.
    unwatched: tuple[UnwatchedHost, ...] = ()
    #: What could not be watched, and why (a name or address clash, a socket with no name).
    problems: tuple[str, ...] = ()
    #: The processes named like QEMU that are not VMs, and why (see
    #: :func:`~qmp_exporter.host.trust.check_vm_process`).
    skipped: tuple[SkippedProcess, ...] = ()


class _Claims:
    """Names and monitors taken so far in one scan, and by whom."""

    def __init__(self, configured: Sequence[MonitorConfig]) -> None:
        self.names = {monitor.name: CONFIGURED for monitor in configured}
        self.addresses = {address_key(m.address): (m.name, CONFIGURED) for m in configured}
        self.found: list[MonitorConfig] = []
        self.problems: list[str] = []

    def take(self, monitor: MonitorConfig, key: str, name_by: str, address_by: str) -> None:
        """Watch ``monitor``; its name and its address are now taken by these finders."""
        self.names[monitor.name] = name_by
        self.addresses[key] = (monitor.name, address_by)
        self.found.append(monitor)


def scan(
    discovery: Iterable[DiscoveryConfig],
    configured: Sequence[MonitorConfig],
    host: Host,
    *,
    read_unwatched: bool = True,
) -> Scan:
    """The monitors the globs and the process scan find now, a row per QEMU process, the
    unwatched processes' host figures (unless not ``read_unwatched``) and the problems met."""
    claims = _Claims(configured)
    entries = [(f"discovery[{index}]", entry) for index, entry in enumerate(discovery)]
    for where, entry in entries:
        if not entry.processes:
            _scan_glob(entry, where, claims)
    rows: list[ProcessRow] | None = None
    skipped: tuple[SkippedProcess, ...] = ()
    for where, entry in entries:  # after the globs: a configured or globbed name wins
        if entry.processes:
            found = host.qemu_processes(entry.trusted_users)
            rows = _scan_processes(entry, where, found.processes, claims)
            skipped = found.skipped
    unwatched: tuple[UnwatchedHost, ...] = ()
    if rows and read_unwatched:
        unwatched = host.read_unwatched((row.pid, row.vm) for row in rows if not row.watched)
    return Scan(
        tuple(claims.found),
        None if rows is None else tuple(sorted(rows, key=lambda row: row.pid)),
        unwatched,
        tuple(claims.problems),
        skipped,
    )


def _scan_glob(entry: DiscoveryConfig, where: str, claims: _Claims) -> None:
    for path in sorted(glob.glob(entry.glob)):
        if not is_socket(path):
            continue
        try:
            monitor = monitor_for(entry, path)
        except (ValueError, KeyError) as err:
            claims.problems.append(f"{where}: {path}: {err}")
            continue
        key = address_key(monitor.address)
        if key in claims.addresses:
            if claims.addresses[key][1] != CONFIGURED:
                by = claims.addresses[key][1]
                claims.problems.append(f"{where}: {path}: already found by {by}")
            continue
        if monitor.name in claims.names:
            claims.problems.append(
                f"{where}: {path}: name {monitor.name!r} is already used by "
                f"{claims.names[monitor.name]}; not monitored (set a name template)"
            )
            continue
        claims.take(monitor, key, f"{where} ({path})", where)


def _scan_processes(
    entry: DiscoveryConfig, where: str, processes: Sequence[QemuProcess], claims: _Claims
) -> list[ProcessRow]:
    """A row per VM, the oldest process first: names are claimed in that order (a QEMU
    restarted or migrated on this host never takes the name of the one running)."""
    rows = []
    by_age = sorted(processes, key=lambda p: (p.start, p.pid))
    for process, monitor in process_monitors(entry, by_age):
        line = process.command_line
        uuid = line.uuid or line.smbios_uuid or ""
        address = "" if monitor is None else monitor.address
        vm, problem = process.vm, process.problem
        if monitor is not None:
            key = address_key(monitor.address)
            if key in claims.addresses:
                vm = claims.addresses[key][0]  # watched already, as configured or by a glob
            elif monitor.name in claims.names:
                problem = "name_clash"
                claims.problems.append(
                    f"{where}: QEMU process {process.pid}: name {monitor.name!r} is already "
                    f"used by {claims.names[monitor.name]}; not monitored"
                )
            else:
                finder = f"{where} (process {process.pid})"
                claims.take(monitor, key, finder, finder)
        rows.append(ProcessRow(process.pid, vm, line.name or "", uuid, address, problem))
    return rows


def newly_skipped(found: Scan, before: Scan) -> list[SkippedProcess]:
    """The processes ``found`` skipped that ``before`` did not (one process is its PID and
    start: a PID reused is another process)."""
    earlier = {(s.pid, s.start) for s in before.skipped}
    return [s for s in found.skipped if (s.pid, s.start) not in earlier]
