"""Every QEMU on the host, found without config: the ``- processes: true`` discovery entry.

:func:`find_qemu_processes` scans ``/proc`` for processes whose name looks like QEMU
(``qemu-system-*``, ``qemu-kvm``, ``kvm``), keeps those whose ``exe`` is not known to be
something else (see :func:`~qmp_exporter.host.trust.check_qemu`), and reads each one's
monitors, name and UUID from its command line (:mod:`qmp_exporter.host.cmdline`). Which
monitor discovery watches each through is discovery's choice
(:mod:`qmp_exporter.discovery.processes`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from qmp_exporter.host import cmdline
from qmp_exporter.host.procfs import UNTRUSTED
from qmp_exporter.host.trust import check_qemu

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
