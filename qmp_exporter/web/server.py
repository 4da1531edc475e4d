"""A small HTTP/1.1 server on asyncio: exact routes, keep-alive, bounded requests.

Every request is bounded (header size and time, body size); a bad request gets a 4xx and
harms no other connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import re
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

log = logging.getLogger(__name__)

#: Request line plus headers.
MAX_HEADER_BYTES = 16 * 1024
#: Request bodies (only small POSTs are expected).
MAX_BODY_BYTES = 64 * 1024
#: Time allowed to send the request line and headers.
HEADER_TIMEOUT = 10.0
#: Idle keep-alive connections are closed after this long.
KEEPALIVE_TIMEOUT = 60.0
#: Connections served at once; further ones wait in the listen backlog.
MAX_CONNECTIONS = 512

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
    #: The body, or its chunks in order (joined with the head into one write when sent).
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


class HTTPServer:
    """Serves registered routes. ``guard`` runs before routing (authentication)."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[Handler, tuple[str, ...]]] = {}
        self.guard: Guard | None = None
        #: Headers added to every response (e.g. the web config's http_server_config.headers).
        self.response_headers: Callable[[], Mapping[str, str]] | None = None
        self._servers: list[asyncio.Server] = []
        self._connections: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(MAX_CONNECTIONS)

    def route(self, path: str, handler: Handler, methods: tuple[str, ...] = ("GET",)) -> None:
        """Serve ``path`` with ``handler`` (HEAD is allowed wherever GET is)."""
        if "GET" in methods and "HEAD" not in methods:
            methods = (*methods, "HEAD")
        self.routes[path] = (handler, methods)

    async def start(self, host: str, port: int, ssl_context: ssl.SSLContext | None = None) -> None:
        """Listen on ``host:port`` (port 0: any free port; see :attr:`addresses`)."""
        server = await asyncio.start_server(
            self._serve_connection,
            host or None,
            port,
            ssl=ssl_context,
            limit=MAX_HEADER_BYTES,
            reuse_address=True,
            backlog=1024,
        )
        self._servers.append(server)

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """The (host, port) pairs listened on."""
        return [s.getsockname()[:2] for srv in self._servers for s in srv.sockets]

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        for task in list(self._connections):
            task.cancel()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()
        self._servers.clear()

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        peer = writer.get_extra_info("peername")
        peer_text = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer or "")
        try:
            async with self._slots:
                first = True
                while True:
                    timeout = HEADER_TIMEOUT if first else KEEPALIVE_TIMEOUT
                    first = False
                    try:
                        request = await self._read_request(reader, timeout, peer_text)
                    except _BadRequest as err:
                        await self._send(writer, "GET", text_response(err.status, str(err)), False)
                        break
                    if request is None:
                        break
                    request.peercert = writer.get_extra_info("peercert")
                    keep_alive = _wants_keep_alive(request)
                    response = await self._dispatch(request)
                    await self._send(writer, request.method, response, keep_alive)
                    if not keep_alive:
                        break
        except (ConnectionError, TimeoutError, ssl.SSLError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("HTTP connection from %s failed", peer_text)
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    async def _read_request(
        self, reader: asyncio.StreamReader, timeout: float, peer: str
    ) -> Request | None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
        except asyncio.IncompleteReadError as err:
            if err.partial.strip():
                raise _BadRequest(400, "incomplete request") from None
            return None
        except asyncio.LimitOverrunError:
            raise _BadRequest(431, "request header fields too large") from None
        except TimeoutError:
            return None
        try:
            text = head.decode("latin-1")
        except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes anything
            raise _BadRequest(400, "bad encoding") from None
        lines = text.split("\r\n")
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
        body = b""
        if "transfer-encoding" in headers:
            raise _BadRequest(411, "chunked request bodies are not supported; send Content-Length")
        length_text = headers.get("content-length", "0")
        if not length_text.isdigit():
            raise _BadRequest(400, "bad Content-Length")
        length = int(length_text)
        if length > MAX_BODY_BYTES:
            raise _BadRequest(413, f"request body over {MAX_BODY_BYTES} bytes")
        if length:
            try:
                body = await asyncio.wait_for(reader.readexactly(length), HEADER_TIMEOUT)
            except TimeoutError:
                raise _BadRequest(408, "request body timed out") from None
        try:
            split = urlsplit(target)
        except ValueError:
            raise _BadRequest(400, "malformed request target") from None
        query = parse_qs(split.query, keep_blank_values=True, max_num_fields=32)
        return Request(method, target, split.path or "/", query, headers, body, peer, version)

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
        self, writer: asyncio.StreamWriter, method: str, response: Response, keep_alive: bool
    ) -> None:
        try:
            reason = HTTPStatus(response.status).phrase
        except ValueError:
            reason = ""
        body = response.body
        head = [
            f"HTTP/1.1 {response.status} {reason}",
            f"Content-Type: {response.content_type}",
            f"Content-Length: {len(body) if isinstance(body, bytes) else sum(map(len, body))}",
            f"Connection: {'keep-alive' if keep_alive else 'close'}",
        ]
        head.extend(f"{k}: {v}" for k, v in response.headers.items())
        if self.response_headers is not None:
            head.extend(f"{k}: {v}" for k, v in self.response_headers().items())
        head_bytes = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
        if method == "HEAD":
            writer.write(head_bytes)
        elif isinstance(body, bytes):
            writer.write(head_bytes + body)
        else:
            writer.write(b"".join([head_bytes, *body]))
        await writer.drain()


def _wants_keep_alive(request: Request) -> bool:
    connection = request.headers.get("connection", "").lower()
    if request.version == "HTTP/1.0":
        return "keep-alive" in connection
    return "close" not in connection
