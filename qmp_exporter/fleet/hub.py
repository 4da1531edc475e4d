"""The fleet: the latest state of every VM, from every source, and the one stream of what
happens to them.

Data flows one way: sources publish frozen :class:`~qmp_exporter.fleet.state.VMState`\\ s
through the outputs the fleet gave them (:mod:`~qmp_exporter.fleet.source`: the contract and
its precedence rule); the fleet passes each VM's state on to its listeners (the renderer of
``/metrics``, the landing page), which never reach back into a source. A listener
(:class:`FleetListener`) hears, for each VM by name:

- ``added(name, state)`` when the VM joins the fleet (also, at :meth:`Fleet.subscribe`, for
  every VM already in it), with its state before any poll;
- ``changed(name, state, timing_only)`` after every poll, every event and every change of
  its monitor's configuration, and when what another source adds to it changes;
  ``timing_only`` is True when nothing but the poll's time and duration changed (the
  renderer then redoes only the per-poll lines);
- ``removed(name)`` when it leaves the fleet (nothing more is heard of it after).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from types import MappingProxyType
from typing import Protocol

from qmp_exporter.fleet.source import Augmentation, AugmentOutput, SourceOutput
from qmp_exporter.fleet.state import VMState

log = logging.getLogger(__name__)

#: Clashes (a VM, the two sources) logged at most this many times before the memory of them
#: is reset.
MAX_CLASHES_LOGGED = 10_000


class FleetListener(Protocol):
    """Hears what happens to the fleet's VMs (see the module's docstring)."""

    def added(self, name: str, state: VMState) -> None: ...

    def removed(self, name: str) -> None: ...

    def changed(self, name: str, state: VMState, timing_only: bool) -> None: ...


class _VM:
    """What the sources said of one VM name: each owning source's state and each augmenting
    source's augmentation, by rank, and which owner is shown."""

    __slots__ = ("augments", "owners", "shown")

    def __init__(self) -> None:
        self.owners: dict[int, VMState] = {}
        self.augments: dict[int, Augmentation] = {}
        self.shown: int | None = None


class Fleet:
    """Every VM that a source owns, shown as its highest-ranked owner publishes it, with what
    augmenting sources add; :attr:`states` holds the latest shown state of every VM."""

    def __init__(self) -> None:
        self._vms: dict[str, _VM] = {}
        self._states: dict[str, VMState] = {}
        self._listeners: list[FleetListener] = []
        self._sources: list[str] = []  # source names by rank
        self._clashes: set[tuple[str, int, int]] = set()

    @property
    def states(self) -> Mapping[str, VMState]:
        """The latest shown state of every VM in the fleet, by name (read-only)."""
        return MappingProxyType(self._states)

    def subscribe(self, listener: FleetListener) -> None:
        """Tell ``listener`` of every VM now in the fleet (``added``), then of every change."""
        for name, state in self._states.items():
            listener.added(name, state)
        self._listeners.append(listener)

    def source(self, name: str) -> SourceOutput:
        """The output of a new owning source called ``name``, ranked after those before."""
        self._sources.append(name)
        return _Output(self, len(self._sources) - 1)

    def augmenter(self, name: str) -> AugmentOutput:
        """The output of a new augmenting source called ``name``, ranked after those before."""
        self._sources.append(name)
        return _AugmentOutput(self, len(self._sources) - 1)

    # -- what the sources say ------------------------------------------------------------------

    def _publish(self, rank: int, state: VMState, timing_only: bool) -> None:
        name = state.name
        vm = self._vms.get(name)
        if vm is None:
            vm = self._vms[name] = _VM()
        vm.owners[rank] = state
        if vm.shown == rank:
            self._show(name, vm, timing_only)
        elif vm.shown is None or rank < vm.shown:
            if vm.shown is not None:
                self._clash(name, rank, vm.shown)
            vm.shown = rank
            self._show(name, vm, False)
        else:
            self._clash(name, vm.shown, rank)

    def _withdraw(self, rank: int, name: str) -> None:
        vm = self._vms.get(name)
        if vm is None or vm.owners.pop(rank, None) is None or vm.shown != rank:
            return
        if vm.owners:
            vm.shown = min(vm.owners)
            self._show(name, vm, False)
            return
        vm.shown = None
        if not vm.augments:
            del self._vms[name]
        del self._states[name]
        for listener in self._listeners:
            listener.removed(name)

    def _augment(self, rank: int, name: str, augmentation: Augmentation | None) -> None:
        vm = self._vms.get(name)
        if vm is None:
            if augmentation is None:
                return
            vm = self._vms[name] = _VM()
        if vm.augments.get(rank) == augmentation:
            return
        if augmentation is None:
            del vm.augments[rank]
        else:
            vm.augments[rank] = augmentation
        if vm.shown is not None:
            self._show(name, vm, False)
        elif not vm.augments:
            del self._vms[name]

    # -- telling the listeners -------------------------------------------------------------------

    def _show(self, name: str, vm: _VM, timing_only: bool) -> None:
        assert vm.shown is not None
        state = vm.owners[vm.shown]
        if vm.augments:
            added = [vm.augments[rank] for rank in sorted(vm.augments)]
            state = dataclasses.replace(
                state,
                samples=state.samples + tuple(s for a in added for s in a.samples),
                collector_results=state.collector_results
                + tuple(r for a in added for r in a.collector_results),
            )
        new = name not in self._states
        self._states[name] = state
        for listener in self._listeners:
            if new:
                listener.added(name, state)
            else:
                listener.changed(name, state, timing_only)

    def _clash(self, name: str, shown: int, hidden: int) -> None:
        key = (name, shown, hidden)
        if key in self._clashes:
            return
        if len(self._clashes) >= MAX_CLASHES_LOGGED:
            self._clashes.clear()
        self._clashes.add(key)
        log.warning(
            "%s: named by both %s and %s; %s's is shown (the first source wins)",
            name,
            self._sources[shown],
            self._sources[hidden],
            self._sources[shown],
        )


class _Output:
    """An owning source's :class:`~qmp_exporter.fleet.source.SourceOutput`."""

    __slots__ = ("_fleet", "_rank")

    def __init__(self, fleet: Fleet, rank: int) -> None:
        self._fleet = fleet
        self._rank = rank

    def publish(self, state: VMState, timing_only: bool) -> None:
        self._fleet._publish(self._rank, state, timing_only)

    def withdraw(self, name: str) -> None:
        self._fleet._withdraw(self._rank, name)


class _AugmentOutput:
    """An augmenting source's :class:`~qmp_exporter.fleet.source.AugmentOutput`."""

    __slots__ = ("_fleet", "_rank")

    def __init__(self, fleet: Fleet, rank: int) -> None:
        self._fleet = fleet
        self._rank = rank

    def augment(self, name: str, augmentation: Augmentation) -> None:
        self._fleet._augment(self._rank, name, augmentation)

    def clear(self, name: str) -> None:
        self._fleet._augment(self._rank, name, None)
