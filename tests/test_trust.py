"""The trust model of process discovery (``docs/security.md``), against the attack round's
cases: each scenario runs real QEMUs of root and of an unprivileged attacker (uid 65534) in
a PID namespace of its own, so the scan sees only them (:mod:`tests.helpers.trust_scenarios`)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from qmp_exporter.config import ConfigError, parse_yaml
from qmp_exporter.discovery import Discoverer, Scan
from qmp_exporter.exposition.selfmetrics import QemuProcesses
from qmp_exporter.host import Host
from qmp_exporter.host.processes import ProcessScan, SkippedProcess
from tests.helpers.pidns import run_isolated
from tests.helpers.qemu_versions import QemuBuild


def scenario(name: str, qemu_binary: QemuBuild, **kwargs: Any) -> Any:
    return run_isolated(
        f"tests.helpers.trust_scenarios:{name}",
        qemu=qemu_binary.command(),
        env=qemu_binary.environ(),
        **kwargs,
    )


def rows(result: dict[str, Any]) -> dict[int, dict[str, Any]]:
    return {row["pid"]: row for row in result["rows"]}


def monitors(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {monitor["name"]: monitor for monitor in result["monitors"]}


def test_a_users_qemu_never_takes_a_vms_name(qemu_binary):
    """D2 (P3): the attacker's QEMU, started first with web-01's name and UUID, is not a VM;
    root's web-01 is watched. Trusting the attacker's user makes theirs a VM, and then the
    older process keeps the name, whatever the PIDs."""
    result = scenario("name_squat", qemu_binary)
    pids, found = result["pids"], result["scan"]
    by_pid = rows(found)
    assert pids["attacker"] not in by_pid, "an untrusted user's process is not a VM"
    assert [pids["attacker"], "untrusted_user"] in found["skipped"]
    assert by_pid[pids["victim"]]["problem"] == ""
    web = monitors(found)["web-01"]
    assert web["address"] == f"unix:{result['sockets']['victim']}"
    assert web["process"] == [pids["victim"], [0, 0]], "bound to root's process"

    assert pids["younger"] < pids["older"], "the scenario gives the younger QEMU the lower PID"
    assert by_pid[pids["older"]]["problem"] == ""
    assert by_pid[pids["younger"]]["problem"] == "name_clash"
    assert monitors(found)["twin"]["address"] == f"unix:{result['sockets']['older']}"

    trusting = result["scan_trusting_nobody"]
    assert rows(trusting)[pids["attacker"]]["problem"] == ""
    assert rows(trusting)[pids["victim"]]["problem"] == "name_clash", "the older one wins"
    assert trusting["skipped"] == []


def test_a_swapped_socket_is_not_followed(qemu_binary):
    """D3 (P4): sockets swapped for symlinks to Proxmox VE's per-command socket and to
    libvirt's monitor, and a ``//`` path into Proxmox's directory: only Proxmox's own VM is
    watched through its socket, in poll mode; libvirt's monitor is never used."""
    result = scenario("symlink_swap", qemu_binary)
    pids, found = result["pids"], result["scan"]
    by_pid = rows(found)
    assert [pids["nb"], "untrusted_user"] in found["skipped"]
    assert by_pid[pids["px"]]["problem"] == "foreign_socket"
    assert by_pid[pids["lv"]]["problem"] == "owned_by_libvirt"
    assert by_pid[pids["vic"]]["problem"] == "owned_by_libvirt"
    assert by_pid[pids["slash"]]["problem"] == "foreign_socket"
    proxmox = [m for m in found["monitors"] if m["address"] == "unix:/run/qemu-server/101.qmp"]
    assert [(m["name"], m["mode"], m["labels"]) for m in proxmox] == [
        ("vm101", "poll", {"vmid": "101"})
    ]
    assert [m["name"] for m in found["monitors"]] == ["vm101"]


def test_a_command_line_cannot_point_the_exporter_anywhere(qemu_binary):
    """D3 (P12), D4 (P10): argvs rewritten to name a TCP service, a root-only unix socket and a
    remote address are not watched and never connected to; JSON nested 2,000 deep is one bad
    process, not a failed scan; a poller bound to a process refuses another's socket, and
    nothing a non-QMP peer sends is shown."""
    result = scenario("argv_rewrite", qemu_binary)
    pids, found = result["pids"], result["scan"]
    by_pid = rows(found)
    assert by_pid[pids["tcp"]]["problem"] == "foreign_socket"
    assert by_pid[pids["unix"]]["problem"] == "foreign_socket"
    assert by_pid[pids["far"]]["problem"] == "not_loopback"
    assert by_pid[pids["deep"]]["problem"] == "bad_command_line"
    assert by_pid[pids["honest"]]["problem"] == "", "a QEMU's own TCP monitor is watched"
    assert [m["name"] for m in found["monitors"]] == ["honest"]
    assert result["hits_after_scan"] == [0, 0], "the scan connects to nothing"

    polls = result["polls"]
    assert polls["honest_as_itself"]["up"] is True
    refused = polls["honest_as_another"]
    assert (refused["up"], refused["reason"]) == (False, "connect")
    assert f"not process {pids['tcp']}" in refused["error"]
    private = polls["private_as_unix"]
    assert private["up"] is False
    assert "token" not in private["error"] and "3f9a2c" not in private["error"]


def test_the_package_user_trusts_owners_not_names(qemu_binary):
    """D3 (P7, P11): as the package's user, another user's ``exe`` cannot be read: a copy of
    Python named kvm, a renamed Python and 20 shell scripts named kvm, all the attacker's, are
    skipped and counted; root's QEMU is watched."""
    result = scenario("package_mode", qemu_binary, fakes=20)
    pids, found = result["pids"], result["scan"]
    assert [row["pid"] for row in found["rows"]] == [pids["good"]]
    assert found["rows"][0]["problem"] == ""
    assert [m["name"] for m in found["monitors"]] == ["good"]
    fakes = {pids["python_kvm"], pids["renamed"], *pids["scripts"]}
    assert {pid for pid, reason in found["skipped"] if reason == "untrusted_user"} == fakes


def test_a_socket_hidden_from_the_exporter_is_not_visible(qemu_binary):
    """The unit's PrivateTmp/ProtectHome: a QEMU whose socket the exporter cannot see is listed
    with ``problem="not_visible"``, not as a watched VM that is down."""
    result = scenario("sandboxed_socket", qemu_binary)
    (row,) = result["scan"]["rows"]
    assert (row["pid"], row["problem"]) == (result["pids"]["hidden"], "not_visible")
    assert result["scan"]["monitors"] == []


def test_each_skipped_process_is_counted_once_by_reason():
    processes = QemuProcesses()
    first = Scan(processes=(), skipped=(SkippedProcess(10, 5.0, "untrusted_user"),))
    processes.scanned(first)
    processes.scanned(first)  # the same process in the next scan
    processes.scanned(
        Scan(
            processes=(),
            skipped=(
                SkippedProcess(10, 5.0, "untrusted_user"),
                SkippedProcess(10, 9.0, "untrusted_user"),  # the PID reused
                SkippedProcess(11, 6.0, "not_qemu"),
            ),
        )
    )
    text = "".join(
        f"{s.name}{s.labels} {s.value}\n" for m in processes.collect() for s in m.samples
    )
    assert "qmp_exporter_processes_skipped_total{'reason': 'untrusted_user'} 2" in text
    assert "qmp_exporter_processes_skipped_total{'reason': 'not_qemu'} 1" in text


def test_trusted_users_in_config():
    config = parse_yaml(
        "discovery:\n  - processes: true\n    trusted_users: [root, 107, '65534']\n"
    )
    assert config.discovery[0].trusted_users == ("root", "107", "65534")
    assert parse_yaml("discovery:\n  - processes: true\n").discovery[0].trusted_users is None
    with pytest.raises(ConfigError) as err:
        parse_yaml(
            "discovery:\n  - processes: true\n"
            "    trusted_users: [no-such-user-here, 'a b', -1, true]\n"
        )
    message = str(err.value)
    assert "discovery[0].trusted_users[0]: no user 'no-such-user-here'" in message
    for index in (1, 2, 3):
        assert f"discovery[0].trusted_users[{index}]: expected a user name or id" in message


class SkippingHost(Host):
    """A host whose process scan finds only skipped processes (as many users' fakes)."""

    def __init__(self, skipped: tuple[SkippedProcess, ...]) -> None:
        super().__init__()
        self.skipped = skipped

    def qemu_processes(self, trusted_users=None, proxmox_dir=None) -> ProcessScan:
        return ProcessScan((), self.skipped)


def test_skipped_processes_are_logged_in_one_line_per_scan(caplog):
    fakes = tuple(SkippedProcess(100 + i, 1.0, "untrusted_user") for i in range(500))
    host = SkippingHost(fakes)

    async def scans() -> None:
        discoverer = Discoverer(parse_yaml("discovery:\n  - processes: true\n"), host)
        await discoverer.rescan()
        await discoverer.rescan()  # the same processes: nothing more
        host.skipped = (*fakes, SkippedProcess(9, 2.0, "not_qemu"))
        await discoverer.rescan()

    with caplog.at_level(logging.INFO, logger="qmp_exporter.discovery"):
        asyncio.run(scans())
    lines = [r.getMessage() for r in caplog.records if "not VMs" in r.getMessage()]
    assert lines == [
        "discovery: 500 processes named like QEMU are not VMs (untrusted_user: 500; PIDs "
        "100, 101, 102, 103, 104, 105, 106, 107, 108, 109, ...): docs/security.md",
        "discovery: 1 processes named like QEMU are not VMs (not_qemu: 1; PIDs 9): "
        "docs/security.md",
    ]
