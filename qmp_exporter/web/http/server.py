"""A small HTTP/1.1 server on asyncio: exact routes, keep-alive, bounded requests.

Every request is bounded (head size and time, body size); a bad request gets a 4xx, is not
logged and harms no other connection; 401/403/429 close the connection. Connection
deadlines and the cap live in :mod:`~.connection`.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import re
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

from qmp_exporter.web.http.connection import (
    Connection,
    ConnectionTable,
    Stage,
    StreamProtocol,
    wait_for_next_request,
    write_bounded,
)
from qmp_exporter.web.http.http_limits import HTTPLimits, bound_tls_buffers

log = logging.getLogger(__name__)

#: RFC 9110 §12.4.2: ``qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )``.
_QVALUE = re.compile(r"(?:0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?)\Z")
#: Old names a recipient should take as the coding (RFC 9110 §8.4.1).
_CODING_ALIASES = {"x-gzip": "gzip", "x-compress": "compress"}


def _weight(parameters: list[str]) -> float:
    """The ``q`` of one Accept-Encoding element's parameters: 1 if absent, 0 if malformed."""
    for parameter in parameters:
        name, sep, value = parameter.partition("=")
        if name.strip().lower() == "q":
            value = value.strip()
            return float(value) if sep and _QVALUE.match(value) else 0.0
    return 1.0


def accepts_coding(accept_encoding: str, coding: str) -> bool:
    """Whether an ``Accept-Encoding`` value allows the content coding ``coding``.

    As RFC 9110 §12.5.3 says: a coding named with a q-value above 0 is acceptable; one named
    only with q=0 (or a malformed q-value, taken as 0) is not, whatever ``*`` says; a coding
    not named is as acceptable as ``*``, and unacceptable without it. Names are
    case-insensitive; a coding named twice counts with its higher q-value. An empty value
    accepts no coding (only identity).
    """
    wanted = coding.lower()
    named: float | None = None
    wildcard: float | None = None
    for element in accept_encoding.split(","):
        name, *parameters = element.split(";")
        name = name.strip().lower()
        name = _CODING_ALIASES.get(name, name)
        if name == wanted:
            named = max(named or 0.0, _weight(parameters))
        elif name == "*":
            wildcard = max(wildcard or 0.0, _weight(parameters))
    if named is not None:
        return named > 0
    return wildcard is not None and wildcard > 0


@dataclass(slots=True)
class Request:
    """One parsed request."""

    method: str
    target: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes = b""
    peer: str = ""
    version: str = "HTTP/1.1"
    #: The verified TLS client certificate (``SSLSocket.getpeercert()``), if any.
    peercert: dict[str, Any] | None = None

    def accepts_gzip(self) -> bool:
        """Whether the client's ``Accept-Encoding`` allows a gzip body (none given: no)."""
        return accepts_coding(self.headers.get("accept-encoding", ""), "gzip")


@dataclass(slots=True)
class Response:
    """What a handler returns."""

    status: int = 200
    #: The body, or its chunks in order (sent in slices, never joined).
    body: bytes | list[bytes] = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[Request], Awaitable[Response]]
#: Returns a response to send instead of routing (e.g. 401), or None to go on; may be async
#: (a bcrypt check runs in a thread so that it never stalls the event loop).
Guard = Callable[[Request], Response | Awaitable[Response | None] | None]


def text_response(status: int, text: str, headers: dict[str, str] | None = None) -> Response:
    """A plain-text response."""
    return Response(status, (text.rstrip("\n") + "\n").encode(), headers=headers or {})


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


#: Responses after which the connection is closed: a client without valid credentials (or
#: rate-limited) reconnects, so it cannot hold a keep-alive slot while it guesses.
_CLOSING_STATUSES = frozenset({401, 403, 429})
#: Content-Length as sent: ASCII digits only, bounded (no int() of 5,000 digits or '³').
_CONTENT_LENGTH = re.compile(r"[0-9]{1,9}")


class HTTPServer:
    """Serves registered routes. ``guard`` runs before routing (authentication).

    Every connection has deadlines and the number held at once is capped (see
    :class:`~.http_limits.HTTPLimits` and :mod:`~.connection`).
    """

    def __init__(self, limits: HTTPLimits | None = None) -> None:
        self.limits = limits or HTTPLimits()
        self.routes: dict[str, tuple[Handler, tuple[str, ...]]] = {}
        self.guard: Guard | None = None
        #: Headers added to every response (e.g. the web config's http_server_config.headers).
        self.response_headers: Callable[[], Mapping[str, str]] | None = None
        #: The connections held now, with the counters of evictions, refusals and timeouts.
        self.connections = ConnectionTable(self.limits)
        self._servers: list[asyncio.Server] = []
        self._tls_ports: dict[int, ssl.SSLContext] = {}

    def route(self, path: str, handler: Handler, methods: tuple[str, ...] = ("GET",)) -> None:
        """Serve ``path`` with ``handler`` (HEAD is allowed wherever GET is)."""
        if "GET" in methods and "HEAD" not in methods:
            methods = (*methods, "HEAD")
        self.routes[path] = (handler, methods)

    async def start(self, host: str, port: int, ssl_context: ssl.SSLContext | None = None) -> None:
        """Listen on ``host:port`` (port 0: any free port; see :attr:`addresses`).

        With ``ssl_context`` the socket is plain and each connection's handshake is started
        by the server (bounded in time and number), not by asyncio at accept.
        """
        loop = asyncio.get_running_loop()
        tls = ssl_context is not None
        if tls:
            bound_tls_buffers()
        limits = self.limits

        def protocol() -> StreamProtocol:
            reader = asyncio.StreamReader(limit=limits.max_header_bytes)
            return StreamProtocol(reader, self._serve_connection, tls, limits.send_buffer)

        server = await loop.create_server(
            protocol, host or None, port, reuse_address=True, backlog=1024
        )
        if ssl_context is not None:
            for sock in server.sockets:
                self._tls_ports[sock.getsockname()[1]] = ssl_context
        self._servers.append(server)

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """The (host, port) pairs listened on."""
        return [s.getsockname()[:2] for srv in self._servers for s in srv.sockets]

    async def close(self) -> None:
        """Stop listening and end every connection."""
        for server in self._servers:
            server.close()
        for task in self.connections.tasks():
            task.cancel()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()
        self._servers.clear()

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Serve one connection; a cancelled one (a close, an eviction) ends cancelled."""
        if await self._serve(reader, writer):
            # A fresh CancelledError from a frame that holds nothing: the one caught inside
            # carries a traceback through frames that hold the writer, whose protocol holds
            # this task, which holds the error: a cycle that kept every evicted connection
            # (its TLS objects) until a full garbage collection (2,000 never-handshaking TLS
            # connects: 110 MB kept).
            del reader, writer
            raise asyncio.CancelledError

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Serve one connection until it ends; True when it was cancelled."""
        task = asyncio.current_task()
        assert task is not None
        peer = writer.get_extra_info("peername")
        peer_text = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer or "")
        conn = Connection(task, writer.transport, peer[0] if isinstance(peer, tuple) else "")
        table, limits = self.connections, self.limits
        try:
            if not table.admit(conn):
                conn.evicted = True  # refused: reset, not a graceful close
                return False
            sockname = writer.get_extra_info("sockname")
            context = self._tls_ports.get(sockname[1]) if isinstance(sockname, tuple) else None
            if context is not None:
                await table.start_tls(writer, context, conn)
                conn.transport = writer.transport
            conn.reader = reader
            writer.transport.set_write_buffer_limits(high=limits.write_high_water)
            served = 0
            while True:
                if served:
                    conn.enter(Stage.IDLE)
                    if not await wait_for_next_request(reader, limits.keepalive_timeout):
                        break
                conn.enter(Stage.OPENING)
                try:
                    request = await self._read_request(reader, peer_text)
                except _BadRequest as err:
                    await self._send(
                        writer, "GET", text_response(err.status, str(err)), False, conn
                    )
                    break
                if request is None:
                    break
                served += 1
                request.peercert = writer.get_extra_info("peercert")
                conn.enter(Stage.HANDLING)
                response = await self._dispatch(request)
                keep_alive = (
                    _wants_keep_alive(request)
                    and response.status not in _CLOSING_STATUSES
                    and served < limits.max_requests_per_connection
                    and time.monotonic() - conn.started < limits.max_connection_lifetime
                )
                await self._send(writer, request.method, response, keep_alive, conn)
                if not keep_alive:
                    break
        except (OSError, asyncio.IncompleteReadError):
            pass  # the peer went away, timed out or spoke bad TLS: nothing to tell it or log
        except asyncio.CancelledError:
            return True
        except Exception:
            log.exception("HTTP connection from %s failed", peer_text)
        finally:
            table.forget(conn)
            if conn.evicted:
                writer.transport.abort()
            else:
                writer.close()
            table.closed()
        return False

    async def _read_request(self, reader: asyncio.StreamReader, peer: str) -> Request | None:
        """The next request, within the head deadline; None at a clean EOF."""
        head: list[bytes] = []
        try:
            async with asyncio.timeout(self.limits.header_timeout) as deadline:
                await self._read_head(reader, head)
                request = self._parse_head(head, peer)
                length = int(request.headers.get("content-length", "0"))
                if length:
                    request.body = await reader.readexactly(length)
        except asyncio.IncompleteReadError as err:
            if head or err.partial.strip():
                raise _BadRequest(400, "incomplete request") from None
            return None
        except asyncio.LimitOverrunError:
            raise _BadRequest(431, "request header fields too large") from None
        except TimeoutError:
            if deadline.expired():
                self.connections.timeouts += 1
                raise _BadRequest(408, "request timeout") from None
            raise
        return request

    async def _read_head(self, reader: asyncio.StreamReader, lines: list[bytes]) -> None:
        """Append the head's lines to ``lines``, up to the empty line that ends it. A line may
        end in a bare LF (RFC 9112 2.2: ``printf 'GET /metrics HTTP/1.0\\n\\n' | nc`` works);
        empty lines before the request line are skipped; at most ``max_header_bytes`` in all."""
        total = 0
        while True:
            line = await reader.readuntil(b"\n")  # LimitOverrunError: one line over the limit
            total += len(line)
            if total > self.limits.max_header_bytes:
                raise asyncio.LimitOverrunError("request head over the limit", total)
            line = line.rstrip(b"\r\n")
            if line:
                lines.append(line)
            elif lines:
                return

    def _parse_head(self, head: list[bytes], peer: str) -> Request:
        """The request a head says, or a :class:`_BadRequest` with its 4xx."""
        lines = [line.decode("latin-1") for line in head]
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise _BadRequest(400, "malformed request line")
        method, target, version = parts
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if not line:
                continue
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip():
                raise _BadRequest(400, "malformed header line")
            key = name.lower()
            value = value.strip()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        if "transfer-encoding" in headers:
            raise _BadRequest(411, "chunked request bodies are not supported; send Content-Length")
        length_text = headers.get("content-length", "0")
        if not _CONTENT_LENGTH.fullmatch(length_text):
            raise _BadRequest(400, "bad Content-Length")
        if int(length_text) > self.limits.max_body_bytes:
            raise _BadRequest(413, f"request body over {self.limits.max_body_bytes} bytes")
        path, query_text = _split_target(target)
        try:
            query = parse_qs(query_text, keep_blank_values=True, max_num_fields=32)
        except ValueError:
            raise _BadRequest(400, "too many query fields") from None
        return Request(method, target, path, query, headers, b"", peer, version)

    async def _dispatch(self, request: Request) -> Response:
        if self.guard is not None:
            denied = self.guard(request)
            if inspect.isawaitable(denied):
                denied = await denied
            if denied is not None:
                return denied
        entry = self.routes.get(request.path)
        if entry is None:
            return text_response(404, f"404 page not found: {request.path[:200]}")
        handler, methods = entry
        if request.method not in methods:
            return text_response(
                405, f"method {request.method[:20]} not allowed", {"Allow": ", ".join(methods)}
            )
        try:
            return await handler(request)
        except Exception:
            log.exception("handler for %s failed", request.path)
            return text_response(500, "internal error; see the exporter's log")

    async def _send(
        self,
        writer: asyncio.StreamWriter,
        method: str,
        response: Response,
        keep_alive: bool,
        conn: Connection,
    ) -> None:
        try:
            reason = HTTPStatus(response.status).phrase
        except ValueError:
            reason = ""
        body = response.body
        chunks = [body] if isinstance(body, bytes) else body
        head = [
            f"HTTP/1.1 {response.status} {reason}",
            f"Content-Type: {response.content_type}",
            f"Content-Length: {sum(map(len, chunks))}",
            f"Connection: {'keep-alive' if keep_alive else 'close'}",
        ]
        head.extend(f"{k}: {v}" for k, v in response.headers.items())
        if self.response_headers is not None:
            head.extend(f"{k}: {v}" for k, v in self.response_headers().items())
        head_bytes = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
        await write_bounded(
            writer, head_bytes, [] if method == "HEAD" else chunks, conn, self.connections
        )


def _split_target(target: str) -> tuple[str, str]:
    """(path, query) of a request target; origin-form is split at '?' as sent.

    ``//host/path`` is therefore the path ``//host/path`` (no route: 404), never
    ``/path`` on ``host`` as ``urlsplit`` would read it.
    """
    if target.startswith("/"):
        path, _, query = target.partition("?")
        return path, query
    if target.startswith(("http://", "https://")):
        try:
            split = urlsplit(target)
        except ValueError:
            raise _BadRequest(400, "malformed request target") from None
        return split.path or "/", split.query
    raise _BadRequest(400, "malformed request target")


def _wants_keep_alive(request: Request) -> bool:
    connection = request.headers.get("connection", "").lower()
    if request.version == "HTTP/1.0":
        return "keep-alive" in connection
    return "close" not in connection
