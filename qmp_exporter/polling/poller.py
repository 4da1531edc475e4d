"""One task per monitor: keep (or open per poll) a QMP session, poll it, count its events,
and publish an immutable :class:`~qmp_exporter.fleet.state.VMState` (poll and counters)
after every poll and every event."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from qmp_exporter.collectors.base import Collector
from qmp_exporter.config import EVENT_NAME, Config, MonitorConfig
from qmp_exporter.fleet.state import Counters, Identity, VMState
from qmp_exporter.host import Host
from qmp_exporter.host.peer import Peer
from qmp_exporter.polling import stopping
from qmp_exporter.polling.answers import (
    parse_identity,
    parse_status,
    parse_vnc,
    spice_enabled,
)
from qmp_exporter.polling.answers import returned as _answer
from qmp_exporter.polling.collect import choose_collectors, poll_commands, run_collectors
from qmp_exporter.polling.consoles import VncHandshakes
from qmp_exporter.polling.failures import (
    ERROR_REASONS,
    backoff_delay,
    describe_failure,
    error_reason,
)
from qmp_exporter.qmp import CommandError, ConnectError, Event, QMPClient, QMPError, connect

log = logging.getLogger(__name__)

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
#: Pre-created at 0 too, on a held connection where ``query-spice`` says SPICE is on.
SPICE_EVENTS = ("SPICE_CONNECTED", "SPICE_INITIALIZED", "SPICE_DISCONNECTED")
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


#: The configuration's defaults (``poll_interval``, ``timeout``), written once in config.
_CONFIG_DEFAULTS = Config()

#: Receives each published state, and whether only the poll's timing changed.
OnState = Callable[[VMState, bool], None]


@dataclass(frozen=True, slots=True)
class PollSettings:
    """How often and how patiently to poll."""

    interval: float = _CONFIG_DEFAULTS.poll_interval
    timeout: float = _CONFIG_DEFAULTS.timeout
    #: Spread first connects over this many seconds (0: all at once).
    start_spread: float = 1.0
    #: Longest line (one answer or event) taken from a monitor, in bytes.
    max_line: int = _CONFIG_DEFAULTS.qmp_max_line_bytes

    @classmethod
    def from_config(cls, config: Config) -> PollSettings:
        """The settings ``config`` asks for."""
        return cls(
            interval=config.poll_interval,
            timeout=config.timeout,
            max_line=config.qmp_max_line_bytes,
        )


def _resolve(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


class MonitorPoller:
    """Watches one monitor and publishes its :attr:`state` to ``on_state`` after every poll
    and every event (with ``timing_only`` True when only the poll's time and duration
    changed); its counters are its own and go out only inside the published state.
    ``on_event`` gets every QMP event, then each synthetic ``VNC_HANDSHAKE_FAILED`` it
    concluded (see :mod:`qmp_exporter.polling.consoles`)."""

    def __init__(
        self,
        monitor: MonitorConfig,
        settings: PollSettings,
        *,
        on_state: OnState = lambda state, timing_only: None,
        on_event: Callable[[MonitorConfig, Event], None] | None = None,
        host: Host | None = None,
        logger: logging.Logger | logging.LoggerAdapter[logging.Logger] = log,
    ) -> None:
        """``host`` reads the host's side of the VM (the ``host`` collector; ``None``: not
        read); ``logger`` takes the poller's records (``/probe`` demotes them)."""
        self.monitor = monitor
        self.settings = settings
        self._host = host
        self._log = logger
        self._events: dict[str, int] = {}
        self._errors: dict[str, int] = dict.fromkeys(ERROR_REASONS, 0)
        self._connections = 0
        self._handshakes = VncHandshakes()
        self._vnc_failures: int | None = None
        self._counters = self._count()
        self._state = VMState(monitor, counters=self._counters)
        self._on_state = on_state
        self._on_event = on_event
        self._client: QMPClient | None = None
        self._identity: Identity | None = None
        self._collectors: tuple[Collector, ...] = ()
        #: Commands the collectors ask every poll, sent in the poll's one batch.
        self._prefetch: tuple[str, ...] = ()
        self._waiter: asyncio.Future[None] | None = None
        self._wake_requested = False
        self._task: asyncio.Task[None] | None = None
        #: True once a task outlived its stop deadline: nothing it does is told any more.
        self._detached = False
        self._failures = 0
        self._last_poll_started = 0.0

    @property
    def name(self) -> str:
        return self.monitor.name

    @property
    def state(self) -> VMState:
        """The state published last."""
        return self._state

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Start polling in the background."""
        self._task = asyncio.create_task(self._run(), name=f"poll {self.name}")

    async def stop(self, deadline: float | None = None) -> asyncio.Task[None] | None:
        """Stop polling, close the connection and what the collectors hold, waiting at most
        ``deadline`` seconds (default :data:`~qmp_exporter.polling.stopping.STOP_DEADLINE`)
        for the task to end. A task that outlives it is detached and returned, still
        running: silenced (its later states and events go nowhere), and this poller is
        never started again (see :meth:`successor`). ``None`` when the task ended."""
        task = self._task
        if task is not None:
            limit = stopping.STOP_DEADLINE if deadline is None else deadline
            task = await stopping.stop_within(task, limit, self._log, self.name)
            self._task = None
            self._detached = task is not None
        await self._disconnect()
        collectors, self._collectors = self._collectors, ()
        for collector in collectors:
            collector.close()
        return task

    @property
    def detached(self) -> bool:
        """Whether a task of this poller outlived its stop deadline (see :meth:`stop`)."""
        return self._detached

    def successor(self, monitor: MonitorConfig, settings: PollSettings) -> MonitorPoller:
        """A new (unstarted) poller of ``monitor`` with this one's callbacks, counters and
        last state: what replaces a detached poller."""
        new = MonitorPoller(
            monitor,
            settings,
            on_state=self._on_state,
            on_event=self._on_event,
            host=self._host,
            logger=self._log,
        )
        new._events = dict(self._events)
        new._errors = dict(self._errors)
        new._connections = self._connections
        new._vnc_failures = self._vnc_failures
        new._counters = self._counters
        new._state = dataclasses.replace(self._state, monitor=monitor)
        return new

    def reconfigure(self, monitor: MonitorConfig, settings: PollSettings) -> None:
        """Watch ``monitor`` with ``settings`` from the next :meth:`start` (call while
        stopped), keeping the counters; a changed monitor is published at once."""
        self.monitor = monitor
        self.settings = settings
        if monitor != self._state.monitor:
            self._publish(dataclasses.replace(self._state, monitor=monitor))

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
                # After any failure (a refused connect, a garbled line, a close right after
                # the greeting...) the next try waits out its backoff, whatever wakes us.
                next_poll = now + backoff_delay(self._failures, settings.interval)
                await self._sleep_until(next_poll, wakeable=False)
            else:
                await self._sleep_until(next_poll)

    async def _sleep_until(self, deadline: float, *, wakeable: bool = True) -> None:
        """Sleep until ``deadline``, or (when ``wakeable``) until an event asks for a
        re-poll or a held connection drops, whichever is first."""
        if not wakeable:
            self._wake_requested = False  # a wake asked for during the failed poll is moot
        delay = deadline - time.monotonic()
        if delay > 0 and not self._wake_requested:
            loop = asyncio.get_running_loop()
            waiter = loop.create_future()
            if wakeable:
                self._waiter = waiter
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

    async def poll_once(self, within: float | None = None) -> None:
        """Poll now (connecting first if needed), within ``within`` seconds in all when
        given, and publish the outcome; never raises but a cancellation. The background
        loop calls it; so does ``/probe``."""
        started = time.monotonic()
        self._last_poll_started = started
        try:
            if within is None:  # the background loop: each step has its own bound
                await self._poll(started)
            else:
                await self._poll_within(started, within)
        except (QMPError, OSError) as err:
            await self._disconnect()
            self._record_failure(err, time.monotonic() - started)
        except Exception as err:  # a defect, or an input nothing above expected: this VM
            # is down for this poll (reason "protocol"), and the loop goes on
            self._log.exception("%s: poll failed unexpectedly", self.name)
            await self._disconnect()
            self._record_failure(err, time.monotonic() - started)

    async def _poll_within(self, started: float, within: float) -> None:
        deadline = asyncio.timeout(within)
        try:
            async with deadline:
                await self._poll(started)
        except TimeoutError as err:
            if not deadline.expired():
                raise  # a step's own timeout
            raise TimeoutError(f"{self.monitor.address}: no answer within {within:g}s") from err

    async def _poll(self, started: float) -> None:
        try:
            if self._client is None or self._client.closed:
                if self._client is not None:
                    reason = self._client.close_reason
                    await self._disconnect()
                    if reason is not None and self._state.up:
                        raise reason
                await self._connect()
            client = self._client
            assert client is not None  # _connect() sets it or raises
            state = await self._query(client)
        finally:
            if not self._held:
                await self._disconnect()
        self._succeeded(state, time.monotonic() - started)

    async def _connect(self) -> None:
        on_event = self._event if self._held else None
        client = await connect(
            self.monitor.address,
            timeout=self.settings.timeout,
            max_line=self.settings.max_line,
            on_event=on_event,
            event_queue_size=1,
        )
        self._client = client
        peer = await self._check_peer(client)
        if on_event is not None:
            client.add_close_callback(lambda reason: self._closed_by_peer(client))
        self._connections += 1
        self._identity = None
        self._handshakes.forget()
        if on_event is not None:  # events are only seen on a held connection
            for name in PRECREATED_EVENTS:
                self._events.setdefault(name, 0)
        self._counters = self._count()
        self._collectors = await choose_collectors(
            client, self.monitor.collectors, self._collectors, self._host, vm=self.name, peer=peer
        )
        self._prefetch = poll_commands(self._collectors)

    async def _check_peer(self, client: QMPClient) -> Peer | None:
        """For a monitor read from a process's command line: the peer, identified, or
        :class:`ConnectError` when it is not that process (a socket swapped for another's
        since the scan); ``None`` for other monitors (identified later if a collector needs)."""
        expected = self.monitor.process
        if expected is None:
            return None
        host = self._host if self._host is not None else Host()
        peer, problem = await host.check_peer(client.socket, *expected, vm=self.name)
        if problem is not None:
            raise ConnectError(
                f"{self.monitor.address}: {problem}, whose command line named this monitor"
            )
        return peer

    def _closed_by_peer(self, client: QMPClient) -> None:
        """A held connection ended: poll at once to say so. When it ended inside a poll
        (the client closes itself on a framing error before the poll sees the error), that
        poll fails and the backoff sleep after it ignores this wake."""
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
        samples, results = await run_collectors(
            self._collectors, client, dict(zip(prefetch, answers[2:], strict=True)), vm=self.name
        )
        if vnc is not None and vnc.enabled and self._vnc_failures is None and self._held:
            self._vnc_failures = 0
            self._counters = self._count()
        now = time.time()
        return VMState(
            self.monitor,
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

    @property
    def _held(self) -> bool:
        """Whether the connection is held (and its events counted)."""
        return self.monitor.mode == "persistent"

    async def _query_identity(self, client: QMPClient) -> Identity:
        """Version, name and uuid; on a held connection also whether SPICE is on (its
        events' counters are then pre-created)."""
        commands = [("query-version", None), ("query-name", None), ("query-uuid", None)]
        if self._held:
            commands.append(("query-spice", None))
        answers = await client.execute_many(commands)
        if self._held and spice_enabled(answers[3]):
            for name in SPICE_EVENTS:
                self._events.setdefault(name, 0)
            self._counters = self._count()
        return parse_identity(*answers[:3])

    # -- outcomes --------------------------------------------------------------------------

    def _count(self) -> Counters:
        """The counters as published (rebuilt only when one of them changed)."""
        return Counters(
            events=tuple(sorted(self._events.items())),
            poll_errors=tuple(self._errors.items()),
            connections=self._connections,
            vnc_handshake_failures=self._vnc_failures,
        )

    def _publish(self, state: VMState) -> None:
        timing_only = state.same_but_timing(self._state)
        self._state = state
        if not self._detached:
            self._on_state(state, timing_only)

    def _succeeded(self, state: VMState, duration: float) -> None:
        if not self._state.up and (self._state.last_poll or self._failures):
            self._log.info("%s: up (%s)", self.name, self.monitor.address)
        self._failures = 0
        self._publish(dataclasses.replace(state, counters=self._counters, poll_duration=duration))

    def _record_failure(self, error: BaseException, duration: float) -> None:
        """Count a failed poll, publish the VM as down, and log once per change."""
        reason = error_reason(error)
        self._errors[reason] += 1
        self._counters = self._count()
        self._failures += 1
        previous = self._state
        message = describe_failure(error)
        if previous.up or previous.error_reason != reason or not previous.last_poll:
            self._log.warning("%s: down (%s): %s", self.name, reason, message)
        self._log.debug("%s: poll failed", self.name, exc_info=error)
        self._publish(
            VMState(
                self.monitor,
                up=False,
                identity=previous.identity,
                error_reason=reason,
                error=message,
                last_success=previous.last_success,
                last_poll=time.time(),
                poll_duration=duration,
                counters=self._counters,
            )
        )

    def _event(self, event: Event) -> None:
        name = event.name
        counts = self._events
        if name not in counts and (len(counts) >= MAX_EVENT_NAMES or not EVENT_NAME.match(name)):
            name = "OTHER"
        counts[name] = counts.get(name, 0) + 1
        failed = self._handshakes.observe(event)
        if failed:
            self._vnc_failures = (self._vnc_failures or 0) + len(failed)
        self._counters = self._count()
        self._publish(dataclasses.replace(self._state, counters=self._counters))
        if self._on_event is not None and not self._detached:
            for each in (event, *failed):
                try:
                    self._on_event(self.monitor, each)
                except Exception:
                    self._log.exception("%s: event handler failed on %s", self.name, each.name)
        if event.name in REPOLL_EVENTS:
            self._wake_now()
