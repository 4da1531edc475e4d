"""Renders the fleet to the text exposition format.

A scrape costs a join of cached chunks, not thousands of metric objects: each family is kept
as bytes (and a gzip member) and rebuilt only when one of its lines changed; a VM's lines are
re-rendered only when it changed, and only the per-poll lines after a routine poll."""

from __future__ import annotations

import gzip
from collections.abc import Iterable

from qmp_exporter.collectors import COLLECTORS
from qmp_exporter.fleet import Fleet
from qmp_exporter.metrics import (
    Family,
    Labels,
    escape_label_value,
    format_labels,
    format_value,
)
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
)

#: Families whose values change on every poll; rendered on each poll, compressed lightly.
PER_POLL_FAMILIES = frozenset({POLL_DURATION.name, LAST_SUCCESS.name})


def all_families() -> tuple[Family, ...]:
    """Core families, then every collector's, each name once."""
    seen: dict[str, Family] = {f.name: f for f in CORE_FAMILIES}
    for collector in COLLECTORS.values():
        for family in collector.families:
            seen.setdefault(family.name, family)
    return tuple(seen.values())


def vm_label(name: str) -> str:
    """``vm="NAME"``, escaped."""
    return f'vm="{escape_label_value(name)}"'


def _line(name: str, vm: str, labels: Iterable[tuple[str, str]], value: float) -> str:
    rest = format_labels(labels)
    body = f"{vm},{rest[1:-1]}" if rest else vm
    return f"{name}{{{body}}} {format_value(value)}\n"


def stable_lines(poller: MonitorPoller, vm: str) -> dict[str, str]:
    """One VM's text by family, except the per-poll families; ``vm`` is :func:`vm_label`."""
    state = poller.state
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
        for collector, ok in state.collector_results:
            add(COLLECTOR_SUCCESS, (("collector", collector),), 1 if ok else 0)
    for event, count in sorted(poller.event_counts.items()):
        add(EVENTS, (("event", event),), count)
    for reason, count in poller.error_counts.items():
        add(POLL_ERRORS, (("reason", reason),), count)
    add(CONNECTIONS, (), poller.connections)
    return {name: "".join(lines) for name, lines in out.items()}


def per_poll_lines(poller: MonitorPoller, vm: str) -> dict[str, str]:
    """One VM's per-poll families: how long its last poll took and when it last succeeded."""
    state = poller.state
    out = {}
    if state.last_poll:
        out[POLL_DURATION.name] = (
            f"qmp_exporter_poll_duration_seconds{{{vm}}} {format_value(state.poll_duration)}\n"
        )
    if state.last_success:
        out[LAST_SUCCESS.name] = (
            f"qmp_exporter_last_poll_success_timestamp_seconds{{{vm}}} "
            f"{format_value(state.last_success)}\n"
        )
    return out


def vm_lines(poller: MonitorPoller) -> dict[str, str]:
    """Every line of one VM, by family name."""
    vm = vm_label(poller.name)
    return {**stable_lines(poller, vm), **per_poll_lines(poller, vm)}


class _VMText:
    """One VM's rendered lines, by family."""

    __slots__ = ("label", "lines", "poller")

    def __init__(self, poller: MonitorPoller) -> None:
        self.poller = poller
        self.label = vm_label(poller.name)
        self.lines = vm_lines(poller)


class FleetRenderer:
    """The fleet's exposition as chunks, one per family, each rebuilt only when one of its
    lines changed. Per-poll lines are rendered as each poll lands (two short lines), the
    rest when a scrape finds the VM changed (rare: a state change, an event, an error)."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        families = all_families()
        self._order = [f.name for f in families]
        self._headers = {f.name: f.header() for f in families}
        self._vms: dict[str, _VMText] = {}
        self._membership = -1
        self._stale: set[str] = set()
        self._dirty: set[str] = set(self._order)
        self._chunks: dict[str, bytes] = {}
        self._members: dict[str, bytes] = {}
        self._body: list[bytes] | None = None
        self._gzipped: list[bytes] | None = None
        fleet.listeners.append(self._vm_changed)

    def chunks(self) -> list[bytes]:
        """The exposition of every VM, as chunks to send in order."""
        self._refresh()
        if self._body is None:
            self._body = [c for c in (self._chunks.get(n) for n in self._order) if c]
        return self._body

    def body(self) -> bytes:
        """The exposition of every VM (without the exporter's global metrics)."""
        return b"".join(self.chunks())

    def gzip_chunks(self) -> list[bytes]:
        """:meth:`chunks` as gzip members (a valid gzip stream when joined), each compressed
        once per change of its family."""
        self._refresh()
        if self._gzipped is None:
            members = []
            for name in self._order:
                text = self._chunks.get(name)
                if not text:
                    continue
                member = self._members.get(name)
                if member is None:
                    level = 1 if name in PER_POLL_FAMILIES else 6
                    member = self._members[name] = gzip.compress(text, level, mtime=0)
                members.append(member)
            self._gzipped = members
        return self._gzipped

    def gzipped(self) -> bytes:
        """:meth:`body`, gzip-compressed."""
        return b"".join(self.gzip_chunks())

    # -- keeping up ------------------------------------------------------------------------

    def _vm_changed(self, poller: MonitorPoller, stable: bool) -> None:
        text = self._vms.get(poller.name)
        if text is None or text.poller is not poller:
            return  # a new VM: taken in at the next refresh
        if stable:
            self._stale.add(poller.name)
        fresh = per_poll_lines(poller, text.label)
        lines = text.lines
        for name in PER_POLL_FAMILIES:
            new = fresh.get(name)
            if lines.get(name) != new:
                if new is None:
                    del lines[name]
                else:
                    lines[name] = new
                self._touch(name)

    def _touch(self, family: str) -> None:
        if family not in self._dirty:
            self._dirty.add(family)
            self._body = self._gzipped = None

    def _refresh(self) -> None:
        fleet = self.fleet
        if fleet.membership != self._membership:
            self._membership = fleet.membership
            self._resync()
        if self._stale:
            for name in self._stale:
                text = self._vms.get(name)
                if text is not None:
                    self._replace_lines(text, vm_lines(text.poller))
            self._stale.clear()
        if not self._dirty:
            return
        vms = self._vms.values()
        for name in self._dirty:
            texts = [t.lines[name] for t in vms if name in t.lines]
            if texts:
                header = self._headers.get(name) or f"# TYPE {name} untyped\n"
                self._chunks[name] = (header + "".join(texts)).encode()
            else:
                self._chunks.pop(name, None)
            self._members.pop(name, None)
        self._dirty.clear()
        self._body = self._gzipped = None

    def _resync(self) -> None:
        """Follow VMs added to or removed from the fleet."""
        old = self._vms
        self._vms = {}
        for name, poller in self.fleet.pollers.items():
            text = old.pop(name, None)
            if text is None or text.poller is not poller:
                text = _VMText(poller)
                for family in text.lines:
                    self._touch_known(family)
            else:
                self._stale.add(name)  # a restarted poller may have new labels
            self._vms[name] = text
        for gone in old.values():
            for family in gone.lines:
                self._touch(family)
        # A VM taken in out of order changes the order of lines in every family it has.
        self._dirty.update(n for t in self._vms.values() for n in t.lines)
        self._body = self._gzipped = None

    def _replace_lines(self, text: _VMText, lines: dict[str, str]) -> None:
        old = text.lines
        for name in old.keys() | lines.keys():
            if old.get(name) != lines.get(name):
                self._touch_known(name)
        text.lines = lines

    def _touch_known(self, family: str) -> None:
        if family not in self._headers and family not in self._order:
            self._order.append(family)  # a collector sample without a declared family
        self._touch(family)
