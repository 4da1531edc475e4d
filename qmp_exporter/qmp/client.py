"""The QMP client: connect, greet, negotiate, run commands matched by ``id``, receive events."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

from qmp_exporter.qmp.address import Address, parse_address
from qmp_exporter.qmp.errors import (
    CommandError,
    CommandRefusedError,
    CommandTimeoutError,
    ConnectionClosedError,
    GreetingIncompleteError,
    GreetingTimeoutError,
    LineTooLongError,
    NotQMPError,
    ProtocolError,
    QMPError,
)
from qmp_exporter.qmp.events import DEFAULT_EVENT_QUEUE_SIZE, Event, EventQueue
from qmp_exporter.qmp.framing import DEFAULT_MAX_LINE_BYTES, LineDecoder, encode_command
from qmp_exporter.qmp.greeting import Greeting
from qmp_exporter.qmp.transport import open_transport

log = logging.getLogger(__name__)

#: Default bound, in seconds, on connect + greeting and on each command.
DEFAULT_TIMEOUT = 5.0

EventCallback = Callable[[Event], None]


def is_read_only(command: str) -> bool:
    """True for the commands that cannot change a VM: ``qmp_capabilities`` and ``query-*``."""
    return command == "qmp_capabilities" or command.startswith("query-")


class QMPClient:
    """One QMP connection. Create it with :func:`connect`."""

    def __init__(
        self,
        address: Address,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        allow_write: bool = False,
        max_line: int = DEFAULT_MAX_LINE_BYTES,
        on_event: EventCallback | None = None,
        event_queue_size: int = DEFAULT_EVENT_QUEUE_SIZE,
    ) -> None:
        self.address = address
        self.timeout = timeout
        self.allow_write = allow_write
        self.greeting: Greeting | None = None
        #: Events not taken by ``on_event``; ``None`` when a callback receives them instead.
        self.events: EventQueue | None = None if on_event else EventQueue(event_queue_size)
        #: Responses that matched no waiting command (errors without ``id``, late answers).
        self.unmatched_responses = 0
        self._on_event = on_event
        self._decoder = LineDecoder(max_line)
        self._transport: asyncio.Transport | None = None
        #: id -> (command, future, deadline on the loop's clock, timeout)
        self._pending: dict[int, tuple[str, asyncio.Future[Any], float, float]] = {}
        # Ids of commands given up (timeout, cancellation) whose answer has not come yet:
        # not reused until it comes, so a late answer never reaches a newer command.
        self._retired: set[int] = set()
        self._loop = asyncio.get_running_loop()
        # One timer for all pending commands, armed at the earliest deadline, instead of a
        # timer per command (that was a third of the client's per-command cost).
        self._watchdog: asyncio.TimerHandle | None = None
        self._watchdog_at = math.inf
        self._greeted: asyncio.Future[Greeting] = self._loop.create_future()
        self._closed: asyncio.Future[QMPError] = self._loop.create_future()

    # -- public API ---------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True once the connection has ended, for whatever reason."""
        return self._closed.done()

    @property
    def close_reason(self) -> QMPError | None:
        """Why the connection ended (``None`` while open)."""
        return self._closed.result() if self._closed.done() else None

    @property
    def socket(self) -> Any:
        """The connected socket (asyncio's ``TransportSocket``), for a caller that asks the OS
        who is at the other end; ``None`` once closed. After the greeting the server has
        accepted the connection, so a TCP connection's server side belongs to its process."""
        if self._transport is None or self._transport.is_closing():
            return None
        return self._transport.get_extra_info("socket")

    async def wait_closed(self) -> QMPError:
        """Wait until the connection ends; return why."""
        return await asyncio.shield(self._closed)

    async def execute(
        self,
        command: str,
        arguments: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Run one command and return its ``return`` value.

        Raises :class:`CommandRefusedError` (nothing sent) for a command that may change
        the VM unless the client allows writes, :class:`CommandError` for QEMU's error
        answer, :class:`CommandTimeoutError` and :class:`ConnectionClosedError`.
        """
        command_id, future, line = self._submit(command, arguments, timeout)
        assert self._transport is not None
        self._transport.write(line)
        try:
            return await future
        finally:
            self._settle(command_id)

    async def execute_many(
        self,
        commands: Sequence[tuple[str, dict[str, Any] | None]],
        timeout: float | None = None,
    ) -> list[Any]:
        """Send several commands in one write and wait for all their answers.

        Returns one entry per command, in order: its ``return`` value, or the
        :class:`CommandError` QEMU answered it with. Any other failure (timeout, closed
        connection, refused command) raises, as :meth:`execute` does.
        """
        for command, _ in commands:  # refuse before registering anything
            self._check_allowed(command)
        submitted = []
        try:
            for command, arguments in commands:
                submitted.append(self._submit(command, arguments, timeout))
            assert self._transport is not None
            self._transport.write(b"".join(line for _, _, line in submitted))
            results: list[Any] = []
            for _, future, _ in submitted:
                try:
                    results.append(await future)
                except CommandError as err:
                    results.append(err)
            return results
        finally:
            for command_id, future, _ in submitted:
                self._settle(command_id)
                if not future.done():
                    future.cancel()
                elif not future.cancelled():
                    future.exception()  # retrieved: one failure is raised for them all

    def _submit(
        self, command: str, arguments: dict[str, Any] | None, timeout: float | None
    ) -> tuple[int, asyncio.Future[Any], bytes]:
        """Register a command (checked, with an id, a future and a deadline); return the
        line to send."""
        self._check_allowed(command)
        if self._closed.done():
            raise ConnectionClosedError(f"{self.address}: {self._closed.result()}")
        # The smallest free id, not a counter: QEMU reads its monitor one byte per main
        # loop iteration, so every byte of a request costs a few microseconds there.
        command_id = 1
        while command_id in self._pending or command_id in self._retired:
            command_id += 1
        loop = self._loop
        future: asyncio.Future[Any] = loop.create_future()
        limit = self.timeout if timeout is None else timeout
        deadline = loop.time() + limit
        self._pending[command_id] = (command, future, deadline, limit)
        if deadline < self._watchdog_at:
            self._arm_watchdog(deadline)
        return command_id, future, encode_command(command, arguments, command_id)

    def _check_allowed(self, command: str) -> None:
        if not (self.allow_write or is_read_only(command)):
            raise CommandRefusedError(
                f"{command!r} may change the VM; this client is read-only "
                "(only qmp_capabilities and query-* commands are sent)"
            )

    def _settle(self, command_id: int) -> None:
        """Forget a command; an id still awaited (cancelled) is kept from reuse."""
        if self._pending.pop(command_id, None) is not None:
            self._retired.add(command_id)  # cancelled before its answer came

    def add_close_callback(self, callback: Callable[[QMPError], None]) -> None:
        """Call ``callback(reason)`` once the connection ends (soon, if it has already)."""
        self._closed.add_done_callback(lambda future: callback(future.result()))

    async def close(self) -> None:
        """Close the connection; pending commands fail with :class:`ConnectionClosedError`."""
        if self._transport is not None and not self._closed.done():
            self._transport.close()
        self._finish(ConnectionClosedError("closed by the client"))

    async def __aenter__(self) -> QMPClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- setting up -----------------------------------------------------------------------

    async def _open(self) -> None:
        deadline = time.monotonic() + self.timeout
        try:
            await self._connect_transport()
        except BaseException:
            self._finish(ConnectionClosedError("connect failed"))
            raise
        try:
            await self._greet_and_negotiate(deadline)
        except BaseException:
            # Also on cancellation: never leave a half-open session holding the socket.
            if self._transport is not None:
                self._transport.abort()
            self._finish(ConnectionClosedError("closed by the client while connecting"))
            raise

    async def _greet_and_negotiate(self, deadline: float) -> None:
        remaining = max(deadline - time.monotonic(), 0.001)
        try:
            # Not wait_for, which on 3.11 swallows a cancel that meets the greeting.
            async with asyncio.timeout(remaining):
                await asyncio.shield(self._greeted)
        except TimeoutError:
            if self._decoder.pending:
                raise GreetingIncompleteError(
                    f"{self.address}: a QMP greeting began ({self._decoder.pending} bytes) "
                    f"but did not finish within {self.timeout:g}s: the monitor is slow"
                ) from None
            raise GreetingTimeoutError(
                f"{self.address}: connected, but no QMP greeting within {self.timeout:g}s: "
                "QEMU serves one client per monitor socket, so another client is probably "
                "holding it (give the exporter a -qmp socket of its own, or use mode: poll)"
            ) from None
        if self._closed.done():
            # The greeting and what ended the session (garbage, an over-long line, EOF) came
            # in one read: that, not the closed session, is the reason, however it was read.
            raise self._closed.result()
        try:
            await self.execute("qmp_capabilities")
        except CommandError as err:
            # The 2009 dialect has no negotiation: commands work at once.
            if err.error_class != "CommandNotFound":
                raise

    async def _connect_transport(self) -> None:
        self._transport = await open_transport(
            self.address, self.timeout, self._receive, self._lost
        )

    # -- receiving ------------------------------------------------------------------------

    def _receive(self, data: bytes) -> None:
        """Decode the bytes read and dispatch each whole message."""
        try:
            messages = self._decoder.feed(data)
        except QMPError as err:
            if type(err) is ProtocolError and not self._greeted.done():
                err = NotQMPError(f"{self.address}: not a QMP greeting: {err}")
            elif isinstance(err, LineTooLongError) and self._pending:
                # QMP answers in order: the line is the answer to the oldest command.
                command = next(iter(self._pending.values()))[0]
                err = LineTooLongError(
                    f"{self.address}: the answer to {command} is longer than the "
                    f"{err.limit}-byte line limit ({err})",
                    err.limit,
                    command,
                )
            self._abort(err)
            return
        for message in messages:
            self._dispatch(message)

    def _dispatch(self, message: dict[str, Any]) -> None:
        if not self._greeted.done():
            self._receive_greeting(message)
        elif "return" in message or "error" in message:
            self._deliver_response(message)
        elif "event" in message:
            self._deliver_event(message)
        # Anything else (a second greeting, kinds not known yet) is ignored, as the
        # specification asks.

    def _receive_greeting(self, message: dict[str, Any]) -> None:
        if "QMP" not in message:
            self._abort(NotQMPError(f"{self.address}: first message is not a QMP greeting"))
            return
        try:
            greeting = Greeting.from_message(message)
        except NotQMPError as err:
            self._abort(err)
            return
        self.greeting = greeting
        self._greeted.set_result(greeting)

    def _deliver_event(self, message: dict[str, Any]) -> None:
        if not isinstance(message.get("event"), str):
            return
        event = Event.from_message(message)
        if self._on_event is not None:
            try:
                self._on_event(event)
            except Exception:
                log.exception("%s: event callback failed on %s", self.address, event.name)
        elif self.events is not None:
            self.events.put(event)

    def _deliver_response(self, message: dict[str, Any]) -> None:
        command_id = message.get("id")
        # Our ids are ints; true, 1.0 or "1" would compare or hash equal to some, yet
        # answer nothing we sent.
        entry = self._pending.pop(command_id, None) if type(command_id) is int else None
        if entry is None:
            if type(command_id) is int:
                self._retired.discard(command_id)  # the late answer: the id is free again
            self.unmatched_responses += 1
            log.debug("%s: response matches no pending command: %.200r", self.address, message)
            return
        command, future = entry[0], entry[1]
        if future.done():
            return
        if "error" in message:
            error = message["error"]
            if not isinstance(error, dict):
                error = {}
            future.set_exception(
                CommandError(
                    command,
                    str(error.get("class", "GenericError")),
                    str(error.get("desc", "")),
                    error.get("data"),
                )
            )
        else:
            future.set_result(message["return"])

    def _arm_watchdog(self, when: float) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        self._watchdog = self._loop.call_at(when, self._expire_overdue)
        self._watchdog_at = when

    def _expire_overdue(self) -> None:
        """Fail the commands past their deadline; re-arm for the earliest one left."""
        self._watchdog, self._watchdog_at = None, math.inf
        now = self._loop.time() + 0.001  # the loop may run a timer a hair early
        earliest = math.inf
        for command_id, (command, future, deadline, limit) in list(self._pending.items()):
            if deadline <= now:
                del self._pending[command_id]
                self._retired.add(command_id)
                if not future.done():
                    future.set_exception(
                        CommandTimeoutError(
                            f"{self.address}: {command}: no answer within {limit:g}s"
                        )
                    )
            elif deadline < earliest:
                earliest = deadline
        if earliest < math.inf:
            self._arm_watchdog(earliest)

    # -- ending ---------------------------------------------------------------------------

    def _abort(self, error: QMPError) -> None:
        """The peer broke the protocol: drop the connection, failing everything with ``error``."""
        log.debug("%s: aborting: %s", self.address, error)
        if self._transport is not None:
            self._transport.abort()
        self._finish(error)

    def _lost(self, exc: Exception | None) -> None:
        detail = f": {exc}" if exc else ""
        self._finish(ConnectionClosedError(f"{self.address}: connection closed by peer{detail}"))

    def _finish(self, error: QMPError) -> None:
        if self._closed.done():
            return
        self._closed.set_result(error)
        if not self._greeted.done():
            self._greeted.set_exception(error)
            self._greeted.exception()  # mark retrieved
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog, self._watchdog_at = None, math.inf
        pending, self._pending = self._pending, {}
        for command, future, _deadline, _limit in pending.values():
            if not future.done():
                if isinstance(error, ConnectionClosedError):
                    future.set_exception(
                        ConnectionClosedError(f"{error} (while waiting for {command})")
                    )
                else:
                    future.set_exception(error)
        if self.events is not None:
            self.events.close()


async def connect(
    address: str | Address,
    timeout: float = DEFAULT_TIMEOUT,
    *,
    allow_write: bool = False,
    max_line: int = DEFAULT_MAX_LINE_BYTES,
    on_event: EventCallback | None = None,
    event_queue_size: int = DEFAULT_EVENT_QUEUE_SIZE,
) -> QMPClient:
    """Open a QMP session: connect, read the greeting, negotiate capabilities.

    ``timeout`` bounds connect + greeting, then each command unless ``execute`` says
    otherwise. Events go to ``on_event`` when given, else to the bounded ``client.events``.
    """
    if isinstance(address, str):
        address = parse_address(address)
    client = QMPClient(
        address,
        timeout=timeout,
        allow_write=allow_write,
        max_line=max_line,
        on_event=on_event,
        event_queue_size=event_queue_size,
    )
    await client._open()
    return client
