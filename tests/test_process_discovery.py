"""Process discovery (``- processes: true``) against real QEMUs of every version: plain
``-qmp``, ``-chardev`` with ``-mon``, a Proxmox-style socket (its directory pointed at a
temporary one), libvirt's own monitor refused, a QEMU without a monitor reported, and a
configured monitor winning the clash; the host figures of an unwatched QEMU rendered within
the watched VMs' families, checked by promtool."""

from __future__ import annotations

import asyncio
import re
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from qmp_exporter.collectors import DEFAULT_COLLECTORS
from qmp_exporter.config import Config, DiscoveryConfig, MonitorConfig, parse_yaml
from qmp_exporter.discovery import Discoverer, ProcessRow, Scan
from qmp_exporter.discovery import scan as scan_host
from qmp_exporter.exposition.render import FleetRenderer
from qmp_exporter.exposition.selfmetrics import SelfMetrics
from qmp_exporter.host import Host, cmdline
from qmp_exporter.polling.poller import MonitorPoller, PollSettings
from qmp_exporter.web.landing import ReloadStatus, render_landing_page
from tests.helpers.images import wait_listening
from tests.helpers.qemu_versions import QemuBuild

PROCESSES = DiscoveryConfig("", "", labels=(("site", "lab"),), processes=True)


@pytest.fixture
def start_qemu(qemu_binary: QemuBuild) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start a ``-M none`` QEMU with exactly the arguments given (no monitor of the test
    helpers); wait for ``socket`` to listen, if given."""
    started: list[subprocess.Popen[bytes]] = []

    def start(*args: str, socket: Path | None = None) -> subprocess.Popen[bytes]:
        argv = qemu_binary.command("-M", "none", "-display", "none", "-nodefaults", *args)
        process = subprocess.Popen(argv, env=qemu_binary.environ(), stderr=subprocess.DEVNULL)
        started.append(process)
        if socket is not None:
            wait_listening(str(socket), timeout=20)
        else:
            deadline = time.monotonic() + 20
            while "qemu" not in Path(f"/proc/{process.pid}/comm").read_text():
                assert time.monotonic() < deadline, "QEMU did not start"
                time.sleep(0.01)
        return process

    yield start
    for process in started:
        process.kill()
        process.wait()


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path: unix socket paths are limited to 107 bytes."""
    path = Path(tempfile.mkdtemp(prefix="qpd-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def rows_by_pid(rows: list[ProcessRow]) -> dict[int, ProcessRow]:
    return {row.pid: row for row in rows}


def test_processes_found_from_their_command_lines(start_qemu, short_dir, monkeypatch):
    tmp_path = short_dir
    tag = secrets.token_hex(3)
    plain_sock = tmp_path / "plain.sock"
    plain = start_qemu(
        "-name",
        f"guest=plain-{tag},debug-threads=on",
        "-qmp",
        f"unix:{plain_sock},server=on,wait=off",
        socket=plain_sock,
    )
    mon_sock = tmp_path / "mon.sock"
    uuid = "0a3f7d0e-1111-2222-3333-" + secrets.token_hex(6)
    mon = start_qemu(
        "-uuid",
        uuid,
        "-chardev",
        f"socket,id=qmp0,path={mon_sock},server=on,wait=off",
        "-mon",
        "chardev=qmp0,mode=control",
        socket=mon_sock,
    )
    pve_dir = tmp_path / "qemu-server"
    pve_dir.mkdir()
    monkeypatch.setattr(cmdline, "PROXMOX_DIR", str(pve_dir))
    pve_sock = pve_dir / "107.qmp"
    pve = start_qemu(
        "-name",
        f"pve-{tag}",
        "-chardev",
        f"socket,id=qmp,path={pve_sock},server=on,wait=off",
        "-mon",
        "chardev=qmp,mode=control",
        socket=pve_sock,
    )
    libvirt_dir = tmp_path / "libvirt" / "qemu" / "domain-3-lv"
    libvirt_dir.mkdir(parents=True)
    libvirt_sock = libvirt_dir / "monitor.sock"
    libvirt = start_qemu(
        "-name",
        f"guest=lv-{tag}",
        "-chardev",
        f"socket,id=charmonitor,path={libvirt_sock},server=on,wait=off",
        "-mon",
        "chardev=charmonitor,id=monitor,mode=control",
        socket=libvirt_sock,
    )
    bare = start_qemu("-name", f"bare-{tag}")  # fmt: skip

    found = scan_host([PROCESSES], [], Host(), read_unwatched=False)
    assert found.processes is not None
    by_pid = rows_by_pid(list(found.processes))
    monitors = {m.address: m for m in found.monitors}

    row = by_pid[plain.pid]
    assert (row.vm, row.name, row.problem, row.monitor) == (
        f"plain-{tag}",
        f"plain-{tag}",
        "",
        f"unix:{plain_sock}",
    )
    m = monitors[f"unix:{plain_sock}"]
    assert (m.name, m.mode, m.labels) == (f"plain-{tag}", "persistent", (("site", "lab"),))

    row = by_pid[mon.pid]
    assert (row.vm, row.uuid, row.problem) == (uuid, uuid, "")  # no -name: the UUID
    assert monitors[f"unix:{mon_sock}"].name == uuid

    m = monitors[f"unix:{pve_sock}"]
    assert m.mode == "poll", "Proxmox connects per command: poll mode"
    assert dict(m.labels) == {"site": "lab", "vmid": "107"}
    assert by_pid[pve.pid].vm == f"pve-{tag}"

    row = by_pid[libvirt.pid]
    assert row.problem == "owned_by_libvirt" and not row.watched
    assert f"unix:{libvirt_sock}" not in monitors, "libvirt's own monitor is never used"

    row = by_pid[bare.pid]
    assert (row.vm, row.problem, row.monitor) == (f"bare-{tag}", "no_monitor", "")
    assert not any(str(plain.pid) in p for p in found.problems)


def test_a_configured_monitor_wins(start_qemu, short_dir):
    tmp_path = short_dir
    tag = secrets.token_hex(3)
    sock = tmp_path / "qmp.sock"
    process = start_qemu("-name", f"dup-{tag}",
                         "-qmp", f"unix:{sock},server=on,wait=off", socket=sock)  # fmt: skip
    other_sock = tmp_path / "other.sock"
    other = f"unix:{other_sock},server=on,wait=off"
    clash = start_qemu("-name", f"taken-{tag}", "-qmp", other, socket=other_sock)
    configured = [
        # the same socket spelt another way: one VM, watched as configured
        MonitorConfig(f"cfg-{tag}", f"unix:{tmp_path}/./qmp.sock"),
        MonitorConfig(f"taken-{tag}", "unix:/nonexistent/x.sock"),  # the name is taken
    ]
    found = scan_host([PROCESSES], configured, Host(), read_unwatched=False)
    assert found.processes is not None
    by_pid = rows_by_pid(list(found.processes))
    assert by_pid[process.pid].vm == f"cfg-{tag}" and by_pid[process.pid].watched
    assert not any(m.address.endswith("/qmp.sock") for m in found.monitors)
    assert by_pid[clash.pid].problem == "name_clash"
    assert any(f"taken-{tag}" in p for p in found.problems)


def test_the_processes_entry_in_config():
    config = parse_yaml(
        "discovery:\n  - processes: true\n    labels: {site: lab}\n    rescan: 10s\n"
        "    collectors: [vcpu, host]\n  - glob: /run/qmp/*.sock\n",
        "test",
    )
    entry = config.discovery[0]
    assert entry.processes and entry.rescan == 10 and entry.collectors == ("vcpu", "host")
    assert entry.labels == (("site", "lab"),)
    with pytest.raises(Exception, match="processes"):
        parse_yaml("discovery:\n  - processes: yes please\n", "test")
    with pytest.raises(Exception, match="name"):
        parse_yaml("discovery:\n  - processes: true\n    name: x\n", "test")


def test_the_landing_page_says_what_to_add_to_an_unwatched_qemu():
    rows = [
        ProcessRow(4242, "web-01", "web-01", "", "unix:/run/qemu/web-01.qmp", ""),
        ProcessRow(5150, "qemu-5150", "", "", "", "no_monitor"),
        ProcessRow(6000, "lv<1>", "lv<1>", "", "", "owned_by_libvirt"),
    ]
    page = render_landing_page([], ReloadStatus(None, ok=True, loaded_at=0.0), processes=rows)
    text = page.decode()
    assert "QEMU processes not watched (2)" in text
    assert "-qmp unix:/run/qemu/qemu-5150.qmp,server=on,wait=off" in text
    assert "&lt;qemu:commandline&gt;" in text and "lv&lt;1&gt;" in text  # escaped
    assert ">4242<" not in text, "a watched process has no row"
    assert "Every QEMU on the host" in text
    plain = render_landing_page([], ReloadStatus(None, ok=True, loaded_at=0.0)).decode()
    assert "not watched" not in plain


def test_the_process_rows_are_served_with_the_exporters_own_metrics():
    metrics = SelfMetrics()
    assert b"qemu_process" not in metrics.render(), "nothing without a process scan"
    metrics.processes.scanned(Scan())
    assert b"qemu_process" not in metrics.render(), "nothing from a scan without processes"
    rows = (
        ProcessRow(4242, "web-01", "web-01", "", "unix:/run/qemu/web-01.qmp", ""),
        ProcessRow(5150, "qemu-5150", "", "", "", "no_monitor"),
    )
    metrics.processes.scanned(Scan(processes=rows))
    text = metrics.render().decode()
    assert 'qemu_processes{watched="true"} 1.0' in text
    assert 'qemu_processes{watched="false"} 1.0' in text
    assert (
        'qemu_process_info{monitor="",name="",pid="5150",problem="no_monitor",uuid="",'
        'vm="qemu-5150"} 1.0'
    ) in text


def family_block(text: str, family: str) -> str:
    """The lines of ``family`` in an exposition, from its TYPE line to the next family."""
    assert text.count(f"# TYPE {family} ") == 1, f"{family} is listed once"
    start = text.index(f"# TYPE {family} ")
    end = text.find("# HELP", start)
    return text[start : end if end >= 0 else None]


def test_an_unwatched_qemus_host_figures_are_rendered_within_the_vms_families(
    start_qemu, short_dir
):
    tag = secrets.token_hex(3)
    sock = short_dir / "qmp.sock"
    watched_name = f"watched-{tag}"
    start_qemu("-name", watched_name, "-qmp", f"unix:{sock},server=on,wait=off", socket=sock)
    bare = start_qemu("-name", f"bare-{tag}")  # no monitor at all
    twin = start_qemu("-name", watched_name)  # no monitor, and the watched VM's name
    collectors = DEFAULT_COLLECTORS
    monitor = MonitorConfig(watched_name, f"unix:{sock}", "poll", collectors=collectors)
    host = Host()
    settings = PollSettings(interval=60, timeout=10, start_spread=0)
    poller = MonitorPoller(monitor, settings, host=host)
    config = Config(monitors=(monitor,), discovery=(PROCESSES,))
    renderer = FleetRenderer()
    own = SelfMetrics()
    discoverer = Discoverer(config, host)
    discoverer.subscribe(renderer)
    discoverer.subscribe(own.processes)

    async def scan() -> None:
        await poller.poll_once()
        await discoverer.rescan()

    asyncio.run(scan())
    assert poller.state.up, poller.state.error
    renderer.added(watched_name, poller.state)
    text = b"".join(renderer.chunks()).decode() + own.render().decode()

    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: run scripts/install-test-deps.sh (package prometheus)"
    check = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    assert check.returncode == 0, check.stdout + check.stderr

    cpu = family_block(text, "qemu_process_cpu_seconds_total")
    for vm in (f"bare-{tag}", watched_name):  # the watched VM's from its poll, once
        assert cpu.count(f'qemu_process_cpu_seconds_total{{vm="{vm}",mode="user"}} ') == 1, vm
    rss = family_block(text, "qemu_process_resident_memory_bytes")
    assert re.search(rf'qemu_process_resident_memory_bytes{{vm="bare-{tag}"}} [1-9]', rss)
    assert f'vm="bare-{tag}"' in family_block(text, "qemu_process_start_time_seconds")
    assert f'qemu_up{{vm="bare-{tag}"}}' not in text, "an unwatched process is not a VM"
    assert f'qemu_vcpu_cpu_seconds_total{{vm="bare-{tag}"' not in text, "vCPUs need QMP"
    for pid, vm in ((bare.pid, f"bare-{tag}"), (twin.pid, watched_name)):
        assert re.search(
            rf'qemu_process_info{{[^}}]*pid="{pid}",problem="no_monitor",[^}}]*vm="{vm}"}} 1', text
        ), pid

    renderer.removed(watched_name)
    twin_cpu = f'qemu_process_cpu_seconds_total{{vm="{watched_name}",mode="user"}} '
    served = b"".join(renderer.chunks()).decode()
    assert twin_cpu in served, "the twin's figures show once the VM is gone"
    renderer.scanned(Scan())
    assert f"bare-{tag}" not in b"".join(renderer.chunks()).decode(), "gone with the next scan"
