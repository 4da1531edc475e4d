"""This machine as the exporter sees it: one :class:`Host` per exporter holds what every read
of ``/proc`` and ``/sys`` shares (roots, the open-files budget, the boot time, what was
logged, the TCP peer hints), instead of module globals."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Iterable, Sequence

from qmp_exporter.host import listeners, peer
from qmp_exporter.host.process import ProcessReader
from qmp_exporter.host.processes import ProcessScan, find_qemu_processes
from qmp_exporter.host.procfs import FileBudget, read_boot_time
from qmp_exporter.host.trust import check_qemu, trusted_uids
from qmp_exporter.host.unwatched import UnwatchedHost, read_unwatched
from qmp_exporter.textformat import Labels

log = logging.getLogger(__name__)

#: (pid, figure, reason) logged at most this many times before the memory of them is reset.
MAX_LOGGED = 10_000


class Host:
    """The host's processes, read under ``proc_root`` and ``sys_root`` (injectable for tests
    and benchmarks)."""

    def __init__(self, proc_root: str = "/proc", sys_root: str = "/sys") -> None:
        self.proc_root = proc_root
        self.sys_root = sys_root
        #: Files all process readers may hold open (see :meth:`limit_held_files`).
        self.files = FileBudget()
        self._boot_time: float | None = None
        self._logged: set[tuple[int, str, str]] = set()
        self._vcpu_labels: dict[int, Labels] = {}
        self._peer_hints = peer.PeerHints()

    def limit_held_files(self, files: int) -> None:
        """Hold at most ``files`` files open for all process readers (the exporter gives
        what its sockets leave); else half the open-files limit."""
        self.files.limit(files)

    # -- who is a QEMU -------------------------------------------------------------------------

    def trusted_process(self, pid: int) -> ProcessReader | None:
        """A reader of ``pid`` if it runs a QEMU binary installed by root, else ``None``
        (logged once)."""
        problem = check_qemu(pid, self.proc_root)
        if problem is not None:
            self.note_missing(pid, "host", f"exe {problem}")
            return None
        return ProcessReader(self, pid)

    def qemu_processes(
        self, trusted_users: Sequence[str] | None = None, proxmox_dir: str | None = None
    ) -> ProcessScan:
        """The VMs among the processes running now, by PID, and the processes named like
        QEMU that are not: those of users other than root and ``trusted_users`` (``None``:
        :data:`~qmp_exporter.host.trust.DEFAULT_TRUSTED_USERS`), looked up now; see
        :func:`find_qemu_processes`."""
        return find_qemu_processes(trusted_uids(trusted_users), self.proc_root, proxmox_dir)

    def read_unwatched(self, processes: Iterable[tuple[int, str]]) -> tuple[UnwatchedHost, ...]:
        """The figures of QEMU processes nothing watches (see :func:`read_unwatched`)."""
        return read_unwatched(self, processes)

    async def peer_pid(self, sock: peer.PeerSocket | None) -> int | None:
        """The process behind a connected monitor socket (``None``: unknown). A unix socket
        asks the kernel (``SO_PEERCRED``, one system call, on the loop); a TCP one reads
        ``/proc`` off the event loop."""
        if sock is None:
            return None
        if sock.family == socket.AF_UNIX:
            return peer.peer_pid(sock)
        return await asyncio.to_thread(peer.peer_pid, sock, self.proc_root, self._peer_hints)

    async def peer_mismatch(
        self, sock: peer.PeerSocket | None, pid: int, uids: tuple[int, int]
    ) -> str | None:
        """``None`` when the peer of a connected monitor socket is process ``pid`` running as
        one of ``uids``, else what it is instead (see :func:`listeners.peer_mismatch`)."""
        if sock is None:
            return "it closed"
        if sock.family == socket.AF_UNIX:
            return listeners.peer_mismatch(sock, pid, uids, self.proc_root)
        return await asyncio.to_thread(listeners.peer_mismatch, sock, pid, uids, self.proc_root)

    # -- shared by the readers -----------------------------------------------------------------

    def boot_time(self) -> float:
        """The host's boot time (epoch seconds), read once; :class:`ReadError` if unknown."""
        if self._boot_time is None:
            self._boot_time = read_boot_time(self.proc_root)
        return self._boot_time

    def vcpu_labels(self, index: int) -> Labels:
        """The labels of vCPU ``index`` (one tuple per index, shared by every VM)."""
        labels = self._vcpu_labels.get(index)
        if labels is None:
            labels = self._vcpu_labels[index] = (("vcpu", str(index)),)
        return labels

    def note_missing(self, pid: int, figure: str, reason: str) -> None:
        """Log once per process, figure and cause why a figure is left out."""
        key = (pid, figure, reason)
        if key in self._logged:
            return
        if len(self._logged) > MAX_LOGGED:
            self._logged.clear()
        self._logged.add(key)
        log.info("QEMU process %d: no %s figures (%s)", pid, figure, reason)
