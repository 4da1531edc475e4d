"""Every QEMU on the host, found without config: the ``- processes: true`` discovery entry.

:func:`find_qemu_processes` scans ``/proc`` for processes whose name looks like QEMU
(``qemu-system-*``, ``qemu-kvm``, ``kvm``), keeps those whose ``exe`` is not known to be
something else (see :func:`~qmp_exporter.collectors.hostproc.check_qemu`), and reads each one's
monitors, name and UUID from its command line (:mod:`qmp_exporter.polling.cmdline`).
:func:`process_monitors` turns them into monitors to watch: the first usable QMP monitor of
each process, Proxmox VE's in ``poll`` mode with a ``vmid`` label, libvirt's own never.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from qmp_exporter.collectors.hostproc import UNTRUSTED, check_qemu
from qmp_exporter.config import DiscoveryConfig, MonitorConfig
from qmp_exporter.polling import cmdline

#: Names (``comm``, at most 15 characters) of QEMU processes.
QEMU_COMMS = ("qemu-system-", "qemu-kvm", "kvm")


@dataclass(frozen=True)
class QemuProcess:
    """One QEMU process and what its command line says."""

    pid: int
    command_line: cmdline.QemuCommandLine

    @property
    def vm(self) -> str:
        """The ``vm`` label: the guest name, else the UUID, else ``qemu-<pid>``."""
        line = self.command_line
        return line.name or line.uuid or line.smbios_uuid or f"qemu-{self.pid}"

    @property
    def monitor(self) -> cmdline.Monitor | None:
        """The first monitor the exporter may use."""
        usable = self.command_line.usable_monitors
        return usable[0] if usable else None

    @property
    def problem(self) -> str:
        """Empty when a monitor is usable, else why not (``no_monitor``, ``owned_by_libvirt``)."""
        return self.command_line.problem or ""


def _comm(pid: str, proc_root: str) -> str:
    try:
        with open(f"{proc_root}/{pid}/comm", "rb") as file:
            return file.read().decode("utf-8", "replace").strip()
    except OSError:
        return ""


def find_qemu_processes(
    proc_root: str = "/proc", proxmox_dir: str | None = None
) -> list[QemuProcess]:
    """The QEMU processes running now, by PID. A process whose ``exe`` cannot be read
    (another user's, without ``CAP_SYS_PTRACE``) is kept: only its monitor socket is used."""
    found = []
    try:
        entries = sorted((e for e in os.listdir(proc_root) if e.isdigit()), key=int)
    except OSError:
        return []  # not Linux
    for entry in entries:
        comm = _comm(entry, proc_root)
        if not (comm.startswith(QEMU_COMMS[0]) or comm in QEMU_COMMS[1:]):
            continue
        pid = int(entry)
        if check_qemu(pid, proc_root) == UNTRUSTED:
            continue  # merely named like QEMU
        line = cmdline.read(pid, proc_root, proxmox_dir)
        if line is not None and line.binary:
            found.append(QemuProcess(pid, line))
    return found


def process_monitors(
    entry: DiscoveryConfig, processes: list[QemuProcess]
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
        )
        result.append((process, config))
    return result
