"""``qmp-exporter inventory`` against real QEMUs: a running VM, a prelaunch VM, a dead socket."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import time

import pytest
import yaml

from qmp_exporter.inventory import (
    InventoryRow,
    VncInfo,
    add_inventory_arguments,
    format_rows,
    gather_inventory,
    run_inventory,
)
from qmp_exporter.qmp import parse_version
from tests.helpers.tools_qemu import dead_socket, qmp_command, start_qemu, vnc_port

pytestmark = pytest.mark.qemu

KEYS = ["vm", "name", "uuid", "status", "version", "vnc", "error"]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    directory = tmp_path_factory.mktemp("inv")
    running = start_qemu(directory, "vm-alpha", qmp_sockets=2)
    paused = start_qemu(directory, "vm-beta", prelaunch=True, vnc=False)
    dead = dead_socket(directory)
    try:
        yield {"running": running, "prelaunch": paused, "dead": dead, "dir": directory}
    finally:
        running.stop()
        paused.stop()


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
    expected_version = parse_version(qmp_command(running.sockets[1], "query-version")["return"])[0]
    rows = asyncio.run(
        gather_inventory([running.address, prelaunch.address, f"unix:{fleet['dead']}"], 3.0)
    )
    alpha, beta, dead = rows
    assert alpha == InventoryRow(
        vm=running.address,
        name="vm-alpha",
        uuid=running.uuid,
        status="running",
        version=expected_version,
        vnc=VncInfo(True, f"127.0.0.1:{vnc_port(running.sockets[1])}", 0),
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
    import socket

    running = fleet["running"]
    port = vnc_port(running.sockets[1])
    with socket.create_connection(("127.0.0.1", port)) as viewer:
        viewer.recv(12)  # the RFB version: QEMU has registered the client
        [row] = asyncio.run(gather_inventory([running.address], 3.0))
    assert row.vnc.clients == 1


def test_json_keys_exact_and_exit_status_1_when_one_vm_is_dead(fleet):
    status, out, err = _run(["--format", "json", fleet["running"].address, f"unix:{fleet['dead']}"])
    assert status == 1
    data = json.loads(out)
    assert [list(item) for item in data] == [KEYS, KEYS]
    assert data[0]["vnc"]["enabled"] is True and data[0]["error"] is None
    assert data[1]["error"] and data[1]["status"] is None
    assert err == ""


def test_exit_status_0_when_every_vm_answers(fleet):
    status, out, _ = _run(
        ["--format", "yaml", fleet["running"].address, fleet["prelaunch"].address]
    )
    assert status == 0
    data = yaml.safe_load(out)
    assert [d["status"] for d in data] == ["running", "prelaunch"]
    assert [list(d) for d in data] == [KEYS, KEYS]


def test_table_is_aligned_and_says_why_a_vm_did_not_answer(fleet):
    status, out, _ = _run([fleet["running"].address, str(fleet["dead"])])
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
                    {"name": "alpha", "address": fleet["running"].address, "mode": "poll"},
                    {"name": "beta", "address": fleet["prelaunch"].address},
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


def test_bad_config_is_exit_status_2(fleet):
    config = fleet["dir"] / "bad.yml"
    config.write_text("monitors: [{name: x}]\n")
    status, out, err = _run(["--config.file", str(config)])
    assert status == 2 and out == ""
    assert "monitors[0].address: required" in err


def test_a_held_socket_times_out_without_delaying_the_others(fleet, tmp_path):
    import socket

    # A listening socket that never greets: the inventory must give up on it after the
    # timeout while the real VM still answers.
    silent = tmp_path / "silent.qmp"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(silent))
    server.listen(4)
    try:
        started = time.monotonic()
        rows = asyncio.run(gather_inventory([f"unix:{silent}", fleet["running"].address], 0.5))
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
