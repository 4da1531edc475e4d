"""Renders the fleet to the text exposition format, caching per VM and per fleet change,
so a scrape costs a join of cached strings, not thousands of metric objects."""

from __future__ import annotations

import gzip
from collections.abc import Iterable, Iterator

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


#: Families whose values change on every poll. They are kept apart, so that a poll that changes
#: nothing else re-renders (and re-compresses) only these lines, not the whole exposition.
PER_POLL_FAMILIES = frozenset({POLL_DURATION.name, LAST_SUCCESS.name, COLLECTOR_DURATION.name})


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
    """Every line of one VM, by family name (see :func:`split_lines` for the two parts)."""
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


def per_poll_lines(poller: MonitorPoller, vm: str) -> dict[str, str]:
    """The per-poll families of one VM (as :func:`vm_lines` writes them); ``vm`` is the
    VM's formatted label, ``vm="..."``."""
    state = poller.state
    out: dict[str, str] = {}
    if state.up and state.collector_results:
        name = COLLECTOR_DURATION.name
        out[name] = "".join(
            f'{name}{{{vm},collector="{escape_label_value(collector)}"}} {format_value(duration)}\n'
            for collector, _, duration in state.collector_results
        )
    if state.last_poll:
        name = POLL_DURATION.name
        out[name] = f"{name}{{{vm}}} {format_value(state.poll_duration)}\n"
    if state.last_success:
        name = LAST_SUCCESS.name
        out[name] = f"{name}{{{vm}}} {format_value(state.last_success)}\n"
    return out


def split_lines(poller: MonitorPoller) -> tuple[dict[str, str], dict[str, str]]:
    """One VM's text by family: (the rest, the per-poll families)."""
    stable: dict[str, str] = {}
    per_poll: dict[str, str] = {}
    for name, lines in vm_lines(poller).items():
        (per_poll if name in PER_POLL_FAMILIES else stable)[name] = "".join(lines)
    return stable, per_poll


class _VMCache:
    """One VM's rendered text, with the poller versions it was rendered at."""

    __slots__ = ("per_poll", "poller", "stable", "stable_version", "version", "vm")

    def __init__(self, poller: MonitorPoller) -> None:
        self.poller = poller
        self.vm = format_labels((("vm", poller.name),))[1:-1]
        self.version = poller.version
        self.stable_version = poller.stable_version
        self.stable, self.per_poll = split_lines(poller)


class FleetRenderer:
    """Exposition bytes for a fleet, re-rendered only for VMs that changed.

    The body is a sequence of chunks in family order: runs of families that change only when
    a VM's state does, and the per-poll families between them. A poll that only refreshes
    poll times re-renders the per-poll chunks; the others (and their gzip) are kept.
    """

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self._per_vm: dict[str, _VMCache] = {}
        self._generation = -1
        #: (is per-poll, text, gzip member or None until asked)
        self._chunks: list[tuple[bool, bytes, bytes | None]] = []
        self._body: bytes | None = None
        self._gzipped: bytes | None = None
        self._families = all_families()

    def body(self) -> bytes:
        """The exposition of every VM (without the exporter's global metrics)."""
        self._refresh()
        if self._body is None:
            self._body = b"".join(text for _, text, _ in self._chunks if text)
        return self._body

    def gzipped(self) -> bytes:
        """:meth:`body`, gzip-compressed: each chunk once per change of that chunk."""
        self._refresh()
        if self._gzipped is None:
            members = []
            for index, (per_poll, text, member) in enumerate(self._chunks):
                if not text:
                    continue
                if member is None:
                    member = gzip.compress(text, compresslevel=1 if per_poll else 5, mtime=0)
                    self._chunks[index] = (per_poll, text, member)
                members.append(member)
            self._gzipped = b"".join(members)
        return self._gzipped

    def _refresh(self) -> None:
        fleet = self.fleet
        if fleet.generation == self._generation:
            return
        self._generation = fleet.generation
        self._body = self._gzipped = None
        pollers = self.fleet.pollers
        cache = self._per_vm
        stable_changed = not self._chunks
        for name in [n for n in cache if n not in pollers]:
            del cache[name]
            stable_changed = True
        fragments = []
        for name, poller in pollers.items():
            cached = cache.get(name)
            if cached is None or cached.poller is not poller:
                cached = cache[name] = _VMCache(poller)
                stable_changed = True
            elif cached.version != poller.version:
                if cached.stable_version != poller.stable_version:
                    stable_changed = True
                    cached = cache[name] = _VMCache(poller)
                else:
                    cached.per_poll = per_poll_lines(poller, cached.vm)
                    cached.version = poller.version
            fragments.append(cached)
        chunks: list[tuple[bool, bytes, bytes | None]] = []
        run: list[str] = []
        old = iter(c for c in self._chunks if not c[0])
        for family in self._families:
            name = family.name
            if name not in PER_POLL_FAMILIES:
                if stable_changed:
                    texts = [f.stable[name] for f in fragments if name in f.stable]
                    if texts:
                        run.append(family.header())
                        run.extend(texts)
                continue
            chunks.append(self._stable_chunk(run, stable_changed, old))
            run = []
            texts = [f.per_poll[name] for f in fragments if name in f.per_poll]
            if texts:
                chunks.append((True, (family.header() + "".join(texts)).encode(), None))
        if stable_changed:
            known = {f.name for f in self._families}
            unknown = sorted({k for f in fragments for k in f.stable} - known)
            for name in unknown:  # a collector sample without a declared family
                run.append(f"# TYPE {name} untyped\n")
                run.extend(f.stable[name] for f in fragments if name in f.stable)
        chunks.append(self._stable_chunk(run, stable_changed, old))
        self._chunks = chunks  # empty stable runs stay, so their order is kept

    @staticmethod
    def _stable_chunk(
        run: list[str], changed: bool, old: Iterator[tuple[bool, bytes, bytes | None]]
    ) -> tuple[bool, bytes, bytes | None]:
        if changed:
            return (False, "".join(run).encode(), None)
        return next(old, (False, b"", None))
