"""Connections of the HTTP server: the cap with eviction, TLS start, idle waits, bounded writes.

At the cap a new connection evicts the one that made least progress (see
:meth:`Connection.eviction_key`), so a new client (Prometheus) always gets in; a
connection whose handler runs is never evicted. TLS handshakes are started here, bounded
in time and in number; response bodies are written in slices of the shared bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable

from qmp_exporter.web.http.http_limits import HTTPLimits, release_freed_memory


class Stage(enum.IntEnum):
    """Where a connection is; lower stages are evicted first."""

    IDLE = 0  # keep-alive, between requests
    OPENING = 1  # TLS handshake or an unfinished request head
    STALLED = 2  # writing a response, nothing drained lately (derived from WRITING)
    WRITING = 3
    HANDLING = 4  # in the guard or a handler: never evicted


class Connection:
    """What the cap needs to know about one accepted connection."""

    __slots__ = ("evicted", "host", "reader", "since", "stage", "started", "task", "transport")

    def __init__(
        self, task: asyncio.Task[None], transport: asyncio.WriteTransport, host: str
    ) -> None:
        self.task = task
        self.transport = transport
        self.host = host
        self.reader: asyncio.StreamReader | None = None
        self.stage = Stage.OPENING
        self.since = self.started = time.monotonic()
        #: Closed by the server (cap or handshake bound): aborted, not closed gracefully.
        self.evicted = False

    def enter(self, stage: Stage) -> None:
        """Record a move to ``stage`` (progress)."""
        self.stage = stage
        self.since = time.monotonic()

    def eviction_key(self, heavy: bool, stalled_after: float) -> tuple[bool, int, int, float]:
        """Smallest goes first: heavy peers, then least progress, then oldest progress."""
        buffered = _buffered(self.reader) if self.reader is not None else 0
        stage = self.stage
        if stage is Stage.WRITING and time.monotonic() - self.since > stalled_after:
            stage = Stage.STALLED
        return (not heavy, int(stage), buffered, self.since)


class ConnectionTable:
    """The connections held at once, capped, and the TLS handshakes pending, capped."""

    def __init__(self, limits: HTTPLimits) -> None:
        self.limits = limits
        self._conns: dict[asyncio.Task[None], Connection] = {}
        self._per_host: dict[str, int] = {}
        self._pending: dict[asyncio.Task[None], Connection] = {}  # oldest first
        self._pending_per_host: dict[str, int] = {}
        self._closed_since_trim = 0
        self._trim_scheduled = False
        #: Connections closed to make room, new ones refused (all handling), head/write timeouts.
        self.evictions = 0
        self.refused = 0
        self.timeouts = 0

    def __len__(self) -> int:
        return len(self._conns)

    def tasks(self) -> Iterable[asyncio.Task[None]]:
        """The tasks serving the connections held now."""
        return list(self._conns)

    def admit(self, conn: Connection) -> bool:
        """Hold ``conn``, evicting the least useful connection at the cap; False: refused."""
        if len(self._conns) >= self.limits.max_connections:
            share, stalled = self.limits.per_peer_share, self.limits.stalled_after
            per_host = self._per_host
            victim = min(
                (c for c in self._conns.values() if c.stage < Stage.HANDLING),
                key=lambda c: c.eviction_key(per_host.get(c.host, 0) > share, stalled),
                default=None,
            )
            if victim is None:
                self.refused += 1
                return False
            self.evict(victim)
        self._conns[conn.task] = conn
        _count(self._per_host, conn.host, +1)
        return True

    def evict(self, victim: Connection) -> None:
        """Abort ``victim``'s connection and stop its task."""
        victim.evicted = True
        self.evictions += 1
        victim.transport.abort()
        victim.task.cancel()
        self.forget(victim)

    def forget(self, conn: Connection) -> None:
        """Stop counting ``conn`` (idempotent)."""
        if self._conns.pop(conn.task, None) is conn:
            _count(self._per_host, conn.host, -1)
        self._end_handshake(conn)

    def closed(self) -> None:
        """Note one closed connection; after a burst, return freed heap to the OS (once)."""
        self._closed_since_trim += 1
        if self._closed_since_trim >= 256 and not self._trim_scheduled:
            self._trim_scheduled = True
            asyncio.get_running_loop().call_later(2.0, self._trim)

    def _trim(self) -> None:
        self._closed_since_trim = 0
        self._trim_scheduled = False
        release_freed_memory()

    async def start_tls(
        self, writer: asyncio.StreamWriter, context: ssl.SSLContext, conn: Connection
    ) -> None:
        """Complete the TLS handshake within the deadline; a new handshake never waits.

        At a peer's share of pending handshakes its own oldest is dropped; at the global
        cap the oldest of the peer with most pending is.
        """
        limits = self.limits
        if self._pending_per_host.get(conn.host, 0) >= limits.per_peer_pending_handshakes:
            self.evict(next(c for c in self._pending.values() if c.host == conn.host))
        elif len(self._pending) >= limits.max_pending_handshakes:
            heaviest = max(self._pending_per_host, key=self._pending_per_host.__getitem__)
            self.evict(next(c for c in self._pending.values() if c.host == heaviest))
        self._pending[conn.task] = conn
        _count(self._pending_per_host, conn.host, +1)
        try:
            async with asyncio.timeout(limits.tls_handshake_timeout):
                await writer.start_tls(
                    context, ssl_handshake_timeout=limits.tls_handshake_timeout + 1
                )
        finally:
            self._end_handshake(conn)

    def _end_handshake(self, conn: Connection) -> None:
        if self._pending.pop(conn.task, None) is conn:
            _count(self._pending_per_host, conn.host, -1)


def _count(counts: dict[str, int], host: str, delta: int) -> None:
    left = counts.get(host, 0) + delta
    if left > 0:
        counts[host] = left
    else:
        counts.pop(host, None)


class StreamProtocol(asyncio.StreamReaderProtocol):
    """A stream protocol with a bounded kernel send buffer that, for TLS, reads nothing early.

    With ``tls`` reading is paused at once so that the ClientHello stays in the kernel until
    :meth:`ConnectionTable.start_tls` runs.
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        serve: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
        tls: bool,
        send_buffer: int,
    ) -> None:
        self._tls = tls
        self._send_buffer = send_buffer
        super().__init__(reader, serve)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Bound the send buffer; pause reading (soon) for TLS."""
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self._send_buffer)
        if self._tls and isinstance(transport, asyncio.ReadTransport):
            # Not inline: asyncio 3.11 re-adds the reader right after connection_made whatever
            # pause_reading() said. Scheduled now it runs before any select() result.
            asyncio.get_running_loop().call_soon(transport.pause_reading)
        super().connection_made(transport)


def _buffered(reader: asyncio.StreamReader) -> int:
    """Bytes received and not yet parsed (an unfinished head); 0 if asyncio hides them."""
    buffer = getattr(reader, "_buffer", None)  # StreamReader has no public peek
    return len(buffer) if isinstance(buffer, bytearray) else 0


async def wait_for_next_request(reader: asyncio.StreamReader, timeout: float) -> bool:
    """Wait (keep-alive) for the next request's first byte or EOF; False after ``timeout``.

    StreamReader has no public "wait for data without consuming it"; on a Python whose
    StreamReader lacks the private one this returns at once, and the head deadline (shorter)
    bounds the idle wait instead.
    """
    wait_for_data = getattr(reader, "_wait_for_data", None)
    if wait_for_data is None:
        return True
    try:
        async with asyncio.timeout(timeout):
            while not _buffered(reader) and not reader.at_eof():
                await wait_for_data("wait_for_next_request")
    except TimeoutError:
        return False
    return True


async def write_bounded(
    writer: asyncio.StreamWriter,
    head: bytes,
    chunks: list[bytes],
    conn: Connection,
    table: ConnectionTable,
) -> None:
    """Write ``head`` then ``chunks`` in slices, waiting for the client above the high water.

    No chunk is joined or copied whole: the transport copies at most the slice the kernel
    did not take. Raises TimeoutError when nothing drains for the write-stall deadline.
    """
    limits = table.limits
    conn.enter(Stage.WRITING)
    writer.write(head)
    piece = limits.write_piece
    for chunk in chunks:
        view = memoryview(chunk)
        for start in range(0, len(view), piece):
            writer.write(view[start : start + piece])
            if writer.transport.get_write_buffer_size() > limits.write_high_water:
                await _drain(writer, conn, table)
    await _drain(writer, conn, table)


async def _drain(writer: asyncio.StreamWriter, conn: Connection, table: ConnectionTable) -> None:
    before = writer.transport.get_write_buffer_size()
    try:
        # asyncio.timeout, not wait_for: on 3.11 wait_for drops a cancellation (a close, an
        # eviction) that arrives as the drain completes, and the connection lives on.
        async with asyncio.timeout(table.limits.write_stall_timeout):
            await writer.drain()
    except TimeoutError:
        table.timeouts += 1
        raise
    if writer.transport.get_write_buffer_size() < before:
        conn.since = time.monotonic()
