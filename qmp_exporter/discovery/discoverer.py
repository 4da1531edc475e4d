"""Discovery over time: a :class:`Discoverer` scans the running configuration's discovery
entries every ``rescan`` and hands each new :class:`~qmp_exporter.discovery.scan.Scan` to its
listeners and to whoever follows :meth:`Discoverer.changes`. It applies nothing itself.

A listener (:class:`ScanListener`) hears ``scanned(scan)`` for the scan at hand when it
subscribes, then for every scan that differs from the one before. A reload scans once: its
own :meth:`~Discoverer.rescan`; :meth:`~Discoverer.update_config` only re-times the next one.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncIterator
from typing import Protocol

from qmp_exporter.config import DEFAULT_RESCAN, Config
from qmp_exporter.discovery.scan import Scan, newly_skipped, scan
from qmp_exporter.host import Host

log = logging.getLogger(__name__)


class ScanListener(Protocol):
    """Hears every new scan (see the module's docstring)."""

    def scanned(self, scan: Scan) -> None: ...


class Discoverer:
    """Rescans the discovery entries of the running configuration, reading the host's
    processes through ``host``."""

    def __init__(self, config: Config, host: Host) -> None:
        self._config = config
        self._host = host
        self._last = Scan()  # nothing found yet
        self._scanned_at = 0.0
        self._listeners: list[ScanListener] = []
        self._retime = asyncio.Event()

    @property
    def interval(self) -> float:
        """Seconds between scans: the shortest ``rescan`` of the entries."""
        return min((entry.rescan for entry in self._config.discovery), default=DEFAULT_RESCAN)

    def subscribe(self, listener: ScanListener) -> None:
        """Tell ``listener`` of the scan at hand, then of every new one."""
        listener.scanned(self._last)
        self._listeners.append(listener)

    def update_config(self, config: Config) -> None:
        """Use a reloaded configuration from the next :meth:`rescan` (the reload's own), and
        time the one after by its ``rescan``."""
        self._config = config
        self._retime.set()

    async def rescan(self) -> Scan:
        """Scan once (off the event loop: a glob or the process scan can be slow), log new
        problems, tell the listeners when the scan differs from the last, and return it. A
        failing scan is logged and changes nothing."""
        config = self._config
        before = self._last
        try:
            found = await asyncio.to_thread(scan, config.discovery, config.monitors, self._host)
        except Exception as err:
            log.warning("discovery: rescan failed: %s", err)
            log.debug("discovery: rescan failed", exc_info=True)
            return before
        finally:
            self._scanned_at = asyncio.get_running_loop().time()  # the next waits from here
        for problem in sorted(set(found.problems) - set(before.problems)):
            log.warning("discovery: %s", problem)
        _log_skipped(found, before)
        if found == before:
            return before
        if config.discovery and found.monitors != before.monitors:
            old, new = set(before.monitors), set(found.monitors)
            added, removed = len(new - old), len(old - new)
            log.info(
                "discovery: %d monitors (%d new, %d gone)", len(found.monitors), added, removed
            )
        self._last = found
        for listener in self._listeners:
            try:
                listener.scanned(found)
            except Exception:  # one listener's failure is neither discovery's nor the others'
                log.exception("discovery: %s failed on a scan", type(listener).__name__)
        return found

    async def changes(self) -> AsyncIterator[Scan]:
        """Rescan every :attr:`interval` until cancelled, yielding each scan that differs
        from the one before it (a reload's :meth:`rescan` meanwhile counts as that one)."""
        loop = asyncio.get_running_loop()
        while True:
            before = self._last
            found = await self.rescan()
            if found is not before:
                yield found
            self._retime.clear()
            while (remaining := self._scanned_at + self.interval - loop.time()) > 0:
                try:
                    async with asyncio.timeout(remaining):
                        await self._retime.wait()
                except TimeoutError:
                    break
                self._retime.clear()  # a reload scanned: wait from its scan, by its interval


def _log_skipped(found: Scan, before: Scan) -> None:
    """One line for the processes a scan skipped that the last did not (never one per
    process: any user may start many)."""
    new = newly_skipped(found, before)
    if not new:
        return
    reasons = Counter(s.reason for s in new)
    pids = ", ".join(str(s.pid) for s in new[:10]) + (", ..." if len(new) > 10 else "")
    log.info(
        "discovery: %d processes named like QEMU are not VMs (%s; PIDs %s): docs/security.md",
        len(new),
        ", ".join(f"{reason}: {count}" for reason, count in sorted(reasons.items())),
        pids,
    )
