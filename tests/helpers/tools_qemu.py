"""Real QEMUs for the tools' tests (inventory, shell, landing page): start, wait, always kill.

A small local helper; the shared fixtures live in ``tests/helpers/qemu.py``.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

QEMU = "qemu-system-x86_64"


def require_qemu() -> str:
    """The QEMU binary's path; fail loudly (never skip) when it is missing."""
    path = shutil.which(QEMU)
    if path is None:
        raise RuntimeError(f"{QEMU} not found: run scripts/install-test-deps.sh")
    return path


@dataclass
class RunningQemu:
    """One QEMU process with one or more QMP sockets and a VNC server."""

    process: subprocess.Popen[bytes]
    sockets: list[Path]
    name: str
    uuid: str
    log: Path
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return f"unix:{self.sockets[0]}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)


def start_qemu(
    directory: Path,
    name: str,
    *,
    uuid: str | None = None,
    prelaunch: bool = False,
    vnc: bool = True,
    qmp_sockets: int = 1,
) -> RunningQemu:
    """Start ``qemu-system-x86_64 -M none`` and wait until every QMP socket exists."""
    binary = require_qemu()
    uuid = uuid or f"{random.getrandbits(32):08x}-0000-4000-8000-{random.getrandbits(48):012x}"
    sockets = [directory / f"{name.replace('/', '_')}-{i}.qmp" for i in range(qmp_sockets)]
    argv = [binary, "-M", "none", "-accel", "tcg", "-display", "none", "-nodefaults"]
    argv += ["-name", name, "-uuid", uuid]
    for sock in sockets:
        argv += ["-qmp", f"unix:{sock},server=on,wait=off"]
    if vnc:
        base = random.randrange(200, 5000)
        argv += ["-vnc", f"127.0.0.1:{base},to={base + 500}"]
    if prelaunch:
        argv.append("-S")
    log = directory / f"{name.replace('/', '_')}.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    qemu = RunningQemu(process, sockets, name, uuid, log)
    deadline = time.monotonic() + 15
    while not all(s.exists() for s in sockets):
        if process.poll() is not None:
            raise RuntimeError(f"QEMU exited early: {log.read_text(errors='replace')}")
        if time.monotonic() > deadline:
            qemu.stop()
            raise RuntimeError("QEMU did not create its QMP socket within 15s")
        time.sleep(0.02)
    return qemu


def qmp_command(sock: Path, command: str, arguments: dict | None = None) -> dict:
    """Run one command on a QMP socket with a plain blocking client (the test's own monitor)."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(str(sock))
        reader = s.makefile("rb")
        json.loads(reader.readline())
        s.sendall(b'{"execute": "qmp_capabilities"}\n')
        _answer(reader)
        message = {"execute": command, **({"arguments": arguments} if arguments else {})}
        s.sendall(json.dumps(message).encode() + b"\n")
        return _answer(reader)


def _answer(reader) -> dict:
    while True:
        message = json.loads(reader.readline())
        if "return" in message or "error" in message:
            return message


def vnc_port(sock: Path) -> int:
    """The TCP port QEMU's VNC server listens on."""
    return int(qmp_command(sock, "query-vnc")["return"]["service"])


def dead_socket(directory: Path) -> Path:
    """A unix socket file nobody listens on (connect is refused)."""
    path = directory / "dead.qmp"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    s.close()
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def environ_without_proxy() -> dict[str, str]:
    env = dict(os.environ)
    for key in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy"):
        env.pop(key, None)
    return env
