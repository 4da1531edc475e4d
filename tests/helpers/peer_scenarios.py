"""Scenarios of the host view's process identity, each run by
:func:`tests.helpers.pidns.run_isolated` in its own PID and mount namespace as root (so that
``ns_last_pid`` hands a chosen PID to a chosen process, and everything started dies with the
scenario); the attacker is nobody
(:data:`~tests.helpers.pidns.AS_NOBODY`), running :mod:`tests.helpers.hostile_listener`.

Each returns, for each way of identifying a unix peer (``pidfd``: ``SO_PEERPIDFD``, as on
this kernel; ``credentials``: the ``SO_PEERCRED`` fallback, as on Debian 12's 6.1), what the
exporter's own poller made of the monitor.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from qmp_exporter.config import MonitorConfig
from qmp_exporter.host import Host
from qmp_exporter.host.procfs import ReadError
from qmp_exporter.polling.collect import choose_collectors, run_collectors
from qmp_exporter.polling.poller import MonitorPoller, PollSettings
from qmp_exporter.qmp import connect
from tests.helpers.pidns import AS_NOBODY
from tests.helpers.qemu import find_qemu

HELPER = str(Path(__file__).with_name("hostile_listener.py"))
#: The two ways of identifying a unix peer, by ``Host(peer_pidfd=...)``.
WAYS = {"pidfd": True, "credentials": False}
COLLECTORS = ("vcpu", "host")


class Logged(logging.Handler):
    """What the exporter logged (warning and info), as text."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []
        logging.getLogger("qmp_exporter").addHandler(self)
        logging.getLogger("qmp_exporter").setLevel(logging.INFO)

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def workdir() -> Path:
    """A scratch directory the attacker may make sockets in."""
    directory = Path(tempfile.mkdtemp(prefix="qmpx-peer-"))
    directory.chmod(0o755)
    run = directory / "run"
    run.mkdir()
    run.chmod(0o1777)
    return run


def qemu_argv(socket_path: Path, name: str) -> list[str]:
    qemu = find_qemu()
    assert qemu is not None, "qemu-system-x86_64 is needed"
    qmp = f"unix:{socket_path},server=on,wait=off"
    return [qemu, "-M", "none", "-display", "none", "-name", name, "-qmp", qmp]


def wait_for_path(path: Path, what: str) -> None:
    deadline = time.monotonic() + 10
    while not path.exists():
        assert time.monotonic() < deadline, f"{what}: {path} never appeared"
        time.sleep(0.02)


def start_with_pid(argv: list[str], pid: int) -> subprocess.Popen[bytes]:
    """``argv`` started as root with PID ``pid`` (free, in this namespace)."""
    Path("/proc/sys/kernel/ns_last_pid").write_text(f"{pid - 1}\n")
    process = subprocess.Popen(argv)
    assert process.pid == pid, f"PID {process.pid}, not {pid}"
    return process


def start_time(pid: int) -> float:
    """Seconds after boot process ``pid`` started (as ``Peer.started``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[19]) / os.sysconf("SC_CLK_TCK")


def poll(address: str, pidfd: bool) -> dict[str, Any]:
    """One poll of the monitor at ``address`` by the exporter's own poller with the ``vcpu``
    and ``host`` collectors: whether it was up, each collector's result, the series of each
    family, and the host figures' values."""
    monitor = MonitorConfig("vm", address, "persistent", collectors=COLLECTORS)
    settings = PollSettings(timeout=10, start_spread=0)
    poller = MonitorPoller(monitor, settings, host=Host(peer_pidfd=pidfd))

    async def once() -> None:
        await poller.poll_once()
        await poller.stop()

    asyncio.run(once())
    state = poller.state
    return {
        "up": state.up,
        "error": str(state.error or ""),
        "results": dict(state.collector_results),
        "series": dict(Counter(name for name, _, _ in state.samples)),
        "host": {
            name: value
            for name, labels, value in state.samples
            if name.startswith("qemu_process_") and not labels
        },
    }


def laundered(cpus: int) -> dict[str, Any]:
    """P5: nobody's listener, made by a process that then execs the real QEMU (root's
    binary, nobody's process); the fake serves QEMU's advertised monitor path and lists
    ``cpus`` vCPUs on QEMU's own threads."""
    run = workdir()
    fake, qmp = run / "fake.sock", run / "q.qmp"
    argv = [*AS_NOBODY, sys.executable, HELPER, "launder", str(fake), str(cpus), str(qmp), "--"]
    helper = subprocess.Popen([*argv, *qemu_argv(qmp, "laundered")])
    wait_for_path(Path(f"{qmp}.taken"), "the fake took QEMU's monitor path")
    logged = Logged()
    found: dict[str, Any] = {way: poll(f"unix:{qmp}", pidfd) for way, pidfd in WAYS.items()}
    found["peer_exe"] = os.readlink(f"/proc/{helper.pid}/exe")
    found["logged"] = logged.lines
    return found


def orphaned() -> dict[str, Any]:
    """P6: nobody's listener whose maker exited; root's QEMU then gets the maker's PID."""
    run = workdir()
    stale, pidfile = run / "stale.sock", run / "maker.pid"
    subprocess.run([*AS_NOBODY, sys.executable, HELPER, "orphan", str(stale), "2", str(pidfile)],
                   check=True)  # fmt: skip
    maker = int(pidfile.read_text())
    victim_qmp = run / "victim.qmp"
    victim = start_with_pid(qemu_argv(victim_qmp, "victim"), maker)
    wait_for_path(victim_qmp, "root's QEMU")
    logged = Logged()
    found: dict[str, Any] = {way: poll(f"unix:{stale}", pidfd) for way, pidfd in WAYS.items()}
    found["victim"] = {"pid": victim.pid, "exe": os.readlink(f"/proc/{victim.pid}/exe")}
    found["victim_own"] = poll(f"unix:{victim_qmp}", True)["host"]
    found["logged"] = logged.lines
    return found


def pid_reused_after_death() -> dict[str, Any]:
    """An ordinary QEMU (root's) read through both ways of identifying it; then B3: host
    collectors made for it outlive it (one holding its files, one past the files budget,
    one closed before), and its PID goes to a root ``sleep``."""
    run = workdir()
    sockets = [run / "a.qmp", run / "b.qmp"]
    argv = [*qemu_argv(sockets[0], "ordinary"), "-qmp", f"unix:{sockets[1]},server=on,wait=off"]
    qemu = subprocess.Popen(argv)
    for path in sockets:
        wait_for_path(path, "QEMU's monitor")
    time.sleep(0.2)
    found: dict[str, Any] = {}
    for (way, pidfd), path in zip(WAYS.items(), sockets, strict=True):
        found[way] = poll(f"unix:{path}", pidfd)
    found["qemu"] = {"pid": qemu.pid, "started": start_time(qemu.pid)}

    async def collectors(held: bool) -> Any:
        host = Host()
        if not held:
            host.limit_held_files(0)
        async with await connect(f"unix:{sockets[0]}", timeout=10) as client:
            chosen = await choose_collectors(client, ["host"], host=host)
            _, results = await run_collectors(chosen, client)
        assert results == (("host", True),), results
        return chosen[0]

    readers = {"held": asyncio.run(collectors(True)), "unheld": asyncio.run(collectors(False))}
    readers["closed"] = asyncio.run(collectors(True))
    readers["closed"].close()  # its files are opened again at its next read
    qemu.kill()
    qemu.wait()
    sleep = start_with_pid(["sleep", "100"], qemu.pid)
    found["sleep"] = {"pid": sleep.pid, "started": start_time(sleep.pid)}

    async def no_cpus(command: str, arguments: dict[str, Any] | None) -> Any:
        return []

    for name, collector in readers.items():
        reads = []
        for _ in range(2):  # a second read must not open anything again
            try:
                samples = asyncio.run(collector.collect(no_cpus))
                reads.append({n: v for n, labels, v in samples if not labels})
            except ReadError as err:
                reads.append(f"ReadError: {err.reason}")
        found[name] = {"reads": reads, "held_files": collector.reader.host.files.held}
    return found
