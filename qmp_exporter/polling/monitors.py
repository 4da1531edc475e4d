"""The QMP monitors being watched, changed in place on reload or rediscovery: the first
owning source of VM states (:mod:`qmp_exporter.fleet.source`).

One :class:`~qmp_exporter.polling.poller.MonitorPoller` per monitor publishes a frozen
:class:`~qmp_exporter.fleet.state.VMState` after every poll and event; the source passes it
on to the fleet through its output, and withdraws a VM whose monitor is no longer watched
(what its stopping poller publishes after that is dropped).

Stopping a poller is bounded (:mod:`~qmp_exporter.polling.stopping`): one whose
task outlives its cancel is detached, silenced (nothing it publishes reaches the fleet) and
replaced by a successor when its monitor is still watched; :attr:`MonitorSource.detached`
counts those still running (``/-/ready`` answers 503 meanwhile).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

from qmp_exporter.config import MonitorConfig
from qmp_exporter.fleet.source import SourceOutput
from qmp_exporter.fleet.state import VMState
from qmp_exporter.host import Host
from qmp_exporter.polling.poller import MonitorPoller, PollSettings
from qmp_exporter.qmp import Event

log = logging.getLogger(__name__)


class MonitorSource:
    """Owns one :class:`MonitorPoller` per monitor and publishes what they learn to
    ``output``; ``on_event`` hears every event of every monitor, and ``host`` reads the
    host's side of each VM (``None``: no host figures)."""

    def __init__(
        self,
        output: SourceOutput,
        settings: PollSettings,
        on_event: Callable[[MonitorConfig, Event], None] | None = None,
        host: Host | None = None,
    ) -> None:
        self.settings = settings
        self._output = output
        self._pollers: dict[str, MonitorPoller] = {}
        self._detached: set[asyncio.Task[None]] = set()
        self._on_event = on_event
        self._host = host
        self._closed = False

    def __len__(self) -> int:
        """How many monitors are watched."""
        return len(self._pollers)

    @property
    def detached(self) -> int:
        """Pollers that outlived their stop deadline and still run."""
        return len(self._detached)

    async def _stop(self, poller: MonitorPoller) -> None:
        """Stop ``poller`` within its deadline; keep count of it while it runs detached."""
        task = await poller.stop()
        if task is not None and not task.done():
            self._detached.add(task)
            task.add_done_callback(self._detached.discard)

    def _published(self, state: VMState, timing_only: bool) -> None:
        if state.name in self._pollers:  # not a poller being stopped after its withdrawal
            self._output.publish(state, timing_only)

    def _add(self, monitor: MonitorConfig, poller: MonitorPoller | None = None) -> None:
        if poller is None:
            poller = MonitorPoller(
                monitor,
                self.settings,
                on_state=self._published,
                on_event=self._on_event,
                host=self._host,
            )
        self._pollers[monitor.name] = poller
        self._output.publish(poller.state, False)
        poller.start()

    def _remove(self, name: str) -> MonitorPoller:
        poller = self._pollers.pop(name)
        self._output.withdraw(name)
        return poller

    async def apply(
        self, monitors: Iterable[MonitorConfig], settings: PollSettings | None = None
    ) -> None:
        """Watch ``monitors`` (the first of a name counts): start the new, stop the removed,
        restart the changed; an unchanged monitor keeps its connection and counters. New
        settings restart every poller (their counters are kept). Bounded: each stop waits
        at most its deadline, and a detached poller's monitor gets a successor."""
        if self._closed:
            return  # a reload that outlived the exporter's stop starts nothing
        wanted: dict[str, MonitorConfig] = {}
        for monitor in monitors:
            wanted.setdefault(monitor.name, monitor)
        settings_changed = settings is not None and settings != self.settings
        if settings is not None:
            self.settings = settings
        stopping = []
        restarting = []
        for name, poller in list(self._pollers.items()):
            target = wanted.get(name)
            if target is None:
                log.info("%s: removed", name)
                stopping.append(self._stop(self._remove(name)))
            elif target != poller.monitor or settings_changed:
                stopping.append(self._stop(poller))
                restarting.append((poller, target))
        if stopping:
            await asyncio.gather(*stopping)
        for poller, monitor in restarting:
            if poller.detached:
                self._add(monitor, poller.successor(monitor, self.settings))
                continue
            poller.reconfigure(monitor, self.settings)
            poller.start()
        for name, monitor in wanted.items():
            if name not in self._pollers:
                self._add(monitor)

    async def close(self) -> None:
        """Stop every poller; every VM is withdrawn; later applies start nothing."""
        self._closed = True
        pollers = [self._remove(name) for name in list(self._pollers)]
        await asyncio.gather(*(self._stop(p) for p in pollers))
