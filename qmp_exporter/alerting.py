"""Instant push of selected QMP events to Alertmanager (API v2), off the event path.

A Prometheus alert on ``qemu_events_total`` waits for a scrape and a rule evaluation; a console
login should page at once. :meth:`AlertPusher.notify` runs in the exporter's asyncio loop for
every event: it only filters and enqueues. One daemon thread per Alertmanager drains its own
bounded queue, POSTs batches to ``/api/v2/alerts`` within a deadline, and retries with backoff.

Anyone who reaches a VM's VNC port can make QEMU send thousands of events a second, so the
queue is fair as well as bounded:

* **coalescing**: an event whose alert is still queued (same labels, and for a console event the
  same client address) joins it: the alert takes the newest event's annotations and times, and
  its ``events`` annotation counts the events it stands for;
* **a share per VM**: one VM holds at most a tenth of the queue (``VM_SHARE``); beyond it, its
  own oldest alert for the same event (else its oldest) makes room (reason ``vm_share``);
* **full queue**: the VM holding the most alerts loses its oldest (reason ``queue_full``), so a
  noisy VM never evicts a quiet VM's alert;
* **batches** take the VMs in turn, each VM's oldest alert first.

Every drop is counted by reason, every reason at 0 from the start, and logged at most once a
minute per Alertmanager with the counts since the line before::

    qmp_exporter_alerts_sent_total{alertmanager="http://127.0.0.1:9093"} 3
    qmp_exporter_alert_errors_total{alertmanager="http://127.0.0.1:9093"} 0
    qmp_exporter_alerts_dropped_total{alertmanager="http://127.0.0.1:9093",reason="vm_share"} 0
    qmp_exporter_alert_queue_length{alertmanager="http://127.0.0.1:9093"} 0

A POST is bounded in time and in what it reads: connect and each read time out
(``timeout``), a watchdog shuts the connection down when the whole exchange outlasts
``deadline`` (an answer trickled a byte at a time would otherwise hold the sender for ever,
since the timeout is per read), and at most ``MAX_ANSWER_BYTES`` of an answer are read (its
start goes to the log; the rest is never downloaded).
"""

from __future__ import annotations

import collections
import contextlib
import http.client
import io
import logging
import random
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import prometheus_client
import requests
import requests.adapters
import urllib3
import urllib3.connection
import urllib3.exceptions

from qmp_exporter.config import AlertingConfig, MonitorConfig
from qmp_exporter.exposition.counters import OwnCounter
from qmp_exporter.polling.consoles import HANDSHAKE_FAILED
from qmp_exporter.qmp import Event

log = logging.getLogger(__name__)

ALERTS_PATH = "/api/v2/alerts"
#: Alerts sent in one POST.
MAX_BATCH = 64
#: POST attempts for one batch before it is dropped (reason ``failed``).
MAX_ATTEMPTS = 5
#: Backoff between attempts: doubles from the first delay up to the cap, with 10% jitter.
FIRST_BACKOFF = 0.5
MAX_BACKOFF = 30.0
#: Bounds on what one event's data adds to an alert's annotations.
MAX_ANNOTATIONS = 32
MAX_ANNOTATION_LENGTH = 512
#: The part of a queue one VM may hold (at least one alert).
VM_SHARE = 0.1
#: Bytes of an Alertmanager's answer read at most (an error page's start, for the log).
MAX_ANSWER_BYTES = 512
#: Seconds between two log lines about dropped alerts, per Alertmanager.
DROP_LOG_INTERVAL = 60.0
#: Why an alert was dropped (values of the ``reason`` label).
DROP_REASONS = ("queue_full", "vm_share", "expired", "rejected", "failed")


_SUMMARIES = {
    "VNC_CONNECTED": "VNC client {client_host} connected to VM {vm}",
    "VNC_INITIALIZED": "VNC client {client_host} logged in to VM {vm}",
    "VNC_DISCONNECTED": "VNC client {client_host} disconnected from VM {vm}",
    HANDSHAKE_FAILED: "VNC client {client_host} failed the handshake with VM {vm}",
    "SPICE_CONNECTED": "SPICE client {client_host} connected to VM {vm}",
    "SPICE_INITIALIZED": "SPICE client {client_host} logged in to VM {vm}",
    "SPICE_DISCONNECTED": "SPICE client {client_host} disconnected from VM {vm}",
    "GUEST_PANICKED": "Guest of VM {vm} panicked",
    "WATCHDOG": "Watchdog of VM {vm} fired ({action})",
    "BLOCK_IO_ERROR": "Disk I/O error on VM {vm} ({disk})",
    "SHUTDOWN": "VM {vm} shut down",
    "RESET": "VM {vm} was reset",
}


def alert_name(event_name: str) -> str:
    """``VNC_CONNECTED`` -> ``QemuEventVncConnected``."""
    return "QemuEvent" + "".join(part.capitalize() for part in event_name.split("_") if part)


def _flatten(data: Any, prefix: str, out: dict[str, str]) -> None:
    if isinstance(data, dict):
        for key, value in data.items():
            name = f"{prefix}_{key}" if prefix else str(key)
            _flatten(value, name.replace("-", "_"), out)
    elif isinstance(data, list):
        for index, value in enumerate(data):
            _flatten(value, f"{prefix}_{index}", out)
    elif prefix:
        text = str(data).lower() if isinstance(data, bool) else str(data)
        out[prefix] = text[:MAX_ANNOTATION_LENGTH]


def _timestamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")


def build_alert(
    monitor: MonitorConfig,
    event: Event,
    now: float,
    resolve_after: float,
    constant_labels: tuple[tuple[str, str], ...] = (),
    events: int = 1,
) -> dict[str, Any]:
    """The Alertmanager API v2 alert for one event of one VM; ``constant_labels``
    (``alerting.labels``) go under the monitor's own labels. ``events``: how many events the
    alert stands for (coalesced in the queue; ``event`` is the newest), in the annotation
    ``events``."""
    labels = {**dict(constant_labels), **monitor.label_dict, "alertname": alert_name(event.name)}
    labels.update(vm=monitor.name, event=event.name)
    details: dict[str, str] = {}
    _flatten(event.data, "", details)
    template = _SUMMARIES.get(event.name, "QEMU event {event} on VM {vm}")
    fields = collections.defaultdict(lambda: "?", details, vm=monitor.name, event=event.name)
    # A -blockdev disk (libvirt's) has an empty device: named by its device's QOM path (which
    # holds the device id, libvirt's alias; newer QEMU, 10.0 here), else by its block node
    fields["disk"] = next(
        (details[k] for k in ("device", "qom_path", "node_name") if details.get(k)), "?"
    )
    annotations = {
        "summary": template.format_map(fields),
        "description": (
            (
                f"VNC client left VM {monitor.name} before completing the handshake"
                f" ({details.get('reason', '?')})"
                if event.name == HANDSHAKE_FAILED
                else f"QEMU sent the {event.name} event for VM {monitor.name}"
            )
            + (f" at {_timestamp(event.timestamp)}" if event.timestamp else "")
            + (f"; the last of {events} such events (coalesced)" if events > 1 else "")
            + " (pushed by qmp-exporter)."
        ),
        "events": str(events),
    }
    for key in sorted(details)[:MAX_ANNOTATIONS]:
        annotations.setdefault(key, details[key])
    return {
        "labels": labels,
        "annotations": annotations,
        "startsAt": _timestamp(now),
        "endsAt": _timestamp(now + resolve_after),
    }


def _client_host(data: dict[str, Any]) -> str | None:
    """A console event's client address (``client.host``), part of the coalescing key."""
    client = data.get("client")
    host = client.get("host") if isinstance(client, dict) else None
    return None if host is None else str(host)[:MAX_ANNOTATION_LENGTH]


class _Queued:
    """One queued alert: the newest of the events it stands for, and how many they are."""

    __slots__ = ("at", "count", "event", "monitor")

    def __init__(self, monitor: MonitorConfig, event: Event, at: float) -> None:
        self.monitor = monitor
        self.event = event
        #: When the newest event was taken (epoch seconds): the alert's ``startsAt``.
        self.at = at
        self.count = 1


#: A queued alert's key within its VM: the VM's labels, the event, the client's address.
_Key = tuple[tuple[tuple[str, str], ...], str, str | None]


# -- one POST within a deadline ------------------------------------------------------------------


class _Attempt:
    """One POST, which a watchdog may cut short by shutting its connection's socket down."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._connection: urllib3.connection.HTTPConnection | None = None
        self._over = False
        self.expired = False

    def use(self, connection: urllib3.connection.HTTPConnection) -> None:
        """Called as ``connection`` sends a request of this attempt (a redirect sends two)."""
        with self._lock:
            if self.expired:
                raise OSError("the deadline passed")
            self._connection = connection

    def expire(self) -> None:
        """The deadline passed (or the pusher closes): end the exchange where it stands."""
        with self._lock:
            if self._over:
                return
            self.expired = True
            sock = getattr(self._connection, "sock", None)
            if isinstance(sock, socket.socket):
                # The socket-level shutdown (not SSLSocket's, which drops its TLS state under
                # the reading thread): the blocked read returns and the request fails.
                with contextlib.suppress(OSError):
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)

    def finish(self) -> None:
        with self._lock:
            self._over = True


#: The attempt the current (sender) thread is making.
_current = threading.local()


def _watch(connection: urllib3.connection.HTTPConnection) -> None:
    attempt: _Attempt | None = getattr(_current, "attempt", None)
    if attempt is not None:
        attempt.use(connection)


class _WatchedHTTPConnection(urllib3.connection.HTTPConnection):
    def request(self, *args: Any, **kwargs: Any) -> None:
        _watch(self)
        super().request(*args, **kwargs)


class _WatchedHTTPSConnection(urllib3.connection.HTTPSConnection):
    def request(self, *args: Any, **kwargs: Any) -> None:
        _watch(self)
        super().request(*args, **kwargs)


class _WatchedHTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


class _BoundedAdapter(requests.adapters.HTTPAdapter):
    """Connections the current :class:`_Attempt` can shut down, and answers cut to
    :data:`MAX_ANSWER_BYTES` before requests sees them (it reads a redirect's whole body)."""

    def __init__(self) -> None:
        super().__init__()  # makes the pool manager (init_poolmanager, untyped in some stubs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": _WatchedHTTPPool,
            "https": _WatchedHTTPSPool,
        }

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> Any:
        response = super().send(request, *args, **kwargs)
        raw = response.raw
        head, complete = b"", False
        length = response.headers.get("Content-Length", "")
        # A success's body is read only when short (Alertmanager's is empty): an error's start
        # is worth a log line, a redirect's is read by requests
        if not response.ok or (length.isdigit() and int(length) <= MAX_ANSWER_BYTES):
            try:
                head = raw.read(MAX_ANSWER_BYTES + 1, decode_content=True)
                complete = len(head) <= MAX_ANSWER_BYTES and raw.closed
            except (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError):
                pass  # a broken or cut answer: its status stands, its connection goes
        if not complete:
            raw.close()  # the rest is never read: the connection goes with it
        raw.release_conn()
        response.raw = io.BytesIO(head[:MAX_ANSWER_BYTES])
        return response


def _session() -> requests.Session:
    session = requests.Session()
    for prefix in ("http://", "https://"):
        session.mount(prefix, _BoundedAdapter())
    return session


# -- the queues ----------------------------------------------------------------------------------


class _Metrics:
    """The pusher's counters (without ``_created``) and gauges on the exporter's registry."""

    def __init__(self, registry: prometheus_client.CollectorRegistry) -> None:
        self.registry = registry
        self.sent = OwnCounter(
            "qmp_exporter_alerts_sent",
            "Alerts accepted by the Alertmanager.",
            ["alertmanager"],
            registry=registry,
        )
        self.errors = OwnCounter(
            "qmp_exporter_alert_errors",
            "Failed POSTs to the Alertmanager (each retry counts).",
            ["alertmanager"],
            registry=registry,
        )
        self.dropped = OwnCounter(
            "qmp_exporter_alerts_dropped",
            "Alerts given up: queue_full (the queue was full: the VM holding the most lost its "
            "oldest), vm_share (the VM held its share of the queue: its oldest made room), "
            "expired (endsAt passed), rejected (4xx answer), failed (retries exhausted).",
            ["alertmanager", "reason"],
            registry=registry,
        )
        self.queue_length = prometheus_client.Gauge(
            "qmp_exporter_alert_queue_length",
            "Alerts waiting to be sent to the Alertmanager.",
            ["alertmanager"],
            registry=registry,
        )

    def unregister(self) -> None:
        for metric in (self.sent, self.errors, self.dropped, self.queue_length):
            self.registry.unregister(metric)


#: Turns a queued alert into (endsAt in epoch seconds, the API's alert).
Render = Callable[[_Queued], tuple[float, dict[str, Any]]]


class _Delivery:
    """One Alertmanager: a bounded, fair queue and the thread that drains it."""

    def __init__(
        self,
        url: str,
        queue_size: int,
        timeout: float,
        deadline: float,
        render: Render,
        metrics: _Metrics,
        stop: threading.Event,
    ) -> None:
        self.url = url
        self._endpoint = url.rstrip("/") + ALERTS_PATH
        #: VM name -> its queued alerts by key, oldest first. The VMs' order is the turn:
        #: a VM that gave an alert to a batch goes to the end.
        self._vms: dict[str, collections.OrderedDict[_Key, _Queued]] = {}
        self._length = 0
        self._queue_size = queue_size
        self._share = max(1, int(queue_size * VM_SHARE))
        self._timeout = timeout
        self._deadline = deadline
        self._render = render
        self._stop = stop
        self._ready = threading.Condition()  # its lock (an RLock) guards everything above
        self._attempt: _Attempt | None = None
        self._sent = metrics.sent.labels(url)
        self._errors = metrics.errors.labels(url)
        self._dropped = {reason: metrics.dropped.labels(url, reason) for reason in DROP_REASONS}
        #: Drops not logged yet, by reason; when the last line was written; its last problem.
        self._unlogged: collections.Counter[str] = collections.Counter()
        #: Alerts evicted (queue_full, vm_share) since the last line, by VM.
        self._evicted_from: collections.Counter[str] = collections.Counter()
        self._logged_at = time.monotonic()
        self._next_log = 0.0
        self._problem = ""
        metrics.queue_length.labels(url).set_function(lambda: self._length)
        self.thread = threading.Thread(target=self._run, name=f"alertmanager {url}", daemon=True)

    def put(self, monitor: MonitorConfig, event: Event, now: float) -> None:
        """Queue (or coalesce) the alert for ``event`` without waiting."""
        key: _Key = (monitor.labels, event.name, _client_host(event.data))
        with self._ready:
            alerts = self._vms.get(monitor.name)
            if alerts is None:
                alerts = self._vms[monitor.name] = collections.OrderedDict()
            queued = alerts.get(key)
            if queued is not None:
                queued.monitor, queued.event, queued.at = monitor, event, now
                queued.count += 1
                return
            if len(alerts) >= self._share:
                self._evict(monitor.name, event.name, "vm_share")
            elif self._length >= self._queue_size:
                largest = max(self._vms, key=lambda vm: len(self._vms[vm]))
                self._evict(largest, None, "queue_full")
            # the eviction may have emptied and removed this VM's queue
            self._vms.setdefault(monitor.name, alerts)[key] = _Queued(monitor, event, now)
            self._length += 1
            self._ready.notify()

    def _evict(self, vm: str, event_name: str | None, reason: str) -> None:
        """Drop ``vm``'s oldest alert for ``event_name`` (else its oldest); lock held."""
        alerts = self._vms[vm]
        victim = None
        if event_name is not None:
            victim = next((k for k, q in alerts.items() if q.event.name == event_name), None)
        del alerts[victim if victim is not None else next(iter(alerts))]
        self._length -= 1
        if not alerts:
            del self._vms[vm]
        self._drop(reason, 1)
        self._evicted_from[vm] += 1

    def _drop(self, reason: str, count: int, problem: str = "") -> None:
        self._dropped[reason].inc(count)
        with self._ready:
            self._unlogged[reason] += count
            if problem:
                self._problem = problem

    def _log_drops(self) -> None:
        """One line for the drops since the last, at most every :data:`DROP_LOG_INTERVAL`."""
        with self._ready:
            now = time.monotonic()
            if not self._unlogged or now < self._next_log:
                return
            counts, self._unlogged = self._unlogged, collections.Counter()
            evicted, self._evicted_from = self._evicted_from, collections.Counter()
            problem, self._problem = self._problem, ""
            since, self._logged_at = self._logged_at, now
            self._next_log = now + DROP_LOG_INTERVAL
        most = evicted.most_common(1)
        log.warning(
            "alertmanager %s: %d alert(s) dropped in the last %.0f s (%s)%s%s",
            self.url,
            sum(counts.values()),
            now - since,
            ", ".join(f"{reason} {counts[reason]}" for reason in DROP_REASONS if counts[reason]),
            f"; most evicted from VM {most[0][0]} ({most[0][1]})" if most else "",
            f"; last problem: {problem}" if problem else "",
        )

    def wake(self) -> None:
        """Wake the sender (to stop) and cut its POST short."""
        with self._ready:
            self._ready.notify_all()
        attempt = self._attempt
        if attempt is not None:
            attempt.expire()

    def _take(self) -> list[_Queued]:
        """Up to :data:`MAX_BATCH` alerts, the VMs in turn; waits for one while none is queued
        (and no more than until the next log line is due)."""
        with self._ready:
            if not self._vms and not self._stop.is_set():
                due = max(0.0, self._next_log - time.monotonic()) if self._unlogged else None
                self._ready.wait(due)
            batch: list[_Queued] = []
            while self._vms and len(batch) < MAX_BATCH:
                for vm in list(self._vms):
                    alerts = self._vms.pop(vm)
                    batch.append(alerts.popitem(last=False)[1])
                    if alerts:
                        self._vms[vm] = alerts  # its next alert waits for the others' turn
                    if len(batch) == MAX_BATCH:
                        break
            self._length -= len(batch)
            return batch

    def _run(self) -> None:
        with _session() as session:
            while not self._stop.is_set():
                batch = self._take()
                if batch:
                    self._deliver(session, [self._render(queued) for queued in batch])
                self._log_drops()

    def _unexpired(
        self, batch: list[tuple[float, dict[str, Any]]]
    ) -> list[tuple[float, dict[str, Any]]]:
        now = time.time()
        live = [item for item in batch if item[0] > now]
        if len(live) < len(batch):
            self._drop("expired", len(batch) - len(live))
        return live

    def _deliver(
        self, session: requests.Session, batch: list[tuple[float, dict[str, Any]]]
    ) -> None:
        """POST one batch, retrying with backoff; count the outcome."""
        delay = FIRST_BACKOFF
        problem = ""
        for attempt in range(1, MAX_ATTEMPTS + 1):
            batch = self._unexpired(batch)
            if not batch:
                return
            status, problem = self._post(session, [alert for _, alert in batch])
            if not problem:
                self._sent.inc(len(batch))
                return
            self._errors.inc()
            if status is not None and 400 <= status < 500 and status != 429:
                self._drop("rejected", len(batch), problem)
                return
            log.log(
                logging.WARNING if attempt == 1 else logging.DEBUG,
                "alertmanager %s: push of %d alert(s) failed (attempt %d/%d): %s",
                self.url,
                len(batch),
                attempt,
                MAX_ATTEMPTS,
                problem,
            )
            if attempt == MAX_ATTEMPTS or self._stop.wait(delay * random.uniform(0.9, 1.1)):
                break
            delay = min(delay * 2, MAX_BACKOFF)
        self._drop("failed", len(batch), problem)

    def _post(
        self, session: requests.Session, alerts: list[dict[str, Any]]
    ) -> tuple[int | None, str]:
        """One POST within the deadline: (the HTTP status if one came, the problem or "")."""
        attempt = self._attempt = _current.attempt = _Attempt()
        watchdog = threading.Timer(self._deadline, attempt.expire)
        watchdog.daemon = True
        watchdog.start()
        try:
            with session.post(
                self._endpoint, json=alerts, timeout=self._timeout, stream=True
            ) as response:
                if response.ok:
                    return response.status_code, ""
                # at most MAX_ANSWER_BYTES (the adapter's cut), decoded without guessing
                text = response.raw.read().decode("utf-8", "replace")
                return response.status_code, f"HTTP {response.status_code}: {text[:200]!r}"
        except requests.RequestException as err:
            if attempt.expired and not self._stop.is_set():
                return None, f"no complete answer within the {self._deadline:g} s deadline"
            return None, f"{type(err).__name__}: {err}"
        finally:
            attempt.finish()
            watchdog.cancel()
            self._attempt = _current.attempt = None


class AlertPusher:
    """Pushes the configured events of every VM to every configured Alertmanager."""

    def __init__(
        self,
        config: AlertingConfig,
        registry: prometheus_client.CollectorRegistry,
        *,
        queue_size: int = 1000,
        timeout: float = 5.0,
        deadline: float = 10.0,
        resolve_after: float = 300.0,
    ) -> None:
        if queue_size < 1:
            raise ValueError("queue_size must be at least 1")
        self.config = config
        self.resolve_after = resolve_after
        self._events = frozenset(config.events)
        self._stop = threading.Event()
        self._started = False
        self._metrics = _Metrics(registry)
        self._deliveries = [
            _Delivery(
                url,
                queue_size,
                min(timeout, deadline),
                deadline,
                self._render,
                self._metrics,
                self._stop,
            )
            for url in dict.fromkeys(config.alertmanagers)
        ]

    def _render(self, queued: _Queued) -> tuple[float, dict[str, Any]]:
        alert = build_alert(
            queued.monitor,
            queued.event,
            queued.at,
            self.resolve_after,
            self.config.labels,
            queued.count,
        )
        return queued.at + self.resolve_after, alert

    def notify(self, monitor: MonitorConfig, event: Event) -> None:
        """Queue an alert for ``event`` if it is one to push; never blocks."""
        if event.name not in self._events or not self._deliveries or self._stop.is_set():
            return
        now = time.time()
        for delivery in self._deliveries:
            delivery.put(monitor, event, now)

    def start(self) -> None:
        """Start one sender thread per Alertmanager."""
        if self._started:
            return
        self._started = True
        for delivery in self._deliveries:
            delivery.thread.start()

    def close(self, timeout: float = 2.0) -> None:
        """Stop the senders, waiting up to ``timeout`` seconds; unsent alerts are discarded.

        The pusher's metrics leave the registry, so that a new pusher (after a reload that
        changed ``alerting:``) can register them again.
        """
        if self._stop.is_set():
            return
        self._stop.set()
        deadline = time.monotonic() + timeout
        for delivery in self._deliveries:
            delivery.wake()
        if self._started:
            for delivery in self._deliveries:
                delivery.thread.join(max(0.0, deadline - time.monotonic()))
        self._metrics.unregister()
