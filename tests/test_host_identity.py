"""Which process the host view reads (docs/security.md, "Which process the host view reads"):
a monitor's peer is identified beyond its PID, by both ways a kernel offers (``SO_PEERPIDFD``
and the ``SO_PEERCRED`` fallback), must hold the connection's server side, and a reader stays
bound to its process. Attack round 3's P5 (a listener laundered through exec), P6 (a dead
listener's PID reused by root's QEMU) and B3 (a read process's PID reused) each run in their
own PID namespace (``ns_last_pid``), the attacker as nobody; the vCPU caps."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import subprocess
import sys
import time

import pytest

from qmp_exporter.collectors.host import vcpu_threads
from qmp_exporter.collectors.vcpu import MAX_VCPUS, VcpuCollector, parse_cpus_fast
from qmp_exporter.host import Host
from qmp_exporter.host.peer import (
    CREDENTIALS,
    PIDFD,
    TCP,
    PeerUnknown,
    identify,
    unix_peer_inode,
)
from qmp_exporter.host.procfs import GONE, FileBudget, HeldFiles, ReadError, open_process_dir
from tests.helpers.pidns import AS_NOBODY, ROOT, run_isolated
from tests.helpers.qemu import find_qemu

WAYS = ("pidfd", "credentials")
needs_root_and_qemu = pytest.mark.skipif(
    os.geteuid() != 0 or find_qemu() is None, reason="needs root (namespaces) and QEMU"
)


def no_host_figures(poll: dict) -> bool:
    return "host" not in poll["results"] and not any(
        name.startswith(("qemu_process_", "qemu_vcpu_cpu_", "qemu_vcpu_delay_"))
        for name in poll["series"]
    )


@needs_root_and_qemu
def test_a_listener_laundered_through_exec_gets_no_host_figures_and_vcpus_are_capped():
    """P5: nobody listens, then execs root's QEMU binary (``listen()``'s caller is now a real
    QEMU); the fake serving that socket lists 10,000 vCPUs on QEMU's threads."""
    found = run_isolated("tests.helpers.peer_scenarios:laundered", cpus=10_000)
    assert os.path.basename(found["peer_exe"]).startswith("qemu-system"), "really laundered"
    for way in WAYS:
        poll = found[way]
        assert poll["up"] and poll["results"] == {"vcpu": True}, (way, poll)
        assert no_host_figures(poll), (way, poll)
        assert poll["series"]["qemu_vcpu_info"] == MAX_VCPUS, (way, poll)
    refused = [line for line in found["logged"] if "does not serve it" in line]
    capped = [line for line in found["logged"] if "10000 vCPUs" in line]
    assert len(refused) == len(capped) == 2, found["logged"]  # once per exporter (Host)


@needs_root_and_qemu
def test_a_dead_listeners_pid_reused_by_roots_qemu_gives_none_of_its_figures():
    """P6: nobody's listener outlives its maker; root's QEMU gets the maker's PID."""
    found = run_isolated("tests.helpers.peer_scenarios:orphaned")
    assert os.path.basename(found["victim"]["exe"]).startswith("qemu-system")
    assert found["victim_own"]["qemu_process_start_time_seconds"] > 0, "its figures readable"
    for way in WAYS:
        assert found[way]["up"] and no_host_figures(found[way]), (way, found[way])
    assert any("has exited" in line for line in found["logged"]), "pidfd: no live process"
    assert any("is uid 0's now" in line for line in found["logged"]), "fallback: not nobody's"


@needs_root_and_qemu
def test_a_qemu_is_read_by_both_ways_and_its_reused_pid_never():
    """Host figures of an ordinary QEMU by both ways; then B3: collectors made for it (files
    held, past the files budget, closed before) outlive it and its PID goes to a ``sleep``:
    every read fails, none opens the sleep's files."""
    found = run_isolated("tests.helpers.peer_scenarios:pid_reused_after_death")
    boot = Host().boot_time()
    for way in WAYS:
        poll = found[way]
        assert poll["results"] == {"vcpu": True, "host": True}, (way, poll)
        started = poll["host"]["qemu_process_start_time_seconds"]
        assert started == pytest.approx(boot + found["qemu"]["started"], abs=0.02), way
    assert found["sleep"]["pid"] == found["qemu"]["pid"], "the PID was reused"
    for reader in ("held", "unheld", "closed"):
        assert found[reader]["reads"] == [f"ReadError: {GONE}"] * 2, (reader, found[reader])
        assert found[reader]["held_files"] == 0, reader


def test_a_peer_is_identified_by_pid_and_start_both_ways():
    a, b = socket.socketpair()
    with a, b:
        by_pidfd, by_credentials = identify(a, pidfd=True), identify(a, pidfd=False)
    assert by_pidfd.how in (PIDFD, CREDENTIALS)  # CREDENTIALS: a kernel before 6.5
    assert by_credentials.how == CREDENTIALS
    for peer in (by_pidfd, by_credentials):
        assert (peer.pid, peer.uid) == (os.getpid(), os.geteuid())
        assert peer.holder_checked
    assert by_pidfd.started == by_credentials.started > 0
    server = socket.create_server(("127.0.0.1", 0))
    with server, socket.create_connection(server.getsockname()) as client:
        accepted, _ = server.accept()
        with accepted:
            peer = identify(client)
    assert (peer.pid, peer.how, peer.started) == (os.getpid(), TCP, by_pidfd.started)


def test_the_peer_inode_is_the_accepted_sockets():
    server = socket.socket(socket.AF_UNIX)
    with server:
        server.bind(f"\0qmpx-peer-{os.getpid()}")
        server.listen()
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(server.getsockname())
            accepted, _ = server.accept()
            with accepted:
                assert unix_peer_inode(client) == os.fstat(accepted.fileno()).st_ino


def test_a_listener_served_by_another_process_is_refused_both_ways():
    """Laundering without exec: the listener's maker lives, its child accepts and serves."""
    server = socket.socket(socket.AF_UNIX)
    server.bind(f"\0qmpx-handed-{os.getpid()}")
    server.listen()
    child = os.fork()
    if child == 0:  # pragma: no cover (the child)
        _connection, _ = server.accept()
        time.sleep(30)
        os._exit(0)
    server.close()
    try:
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(f"\0qmpx-handed-{os.getpid()}")
            time.sleep(0.2)  # accepted by now
            for pidfd in (True, False):
                with pytest.raises(PeerUnknown, match="does not serve it"):
                    identify(client, pidfd=pidfd)
    finally:
        os.kill(child, 9)
        os.waitpid(child, 0)


def test_a_listener_whose_maker_exited_is_refused_both_ways():
    """(Its PID not reused: the fallback finds no process; with a pidfd, none alive.)"""
    name = f"\0qmpx-orphan-{os.getpid()}"
    code = (
        "import os, socket, time\n"
        f"s = socket.socket(socket.AF_UNIX); s.bind({name!r}); s.listen()\n"
        "child = os.fork()\n"
        "if child:\n    print(child, flush=True); os._exit(0)\n"
        "while True:\n    s.accept()\n"
    )
    maker = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert maker.stdout is not None
    server = int(maker.stdout.readline())
    maker.wait()
    try:
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(name)
            for pidfd in (True, False):
                with pytest.raises(PeerUnknown):
                    identify(client, pidfd=pidfd)
    finally:
        os.kill(server, 9)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (to become nobody)")
def test_without_privileges_the_holder_is_not_checked_and_so_said():
    """Package mode: another user's ``/proc/PID/fd`` is unreadable; the packaged unit's
    ``RestrictAddressFamilies=`` refuses netlink. The peer is still identified (the
    fallback also checks its UID), and ``unchecked`` says why the holder was not."""
    a, b = socket.socketpair()
    with a, b:
        done = subprocess.run(
            [*AS_NOBODY, sys.executable, "-m", "tests.helpers.package_mode", str(b.fileno())],
            pass_fds=(b.fileno(),),
            capture_output=True,
            text=True,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            timeout=30,
            check=False,
        )
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    for way in WAYS:
        unreadable, refused = found["fd_unreadable"][way], found["netlink_refused"][way]
        assert unreadable["pid"] == refused["pid"] == os.getpid()
        assert unreadable["unchecked"] == f"/proc/{os.getpid()}/fd unreadable"
        assert refused["unchecked"].startswith("sock_diag refused")


def test_a_held_file_is_never_opened_again_for_a_later_process():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    directory = open_process_dir(child.pid)
    files = HeldFiles(FileBudget())
    try:
        assert files.read("stat", directory).startswith(f"{child.pid} (".encode())
        child.kill()
        child.wait()
        for _ in range(2):  # the second read opens it again, through the dead process's dir
            with pytest.raises(ReadError) as caught:
                files.read("stat", directory)
            assert caught.value.reason == GONE
    finally:
        files.close_all()
        os.close(directory)


def test_vcpu_lists_are_capped():
    cpus = [{"cpu-index": i, "thread-id": 1000 + i % 3} for i in range(10_000)]
    samples = parse_cpus_fast(cpus)
    assert samples[0] == ("qemu_vcpus", (), 10_000), "the number listed"
    assert len(samples) == 1 + MAX_VCPUS
    threads = vcpu_threads(cpus)
    assert len(threads) == MAX_VCPUS and len({tid for _, tid in threads}) <= MAX_VCPUS


def test_a_capped_vcpu_list_is_logged_once_per_vm(caplog):
    cpus = [{"cpu-index": i, "thread-id": 1000 + i} for i in range(MAX_VCPUS + 1)]

    async def query(command, arguments):
        return cpus

    collector = VcpuCollector(None, "big")
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            assert collector.serves_again(None)  # type: ignore[arg-type] (kept: poll mode)
            asyncio.run(collector.collect(query))
    lines = [r.getMessage() for r in caplog.records if "vCPUs" in r.getMessage()]
    assert lines == [f"VM 'big' lists {MAX_VCPUS + 1} vCPUs: only the first {MAX_VCPUS} get series"]
