"""The set of monitors being watched, changed in place on reload or rediscovery, and the
one stream of what happens to its VMs.

Data flows one way: each poller publishes a frozen
:class:`~qmp_exporter.polling.state.VMState`; the fleet passes it on to its listeners
(the renderer of ``/metrics``, say), which never reach back into a poller. A listener
(:class:`FleetListener`) hears, for each VM by name:

- ``added(name, state)`` when the VM joins the fleet (also, at :meth:`Fleet.subscribe`, for
  every VM already in it), with its state before any poll;
- ``changed(name, state, timing_only)`` after every poll, every event and every change of
  its monitor's configuration; ``timing_only`` is True when nothing but the poll's time and
  duration changed (the renderer then redoes only the per-poll lines);
- ``removed(name)`` when it leaves the fleet (nothing more is heard of it after).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Protocol

from qmp_exporter.config import MonitorConfig
from qmp_exporter.polling.poller import MonitorPoller, PollSettings
from qmp_exporter.polling.state import VMState
from qmp_exporter.qmp import Event

log = logging.getLogger(__name__)


class FleetListener(Protocol):
    """Hears what happens to the fleet's VMs (see the module's docstring)."""

    def added(self, name: str, state: VMState) -> None: ...

    def removed(self, name: str) -> None: ...

    def changed(self, name: str, state: VMState, timing_only: bool) -> None: ...


class Fleet:
    """Owns one :class:`MonitorPoller` per monitor and tells its listeners what they
    publish; :attr:`states` holds the latest state of every VM."""

    def __init__(
        self,
        settings: PollSettings,
        on_event: Callable[[MonitorConfig, Event], None] | None = None,
    ) -> None:
        self.settings = settings
        self._pollers: dict[str, MonitorPoller] = {}
        self._states: dict[str, VMState] = {}
        self._listeners: list[FleetListener] = []
        self._on_event = on_event

    @property
    def states(self) -> Mapping[str, VMState]:
        """The latest published state of every VM in the fleet, by name (read-only)."""
        return MappingProxyType(self._states)

    def subscribe(self, listener: FleetListener) -> None:
        """Tell ``listener`` of every VM now in the fleet (``added``), then of every change."""
        for name, state in self._states.items():
            listener.added(name, state)
        self._listeners.append(listener)

    def _published(self, state: VMState, timing_only: bool) -> None:
        name = state.monitor.name
        if name not in self._states:
            return  # a poller being stopped after its removal was announced
        self._states[name] = state
        for listener in self._listeners:
            listener.changed(name, state, timing_only)

    def _add(self, monitor: MonitorConfig) -> None:
        poller = MonitorPoller(
            monitor, self.settings, on_state=self._published, on_event=self._on_event
        )
        self._pollers[monitor.name] = poller
        self._states[monitor.name] = poller.state
        for listener in self._listeners:
            listener.added(monitor.name, poller.state)
        poller.start()

    def _remove(self, name: str) -> MonitorPoller:
        poller = self._pollers.pop(name)
        del self._states[name]
        for listener in self._listeners:
            listener.removed(name)
        return poller

    async def apply(
        self, monitors: Iterable[MonitorConfig], settings: PollSettings | None = None
    ) -> None:
        """Make the fleet match ``monitors`` (the first of a name counts): start the new,
        stop the removed, restart the changed; an unchanged monitor keeps its connection and
        counters. New settings restart every poller (their counters are kept)."""
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
                stopping.append(self._remove(name).stop())
            elif target != poller.monitor or settings_changed:
                stopping.append(poller.stop())
                restarting.append((poller, target))
        if stopping:
            await asyncio.gather(*stopping)
        for poller, monitor in restarting:
            poller.reconfigure(monitor, self.settings)
            poller.start()
        for name, monitor in wanted.items():
            if name not in self._pollers:
                self._add(monitor)

    async def close(self) -> None:
        """Stop every poller; every VM is removed."""
        pollers = [self._remove(name) for name in list(self._pollers)]
        await asyncio.gather(*(p.stop() for p in pollers))
