"""``qmp-exporter inventory`` against real QEMUs: a running VM, a prelaunch VM, a dead socket."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from qmp_exporter.config import MonitorConfig
from qmp_exporter.qmp import parse_version
from qmp_exporter.tools.inventory import (
    InventoryRow,
    VncInfo,
    add_inventory_arguments,
    format_rows,
    gather_inventory,
    run_inventory,
)
from tests.helpers.qemu import QemuVM, new_uuid, qmp_command
from tests.helpers.scripted_monitor import ScriptedMonitor

pytestmark = pytest.mark.qemu

ROOT = Path(__file__).resolve().parent.parent
KEYS = ["vm", "name", "uuid", "status", "version", "vnc", "error"]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, qemu_binary):
    """A running VM (two monitors: the second is the test's own), a prelaunch VM, and a
    socket file nobody listens on; the VMs' sockets all sit in one directory for discovery."""
    directory = tmp_path_factory.mktemp("inv")
    running = QemuVM(name="vm-alpha", uuid=new_uuid(), monitors=2, vnc=True, build=qemu_binary)
    paused = QemuVM(name="vm-beta", uuid=new_uuid(), paused=True, build=qemu_binary)
    running.qmp_paths = [str(directory / "vm-alpha-0.qmp"), str(directory / "vm-alpha-1.qmp")]
    paused.qmp_paths = [str(directory / "vm-beta-0.qmp")]
    dead = directory / "dead.qmp"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(dead))
    listener.close()
    with running.start(), paused.start():
        yield {"running": running, "prelaunch": paused, "dead": dead, "dir": directory}


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_inventory_arguments(parser)
    return parser.parse_args(argv)


def _run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = run_inventory(_parse(argv), out, err)
    return status, out.getvalue(), err.getvalue()


def test_rows_for_running_prelaunch_and_dead(fleet):
    running, prelaunch = fleet["running"], fleet["prelaunch"]
    expected_version = parse_version(qmp_command(running.qmp_paths[1], "query-version"))[0]
    addresses = [running.qmp_address(), prelaunch.qmp_address(), f"unix:{fleet['dead']}"]
    rows = asyncio.run(gather_inventory(addresses, 3.0))
    alpha, beta, dead = rows
    assert alpha == InventoryRow(
        vm=running.qmp_address(),
        name="vm-alpha",
        uuid=running.uuid,
        status="running",
        version=expected_version,
        vnc=VncInfo(True, f"127.0.0.1:{running.vnc_port}", 0),
        error=None,
    )
    assert (beta.name, beta.uuid, beta.status, beta.error) == (
        "vm-beta",
        prelaunch.uuid,
        "prelaunch",
        None,
    )
    assert beta.vnc == VncInfo(enabled=False)
    assert dead.vm == f"unix:{fleet['dead']}"
    assert "connection refused" in dead.error
    assert (dead.name, dead.status, dead.version, dead.vnc) == (None, None, None, None)


def test_vnc_clients_are_counted(fleet):
    running = fleet["running"]
    with socket.create_connection(("127.0.0.1", running.vnc_port)) as viewer:
        viewer.recv(12)  # the RFB version: QEMU has registered the client
        [row] = asyncio.run(gather_inventory([running.qmp_address()], 3.0))
    assert row.vnc.clients == 1


def test_json_keys_exact_and_exit_status_1_when_one_vm_is_dead(fleet):
    status, out, err = _run(
        ["--format", "json", fleet["running"].qmp_address(), f"unix:{fleet['dead']}"]
    )
    assert status == 1
    data = json.loads(out)
    assert [list(item) for item in data] == [KEYS, KEYS]
    assert data[0]["vnc"]["enabled"] is True and data[0]["error"] is None
    assert data[1]["error"] and data[1]["status"] is None
    assert err == ""


def test_exit_status_0_when_every_vm_answers(fleet):
    status, out, _ = _run(
        ["--format", "yaml", fleet["running"].qmp_address(), fleet["prelaunch"].qmp_address()]
    )
    assert status == 0
    data = yaml.safe_load(out)
    assert [d["status"] for d in data] == ["running", "prelaunch"]
    assert [list(d) for d in data] == [KEYS, KEYS]


def test_table_is_aligned_and_says_why_a_vm_did_not_answer(fleet):
    status, out, _ = _run([fleet["running"].qmp_address(), str(fleet["dead"])])
    assert status == 1
    header, alpha, dead = out.splitlines()
    assert header.split() == ["VM", "NAME", "UUID", "STATUS", "VERSION", "VNC", "CLIENTS", "ERROR"]
    for column in ("NAME", "STATUS", "ERROR"):
        assert alpha[header.index(column) - 1] == " "
    assert alpha[header.index("NAME") :].startswith("vm-alpha")
    assert dead[header.index("STATUS") :].startswith("-")
    assert "connection refused" in dead[header.index("ERROR") :]


def test_config_monitors_are_asked_with_their_names(fleet):
    config = fleet["dir"] / "inventory.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "timeout": "2s",
                "monitors": [
                    {"name": "alpha", "address": fleet["running"].qmp_address(), "mode": "poll"},
                    {"name": "beta", "address": fleet["prelaunch"].qmp_address()},
                ],
            }
        )
    )
    status, out, _ = _run(["--config.file", str(config), "--format", "json"])
    assert status == 0
    assert [(d["vm"], d["name"]) for d in json.loads(out)] == [
        ("alpha", "vm-alpha"),
        ("beta", "vm-beta"),
    ]


def test_discovered_sockets_are_asked_too(fleet, tmp_path):
    # Discovery globs for sockets; the dead socket is found as well and gives an error row.
    config = tmp_path / "discover.yml"
    pattern = str(fleet["dir"] / "*.qmp")
    config.write_text(yaml.safe_dump({"discovery": [{"glob": pattern, "mode": "poll"}]}))
    status, out, _ = _run(["--config.file", str(config), "--format", "json", "--timeout", "2"])
    rows = {d["vm"]: d for d in json.loads(out)}
    assert status == 1
    assert rows["vm-alpha-0"]["name"] == "vm-alpha" and rows["vm-alpha-0"]["error"] is None
    assert rows["vm-beta-0"]["status"] == "prelaunch"
    assert "connection refused" in rows["dead"]["error"]


def test_the_command_line_runs_inventory(fleet, tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "qmp_exporter",
            "inventory",
            "--format",
            "json",
            fleet["running"].qmp_address(),
            f"unix:{fleet['dead']}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 1, result.stderr
    assert [d["name"] for d in json.loads(result.stdout)] == ["vm-alpha", None]
    ok = subprocess.run(
        [
            sys.executable,
            "-m",
            "qmp_exporter",
            "--config.file",
            str(tmp_path / "none.yml"),
            "inventory",
            fleet["prelaunch"].qmp_address(),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    # --config.file before the subcommand is honoured (and here it does not exist).
    assert ok.returncode == 2 and "none.yml" in ok.stderr


def test_bad_config_is_exit_status_2(fleet):
    config = fleet["dir"] / "bad.yml"
    config.write_text("monitors: [{name: x}]\n")
    status, out, err = _run(["--config.file", str(config)])
    assert status == 2 and out == ""
    assert "monitors[0].address: required" in err


def test_a_held_socket_times_out_without_delaying_the_others(fleet, tmp_path):
    # A listening socket that never greets: the inventory must give up on it after the
    # timeout while the real VM still answers.
    silent = tmp_path / "silent.qmp"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(silent))
    server.listen(4)
    try:
        started = time.monotonic()
        rows = asyncio.run(
            gather_inventory([f"unix:{silent}", fleet["running"].qmp_address()], 0.5)
        )
        elapsed = time.monotonic() - started
    finally:
        server.close()
    assert "no QMP greeting" in rows[0].error
    assert rows[1].error is None and rows[1].status == "running"
    assert elapsed < 2.5


def test_table_fits_the_width_and_escapes_control_characters():
    rows = [
        InventoryRow("vm\x1b[31mred", name="n" * 40, uuid="u" * 36, error="e" * 200),
        InventoryRow("ok", status="running", version="7.2.22", vnc=VncInfo(False)),
    ]
    text = format_rows(rows, "table", width=100)
    assert all(len(line) <= 100 for line in text.splitlines())
    assert "\x1b" not in text and "\\x1b" in text
    assert "off" in text.splitlines()[2]
    with pytest.raises(ValueError, match="unknown format"):
        format_rows(rows, "xml")


@pytest.mark.parametrize(
    ("dialect", "version"), [("2009", "0.12.50"), ("2010", "0.13.0"), ("modern", "7.2.22")]
)
def test_old_dialects_give_version_and_status(tmp_path, dialect, version):
    # Real QEMU only speaks the modern dialect; the seed era's answers come from the
    # scripted monitor: version as a string, query-status without "status", no VNC command.
    async def run() -> tuple[InventoryRow, list[str]]:
        path = str(tmp_path / f"{dialect}.qmp")
        async with ScriptedMonitor(path, dialect=dialect, name="seed-vm") as monitor:
            [row] = await gather_inventory([monitor.address], 2.0)
            return row, monitor.commands()

    row, sent = asyncio.run(run())
    assert (row.name, row.version, row.status, row.error) == ("seed-vm", version, "running", None)
    assert row.vnc is None and row.uuid is None  # CommandNotFound: unknown, not an error
    assert all(c == "qmp_capabilities" or c.startswith("query-") for c in sent)


def test_an_address_listed_twice_is_asked_once(tmp_path):
    # Two connections to one socket would queue behind each other (one client per socket).
    async def run() -> tuple[list[InventoryRow], int]:
        async with ScriptedMonitor(str(tmp_path / "twice.qmp"), name="vm-twice") as monitor:
            alpha = MonitorConfig(name="alpha", address=monitor.address)
            rows = await gather_inventory([alpha, monitor.address], 1.0)
            return rows, monitor.connections

    rows, connections = asyncio.run(run())
    assert connections == 1
    assert [(r.vm, r.name, r.error) for r in rows] == [
        ("alpha", "vm-twice", None),
        (rows[1].vm, "vm-twice", None),
    ]
    assert rows[1].vm.startswith("unix:")


def test_a_field_answered_wrongly_is_shown_as_unknown_and_the_others_still_are(tmp_path):
    # The poller fails a poll on these answers; inventory shows "-" for each bad field only.
    handlers = {"query-vnc": {"enabled": True, "clients": "many"}, "query-name": {"name": 42}}

    async def run() -> InventoryRow:
        path = str(tmp_path / "wrong.qmp")
        async with ScriptedMonitor(path, handlers=handlers) as monitor:
            [row] = await gather_inventory([monitor.address], 2.0)
            return row

    row = asyncio.run(run())
    assert (row.name, row.vnc, row.error) == (None, None, None)
    assert (row.status, row.version) == ("running", "7.2.22")
    assert format_rows([row]).splitlines()[1].split()[1] == "-"
