"""Which process is behind a connected monitor socket (Linux; ``None`` elsewhere).

A unix socket's peer is the process that listened when we connected (``SO_PEERCRED``): for a
monitor QEMU serves itself, QEMU. A TCP connection to a loopback address is looked up where
the kernel tells it: our connection's server side in ``/proc/net/tcp{,6}`` gives its inode,
and the process holding ``socket:[inode]`` is found in ``/proc/*/fd`` (milliseconds, more on
a host of many processes, so the process found last time for that address is looked at
first; other users' fd lists need ``CAP_SYS_PTRACE``). Looked up once per connection, only
for a collector that reads the peer: a restarted QEMU is a new connection and so a new PID.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
from typing import Any, Protocol

_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


class PeerSocket(Protocol):
    """What is used of a socket (``socket.socket`` and asyncio's ``TransportSocket``)."""

    @property
    def family(self) -> int: ...

    def getsockopt(self, level: int, optname: int, buflen: int) -> bytes: ...

    def getsockname(self) -> Any: ...

    def getpeername(self) -> Any: ...


def peer_pid(
    sock: PeerSocket, proc_root: str = "/proc", hints: PeerHints | None = None
) -> int | None:
    """The PID of the process at the other end of ``sock``, or ``None`` where it cannot be
    known (not Linux, another host, another PID namespace, unreadable ``/proc``)."""
    try:
        if sock.family == socket.AF_UNIX:
            return unix_peer_pid(sock)
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            return tcp_peer_pid(sock.getsockname(), sock.getpeername(), proc_root, hints)
    except (OSError, ValueError):
        return None
    return None


def unix_peer_pid(sock: PeerSocket) -> int | None:
    """``SO_PEERCRED``'s PID (0, a peer in a PID namespace not mapped into ours: ``None``)."""
    credentials = unix_peer_credentials(sock)
    return None if credentials is None else credentials[0]


def unix_peer_credentials(sock: PeerSocket) -> tuple[int, int] | None:
    """``SO_PEERCRED``'s (PID, UID): who called ``listen()`` (``None``: not Linux, or a peer
    in a PID namespace not mapped into ours)."""
    so_peercred = getattr(socket, "SO_PEERCRED", None)
    if so_peercred is None:
        return None
    pid, uid, _ = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, so_peercred, _UCRED.size))
    return (int(pid), int(uid)) if pid > 0 else None


def tcp_peer_pid(
    ours: Any, theirs: Any, proc_root: str = "/proc", hints: PeerHints | None = None
) -> int | None:
    """The process holding the server side of the TCP connection ``ours`` -> ``theirs``,
    when ``theirs`` is a loopback address; ``hints`` name the process to look at first."""
    if not ipaddress.ip_address(theirs[0]).is_loopback:
        return None
    server = (theirs[0], theirs[1])
    inode = _tcp_inode(server, (ours[0], ours[1]), proc_root)
    if inode is None:
        return None
    hint = None if hints is None else hints.get(server)
    if hint is not None and _holds(hint, f"socket:[{inode}]", proc_root):
        return hint  # the same QEMU as last time: its fds only, not every process's
    pid = _pid_of_socket(inode, proc_root)
    if pid is not None and hints is not None:
        hints.remember(server, pid)
    return pid


class PeerHints:
    """The process that served each TCP monitor address last (a ``poll``-mode monitor connects
    for every poll): looked at first, so a lookup lists one process's fds, not every process's."""

    __slots__ = ("_owners",)
    #: Addresses remembered at most (then forgotten all at once).
    LIMIT = 4096

    def __init__(self) -> None:
        self._owners: dict[tuple[str, int], int] = {}

    def get(self, server: tuple[str, int]) -> int | None:
        return self._owners.get(server)

    def remember(self, server: tuple[str, int], pid: int) -> None:
        if len(self._owners) >= self.LIMIT:
            self._owners.clear()
        self._owners[server] = pid


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


def _pid_of_socket(inode: int, proc_root: str) -> int | None:
    target = f"socket:[{inode}]"
    for entry in os.scandir(proc_root):
        if entry.name.isdigit() and _holds(int(entry.name), target, proc_root):
            return int(entry.name)
    return None


def _holds(pid: int, target: str, proc_root: str) -> bool:
    """Whether process ``pid`` has an fd whose link reads ``target``."""
    fd_dir = f"{proc_root}/{pid}/fd"
    try:
        fds = os.listdir(fd_dir)
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"{fd_dir}/{fd}") == target:
                return True
        except OSError:
            continue
    return False
