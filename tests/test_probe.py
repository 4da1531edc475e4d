"""/probe and /discovery: target parsing and the allow-list, then the real exporter
(a subprocess) probing real QEMUs, with discovery over symlinked sockets."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from qmp_exporter.config import MonitorConfig, probe_pattern
from qmp_exporter.web.probe import (
    TargetError,
    is_allowed,
    matches,
    parse_target,
    probe_state,
    sd_document,
    timeout_from,
)
from tests.helpers.exporter import ExporterProcess, parse_samples, wait_for
from tests.helpers.images import make_disk_image, pc_vm_args, wait_listening
from tests.helpers.scripted_monitor import ScriptedMonitor, Session

# -- targets and the allow-list ------------------------------------------------------------


@pytest.mark.parametrize(
    "target, address",
    [
        ("/var/run/qemu-server/101.qmp", "unix:/var/run/qemu-server/101.qmp"),
        ("unix:/run/q.sock", "unix:/run/q.sock"),
        ("10.0.0.5:4444", "tcp:10.0.0.5:4444"),
        ("tcp:[::1]:4444", "tcp:[::1]:4444"),
    ],
)
def test_parse_target_normalises(target, address):
    assert parse_target(target) == address


@pytest.mark.parametrize(
    "target, reason",
    [
        ("", "missing target"),
        ("qmp0.sock", "bad target"),
        ("/run/qemu/../../etc/x.qmp", "not a normalised absolute path"),
        ("/run//x.qmp", "not a normalised absolute path"),
        ("unix:relative.sock", "not a normalised absolute path"),
        ("10.0.0.5:99999", "bad target"),
        ("/x" * 300, "longer than"),
        ("/run/a\0b", "bad target"),
    ],
)
def test_parse_target_rejects_with_a_reason(target, reason):
    with pytest.raises(TargetError, match=reason):
        parse_target(target)


def test_allow_globs_match_paths_part_by_part_and_tcp_host_and_port():
    pve = probe_pattern("/var/run/qemu-server/*.qmp")
    assert matches(pve, "unix:/var/run/qemu-server/101.qmp")
    assert not matches(pve, "unix:/var/run/qemu-server/sub/101.qmp"), "* crosses no /"
    assert not matches(pve, "unix:/var/run/qemu-server/101.qga")
    assert not matches(pve, "tcp:10.0.0.1:4444")
    net = probe_pattern("10.0.0.*:4444")
    assert matches(net, "tcp:10.0.0.17:4444")
    assert not matches(net, "tcp:10.0.0.17:4445")
    assert not matches(net, "tcp:10.0.1.17:4444")
    assert matches(probe_pattern("[::1]:44*"), "tcp:[::1]:4444")


def test_without_allow_only_poll_mode_monitors_may_be_probed():
    monitors = [
        MonitorConfig("p", "unix:/run/p.qmp", mode="poll"),
        MonitorConfig("h", "unix:/run/h.qmp", mode="persistent"),
    ]
    assert is_allowed("unix:/run/p.qmp", (), monitors)
    assert not is_allowed("unix:/run/h.qmp", (), monitors)
    assert not is_allowed("unix:/run/other.qmp", (), monitors)
    assert is_allowed("unix:/run/h.qmp", ("unix:/run/*.qmp",), monitors)
    document = json.loads(sd_document(monitors, ()))
    assert document == [
        {
            "targets": ["unix:/run/p.qmp"],
            "labels": {"__meta_qmp_vm": "p", "__meta_qmp_mode": "poll"},
        }
    ]


@pytest.mark.parametrize(
    "header, default, expected",
    [
        (None, 5.0, 5.0),
        ("10", 5.0, 5.0),
        ("10", 30.0, 9.5),
        ("0.6", 5.0, 0.3),
        ("junk", 5.0, 5.0),
        ("-1", 5.0, 5.0),
        ("1e9", 5.0, 5.0),
        ("100", 60.0, 10.0),
        (None, 60.0, 10.0),
    ],
)
def test_timeout_from_prometheus_header(header, default, expected):
    """The header only shortens a probe: never past the config's timeout, nor 10 s."""
    headers = {} if header is None else {"x-prometheus-scrape-timeout-seconds": header}
    assert timeout_from(headers, default) == pytest.approx(expected)


# -- the real exporter probing real QEMU ---------------------------------------------------


@pytest.fixture
def workdir():
    """A short directory for sockets and symlinks (unix paths are limited to 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="qmpx-probe-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def pc_vm(qemu_factory, tmp_path):
    image, image_format = make_disk_image(tmp_path)
    vm = qemu_factory(machine="pc", name="pc-probe", extra_args=pc_vm_args(image, image_format))
    wait_listening(vm.qmp_path)
    return vm


def probe(exporter: ExporterProcess, target: str, **headers: str):
    return exporter.get("/probe", params={"target": target}, headers=headers)


def test_probe_and_discovery_with_default_allow_list(pc_vm, qemu_factory, workdir):
    other = qemu_factory(name="other")
    discovered = qemu_factory(name="found")
    for vm in (other, discovered):
        wait_listening(vm.qmp_path)
    link = workdir / "found1.qmp"
    link.symlink_to(discovered.qmp_path)
    config = {
        "poll_interval": "15s",
        "monitors": [{"name": "pc", "address": pc_vm.qmp_address(), "mode": "poll"}],
        "discovery": [{"glob": f"{workdir}/*.qmp", "mode": "poll", "rescan": "1s"}],
        "probe": {"http_sd": True},
    }
    with ExporterProcess(config) as exporter:
        # Discovery: the symlinked socket is polled under its stem.
        wait_for(lambda: exporter.value("qemu_up", vm="found1") == 1)

        response = probe(exporter, pc_vm.qmp_address())
        assert response.status_code == 200, response.text
        samples = parse_samples(response.text)
        assert samples[("qemu_up", (("vm", "pc"),))] == 1
        disk = (("device", "disk0"), ("vm", "pc"))
        assert ("qemu_block_read_bytes_total", disk) in samples
        assert samples[("qemu_memory_base_bytes", (("vm", "pc"),))] == 64 * 1024 * 1024
        assert ("qmp_exporter_connections_total", (("vm", "pc"),)) not in samples
        promtool = shutil.which("promtool")
        assert promtool, "promtool is required"
        lint = subprocess.run(
            [promtool, "check", "metrics"], input=response.text, capture_output=True, text=True
        )
        assert lint.returncode == 0, lint.stdout + lint.stderr

        # A discovered poll-mode monitor may be probed too (by its path, as it was found).
        response = probe(exporter, str(link))
        assert response.status_code == 200
        assert parse_samples(response.text)[("qemu_up", (("vm", "found1"),))] == 1

        # Anything else is refused with the reason.
        response = probe(exporter, other.qmp_path)
        assert response.status_code == 400
        assert "not allowed" in response.text and "poll-mode" in response.text
        response = probe(exporter, "/tmp/../etc/passwd")
        assert response.status_code == 400 and "normalised" in response.text
        response = exporter.get("/probe")
        assert response.status_code == 400 and "missing target" in response.text

        # HTTP SD lists what /probe accepts.
        groups = exporter.get("/discovery").json()
        assert sorted(g["labels"]["__meta_qmp_vm"] for g in groups) == ["found1", "pc"]
        assert {"targets": [f"unix:{link}"]}.items() <= next(
            g for g in groups if g["labels"]["__meta_qmp_vm"] == "found1"
        ).items()

        # A socket that vanishes has its series removed within one rescan.
        link.unlink()
        gone = time.monotonic()
        wait_for(lambda: exporter.value("qemu_up", vm="found1") is None, timeout=5)
        assert time.monotonic() - gone < 2.5
        assert probe(exporter, str(link)).status_code == 400


def test_probe_with_allow_globs_unreachable_and_timeout(workdir):
    silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    silent.bind(str(workdir / "silent.qmp"))  # accepts connections, never greets
    silent.listen(4)
    config = {
        "poll_interval": "15s",
        "timeout": "10s",
        "probe": {"allow": [f"{workdir}/*.qmp"]},
    }
    try:
        with ExporterProcess(config) as exporter:
            response = probe(exporter, str(workdir / "missing.qmp"))
            assert response.status_code == 200
            samples = parse_samples(response.text)
            assert samples[("qemu_up", (("vm", f"unix:{workdir}/missing.qmp"),))] == 0

            started = time.monotonic()
            response = probe(
                exporter,
                str(workdir / "silent.qmp"),
                **{"X-Prometheus-Scrape-Timeout-Seconds": "1.5"},
            )
            took = time.monotonic() - started
            assert response.status_code == 200
            assert (
                parse_samples(response.text)[("qemu_up", (("vm", f"unix:{workdir}/silent.qmp"),))]
                == 0
            )
            assert took < 1.5, f"the probe took {took:.2f}s, past Prometheus's 1.5s timeout"
            assert took > 0.5, "it waited for the greeting, within the budget"

            response = probe(exporter, str(workdir / "sub" / "x.qmp"))
            assert response.status_code == 400 and "matches no probe.allow glob" in response.text
            assert exporter.get("/discovery").status_code == 404
    finally:
        silent.close()


async def _two_mebibytes(session: Session, request: dict) -> None:
    """A block device whose name makes the answer 2 MiB long."""
    await session.reply(request, [{"device": "x" * (2 << 20), "stats": {}}])


def test_a_live_probe_takes_lines_up_to_the_configs_limit(tmp_path: Path) -> None:
    """``qmp_max_line_bytes`` applies to a live probe as to the pollers (a VM with ~1,700
    drives answers ``query-blockstats`` with more than the default 1 MiB)."""

    async def probe_with(max_line: int | None) -> tuple[bool, str]:
        path = str(tmp_path / f"big-{max_line}.qmp")
        handlers = {"query-blockstats": _two_mebibytes}
        async with ScriptedMonitor(path, handlers=handlers):
            monitor = MonitorConfig("big", path, "poll", collectors=("block",))
            state = await probe_state(monitor, 5.0, max_line)
            return state.up, state.error_reason

    assert asyncio.run(probe_with(None)) == (False, "protocol")
    assert asyncio.run(probe_with(4 << 20)) == (True, "")
