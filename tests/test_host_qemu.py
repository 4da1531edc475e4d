"""The host collector against real QEMUs (every version of the matrix): two busy-loop guests
with a tap NIC each (one opened by QEMU with ``ifname=``, one passed as an fd), polled through
the exporter's own poller; the figures are checked against ``/proc`` and ``/sys`` read here."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from qmp_exporter.collectors import DEFAULT_COLLECTORS
from qmp_exporter.collectors.host import HostCollector
from qmp_exporter.config import MonitorConfig
from qmp_exporter.host import Host
from qmp_exporter.host.peer import TCP, Peer
from qmp_exporter.host.procfs import UNTRUSTED
from qmp_exporter.host.trust import check_qemu
from qmp_exporter.polling.poller import MonitorPoller, PollSettings
from qmp_exporter.qmp import connect
from qmp_exporter.qmp.address import parse_address
from tests.helpers.exporter import free_port, wait_for
from tests.helpers.qemu import QemuVM, qmp_command, tcp_port_listening
from tests.helpers.taps import open_tap, persistent_tap

TICKS = os.sysconf("SC_CLK_TCK")
#: A boot sector that loops forever (``jmp $``): a guest that keeps one vCPU busy.
BUSY_BOOT_SECTOR = b"\xeb\xfe" + bytes(508) + b"\x55\xaa"
#: A broadcast frame of an experimental EtherType, from a locally administered address.
FRAME = b"\xff" * 6 + b"\x02\x00\x00\x00\x00\x01" + b"\x88\xb5" + b"x" * 100


@pytest.fixture
def taps() -> Iterator[tuple[str, str, int]]:
    """A persistent tap for ``ifname=`` and a tap opened here to pass as an fd."""
    with persistent_tap() as named, open_tap() as (passed, fd):
        yield named, passed, fd


def busy_vm(qemu_factory: Callable[..., QemuVM], tmp_path: Path, netdev: str, **options) -> QemuVM:
    boot = tmp_path / f"boot-{secrets.token_hex(3)}.img"
    boot.write_bytes(BUSY_BOOT_SECTOR)
    extra = ["-m", "32", "-smp", "2", "-netdev", netdev, "-device", "rtl8139,netdev=n0",
             "-drive", f"file={boot},format=raw,if=ide"]  # fmt: skip
    return qemu_factory(machine="pc", monitors=2, extra_args=extra, **options)


def poll(poller: MonitorPoller) -> dict[tuple[str, tuple], float]:
    asyncio.run(poller.poll_once())
    state = poller.state
    assert state.up, state.error
    assert ("host", True) in state.collector_results, state.collector_results
    return {(name, labels): value for name, labels, value in state.samples}


def proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def host_cpu(samples: dict) -> float:
    return sum(v for (name, _), v in samples.items() if name == "qemu_process_cpu_seconds_total")


def sysfs(tap: str, stat: str) -> int:
    return int(Path(f"/sys/class/net/{tap}/statistics/{stat}").read_text())


def send_frames(tap: str, count: int) -> None:
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as sender:
        sender.bind((tap, 0))
        for _ in range(count):
            sender.send(FRAME)


def new_poller(vm: QemuVM, host: Host | None = None) -> MonitorPoller:
    collectors = DEFAULT_COLLECTORS
    monitor = MonitorConfig("host-test", vm.qmp_address(), "poll", collectors=collectors)
    settings = PollSettings(interval=60, timeout=10, start_spread=0)
    return MonitorPoller(monitor, settings, host=host or Host())


def test_host_figures_of_two_busy_guests_with_taps(qemu_factory, tmp_path, taps):
    named, passed, fd = taps
    vms = {
        named: busy_vm(qemu_factory, tmp_path, f"tap,id=n0,ifname={named},script=no,downscript=no"),
        passed: busy_vm(qemu_factory, tmp_path, f"tap,id=n0,fd={fd}", pass_fds=(fd,)),
    }
    for tap, vm in vms.items():
        check_busy_guest(vm, tap)


def check_busy_guest(vm: QemuVM, tap: str) -> None:
    poller = new_poller(vm)
    first = poll(poller)
    labels = (("interface", tap),)
    assert ("qemu_network_receive_packets_total", labels) in first, f"{tap} not found"
    assert first[("qemu_network_transmit_packets_total", labels)] == 0, "the guest sends nothing"
    # CPU time grows while the guest loops
    wait_for(lambda: host_cpu(poll(poller)) > host_cpu(first) + 0.3, 30, "CPU seconds grow")

    # frames the host writes into the tap are what the guest receives
    before = poll(poller)[("qemu_network_receive_packets_total", labels)]
    send_frames(tap, 3)
    wait_for(
        lambda: poll(poller)[("qemu_network_receive_packets_total", labels)] >= before + 3,
        10, "guest receive packets",
    )  # fmt: skip
    now = poll(poller)
    assert now[("qemu_network_receive_bytes_total", labels)] == sysfs(tap, "tx_bytes")
    assert now[("qemu_network_receive_bytes_total", labels)] >= 3 * len(FRAME)
    assert now[("qemu_network_transmit_packets_total", labels)] == sysfs(tap, "rx_packets") == 0

    # paused through the test's own monitor: the figures agree with /proc within 1%
    wait_for(lambda: proc_cpu(vm.pid) >= 1.0, 60, "a second of CPU")
    qmp_command(vm.qmp_paths[1], "stop")
    low = proc_cpu(vm.pid)
    samples = poll(poller)
    high = proc_cpu(vm.pid)
    got = host_cpu(samples)
    assert low - 1e-9 <= got <= high + 1e-9 and high - low <= 0.01 * high, (low, got, high)
    thread = next(dict(labels)["thread_id"] for name, labels in samples
                  if name == "qemu_vcpu_info" and dict(labels)["vcpu"] == "0")  # fmt: skip
    run = int(Path(f"/proc/{vm.pid}/task/{thread}/schedstat").read_text().split()[0]) / 1e9
    assert samples[("qemu_vcpu_cpu_seconds_total", (("vcpu", "0"),))] == pytest.approx(
        run, rel=0.01
    )
    assert samples[("qemu_vcpu_delay_seconds_total", (("vcpu", "0"),))] >= 0
    rss = samples[("qemu_process_resident_memory_bytes", ())]
    status = Path(f"/proc/{vm.pid}/status").read_text()
    vm_rss = next(line for line in status.splitlines() if line.startswith("VmRSS:"))
    assert rss == pytest.approx(int(vm_rss.split()[1]) * 1024, rel=0.05)


def test_a_restarted_qemu_is_read_by_its_new_pid(qemu_factory, tmp_path):
    vm = busy_vm(qemu_factory, tmp_path, "user,id=n0")
    poller = new_poller(vm)
    first = poll(poller)
    old_pid = vm.pid
    vm.restart()
    assert vm.pid != old_pid
    second = poll(poller)
    started = second[("qemu_process_start_time_seconds", ())]
    assert started > first[("qemu_process_start_time_seconds", ())]
    assert started == pytest.approx(proc_start_time(vm.pid), abs=1e-6), "the new process"
    assert host_cpu(second) <= proc_cpu(vm.pid) + 0.01


def test_a_poll_mode_monitor_keeps_reading_the_same_process(qemu_factory, tmp_path, monkeypatch):
    made = []
    for_connection = HostCollector.for_connection

    def counted(connection):
        made.append(connection.peer.pid if connection.peer else None)
        return for_connection(connection)

    monkeypatch.setattr(HostCollector, "for_connection", counted)
    vm = busy_vm(qemu_factory, tmp_path, "user,id=n0")
    host = Host()
    poller = new_poller(vm, host)
    assert poller.monitor.mode == "poll"
    for _ in range(3):
        assert ("qemu_process_cpu_seconds_total", (("mode", "user"),)) in poll(poller)
    assert made == [vm.pid], "one host reader for the process, kept across connections"
    held = host.files.held
    assert held > 0, "stat, io and schedstat are held open"
    vm.restart()
    poll(poller)
    assert made[1:] == [vm.pid], "a new process gets a new one"
    assert host.files.held <= held, "the old reader's files were closed, not left to the GC"
    asyncio.run(poller.stop())
    assert host.files.held == 0, "a stopped poller holds no file"


def proc_start_time(pid: int) -> float:
    btime = next(line for line in Path("/proc/stat").read_text().splitlines()
                 if line.startswith("btime "))  # fmt: skip
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(btime.split()[1]) + int(fields[19]) / TICKS


def test_a_process_merely_named_qemu_is_not_trusted(tmp_path):
    fake = tmp_path / "qemu-system-x86_64"
    shutil.copy("/bin/sleep", fake)
    os.chown(fake, 65534, 65534)  # a user's copy: the name passes, the owner does not
    named = subprocess.Popen(["bash", "-c", "exec -a qemu-system-x86_64 sleep 60"])
    copied = subprocess.Popen([str(fake), "60"])
    try:
        for process in (named, copied):
            wait_for(lambda p=process: Path(f"/proc/{p.pid}/exe").resolve().name != "bash", 5)
            assert check_qemu(process.pid) == UNTRUSTED
            assert Host().trusted_process(process.pid) is None
    finally:
        for process in (named, copied):
            process.kill()
            process.wait()


def test_the_peer_of_a_loopback_tcp_monitor_is_found(qemu_factory):
    port = free_port()
    vm = qemu_factory(extra_args=["-qmp", f"tcp:127.0.0.1:{port},server=on,wait=off"])
    wait_for(lambda: tcp_port_listening(port), 10, "the TCP monitor listens")

    async def peer() -> Peer | None:
        async with await connect(parse_address(f"tcp:127.0.0.1:{port}")) as client:
            return await Host().peer(client.socket)

    found = asyncio.run(peer())
    assert found is not None and found.pid == vm.pid and found.how == TCP
    assert found.started == pytest.approx(proc_start_time(vm.pid) - Host().boot_time(), abs=1e-6)
