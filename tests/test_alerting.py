"""The Alertmanager pusher against a real Alertmanager, and when Alertmanager is down or broken."""

from __future__ import annotations

import http.server
import logging
import re
import socket
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import ClassVar

import prometheus_client
import pytest

from qmp_exporter.alerting import AlertPusher, alert_name, alerts, bounded_http, build_alert
from qmp_exporter.alerting import pusher as push
from qmp_exporter.config import AlertingConfig, MonitorConfig
from qmp_exporter.qmp import Event
from tests.helpers.exporter import free_port, wait_for
from tests.helpers.fake_alertmanager import FakeAlertmanager
from tests.helpers.ops_stack import alertmanager, alertmanager_alerts

WEB = MonitorConfig("web", "unix:/run/qemu/web.qmp", labels=(("site", "lab"),))
VNC_CONNECTED = Event(
    "VNC_CONNECTED",
    {
        "server": {"auth": "none", "family": "ipv4", "service": "5901", "host": "127.0.0.1"},
        "client": {"family": "ipv4", "service": "51234", "host": "192.0.2.7", "websocket": False},
    },
    1767225600.5,
)
STOP = Event("STOP", {}, 1767225601.0)


def _value(registry: prometheus_client.CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


@pytest.fixture
def registry() -> prometheus_client.CollectorRegistry:
    return prometheus_client.CollectorRegistry()


@pytest.fixture
def pushers() -> Iterator[list[AlertPusher]]:
    started: list[AlertPusher] = []
    yield started
    for pusher in started:
        pusher.close()


def _pusher(pushers: list[AlertPusher], *urls: str, registry, **kwargs) -> AlertPusher:
    pusher = AlertPusher(AlertingConfig(tuple(urls)), registry, **kwargs)
    pushers.append(pusher)
    pusher.start()
    return pusher


# -- the alert itself ---------------------------------------------------------------------------


def test_alert_has_vm_event_and_configured_labels_and_event_data_as_annotations() -> None:
    alert = build_alert(WEB, VNC_CONNECTED, now=1767225600.0, resolve_after=300)
    assert alert["labels"] == {
        "alertname": "QemuEventVncConnected",
        "vm": "web",
        "event": "VNC_CONNECTED",
        "site": "lab",
    }
    annotations = alert["annotations"]
    assert annotations["summary"] == "VNC client 192.0.2.7 connected to VM web"
    assert annotations["client_host"] == "192.0.2.7"
    assert annotations["client_service"] == "51234"
    assert annotations["client_websocket"] == "false"
    assert annotations["server_service"] == "5901"
    assert "2026-01-01T00:00:00.500+00:00" in annotations["description"]
    assert alert["startsAt"] == "2026-01-01T00:00:00.000+00:00"
    assert alert["endsAt"] == "2026-01-01T00:05:00.000+00:00"


def test_configured_labels_cannot_override_vm_or_event() -> None:
    monitor = MonitorConfig("db", "unix:/x", labels=(("alertname", "X"), ("event", "Y")))
    labels = build_alert(monitor, STOP, 0, 60)["labels"]
    assert labels == {"alertname": "QemuEventStop", "vm": "db", "event": "STOP"}


def test_event_data_in_annotations_is_bounded() -> None:
    event = Event("BLOCK_IO_ERROR", {f"k{i}": "x" * 10_000 for i in range(100)})
    annotations = build_alert(WEB, event, 0, 60)["annotations"]
    assert len(annotations) <= alerts.MAX_ANNOTATIONS + 3  # summary, description, events
    assert max(len(v) for v in annotations.values()) <= alerts.MAX_ANNOTATION_LENGTH
    assert annotations["summary"] == "Disk I/O error on VM web (?)"


def test_a_disk_error_names_the_disk_however_it_was_added() -> None:
    def summary(data: dict[str, object]) -> str:
        base = {"operation": "write", "action": "report", "reason": "No space left on device"}
        event = Event("BLOCK_IO_ERROR", {**base, **data})
        return build_alert(WEB, event, 0, 60)["annotations"]["summary"]

    assert summary({"device": "drive-virtio-disk0"}) == (
        "Disk I/O error on VM web (drive-virtio-disk0)"
    )
    # -blockdev (libvirt): QEMU sends an empty device; 7.2 names the node, 10.0 also the
    # device's path, which holds its id (libvirt's alias) and is shown first
    assert summary({"device": "", "node-name": "libvirt-1-format"}) == (
        "Disk I/O error on VM web (libvirt-1-format)"
    )
    path = "/machine/peripheral/virtio-disk0/virtio-backend"
    both = {"device": "", "node-name": "libvirt-1-format", "qom-path": path}
    assert summary(both) == f"Disk I/O error on VM web ({path})"


def test_alert_names() -> None:
    assert alert_name("GUEST_PANICKED") == "QemuEventGuestPanicked"
    assert alert_name("VNC_CONNECTED") == "QemuEventVncConnected"


# -- a real Alertmanager ------------------------------------------------------------------------


@pytest.mark.prometheus
def test_pushed_alert_appears_in_real_alertmanager(tmp_path: Path, registry, pushers) -> None:
    with alertmanager(tmp_path) as url:
        pusher = _pusher(pushers, url, registry=registry, resolve_after=120)
        pusher.notify(WEB, STOP)  # not in alerting.events: not pushed
        pusher.notify(WEB, VNC_CONNECTED)
        alerts = wait_for(lambda: alertmanager_alerts(url))
        assert len(alerts) == 1
        alert = alerts[0]
        assert alert["labels"] == {
            "alertname": "QemuEventVncConnected",
            "vm": "web",
            "event": "VNC_CONNECTED",
            "site": "lab",
        }
        assert alert["annotations"]["client_host"] == "192.0.2.7"
        assert alert["status"]["state"] == "active"
        ends = datetime.fromisoformat(alert["endsAt"]).timestamp()
        assert 100 < ends - time.time() <= 121
        wait_for(lambda: _value(registry, "qmp_exporter_alerts_sent_total", alertmanager=url) == 1)
        assert _value(registry, "qmp_exporter_alert_errors_total", alertmanager=url) == 0
        assert _value(registry, "qmp_exporter_alert_queue_length", alertmanager=url) == 0

        panic = Event("GUEST_PANICKED", {"action": "pause", "info": {"type": "hyper-v"}})
        pusher.notify(MonitorConfig("db", "unix:/db"), panic)
        alerts = wait_for(
            lambda: [a for a in alertmanager_alerts(url) if a["labels"]["vm"] == "db"]
        )
        assert alerts[0]["labels"]["alertname"] == "QemuEventGuestPanicked"
        assert alerts[0]["annotations"]["info_type"] == "hyper-v"
        wait_for(lambda: _value(registry, "qmp_exporter_alerts_sent_total", alertmanager=url) == 2)


@pytest.mark.prometheus
def test_one_alertmanager_down_does_not_delay_the_other(tmp_path: Path, registry, pushers) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    with alertmanager(tmp_path) as up:
        _pusher(pushers, down, up, registry=registry).notify(WEB, VNC_CONNECTED)
        wait_for(lambda: alertmanager_alerts(up), timeout=3)
        wait_for(
            lambda: _value(registry, "qmp_exporter_alert_errors_total", alertmanager=down) >= 1
        )
        # The alert can show in Alertmanager a moment before the POST returns and counts.
        wait_for(lambda: _value(registry, "qmp_exporter_alerts_sent_total", alertmanager=up) == 1)
        assert _value(registry, "qmp_exporter_alerts_sent_total", alertmanager=down) == 0


@pytest.mark.prometheus
def test_alert_is_delivered_once_alertmanager_comes_up(tmp_path: Path, registry, pushers) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    pusher = _pusher(pushers, url, registry=registry)
    pusher.notify(WEB, VNC_CONNECTED)
    wait_for(lambda: _value(registry, "qmp_exporter_alert_errors_total", alertmanager=url) >= 1)
    with alertmanager(tmp_path, port=port):
        alerts = wait_for(lambda: alertmanager_alerts(url), timeout=15)
        assert alerts[0]["labels"]["vm"] == "web"
    assert _value(registry, "qmp_exporter_alerts_sent_total", alertmanager=url) == 1
    assert (
        _value(registry, "qmp_exporter_alerts_dropped_total", alertmanager=url, reason="failed")
        == 0
    )


# -- Alertmanager down or broken ------------------------------------------------------------------


@pytest.fixture
def blackhole() -> Iterator[str]:
    """A TCP port that accepts connections (into the backlog) and never answers."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1024)
        yield f"http://127.0.0.1:{server.getsockname()[1]}"


def test_notify_never_waits_for_a_hanging_alertmanager(blackhole: str, registry, pushers) -> None:
    """With a 5 s request timeout, one blocking notify() would take 5 s; 500 take well under."""
    pusher = _pusher(pushers, blackhole, registry=registry, queue_size=10, timeout=5.0)
    started = time.monotonic()
    for index in range(500):  # 500 VMs: no two alerts coalesce
        pusher.notify(MonitorConfig(f"vm{index}", "unix:/x"), VNC_CONNECTED)
    assert time.monotonic() - started < 2.5
    queued = _value(registry, "qmp_exporter_alert_queue_length", alertmanager=blackhole)
    assert queued <= 10
    dropped = _value(
        registry, "qmp_exporter_alerts_dropped_total", alertmanager=blackhole, reason="queue_full"
    )
    # 500 queued; at most 10 wait and at most one batch of MAX_BATCH is in flight.
    assert dropped >= 500 - 10 - push.MAX_BATCH
    started = time.monotonic()
    pusher.close(timeout=1.0)
    assert time.monotonic() - started < 1.5


def test_refused_connections_are_counted_and_retried_then_dropped(
    registry, pushers, monkeypatch
) -> None:
    monkeypatch.setattr(push, "FIRST_BACKOFF", 0.01)
    url = f"http://127.0.0.1:{free_port()}"
    _pusher(pushers, url, registry=registry).notify(WEB, VNC_CONNECTED)
    wait_for(
        lambda: (
            _value(registry, "qmp_exporter_alerts_dropped_total", alertmanager=url, reason="failed")
            == 1
        )
    )
    assert (
        _value(registry, "qmp_exporter_alert_errors_total", alertmanager=url) == push.MAX_ATTEMPTS
    )
    assert _value(registry, "qmp_exporter_alerts_sent_total", alertmanager=url) == 0


class _ScriptedAlertmanager(http.server.BaseHTTPRequestHandler):
    """Answers POSTs with the next status from ``statuses`` (a fault injector, not Alertmanager)."""

    statuses: ClassVar[list[int]] = []
    posts: ClassVar[list[bytes]] = []

    def do_POST(self) -> None:
        self.posts.append(self.rfile.read(int(self.headers["Content-Length"])))
        status = self.statuses.pop(0) if self.statuses else 200
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def scripted() -> Iterator[type[_ScriptedAlertmanager]]:
    handler = type("Handler", (_ScriptedAlertmanager,), {"statuses": [], "posts": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    handler.url = f"http://127.0.0.1:{server.server_address[1]}"  # type: ignore[attr-defined]  # a class attribute the handler reads
    yield handler
    server.shutdown()
    server.server_close()


def test_server_errors_are_retried_with_backoff(scripted, registry, pushers, monkeypatch) -> None:
    monkeypatch.setattr(push, "FIRST_BACKOFF", 0.2)
    scripted.statuses[:] = [503, 500]
    url = scripted.url
    started = time.monotonic()
    _pusher(pushers, url, registry=registry).notify(WEB, VNC_CONNECTED)
    wait_for(lambda: _value(registry, "qmp_exporter_alerts_sent_total", alertmanager=url) == 1)
    assert time.monotonic() - started >= 0.2 * 0.9 + 0.4 * 0.9  # two backoff waits
    assert len(scripted.posts) == 3
    assert scripted.posts[0] == scripted.posts[2]
    assert _value(registry, "qmp_exporter_alert_errors_total", alertmanager=url) == 2


def test_rejected_alerts_are_not_retried(scripted, registry, pushers) -> None:
    scripted.statuses[:] = [400]
    url = scripted.url
    _pusher(pushers, url, registry=registry).notify(WEB, VNC_CONNECTED)
    wait_for(
        lambda: (
            _value(
                registry, "qmp_exporter_alerts_dropped_total", alertmanager=url, reason="rejected"
            )
            == 1
        )
    )
    time.sleep(0.3)
    assert len(scripted.posts) == 1


def test_expired_alerts_are_dropped_not_sent(scripted, registry, pushers) -> None:
    url = scripted.url
    pusher = AlertPusher(AlertingConfig((url,)), registry, resolve_after=0.1)
    pushers.append(pusher)
    pusher.notify(WEB, VNC_CONNECTED)  # queued before start, expired by the time it runs
    time.sleep(0.2)
    pusher.start()
    wait_for(
        lambda: (
            _value(
                registry, "qmp_exporter_alerts_dropped_total", alertmanager=url, reason="expired"
            )
            == 1
        )
    )
    assert scripted.posts == []


def test_events_filter_and_no_alertmanager(registry, pushers) -> None:
    config = AlertingConfig(("http://127.0.0.1:1",), events=("STOP",))
    pusher = AlertPusher(config, registry)
    pushers.append(pusher)  # not started: the queue only fills
    pusher.notify(WEB, VNC_CONNECTED)
    assert (
        _value(registry, "qmp_exporter_alert_queue_length", alertmanager="http://127.0.0.1:1") == 0
    )
    pusher.notify(WEB, STOP)
    assert (
        _value(registry, "qmp_exporter_alert_queue_length", alertmanager="http://127.0.0.1:1") == 1
    )

    idle = AlertPusher(AlertingConfig(()), prometheus_client.CollectorRegistry())
    idle.start()
    idle.notify(WEB, VNC_CONNECTED)
    idle.close()


def test_metrics_exist_at_zero_for_every_alertmanager(registry) -> None:
    url = "http://127.0.0.1:9093"
    AlertPusher(AlertingConfig((url,)), registry)
    text = prometheus_client.generate_latest(registry).decode()
    assert f'qmp_exporter_alerts_sent_total{{alertmanager="{url}"}} 0.0' in text
    assert f'qmp_exporter_alert_errors_total{{alertmanager="{url}"}} 0.0' in text
    for reason in push.DROP_REASONS:
        line = f'qmp_exporter_alerts_dropped_total{{alertmanager="{url}",reason="{reason}"}} 0.0'
        assert line in text
    assert f'qmp_exporter_alert_queue_length{{alertmanager="{url}"}} 0.0' in text


def test_close_unregisters_metrics_so_a_new_pusher_can_replace_it(registry) -> None:
    """A reload that changes ``alerting:`` closes the old pusher and starts a new one."""
    old = AlertPusher(AlertingConfig(("http://127.0.0.1:1",)), registry)
    old.start()
    old.close()
    old.close()  # idempotent
    new = AlertPusher(AlertingConfig(("http://127.0.0.1:2",)), registry)
    text = prometheus_client.generate_latest(registry).decode()
    assert 'alertmanager="http://127.0.0.1:2"' in text
    assert 'alertmanager="http://127.0.0.1:1"' not in text
    new.close()


# -- a fair queue: coalescing, a share per VM, drops counted and logged (issue 23, D6) ---------


def _vnc(host: str, port: int = 40000) -> Event:
    data = {"server": {"host": "127.0.0.1", "service": "5901"}, "client": {"host": host}}
    data["client"]["service"] = str(port)
    return Event("VNC_CONNECTED", data)


PANIC = Event("GUEST_PANICKED", {"action": "pause"})
NOISY = MonitorConfig("noisy", "unix:/run/qemu/noisy.qmp")
QUIET = MonitorConfig("quiet", "unix:/run/qemu/quiet.qmp")
FLOODED = AlertingConfig(events=("VNC_CONNECTED", "GUEST_PANICKED"))


def _dropped(registry, url: str, reason: str) -> float:
    return _value(registry, "qmp_exporter_alerts_dropped_total", alertmanager=url, reason=reason)


def _queued(registry, url: str) -> float:
    return _value(registry, "qmp_exporter_alert_queue_length", alertmanager=url)


def _flooding_pusher(pushers, url: str, registry, **kwargs) -> AlertPusher:
    """A pusher for VNC_CONNECTED and GUEST_PANICKED, not started (the queue only fills)."""
    config = AlertingConfig((url,), events=FLOODED.events)
    pusher = AlertPusher(config, registry, **kwargs)
    pushers.append(pusher)
    return pusher


def test_identical_events_coalesce_into_one_alert_that_counts_them(registry, pushers) -> None:
    with FakeAlertmanager() as am:
        pusher = _flooding_pusher(pushers, am.url, registry)
        for port in range(40000, 40100):  # one client address, a new port each time
            pusher.notify(NOISY, _vnc("203.0.113.9", port))
        pusher.notify(NOISY, _vnc("198.51.100.1"))  # another client: its own alert
        pusher.notify(QUIET, PANIC)
        pusher.notify(NOISY, PANIC)  # the same event on another VM: its own alert
        assert _queued(registry, am.url) == 4
        pusher.start()
        wait_for(lambda: len(am.alerts) == 4)
    by_client = {a["annotations"].get("client_host"): a for a in am.received("noisy")}
    flood = by_client["203.0.113.9"]["annotations"]
    assert flood["events"] == "100"
    assert flood["client_service"] == "40099"  # the newest event's annotations
    assert "the last of 100 such events" in flood["description"]
    assert by_client["198.51.100.1"]["annotations"]["events"] == "1"
    assert am.events("quiet", "GUEST_PANICKED") == am.events("noisy", "GUEST_PANICKED") == 1
    assert _value(registry, "qmp_exporter_alerts_sent_total", alertmanager=am.url) == 4
    assert all(_dropped(registry, am.url, reason) == 0 for reason in push.DROP_REASONS)


def test_a_vm_beyond_its_share_evicts_only_its_own_alerts(registry, pushers) -> None:
    url = "http://127.0.0.1:9"
    pusher = _flooding_pusher(pushers, url, registry, queue_size=40)  # a share of 4
    pusher.notify(QUIET, PANIC)
    pusher.notify(NOISY, PANIC)
    for index in range(50):  # 50 client addresses: 50 alerts
        pusher.notify(NOISY, _vnc(f"192.0.2.{index}"))
    assert _queued(registry, url) == 1 + 4
    assert _dropped(registry, url, "vm_share") == 47  # 3 VNC alerts kept, beside the panic
    assert _dropped(registry, url, "queue_full") == 0
    delivery = pusher._deliveries[0]
    kept = {(q.event.name, (q.event.data.get("client") or {}).get("host")) for q in
            delivery._vms["noisy"].values()}  # fmt: skip
    assert kept == {("GUEST_PANICKED", None)} | {
        ("VNC_CONNECTED", f"192.0.2.{index}") for index in (47, 48, 49)
    }
    assert [q.monitor.name for q in delivery._vms["quiet"].values()] == ["quiet"]


def test_a_full_queue_evicts_from_the_vm_holding_the_most(registry, pushers) -> None:
    url = "http://127.0.0.1:9"
    pusher = _flooding_pusher(pushers, url, registry, queue_size=20)  # a share of 2
    pusher.notify(QUIET, PANIC)
    for index in range(9):
        for host in ("192.0.2.1", "192.0.2.2"):
            pusher.notify(MonitorConfig(f"vm{index}", "unix:/x"), _vnc(host))
    pusher.notify(MonitorConfig("late", "unix:/x"), PANIC)
    assert _queued(registry, url) == 20
    pusher.notify(MonitorConfig("later", "unix:/x"), PANIC)
    assert _queued(registry, url) == 20
    assert _dropped(registry, url, "queue_full") == 1
    vms = pusher._deliveries[0]._vms
    assert len(vms["vm0"]) == 1  # the oldest of the VMs holding two gave one up
    assert len(vms["quiet"]) == len(vms["late"]) == len(vms["later"]) == 1


def test_a_batch_takes_the_vms_in_turn(registry, pushers) -> None:
    with FakeAlertmanager() as am:
        pusher = _flooding_pusher(pushers, am.url, registry)
        for index in range(100):
            pusher.notify(NOISY, _vnc(f"192.0.2.{index}"))
        pusher.notify(QUIET, PANIC)  # queued after 100 alerts of another VM
        pusher.start()
        wait_for(lambda: len(am.alerts) == 101)
    first_batch = am.alerts[: push.MAX_BATCH]
    assert any(a["labels"]["vm"] == "quiet" for a in first_batch)


def test_drops_are_logged_at_most_once_per_interval_with_their_counts(
    registry, pushers, monkeypatch, caplog
) -> None:
    monkeypatch.setattr(push, "DROP_LOG_INTERVAL", 0.5)
    caplog.set_level(logging.WARNING, logger=push.__name__)
    with FakeAlertmanager(delay=0.1) as am:
        pusher = _flooding_pusher(pushers, am.url, registry, queue_size=10)  # a share of 1
        pusher.start()
        started = time.monotonic()
        index = 0
        while time.monotonic() - started < 1.5 and index < 100_000:
            for _ in range(100):  # about 10,000 a second, each from a new address
                index += 1
                pusher.notify(NOISY, _vnc(f"10.{index // 65536 % 256}.{index // 256 % 256}."
                                          f"{index % 256}"))  # fmt: skip
            time.sleep(0.01)
        dropped = _dropped(registry, am.url, "vm_share")
        assert dropped > 0

        def logged() -> int:
            counts = [re.search(r"vm_share (\d+)", r.getMessage()) for r in caplog.records]
            return sum(int(m.group(1)) for m in counts if m)

        wait_for(lambda: logged() == dropped, timeout=5)  # the last line, once the flood ends
    lines = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert 2 <= len(lines) <= 1.5 / 0.5 + 2, lines
    assert lines[0].startswith(f"alertmanager {am.url}: ")
    assert "most evicted from VM noisy" in lines[0]


def test_a_flooding_vm_does_not_keep_another_vms_panics_from_a_slow_alertmanager(
    registry, pushers
) -> None:
    """Issue 23's D6 (attack A1): one VM sends about 10,000 VNC_CONNECTED a second, half from
    one client address, half each from a new one (more than the queue drains); another VM
    panics 6 times; Alertmanager takes 50 ms per POST. Every panic arrives, the one client's
    flood as a few alerts that count it, and the new addresses beyond the VM's share are
    dropped (``vm_share``), never the other VM's alerts."""
    with FakeAlertmanager(delay=0.05) as am:
        pusher = _flooding_pusher(pushers, am.url, registry)
        pusher.start()
        stop = threading.Event()
        sent = [0]

        def flood() -> None:
            while not stop.is_set() and sent[0] < 200_000:
                for _ in range(100):
                    sent[0] += 1
                    n = sent[0]  # every other event from a new address (about 5,000/s)
                    host = (
                        "203.0.113.9"
                        if n % 2
                        else f"10.{n >> 17 & 255}.{n >> 9 & 255}.{n >> 1 & 255}"
                    )
                    pusher.notify(NOISY, _vnc(host, 40000 + sent[0] % 20000))
                time.sleep(0.01)

        flooder = threading.Thread(target=flood, daemon=True)
        flooder.start()
        try:
            for _ in range(6):
                time.sleep(0.3)
                pusher.notify(QUIET, PANIC)
            wait_for(lambda: am.events("quiet", "GUEST_PANICKED") == 6, timeout=20)
        finally:
            stop.set()
            flooder.join(5)
        assert sent[0] > 10_000
        flood_alerts = [a for a in am.received("noisy")
                        if a["annotations"]["client_host"] == "203.0.113.9"]  # fmt: skip
        assert max(int(a["annotations"]["events"]) for a in flood_alerts) > 1
        assert _dropped(registry, am.url, "vm_share") > 0  # the new addresses beyond the share
        assert _dropped(registry, am.url, "queue_full") == 0
        text = prometheus_client.generate_latest(registry).decode()
        for reason in push.DROP_REASONS:
            assert f'alertmanager="{am.url}",reason="{reason}"' in text


# -- bounded answers and a deadline per POST (issue 23, D9) ---------------------------------------


def test_a_huge_error_answer_is_read_only_in_part(registry, pushers, monkeypatch, caplog) -> None:
    """Attack A3: Alertmanager answers 500 with 200 MB (generated as it is sent)."""
    monkeypatch.setattr(push, "MAX_ATTEMPTS", 1)
    with FakeAlertmanager("huge", size=200 * 2**20) as am:
        started = time.monotonic()
        _pusher(pushers, am.url, registry=registry).notify(WEB, VNC_CONNECTED)
        wait_for(lambda: _dropped(registry, am.url, "failed") == 1, timeout=20)
        elapsed = time.monotonic() - started
    assert elapsed < 10  # generous: reading only the start takes milliseconds
    assert _value(registry, "qmp_exporter_alert_errors_total", alertmanager=am.url) == 1
    # What the kernel's socket buffers took before the exporter closed the connection.
    assert am.bytes_written < 64 * 2**20
    failures = [r.getMessage() for r in caplog.records if "HTTP 500" in r.getMessage()]
    assert failures and all(len(line) < 400 for line in failures)


def test_the_session_reads_at_most_max_answer_bytes_of_any_answer() -> None:
    with FakeAlertmanager("huge", size=2**20) as am, push.bounded_session() as session:
        response = session.post(am.url + push.ALERTS_PATH, json=[], stream=True, timeout=5)
        assert response.status_code == 500
        assert len(response.content) == bounded_http.MAX_ANSWER_BYTES


@pytest.mark.parametrize("mode", ["trickle_body", "trickle_headers"])
def test_a_trickled_answer_is_cut_at_the_deadline(
    mode: str, registry, pushers, monkeypatch
) -> None:
    """Attack A4: one byte every 2 s, while the read timeout (5 s) is per read: only the
    deadline (1 s here) ends the POST."""
    monkeypatch.setattr(push, "MAX_ATTEMPTS", 1)
    with FakeAlertmanager(mode, delay=2.0) as am:
        pusher = _pusher(pushers, am.url, registry=registry, timeout=5.0, deadline=1.0)
        started = time.monotonic()
        pusher.notify(WEB, VNC_CONNECTED)
        wait_for(lambda: _dropped(registry, am.url, "failed") == 1, timeout=15)
        assert time.monotonic() - started < 5  # generous: the deadline is 1 s
        assert _value(registry, "qmp_exporter_alert_errors_total", alertmanager=am.url) == 1
        assert am.bytes_written <= 3
        pusher.notify(WEB, STOP)  # the sender moved on: the next alert is tried
        pusher.notify(MonitorConfig("db", "unix:/db"), VNC_CONNECTED)
        wait_for(lambda: am.posts == 2, timeout=15)


def test_close_cuts_a_post_short(registry, pushers) -> None:
    with FakeAlertmanager("trickle_headers", delay=2.0) as am:
        pusher = _pusher(pushers, am.url, registry=registry, deadline=60.0)
        pusher.notify(WEB, VNC_CONNECTED)
        wait_for(lambda: am.posts == 1)
        started = time.monotonic()
        pusher.close(timeout=5.0)
        assert time.monotonic() - started < 2.5
        assert not pusher._deliveries[0].thread.is_alive()
