"""The host collector against a generated /proc and /sys: figures, the guest's direction
of tap counters, the trust check, and figures left out (never wrong) when unreadable."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import socket
from pathlib import Path
from typing import Any

import pytest

from qmp_exporter.collectors.base import Connection
from qmp_exporter.collectors.host import HostCollector, vcpu_threads
from qmp_exporter.host import Host, peer
from qmp_exporter.host.peer import PIDFD, Peer, PeerHints, identify
from qmp_exporter.host.process import SLOW_EVERY
from qmp_exporter.host.procfs import UNTRUSTED
from qmp_exporter.host.trust import check_qemu
from tests.helpers.exporter import ExporterProcess, wait_for
from tests.helpers.procfs import BOOT_TIME, TICKS, FakeProcess, make_host

CPUS = [
    {"cpu-index": 0, "thread-id": 101, "qom-path": "/machine/unattached/device[0]"},
    {"cpu-index": 1, "thread-id": 102, "qom-path": "/machine/unattached/device[1]"},
]


def collect(collector: HostCollector, cpus: Any = CPUS) -> dict[tuple[str, tuple], float]:
    async def query(command: str, arguments: dict[str, Any] | None) -> Any:
        assert command == "query-cpus-fast" and arguments is None
        return cpus

    samples = asyncio.run(collector.collect(query))
    got = {(name, labels): value for name, labels, value in samples}
    assert len(got) == len(samples), "a series twice"
    names = {family.name for family in HostCollector.families}
    assert {name for name, _ in got} <= names
    return got


def peer_of(process: FakeProcess | int) -> Peer:
    """The identity of a generated process (``Host.peer`` would give it for a real one)."""
    if isinstance(process, int):
        process = FakeProcess(pid=process)
    return Peer(process.pid, 0, process.starttime / TICKS, PIDFD)


def host(tmp_path: Path, **figures: Any) -> tuple[HostCollector, FakeProcess]:
    process = FakeProcess(
        pid=4321,
        threads={101: (2_500_000_000, 125_000_000), 102: (1_000_000_000, 0)},
        taps={"vnet7": {"tx_bytes": 1500, "tx_packets": 3, "rx_bytes": 700, "rx_packets": 2,
                        "tx_dropped": 5, "rx_errors": 1}},
        **figures,
    )  # fmt: skip
    proc, sys = make_host(tmp_path, [process])
    collector = HostCollector.for_connection(Connection(None, peer_of(process), Host(proc, sys)))
    assert collector is not None
    return collector, process


def test_figures_and_the_guests_direction(tmp_path):
    collector, p = host(tmp_path)
    got = collect(collector)
    assert got[("qemu_process_cpu_seconds_total", (("mode", "user"),))] == p.utime / TICKS
    assert got[("qemu_process_cpu_seconds_total", (("mode", "system"),))] == p.stime / TICKS
    assert got[("qemu_process_start_time_seconds", ())] == BOOT_TIME + p.starttime / TICKS
    assert got[("qemu_process_resident_memory_bytes", ())] == 65536 * 1024
    assert got[("qemu_process_swap_bytes", ())] == 128 * 1024
    assert got[("qemu_process_io_read_bytes_total", ())] == 4096
    assert got[("qemu_process_io_write_bytes_total", ())] == 8192
    assert got[("qemu_vcpu_cpu_seconds_total", (("vcpu", "0"),))] == 2.5
    assert got[("qemu_vcpu_delay_seconds_total", (("vcpu", "0"),))] == 0.125
    assert got[("qemu_vcpu_cpu_seconds_total", (("vcpu", "1"),))] == 1.0
    tap = (("interface", "vnet7"),)
    # the guest received what the host side of its tap sent, and the other way round
    assert got[("qemu_network_receive_bytes_total", tap)] == 1500
    assert got[("qemu_network_receive_packets_total", tap)] == 3
    assert got[("qemu_network_transmit_bytes_total", tap)] == 700
    assert got[("qemu_network_transmit_packets_total", tap)] == 2
    assert got[("qemu_network_receive_drops_total", tap)] == 5
    assert got[("qemu_network_transmit_errors_total", tap)] == 1
    assert got[("qemu_network_receive_errors_total", tap)] == 0


def test_slow_counters_are_kept_between_their_reads(tmp_path):
    collector, _ = host(tmp_path)
    first = collect(collector)
    stats = tmp_path / "sys/class/net/vnet7/statistics"
    (stats / "tx_dropped").write_text("9\n")
    (stats / "tx_bytes").write_text("3000\n")
    drops = ("qemu_network_receive_drops_total", (("interface", "vnet7"),))
    second = collect(collector)
    assert second[("qemu_network_receive_bytes_total", (("interface", "vnet7"),))] == 3000
    assert second[drops] == first[drops] == 5
    for _ in range(SLOW_EVERY - 2):
        collect(collector)
    assert collect(collector)[drops] == 9


def test_unreadable_figures_are_absent_not_zero(tmp_path, caplog):
    collector, _ = host(tmp_path, io=None, swap_kb=None)
    shutil.rmtree(tmp_path / "sys/class/net/vnet7")
    with caplog.at_level("INFO"):
        got = collect(collector)
        collect(collector)
    names = {name for name, _ in got}
    assert "qemu_process_io_read_bytes_total" not in names
    assert "qemu_process_swap_bytes" not in names
    assert not any(name.startswith("qemu_network_") for name in names)
    assert "qemu_process_cpu_seconds_total" in names
    io_lines = [r for r in caplog.records if "no io figures" in r.getMessage()]
    assert len(io_lines) == 1, "one log line per process and cause"


def test_a_gone_process_fails_the_collector(tmp_path):
    """(A generated file held open outlives its directory; procfs's fail: closed first.)"""
    collector, p = host(tmp_path)
    collector.reader.close()
    shutil.rmtree(tmp_path / "proc" / str(p.pid))
    with pytest.raises(ValueError):
        collect(collector)


def test_a_collector_serves_again_only_the_same_process(tmp_path):
    collector, p = host(tmp_path)
    same = peer_of(p)
    assert collector.serves_again(Connection(None, same))
    collect(collector)
    assert collector.serves_again(Connection(None, same))
    assert not collector.serves_again(Connection(None, dataclasses.replace(same, pid=p.pid + 1)))
    assert not collector.serves_again(Connection(None, None))
    later = dataclasses.replace(same, started=same.started + 1)
    assert not collector.serves_again(Connection(None, later)), "a new process with the same PID"


def test_a_reader_seeing_another_start_is_gone_for_good(tmp_path):
    """What a PID reused by another process looks like through a file opened by path (the
    reader's files are opened through its /proc/PID directory, so only a generated /proc
    can show it): the collector fails from then on and is not kept, even once the file
    says the old start again."""
    collector, p = host(tmp_path)
    collect(collector)
    stat = tmp_path / "proc" / str(p.pid) / "stat"
    text = stat.read_text()
    fields = text.split(" ")
    fields[21] = str(int(fields[21]) + 100)  # field 22: the start, in ticks after boot
    stat.write_text(" ".join(fields))
    with pytest.raises(ValueError, match="another process"):
        collect(collector)
    stat.write_text(text)
    with pytest.raises(ValueError, match="gone"):
        collect(collector)
    assert not collector.serves_again(Connection(None, peer_of(p)))
    assert collector.reader.host.files.held == 0, "its files were closed"


def test_a_reader_is_made_only_for_the_process_identified(tmp_path):
    proc, sys = make_host(tmp_path, [FakeProcess(pid=3)])
    host = Host(proc, sys)
    later = dataclasses.replace(peer_of(3), started=peer_of(3).started + 5)
    assert HostCollector.for_connection(Connection(None, later, host)) is None
    assert host.files.held == 0


def test_vcpu_threads_of_an_answer():
    assert vcpu_threads(CPUS) == [(0, 101), (1, 102)]
    assert vcpu_threads([{"cpu-index": 0}]) == []  # no thread id: no per-vCPU figures
    assert vcpu_threads([{"cpu-index": True, "thread-id": 7}]) == []  # a bool is no index
    with pytest.raises(TypeError):
        vcpu_threads({"return": []})


def test_only_a_root_owned_qemu_binary_is_trusted(tmp_path):
    fake_dir = tmp_path / "bin"
    fake_dir.mkdir()
    named_qemu = fake_dir / "qemu-system-x86_64"
    shutil.copy("/bin/sleep", named_qemu)
    os.chown(named_qemu, 65534, 65534)
    processes = [
        FakeProcess(pid=1, exe=str(named_qemu)),  # a QEMU name, not root's
        FakeProcess(pid=2, exe="/bin/sleep"),  # root's, not a QEMU name
        FakeProcess(pid=3),  # the real QEMU binary
    ]
    proc, sys = make_host(tmp_path, processes)
    assert check_qemu(1, proc) == UNTRUSTED
    assert check_qemu(2, proc) == UNTRUSTED
    assert check_qemu(3, proc) is None
    host = Host(proc, sys)
    assert host.trusted_process(1) is None
    assert HostCollector.for_connection(Connection(None, peer_of(1), host)) is None
    assert HostCollector.for_connection(Connection(None, None, host)) is None, "peer unknown"
    assert HostCollector.for_connection(Connection(None, peer_of(3), None)) is None, "no host"
    assert HostCollector.for_connection(Connection(None, peer_of(3), host)) is not None
    os.chmod(named_qemu, 0o755)
    os.chown(named_qemu, 0, 0)
    assert check_qemu(1, proc) is None
    os.chmod(named_qemu, 0o775)  # group-writable: anyone in the group could replace it
    assert check_qemu(1, proc) == UNTRUSTED


def test_the_peer_of_unix_and_loopback_tcp_sockets():
    a, b = socket.socketpair(socket.AF_UNIX)
    with a, b:
        assert identify(a).pid == os.getpid()
    server = socket.create_server(("127.0.0.1", 0))
    with server, socket.create_connection(server.getsockname()) as client:
        accepted, _ = server.accept()
        with accepted:
            assert identify(client).pid == os.getpid()


def tcp_holder_pid(ours: Any, theirs: Any, proc_root: str, hints: PeerHints) -> int | None:
    found = peer._tcp_holder(ours, theirs, proc_root, hints)
    return None if found is None else found[0]


def test_a_tcp_peer_is_looked_for_first_where_it_was_last_time(tmp_path, monkeypatch):
    """A ``poll``-mode TCP monitor connects for every poll: the process found last time is
    checked first (its fds), and every process is listed again only when it no longer holds
    the connection (a restarted QEMU)."""
    proc = tmp_path / "proc"
    (proc / "net").mkdir(parents=True)
    server, client = ("127.0.0.1", 4444), ("127.0.0.1", 50000)

    def connection(inode: int, holder: int) -> None:
        local, remote = peer._hex_address(*server), peer._hex_address(*client)
        (proc / "net" / "tcp").write_text(
            "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid"
            "  timeout inode\n"
            f"   0: {local} {remote} 01 00000000:00000000 00:00000000 00000000     0"
            f"        0 {inode} 1 0000000000000000 20 4 30 10 -1\n"
        )
        for pid in (100, 200):
            fd_dir = proc / str(pid) / "fd"
            shutil.rmtree(fd_dir, ignore_errors=True)
            fd_dir.mkdir(parents=True)
            os.symlink("/dev/null", fd_dir / "0")
        os.symlink(f"socket:[{inode}]", proc / str(holder) / "fd" / "7")

    scans = []
    full_scan = peer._pid_of_socket
    monkeypatch.setattr(peer, "_pid_of_socket", lambda *a: scans.append(a) or full_scan(*a))
    hints = PeerHints()
    connection(inode=1111, holder=200)
    assert tcp_holder_pid(client, server, str(proc), hints) == 200
    connection(inode=2222, holder=200)  # the next poll's connection, same QEMU
    assert tcp_holder_pid(client, server, str(proc), hints) == 200
    assert len(scans) == 1, "the second lookup listed only the last owner's fds"
    connection(inode=3333, holder=100)  # another process serves it now
    assert tcp_holder_pid(client, server, str(proc), hints) == 100
    assert len(scans) == 2


def test_the_demo_does_not_log_its_own_process_as_an_untrusted_qemu():
    """The demo's simulated VMs are served by the exporter itself: its own process is no
    QEMU, and no log line says so (it did, once per start)."""
    config = {"poll_interval": "1s", "monitors": []}
    with ExporterProcess(config, ["--demo"], log_level="info") as demo:
        # the host collector is chosen (or not) at the connection, before the first poll
        wait_for(lambda: demo.value("qemu_up", vm="demo-web-01") == 1, 20, "the demo's VMs")
        assert "no host figures" not in demo.log(), demo.log()
