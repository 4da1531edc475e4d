"""The set of monitors being watched, changed in place on reload or rediscovery."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

from qmp_exporter.config import MonitorConfig
from qmp_exporter.polling.poller import MonitorPoller, PollSettings
from qmp_exporter.qmp import Event

log = logging.getLogger(__name__)


class Fleet:
    """Owns one :class:`MonitorPoller` per monitor. ``listeners`` hear of every change of a
    VM (``(poller, stable)``: ``stable`` False when only its poll time and duration changed);
    ``membership`` changes when VMs are added or removed."""

    def __init__(
        self,
        settings: PollSettings,
        on_event: Callable[[MonitorConfig, Event], None] | None = None,
    ) -> None:
        self.settings = settings
        self.pollers: dict[str, MonitorPoller] = {}
        self.membership = 0
        self.listeners: list[Callable[[MonitorPoller, bool], None]] = []
        self._on_event = on_event

    def _vm_changed(self, poller: MonitorPoller, stable: bool) -> None:
        for listener in self.listeners:
            listener(poller, stable)

    async def apply(
        self, monitors: Iterable[MonitorConfig], settings: PollSettings | None = None
    ) -> None:
        """Make the fleet match ``monitors``: start the new, stop the removed, restart the
        changed; an unchanged monitor keeps its connection and counters. New settings
        restart every poller (their counters are kept)."""
        wanted = {m.name: m for m in monitors}
        settings_changed = settings is not None and settings != self.settings
        if settings is not None:
            self.settings = settings
        stopping = []
        for name, poller in list(self.pollers.items()):
            target = wanted.get(name)
            if target is None:
                log.info("%s: removed", name)
                stopping.append(poller.stop())
                del self.pollers[name]
            elif target != poller.monitor or settings_changed:
                stopping.append(poller.stop())
        if stopping:
            await asyncio.gather(*stopping)
        for name, monitor in wanted.items():
            poller = self.pollers.get(name)
            if poller is None:
                poller = MonitorPoller(
                    monitor, self.settings, on_change=self._vm_changed, on_event=self._on_event
                )
                self.pollers[name] = poller
                poller.start()
            elif monitor != poller.monitor or settings_changed:
                poller.monitor = monitor
                poller.settings = self.settings
                poller.start()
        self.membership += 1

    async def close(self) -> None:
        """Stop every poller."""
        await asyncio.gather(*(p.stop() for p in self.pollers.values()))
        self.pollers.clear()
        self.membership += 1
