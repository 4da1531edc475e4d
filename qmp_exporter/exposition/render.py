"""Renders the fleet to the text exposition format, from the fleet's events only.

A scrape costs a join of cached chunks, not thousands of metric objects: each family is kept
as bytes (and a gzip member) and rebuilt only when one of its lines changed; a VM's lines are
re-rendered only when it changed, and only the per-poll lines after a routine poll. VMs are
listed in every family sorted by name. The host figures of QEMU processes nothing watches
(:meth:`FleetRenderer.scanned`, from discovery's scans) are lines of the same families."""

from __future__ import annotations

import zlib
from collections.abc import Iterable

from qmp_exporter.discovery import Scan
from qmp_exporter.exposition.families import (
    COLLECTOR_SUCCESS,
    CONNECTIONS,
    EVENTS,
    LAST_SUCCESS,
    PER_POLL_NAMES,
    POLL_DURATION,
    POLL_ERRORS,
    RUNNING,
    STATUS,
    UP,
    VERSION_INFO,
    VM_INFO,
    VNC_CLIENTS,
    VNC_ENABLED,
    VNC_HANDSHAKE_FAILURES,
    VNC_INFO,
    exposition_order,
    header,
)
from qmp_exporter.exposition.gzipstream import deflate_piece, gzip_stream
from qmp_exporter.fleet.state import RUN_STATES, VMState
from qmp_exporter.host.unwatched import UnwatchedHost
from qmp_exporter.textformat import (
    Family,
    Labels,
    escape_label_value,
    format_labels,
    format_value,
)


def vm_label(name: str) -> str:
    """``vm="NAME"``, escaped."""
    return f'vm="{escape_label_value(name)}"'


def _line(name: str, vm: str, labels: Iterable[tuple[str, str]], value: float) -> str:
    rest = format_labels(labels)
    body = f"{vm},{rest[1:-1]}" if rest else vm
    return f"{name}{{{body}}} {format_value(value)}\n"


def stable_lines(state: VMState, vm: str) -> dict[str, str]:
    """One VM's text by family, except the per-poll families; ``vm`` is :func:`vm_label`."""
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
                (("name", identity.name), ("uuid", identity.uuid), *state.monitor.labels),
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
    counters = state.counters
    for event, count in counters.events:
        add(EVENTS, (("event", event),), count)
    if counters.vnc_handshake_failures is not None:
        add(VNC_HANDSHAKE_FAILURES, (), counters.vnc_handshake_failures)
    for reason, count in counters.poll_errors:
        add(POLL_ERRORS, (("reason", reason),), count)
    add(CONNECTIONS, (), counters.connections)
    return {name: "".join(lines) for name, lines in out.items()}


def per_poll_lines(state: VMState, vm: str) -> dict[str, str]:
    """One VM's per-poll families: how long its last poll took and when it last succeeded."""
    out = {}
    # Six significant digits (a microsecond's precision) for the duration and milliseconds for
    # the time, as Prometheus keeps them: fewer bytes to render and compress on every poll.
    if state.last_poll:
        out[POLL_DURATION.name] = f"{POLL_DURATION.name}{{{vm}}} {state.poll_duration:.6g}\n"
    if state.last_success:
        out[LAST_SUCCESS.name] = f"{LAST_SUCCESS.name}{{{vm}}} {state.last_success:.3f}\n"
    return out


def vm_lines(state: VMState) -> dict[str, str]:
    """Every line of one VM, by family name."""
    vm = vm_label(state.name)
    return {**stable_lines(state, vm), **per_poll_lines(state, vm)}


def host_lines(host: UnwatchedHost) -> dict[str, str]:
    """The lines of an unwatched QEMU process's host figures, by family."""
    vm = vm_label(host.vm)
    out: dict[str, str] = {}
    for family, labels, value in host.samples:
        out[family] = out.get(family, "") + _line(family, vm, labels, value)
    return out


class _Text:
    """The rendered lines, by family, of one ``vm`` label."""

    __slots__ = ("lines", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self.lines: dict[str, str] = {}


class _VMText(_Text):
    """One VM's latest state and rendered lines, by family."""

    __slots__ = ("label", "state")

    def __init__(self, name: str, state: VMState) -> None:
        super().__init__(name)
        self.state = state
        self.label = vm_label(name)


class FleetRenderer:
    """The fleet's exposition as chunks, one per family, each rebuilt only when one of its
    lines changed. A :class:`~qmp_exporter.fleet.hub.FleetListener`: subscribe it to a
    fleet, and it knows only what the fleet tells it. Per-poll lines are rendered as each
    poll lands (two short lines), the rest when a scrape finds the VM changed (rare: a
    state change, an event, an error)."""

    def __init__(self) -> None:
        self._vms: dict[str, _VMText] = {}
        #: The last scan's unwatched QEMU processes' lines by ``vm`` label, and those shown
        #: (never under the name of a VM of the fleet).
        self._unwatched_lines: dict[str, dict[str, str]] = {}
        self._unwatched: dict[str, _Text] = {}
        #: Family -> VM name -> that VM's lines of the family, sorted by VM name.
        self._lines: dict[str, dict[str, str]] = {}
        self._stale: set[str] = set()
        self._dirty: set[str] = set()
        #: Families that gained a VM out of name order.
        self._reorder: set[str] = set()
        self._chunks: dict[str, bytes] = {}
        self._deflated: dict[str, bytes] = {}
        #: Families with a chunk, in exposition order: (stable ones, per-poll ones).
        self._order: tuple[list[str], list[str]] | None = None
        #: CRC-32 and size of the stable families' text, or None after one changed.
        self._stable_sum: tuple[int, int] | None = None
        self._body: list[bytes] | None = None
        #: The last ``extra`` given to :meth:`gzip_chunks`, and its deflated piece.
        self._extra: tuple[bytes, bytes] | None = None

    # -- what the fleet tells ----------------------------------------------------------------

    def added(self, name: str, state: VMState) -> None:
        """A VM joined: rendered at the next scrape (an unwatched process's lines under its
        name go)."""
        self._drop_vm(name)
        self._drop_unwatched(name)
        self._vms[name] = _VMText(name, state)
        self._stale.add(name)

    def removed(self, name: str) -> None:
        """A VM left: its lines go (an unwatched process of that name shows again)."""
        self._drop_vm(name)
        lines = self._unwatched_lines.get(name)
        if lines is not None:
            self._show_unwatched(name, lines)

    def _drop_vm(self, name: str) -> None:
        text = self._vms.pop(name, None)
        if text is None:
            return
        self._stale.discard(name)
        for family in list(text.lines):
            self._set(text, family, None)

    def changed(self, name: str, state: VMState, timing_only: bool) -> None:
        """A VM published a new state: its per-poll lines now, the rest at the next scrape
        unless only the timing changed."""
        text = self._vms.get(name)
        if text is None:
            return
        text.state = state
        if not timing_only:
            self._stale.add(name)
        fresh = per_poll_lines(state, text.label)
        for family in PER_POLL_NAMES:
            self._set(text, family, fresh.get(family))

    # -- what discovery tells ------------------------------------------------------------------

    def scanned(self, scan: Scan) -> None:
        """A new scan: the host figures of the QEMU processes nothing watches replace the
        last ones, as lines of the same families as the VMs' own. One whose ``vm`` is the
        name of a VM of the fleet (or of an earlier one of the scan) is left out: one series
        per VM."""
        fresh: dict[str, dict[str, str]] = {}
        for host in scan.unwatched:
            if host.vm not in fresh:
                fresh[host.vm] = host_lines(host)
        self._unwatched_lines = fresh
        for name in self._unwatched.keys() - fresh.keys():
            self._drop_unwatched(name)
        for name, lines in fresh.items():
            if name not in self._vms:
                self._show_unwatched(name, lines)

    def _show_unwatched(self, name: str, lines: dict[str, str]) -> None:
        text = self._unwatched.get(name)
        if text is None:
            text = self._unwatched[name] = _Text(name)
        for family in text.lines.keys() | lines.keys():
            self._set(text, family, lines.get(family))

    def _drop_unwatched(self, name: str) -> None:
        text = self._unwatched.pop(name, None)
        if text is not None:
            for family in list(text.lines):
                self._set(text, family, None)

    # -- scrapes -----------------------------------------------------------------------------

    def chunks(self) -> list[bytes]:
        """The exposition of every VM, as chunks to send in order."""
        self._refresh()
        if self._body is None:
            stable, tail = self._families()
            self._body = [self._chunks[n] for n in (*stable, *tail)]
        return self._body

    def gzip_chunks(self, extra: bytes = b"") -> list[bytes]:
        """:meth:`chunks` followed by ``extra``, as one gzip stream in chunks; each family is
        compressed once per change of its text."""
        self._refresh()
        stable, tail = self._families()
        if self._stable_sum is None:
            crc = size = 0
            for name in stable:
                crc = zlib.crc32(self._chunks[name], crc)
                size += len(self._chunks[name])
            self._stable_sum = (crc, size)
        crc, size = self._stable_sum
        pieces = [self._deflate(name, 6) for name in stable]
        for name in tail:
            text = self._chunks[name]
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

    def _families(self) -> tuple[list[str], list[str]]:
        if self._order is None:
            names = exposition_order(self._chunks)
            self._order = (
                [n for n in names if n not in PER_POLL_NAMES],
                [n for n in names if n in PER_POLL_NAMES],
            )
        return self._order

    def _deflate(self, name: str, level: int) -> bytes:
        piece = self._deflated.get(name)
        if piece is None:
            piece = self._deflated[name] = deflate_piece(self._chunks[name], level)
        return piece

    # -- keeping up ------------------------------------------------------------------------

    def _set(self, text: _Text, family: str, line: str | None) -> None:
        """Make ``line`` the VM's text of ``family`` (None: it has none)."""
        if text.lines.get(family) == line:
            return
        vm = text.name
        lines = self._lines.get(family)
        if lines is None:
            lines = self._lines[family] = {}
        if line is None:
            del text.lines[family]
            del lines[vm]
        else:
            if vm not in lines and lines and next(reversed(lines)) > vm:
                self._reorder.add(family)
            text.lines[family] = line
            lines[vm] = line
        if family not in self._dirty:
            self._dirty.add(family)
            self._body = None

    def _refresh(self) -> None:
        if self._stale:
            for name in self._stale:
                self._render_vm(self._vms[name])
            self._stale.clear()
        if not self._dirty:
            return
        for name in self._reorder:
            self._lines[name] = dict(sorted(self._lines[name].items()))
        self._reorder.clear()
        for name in self._dirty:
            lines = self._lines.get(name)
            if lines:
                if name not in self._chunks:
                    self._order = None
                # "replace": labels are made valid where they enter; should one slip through,
                # one "?" costs less than a 500 for every VM
                text = header(name) + "".join(lines.values())
                self._chunks[name] = text.encode("utf-8", "replace")
            elif self._chunks.pop(name, None) is not None:
                self._order = None
            self._deflated.pop(name, None)
            if name not in PER_POLL_NAMES:
                self._stable_sum = None
        self._dirty.clear()
        self._body = None

    def _render_vm(self, text: _VMText) -> None:
        fresh = vm_lines(text.state)
        for name in text.lines.keys() | fresh.keys():
            self._set(text, name, fresh.get(name))
