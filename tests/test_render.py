"""The ``/metrics`` renderer, driven through the fleet's listener API (``added``,
``changed``, ``removed``) with a two-VM fleet and the expected exposition written out."""

from __future__ import annotations

import dataclasses
import zlib

from qmp_exporter.config import MonitorConfig
from qmp_exporter.discovery import Scan
from qmp_exporter.exposition.render import FleetRenderer
from qmp_exporter.fleet.state import Counters, Identity, VMState
from qmp_exporter.host.unwatched import UnwatchedHost

NO_ERRORS = (("connect", 0), ("busy", 0), ("timeout", 0), ("protocol", 0), ("command", 0))
#: Up and running, one collector, one event counter, one configured label.
A = VMState(
    MonitorConfig("a", "unix:/run/a.qmp", labels=(("team", "ops"),)),
    up=True,
    identity=Identity("9.2.0", "v9.2.0", "guest-a", "uuid-a"),
    status="running",
    running=True,
    samples=(("qemu_memory_base_bytes", (), 1073741824),),
    collector_results=(("memory", True),),
    last_success=1700000000.5,
    last_poll=1700000000.5,
    poll_duration=0.002,
    counters=Counters(events=(("SHUTDOWN", 0),), poll_errors=NO_ERRORS, connections=1),
)
#: Never reached: one connect error.
B = VMState(
    MonitorConfig("b", "unix:/run/b.qmp"),
    error_reason="connect",
    error="connection refused",
    last_poll=1700000000.25,
    poll_duration=0.001,
    counters=Counters(poll_errors=(("connect", 1), *NO_ERRORS[1:])),
)

#: The exposition of A and B, whichever was added first: VMs sorted by name.
EXPOSITION = """\
# HELP qemu_up 1 when the last poll of the VM's QMP monitor succeeded, else 0.
# TYPE qemu_up gauge
qemu_up{vm="a"} 1
qemu_up{vm="b"} 0
# HELP qemu_version_info QEMU version of the VM (query-version).
# TYPE qemu_version_info gauge
qemu_version_info{vm="a",version="9.2.0",package="v9.2.0"} 1
# HELP qemu_vm_info VM identity (query-name, query-uuid) and configured labels.
# TYPE qemu_vm_info gauge
qemu_vm_info{vm="a",name="guest-a",uuid="uuid-a",team="ops"} 1
# HELP qemu_vm_running 1 when the VM's CPUs are running, else 0.
# TYPE qemu_vm_running gauge
qemu_vm_running{vm="a"} 1
# HELP qemu_vm_status 1 for the VM's current RunState (query-status), 0 for the others.
# TYPE qemu_vm_status gauge
qemu_vm_status{vm="a",status="debug"} 0
qemu_vm_status{vm="a",status="inmigrate"} 0
qemu_vm_status{vm="a",status="internal-error"} 0
qemu_vm_status{vm="a",status="io-error"} 0
qemu_vm_status{vm="a",status="paused"} 0
qemu_vm_status{vm="a",status="postmigrate"} 0
qemu_vm_status{vm="a",status="prelaunch"} 0
qemu_vm_status{vm="a",status="finish-migrate"} 0
qemu_vm_status{vm="a",status="restore-vm"} 0
qemu_vm_status{vm="a",status="running"} 1
qemu_vm_status{vm="a",status="save-vm"} 0
qemu_vm_status{vm="a",status="shutdown"} 0
qemu_vm_status{vm="a",status="suspended"} 0
qemu_vm_status{vm="a",status="watchdog"} 0
qemu_vm_status{vm="a",status="guest-panicked"} 0
qemu_vm_status{vm="a",status="colo"} 0
# HELP qemu_events_total QMP events received from the VM, by event.
# TYPE qemu_events_total counter
qemu_events_total{vm="a",event="SHUTDOWN"} 0
# HELP qmp_exporter_poll_errors_total Failed polls of the VM, by reason (connect, busy, timeout, protocol, command).
# TYPE qmp_exporter_poll_errors_total counter
qmp_exporter_poll_errors_total{vm="a",reason="connect"} 0
qmp_exporter_poll_errors_total{vm="a",reason="busy"} 0
qmp_exporter_poll_errors_total{vm="a",reason="timeout"} 0
qmp_exporter_poll_errors_total{vm="a",reason="protocol"} 0
qmp_exporter_poll_errors_total{vm="a",reason="command"} 0
qmp_exporter_poll_errors_total{vm="b",reason="connect"} 1
qmp_exporter_poll_errors_total{vm="b",reason="busy"} 0
qmp_exporter_poll_errors_total{vm="b",reason="timeout"} 0
qmp_exporter_poll_errors_total{vm="b",reason="protocol"} 0
qmp_exporter_poll_errors_total{vm="b",reason="command"} 0
# HELP qmp_exporter_connections_total QMP sessions opened to the VM's monitor.
# TYPE qmp_exporter_connections_total counter
qmp_exporter_connections_total{vm="a"} 1
qmp_exporter_connections_total{vm="b"} 0
# HELP qmp_exporter_collector_success 1 when the collector succeeded in the last poll of the VM, else 0.
# TYPE qmp_exporter_collector_success gauge
qmp_exporter_collector_success{vm="a",collector="memory"} 1
# HELP qemu_memory_base_bytes RAM given to the guest at start.
# TYPE qemu_memory_base_bytes gauge
qemu_memory_base_bytes{vm="a"} 1073741824
# HELP qmp_exporter_poll_duration_seconds How long the last poll of the VM took.
# TYPE qmp_exporter_poll_duration_seconds gauge
qmp_exporter_poll_duration_seconds{vm="a"} 0.002
qmp_exporter_poll_duration_seconds{vm="b"} 0.001
# HELP qmp_exporter_last_poll_success_timestamp_seconds When the last successful poll of the VM ended, in seconds since the epoch.
# TYPE qmp_exporter_last_poll_success_timestamp_seconds gauge
qmp_exporter_last_poll_success_timestamp_seconds{vm="a"} 1700000000.500
"""  # noqa: E501


def two_vms() -> FleetRenderer:
    """A renderer that has heard of B, then A."""
    renderer = FleetRenderer()
    renderer.added("b", B)
    renderer.added("a", A)
    return renderer


def served(renderer: FleetRenderer) -> str:
    """The exposition as ``/metrics`` sends it: the renderer's chunks, in order."""
    return b"".join(renderer.chunks()).decode()


def edited(text: str, *changes: tuple[str, str]) -> str:
    """``text`` with each (old line, new line) replaced; every old line must be there."""
    for old, new in changes:
        assert text.count(old + "\n") == 1, old
        text = text.replace(old + "\n", new + "\n" if new else "")
    return text


def test_vms_sorted_by_name_whatever_the_order_they_came_in() -> None:
    assert served(two_vms()) == EXPOSITION


def test_timing_only_poll_reuses_stable_chunks() -> None:
    renderer = two_vms()
    before = renderer.chunks()
    polled = dataclasses.replace(
        A, last_poll=1700000005.5, last_success=1700000005.5, poll_duration=0.003
    )
    renderer.changed("a", polled, timing_only=True)
    after = renderer.chunks()
    assert served(renderer) == edited(
        EXPOSITION,
        (
            'qmp_exporter_poll_duration_seconds{vm="a"} 0.002',
            'qmp_exporter_poll_duration_seconds{vm="a"} 0.003',
        ),
        (
            'qmp_exporter_last_poll_success_timestamp_seconds{vm="a"} 1700000000.500',
            'qmp_exporter_last_poll_success_timestamp_seconds{vm="a"} 1700000005.500',
        ),
    )
    assert len(after) == len(before)
    assert all(new is old for new, old in zip(after[:-2], before[:-2], strict=True))
    assert after[-2] != before[-2] and after[-1] != before[-1]


def test_state_change_rerenders_its_family() -> None:
    renderer = two_vms()
    renderer.chunks()
    renderer.changed("a", dataclasses.replace(A, status="paused", running=False), False)
    assert served(renderer) == edited(
        EXPOSITION,
        ('qemu_vm_running{vm="a"} 1', 'qemu_vm_running{vm="a"} 0'),
        ('qemu_vm_status{vm="a",status="paused"} 0', 'qemu_vm_status{vm="a",status="paused"} 1'),
        ('qemu_vm_status{vm="a",status="running"} 1', 'qemu_vm_status{vm="a",status="running"} 0'),
    )


def test_event_adds_counter_line() -> None:
    renderer = two_vms()
    renderer.chunks()
    counters = dataclasses.replace(A.counters, events=(("SHUTDOWN", 0), ("VNC_CONNECTED", 1)))
    renderer.changed("a", dataclasses.replace(A, counters=counters), False)
    assert served(renderer) == edited(
        EXPOSITION,
        (
            'qemu_events_total{vm="a",event="SHUTDOWN"} 0',
            'qemu_events_total{vm="a",event="SHUTDOWN"} 0\n'
            'qemu_events_total{vm="a",event="VNC_CONNECTED"} 1',
        ),
    )


def test_removed_vm_disappears() -> None:
    renderer = two_vms()
    renderer.chunks()
    renderer.removed("b")
    lines_of_b = [line for line in EXPOSITION.splitlines() if 'vm="b"' in line]
    assert len(lines_of_b) == 8
    assert served(renderer) == edited(EXPOSITION, *((line, "") for line in lines_of_b))


def test_gzip_is_one_member() -> None:
    renderer = two_vms()
    for extra in (b"", b"# own metrics\n"):
        stream = zlib.decompressobj(31)  # gzip; stops at the end of the first member
        gzipped = b"".join(renderer.gzip_chunks(extra))
        assert stream.decompress(gzipped) == EXPOSITION.encode() + extra
        assert stream.eof and stream.unused_data == b""


def test_unwatched_processes_share_the_vms_families_and_never_take_a_vms_name() -> None:
    renderer = FleetRenderer()
    renderer.added("b", dataclasses.replace(A, monitor=MonitorConfig("b", "unix:/run/b.qmp")))
    cpu = "qemu_process_cpu_seconds_total"
    unwatched = (
        UnwatchedHost(20, "c", ((cpu, (("mode", "user"),), 7.0),)),
        UnwatchedHost(30, "b", ((cpu, (("mode", "user"),), 9.0),)),  # a VM's name
        UnwatchedHost(10, "a", ((cpu, (("mode", "user"),), 5.0),)),
    )
    renderer.scanned(Scan(unwatched=unwatched))
    text = served(renderer)
    assert text.count(f"# TYPE {cpu} counter\n") == 1
    block = text[text.index(f"# TYPE {cpu}") :]
    assert block.startswith(
        f'# TYPE {cpu} counter\n{cpu}{{vm="a",mode="user"}} 5\n{cpu}{{vm="c",mode="user"}} 7\n'
    ), "sorted by vm, the VM's name left out"
    assert 'qemu_up{vm="a"}' not in text and 'qemu_up{vm="c"}' not in text

    renderer.added("c", B)  # a VM of that name now: the process's lines go
    text = served(renderer)
    assert f'{cpu}{{vm="c"' not in text and f'{cpu}{{vm="a",mode="user"}} 5' in text
    renderer.removed("b")  # the VM left: the process of that name shows, whatever the order
    assert f'{cpu}{{vm="b",mode="user"}} 9' in served(renderer)
    renderer.scanned(Scan())
    assert cpu not in served(renderer)
