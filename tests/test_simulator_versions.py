"""The simulator speaks QEMU 7.2 or 10.0 (``SimulatedVM(qemu_version=...)``,
``python -m qmp_exporter.sim --qemu-version``): its answers have the members and types of the
real answers of that version (tests/transcripts/), and differ where the versions differ."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from qmp_exporter.sim import SimulatedVM
from qmp_exporter.sim.dialect import encoded_greeting
from qmp_exporter.sim.fleet import fleet_vm
from tests.helpers.transcripts import VERSIONS, answer, greeting, shape

REPO = Path(__file__).resolve().parents[1]

by_version = pytest.mark.parametrize("version", VERSIONS, ids=[f"qemu-{v}" for v in VERSIONS])


def ours(vm: SimulatedVM, command: str, arguments: dict[str, Any] | None = None) -> Any:
    return json.loads(vm.answer(command, arguments))


def real(version: str, scenario: str, command: str, nth: int = 0) -> Any:
    return answer(version, scenario, command, nth=nth)["return"]


@by_version
def test_greeting_and_version_are_those_of_the_version(version):
    vm = SimulatedVM("vm-alpha", qemu_version=version)
    sent = json.loads(encoded_greeting("modern", version))
    assert shape(sent) == shape(greeting(version))
    recorded = real(version, "01", "query-version")
    assert sent["QMP"]["version"] == ours(vm, "query-version")
    assert ours(vm, "query-version")["qemu"] == recorded["qemu"]
    if version != "7.2":  # 7.2 keeps the simulator's own package string
        assert ours(vm, "query-version") == recorded


@by_version
def test_query_answers_have_the_shape_of_the_real_ones(version):
    vm = SimulatedVM("vm-alpha", vnc_service="5955", qemu_version=version)
    for command in ("query-status", "query-name", "query-uuid", "query-kvm", "query-vnc",
                    "query-memory-size-summary", "query-migrate", "query-spice",
                    "query-stats-schemas", "query-cpus-fast"):  # fmt: skip
        if command == "query-cpus-fast":
            vm.cpus = 0
        assert shape(ours(vm, command)) == shape(real(version, "01", command)), command
    vm.vnc_connect("127.0.0.1", 47906)
    assert shape(ours(vm, "query-vnc")) == shape(real(version, "02", "query-vnc", nth=1))


@by_version
def test_stats_schemas_are_those_of_a_qemu_without_kvm(version):
    vm = SimulatedVM("vm-alpha", qemu_version=version)
    assert ours(vm, "query-stats-schemas") == real(version, "01", "query-stats-schemas")
    assert ours(vm, "query-stats-schemas", {"provider": "kvm"}) == []


@by_version
def test_block_answers_have_the_shape_of_the_real_ones(version):
    vm = SimulatedVM("vm-pc", block_devices=["disk0"], cpus=1, qemu_version=version)
    stats = ours(vm, "query-blockstats")[0]
    real_stats = real(version, "04", "query-blockstats")[0]
    assert set(stats) == set(real_stats)
    assert shape(stats["stats"]) == shape(real_stats["stats"])
    drive = ours(vm, "query-block")[0]
    real_drive = real(version, "04", "query-block")[0]
    assert shape(drive) == shape(real_drive)
    assert shape(ours(vm, "query-cpus-fast")) == shape(real(version, "04", "query-cpus-fast"))


def test_the_versions_differ_where_real_qemu_does():
    old, new = (SimulatedVM("vm", block_devices=["d"], qemu_version=v) for v in VERSIONS)
    assert "singlestep" in ours(old, "query-status")
    assert "singlestep" not in ours(new, "query-status")
    assert "active" not in ours(old, "query-block")[0]["inserted"]
    assert ours(new, "query-block")[0]["inserted"]["active"] is True
    assert "zone_append_bytes" in ours(new, "query-blockstats")[0]["stats"]
    assert "zone_append_bytes" not in ours(old, "query-blockstats")[0]["stats"]
    with pytest.raises(ValueError, match="qemu_version"):
        SimulatedVM("vm", qemu_version="9.2")


def test_fleet_vms_take_the_version():
    import random

    assert fleet_vm(0, "sim-0", random.Random(0), qemu_version="10.0").qemu_version == "10.0"
    assert fleet_vm(0, "sim-0", random.Random(0)).qemu_version == "7.2"


def test_command_line_serves_qemu_10(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "qmp_exporter.sim", "--count", "1", "--dir", str(tmp_path),
         "--qemu-version", "10.0"],
        stdout=subprocess.PIPE, text=True, cwd=REPO,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready 1"
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(str(tmp_path / "sim-0000.qmp"))
            line = sock.makefile("rb").readline()
        assert json.loads(line) == greeting("10.0")
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
