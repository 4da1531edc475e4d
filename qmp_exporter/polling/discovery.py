"""Finding monitors by globbing for QMP sockets.

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
from pathlib import PurePosixPath

from qmp_exporter.config import DEFAULT_RESCAN, Config, DiscoveryConfig, MonitorConfig

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


def scan(
    discovery: Iterable[DiscoveryConfig], configured: Sequence[MonitorConfig]
) -> tuple[list[MonitorConfig], list[str]]:
    """Monitors for the sockets the globs match now, and the problems met (a name or
    address clash, a socket that cannot be named). Configured monitors win every clash;
    among discovered ones the first entry and path (sorted) win."""
    names = {monitor.name: "a configured monitor" for monitor in configured}
    addresses = {monitor.address: "a configured monitor" for monitor in configured}
    found: list[MonitorConfig] = []
    problems: list[str] = []
    for index, entry in enumerate(discovery):
        where = f"discovery[{index}]"
        for path in sorted(glob.glob(entry.glob)):
            if not is_socket(path):
                continue
            try:
                monitor = monitor_for(entry, path)
            except (ValueError, KeyError) as err:
                problems.append(f"{where}: {path}: {err}")
                continue
            if monitor.address in addresses:
                if addresses[monitor.address] != "a configured monitor":
                    problems.append(
                        f"{where}: {path}: already found by {addresses[monitor.address]}"
                    )
                continue
            if monitor.name in names:
                problems.append(
                    f"{where}: {path}: name {monitor.name!r} is already used by "
                    f"{names[monitor.name]}; not monitored (set a name template)"
                )
                continue
            names[monitor.name] = f"{where} ({path})"
            addresses[monitor.address] = where
            found.append(monitor)
    return found, problems


class Discoverer:
    """Rescans the discovery globs of the running configuration; remembers what the last
    scan found and which problems it met."""

    def __init__(self, config: Config) -> None:
        self._config = config
        self._discovered: tuple[MonitorConfig, ...] = ()
        self._problems: frozenset[str] = frozenset()
        self._wake = asyncio.Event()

    @property
    def discovered(self) -> tuple[MonitorConfig, ...]:
        """The monitors the last scan found (none of them clashes with a configured one)."""
        return self._discovered

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
            found, problems = await asyncio.to_thread(scan, config.discovery, config.monitors)
        except Exception as err:
            log.warning("discovery: rescan failed: %s", err)
            log.debug("discovery: rescan failed", exc_info=True)
            return before
        for problem in sorted(set(problems) - self._problems):
            log.warning("discovery: %s", problem)
        self._problems = frozenset(problems)
        self._discovered = tuple(found)
        if self._discovered != before and config.discovery:
            added = len(set(self._discovered) - set(before))
            removed = len(set(before) - set(self._discovered))
            log.info("discovery: %d monitors (%d new, %d gone)", len(found), added, removed)
        return self._discovered

    async def changes(self) -> AsyncIterator[tuple[MonitorConfig, ...]]:
        """Rescan every :attr:`interval` (or at once after :meth:`update_config`) until
        cancelled, yielding the discovered monitors whenever a rescan changed them."""
        while True:
            self._wake.clear()
            before = self._discovered
            found = await self.rescan()
            if found != before:
                yield found
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)
