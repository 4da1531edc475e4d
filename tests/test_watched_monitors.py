"""The one rule for the monitors the exporter watches: configured, then discovered, then
extra (the demo's); on a clash of names the first wins."""

from __future__ import annotations

from qmp_exporter.app import watched_monitors
from qmp_exporter.config import MonitorConfig


def test_configured_wins_a_name_clash_over_discovered_and_extra() -> None:
    configured = (MonitorConfig("web", "unix:/etc/web.qmp"),)
    discovered = (MonitorConfig("web", "unix:/run/web.qmp"), MonitorConfig("db", "unix:/run/db"))
    extra = (MonitorConfig("db", "unix:/tmp/demo-db"), MonitorConfig("demo", "unix:/tmp/demo"))
    assert watched_monitors(configured, discovered, extra) == (
        MonitorConfig("web", "unix:/etc/web.qmp"),
        MonitorConfig("db", "unix:/run/db"),
        MonitorConfig("demo", "unix:/tmp/demo"),
    )
