"""Renders the fleet to the text exposition format.

A scrape costs a join of cached chunks, not thousands of metric objects: each family is kept
as bytes (and a gzip member) and rebuilt only when one of its lines changed; a VM's lines are
re-rendered only when it changed, and only the per-poll lines after a routine poll."""

from __future__ import annotations

import zlib
from collections.abc import Iterable

from qmp_exporter.collectors import COLLECTORS
from qmp_exporter.exposition.gzipstream import deflate_piece, gzip_stream
from qmp_exporter.exposition.textformat import (
    Family,
    Labels,
    escape_label_value,
    format_labels,
    format_value,
)
from qmp_exporter.polling.fleet import Fleet
from qmp_exporter.polling.poller import MonitorPoller
from qmp_exporter.polling.state import RUN_STATES

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
    # Six significant digits (a microsecond's precision) for the duration and milliseconds for
    # the time, as Prometheus keeps them: fewer bytes to render and compress on every poll.
    if state.last_poll:
        out[POLL_DURATION.name] = (
            f"qmp_exporter_poll_duration_seconds{{{vm}}} {state.poll_duration:.6g}\n"
        )
    if state.last_success:
        out[LAST_SUCCESS.name] = (
            f"qmp_exporter_last_poll_success_timestamp_seconds{{{vm}}} {state.last_success:.3f}\n"
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
        self.lines: dict[str, str] = {}


class FleetRenderer:
    """The fleet's exposition as chunks, one per family, each rebuilt only when one of its
    lines changed. Per-poll lines are rendered as each poll lands (two short lines), the
    rest when a scrape finds the VM changed (rare: a state change, an event, an error)."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        families = all_families()
        # Per-poll families last: the stream's checksum up to them is kept between scrapes.
        self._order = [f.name for f in families if f.name not in PER_POLL_FAMILIES]
        self._tail = [f.name for f in families if f.name in PER_POLL_FAMILIES]
        self._headers = {f.name: f.header() for f in families}
        self._vms: dict[str, _VMText] = {}
        #: Family -> VM name -> that VM's lines of the family, in the fleet's order.
        self._lines: dict[str, dict[str, str]] = {}
        self._membership = -1
        self._stale: set[str] = set()
        self._dirty: set[str] = set()
        #: Families that gained a VM out of the fleet's order.
        self._reorder: set[str] = set()
        self._chunks: dict[str, bytes] = {}
        self._deflated: dict[str, bytes] = {}
        #: CRC-32 and size of the stable families' text, or None after one changed.
        self._stable_sum: tuple[int, int] | None = None
        self._body: list[bytes] | None = None
        #: The last ``extra`` given to :meth:`gzip_chunks`, and its deflated piece.
        self._extra: tuple[bytes, bytes] | None = None
        fleet.listeners.append(self._vm_changed)

    def chunks(self) -> list[bytes]:
        """The exposition of every VM, as chunks to send in order."""
        self._refresh()
        if self._body is None:
            names = (*self._order, *self._tail)
            self._body = [c for c in (self._chunks.get(n) for n in names) if c]
        return self._body

    def body(self) -> bytes:
        """The exposition of every VM (without the exporter's global metrics)."""
        return b"".join(self.chunks())

    def gzip_chunks(self, extra: bytes = b"") -> list[bytes]:
        """:meth:`chunks` followed by ``extra``, as one gzip stream in chunks; each family is
        compressed once per change of its text."""
        self._refresh()
        stable = [n for n in self._order if self._chunks.get(n)]
        if self._stable_sum is None:
            crc = size = 0
            for name in stable:
                crc = zlib.crc32(self._chunks[name], crc)
                size += len(self._chunks[name])
            self._stable_sum = (crc, size)
        crc, size = self._stable_sum
        pieces = [self._deflate(name, 6) for name in stable]
        for name in self._tail:
            text = self._chunks.get(name)
            if text:
                crc = zlib.crc32(text, crc)
                size += len(text)
                pieces.append(self._deflate(name, 1))
        if extra:
            crc = zlib.crc32(extra, crc)
            size += len(extra)
            if self._extra is None or self._extra[0] is not extra:
                self._extra = (extra, deflate_piece(extra, 6))
            pieces.append(self._extra[1])
        return gzip_stream(pieces, crc, size)

    def gzipped(self, extra: bytes = b"") -> bytes:
        """:meth:`body` and ``extra``, gzip-compressed."""
        return b"".join(self.gzip_chunks(extra))

    def _deflate(self, name: str, level: int) -> bytes:
        piece = self._deflated.get(name)
        if piece is None:
            piece = self._deflated[name] = deflate_piece(self._chunks[name], level)
        return piece

    # -- keeping up ------------------------------------------------------------------------

    def _vm_changed(self, poller: MonitorPoller, stable: bool) -> None:
        text = self._vms.get(poller.name)
        if text is None or text.poller is not poller:
            return  # a new VM: taken in at the next refresh
        if stable:
            self._stale.add(poller.name)
        fresh = per_poll_lines(poller, text.label)
        for name in self._tail:
            self._set(text, name, fresh.get(name))

    def _set(self, text: _VMText, family: str, line: str | None) -> None:
        """Make ``line`` the VM's text of ``family`` (None: it has none)."""
        if text.lines.get(family) == line:
            return
        vm = text.poller.name
        lines = self._lines.get(family)
        if lines is None:
            lines = self._lines[family] = {}
            if family not in self._headers and family not in self._order:
                self._order.append(family)  # a collector sample without a declared family
        if line is None:
            del text.lines[family]
            del lines[vm]
        else:
            if vm not in lines and lines and next(reversed(self._vms)) != vm:
                self._reorder.add(family)
            text.lines[family] = line
            lines[vm] = line
        if family not in self._dirty:
            self._dirty.add(family)
            self._body = None

    def _refresh(self) -> None:
        if self.fleet.membership != self._membership:
            self._membership = self.fleet.membership
            self._resync()
        if self._stale:
            for name in self._stale:
                text = self._vms.get(name)
                if text is not None:
                    self._render_vm(text)
            self._stale.clear()
        if not self._dirty:
            return
        for name in self._reorder:
            old = self._lines[name]
            self._lines[name] = {vm: old[vm] for vm in self._vms if vm in old}
        self._reorder.clear()
        for name in self._dirty:
            lines = self._lines.get(name)
            if lines:
                header = self._headers.get(name) or f"# TYPE {name} untyped\n"
                self._chunks[name] = (header + "".join(lines.values())).encode()
            else:
                self._chunks.pop(name, None)
            self._deflated.pop(name, None)
            if name not in PER_POLL_FAMILIES:
                self._stable_sum = None
        self._dirty.clear()
        self._body = None

    def _render_vm(self, text: _VMText) -> None:
        fresh = vm_lines(text.poller)
        for name in text.lines.keys() | fresh.keys():
            self._set(text, name, fresh.get(name))

    def _resync(self) -> None:
        """Follow VMs added to or removed from the fleet (and pollers restarted)."""
        old = self._vms
        self._vms = {}
        for name, poller in self.fleet.pollers.items():
            text = old.pop(name, None)
            if text is not None and text.poller is not poller:
                old[name] = text  # replaced: drop the old lines below
                text = None
            self._vms[name] = text or _VMText(poller)
        for gone in old.values():
            for family in list(gone.lines):
                self._set(gone, family, None)
        for text in self._vms.values():
            self._render_vm(text)  # a restarted poller may have new labels
        self._reorder.update(self._lines)  # new VMs take their place in the fleet's order
