"""Finding monitors by globbing for QMP sockets, and in the command lines of the host's QEMU
processes (``- processes: true``, :mod:`qmp_exporter.polling.processes`).

:func:`scan` is a pure function of the configuration and the filesystem; a
:class:`Discoverer` runs it every ``rescan`` and yields the discovered monitors whenever
they change (:meth:`Discoverer.changes`), so the app can start polling new sockets, and
stop polling vanished ones, within one rescan. Discovery returns monitors; it applies
nothing itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import logging
import os
import stat
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

from qmp_exporter.config import DEFAULT_RESCAN, Config, DiscoveryConfig, MonitorConfig
from qmp_exporter.polling.cmdline import normalize_path
from qmp_exporter.polling.processes import find_qemu_processes, process_monitors
from qmp_exporter.polling.unwatched import UnwatchedHost, read_unwatched

log = logging.getLogger(__name__)


def is_socket(path: str) -> bool:
    """Whether ``path`` is a unix socket (following symlinks); False when it is gone."""
    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        return False


def monitor_for(entry: DiscoveryConfig, path: str) -> MonitorConfig:
    """The monitor for one discovered socket; ``ValueError`` when it cannot be named."""
    file = PurePosixPath(path)
    fields = {"stem": file.stem, "name": file.name}
    labels = dict(entry.labels)
    if entry.proxmox:
        if not file.stem.isdigit():
            raise ValueError("not a Proxmox VM socket (expected <vmid>.qmp)")
        fields["vmid"] = file.stem
        labels["vmid"] = file.stem
    name = entry.name.format(**fields)
    if not name.strip():
        raise ValueError(f"name template {entry.name!r} gives an empty name")
    return MonitorConfig(
        name=name,
        address=f"unix:{path}",
        mode=entry.mode,
        labels=tuple(sorted(labels.items())),
        collectors=entry.collectors,
    )


@dataclass(frozen=True)
class ProcessRow:
    """A QEMU process found by the process scan: ``vm`` is the VM it is watched as (or would
    be), ``problem`` empty when it is watched, else why not."""

    pid: int
    vm: str
    name: str
    uuid: str
    monitor: str
    problem: str

    @property
    def watched(self) -> bool:
        return not self.problem


def address_key(address: str) -> str:
    """One monitor however it is spelt: a unix socket by its resolved path (``/var/run`` is
    ``/run``)."""
    if address.startswith("unix:"):
        return "unix:" + normalize_path(os.path.realpath(address[len("unix:") :]))
    return address


def scan(
    discovery: Iterable[DiscoveryConfig], configured: Sequence[MonitorConfig]
) -> tuple[list[MonitorConfig], list[str]]:
    """Monitors for the sockets the globs (and the process scan) find now, and the problems
    met (a name or address clash, a socket that cannot be named)."""
    found, problems, _ = scan_all(discovery, configured)
    return found, problems


def scan_all(
    discovery: Iterable[DiscoveryConfig], configured: Sequence[MonitorConfig]
) -> tuple[list[MonitorConfig], list[str], list[ProcessRow]]:
    """As :func:`scan`, with a row per QEMU process of a ``processes`` entry. Configured
    monitors win every clash; among discovered ones the first entry and path (sorted) win.
    One VM is one VM however found: keyed by the resolved socket path (and a process by its
    PID)."""
    names = {monitor.name: "a configured monitor" for monitor in configured}
    addresses = {address_key(m.address): (m.name, "a configured monitor") for m in configured}
    found: list[MonitorConfig] = []
    problems: list[str] = []
    rows: list[ProcessRow] = []
    for index, entry in enumerate(discovery):
        where = f"discovery[{index}]"
        if entry.processes:
            rows += _scan_processes(entry, where, names, addresses, found, problems)
            continue
        for path in sorted(glob.glob(entry.glob)):
            if not is_socket(path):
                continue
            try:
                monitor = monitor_for(entry, path)
            except (ValueError, KeyError) as err:
                problems.append(f"{where}: {path}: {err}")
                continue
            key = address_key(monitor.address)
            if key in addresses:
                if addresses[key][1] != "a configured monitor":
                    problems.append(f"{where}: {path}: already found by {addresses[key][1]}")
                continue
            if monitor.name in names:
                problems.append(
                    f"{where}: {path}: name {monitor.name!r} is already used by "
                    f"{names[monitor.name]}; not monitored (set a name template)"
                )
                continue
            names[monitor.name] = f"{where} ({path})"
            addresses[key] = (monitor.name, where)
            found.append(monitor)
    return found, problems, rows


def _scan_processes(
    entry: DiscoveryConfig,
    where: str,
    names: dict[str, str],
    addresses: dict[str, tuple[str, str]],
    found: list[MonitorConfig],
    problems: list[str],
) -> list[ProcessRow]:
    rows = []
    for process, monitor in process_monitors(entry, find_qemu_processes()):
        line = process.command_line
        uuid = line.uuid or line.smbios_uuid or ""
        address = "" if monitor is None else monitor.address
        vm, problem = process.vm, process.problem
        if monitor is not None:
            key = address_key(monitor.address)
            if key in addresses:
                vm = addresses[key][0]  # watched already, as configured or found by a glob
            elif monitor.name in names:
                problem = "name_clash"
                problems.append(
                    f"{where}: QEMU process {process.pid}: name {monitor.name!r} is already "
                    f"used by {names[monitor.name]}; not monitored"
                )
            else:
                names[monitor.name] = f"{where} (process {process.pid})"
                addresses[key] = (monitor.name, f"{where} (process {process.pid})")
                found.append(monitor)
        rows.append(ProcessRow(process.pid, vm, line.name or "", uuid, address, problem))
    return rows


def scan_and_read(
    discovery: Iterable[DiscoveryConfig], configured: Sequence[MonitorConfig]
) -> tuple[list[MonitorConfig], list[str], list[ProcessRow], tuple[UnwatchedHost, ...]]:
    """As :func:`scan_all`, with the host figures of the unwatched QEMU processes."""
    found, problems, rows = scan_all(discovery, configured)
    hosts = read_unwatched((row.pid, row.vm) for row in rows if not row.watched)
    return found, problems, rows, hosts


class Discoverer:
    """Rescans the discovery globs of the running configuration; remembers what the last
    scan found and which problems it met."""

    def __init__(self, config: Config) -> None:
        self._config = config
        self._discovered: tuple[MonitorConfig, ...] = ()
        self._problems: frozenset[str] = frozenset()
        self._processes: tuple[ProcessRow, ...] = ()
        self._unwatched: tuple[UnwatchedHost, ...] = ()
        self._wake = asyncio.Event()

    @property
    def discovered(self) -> tuple[MonitorConfig, ...]:
        """The monitors the last scan found (none of them clashes with a configured one)."""
        return self._discovered

    @property
    def processes(self) -> tuple[ProcessRow, ...]:
        """The QEMU processes the last scan found (``- processes: true`` entries only)."""
        return self._processes

    @property
    def unwatched(self) -> tuple[UnwatchedHost, ...]:
        """The host figures of the unwatched QEMU processes of the last scan, read then."""
        return self._unwatched

    @property
    def problems(self) -> frozenset[str]:
        """The problems of the last scan."""
        return self._problems

    @property
    def interval(self) -> float:
        """Seconds between scans: the shortest ``rescan`` of the entries."""
        return min((entry.rescan for entry in self._config.discovery), default=DEFAULT_RESCAN)

    def update_config(self, config: Config) -> None:
        """Use a reloaded configuration from the next :meth:`rescan`; the waiting
        :meth:`changes` rescans at once."""
        self._config = config
        self._wake.set()

    async def rescan(self) -> tuple[MonitorConfig, ...]:
        """Scan once (off the event loop: a glob can be slow), log new problems, and return
        the discovered monitors. A failing scan is logged and changes nothing."""
        config = self._config
        before = self._discovered
        try:
            found, problems, rows, hosts = await asyncio.to_thread(
                scan_and_read, config.discovery, config.monitors
            )
        except Exception as err:
            log.warning("discovery: rescan failed: %s", err)
            log.debug("discovery: rescan failed", exc_info=True)
            return before
        for problem in sorted(set(problems) - self._problems):
            log.warning("discovery: %s", problem)
        self._problems = frozenset(problems)
        self._processes = tuple(rows)
        self._unwatched = hosts
        self._discovered = tuple(found)
        if self._discovered != before and config.discovery:
            added = len(set(self._discovered) - set(before))
            removed = len(set(before) - set(self._discovered))
            log.info("discovery: %d monitors (%d new, %d gone)", len(found), added, removed)
        return self._discovered

    async def changes(self) -> AsyncIterator[tuple[MonitorConfig, ...]]:
        """Rescan every :attr:`interval` (or at once after :meth:`update_config`) until
        cancelled, yielding the discovered monitors whenever a rescan changed them, the
        QEMU processes it found, or the unwatched ones' host figures."""
        while True:
            self._wake.clear()
            before = (self._discovered, self._processes, self._unwatched)
            found = await self.rescan()
            if (found, self._processes, self._unwatched) != before:
                yield found
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)
