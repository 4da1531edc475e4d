"""Which process is behind a connected monitor socket (Linux; unknown elsewhere), identified
beyond its PID, once per connection (:func:`identify`).

A unix socket's peer is the process that called ``listen()``, as the kernel recorded it: for a
monitor QEMU serves itself, QEMU. Two ways to know it, both ending in a :class:`Peer` (PID,
UID, start time):

- ``SO_PEERPIDFD`` (Linux 6.5): a pidfd of that very process, so a PID reused since cannot be
  mistaken for it; a listener whose maker has exited is refused (no pidfd, or one naming no
  process);
- else ``SO_PEERCRED``'s PID and UID: the process now at that PID must be of that UID (real
  and effective), else the PID was reused by another user's process (a user's listener
  outliving its maker, the PID then taken by root's QEMU).

Either way the start time (``stat`` field 22) is read, and the process must hold our
connection's server side: the peer socket's inode, asked of ``sock_diag`` (``NETLINK_SOCK_DIAG``),
among its ``/proc/PID/fd`` links. That refuses a listener "laundered" through ``exec`` (made
by a process that then execs a real QEMU: ``listen()``'s caller is the QEMU, the socket is
served by someone else). Where it cannot be checked (netlink refused by the sandbox, another
user's ``fd/`` unreadable without ``CAP_SYS_PTRACE``), :attr:`Peer.holder_checked` says so.

A TCP connection to a loopback address is looked up where the kernel tells it: our
connection's server side in ``/proc/net/tcp{,6}`` gives its inode, and the process holding
``socket:[inode]`` is found in ``/proc/*/fd`` (milliseconds, more on a host of many
processes, so the process found last time for that address is looked at first; other users'
fd lists need ``CAP_SYS_PTRACE``). Looked up once per connection, only for a collector that
reads the peer: a restarted QEMU is a new connection and so a new peer.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import select
import socket
import struct
from dataclasses import dataclass
from typing import Any, Protocol

from qmp_exporter.host import sockdiag
from qmp_exporter.host.procfs import ReadError, parse_start, parse_uids, read_bytes

_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
#: ``SO_PEERPIDFD`` (Linux 6.5; Python 3.11's ``socket`` has no name for it).
SO_PEERPIDFD = 77
_INT = struct.Struct("i")
#: How a peer was identified.
PIDFD = "pidfd"
CREDENTIALS = "credentials"
TCP = "tcp"


@dataclass(frozen=True, slots=True)
class Peer:
    """The process behind one connection: with its start time, one process for good (a
    later process of the same PID starts later)."""

    pid: int
    uid: int
    #: Seconds after boot it started (:func:`~qmp_exporter.host.procfs.parse_start`).
    started: float
    #: :data:`PIDFD`, :data:`CREDENTIALS` or :data:`TCP`.
    how: str
    #: Why it was not seen holding our connection's server side (``""``: it was).
    unchecked: str = ""

    @property
    def holder_checked(self) -> bool:
        return not self.unchecked


class PeerUnknown(ValueError):
    """The peer cannot be told, or is not who it seems: ``reason`` says why."""

    def __init__(self, reason: str, pid: int = 0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.pid = pid


class NeedsScan(Exception):
    """The holder check needs the peer's whole fd list (``identify(scan=False)``)."""


class PeerSocket(Protocol):
    """What is used of a socket (``socket.socket`` and asyncio's ``TransportSocket``)."""

    @property
    def family(self) -> int: ...

    def getsockopt(self, level: int, optname: int, buflen: int) -> bytes: ...

    def getsockname(self) -> Any: ...

    def getpeername(self) -> Any: ...

    def fileno(self) -> int: ...


def identify(
    sock: PeerSocket,
    proc_root: str = "/proc",
    pidfd: bool = True,
    hints: PeerHints | None = None,
    scan: bool = True,
) -> Peer:
    """The process at the other end of ``sock`` (see the module's docstring); ``pidfd``
    false: ``SO_PEERCRED`` even where the kernel has ``SO_PEERPIDFD``. :class:`PeerUnknown`
    when it cannot be known or is refused. ``scan`` false: :class:`NeedsScan` rather than
    list all the fds of a unix peer (a few system calls and small reads then, about 40 µs:
    fit for the event loop; a full scan, or any TCP lookup, is not)."""
    hints = hints if hints is not None else PeerHints()
    try:
        if sock.family == socket.AF_UNIX:
            return _unix_peer(sock, proc_root, pidfd, hints, scan)
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            return _tcp_peer(sock.getsockname(), sock.getpeername(), proc_root, hints)
    except ReadError as err:
        raise PeerUnknown(f"peer process unreadable: {err}") from None
    except OSError as err:
        raise PeerUnknown(f"peer unknown: {err.strerror or err}") from None
    raise PeerUnknown(f"peer unknown: address family {sock.family}")


def unix_peer_credentials(sock: PeerSocket) -> tuple[int, int] | None:
    """``SO_PEERCRED``'s (PID, UID): who called ``listen()`` (``None``: not Linux, or a peer
    in a PID namespace not mapped into ours)."""
    so_peercred = getattr(socket, "SO_PEERCRED", None)
    if so_peercred is None:
        return None
    pid, uid, _ = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, so_peercred, _UCRED.size))
    return (int(pid), int(uid)) if pid > 0 else None


def _unix_peer(
    sock: PeerSocket, proc_root: str, use_pidfd: bool, hints: PeerHints, scan: bool
) -> Peer:
    credentials = unix_peer_credentials(sock)
    if credentials is None:
        raise PeerUnknown("peer unknown: no credentials (not Linux, or another PID namespace)")
    pid, uid = credentials
    try:
        pidfd = unix_peer_pidfd(sock) if use_pidfd else None
    except PeerUnknown as err:
        raise PeerUnknown(err.reason, pid) from None
    try:
        if pidfd is not None:
            if not _alive(pidfd):
                raise PeerUnknown("the process that made the listening socket has exited", pid)
        else:
            real, effective = _uids(pid, proc_root)
            if (real, effective) != (uid, uid):
                raise PeerUnknown(
                    f"PID {pid} is uid {real}'s now, the listening socket was uid {uid}'s: "
                    "the listener's maker has exited and its PID was reused",
                    pid,
                )
        started = _started(pid, proc_root)
        unchecked = ""
        try:
            inode = unix_peer_inode(sock)
        except OSError as err:
            unchecked = f"sock_diag refused: {err.strerror or err}"
        else:
            unchecked = _check_holder(pid, inode, proc_root, hints, scan)
        # still the same process: the pidfd's is alive, or the PID's start is unchanged
        if not _alive(pidfd) if pidfd is not None else _started(pid, proc_root) != started:
            raise PeerUnknown(f"process {pid} exited while it was looked at", pid)
    finally:
        if pidfd is not None:
            os.close(pidfd)
    return Peer(pid, uid, started, CREDENTIALS if pidfd is None else PIDFD, unchecked)


def unix_peer_pidfd(sock: PeerSocket) -> int | None:
    """A pidfd of the process that called ``listen()`` (``SO_PEERPIDFD``), to close; ``None``
    where the kernel has no such option (before Linux 6.5). :class:`PeerUnknown` when the
    kernel says that process is gone."""
    try:
        (fd,) = _INT.unpack(sock.getsockopt(socket.SOL_SOCKET, SO_PEERPIDFD, _INT.size))
    except OSError as err:
        if err.errno == errno.ENOPROTOOPT:
            return None
        if err.errno in (errno.ESRCH, errno.EINVAL, errno.ENODATA):
            raise PeerUnknown("the process that made the listening socket has exited") from None
        raise
    return int(fd)


def _alive(pidfd: int) -> bool:
    """Whether the process of ``pidfd`` still runs: a pidfd turns readable when its process
    exits (no permission needed, unlike a signal). While it runs, ``SO_PEERCRED``'s PID (the
    same ``struct pid``) is that process's and no other's."""
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return not poller.poll(0)


def _uids(pid: int, proc_root: str) -> tuple[int, int]:
    """The real and effective UID of ``pid`` (``Uid:`` of ``status``)."""
    return parse_uids(read_bytes(f"{proc_root}/{pid}/status"))


def _started(pid: int, proc_root: str) -> float:
    return parse_start(read_bytes(f"{proc_root}/{pid}/stat"))


def unix_peer_inode(sock: PeerSocket) -> int:
    """The inode of the socket at the other end of the connected unix socket ``sock`` (the
    one ``accept()`` gave the server), from ``sock_diag``; ``OSError`` when netlink is not
    allowed here (a sandbox without ``AF_NETLINK``)."""
    return sockdiag.peer_inode(sock)


def _check_holder(pid: int, inode: int, proc_root: str, hints: PeerHints, scan: bool) -> str:
    """``""`` when ``pid`` holds ``socket:[inode]``; why it could not be checked (another
    user's ``fd/`` unreadable); :class:`PeerUnknown` when it does not hold it."""
    try:
        fd = _holding_fd(pid, f"socket:[{inode}]", proc_root, hints.fd_of(pid), scan)
    except PermissionError:
        return f"/proc/{pid}/fd unreadable"
    if fd is None:
        raise PeerUnknown(
            f"process {pid} made the listening socket but does not serve it "
            "(a listener handed on, as through exec)",
            pid,
        )
    hints.remember_fd(pid, fd)
    return ""


def _tcp_peer(ours: Any, theirs: Any, proc_root: str, hints: PeerHints) -> Peer:
    found = _tcp_holder(ours, theirs, proc_root, hints)
    if found is None:
        raise PeerUnknown(f"no process of this host seen serving {theirs[0]}:{theirs[1]}")
    pid, target = found
    real, _ = _uids(pid, proc_root)
    started = _started(pid, proc_root)
    if _holding_fd(pid, target, proc_root, hints.fd_of(pid)) is None:  # still the same one
        raise PeerUnknown(f"process {pid} exited while it was looked at", pid)
    return Peer(pid, real, started, TCP)


def _tcp_holder(ours: Any, theirs: Any, proc_root: str, hints: PeerHints) -> tuple[int, str] | None:
    """(PID, ``socket:[inode]``) of the server side of ``ours`` -> ``theirs`` (loopback)."""
    if not ipaddress.ip_address(theirs[0]).is_loopback:
        return None
    server = (theirs[0], theirs[1])
    inode = _tcp_inode(server, (ours[0], ours[1]), proc_root)
    if inode is None:
        return None
    target = f"socket:[{inode}]"
    hint = hints.get(server)
    if hint is not None and _holds(hint, target, proc_root, hints):
        return hint, target  # the same QEMU as last time: its fds only, not every process's
    pid = _pid_of_socket(target, proc_root, hints)
    if pid is not None:
        hints.remember(server, pid)
        return pid, target
    return None


class PeerHints:
    """The process that served each TCP monitor address last, and the fd of each process
    that held a monitor connection last (a ``poll``-mode monitor connects for every poll, and
    QEMU's next connection mostly gets the same fd): looked at first, so a lookup reads one
    link, or lists one process's fds, not every process's."""

    __slots__ = ("_fds", "_owners")
    #: Addresses (and processes) remembered at most (then forgotten all at once).
    LIMIT = 4096

    def __init__(self) -> None:
        self._owners: dict[tuple[str, int], int] = {}
        self._fds: dict[int, str] = {}

    def get(self, server: tuple[str, int]) -> int | None:
        return self._owners.get(server)

    def remember(self, server: tuple[str, int], pid: int) -> None:
        if len(self._owners) >= self.LIMIT:
            self._owners.clear()
        self._owners[server] = pid

    def fd_of(self, pid: int) -> str | None:
        return self._fds.get(pid)

    def remember_fd(self, pid: int, fd: str) -> None:
        if len(self._fds) >= self.LIMIT:
            self._fds.clear()
        self._fds[pid] = fd


def _hex_address(host: str, port: int) -> str:
    """``/proc/net/tcp{,6}``'s spelling: 32-bit words in host (little-endian) order."""
    raw = ipaddress.ip_address(host).packed
    words = (raw[i : i + 4] for i in range(0, len(raw), 4))
    return "".join(w[::-1].hex().upper() for w in words) + f":{port:04X}"


def _tcp_inode(local: tuple[str, int], remote: tuple[str, int], proc_root: str) -> int | None:
    want = (_hex_address(*local).encode(), _hex_address(*remote).encode())
    table = "tcp6" if ":" in local[0] else "tcp"
    try:
        with open(f"{proc_root}/net/{table}", "rb") as file:
            lines = file.read().splitlines()[1:]
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) > 9 and (fields[1], fields[2]) == want:
            return int(fields[9]) or None  # 0: not accepted yet (no process holds it)
    return None


def _pid_of_socket(target: str, proc_root: str, hints: PeerHints) -> int | None:
    for entry in os.scandir(proc_root):
        if entry.name.isdigit() and _holds(int(entry.name), target, proc_root, hints):
            return int(entry.name)
    return None


def _holds(pid: int, target: str, proc_root: str, hints: PeerHints) -> bool:
    """Whether process ``pid`` has an fd whose link reads ``target`` (``False`` when its fds
    cannot be listed); the fd is remembered."""
    try:
        fd = _holding_fd(pid, target, proc_root, hints.fd_of(pid))
    except OSError:
        return False
    if fd is not None:
        hints.remember_fd(pid, fd)
    return fd is not None


def _holding_fd(
    pid: int, target: str, proc_root: str, first: str | None = None, scan: bool = True
) -> str | None:
    """The fd of process ``pid`` whose link reads ``target`` (``first`` is tried first), or
    ``None``; ``OSError`` when its fds cannot be listed (``PermissionError``: another
    user's, without ``CAP_SYS_PTRACE``); :class:`NeedsScan` when ``first`` is not it and
    ``scan`` is false."""
    fd_dir = f"{proc_root}/{pid}/fd"
    if first is not None:
        try:
            if os.readlink(f"{fd_dir}/{first}") == target:
                return first
        except PermissionError:
            raise
        except OSError:
            pass
    if not scan:
        raise NeedsScan
    for fd in os.listdir(fd_dir):
        try:
            if os.readlink(f"{fd_dir}/{fd}") == target:
                return fd
        except OSError:
            continue
    return None
