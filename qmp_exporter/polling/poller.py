"""One task per monitor: keep (or open per poll) a QMP session, poll it, count its events,
and publish an immutable :class:`~qmp_exporter.polling.state.VMState` after every poll."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from qmp_exporter.collectors import COLLECTORS, DEFAULT_COLLECTORS
from qmp_exporter.collectors.base import Collector
from qmp_exporter.config import EVENT_NAME, MonitorConfig
from qmp_exporter.polling.answers import (
    MalformedAnswerError,
    parse_identity,
    parse_status,
    parse_vnc,
)
from qmp_exporter.polling.answers import returned as _answer
from qmp_exporter.polling.state import Identity, VMState
from qmp_exporter.qmp import (
    CommandError,
    CommandTimeoutError,
    ConnectError,
    ConnectionClosedError,
    ConnectTimeoutError,
    Event,
    MonitorBusyError,
    ProtocolError,
    QMPClient,
    QMPError,
    connect,
)

log = logging.getLogger(__name__)

#: Values of the ``reason`` label of ``qmp_exporter_poll_errors_total``.
ERROR_REASONS = ("connect", "busy", "timeout", "protocol", "command")

#: Events whose counters exist at 0 from the first connection, so ``increase()`` sees the first.
PRECREATED_EVENTS = (
    "VNC_CONNECTED",
    "VNC_INITIALIZED",
    "VNC_DISCONNECTED",
    "SHUTDOWN",
    "RESET",
    "POWERDOWN",
    "STOP",
    "RESUME",
    "GUEST_PANICKED",
    "WATCHDOG",
    "BLOCK_IO_ERROR",
)
#: Events after which the VM's state is re-polled at once rather than at the next interval.
REPOLL_EVENTS = frozenset(
    {
        "VNC_CONNECTED",
        "VNC_DISCONNECTED",
        "STOP",
        "RESUME",
        "SHUTDOWN",
        "RESET",
        "SUSPEND",
        "WAKEUP",
        "GUEST_PANICKED",
        "WATCHDOG",
        "BLOCK_IO_ERROR",
        "MIGRATION",
    }
)
#: A monitor may invent event names; past this many distinct names per VM, the rest are
#: counted as ``OTHER`` so a lying monitor cannot grow the series without bound.
MAX_EVENT_NAMES = 128
#: Shortest spacing between event-triggered re-polls, in seconds.
REPOLL_MIN_SPACING = 0.05
#: First reconnect delay after a failure; doubles up to the poll interval.
BACKOFF_START = 0.5


@dataclass(frozen=True, slots=True)
class PollSettings:
    """How often and how patiently to poll."""

    interval: float = 15.0
    timeout: float = 5.0
    #: Spread first connects over this many seconds (0: all at once).
    start_spread: float = 1.0


def error_reason(error: BaseException) -> str:
    """The ``reason`` label for an error."""
    if isinstance(error, MonitorBusyError):
        return "busy"
    if isinstance(error, CommandTimeoutError | ConnectTimeoutError | TimeoutError):
        return "timeout"
    if isinstance(error, ConnectError | ConnectionClosedError):
        return "connect"
    if isinstance(error, CommandError):
        return "command"
    return "protocol"


def _resolve(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


class MonitorPoller:
    """Watches one monitor; its latest state is :attr:`state`, its counters alongside."""

    def __init__(
        self,
        monitor: MonitorConfig,
        settings: PollSettings,
        *,
        on_change: Callable[[MonitorPoller, bool], None] = lambda poller, stable: None,
        on_event: Callable[[MonitorConfig, Event], None] | None = None,
    ) -> None:
        self.monitor = monitor
        self.settings = settings
        self.state = VMState()
        #: Events received, by name (pre-created at 0 on the first connection).
        self.event_counts: dict[str, int] = {}
        #: Failed polls by reason (all reasons at 0 from the start).
        self.error_counts: dict[str, int] = dict.fromkeys(ERROR_REASONS, 0)
        #: QMP sessions opened.
        self.connections = 0
        #: Set when something other than the poll's timing changed outside a poll (a new
        #: connection); the next published poll then counts as a stable change.
        self._stable_dirty = False
        self._on_change = on_change
        self._on_event = on_event
        self._client: QMPClient | None = None
        self._identity: Identity | None = None
        self._collectors: list[Collector] = []
        #: Commands the collectors ask every poll, sent in the poll's one batch.
        self._prefetch: tuple[str, ...] = ()
        self._waiter: asyncio.Future[None] | None = None
        self._wake_requested = False
        self._task: asyncio.Task[None] | None = None
        self._failures = 0
        self._last_poll_started = 0.0

    @property
    def name(self) -> str:
        return self.monitor.name

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Start polling in the background."""
        self._task = asyncio.create_task(self._run(), name=f"poll {self.name}")

    async def stop(self) -> None:
        """Stop polling and close the connection."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._disconnect()

    # -- the loop --------------------------------------------------------------------------

    async def _run(self) -> None:
        settings = self.settings
        if settings.start_spread > 0:
            await asyncio.sleep(random.uniform(0, min(settings.start_spread, settings.interval)))
        # After the first poll, each VM keeps its own phase so polls spread over the interval.
        phase = random.uniform(0, settings.interval)
        next_poll = time.monotonic()
        first = True
        while True:
            await self.poll_once()
            now = time.monotonic()
            if first:
                next_poll = now + phase
                first = False
            else:
                next_poll += settings.interval
                if next_poll <= now:  # fell behind (a slow poll): skip, never burst
                    next_poll += ((now - next_poll) // settings.interval + 1) * settings.interval
            if self._failures:
                retry = min(BACKOFF_START * 2 ** (self._failures - 1), settings.interval)
                next_poll = min(next_poll, now + retry * random.uniform(0.8, 1.2))
            await self._sleep_until(next_poll)

    async def _sleep_until(self, deadline: float) -> None:
        """Sleep until ``deadline``, or until an event asks for a re-poll, or until a held
        connection drops (whichever is first)."""
        delay = deadline - time.monotonic()
        if delay > 0 and not self._wake_requested:
            loop = asyncio.get_running_loop()
            waiter = self._waiter = loop.create_future()
            timer = loop.call_later(delay, _resolve, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                self._waiter = None
        self._wake_requested = False
        spacing = self._last_poll_started + REPOLL_MIN_SPACING - time.monotonic()
        if spacing > 0:
            await asyncio.sleep(spacing)

    def _wake_now(self) -> None:
        """Ask for a poll at once (after an event, or when the held connection drops)."""
        self._wake_requested = True
        _resolve(self._waiter)

    async def poll_once(self) -> None:
        """Poll now (connecting first if needed) and publish the outcome; never raises
        for a QMP failure. The background loop calls it; so does ``/probe``."""
        started = time.monotonic()
        self._last_poll_started = started
        persistent = self.monitor.mode == "persistent"
        try:
            try:
                if self._client is None or self._client.closed:
                    if self._client is not None:
                        reason = self._client.close_reason
                        await self._disconnect()
                        if reason is not None and self.state.up:
                            raise reason
                    await self._connect()
                state = await self._query(self._client)  # type: ignore[arg-type]
            finally:
                if not persistent:
                    await self._disconnect()
        except (QMPError, OSError) as err:
            await self._disconnect()
            self.record_failure(err, time.monotonic() - started)
            return
        self._succeeded(state, time.monotonic() - started)

    async def _connect(self) -> None:
        on_event = self._event if self.monitor.mode == "persistent" else None
        client = await connect(
            self.monitor.address,
            timeout=self.settings.timeout,
            on_event=on_event,
            event_queue_size=1,
        )
        self._client = client
        if on_event is not None:
            client.add_close_callback(lambda reason: self._closed_by_peer(client))
        self.connections += 1
        self._stable_dirty = True
        self._identity = None
        if on_event is not None:  # events are only seen on a held connection
            for name in PRECREATED_EVENTS:
                self.event_counts.setdefault(name, 0)
        self._collectors = await self._make_collectors(client)

    async def _make_collectors(self, client: QMPClient) -> list[Collector]:
        names = self.monitor.collectors
        if names is None:
            names = DEFAULT_COLLECTORS
        if not names:
            self._prefetch = ()
            return []
        available: frozenset[str] | None = None
        try:
            answer = await client.execute("query-commands")
            available = frozenset(
                c["name"] for c in answer if isinstance(c, dict) and isinstance(c.get("name"), str)
            )
        except CommandError:
            available = None
        except TypeError as err:
            raise MalformedAnswerError(f"query-commands: {err}") from err
        collectors = []
        for name in names:
            cls = COLLECTORS.get(name)
            if cls is not None and cls.supported(available):
                collectors.append(cls(available))
        self._prefetch = tuple(dict.fromkeys(c for col in collectors for c in col.poll_commands))
        return collectors

    def _closed_by_peer(self, client: QMPClient) -> None:
        if client is self._client:  # not a close of our own
            self._wake_now()

    async def _disconnect(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    async def _query(self, client: QMPClient) -> VMState:
        if self._identity is None:
            self._identity = await self._query_identity(client)
        prefetch = self._prefetch
        answers = await client.execute_many(
            [("query-status", None), ("query-vnc", None), *((c, None) for c in prefetch)]
        )
        status, running = parse_status(_answer(answers[0]))
        vnc_answer = answers[1]
        if isinstance(vnc_answer, CommandError) and vnc_answer.error_class == "CommandNotFound":
            vnc = None  # QEMU built without VNC
        else:
            vnc = parse_vnc(_answer(vnc_answer))
        samples, results = await self._run_collectors(
            client, dict(zip(prefetch, answers[2:], strict=True))
        )
        now = time.time()
        return VMState(
            up=True,
            identity=self._identity,
            status=status,
            running=running,
            vnc=vnc,
            samples=samples,
            collector_results=results,
            last_success=now,
            last_poll=now,
        )

    async def _query_identity(self, client: QMPClient) -> Identity:
        answers = await client.execute_many(
            [("query-version", None), ("query-name", None), ("query-uuid", None)]
        )
        return parse_identity(*answers)

    async def _run_collectors(
        self, client: QMPClient, prefetched: dict[str, Any]
    ) -> tuple[tuple[Any, ...], tuple[tuple[str, bool], ...]]:
        if not self._collectors:
            return (), ()

        async def query(command: str, arguments: dict[str, Any] | None = None) -> Any:
            if arguments is None and command in prefetched:
                return _answer(prefetched[command])
            return await client.execute(command, arguments)

        samples: list[Any] = []
        results = []
        for collector in self._collectors:
            try:
                samples.extend(await collector.collect(query))
                ok = True
            except (ConnectionClosedError, CommandTimeoutError, ProtocolError):
                raise  # the connection itself is broken: the whole poll failed
            except (QMPError, ValueError, TypeError, KeyError, AttributeError) as err:
                log.debug("%s: collector %s failed: %s", self.name, collector.name, err)
                ok = False
            results.append((collector.name, ok))
        return tuple(samples), tuple(results)

    # -- outcomes --------------------------------------------------------------------------

    def _succeeded(self, state: VMState, duration: float) -> None:
        if not self.state.up and (self.state.last_poll or self._failures):
            log.info("%s: up (%s)", self.name, self.monitor.address)
        self._failures = 0
        stable = self._stable_dirty or not state.same_but_timing(self.state)
        self._stable_dirty = False
        self.state = dataclasses.replace(state, poll_duration=duration)
        self._changed(stable)

    def record_failure(self, error: BaseException, duration: float) -> None:
        """Count a failed poll, publish the VM as down, and log once per change."""
        reason = error_reason(error)
        self.error_counts[reason] += 1
        self._failures += 1
        previous = self.state
        message = str(error) or type(error).__name__
        if previous.up or previous.error_reason != reason or not previous.last_poll:
            log.warning("%s: down (%s): %s", self.name, reason, message)
        log.debug("%s: poll failed", self.name, exc_info=error)
        self.state = VMState(
            up=False,
            identity=previous.identity,
            error_reason=reason,
            error=message,
            last_success=previous.last_success,
            last_poll=time.time(),
            poll_duration=duration,
        )
        self._stable_dirty = False
        self._changed(True)

    def _changed(self, stable: bool) -> None:
        """Tell the listener; ``stable`` is False when only the poll's timing changed."""
        self._on_change(self, stable)

    def _event(self, event: Event) -> None:
        name = event.name
        counts = self.event_counts
        if name not in counts and (len(counts) >= MAX_EVENT_NAMES or not EVENT_NAME.match(name)):
            name = "OTHER"
        counts[name] = counts.get(name, 0) + 1
        self._changed(True)
        if self._on_event is not None:
            try:
                self._on_event(self.monitor, event)
            except Exception:
                log.exception("%s: event handler failed on %s", self.name, event.name)
        if event.name in REPOLL_EVENTS:
            self._wake_now()
