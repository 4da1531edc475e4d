"""What the kernel tells of unix sockets through ``sock_diag`` (``NETLINK_SOCK_DIAG``,
linux/sock_diag.h and linux/unix_diag.h): which file a listening socket is bound to, and
which socket is at the other end of a connection. ``OSError`` where netlink is not allowed
(a sandbox without ``AF_NETLINK``) or the kernel refuses."""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Iterator
from typing import Protocol

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST, _NLM_F_DUMP = 0x1, 0x300
_NLMSG_ERROR, _NLMSG_DONE = 2, 3
_TCP_LISTEN = 10
_ALL_STATES = 0xFFFFFFFF
_NO_COOKIE = 0xFFFFFFFF
#: What to report (``udiag_show``) and the attribute that carries it.
_UDIAG_SHOW_VFS, _UNIX_DIAG_VFS = 0x2, 1
_UDIAG_SHOW_PEER, _UNIX_DIAG_PEER = 0x4, 2

_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_UNIX_DIAG_REQ = struct.Struct("=BBHIII2I")  # family, protocol, pad, states, ino, show, cookie
_UNIX_DIAG_MSG = struct.Struct("=BBBBI2I")  # family, type, state, pad, ino, cookie
_RTATTR = struct.Struct("=HH")  # len, type
_INT = struct.Struct("i")
_U32 = struct.Struct("=I")
_VFS = struct.Struct("=II")  # inode, device


def listening_by_file() -> dict[tuple[int, int], int]:
    """Each listening unix socket of this network namespace by the file it is bound to:
    (device, inode) of the file (the kernel's device numbering, :func:`kernel_device`) ->
    the socket's inode."""
    found: dict[tuple[int, int], int] = {}
    for inode, attributes in _unix_diag(1 << _TCP_LISTEN, 0, _UDIAG_SHOW_VFS, dump=True):
        vfs = attributes.get(_UNIX_DIAG_VFS)
        if vfs is not None and len(vfs) >= _VFS.size:
            file_inode, device = _VFS.unpack_from(vfs)
            found[(device, file_inode)] = inode
    return found


class HasFileno(Protocol):
    def fileno(self) -> int: ...


def peer_inode(sock: HasFileno) -> int:
    """The inode of the socket at the other end of the connected unix socket ``sock`` (the
    one ``accept()`` gave the server)."""
    ours = os.fstat(sock.fileno()).st_ino
    for inode, attributes in _unix_diag(_ALL_STATES, ours, _UDIAG_SHOW_PEER, dump=False):
        if inode != ours:
            raise OSError(errno.EPROTO, "sock_diag answered for another socket")
        peer = attributes.get(_UNIX_DIAG_PEER)
        if peer is not None and len(peer) >= _U32.size:
            return int(_U32.unpack_from(peer)[0])
    raise OSError(errno.ENOTCONN, "sock_diag: no peer")


def kernel_device(st_dev: int) -> int:
    """``st_dev`` in the kernel's own numbering (``MKDEV``: major << 20 | minor), as
    ``sock_diag`` reports it."""
    return (os.major(st_dev) << 20) | os.minor(st_dev)


def _unix_diag(
    states: int, inode: int, show: int, *, dump: bool
) -> Iterator[tuple[int, dict[int, bytes]]]:
    """(socket inode, {attribute type: payload}) of each unix socket the kernel reports:
    every one in ``states`` (``dump``), else the one of ``inode``."""
    request = _UNIX_DIAG_REQ.pack(socket.AF_UNIX, 0, 0, states, inode, show, _NO_COOKIE, _NO_COOKIE)
    flags = _NLM_F_REQUEST | (_NLM_F_DUMP if dump else 0)
    header = _NLMSGHDR.pack(_NLMSGHDR.size + len(request), SOCK_DIAG_BY_FAMILY, flags, 1, 0)
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG) as diag:
        diag.settimeout(2.0)
        diag.sendto(header + request, (0, 0))
        while True:
            data = diag.recv(1 << 16)
            if not data:
                raise OSError(errno.EPROTO, "sock_diag: no answer")
            for kind, body in _messages(data):
                if kind == _NLMSG_DONE:
                    return
                if kind == _NLMSG_ERROR:
                    (code,) = _INT.unpack_from(body)
                    raise OSError(-code, os.strerror(-code))
                if kind != SOCK_DIAG_BY_FAMILY or len(body) < _UNIX_DIAG_MSG.size:
                    raise OSError(errno.EPROTO, f"unexpected sock_diag answer (type {kind})")
                found = _UNIX_DIAG_MSG.unpack_from(body)[4]
                yield found, _attributes(body[_UNIX_DIAG_MSG.size :])
                if not dump:
                    return


def _messages(data: bytes) -> Iterator[tuple[int, bytes]]:
    offset = 0
    while offset + _NLMSGHDR.size <= len(data):
        length, kind, _, _, _ = _NLMSGHDR.unpack_from(data, offset)
        if length < _NLMSGHDR.size:
            return
        yield kind, data[offset + _NLMSGHDR.size : offset + length]
        offset += (length + 3) & ~3


def _attributes(data: bytes) -> dict[int, bytes]:
    found: dict[int, bytes] = {}
    offset = 0
    while offset + _RTATTR.size <= len(data):
        length, kind = _RTATTR.unpack_from(data, offset)
        if length < _RTATTR.size:
            break
        found[kind] = data[offset + _RTATTR.size : offset + length]
        offset += (length + 3) & ~3
    return found
