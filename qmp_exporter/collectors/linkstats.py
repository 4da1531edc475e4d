"""A network interface's counters from the kernel over rtnetlink (``RTM_GETSTATS``, Linux
4.7+): the eight the host collector gives, in one request and answer, where sysfs needs a
file each. Used for the real ``/sys`` only; :func:`sysfs_counters` reads the same eight
from a ``sys_root`` (the fallback, and the generated fixtures of the tests).
"""

from __future__ import annotations

import logging
import socket
import struct
import threading

from qmp_exporter.collectors.hostproc import MALFORMED, HeldFiles, ReadError, reason_of

log = logging.getLogger(__name__)

#: The counters, in the order of the kernel's ``struct rtnl_link_stats64`` (the host's
#: direction) and of sysfs's ``statistics/`` file names.
HOST_STATS = (
    "rx_packets", "tx_packets", "rx_bytes", "tx_bytes",
    "rx_errors", "tx_errors", "rx_dropped", "tx_dropped",
)  # fmt: skip

Counters = tuple[int, ...]
#: Where the kernel's sysfs is: rtnetlink reads the same interfaces only there.
REAL_SYS = "/sys"

_NETLINK_ROUTE = 0
_RTM_NEWSTATS, _RTM_GETSTATS = 92, 94
_NLMSG_ERROR = 2
_NLM_F_REQUEST = 1
_IFLA_STATS_LINK_64 = 1
_HEADER = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, sequence, port
_STATS_MSG = struct.Struct("=BBHII")  # if_stats_msg: family, pad, pad, ifindex, filter mask
_ATTRIBUTE = struct.Struct("=HH")  # nlattr: length, type
_ERROR = struct.Struct("=i")
_COUNTERS = struct.Struct(f"={len(HOST_STATS)}Q")
_REQUEST = struct.Struct("=IHHIIBBHII")  # nlmsghdr and if_stats_msg
_LINK_64 = 1 << (_IFLA_STATS_LINK_64 - 1)  # the filter mask asking for it alone
#: The usual answer: its message type and, after the header and ``if_stats_msg``, its one
#: attribute's length and type, then the counters (first of a struct that grows with the
#: kernel's version).
_ANSWER_HEAD = struct.Struct("=4xH22xHH")
_ANSWER_START = _HEADER.size + _STATS_MSG.size + _ATTRIBUTE.size
_ANSWER_END = _ANSWER_START + _COUNTERS.size
_ANSWER_ATTRIBUTE_LENGTH = _ATTRIBUTE.size + _COUNTERS.size
_LOOPBACK = 1  # ifindex of ``lo`` in every network namespace
_MAX_READS = 8  # answers to read past before giving up on ours (left over from a failure)


class LinkStats:
    """One ``NETLINK_ROUTE`` socket, for one thread: :meth:`read` is a send and a receive."""

    def __init__(self) -> None:
        self._socket = socket.socket(
            socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, _NETLINK_ROUTE
        )
        try:
            self._socket.bind((0, 0))
        except OSError:
            self._socket.close()
            raise
        self._buffer = bytearray(8192)
        self._sequence = 0

    def close(self) -> None:
        """Close the socket."""
        self._socket.close()

    def read(self, ifindex: int) -> Counters:
        """The counters of interface ``ifindex`` (``HOST_STATS`` order); :class:`ReadError`
        ``gone`` when there is no such interface."""
        self._sequence = sequence = (self._sequence + 1) & 0xFFFFFFFF
        request = _REQUEST.pack(
            _REQUEST.size, _RTM_GETSTATS, _NLM_F_REQUEST, sequence, 0,
            socket.AF_UNSPEC, 0, 0, ifindex, _LINK_64,
        )  # fmt: skip
        buffer = self._buffer
        try:
            self._socket.send(request)
            for _ in range(_MAX_READS):  # the kernel answers within the send
                size = self._socket.recv_into(buffer, 0, socket.MSG_DONTWAIT)
                if size < _ANSWER_START or _HEADER.unpack_from(buffer)[3] != sequence:
                    continue
                kind, attribute_length, attribute = _ANSWER_HEAD.unpack_from(buffer)
                if (
                    kind == _RTM_NEWSTATS
                    and attribute == _IFLA_STATS_LINK_64
                    and attribute_length >= _ANSWER_ATTRIBUTE_LENGTH
                    and size >= _ANSWER_END
                ):
                    return _COUNTERS.unpack_from(buffer, _ANSWER_START)  # the usual answer
                return _answer(buffer, size, ifindex)
        except OSError as err:
            raise ReadError(reason_of(err), f"rtnetlink ifindex {ifindex}") from None
        raise ReadError(MALFORMED, f"rtnetlink: no answer for ifindex {ifindex}")


def _answer(buffer: bytearray, size: int, ifindex: int) -> Counters:
    length, kind = _HEADER.unpack_from(buffer)[:2]
    end = min(length, size)
    if kind == _NLMSG_ERROR and end >= _HEADER.size + _ERROR.size:
        code = -_ERROR.unpack_from(buffer, _HEADER.size)[0]
        raise ReadError(reason_of(OSError(code, "")), f"rtnetlink ifindex {ifindex}")
    if kind != _RTM_NEWSTATS:
        raise ReadError(MALFORMED, f"rtnetlink: message type {kind}")
    offset = _HEADER.size + _STATS_MSG.size
    while offset + _ATTRIBUTE.size <= end:
        attribute_length, attribute = _ATTRIBUTE.unpack_from(buffer, offset)
        if attribute_length < _ATTRIBUTE.size:
            break
        if attribute & 0x3FFF == _IFLA_STATS_LINK_64:
            if attribute_length < _ATTRIBUTE.size + _COUNTERS.size:
                break
            return _COUNTERS.unpack_from(buffer, offset + _ATTRIBUTE.size)
        offset += (attribute_length + 3) & ~3
    raise ReadError(MALFORMED, "rtnetlink: no 64-bit link statistics")


_local = threading.local()
_unavailable: list[str] = []  # why rtnetlink cannot serve here, once known


def link_stats() -> LinkStats | None:
    """This thread's reader (the process scan reads from a thread of its own), or ``None``
    where rtnetlink cannot serve: not Linux, a sandbox without ``AF_NETLINK``, a kernel
    before 4.7. Logged once; the caller then reads sysfs."""
    if _unavailable:
        return None
    reader: LinkStats | None = getattr(_local, "reader", None)
    if reader is not None:
        return reader
    try:
        reader = LinkStats()
        reader.read(_LOOPBACK)
    except (OSError, ReadError) as err:
        if reader is not None:
            reader.close()
        _unavailable.append(str(err))
        log.info("tap counters from sysfs: rtnetlink cannot serve here (%s)", err)
        return None
    _local.reader = reader
    return reader


def interface_index(tap: str, sys_root: str = "/sys") -> int:
    """The ifindex of interface ``tap``."""
    path = f"{sys_root}/class/net/{tap}/ifindex"
    try:
        with open(path, "rb") as file:
            return int(file.read())
    except OSError as err:
        raise ReadError(reason_of(err), path) from None
    except ValueError as err:
        raise ReadError(MALFORMED, f"{path}: {err}") from None


def sysfs_counters(tap: str, files: HeldFiles, sys_root: str = "/sys") -> Counters:
    """The same counters as :meth:`LinkStats.read`, from ``statistics/`` of ``sys_root``."""
    directory = f"{sys_root}/class/net/{tap}/statistics/"
    try:
        return tuple(int(files.read(directory + name)) for name in HOST_STATS)
    except ValueError as err:
        if isinstance(err, ReadError):
            raise
        raise ReadError(MALFORMED, f"{directory}: {err}") from None
