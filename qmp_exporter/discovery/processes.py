"""Monitors found in the command lines of the host's QEMU processes (``- processes: true``):
the first usable QMP monitor of each process, Proxmox VE's in ``poll`` mode with a ``vmid``
label, libvirt's own never, each bound to its process (the peer the poller expects); and a
:class:`ProcessRow` for every VM, watched or not."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from qmp_exporter.config import DiscoveryConfig, MonitorConfig
from qmp_exporter.host.processes import QemuProcess


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


def process_monitors(
    entry: DiscoveryConfig, processes: Sequence[QemuProcess]
) -> list[tuple[QemuProcess, MonitorConfig | None]]:
    """Each process with the monitor to watch it through (``None``: it has none usable)."""
    result: list[tuple[QemuProcess, MonitorConfig | None]] = []
    for process in processes:
        monitor = process.monitor
        if monitor is None or monitor.address is None:
            result.append((process, None))
            continue
        labels = dict(entry.labels)
        mode = entry.mode
        if monitor.vmid is not None:
            labels["vmid"] = monitor.vmid
            mode = "poll"  # Proxmox connects per command; QEMU serves one client
        config = MonitorConfig(
            name=process.vm,
            address=monitor.address,
            mode=mode,
            labels=tuple(sorted(labels.items())),
            collectors=entry.collectors,
            process=(process.pid, process.uids),
        )
        result.append((process, config))
    return result
