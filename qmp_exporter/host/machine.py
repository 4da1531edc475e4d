"""This machine as the exporter sees it: one :class:`Host` per exporter holds what every read
of ``/proc`` and ``/sys`` shares (roots, the open-files budget, the boot time, what was
logged, the TCP peer hints), instead of module globals."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import socket
from collections.abc import Iterable, Sequence

from qmp_exporter.host import peer
from qmp_exporter.host.peer import Peer, PeerSocket
from qmp_exporter.host.process import ProcessReader
from qmp_exporter.host.processes import ProcessScan, find_qemu_processes
from qmp_exporter.host.procfs import PERMISSION, FileBudget, ReadError, read_boot_time
from qmp_exporter.host.trust import check_qemu, trusted_uids
from qmp_exporter.host.unwatched import UnwatchedHost, read_unwatched
from qmp_exporter.textformat import Labels

log = logging.getLogger(__name__)

#: (pid, figure, reason) logged at most this many times before the memory of them is reset.
MAX_LOGGED = 10_000


class Host:
    """The host's processes, read under ``proc_root`` and ``sys_root`` (injectable for tests
    and benchmarks)."""

    def __init__(
        self, proc_root: str = "/proc", sys_root: str = "/sys", *, peer_pidfd: bool = True
    ) -> None:
        self.proc_root = proc_root
        self.sys_root = sys_root
        #: Whether a unix peer is identified by ``SO_PEERPIDFD`` where the kernel has it
        #: (false: by ``SO_PEERCRED``'s PID and UID, as before Linux 6.5; for tests).
        self.peer_pidfd = peer_pidfd
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

    def trusted_process(self, pid: int, started: float | None = None) -> ProcessReader | None:
        """A reader of process ``pid`` (the one that ``started`` so many seconds after boot,
        if given, as a :class:`~qmp_exporter.host.peer.Peer` says) if it runs a QEMU binary
        installed by root, else ``None`` (logged once). The reader is bound to that process
        before the binary is checked, and checked alive after: the binary checked is that
        process's, not a later one's of the same PID. The exporter's own process (a demo
        VM it simulates) is no QEMU, and not worth a log line."""
        if pid == os.getpid():
            return None
        reader = ProcessReader(self, pid, started)
        try:
            reader.bind()
            problem = check_qemu(pid, self.proc_root)
            if problem is None:
                reader.check_alive()
                return reader
            problem = f"exe {problem}"
        except ReadError as err:
            problem = err.reason
        reader.close()
        self.note_missing(pid, "host", problem)
        return None

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

    async def peer(self, sock: PeerSocket | None, vm: str = "") -> Peer | None:
        """The process behind a connected monitor socket, identified beyond its PID
        (:func:`~qmp_exporter.host.peer.identify`, once per connection: a unix peer found
        holding the connection at the fd it held last on the loop, about 40 µs; a list of
        its fds, or a TCP lookup, off the loop); ``None`` when unknown or refused (logged
        once per process and cause, with the VM's name ``vm``)."""
        if sock is None:
            self._log_once(0, "peer", "no socket to ask", logging.INFO, vm)
            return None
        if sock.family == socket.AF_UNIX and not self._may_be_qemu(sock, vm):
            return None
        identify = functools.partial(
            peer.identify, sock, self.proc_root, self.peer_pidfd, self._peer_hints
        )
        try:
            try:  # a unix peer holding the connection at the fd it held last: on the loop
                if sock.family != socket.AF_UNIX:
                    raise peer.NeedsScan
                found = identify(scan=False)
            except peer.NeedsScan:  # a list of fds, or /proc/net/tcp: off the loop
                found = await asyncio.to_thread(identify)
        except peer.PeerUnknown as err:
            self._log_once(err.pid, "peer", err.reason, logging.WARNING, vm)
            return None
        if found.unchecked:
            self._log_once(found.pid, "holder", found.unchecked, logging.INFO, vm)
        return found

    def _may_be_qemu(self, sock: PeerSocket, vm: str) -> bool:
        """Whether the process that listened on a unix socket may be a QEMU, by one system
        call and its ``exe``: before the holder check's walk over the peer's fds, which a
        simulator of many VMs (one process, thousands of fds) would pay on every connection
        of a ``poll``-mode monitor. The exporter's own process (a demo VM) is none."""
        try:
            credentials = peer.unix_peer_credentials(sock)
        except OSError:
            return True  # identify says why
        if credentials is None:
            return True
        pid = credentials[0]
        if pid == os.getpid():
            return False
        problem = check_qemu(pid, self.proc_root)
        if problem in (None, PERMISSION):  # another user's exe: the owner decides later
            return True
        self.note_missing(pid, "host", f"exe {problem}")
        return False

    async def check_peer(
        self, sock: PeerSocket | None, pid: int, uids: tuple[int, int], vm: str = ""
    ) -> tuple[Peer | None, str | None]:
        """Whether the peer of a connected monitor socket is process ``pid`` running as one
        of ``uids`` (the process whose command line named the monitor): (the peer, ``None``)
        when it is, else (``None``, what it is instead). A TCP peer this user may not look up
        (another user's fds) passes: its listener's owner was checked before connecting."""
        found = await self.peer(sock, vm)
        if found is None:
            if sock is not None and sock.family != socket.AF_UNIX:
                return None, None
            return None, "its peer cannot be identified"
        if found.pid != pid or found.uid not in uids:
            return None, f"its peer is process {found.pid} (uid {found.uid}), not process {pid}"
        return found, None

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
        if self._first_time((pid, figure, reason)):
            log.info("QEMU process %d: no %s figures (%s)", pid, figure, reason)

    def _log_once(self, pid: int, what: str, reason: str, level: int, vm: str) -> None:
        """A monitor's peer refused (``what`` "peer") or not checked as the holder of the
        connection ("holder"), logged once per process and cause."""
        if not self._first_time((pid, what, reason)):
            return
        subject = f"VM {vm!r}: " if vm else ""
        if what == "peer":
            log.log(level, "%smonitor peer refused, no host figures: %s", subject, reason)
        else:
            text = "%smonitor peer %d not checked as the socket's holder: %s"
            log.log(level, text, subject, pid, reason)

    def _first_time(self, key: tuple[int, str, str]) -> bool:
        if key in self._logged:
            return False
        if len(self._logged) > MAX_LOGGED:
            self._logged.clear()
        self._logged.add(key)
        return True
