"""The exporter pushes a real VNC login on a real QEMU to a real Alertmanager at once."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.helpers.exporter import ExporterProcess, wait_for
from tests.helpers.ops_stack import alertmanager, alertmanager_alerts
from tests.helpers.qemu import QemuVM
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
