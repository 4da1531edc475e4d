"""The contract between the sources of VM states and the fleet.

A **source** tells the fleet what it knows of VMs. There are two shapes:

- An **owning source** has VMs of its own, a set that changes as it finds them: the QMP
  monitor pollers (:class:`~qmp_exporter.polling.monitors.MonitorSource`, whose set follows the
  config and discovery through ``apply``), or a libvirt connection (whose domains come and
  go on their own). Through its :class:`SourceOutput` it *publishes* each VM's whole state,
  frozen (:class:`~qmp_exporter.fleet.state.VMState`), after every change, and *withdraws* a
  VM that is gone. Publishing a name it has not published before adds that VM.
- An **augmenting source** has no VM of its own: it adds figures to VMs that an owning source
  names (the guest agent, inside each VM). Through its :class:`AugmentOutput` it *augments* a
  VM by name with an :class:`Augmentation` (samples and collector results, replaced whole
  each time) and *clears* it. An augmentation of a VM no source owns waits, unseen, until one
  does; it stays when its owner withdraws the VM, for the VM's return.

**One precedence rule.** Sources rank in the order they were given their outputs
(:meth:`Fleet.source <qmp_exporter.fleet.hub.Fleet.source>`, :meth:`Fleet.augmenter
<qmp_exporter.fleet.hub.Fleet.augmenter>`); the app gives the QMP monitors theirs first. When
two owning sources name the same VM, the fleet shows the state of the higher-ranked one
(logged once) and keeps the other's unseen, shown again if the first withdraws the name.
Augmentations are added in rank order. A source never sees another's states, and nothing
reads back into a source: states flow from the sources, through the fleet, to its listeners.

A source is closed by whoever made it (``await source.close()``: :class:`Source`); it
withdraws its VMs, and publishes nothing after.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from qmp_exporter.fleet.state import VMState
from qmp_exporter.textformat import Sample


class SourceOutput(Protocol):
    """What an owning source is given to tell the fleet of its VMs."""

    def publish(self, state: VMState, timing_only: bool) -> None:
        """``state`` is the VM's (``state.name``) latest; ``timing_only`` when nothing but
        the poll's time and duration changed since the last one published."""

    def withdraw(self, name: str) -> None:
        """The VM ``name`` is no longer this source's."""


@dataclass(frozen=True, slots=True)
class Augmentation:
    """What an augmenting source adds to one VM: samples (labels without ``vm``) and its
    collectors' results, shown after the owner's own."""

    samples: tuple[Sample, ...] = ()
    collector_results: tuple[tuple[str, bool], ...] = ()


class AugmentOutput(Protocol):
    """What an augmenting source is given to add to VMs another source owns."""

    def augment(self, name: str, augmentation: Augmentation) -> None:
        """``augmentation`` replaces what this source added to the VM ``name`` before."""

    def clear(self, name: str) -> None:
        """This source adds nothing to the VM ``name`` any more."""


class Source(Protocol):
    """A source as its maker sees it: closed once, when the exporter stops."""

    async def close(self) -> None:
        """Stop, withdraw every VM (or augmentation), and publish nothing more."""
