"""The push itself: a fair, bounded queue per Alertmanager drained by its own thread (see the
package's docstring)."""

from __future__ import annotations

import collections
import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import prometheus_client
import requests

from qmp_exporter.alerting.alerts import build_alert, client_host
from qmp_exporter.alerting.bounded_http import (
    Attempt,
    bounded_session,
    current,
)
from qmp_exporter.config import AlertingConfig, MonitorConfig
from qmp_exporter.exposition.counters import OwnCounter
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
#: The part of a queue one VM may hold (at least one alert).
VM_SHARE = 0.1
#: Seconds between two log lines about dropped alerts, per Alertmanager.
DROP_LOG_INTERVAL = 60.0
#: Why an alert was dropped (values of the ``reason`` label).
DROP_REASONS = ("queue_full", "vm_share", "expired", "rejected", "failed")


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
        self._attempt: Attempt | None = None
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
        key: _Key = (monitor.labels, event.name, client_host(event.data))
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
        with bounded_session() as session:
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
        attempt = self._attempt = current.attempt = Attempt()
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
            self._attempt = current.attempt = None


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
