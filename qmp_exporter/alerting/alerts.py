"""Alerts built from QMP events (Alertmanager API v2): labels, a summary, the event's data as
annotations, bounded."""

from __future__ import annotations

import collections
from datetime import UTC, datetime
from typing import Any

from qmp_exporter.config import MonitorConfig
from qmp_exporter.polling.consoles import HANDSHAKE_FAILED
from qmp_exporter.qmp import Event

#: Bounds on what one event's data adds to an alert's annotations.
MAX_ANNOTATIONS = 32
MAX_ANNOTATION_LENGTH = 512


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


def client_host(data: dict[str, Any]) -> str | None:
    """A console event's client address (``client.host``), part of the coalescing key."""
    client = data.get("client")
    host = client.get("host") if isinstance(client, dict) else None
    return None if host is None else str(host)[:MAX_ANNOTATION_LENGTH]
