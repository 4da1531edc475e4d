"""The attack round's process-discovery cases (``docs/security.md``), each a scenario run by
:func:`tests.helpers.pidns.run_isolated` in its own PID and mount namespace: real QEMUs of
root and of the unprivileged attacker (uid 65534), then one process scan, whose outcome is
returned as JSON for the test to check.

Each scenario takes ``qemu`` (the argv prefix of the QEMU build under test) and ``env`` (its
environment), and returns ``{"pids": {...}, "scan": {...}}`` plus what it measured.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from qmp_exporter.config import DiscoveryConfig, MonitorConfig
from qmp_exporter.discovery import scan
from qmp_exporter.host import Host
from tests.helpers.pidns import AS_NOBODY, ROOT

#: The package's user in these scenarios (no passwd entry needed), as the attack round had it.
PACKAGE_UID = 64001
_PADDING = "P" * 6000  # room in argv for a rewrite


class Lab:
    """A scratch directory (``run/`` writable by all, ``root/`` root's only) and the
    processes started in it."""

    def __init__(self, qemu: Sequence[str], env: dict[str, str]) -> None:
        self.qemu = list(qemu)
        self.env = env
        self.dir = Path(tempfile.mkdtemp(prefix="trust-", dir="/tmp"))
        self.dir.chmod(0o755)
        self.run = self.dir / "run"
        self.run.mkdir(mode=0o1777)
        self.run.chmod(0o1777)
        self.root = self.dir / "root"
        self.root.mkdir(mode=0o700)
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(
        self,
        *args: str,
        nobody: bool = False,
        wait_for: Path | None = None,
        prefix: Sequence[str] = (),
    ) -> int:
        """Start a ``-M none`` QEMU (as the attacker when ``nobody``); its PID."""
        argv = [*prefix, *(AS_NOBODY if nobody else ()), *self.qemu, "-M", "none"]
        argv += ["-display", "none", "-nodefaults", *args]
        return self.spawn(argv, wait_for=wait_for)

    def padded(self, name: str) -> int:
        """Start root's QEMU with room in its argv for a rewrite, once it has started (its
        monitor listens: QEMU has read its argv)."""
        sock = self.root / f"{name}-pad.qmp"
        return self.start(
            "-name", _PADDING, "-qmp", f"unix:{sock},server=on,wait=off", wait_for=sock
        )

    def spawn(self, argv: Sequence[str], *, wait_for: Path | None = None) -> int:
        """Start any command; its PID (once ``wait_for`` exists, when given)."""
        process = subprocess.Popen(argv, env=self.env, stderr=subprocess.DEVNULL)
        self.processes.append(process)
        if wait_for is not None:
            wait_path(wait_for, process)
        return process.pid

    def close(self) -> None:
        for process in self.processes:
            process.kill()
            process.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def wait_path(path: Path, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + 30
    while not os.path.lexists(path):
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{path} did not appear")
        time.sleep(0.02)


def wait_comm(pid: int, name: str) -> None:
    """Wait until process ``pid``'s name (``comm``) holds ``name`` (it has exec'd)."""
    deadline = time.monotonic() + 30
    while name not in Path(f"/proc/{pid}/comm").read_text():
        if time.monotonic() > deadline:
            raise RuntimeError(f"process {pid} is not {name}")
        time.sleep(0.01)


def set_argv(pid: int, argv: Sequence[str]) -> None:
    """Rewrite what ``/proc/PID/cmdline`` shows, in place (as a process may do to itself):
    the new NUL-separated argv over the old one, the rest zeroed."""
    wait_comm(pid, "qemu")
    with open(f"/proc/{pid}/stat", "rb") as file:
        fields = file.read().rsplit(b")", 1)[1].split()
    start, end = int(fields[45]), int(fields[46])  # proc(5) fields 48 and 49
    blob = b"\0".join(a.encode() for a in argv) + b"\0"
    if len(blob) > end - start:
        raise ValueError(f"{len(blob)} bytes do not fit in {end - start}")
    with open(f"/proc/{pid}/mem", "r+b", buffering=0) as mem:
        mem.seek(start)
        mem.write(blob + b"\0" * (end - start - len(blob)))


def next_pid(pid: int) -> None:
    """Make the next process of this PID namespace get ``pid``."""
    Path("/proc/sys/kernel/ns_last_pid").write_text(str(pid - 1))


def scan_now(
    trusted_users: Sequence[str] | None = None, configured: Sequence[MonitorConfig] = ()
) -> dict[str, Any]:
    """One process scan (``- processes: true``), as JSON."""
    entry = DiscoveryConfig(
        "",
        "",
        processes=True,
        trusted_users=None if trusted_users is None else tuple(trusted_users),
    )
    found = scan([entry], configured, Host(), read_unwatched=False)
    return {
        "rows": [
            {"pid": r.pid, "vm": r.vm, "monitor": r.monitor, "problem": r.problem}
            for r in found.processes or ()
        ],
        "monitors": [
            {"name": m.name, "address": m.address, "mode": m.mode, "process": m.process,
             "labels": dict(m.labels)}
            for m in found.monitors
        ],
        "skipped": [[s.pid, s.reason] for s in found.skipped],
        "problems": list(found.problems),
    }  # fmt: skip


def name_squat(qemu: list[str], env: dict[str, str]) -> dict[str, Any]:
    """P3 (D2): the attacker's QEMU takes a VM's name and UUID before root's VM starts; and
    two of root's QEMUs with one name, the younger with the lower PID (a restart or a
    same-host migration)."""
    lab = Lab(qemu, env)
    try:
        uuid = "6f1c1f8e-0c55-4d59-9e8e-2a7d1a5b9c01"
        attacker_sock = lab.run / "attacker.qmp"
        attacker = lab.start(
            "-S", "-name", "web-01", "-uuid", uuid,
            "-qmp", f"unix:{attacker_sock},server=on,wait=off",
            nobody=True, wait_for=attacker_sock,
        )  # fmt: skip
        victim_sock = lab.root / "web-01.qmp"
        victim = lab.start(
            "-name", "web-01", "-uuid", uuid,
            "-qmp", f"unix:{victim_sock},server=on,wait=off", wait_for=victim_sock,
        )  # fmt: skip
        next_pid(3000)
        older_sock = lab.root / "twin-a.qmp"
        older = lab.start(
            "-name", "twin", "-qmp", f"unix:{older_sock},server=on,wait=off", wait_for=older_sock
        )
        time.sleep(0.05)  # start times are counted in clock ticks
        next_pid(300)
        younger_sock = lab.root / "twin-b.qmp"
        younger = lab.start(
            "-name", "twin", "-qmp", f"unix:{younger_sock},server=on,wait=off",
            wait_for=younger_sock,
        )  # fmt: skip
        return {
            "pids": {"attacker": attacker, "victim": victim, "older": older, "younger": younger},
            "sockets": {"victim": str(victim_sock), "older": str(older_sock)},
            "scan": scan_now(),
            "scan_trusting_nobody": scan_now(["65534"]),
        }
    finally:
        lab.close()


def symlink_swap(qemu: list[str], env: dict[str, str]) -> dict[str, Any]:
    """P4 (D3): a QEMU's socket swapped for a symlink to Proxmox VE's per-command socket or to
    libvirt's monitor, by the attacker and (as a trusted user gone bad) by root; and a
    rewritten argv naming ``unix://run/qemu-server/101.qmp`` (a leading ``//``)."""
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", "/run"], check=True)  # this namespace's
    proxmox = Path("/run/qemu-server")
    proxmox.mkdir()
    lab = Lab(qemu, env)
    try:
        libvirt = lab.root / "libvirt/qemu/domain-1-vic"
        libvirt.mkdir(parents=True)
        lab.root.chmod(0o711)
        pids = {}
        for who, nobody in (("nb", True), ("px", False), ("lv", False)):
            sock = lab.run / f"{who}.qmp"
            pids[who] = lab.start(
                "-name", f"scratch-{who}", "-qmp", f"unix:{sock},server=on,wait=off",
                nobody=nobody, wait_for=sock,
            )  # fmt: skip
        pids["slash"] = lab.padded("slash")
        vm101 = proxmox / "101.qmp"
        pids["vm101"] = lab.start(
            "-name", "vm101", "-qmp", f"unix:{vm101},server=on,wait=off", wait_for=vm101
        )
        monitor = libvirt / "monitor.sock"
        pids["vic"] = lab.start(
            "-name", "vic",
            "-chardev", f"socket,id=charmonitor,path={monitor},server=on,wait=off",
            "-mon", "chardev=charmonitor,id=monitor,mode=control", wait_for=monitor,
        )  # fmt: skip
        swaps = {"nb": vm101, "px": vm101, "lv": monitor}
        for who, target in swaps.items():
            link = lab.run / f"{who}.qmp"
            link.unlink()
            link.symlink_to(target)
        set_argv(
            pids["slash"],
            [qemu[0], "-name", "slash", "-qmp", "unix://run/qemu-server/101.qmp,server=on"],
        )
        return {"pids": pids, "scan": scan_now()}
    finally:
        lab.close()


def _serve_banner(server: socket.socket, banner: bytes, accepted: list[int]) -> None:
    while True:
        try:
            client, _ = server.accept()
        except OSError:
            return
        accepted.append(1)
        with client:
            client.sendall(banner)


def _banner_server(family: int, address: Any, banner: bytes) -> tuple[socket.socket, list[int]]:
    server = socket.socket(family)
    if family != socket.AF_UNIX:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(address)
    server.listen(8)
    accepted: list[int] = []
    threading.Thread(target=_serve_banner, args=(server, banner, accepted), daemon=True).start()
    return server, accepted


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def argv_rewrite(qemu: list[str], env: dict[str, str]) -> dict[str, Any]:
    """P12 (D3, D4): root's QEMUs whose command lines name a TCP service, a root-only unix
    socket, a remote address, and JSON nested 2,000 deep; one honest TCP monitor; then a
    poller bound to a process meeting another's socket."""
    import asyncio

    from qmp_exporter.polling.poller import MonitorPoller, PollSettings

    lab = Lab(qemu, env)
    try:
        tcp, tcp_hits = _banner_server(
            socket.AF_INET, ("127.0.0.1", 0), b"220 internal-mail ESMTP secret-banner\r\n"
        )
        tcp_port = tcp.getsockname()[1]
        private = lab.root / "private.sock"
        unix, unix_hits = _banner_server(
            socket.AF_UNIX, str(private), b"root-only service: token=3f9a2c\n"
        )
        pids = {name: lab.padded(name) for name in ("tcp", "unix", "far", "deep")}
        honest_port = free_port()
        honest = f"tcp:127.0.0.1:{honest_port}"
        pids["honest"] = lab.start("-name", "honest", "-qmp", f"{honest},server=on,wait=off")
        deep = "[" * 2000 + "]" * 2000
        rewrites = {
            "tcp": ["-name", "via-tcp", "-qmp", f"tcp:127.0.0.1:{tcp_port},server=on"],
            "unix": ["-name", "via-unix", "-qmp", f"unix:{private},server=on"],
            "far": ["-name", "far", "-qmp", "tcp:10.1.2.3:6379,server=on"],
            "deep": ["-name", "deep", "-netdev", f'{{"type":"tap","x":{deep}}}'],
        }
        for name, argv in rewrites.items():
            set_argv(pids[name], [qemu[0], *argv])
        for _ in range(100):  # the honest QEMU listens once started
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", honest_port)) == 0:
                    break
            time.sleep(0.05)
        found = scan_now()
        hits_after_scan = [len(tcp_hits), len(unix_hits)]

        async def poll(address: str, pid: int) -> dict[str, Any]:
            monitor = MonitorConfig(
                "bound", address, mode="poll", collectors=(), process=(pid, (0, 0))
            )
            poller = MonitorPoller(monitor, PollSettings(timeout=5), host=Host())
            await poller.poll_once()
            state = poller.state
            return {"up": state.up, "reason": state.error_reason, "error": state.error}

        polls = {
            "honest_as_itself": asyncio.run(poll(honest, pids["honest"])),
            "honest_as_another": asyncio.run(poll(honest, pids["tcp"])),
            "private_as_unix": asyncio.run(poll(f"unix:{private}", pids["unix"])),
        }
        tcp.close()
        unix.close()
        return {"pids": pids, "scan": found, "hits_after_scan": hits_after_scan, "polls": polls}
    finally:
        lab.close()


_PACKAGE_SCAN = """
import json, sys
sys.path.insert(0, sys.argv[1])
from tests.helpers.trust_scenarios import scan_now
print(json.dumps(scan_now()))
"""


def package_mode(qemu: list[str], env: dict[str, str], fakes: int = 20) -> dict[str, Any]:
    """P7, P11 (D3): the exporter as the package's unprivileged user, which cannot read
    another user's ``exe``: a copy of Python named ``kvm``, Python renamed by ``prctl``,
    ``fakes`` shell scripts named ``kvm``, all the attacker's; and root's real QEMU."""
    lab = Lab(qemu, env)
    try:
        (lab.dir / "srv").mkdir(mode=0o755)
        kvm = lab.run / "kvm"
        shutil.copy(sys.executable, kvm)
        kvm.chmod(0o755)
        pids: dict[str, Any] = {}
        sleeper = "import time; time.sleep(600)"
        pids["python_kvm"] = lab.spawn(
            [
                *AS_NOBODY,
                str(kvm),
                "-c",
                sleeper,
                "-name",
                "web-01",
                "-qmp",
                f"unix:{lab.run}/f.qmp,server=on",
            ]
        )
        renamed = (
            'import ctypes, time; ctypes.CDLL(None).prctl(15, b"qemu-system-x86_64"); '
            "time.sleep(600)"
        )
        pids["renamed"] = lab.spawn(
            [
                *AS_NOBODY,
                sys.executable,
                "-c",
                renamed,
                "-name",
                "probe-ssh",
                "-qmp",
                "tcp:127.0.0.1:22,server=on",
            ]
        )
        script = lab.run / "fake" / "kvm"
        script.parent.mkdir(mode=0o755)
        script.write_text("#!/bin/sh\nsleep 600\n")
        script.chmod(0o755)
        pids["scripts"] = [
            lab.spawn(
                [
                    *AS_NOBODY,
                    str(script),
                    "pad",
                    "-name",
                    f"fake-{i}",
                    "-qmp",
                    f"unix:{lab.run}/n{i}.qmp,server=on",
                ]
            )
            for i in range(fakes)
        ]
        good = lab.dir / "srv" / "good.qmp"
        pids["good"] = lab.start(
            "-name", "good", "-qmp", f"unix:{good},server=on,wait=off", wait_for=good
        )
        wait_comm(pids["renamed"], "qemu-system")
        for pid in [pids["python_kvm"], *pids["scripts"]]:
            wait_comm(pid, "kvm")
        done = subprocess.run(
            ["setpriv", f"--reuid={PACKAGE_UID}", f"--regid={PACKAGE_UID}", "--clear-groups", "--",
             sys.executable, "-c", _PACKAGE_SCAN, str(ROOT)],
            capture_output=True, text=True, check=True, timeout=60,
        )  # fmt: skip
        import json

        return {"pids": pids, "scan": json.loads(done.stdout)}
    finally:
        lab.close()


def sandboxed_socket(qemu: list[str], env: dict[str, str]) -> dict[str, Any]:
    """The unit's ``PrivateTmp``/``ProtectHome``: a QEMU whose socket is in a directory the
    exporter sees empty (here: a tmpfs mounted only in the QEMU's mount namespace)."""
    lab = Lab(qemu, env)
    try:
        hidden = lab.dir / "hidden"
        hidden.mkdir()
        sock = hidden / "x.qmp"
        quoted = " ".join(
            [*qemu, "-M", "none", "-display", "none", "-nodefaults", "-name", "hidden",
             "-qmp", f"unix:{sock},server=on,wait=off"]
        )  # fmt: skip
        pid = lab.spawn(
            ["unshare", "--mount", "sh", "-c", f"mount -t tmpfs none {hidden} && exec {quoted}"]
        )
        wait_comm(pid, "qemu")
        sock_in_its_namespace = Path(f"/proc/{pid}/root{sock}")
        wait_path(sock_in_its_namespace)  # it listens: its socket exists where it looks
        return {"pids": {"hidden": pid}, "scan": scan_now()}
    finally:
        lab.close()
