"""A scripted QMP monitor on a unix socket, for what a real QEMU cannot show: the 2009 and
2010 dialects, garbage, over-long lines, silence, a close in the middle of a response,
errors without ``id``, delayed and reordered answers.

It behaves like QEMU by default (one client served at a time, capabilities negotiation,
CRLF line ends, ``CommandNotFound`` for unknown commands, two ``id``-less errors for a
malformed line) and lets a test replace any part::

    async def stop(session, request):          # an event before the reply, like QEMU
        await session.event("STOP")
        await session.reply(request, {})

    async with ScriptedMonitor(path, dialect="2010", handlers={"stop": stop}) as monitor:
        client = await connect(monitor.address)
        ...
        assert monitor.commands() == ["qmp_capabilities", "stop"]

``handlers`` maps a command name to either a plain value (sent as ``{"return": value}``) or
an ``async def handler(session, request)`` that answers through the :class:`Session`
(``reply``, ``error``, ``event``, ``send``, ``send_raw``, ``close``, ``abort``), or stays
silent. ``greeting`` replaces the dialect's greeting: a dict, raw bytes (garbage), or
:data:`NO_GREETING`. ``on_connect(session)`` runs after the greeting.

Everything received is recorded (``monitor.received``: decoded requests in order;
``monitor.received_raw``: raw lines), also for refused/unknown commands, so a test can
prove what a client did or did not send.

For code that runs outside the test's event loop (an exporter in a thread or a subprocess),
:meth:`ScriptedMonitor.in_thread` serves from a background thread::

    with ScriptedMonitor(path, dialect="modern").in_thread() as monitor:
        ...
        monitor.call(monitor.broadcast_event("RESET", {"guest": False}))
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import os
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Any

DIALECTS = ("2009", "2010", "modern")

GREETINGS: dict[str, dict[str, Any]] = {
    # QEMU 0.12 (Dec 2009): no version, no negotiation.
    "2009": {"QMP": {"capabilities": []}},
    # QEMU 0.13 (2010): negotiation, version as a string.
    "2010": {"QMP": {"version": {"qemu": "0.13.0", "package": ""}, "capabilities": []}},
    # QEMU 0.14 .. 10.x: structured version, oob offered.
    "modern": {
        "QMP": {
            "version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "scripted"},
            "capabilities": ["oob"],
        }
    },
}

#: Pass as ``greeting`` for a monitor that accepts connections and never greets.
NO_GREETING = b""

Handler = Callable[["Session", dict[str, Any]], Awaitable[None]]


def default_version(dialect: str) -> dict[str, Any]:
    """``query-version`` as each dialect answers it."""
    if dialect == "modern":
        return {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "scripted"}
    return {"qemu": "0.12.50" if dialect == "2009" else "0.13.0", "package": ""}


def default_status(dialect: str, running: bool = True) -> dict[str, Any]:
    """``query-status`` as each dialect answers it (``status`` only in the modern one)."""
    answer: dict[str, Any] = {"running": running, "singlestep": False}
    if dialect == "modern":
        answer["status"] = "running" if running else "paused"
    return answer


class Session:
    """One client connection to the scripted monitor."""

    def __init__(
        self, monitor: ScriptedMonitor, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.monitor = monitor
        self.reader = reader
        self.writer = writer
        #: True once ``qmp_capabilities`` succeeded (always True in the 2009 dialect).
        self.negotiated = monitor.dialect == "2009"
        self.closed = False

    async def send(self, message: dict[str, Any]) -> None:
        """Send one JSON object as a line (with the monitor's line end)."""
        await self.send_raw(json.dumps(message).encode() + self.monitor.eol)

    async def send_raw(self, data: bytes) -> None:
        """Send bytes as they are (partial lines, garbage, several lines)."""
        if self.closed:
            return
        self.writer.write(data)
        with contextlib.suppress(ConnectionError):
            await self.writer.drain()

    async def reply(self, request: dict[str, Any], value: Any) -> None:
        """``{"return": value}``, with the request's ``id`` when it had one."""
        message: dict[str, Any] = {"return": value}
        if "id" in request:
            message["id"] = request["id"]
        await self.send(message)

    async def error(
        self,
        request: dict[str, Any] | None,
        error_class: str,
        desc: str,
        *,
        with_id: bool = True,
    ) -> None:
        """``{"error": {"class", "desc"}}``, with the request's ``id`` unless ``with_id`` is
        False or there is no request (QEMU's answer to a line it could not parse)."""
        message: dict[str, Any] = {"error": {"class": error_class, "desc": desc}}
        if with_id and request is not None and "id" in request:
            message["id"] = request["id"]
        await self.send(message)

    async def event(
        self, name: str, data: dict[str, Any] | None = None, timestamp: float = 1_700_000_000.5
    ) -> None:
        """An event with QEMU's ``timestamp`` member."""
        message: dict[str, Any] = {
            "event": name,
            "timestamp": {"seconds": int(timestamp), "microseconds": int(timestamp % 1 * 1e6)},
        }
        if data is not None:
            message["data"] = data
        await self.send(message)

    def close(self) -> None:
        """Close the connection (after what was written is flushed)."""
        self.closed = True
        self.writer.close()

    def abort(self) -> None:
        """Drop the connection at once (unsent data is lost)."""
        self.closed = True
        self.writer.transport.abort()


class ScriptedMonitor:
    """A QMP server on ``path`` whose behaviour is scripted; see the module docstring."""

    def __init__(
        self,
        path: str,
        *,
        dialect: str = "modern",
        greeting: dict[str, Any] | bytes | None = None,
        handlers: dict[str, Any] | None = None,
        on_connect: Callable[[Session], Awaitable[None]] | None = None,
        eol: bytes = b"\r\n",
        single_client: bool = True,
        concurrent: bool = False,
        name: str | None = "scripted",
        errors_per_bad_line: int = 2,
    ) -> None:
        if dialect not in DIALECTS:
            raise ValueError(f"dialect must be one of {DIALECTS}")
        self.path = path
        self.dialect = dialect
        self.greeting = GREETINGS[dialect] if greeting is None else greeting
        self.handlers = dict(handlers or {})
        self.on_connect = on_connect
        self.eol = eol
        #: Serve one client at a time like QEMU: later clients wait, without a greeting.
        self.single_client = single_client
        #: Run each request's handler in its own task, so a slow answer does not hold
        #: back the next (answers then come out of order).
        self.concurrent = concurrent
        self.name = name
        self.errors_per_bad_line = errors_per_bad_line
        self.running = True
        self.received: list[dict[str, Any]] = []
        self.received_raw: list[bytes] = []
        self.connections = 0
        self.sessions: list[Session] = []
        self._server: asyncio.Server | None = None
        self._slot = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def address(self) -> str:
        return f"unix:{self.path}"

    def commands(self) -> list[str]:
        """The ``execute`` names received so far, in order."""
        return [str(r.get("execute")) for r in self.received if isinstance(r, dict)]

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> ScriptedMonitor:
        self._loop = asyncio.get_running_loop()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        self._server = await asyncio.start_unix_server(self._serve, self.path, limit=1 << 24)
        return self

    async def stop(self) -> None:
        """Stop listening, close every connection and remove the socket file."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for session in self.sessions:
            if not session.closed:
                session.abort()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    async def __aenter__(self) -> ScriptedMonitor:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def broadcast_event(self, name: str, data: dict[str, Any] | None = None) -> None:
        """Send an event to every open session that may receive events (negotiated)."""
        for session in self.sessions:
            if not session.closed and session.negotiated:
                await session.event(name, data)

    @contextlib.contextmanager
    def in_thread(self) -> Iterator[ScriptedMonitor]:
        """Serve from a background thread with its own event loop (for blocking tests)."""
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="scripted-monitor", daemon=True)
        thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self.start(), loop).result(10)
            yield self
        finally:
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self.stop(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            loop.close()

    def call(self, coroutine: Coroutine[Any, Any, Any], timeout: float = 10) -> Any:
        """Run a coroutine in the monitor's loop (from another thread) and return its result."""
        if self._loop is None:
            raise RuntimeError("the monitor is not started")
        future: concurrent.futures.Future[Any] = asyncio.run_coroutine_threadsafe(
            coroutine, self._loop
        )
        return future.result(timeout)

    # -- serving --------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        try:
            if self.single_client:
                async with self._slot:
                    await self._session(reader, writer)
            else:
                await self._session(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # stop() cancels: end quietly (asyncio logs a cancelled client task)
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = Session(self, reader, writer)
        self.sessions.append(session)
        if isinstance(self.greeting, bytes):
            if self.greeting:
                await session.send_raw(self.greeting)
        else:
            await session.send(self.greeting)
        if self.on_connect is not None:
            await self.on_connect(session)
        while not session.closed:
            line = await reader.readline()
            if not line:
                break
            self.received_raw.append(line)
            if not line.strip():
                continue
            if self.concurrent:
                child = asyncio.create_task(self._handle_line(session, line))
                self._tasks.add(child)
                child.add_done_callback(self._tasks.discard)
            else:
                await self._handle_line(session, line)

    async def _handle_line(self, session: Session, line: bytes) -> None:
        try:
            request = json.loads(line)
        except ValueError:
            for _ in range(self.errors_per_bad_line):
                await session.error(None, "GenericError", "JSON parse error, stray input")
            return
        if not isinstance(request, dict):
            await session.error(None, "GenericError", "QMP input must be a JSON object")
            return
        self.received.append(request)
        command = request.get("execute")
        if not isinstance(command, str):
            await session.error(request, "GenericError", "QMP input lacks member 'execute'")
            return
        if command in self.handlers:
            handler = self.handlers[command]
            if callable(handler):
                await handler(session, request)
            else:
                await session.reply(request, handler)
            if command == "qmp_capabilities":
                session.negotiated = True
            return
        await self._default(session, request, command)

    async def _default(self, session: Session, request: dict[str, Any], command: str) -> None:
        dialect = self.dialect
        if command == "qmp_capabilities":
            if dialect == "2009":
                await session.error(
                    request, "CommandNotFound", "The command qmp_capabilities has not been found"
                )
            elif session.negotiated:
                await session.error(
                    request,
                    "CommandNotFound",
                    "Capabilities negotiation is already complete, command ignored",
                )
            else:
                session.negotiated = True
                await session.reply(request, {})
            return
        if not session.negotiated:
            await session.error(
                request,
                "CommandNotFound",
                "Expecting capabilities negotiation with 'qmp_capabilities'",
            )
            return
        defaults: dict[str, Any] = {
            "query-version": default_version(dialect),
            "query-status": default_status(dialect),
            "query-name": {"name": self.name} if self.name is not None else {},
            "query-commands": [
                {"name": c}
                for c in sorted({"query-version", "query-status", "query-name", *self.handlers})
            ],
        }
        if command in defaults:
            await session.reply(request, defaults[command])
        else:
            await session.error(
                request, "CommandNotFound", f"The command {command} has not been found"
            )


def long_line(size: int) -> bytes:
    """A valid QMP response line of at least ``size`` bytes (for line-limit tests)."""
    return b'{"return": "' + b"x" * size + b'"}\r\n'
