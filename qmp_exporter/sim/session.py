"""One client connection to a simulated monitor: greeting, negotiation, commands, events,
and the scripting hooks of :mod:`qmp_exporter.sim.hooks` in between.

Without a script a session is a plain asyncio protocol: every request is answered
synchronously from the VM (answers are cached bytes), so a large fleet costs little.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, cast

from qmp_exporter.sim.dialect import CommandFailed, encoded_greeting, error
from qmp_exporter.sim.vm import WRITE_COMMANDS, SimulatedVM

if TYPE_CHECKING:
    from qmp_exporter.sim.hooks import ConnectHook, Script
    from qmp_exporter.sim.server import SimulatedMonitorServer

log = logging.getLogger(__name__)

#: Bound on bytes of an unfinished command held per connection (QEMU's parser allows 64 MiB;
#: a simulator needs far less).
MAX_PENDING_INPUT = 1 << 20
#: The timestamp of a scripted event unless one is given: fixed, so a test can assert it.
SCRIPTED_EVENT_TIME = 1_700_000_000.5

_EMPTY_RETURN = b"{}"
_DECODER = json.JSONDecoder()
_INPUT_MEMBERS = frozenset({"execute", "exec-oob", "arguments", "id", "control"})
_NO_HOOK = object()


class Session(asyncio.Protocol):
    """One client session. The async methods (``send``, ``reply``, ``error``, ``event``)
    and ``close``/``abort`` are for scripted hooks."""

    __slots__ = (
        "_buffer",
        "_corked",
        "_end",
        "_eol",
        "_gone",
        "_queue",
        "_raw_partial",
        "_tasks",
        "_writable",
        "closed",
        "disconnected",
        "negotiated",
        "script",
        "server",
        "transport",
        "vm",
    )

    def __init__(self, server: SimulatedMonitorServer) -> None:
        self.server = server
        self.vm: SimulatedVM = server.vm
        self.script: Script | None = server.script
        self.transport: asyncio.Transport | None = None
        #: True once ``qmp_capabilities`` succeeded (from the start in the 2009 dialect).
        self.negotiated = self.vm.dialect == "2009"
        #: True once this side closed or the client left: nothing more is sent.
        self.closed = False
        #: True once the connection is gone (the client left or it was closed).
        self.disconnected = False
        self._buffer = ""
        self._eol = b"\r\n" if self.script is None else self.script.eol
        self._end = b"}" + self._eol
        #: Requests waiting for an in-order hook to finish; None when none runs.
        self._queue: deque[Any] | None = None
        self._raw_partial = b""
        self._tasks: set[asyncio.Task[None]] = set()
        self._writable: asyncio.Event | None = None
        self._gone: asyncio.Event | None = None
        #: Output held back while an ``on_connect`` hook starts (see ``_greet_then``).
        self._corked: bytearray | None = None

    # -- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # a stream transport: it writes
        script = self.script
        if script is None:
            self.transport.write(encoded_greeting(self.vm.dialect, self.vm.qemu_version))
            return
        if script.recording is not None:
            script.recording.sessions.append(self)
        if script.on_connect is None:
            self._greet(script)
        else:  # greeting and the hook's first output leave together, as one step
            self._run_in_order(self._greet_then(script, script.on_connect))

    def _greet(self, script: Script) -> None:
        greeting = script.greeting
        if isinstance(greeting, bytes):
            self._write(greeting)
        elif greeting is None and script.eol == b"\r\n":
            self._write(encoded_greeting(self.vm.dialect, self.vm.qemu_version))
        else:
            text = json.dumps(greeting) if greeting is not None else (
                encoded_greeting(self.vm.dialect, self.vm.qemu_version).decode().rstrip()
            )  # fmt: skip
            self._write(text.encode() + script.eol)

    def _write(self, data: bytes) -> None:
        if self._corked is not None:
            self._corked += data
        elif data and self.transport is not None and not self.closed:
            self.transport.write(data)

    async def _greet_then(self, script: Script, on_connect: ConnectHook) -> None:
        # Hold writes until the hook first waits, then send them with the greeting in one
        # write: a client reads them together, whatever the timing.
        self._corked = bytearray()
        asyncio.get_running_loop().call_soon(self._uncork)
        self._greet(script)
        await on_connect(self)

    def _uncork(self) -> None:
        corked, self._corked = self._corked, None
        if corked and self.transport is not None and not self.closed:
            self.transport.write(bytes(corked))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.disconnected = True
        if self._writable is not None:
            self._writable.set()
        if self._gone is not None:
            self._gone.set()
        script = self.script
        if script is not None and script.recording is not None and self._raw_partial:
            script.recording.received_raw.append(self._raw_partial)
            self._raw_partial = b""
        for task in list(self._tasks):
            task.cancel()
        self.server.client_gone(self)

    def pause_writing(self) -> None:
        if self._writable is None:
            self._writable = asyncio.Event()
        self._writable.clear()

    def resume_writing(self) -> None:
        if self._writable is not None:
            self._writable.set()

    def send_event(self, line: bytes) -> None:
        """Send an encoded event line from the VM (only once negotiated, as QEMU does:
        09-two-qmp-sockets.jsonl)."""
        if self.negotiated and self.transport is not None:
            self.transport.write(line)

    def data_received(self, data: bytes) -> None:
        script = self.script
        if script is not None and script.recording is not None:
            self._record_raw(script.recording.received_raw, data)
        text = self._buffer + data.decode("utf-8", "replace")
        self._buffer = ""
        position, length = 0, len(text)
        while True:
            while position < length and text[position] in " \t\r\n":
                position += 1
            if position >= length:
                return
            try:
                message, position = _DECODER.raw_decode(text, position)
            except json.JSONDecodeError as err:
                if err.pos >= len(text.rstrip()):  # incomplete: wait for the rest
                    rest = text[position:]
                    if len(rest) > MAX_PENDING_INPUT:
                        self._reply_error(None, "GenericError", "JSON parse error, too large")
                        return
                    self._buffer = rest
                    return
                self._reply_error(None, "GenericError", "JSON parse error, expecting value")
                newline = text.find("\n", err.pos)
                position = length if newline < 0 else newline + 1
                continue
            self._handle(message)

    # -- requests -------------------------------------------------------------------------

    def _handle(self, message: Any) -> None:
        if not isinstance(message, dict):
            self._reply_error(None, "GenericError", "QMP input must be a JSON object")
            return
        script = self.script
        if script is not None:
            if self._queue is not None:  # an in-order hook runs: this request waits
                self._queue.append(message)
                return
            if script.recording is not None:
                script.recording.received.append(message)
        for member in message:
            if member not in _INPUT_MEMBERS:
                self._reply_error(
                    None, "GenericError", f"QMP input member '{member}' is unexpected"
                )
                return
        command_id = message.get("id")
        command = message.get("execute", message.get("exec-oob"))
        if command is None:
            self._reply_error(command_id, "GenericError", "QMP input lacks member 'execute'")
            return
        if not isinstance(command, str):
            self._reply_error(
                command_id, "GenericError", "QMP input member 'execute' must be a string"
            )
            return
        arguments = message.get("arguments")
        if arguments is not None and not isinstance(arguments, dict):
            self._reply_error(
                command_id, "GenericError", "QMP input member 'arguments' must be an object"
            )
            return
        vm = self.vm
        vm.command_counts[command] = vm.command_counts.get(command, 0) + 1
        vm.command_log.append((command, arguments))
        observer = self.server.observer
        if observer is not None:
            observer(vm, command)
        if script is not None:
            hook = script.handlers.get(command, _NO_HOOK)
            if hook is not _NO_HOOK:
                self._run_hook(hook, message, command)
                return
        try:
            body = self._execute(vm, command, arguments)
        except CommandFailed as failure:
            self._reply(command_id, None, failure.error)
            return
        self._reply(command_id, body, None)

    def _execute(self, vm: SimulatedVM, command: str, arguments: dict[str, Any] | None) -> bytes:
        if command == "qmp_capabilities" and vm.dialect != "2009":
            if self.negotiated:
                raise CommandFailed(
                    "CommandNotFound",
                    "Capabilities negotiation is already complete, command ignored",
                )
            for key in arguments or ():
                if key != "enable":
                    raise CommandFailed("GenericError", f"Parameter '{key}' is unexpected")
            self.negotiated = True
            return _EMPTY_RETURN
        if not self.negotiated:
            raise CommandFailed(
                "CommandNotFound", "Expecting capabilities negotiation with 'qmp_capabilities'"
            )
        action = WRITE_COMMANDS.get(command)
        if action is not None and vm.has_command(command):
            for key in arguments or ():
                raise CommandFailed("GenericError", f"Parameter '{key}' is unexpected")
            action(vm)
            return _EMPTY_RETURN
        return vm.answer(command, arguments)

    def _reply(self, command_id: Any, body: bytes | None, failure: dict[str, Any] | None) -> None:
        if self.transport is None:
            return
        if failure is None:
            assert body is not None  # an answer without a failure always has a body
            if command_id is None:
                line = b'{"return": ' + body + self._end
            else:
                line = b'{"return": ' + body + b', "id": ' + json.dumps(command_id).encode()
                line += self._end
        else:
            reply: dict[str, Any] = {} if command_id is None else {"id": command_id}
            reply["error"] = failure
            line = json.dumps(reply).encode() + self._eol
        self.transport.write(line)

    def _reply_error(self, command_id: Any, error_class: str, desc: str) -> None:
        self._reply(command_id, None, error(error_class, desc))

    # -- scripted hooks -------------------------------------------------------------------

    def _record_raw(self, lines: list[bytes], data: bytes) -> None:
        pieces = (self._raw_partial + data).split(b"\n")
        self._raw_partial = pieces.pop()
        lines.extend(piece + b"\n" for piece in pieces)

    def _run_hook(self, hook: Any, request: dict[str, Any], command: str) -> None:
        if not callable(hook):
            self._reply(request.get("id"), json.dumps(hook).encode(), None)
            if command == "qmp_capabilities":
                self.negotiated = True
            return
        coroutine = self._after_hook(hook(self, request), command)
        if self.script is not None and self.script.concurrent:
            self._spawn(coroutine)
        else:
            self._run_in_order(coroutine)

    async def _after_hook(self, hook: Coroutine[Any, Any, None], command: str) -> None:
        await hook
        if command == "qmp_capabilities":
            self.negotiated = True

    def _run_in_order(self, coroutine: Coroutine[Any, Any, None]) -> None:
        """Run ``coroutine``, holding back later requests until it is done."""
        self._queue = deque()
        self._spawn(self._then_drain(coroutine))

    async def _then_drain(self, coroutine: Coroutine[Any, Any, None]) -> None:
        try:
            await coroutine
        finally:
            queued, self._queue = self._queue or deque(), None
        while queued:
            self._handle(queued.popleft())
            if self._queue is not None:  # another in-order hook began: it drains the rest
                self._queue.extend(queued)
                return

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(self._guarded(coroutine))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _guarded(coroutine: Coroutine[Any, Any, None]) -> None:
        try:
            await coroutine
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("a scripted hook failed")

    async def send_raw(self, data: bytes) -> None:
        """Send bytes as they are (partial lines, garbage, several lines); waits while the
        client does not read."""
        if self.closed or self.transport is None:
            return
        if self._corked is not None:  # the first output after the greeting: sent with it
            self._corked += data
            await asyncio.sleep(0)
            return
        self._write(data)
        writable = self._writable
        if writable is not None and not writable.is_set():
            await writable.wait()

    async def send(self, message: Any) -> None:
        """Send one JSON value as a line (with the script's line end)."""
        await self.send_raw(json.dumps(message).encode() + self._eol)

    async def reply(self, request: dict[str, Any], value: Any) -> None:
        """``{"return": value}``, with the request's ``id`` when it had one."""
        message: dict[str, Any] = {"return": value}
        if "id" in request:
            message["id"] = request["id"]
        await self.send(message)

    async def error(
        self, request: dict[str, Any] | None, error_class: str, desc: str, *, with_id: bool = True
    ) -> None:
        """``{"error": {"class", "desc"}}``, with the request's ``id`` unless ``with_id`` is
        False or there is no request (QEMU's answer to a line it could not parse)."""
        message: dict[str, Any] = {"error": error(error_class, desc)}
        if with_id and request is not None and "id" in request:
            message["id"] = request["id"]
        await self.send(message)

    async def event(
        self, name: str, data: dict[str, Any] | None = None, timestamp: float = SCRIPTED_EVENT_TIME
    ) -> None:
        """An event with QEMU's ``timestamp`` member, to this session only."""
        message: dict[str, Any] = {
            "event": name,
            "timestamp": {"seconds": int(timestamp), "microseconds": int(timestamp % 1 * 1e6)},
        }
        if data is not None:
            message["data"] = data
        await self.send(message)

    def close(self) -> None:
        """Close the connection once what was written is sent."""
        self._uncork()
        self.closed = True
        transport, self.transport = self.transport, None
        if transport is not None:
            transport.close()

    def abort(self) -> None:
        """Drop the connection at once (unsent data is lost)."""
        self.closed = True
        transport, self.transport = self.transport, None
        if transport is not None:
            transport.abort()

    async def wait_closed(self) -> None:
        """Return once the connection is gone (the client left or it was closed)."""
        if self.disconnected:
            return
        if self._gone is None:
            self._gone = asyncio.Event()
        await self._gone.wait()
