"""The one table of metric families (the exporter's own per-VM families, then each
collector's) and the one order every exposition lists them in (``/metrics`` and ``/probe``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from qmp_exporter.collectors import COLLECTORS
from qmp_exporter.textformat import Family

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
VNC_HANDSHAKE_FAILURES = Family(
    "qemu_vnc_handshake_failures_total",
    "counter",
    "VNC clients that disconnected before completing the handshake (no VNC_INITIALIZED).",
)
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
#: Host-wide families of the process scan (``- processes: true``), rendered with the
#: exporter's own metrics (:mod:`qmp_exporter.exposition.selfmetrics`), not per VM state.
PROCESSES = Family(
    "qemu_processes", "gauge", "QEMU processes on the host, by whether a monitor is watched."
)
PROCESS_INFO = Family(
    "qemu_process_info",
    "gauge",
    "One series per QEMU process found on the host; problem is empty when it is watched.",
)
PROCESSES_SKIPPED = Family(
    "qmp_exporter_processes_skipped_total",
    "counter",
    "Processes named like QEMU that the process scan did not take as VMs, by reason.",
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
    VNC_HANDSHAKE_FAILURES,
    POLL_DURATION,
    LAST_SUCCESS,
    POLL_ERRORS,
    CONNECTIONS,
    COLLECTOR_SUCCESS,
    PROCESSES,
    PROCESS_INFO,
    PROCESSES_SKIPPED,
)

#: Families whose values change on every poll: last in every exposition, so the rest of a
#: ``/metrics`` answer (and its gzip checksum) is reused between scrapes.
PER_POLL_FAMILIES: tuple[Family, ...] = (POLL_DURATION, LAST_SUCCESS)
PER_POLL_NAMES = frozenset(f.name for f in PER_POLL_FAMILIES)


def all_families() -> tuple[Family, ...]:
    """Core families, then every collector's, each name once (the table's order)."""
    seen: dict[str, Family] = {f.name: f for f in CORE_FAMILIES}
    for collector in COLLECTORS.values():
        for family in collector.families:
            seen.setdefault(family.name, family)
    return tuple(seen.values())


#: Every family by name, in the table's order.
FAMILIES: Mapping[str, Family] = {f.name: f for f in all_families()}


def exposition_order(names: Iterable[str]) -> list[str]:
    """``names`` in the order of every exposition: the table's order without the per-poll
    families, then names the table lacks (a collector sample of an undeclared family),
    sorted, then the per-poll families."""
    present = set(names)
    table = [n for n in FAMILIES if n in present and n not in PER_POLL_NAMES]
    unknown = sorted(present - FAMILIES.keys())
    tail = [f.name for f in PER_POLL_FAMILIES if f.name in present]
    return [*table, *unknown, *tail]


def header(name: str) -> str:
    """The ``# HELP`` and ``# TYPE`` lines of a family (``untyped`` for one not in the table)."""
    family = FAMILIES.get(name)
    return family.header() if family is not None else f"# TYPE {name} untyped\n"


def assemble(lines: Mapping[str, str]) -> str:
    """An exposition from each family's lines (by family name): every family with lines,
    in :func:`exposition_order`, under its header."""
    return "".join(header(name) + lines[name] for name in exposition_order(lines) if lines[name])
