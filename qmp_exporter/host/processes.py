"""Every QEMU on the host, found without config: the ``- processes: true`` discovery entry.

:func:`find_qemu_processes` scans ``/proc`` for processes whose name looks like QEMU
(``qemu-system-*``, ``qemu-kvm``, ``kvm``), keeps those that are VMs by the trust model
(:func:`~qmp_exporter.host.trust.check_vm_process`: a trusted owner, a QEMU binary), and
reads each one's monitors, name and UUID from its command line (:mod:`.cmdline`), believing
a monitor only where the process itself listens (:mod:`.listeners`). The others are
returned as skipped, with the reason. Which monitor discovery watches each VM through is
discovery's choice (:mod:`qmp_exporter.discovery.processes`).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from qmp_exporter.host import cmdline
from qmp_exporter.host.listeners import (
    FOREIGN_SOCKET,
    NOT_LOOPBACK,
    NOT_VISIBLE,
    Listeners,
    check_monitor,
    socket_inodes,
)
from qmp_exporter.host.procfs import GONE, ReadError, parse_start, read_bytes
from qmp_exporter.host.trust import check_vm_process

log = logging.getLogger(__name__)

#: Names (``comm``, at most 15 characters) of QEMU processes.
QEMU_COMMS = ("qemu-system-", "qemu-kvm", "kvm")
#: The ``problem`` of a VM whose command line could not be read as QEMU's.
BAD_COMMAND_LINE = "bad_command_line"
#: Problems that say the process's monitor is not to be believed (shown before
#: ``no_monitor`` when no monitor is usable).
_MONITOR_PROBLEMS = frozenset((NOT_VISIBLE, FOREIGN_SOCKET, NOT_LOOPBACK, cmdline.OWNED_BY_LIBVIRT))


@dataclass(frozen=True)
class QemuProcess:
    """One QEMU process that is a VM, and what its command line says."""

    pid: int
    command_line: cmdline.QemuCommandLine
    #: Real and effective user ids.
    uids: tuple[int, int] = (0, 0)
    #: Start, seconds after boot: with the PID, what tells this process from a later one.
    start: float = 0.0
    #: Its monitors, each checked to be the process's own (:func:`check_monitor`).
    monitors: tuple[cmdline.Monitor, ...] = field(default=())
    #: Why the command line could not be read (``bad_command_line``), else empty.
    unreadable: str = ""

    @property
    def vm(self) -> str:
        """The ``vm`` label: the guest name, else the UUID, else ``qemu-<pid>``."""
        line = self.command_line
        return line.name or line.uuid or line.smbios_uuid or f"qemu-{self.pid}"

    @property
    def monitor(self) -> cmdline.Monitor | None:
        """The first monitor the exporter may use."""
        return next((m for m in self.monitors if m.problem is None), None)

    @property
    def problem(self) -> str:
        """Empty when a monitor is usable, else why not (``no_monitor``, ``owned_by_libvirt``,
        ``not_visible``, ``foreign_socket``, ``not_loopback``, ``bad_command_line``)."""
        if self.unreadable:
            return self.unreadable
        if self.monitor is not None:
            return ""
        if self.command_line.owner == "libvirt":
            return cmdline.OWNED_BY_LIBVIRT
        for monitor in self.monitors:
            if monitor.problem in _MONITOR_PROBLEMS:
                return monitor.problem
        if self.command_line.skipped_options:  # its monitor may be in what was skipped
            return BAD_COMMAND_LINE
        return cmdline.NO_MONITOR


@dataclass(frozen=True)
class SkippedProcess:
    """A process named like QEMU that is not a VM: ``reason`` is one of
    :data:`~qmp_exporter.host.trust.SKIP_REASONS`."""

    pid: int
    start: float
    reason: str


@dataclass(frozen=True)
class ProcessScan:
    """The VMs among the host's processes, by PID, and the processes skipped."""

    processes: tuple[QemuProcess, ...] = ()
    skipped: tuple[SkippedProcess, ...] = ()


def _comm(pid: str, proc_root: str) -> str:
    try:
        with open(f"{proc_root}/{pid}/comm", "rb") as file:
            return file.read().decode("utf-8", "replace").strip()
    except OSError:
        return ""


def find_qemu_processes(
    trusted: frozenset[int],
    proc_root: str = "/proc",
    proxmox_dir: str | None = None,
) -> ProcessScan:
    """The VMs running now (processes of ``trusted`` users running QEMU), and the processes
    named like QEMU that are not (see the module's docstring)."""
    found: list[QemuProcess] = []
    skipped: list[SkippedProcess] = []
    listeners = Listeners(proc_root)
    try:
        entries = sorted((e for e in os.listdir(proc_root) if e.isdigit()), key=int)
    except OSError:
        return ProcessScan()  # not Linux
    for entry in entries:
        comm = _comm(entry, proc_root)
        if not (comm.startswith(QEMU_COMMS[0]) or comm in QEMU_COMMS[1:]):
            continue
        pid = int(entry)
        try:
            start = parse_start(read_bytes(f"{proc_root}/{pid}/stat"))
        except ReadError:
            continue  # gone
        verdict = check_vm_process(pid, trusted, proc_root)
        if verdict.skip == GONE:
            continue
        if verdict.skip is not None:
            skipped.append(SkippedProcess(pid, start, verdict.skip))
            continue
        process = _read_process(pid, verdict.uids, start, proc_root, proxmox_dir, listeners)
        if process is not None:
            found.append(process)
    return ProcessScan(tuple(found), tuple(skipped))


def _read_process(
    pid: int,
    uids: tuple[int, int],
    start: float,
    proc_root: str,
    proxmox_dir: str | None,
    listeners: Listeners,
) -> QemuProcess | None:
    """One VM's command line and checked monitors (``None``: it exited meanwhile)."""
    try:
        line = cmdline.read(pid, proc_root, proxmox_dir)
    except (RecursionError, ValueError, MemoryError) as err:
        log.warning("QEMU process %d: command line not understood: %s", pid, type(err).__name__)
        return QemuProcess(pid, cmdline.QemuCommandLine(""), uids, start, (), BAD_COMMAND_LINE)
    if line is None or not line.binary:
        return None
    held = socket_inodes(pid, proc_root) if line.monitors else None
    monitors = tuple(check_monitor(m, uids, held, listeners, proxmox_dir) for m in line.monitors)
    return QemuProcess(pid, line, uids, start, monitors)
