"""``alerting.labels``: constant labels (e.g. ``hypervisor``) on every pushed alert."""

from __future__ import annotations

from pathlib import Path

import prometheus_client
import pytest

from qmp_exporter.alerting import AlertPusher, build_alert
from qmp_exporter.config import ConfigError, MonitorConfig, parse_config
from qmp_exporter.config.alert_labels import MAX_ALERT_LABEL_VALUE, MAX_ALERT_LABELS
from qmp_exporter.qmp import Event
from tests.helpers.exporter import wait_for
from tests.helpers.ops_stack import alertmanager, alertmanager_alerts

WEB = MonitorConfig("web", "unix:/run/web.qmp", labels=(("site", "lab"),))
VNC = Event("VNC_CONNECTED", {"client": {"host": "192.0.2.7"}})


def alerting(labels: object) -> dict[str, object]:
    return {"alerting": {"alertmanagers": ["http://am:9093"], "labels": labels}}


def test_labels_are_parsed_sorted_and_default_to_none() -> None:
    config = parse_config(alerting({"hypervisor": "hv1", "dc": 7}))
    assert config.alerting.labels == (("dc", "7"), ("hypervisor", "hv1"))
    assert parse_config(alerting(None)).alerting.labels == ()
    assert parse_config({}).alerting.labels == ()


def test_pushed_alert_carries_the_constant_labels_under_its_own() -> None:
    alert = build_alert(WEB, VNC, 0, 60, (("hypervisor", "hv1"), ("site", "ignored")))
    assert alert["labels"] == {
        "alertname": "QemuEventVncConnected",
        "event": "VNC_CONNECTED",
        "hypervisor": "hv1",
        "site": "lab",  # the monitor's own label wins over the constant one
        "vm": "web",
    }


@pytest.mark.prometheus
def test_pusher_adds_the_configured_labels_in_a_real_alertmanager(tmp_path: Path) -> None:
    with alertmanager(tmp_path) as url:
        config = parse_config(
            {"alerting": {"alertmanagers": [url], "labels": {"hypervisor": "hv2"}}}
        ).alerting
        pusher = AlertPusher(config, prometheus_client.CollectorRegistry())
        pusher.start()
        try:
            pusher.notify(WEB, VNC)
            alerts = wait_for(lambda: alertmanager_alerts(url))
        finally:
            pusher.close()
    assert [(a["labels"]["hypervisor"], a["labels"]["vm"]) for a in alerts] == [("hv2", "web")]


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ({"vm": "x"}, r"alerting\.labels\.vm: the pushed alert sets this label itself"),
        ({"alertname": "x"}, r"alerting\.labels\.alertname: the pushed alert sets"),
        ({"event": "x"}, r"alerting\.labels\.event: the pushed alert sets"),
        ({"9lives": "x"}, r"alerting\.labels\.9lives: not a Prometheus label name"),
        ({"__name__": "x"}, r"alerting\.labels\.__name__: not a Prometheus label name"),
        ({"a" * 65: "x"}, r"not a Prometheus label name of at most 64 characters"),
        ({"hv": ""}, r"alerting\.labels\.hv: expected a value of 1 to 256 characters"),
        ({"hv": "x" * (MAX_ALERT_LABEL_VALUE + 1)}, r"alerting\.labels\.hv: expected a value"),
        ({"hv": ["a"]}, r"alerting\.labels\.hv: expected a string value, got list"),
        ({"hv": True}, r"alerting\.labels\.hv: expected a string value"),
        ({f"l{i}": "x" for i in range(MAX_ALERT_LABELS + 1)}, r"alerting\.labels: at most 16"),
        (["hypervisor"], r"alerting\.labels: expected a mapping of label names"),
    ],
)
def test_bad_labels_are_refused_with_their_path(labels: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(alerting(labels))


def test_longest_allowed_label_is_accepted() -> None:
    labels = {f"l{i}": "x" * MAX_ALERT_LABEL_VALUE for i in range(MAX_ALERT_LABELS)}
    assert len(parse_config(alerting(labels)).alerting.labels) == MAX_ALERT_LABELS
