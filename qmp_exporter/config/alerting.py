"""``alerting``: which QMP events to push at once to which Alertmanagers, with which
constant labels (:class:`AlertingConfig`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from qmp_exporter.config.alert_labels import alert_labels
from qmp_exporter.config.schema import Errors, excerpt, list_items, mapping

#: Events pushed to Alertmanager when ``alerting.events`` is not given.
DEFAULT_ALERT_EVENTS = ("VNC_CONNECTED", "GUEST_PANICKED")
#: A QMP event name (QEMU's are upper case and well under 64 characters). The bound keeps a
#: lying monitor from putting an endless name into the ``event`` label.
EVENT_NAME = re.compile(r"^[A-Z][A-Z0-9_]{0,63}$")


@dataclass(frozen=True, slots=True)
class AlertingConfig:
    """Where and on which events to push alerts to Alertmanager at once."""

    alertmanagers: tuple[str, ...] = ()
    events: tuple[str, ...] = DEFAULT_ALERT_EVENTS
    #: Constant labels on every pushed alert (e.g. ``hypervisor``), sorted by name.
    labels: tuple[tuple[str, str], ...] = ()


def parse_alerting(value: Any, errors: Errors) -> AlertingConfig:
    """The ``alerting`` mapping (defaults when absent)."""
    raw = mapping(value, "alerting", errors, {"alertmanagers", "events", "labels"})
    urls: list[str] = []
    managers = raw.get("alertmanagers", [])
    for path, url in list_items(managers, "alerting.alertmanagers", errors, "a list of URLs"):
        if not isinstance(url, str) or not re.match(r"^https?://[^/\s]+", url):
            errors.add(path, f"expected an http:// or https:// base URL, got {excerpt(url)}")
        else:
            urls.append(url.rstrip("/"))
    events = raw.get("events", list(DEFAULT_ALERT_EVENTS))
    names: list[str] = []
    for path, name in list_items(events, "alerting.events", errors, "a list of QMP event names"):
        if not isinstance(name, str) or not EVENT_NAME.match(name):
            errors.add(path, f"not a QMP event name: {excerpt(name)}")
        else:
            names.append(name)
    labels = alert_labels(raw.get("labels"), "alerting.labels", errors)
    return AlertingConfig(tuple(urls), tuple(names), labels)
