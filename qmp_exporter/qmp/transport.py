"""The byte stream under a QMP session: open a unix or TCP connection to a monitor, hand on
what it reads, say when it ends. Knows nothing of messages or commands."""

from __future__ import annotations

import asyncio
import errno
import socket
import threading
from collections.abc import Callable

from qmp_exporter.qmp.address import Address, UnixAddress
from qmp_exporter.qmp.errors import (
    BacklogFullError,
    ConnectError,
    ConnectRefusedError,
    ConnectTimeoutError,
    PermissionDeniedError,
    SocketNotFoundError,
)

#: Receives each chunk of bytes read from the connection.
DataCallback = Callable[[bytes], None]
#: Told once that the connection ended, with the error that ended it if any.
LostCallback = Callable[[Exception | None], None]

#: Bytes read from a socket at a time.
READ_BUFFER_BYTES = 64 * 1024
_read_buffers = threading.local()


def _read_buffer() -> memoryview:
    """The read buffer of this thread's connections. One is enough: the transport fills it
    and hands it to the protocol within one callback, and the protocol copies out what it
    got before returning."""
    view: memoryview | None = getattr(_read_buffers, "view", None)
    if view is None:
        view = _read_buffers.view = memoryview(bytearray(READ_BUFFER_BYTES))
    return view


class _Protocol(asyncio.BufferedProtocol):
    """Hands the bytes read to ``on_data`` and the end of the connection to ``on_lost``.

    A buffered protocol: the transport reads into a buffer kept for the thread, instead of
    allocating (and freeing) 256 KiB for every read as a plain protocol does, which costs
    more than the rest of a small answer's handling.
    """

    def __init__(self, on_data: DataCallback, on_lost: LostCallback) -> None:
        self._on_data = on_data
        self._on_lost = on_lost
        self._buffer = _read_buffer()

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._buffer

    def buffer_updated(self, nbytes: int) -> None:
        self._on_data(bytes(self._buffer[:nbytes]))

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._on_lost(exc)


async def open_transport(
    address: Address, timeout: float, on_data: DataCallback, on_lost: LostCallback
) -> asyncio.Transport:
    """Connect to ``address`` (a TCP connect bounded by ``timeout``; a unix connect never
    waits); raise the :class:`ConnectError` that says why not."""
    loop = asyncio.get_running_loop()

    def protocol() -> _Protocol:
        return _Protocol(on_data, on_lost)

    if isinstance(address, UnixAddress):
        sock = _connect_unix(address)
        try:
            transport, _ = await loop.create_unix_connection(protocol, sock=sock)
        except BaseException:
            sock.close()
            raise
        return transport
    try:
        # asyncio.timeout, never wait_for: 3.11's wait_for returns the result when a cancel
        # meets the connect's completion, and the cancel is lost (a stop never ends).
        async with asyncio.timeout(timeout):
            transport, _ = await loop.create_connection(protocol, address.host, address.port)
    except TimeoutError:
        raise ConnectTimeoutError(
            f"{address}: connect did not complete within {timeout:g}s"
        ) from None
    except OSError as err:
        raise _connect_error(address, err) from err
    return transport


def _connect_unix(address: UnixAddress) -> socket.socket:
    """Connect a non-blocking unix socket at once: unix connects never wait, they succeed
    or fail (EAGAIN when the listen backlog is full)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        sock.connect(address.path)
    except OSError as err:
        sock.close()
        raise _connect_error(address, err) from err
    return sock


def _connect_error(address: Address, err: OSError) -> ConnectError:
    code = err.errno
    if code == errno.ENOENT:
        return SocketNotFoundError(f"{address}: no such socket")
    if code == errno.ECONNREFUSED:
        return ConnectRefusedError(f"{address}: connection refused (is QEMU running?)")
    if code in (errno.EACCES, errno.EPERM):
        return PermissionDeniedError(f"{address}: permission denied")
    if code == errno.EAGAIN:
        return BacklogFullError(
            f"{address}: listen backlog full: another client holds this monitor socket "
            "and others are already waiting"
        )
    if code == errno.ENOTSOCK or code == errno.ENOTDIR:
        return ConnectRefusedError(f"{address}: not a socket")
    return ConnectError(f"{address}: {err.strerror or err}")
