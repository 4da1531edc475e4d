"""The exporter end to end against real QEMU: three VMs in three states, real VNC clients,
a QEMU killed and restarted; the exposition checked against a golden file and by promtool."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from qmp_exporter.fleet.state import RUN_STATES
from tests.helpers.exporter import ExporterProcess, wait_for
from tests.helpers.qemu import QemuVM, qmp_command
from tests.helpers.rfb import rfb_handshake, vnc_tcp_connect

INTERVAL = 0.5
GOLDEN = Path(__file__).parent / "golden" / "exporter.prom"
UUIDS = {
    "web": "11111111-2222-3333-4444-555555555555",
    "batch": "22222222-3333-4444-5555-666666666666",
    "db": "33333333-4444-5555-6666-777777777777",
}


@pytest.fixture
def three_vms(qemu_factory: Callable[..., QemuVM]) -> dict[str, QemuVM]:
    """web: running with VNC; batch: started with -S (prelaunch); db: paused from a second
    monitor of the test's own."""
    vms = {
        "web": qemu_factory(name="web", uuid=UUIDS["web"], vnc=True),
        "batch": qemu_factory(name="batch", uuid=UUIDS["batch"], paused=True),
        "db": qemu_factory(name="db", uuid=UUIDS["db"], monitors=2),
    }
    qmp_command(vms["db"].qmp_paths[1], "stop")
    return vms


@pytest.fixture
def exporter(three_vms: dict[str, QemuVM]) -> Iterator[ExporterProcess]:
    config = {
        "poll_interval": f"{int(INTERVAL * 1000)}ms",
        "timeout": "400ms",
        "monitors": [
            {"name": "web", "address": three_vms["web"].qmp_address(), "labels": {"team": "ops"}},
            {"name": "batch", "address": three_vms["batch"].qmp_path},
            {"name": "db", "address": three_vms["db"].qmp_address(0), "mode": "poll"},
        ],
    }
    with ExporterProcess(config) as running:
        wait_for(lambda: all(running.value("qemu_up", vm=vm) == 1 for vm in UUIDS), timeout=15)
        yield running


def status_of(exporter: ExporterProcess, vm: str) -> list[str]:
    samples = exporter.samples()
    return [
        dict(labels)["status"]
        for (name, labels), value in samples.items()
        if name == "qemu_vm_status" and dict(labels)["vm"] == vm and value == 1
    ]


@pytest.mark.latest_libs_e2e
def test_three_vms_give_exactly_the_documented_metrics(exporter: ExporterProcess) -> None:
    samples = exporter.samples()
    value = exporter.value
    assert status_of(exporter, "web") == ["running"]
    assert status_of(exporter, "batch") == ["prelaunch"]
    assert status_of(exporter, "db") == ["paused"]
    for vm in UUIDS:
        zeros = [
            dict(labels)["status"]
            for (name, labels), v in samples.items()
            if name == "qemu_vm_status" and dict(labels)["vm"] == vm and v == 0
        ]
        assert len(zeros) == len(RUN_STATES) - 1
    assert value("qemu_vm_running", vm="web") == 1
    assert value("qemu_vm_running", vm="batch") == 0
    assert value("qemu_vm_running", vm="db") == 0
    assert value("qemu_vm_info", vm="web", name="web", uuid=UUIDS["web"], team="ops") == 1
    assert value("qemu_vm_info", vm="db", name="db", uuid=UUIDS["db"]) == 1
    versions = {
        dict(labels)["version"]
        for (name, labels), _ in samples.items()
        if name == "qemu_version_info"
    }
    assert len(versions) == 1
    assert re.fullmatch(r"\d+\.\d+\.\d+", versions.pop())
    assert value("qemu_vnc_enabled", vm="web") == 1
    assert value("qemu_vnc_enabled", vm="batch") == 0
    assert value("qemu_vnc_clients", vm="web") == 0
    web_port = str(exporter_vnc_port(samples))
    assert (
        value(
            "qemu_vnc_info",
            vm="web",
            host="127.0.0.1",
            service=web_port,
            family="ipv4",
            auth="none",
        )
        == 1
    )
    # Events are counted on held connections only, from 0.
    assert value("qemu_events_total", vm="web", event="VNC_CONNECTED") == 0
    assert value("qemu_events_total", vm="batch", event="GUEST_PANICKED") == 0
    assert not [k for k in samples if k[0] == "qemu_events_total" and ("vm", "db") in k[1]]
    for vm in UUIDS:
        for reason in ("connect", "busy", "timeout", "protocol", "command"):
            assert value("qmp_exporter_poll_errors_total", vm=vm, reason=reason) == 0
        assert value("qmp_exporter_poll_duration_seconds", vm=vm) < 1
        assert time.time() - value("qmp_exporter_last_poll_success_timestamp_seconds", vm=vm) < 5
    assert value("qmp_exporter_connections_total", vm="web") == 1
    assert value("qmp_exporter_connections_total", vm="db") >= 1
    assert value("qmp_exporter_monitors") == 3


def exporter_vnc_port(samples: dict) -> int:
    for (name, labels), _ in samples.items():
        if name == "qemu_vnc_info":
            return int(dict(labels)["service"])
    raise AssertionError("no qemu_vnc_info")


def test_real_vnc_clients_move_counters_and_gauge(
    exporter: ExporterProcess, three_vms: dict[str, QemuVM]
) -> None:
    port = three_vms["web"].vnc_port
    events = {"VNC_CONNECTED": 0, "VNC_INITIALIZED": 0, "VNC_DISCONNECTED": 0}

    def counts() -> dict[str, float | None]:
        return {e: exporter.value("qemu_events_total", vm="web", event=e) for e in events}

    with rfb_handshake(port):
        wait_for(lambda: exporter.value("qemu_vnc_clients", vm="web") == 1)
        assert counts() == {"VNC_CONNECTED": 1, "VNC_INITIALIZED": 1, "VNC_DISCONNECTED": 0}
        raw = vnc_tcp_connect(port)  # TCP only: connected, never initialised
        wait_for(lambda: exporter.value("qemu_vnc_clients", vm="web") == 2)
        raw.close()
    wait_for(lambda: exporter.value("qemu_vnc_clients", vm="web") == 0)
    wait_for(lambda: counts()["VNC_DISCONNECTED"] == 2)
    assert counts() == {"VNC_CONNECTED": 2, "VNC_INITIALIZED": 1, "VNC_DISCONNECTED": 2}


def test_stop_and_resume_from_another_monitor_are_seen(
    qemu_factory: Callable[..., QemuVM],
) -> None:
    vm = qemu_factory(name="flip", monitors=2)
    config = {
        "poll_interval": "10s",  # long: the events, not the interval, must move the state
        "timeout": "1s",
        "monitors": [{"name": "flip", "address": vm.qmp_path}],
    }
    with ExporterProcess(config) as exporter:
        wait_for(lambda: exporter.value("qemu_vm_running", vm="flip") == 1)
        qmp_command(vm.qmp_paths[1], "stop")
        wait_for(lambda: exporter.value("qemu_vm_running", vm="flip") == 0, timeout=3)
        assert status_of(exporter, "flip") == ["paused"]
        assert exporter.value("qemu_events_total", vm="flip", event="STOP") == 1
        qmp_command(vm.qmp_paths[1], "cont")
        wait_for(lambda: exporter.value("qemu_vm_running", vm="flip") == 1, timeout=3)
        assert exporter.value("qemu_events_total", vm="flip", event="RESUME") == 1


def test_sigkill_turns_one_vm_down_others_keep_updating_and_it_comes_back(
    exporter: ExporterProcess, three_vms: dict[str, QemuVM]
) -> None:
    web = three_vms["web"]
    with rfb_handshake(web.vnc_port):
        wait_for(lambda: exporter.value("qemu_vnc_clients", vm="web") == 1)
    wait_for(lambda: exporter.value("qemu_events_total", vm="web", event="VNC_DISCONNECTED") == 1)

    killed_at = time.monotonic()
    web.kill(signal.SIGKILL)
    wait_for(lambda: exporter.value("qemu_up", vm="web") == 0, timeout=2 * INTERVAL)
    assert time.monotonic() - killed_at <= 2 * INTERVAL
    samples = exporter.samples()
    web_series = {name for name, labels in samples if ("vm", "web") in labels}
    assert "qemu_vm_status" not in web_series  # a down VM exports no stale gauges
    assert "qemu_events_total" in web_series  # but keeps its counters
    assert exporter.value("qmp_exporter_poll_errors_total", vm="web", reason="connect") >= 1

    before = {
        vm: exporter.value("qmp_exporter_last_poll_success_timestamp_seconds", vm=vm)
        for vm in ("batch", "db")
    }
    time.sleep(3 * INTERVAL)
    for vm in ("batch", "db"):
        assert exporter.value("qemu_up", vm=vm) == 1
        after = exporter.value("qmp_exporter_last_poll_success_timestamp_seconds", vm=vm)
        assert after > before[vm], f"{vm} stopped updating while web was down"

    web.restart()
    wait_for(lambda: exporter.value("qemu_up", vm="web") == 1, timeout=5)
    assert exporter.value("qemu_events_total", vm="web", event="VNC_CONNECTED") == 1
    assert exporter.value("qemu_events_total", vm="web", event="VNC_DISCONNECTED") == 1
    assert exporter.value("qmp_exporter_connections_total", vm="web") == 2
    assert status_of(exporter, "web") == ["running"]
    warnings = [line for line in exporter.log().splitlines() if "level=WARNING" in line]
    assert len([w for w in warnings if "web: down" in w]) == 1, warnings


#: The host collector's figures of the real QEMUs: their names are fixed, their values not.
HOST_FIGURES = r"^(qemu_process_\w+|qemu_vcpu_(cpu|delay)_seconds_total|qemu_network_\w+)\{"


def normalise(text: str) -> str:
    """The exposition without values that change from run to run."""
    lines = []
    for line in text.splitlines():
        if line.startswith(
            (
                "process_",
                "python_",
                "# HELP process_",
                "# TYPE process_",
                "# HELP python_",
                "# TYPE python_",
            )
        ):
            continue
        line = re.sub(r'version="\d+\.\d+\.\d+"', 'version="X.Y.Z"', line)
        line = re.sub(r'package="[^"]*"', 'package="PKG"', line)
        line = re.sub(r'python_version="[^"]*"', 'python_version="P"', line)
        line = re.sub(r'service="\d+"', 'service="PORT"', line)
        line = re.sub(
            r'qmp_exporter_build_info\{version="[^"]*"', 'qmp_exporter_build_info{version="V"', line
        )
        if re.match(
            r"^(qmp_exporter_\w*(seconds|timestamp_seconds)|qmp_exporter_connections_total)\b", line
        ) or re.match(HOST_FIGURES, line):
            line = re.sub(r" \S+$", " N", line)
        lines.append(line)
    return "\n".join(lines) + "\n"


def test_golden_exposition_and_promtool(exporter: ExporterProcess, tmp_path: Path) -> None:
    text = exporter.text()
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: run scripts/install-test-deps.sh (package prometheus)"
    check = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    assert check.returncode == 0, check.stdout + check.stderr
    got = normalise(text)
    if os.environ.get("QMP_EXPORTER_UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(got)
    assert got == GOLDEN.read_text(), "exposition changed; QMP_EXPORTER_UPDATE_GOLDEN=1 rewrites"
