"""Renders the fleet to the text exposition format, caching per VM and per fleet change,
so a scrape costs a join of cached strings, not thousands of metric objects."""

from __future__ import annotations

import gzip
from collections.abc import Iterable

from qmp_exporter.collectors import COLLECTORS
from qmp_exporter.fleet import Fleet
from qmp_exporter.metrics import Family, Labels, format_labels, format_value
from qmp_exporter.poller import MonitorPoller
from qmp_exporter.snapshot import RUN_STATES

UP = Family("qemu_up", "gauge", "1 when the last poll of the VM's QMP monitor succeeded, else 0.")
VERSION_INFO = Family("qemu_version_info", "gauge", "QEMU version of the VM (query-version).")
VM_INFO = Family(
    "qemu_vm_info", "gauge", "VM identity (query-name, query-uuid) and configured labels."
)
RUNNING = Family("qemu_vm_running", "gauge", "1 when the VM's CPUs are running, else 0.")
STATUS = Family(
    "qemu_vm_status", "gauge", "1 for the VM's current RunState (query-status), 0 for the others."
)
VNC_ENABLED = Family("qemu_vnc_enabled", "gauge", "1 when the VM has a VNC server, else 0.")
VNC_CLIENTS = Family("qemu_vnc_clients", "gauge", "VNC clients connected now.")
VNC_INFO = Family("qemu_vnc_info", "gauge", "The VM's VNC server address and authentication.")
EVENTS = Family("qemu_events_total", "counter", "QMP events received from the VM, by event.")
POLL_DURATION = Family(
    "qmp_exporter_poll_duration_seconds", "gauge", "How long the last poll of the VM took."
)
LAST_SUCCESS = Family(
    "qmp_exporter_last_poll_success_timestamp_seconds",
    "gauge",
    "When the last successful poll of the VM ended, in seconds since the epoch.",
)
POLL_ERRORS = Family(
    "qmp_exporter_poll_errors_total",
    "counter",
    "Failed polls of the VM, by reason (connect, busy, timeout, protocol, command).",
)
CONNECTIONS = Family(
    "qmp_exporter_connections_total", "counter", "QMP sessions opened to the VM's monitor."
)
COLLECTOR_SUCCESS = Family(
    "qmp_exporter_collector_success",
    "gauge",
    "1 when the collector succeeded in the last poll of the VM, else 0.",
)
COLLECTOR_DURATION = Family(
    "qmp_exporter_collector_duration_seconds",
    "gauge",
    "How long the collector took in the last poll of the VM.",
)

CORE_FAMILIES: tuple[Family, ...] = (
    UP,
    VERSION_INFO,
    VM_INFO,
    RUNNING,
    STATUS,
    VNC_ENABLED,
    VNC_CLIENTS,
    VNC_INFO,
    EVENTS,
    POLL_DURATION,
    LAST_SUCCESS,
    POLL_ERRORS,
    CONNECTIONS,
    COLLECTOR_SUCCESS,
    COLLECTOR_DURATION,
)


def all_families() -> tuple[Family, ...]:
    """Core families, then every collector's, each name once."""
    seen: dict[str, Family] = {f.name: f for f in CORE_FAMILIES}
    for collector in COLLECTORS.values():
        for family in collector.families:
            seen.setdefault(family.name, family)
    return tuple(seen.values())


def _line(name: str, vm_label: str, labels: Iterable[tuple[str, str]], value: float) -> str:
    rest = format_labels(labels)
    body = f"{vm_label},{rest[1:-1]}" if rest else vm_label
    return f"{name}{{{body}}} {format_value(value)}\n"


def vm_lines(poller: MonitorPoller) -> dict[str, list[str]]:
    """Every line of one VM, by family name."""
    state = poller.state
    vm = format_labels((("vm", poller.name),))[1:-1]
    out: dict[str, list[str]] = {}

    def add(family: Family, labels: Labels, value: float) -> None:
        out.setdefault(family.name, []).append(_line(family.name, vm, labels, value))

    add(UP, (), 1 if state.up else 0)
    if state.up:
        identity = state.identity
        if identity is not None:
            add(VERSION_INFO, (("version", identity.version), ("package", identity.package)), 1)
            add(
                VM_INFO,
                (("name", identity.name), ("uuid", identity.uuid), *poller.monitor.labels),
                1,
            )
        add(RUNNING, (), 1 if state.running else 0)
        for status in RUN_STATES:
            add(STATUS, (("status", status),), 1 if status == state.status else 0)
        if state.status not in RUN_STATES:
            add(STATUS, (("status", state.status),), 1)
        vnc = state.vnc
        if vnc is not None:
            add(VNC_ENABLED, (), 1 if vnc.enabled else 0)
            if vnc.enabled:
                add(VNC_CLIENTS, (), vnc.clients)
                add(
                    VNC_INFO,
                    (
                        ("host", vnc.host),
                        ("service", vnc.service),
                        ("family", vnc.family),
                        ("auth", vnc.auth),
                    ),
                    1,
                )
        for family_name, labels, value in state.samples:
            out.setdefault(family_name, []).append(_line(family_name, vm, labels, value))
        for collector, ok, duration in state.collector_results:
            add(COLLECTOR_SUCCESS, (("collector", collector),), 1 if ok else 0)
            add(COLLECTOR_DURATION, (("collector", collector),), duration)
    for event, count in sorted(poller.event_counts.items()):
        add(EVENTS, (("event", event),), count)
    if state.last_poll:
        add(POLL_DURATION, (), state.poll_duration)
    if state.last_success:
        add(LAST_SUCCESS, (), state.last_success)
    for reason, count in poller.error_counts.items():
        add(POLL_ERRORS, (("reason", reason),), count)
    add(CONNECTIONS, (), poller.connections)
    return out


class FleetRenderer:
    """Exposition bytes for a fleet, re-rendered only for VMs that changed."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self._per_vm: dict[str, tuple[int, MonitorPoller, dict[str, str]]] = {}
        self._generation = -1
        self._body = b""
        self._gzipped: bytes | None = None
        self._families = all_families()

    def body(self) -> bytes:
        """The exposition of every VM (without the exporter's global metrics)."""
        fleet = self.fleet
        if fleet.generation != self._generation:
            self._generation = fleet.generation
            self._body = self._render()
            self._gzipped = None
        return self._body

    def gzipped(self) -> bytes:
        """:meth:`body`, gzip-compressed once per change."""
        body = self.body()
        if self._gzipped is None:
            self._gzipped = gzip.compress(body, compresslevel=5, mtime=0)
        return self._gzipped

    def _render(self) -> bytes:
        pollers = self.fleet.pollers
        cache = self._per_vm
        for name in [n for n in cache if n not in pollers]:
            del cache[name]
        fragments = []
        for name, poller in pollers.items():
            cached = cache.get(name)
            if cached is None or cached[0] != poller.version or cached[1] is not poller:
                lines = vm_lines(poller)
                cached = (poller.version, poller, {k: "".join(v) for k, v in lines.items()})
                cache[name] = cached
            fragments.append(cached[2])
        parts: list[str] = []
        for family in self._families:
            name = family.name
            texts = [f[name] for f in fragments if name in f]
            if texts:
                parts.append(family.header())
                parts.extend(texts)
        known = {f.name for f in self._families}
        unknown = sorted({k for f in fragments for k in f} - known)
        for name in unknown:  # a collector sample without a declared family
            parts.append(f"# TYPE {name} untyped\n")
            parts.extend(f[name] for f in fragments if name in f)
        return "".join(parts).encode()
