"""VNC handshake failures end to end: a real QEMU with ``-vnc ...,password=on``, real RFB
clients doing VNC authentication, the real exporter counting them and pushing each failure to
a real Alertmanager."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers.exporter import ExporterProcess, wait_for
from tests.helpers.ops_stack import alertmanager, alertmanager_alerts
from tests.helpers.qemu import QemuVM, free_vnc_display, qmp_command, tcp_port_listening
from tests.helpers.rfb import RFBAuthError, rfb_handshake, rfb_version_only

#: QEMU keeps only the first 8 characters of a VNC password.
PASSWORD = "s3cret!8"


def test_wrong_password_and_early_leaver_are_two_failures_and_the_right_one_a_login(
    qemu_factory: Callable[..., QemuVM], tmp_path: Path
) -> None:
    display = free_vnc_display()
    port = 5900 + display
    vm = qemu_factory(
        name="console", monitors=2, extra_args=["-vnc", f"127.0.0.1:{display},password=on"]
    )
    wait_for(lambda: tcp_port_listening(port))
    # The test's own monitor sets the password; the exporter never writes to a VM.
    qmp_command(vm.qmp_paths[1], "change-vnc-password", {"password": PASSWORD})

    with alertmanager(tmp_path) as am_url:
        config = {
            "poll_interval": "1s",
            "monitors": [{"name": "console", "address": vm.qmp_address(0)}],
            "alerting": {"alertmanagers": [am_url], "events": ["VNC_HANDSHAKE_FAILED"]},
        }
        with ExporterProcess(config) as exporter:

            def value(metric: str, **labels: str) -> float | None:
                return exporter.value(metric, vm="console", **labels)

            def disconnects() -> float | None:
                return value("qemu_events_total", event="VNC_DISCONNECTED")

            wait_for(lambda: value("qemu_up") == 1)
            assert value("qemu_vnc_info", host="127.0.0.1", service=str(port), family="ipv4",
                         auth="vnc") == 1  # fmt: skip
            assert value("qemu_vnc_handshake_failures_total") == 0

            with pytest.raises(RFBAuthError):
                rfb_handshake(port, password="wrong-pw")
            wait_for(lambda: disconnects() == 1)
            rfb_version_only(port)
            wait_for(lambda: disconnects() == 2)
            with rfb_handshake(port, password=PASSWORD) as session:
                assert session.width > 0
                wait_for(lambda: value("qemu_events_total", event="VNC_INITIALIZED") == 1)
            wait_for(lambda: disconnects() == 3)

            assert value("qemu_vnc_handshake_failures_total") == 2
            assert value("qemu_events_total", event="VNC_CONNECTED") == 3
            assert value("qemu_events_total", event="VNC_INITIALIZED") == 1
            wait_for(
                lambda: exporter.value("qmp_exporter_alerts_sent_total", alertmanager=am_url) == 2
            )
            alerts = alertmanager_alerts(am_url)
            # Both failures have the same labels: one alert to Alertmanager, updated.
            assert [a["labels"]["alertname"] for a in alerts] == ["QemuEventVncHandshakeFailed"]
            labels, annotations = alerts[0]["labels"], alerts[0]["annotations"]
            assert labels["event"] == "VNC_HANDSHAKE_FAILED" and labels["vm"] == "console"
            assert annotations["client_host"] == "127.0.0.1"
            assert annotations["reason"] == "disconnected"
            assert "127.0.0.1" in annotations["summary"]
            assert not any("127.0.0.1" in v for v in labels.values())
