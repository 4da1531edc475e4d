"""The exporter pushes a real VNC login on a real QEMU to a real Alertmanager at once, and
another VM's alerts while one VM's VNC port is flooded."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

from tests.helpers.exporter import ExporterProcess, wait_for
from tests.helpers.fake_alertmanager import FakeAlertmanager
from tests.helpers.ops_stack import alertmanager, alertmanager_alerts
from tests.helpers.qemu import QemuVM, qmp_command
from tests.helpers.rfb import rfb_handshake


def test_vnc_login_reaches_alertmanager(
    qemu_factory: Callable[..., QemuVM], tmp_path: Path
) -> None:
    vm = qemu_factory(name="console", vnc=True)
    with alertmanager(tmp_path) as am_url:
        config = {
            "poll_interval": "1s",
            "monitors": [{"name": "console", "address": vm.qmp_path, "labels": {"team": "ops"}}],
            "alerting": {"alertmanagers": [am_url]},
        }
        with ExporterProcess(config) as exporter:
            wait_for(lambda: exporter.value("qemu_up", vm="console") == 1)
            assert alertmanager_alerts(am_url) == []
            with rfb_handshake(vm.vnc_port):
                alerts = wait_for(lambda: alertmanager_alerts(am_url), timeout=10)
            labels = alerts[0]["labels"]
            assert labels["vm"] == "console"
            assert labels["event"] == "VNC_CONNECTED"
            assert labels["team"] == "ops"
            assert labels["alertname"].startswith("Qemu")
            # The client's address goes to an annotation, never a label.
            assert any("127.0.0.1" in v for v in alerts[0]["annotations"].values())
            assert not any("127.0.0.1" in v for k, v in labels.items())
            wait_for(
                lambda: exporter.value("qmp_exporter_alerts_sent_total", alertmanager=am_url) == 1
            )


def test_a_flooded_vnc_port_does_not_keep_another_vms_alerts_back(
    qemu_factory: Callable[..., QemuVM], tmp_path: Path
) -> None:
    """Issue 23's D6 on a real QEMU (attack A2): 4 loops read the 12-byte RFB banner of one
    VM's VNC port and leave (each one a VNC_CONNECTED, thousands a second); meanwhile the
    other VM is stopped and resumed 3 times; Alertmanager takes 50 ms per POST. Every STOP and
    RESUME arrives; the flood arrives as few alerts whose ``events`` count it."""
    noisy = qemu_factory(name="noisy", vnc=True)
    quiet = qemu_factory(name="quiet", monitors=2)
    with FakeAlertmanager(delay=0.05) as am:
        config = {
            "poll_interval": "1s",
            "monitors": [
                {"name": "noisy", "address": noisy.qmp_address()},
                {"name": "quiet", "address": quiet.qmp_address(0)},
            ],
            "alerting": {"alertmanagers": [am.url], "events": ["VNC_CONNECTED", "STOP", "RESUME"]},
        }
        with ExporterProcess(config) as exporter:
            wait_for(lambda: exporter.value("qemu_up", vm="noisy") == 1)
            wait_for(lambda: exporter.value("qemu_up", vm="quiet") == 1)
            stop = threading.Event()
            connections = [0] * 4

            def flood(index: int) -> None:  # bounded in time and count; loopback only
                deadline = time.monotonic() + 10
                while (
                    not stop.is_set()
                    and time.monotonic() < deadline
                    and connections[index] < 50_000
                ):
                    try:
                        with socket.create_connection(
                            ("127.0.0.1", noisy.vnc_port), timeout=2
                        ) as s:
                            s.recv(12)
                        connections[index] += 1
                    except OSError:
                        time.sleep(0.01)

            flooders = [threading.Thread(target=flood, args=(i,), daemon=True) for i in range(4)]
            started = time.monotonic()
            for thread in flooders:
                thread.start()
            try:
                time.sleep(0.5)
                for _ in range(3):
                    qmp_command(quiet.qmp_paths[1], "stop")
                    time.sleep(0.3)
                    qmp_command(quiet.qmp_paths[1], "cont")
                    time.sleep(0.3)
            finally:
                stop.set()
                for thread in flooders:
                    thread.join(5)
            seconds = time.monotonic() - started
            wait_for(
                lambda: am.events("quiet", "STOP") == 3 and am.events("quiet", "RESUME") == 3,
                timeout=30,
            )
            flood_events = exporter.value("qemu_events_total", vm="noisy", event="VNC_CONNECTED")
            assert flood_events and flood_events > 100
            wait_for(
                lambda: exporter.value("qmp_exporter_alert_queue_length", alertmanager=am.url) == 0,
                timeout=30,
            )
            delivered = am.events("noisy", "VNC_CONNECTED")
            alerts = am.received("noisy")
            assert max(int(a["annotations"]["events"]) for a in alerts) > 1  # coalesced
            assert len(alerts) < delivered <= flood_events
            for reason in ("queue_full", "vm_share"):
                assert (
                    exporter.value(
                        "qmp_exporter_alerts_dropped_total", alertmanager=am.url, reason=reason
                    )
                    == 0
                )
            # a bench figure for the report, never an assertion
            print(f"VNC_CONNECTED {flood_events:.0f} in {seconds:.1f} s "
                  f"({flood_events / seconds:.0f}/s) -> {len(alerts)} alerts")  # fmt: skip
