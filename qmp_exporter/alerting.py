"""Instant push of selected QMP events to Alertmanager (API v2), off the event path.

A Prometheus alert on ``qemu_events_total`` waits for a scrape and a rule evaluation; a console
login should page at once. :meth:`AlertPusher.notify` runs in the exporter's asyncio loop for
every event: it only filters and enqueues. One daemon thread per Alertmanager drains its own
bounded queue, POSTs batches to ``/api/v2/alerts`` with a request timeout, and retries with
backoff. When an Alertmanager is down, its queue keeps the newest alerts and drops the oldest;
every failure and drop is counted::

    qmp_exporter_alerts_sent_total{alertmanager="http://127.0.0.1:9093"} 3
    qmp_exporter_alert_errors_total{alertmanager="http://127.0.0.1:9093"} 0
    qmp_exporter_alerts_dropped_total{alertmanager="http://127.0.0.1:9093",reason="queue_full"} 0
    qmp_exporter_alert_queue_length{alertmanager="http://127.0.0.1:9093"} 0
"""

from __future__ import annotations

import collections
import logging
import random
import threading
import time
from datetime import UTC, datetime
from typing import Any

import prometheus_client
import requests

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
#: Why an alert was dropped (values of the ``reason`` label).
DROP_REASONS = ("queue_full", "expired", "rejected", "failed")

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
) -> dict[str, Any]:
    """The Alertmanager API v2 alert for one event of one VM; ``constant_labels``
    (``alerting.labels``) go under the monitor's own labels."""
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
            + " (pushed by qmp-exporter)."
        ),
    }
    for key in sorted(details)[:MAX_ANNOTATIONS]:
        annotations.setdefault(key, details[key])
    return {
        "labels": labels,
        "annotations": annotations,
        "startsAt": _timestamp(now),
        "endsAt": _timestamp(now + resolve_after),
    }


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
            "Alerts given up: queue_full (oldest dropped), expired (endsAt passed), "
            "rejected (4xx answer), failed (retries exhausted).",
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


class _Delivery:
    """One Alertmanager: a bounded queue and the thread that drains it."""

    def __init__(
        self, url: str, queue_size: int, timeout: float, metrics: _Metrics, stop: threading.Event
    ) -> None:
        self.url = url
        self._endpoint = url.rstrip("/") + ALERTS_PATH
        #: (endsAt in epoch seconds, alert) pairs, oldest first.
        self._queue: collections.deque[tuple[float, dict[str, Any]]] = collections.deque()
        self._queue_size = queue_size
        self._timeout = timeout
        self._stop = stop
        self._ready = threading.Condition()
        self._sent = metrics.sent.labels(url)
        self._errors = metrics.errors.labels(url)
        self._dropped = {reason: metrics.dropped.labels(url, reason) for reason in DROP_REASONS}
        metrics.queue_length.labels(url).set_function(lambda: len(self._queue))
        self.thread = threading.Thread(target=self._run, name=f"alertmanager {url}", daemon=True)

    def put(self, alert: dict[str, Any], ends_at: float) -> None:
        """Enqueue without waiting; when full, the oldest alert makes room."""
        with self._ready:
            if len(self._queue) >= self._queue_size:
                self._queue.popleft()
                self._dropped["queue_full"].inc()
            self._queue.append((ends_at, alert))
            self._ready.notify()

    def wake(self) -> None:
        with self._ready:
            self._ready.notify_all()

    def _take(self) -> list[tuple[float, dict[str, Any]]]:
        with self._ready:
            while not self._queue and not self._stop.is_set():
                self._ready.wait()
            batch: list[tuple[float, dict[str, Any]]] = []
            while self._queue and len(batch) < MAX_BATCH:
                batch.append(self._queue.popleft())
            return batch

    def _run(self) -> None:
        with requests.Session() as session:
            while not self._stop.is_set():
                batch = self._take()
                if batch:
                    self._deliver(session, batch)

    def _unexpired(
        self, batch: list[tuple[float, dict[str, Any]]]
    ) -> list[tuple[float, dict[str, Any]]]:
        now = time.time()
        live = [item for item in batch if item[0] > now]
        if len(live) < len(batch):
            self._dropped["expired"].inc(len(batch) - len(live))
        return live

    def _deliver(
        self, session: requests.Session, batch: list[tuple[float, dict[str, Any]]]
    ) -> None:
        """POST one batch, retrying with backoff; count the outcome."""
        delay = FIRST_BACKOFF
        for attempt in range(1, MAX_ATTEMPTS + 1):
            batch = self._unexpired(batch)
            if not batch:
                return
            try:
                response = session.post(
                    self._endpoint, json=[alert for _, alert in batch], timeout=self._timeout
                )
            except requests.RequestException as err:
                problem = f"{type(err).__name__}: {err}"
            else:
                if response.ok:
                    self._sent.inc(len(batch))
                    return
                problem = f"HTTP {response.status_code}: {response.text[:200]!r}"
                if 400 <= response.status_code < 500 and response.status_code != 429:
                    self._errors.inc()
                    self._dropped["rejected"].inc(len(batch))
                    log.warning(
                        "alertmanager %s rejected %d alert(s): %s", self.url, len(batch), problem
                    )
                    return
            self._errors.inc()
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
        self._dropped["failed"].inc(len(batch))
        log.warning("alertmanager %s: gave up on %d alert(s)", self.url, len(batch))


class AlertPusher:
    """Pushes the configured events of every VM to every configured Alertmanager."""

    def __init__(
        self,
        config: AlertingConfig,
        registry: prometheus_client.CollectorRegistry,
        *,
        queue_size: int = 1000,
        timeout: float = 5.0,
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
            _Delivery(url, queue_size, timeout, self._metrics, self._stop)
            for url in dict.fromkeys(config.alertmanagers)
        ]

    def notify(self, monitor: MonitorConfig, event: Event) -> None:
        """Queue an alert for ``event`` if it is one to push; never blocks."""
        if event.name not in self._events or not self._deliveries or self._stop.is_set():
            return
        now = time.time()
        alert = build_alert(monitor, event, now, self.resolve_after, self.config.labels)
        for delivery in self._deliveries:
            delivery.put(alert, now + self.resolve_after)

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
