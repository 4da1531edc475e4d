"""The HTTP server's deadlines and caps, and the process-wide TLS memory bounds.

Every figure here bounds what one hostile client (or a few hundred) can hold: time
before a request head must be complete, connections at once, bytes buffered per
connection. The defaults are the ones docs/operations.md ("HTTP limits") documents.
"""

from __future__ import annotations

import asyncio.sslproto
import contextlib
import ctypes
import ctypes.util
import logging
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class HTTPLimits:
    """Deadlines (seconds) and caps of the HTTP server."""

    #: Request line plus headers, in bytes (more: 431).
    max_header_bytes: int = 16 * 1024
    #: Request bodies in bytes (only small POSTs are expected; more: 413).
    max_body_bytes: int = 64 * 1024
    #: Time for the whole request head and body from the first wait, not per byte (then 408).
    header_timeout: float = 5.0
    #: An idle keep-alive connection is closed after this long without a new request.
    keepalive_timeout: float = 15.0
    #: A response write that drains nothing for this long is abandoned.
    write_stall_timeout: float = 10.0
    #: A connection is closed (``Connection: close``) after this many requests or seconds.
    max_requests_per_connection: int = 1000
    max_connection_lifetime: float = 600.0
    #: Connections held at once; at the cap a new one evicts the one with least progress.
    max_connections: int = 512
    #: TLS: handshake deadline from the accept, and handshakes in progress at once.
    tls_handshake_timeout: float = 5.0
    max_pending_handshakes: int = 128
    #: A peer (IP) holding more connections than this is "heavy": its connections go first.
    per_peer_share: int = 8
    #: Pending TLS handshakes of one peer; at this many its own oldest is dropped.
    per_peer_pending_handshakes: int = 16
    #: A connection writing a response that drained nothing this long counts as stalled.
    stalled_after: float = 1.0
    #: Body slice per write, and the transport buffer above which we wait for the client.
    write_piece: int = 16 * 1024
    write_high_water: int = 16 * 1024
    #: Kernel send buffer per connection (autotuning lets a non-reader take ~4 MB).
    send_buffer: int = 128 * 1024


#: asyncio's TLS read chunk (``SSLProtocol.max_size``, 256 KiB in 3.11) is allocated and
#: zero-filled for every accepted connection, handshake or not: 4,000 silent TLS connects
#: cost 1.2 GB. ``loop.start_tls`` hard-codes the class, so its attribute is the only knob.
TLS_READ_CHUNK = 16 * 1024


def bound_tls_buffers() -> None:
    """Lower asyncio's per-connection TLS buffer to :data:`TLS_READ_CHUNK` if it is larger.

    Fails safe: on a Python without this attribute nothing changes.
    """
    current = getattr(asyncio.sslproto.SSLProtocol, "max_size", None)
    if isinstance(current, int) and current > TLS_READ_CHUNK:
        asyncio.sslproto.SSLProtocol.max_size = TLS_READ_CHUNK


def _find_malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None (musl, macOS, no libc found)."""
    with contextlib.suppress(OSError, AttributeError, TypeError):
        trim: Callable[[int], int] = ctypes.CDLL(
            ctypes.util.find_library("c") or "libc.so.6"
        ).malloc_trim
        return trim
    return None


_malloc_trim = _find_malloc_trim()


def release_freed_memory() -> None:
    """Give the heap freed by closed connections back to the OS, where glibc allows it.

    After a burst of TLS connections glibc keeps their buffers' pages in the process
    (RSS stays at its peak); ``malloc_trim(0)`` returns them. A no-op elsewhere.
    """
    if _malloc_trim is not None:
        try:
            _malloc_trim(0)
        except OSError:  # pragma: no cover - glibc's trim does not fail; ctypes might
            log.debug("malloc_trim failed", exc_info=True)
