"""The real Linux test guest: Debian's kernel, busybox and qemu-guest-agent in an initramfs,
and an ext4 data disk, built by ``scripts/build-test-guest.sh`` (CONTRIBUTING.md, "The test
guest") and cached outside the clone::

    files = guest_files()                       # builds it on first use; fails loudly if it cannot
    with running_guest(build, files, tmp_path) as guest:   # returns once the agent answers
        guest.agent("guest-get-host-name")     # {"host-name": "qmp-test-guest"}
        guest.qmp_path                          # the VM's QMP socket (nobody connected)

The guest runs under TCG (this host's KVM refuses the nested MSRs of ``-cpu host``/``max``),
256 MiB, with the data disk on virtio-blk (``snapshot=on``: the cached image is never written),
qemu-ga on a virtio-serial port named ``org.qemu.guest_agent.0``, a virtio balloon, pvpanic,
virtio-net on ``-netdev user`` (10.0.2.15/24) and its console in ``serial.log``.

:class:`AgentConnection` is a minimal raw guest-agent exchange for the tests (JSON lines,
``guest-sync-delimited`` and its 0xFF resync), not the package's client.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.helpers.images import wait_listening
from tests.helpers.qemu import _die_with_parent
from tests.helpers.qemu_versions import QemuBuild

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "scripts" / "build-test-guest.sh"

#: The environment variable naming the folder the guest is built and cached in.
GUEST_DIR_ENV = "QMP_EXPORTER_GUEST_DIR"

#: What the builder sets in the guest.
HOSTNAME = "qmp-test-guest"
DATA_MOUNT = "/data"
DATA_LABEL = "qmp-test-data"
ADDRESS = "10.0.2.15"

#: How long :func:`running_guest` waits for the agent to answer (a TCG boot takes ~4 s on 2
#: shared cores).
BOOT_TIMEOUT = 60.0

#: How long a build may take (a cold one downloads ~72 MB of packages).
BUILD_TIMEOUT = 900.0


@dataclass(frozen=True)
class GuestFiles:
    """A built guest: its folder, kernel (``vmlinux``: Debian's ``vmlinuz`` uncompressed, which
    QEMU boots through PVH, ~4 s faster under TCG), initramfs, data disk and package versions."""

    directory: Path
    kernel: Path
    initrd: Path
    disk: Path
    packages: tuple[str, ...]


def guest_dir() -> Path:
    """The cache folder: $QMP_EXPORTER_GUEST_DIR, else ~/.cache/qmp-exporter/test-guest."""
    if explicit := os.environ.get(GUEST_DIR_ENV):
        return Path(explicit)
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "qmp-exporter" / "test-guest"


@functools.cache
def guest_files() -> GuestFiles:
    """The built guest, built (or checked against the package versions apt offers) by
    ``scripts/build-test-guest.sh`` once per test process. Raises :class:`GuestUnavailable`
    with the builder's output when it cannot be built."""
    directory = guest_dir()
    try:
        done = subprocess.run(
            ["bash", str(BUILD_SCRIPT), str(directory)],
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise GuestUnavailable(f"{BUILD_SCRIPT} {directory} did not finish: {error}") from None
    if done.returncode != 0:
        tail = "\n".join(done.stderr.splitlines()[-15:])
        raise GuestUnavailable(
            f"the test guest could not be built: {BUILD_SCRIPT} {directory} exited "
            f"{done.returncode} (it needs apt-get with Debian 12's lists, dpkg-deb, mkfs.ext4 "
            f"and network access to a Debian mirror; CONTRIBUTING.md, 'The test guest'):\n{tail}"
        )
    files = GuestFiles(
        directory,
        directory / "vmlinux",
        directory / "initrd.img",
        directory / "data.img",
        tuple(
            line
            for line in (directory / "stamp").read_text().splitlines()
            if not line.startswith("builder=")
        ),
    )
    for path in (files.kernel, files.initrd, files.disk):
        if not path.is_file():
            raise GuestUnavailable(f"{BUILD_SCRIPT} succeeded but left no {path}")
    return files


class GuestUnavailable(RuntimeError):
    """The guest cannot be built here (the message says why and what it needs)."""


class AgentError(RuntimeError):
    """The agent answered a command with an error."""


class AgentConnection:
    """A minimal raw guest-agent exchange over the agent's unix socket: one JSON command per
    line; ``guest-sync-delimited`` answers after a 0xFF byte, which also ends any partial input
    the agent holds. Synced on :meth:`sync`; answers are read in order."""

    def __init__(self, path: str, timeout: float = 10.0) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        self._sock.connect(path)
        self._buffer = b""
        self._ids = itertools.count(int(time.time()) % 100_000 * 1000)

    def close(self) -> None:
        self._sock.close()

    def sync(self, timeout: float, attempt: float = 2.0) -> None:
        """Send ``guest-sync-delimited`` until the agent answers the latest one (answers to
        earlier ones, queued while the agent was not up, are skipped); fail after
        ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            sync_id = next(self._ids)
            self._send({"execute": "guest-sync-delimited", "arguments": {"id": sync_id}})
            attempt_end = min(deadline, time.monotonic() + attempt)
            while (left := attempt_end - time.monotonic()) > 0:
                answer = self._read(left, after_delimiter=True)
                if answer is not None and answer.get("return") == sync_id:
                    return
            if time.monotonic() >= deadline:
                raise TimeoutError(f"the guest agent did not answer within {timeout:g}s")

    def command(self, execute: str, arguments: dict[str, Any] | None = None) -> Any:
        """Run one command; its ``return`` value (raises :class:`AgentError` on ``error``)."""
        message: dict[str, Any] = {"execute": execute}
        if arguments is not None:
            message["arguments"] = arguments
        self._send(message)
        answer = self._read(self._sock.gettimeout() or 10.0)
        if answer is None:
            raise TimeoutError(f"no answer from the guest agent to {execute}")
        if "error" in answer:
            raise AgentError(f"{execute}: {answer['error']}")
        return answer["return"]

    def _send(self, message: dict[str, Any]) -> None:
        self._sock.sendall(json.dumps(message).encode() + b"\n")

    def _read(self, timeout: float, *, after_delimiter: bool = False) -> dict[str, Any] | None:
        """The next JSON line (after the next 0xFF when ``after_delimiter``), or None when
        none came within ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            if after_delimiter and b"\xff" in self._buffer:
                self._buffer = self._buffer[self._buffer.index(b"\xff") + 1 :]
                after_delimiter = False
            if not after_delimiter and b"\n" in self._buffer:
                line, self._buffer = self._buffer.split(b"\n", 1)
                line = line.replace(b"\xff", b"").strip()
                if line:
                    answer: dict[str, Any] = json.loads(line)
                    return answer
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self._sock.settimeout(left)
            try:
                chunk = self._sock.recv(65536)
            except TimeoutError:
                return None
            finally:
                self._sock.settimeout(10.0)
            if not chunk:
                raise ConnectionError("the guest agent's socket closed")
            self._buffer += chunk


@dataclass
class RunningGuest:
    """A started guest whose agent has answered."""

    process: subprocess.Popen[bytes]
    qmp_path: str
    agent_path: str
    serial_log: Path
    boot_seconds: float

    def agent(self, execute: str, arguments: dict[str, Any] | None = None) -> Any:
        """One agent command's ``return`` value, on a connection of its own (the agent
        serves one client: none is held between commands, so other clients may connect)."""
        connection = AgentConnection(self.agent_path)
        try:
            connection.sync(timeout=10.0)
            return connection.command(execute, arguments)
        finally:
            connection.close()

    def serial_tail(self, lines: int = 30) -> str:
        try:
            text = self.serial_log.read_text(errors="replace")
        except OSError:
            return "(no serial log)"
        return "\n".join(text.splitlines()[-lines:])


def guest_args(files: GuestFiles, directory: Path) -> list[str]:
    """The QEMU arguments (after the build's own) that start the guest with its sockets in
    ``directory``."""
    return [
        "-accel",
        "tcg",
        "-m",
        "256",
        "-nodefaults",
        "-display",
        "none",
        "-kernel",
        str(files.kernel),
        "-initrd",
        str(files.initrd),
        "-append",
        "console=ttyS0",
        "-serial",
        f"file:{directory / 'serial.log'}",
        "-qmp",
        f"unix:{directory / 'qmp.sock'},server=on,wait=off",
        "-drive",
        f"file={files.disk},format=raw,if=none,id=data0,snapshot=on",
        "-device",
        "virtio-blk-pci,drive=data0,id=vblk0",
        "-device",
        "virtio-serial-pci,id=vser0",
        "-chardev",
        f"socket,id=qga0,path={directory / 'qga.sock'},server=on,wait=off",
        "-device",
        "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0",
        "-device",
        "virtio-balloon-pci,id=balloon0",
        "-device",
        "pvpanic-pci",
        "-netdev",
        "user,id=net0",
        "-device",
        "virtio-net-pci,netdev=net0,id=nic0",
    ]


@contextmanager
def running_guest(
    build: QemuBuild, files: GuestFiles, directory: Path, timeout: float = BOOT_TIMEOUT
) -> Iterator[RunningGuest]:
    """Start the guest on ``build`` with its sockets and serial log in ``directory`` (keep
    the path short: a unix socket path has 108 bytes), wait until its agent answers (at most
    ``timeout`` seconds, failing with the serial log's tail), yield it, kill it."""
    directory.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    stderr_path = directory / "qemu.stderr"
    with open(stderr_path, "wb") as stderr_file:
        process = subprocess.Popen(
            build.command(*guest_args(files, directory)),
            env=build.environ(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr_file,
            start_new_session=True,  # a ^C in the test run does not reach QEMU first
            # SIGKILL when the test process dies (the death signal follows the forking thread).
            preexec_fn=(
                _die_with_parent if threading.current_thread() is threading.main_thread() else None
            ),
        )
    connection: AgentConnection | None = None
    try:
        agent_path = str(directory / "qga.sock")
        try:
            wait_listening(agent_path, timeout=20.0)
            connection = AgentConnection(agent_path)
            connection.sync(timeout=max(1.0, timeout - (time.monotonic() - started)))
        except (AssertionError, OSError, TimeoutError) as error:
            exited = process.poll()
            stderr = stderr_path.read_text(errors="replace").strip()
            serial = directory / "serial.log"
            tail = (
                "\n".join(serial.read_text(errors="replace").splitlines()[-30:])
                if serial.exists()
                else "(no serial log)"
            )
            raise AssertionError(
                f"the test guest on QEMU {build.version} did not answer on its agent within "
                f"{timeout:g}s ({error}); QEMU "
                + ("runs" if exited is None else f"exited {exited}")
                + (f", its stderr: {stderr}" if stderr else "")
                + f"\nserial log tail:\n{tail}"
            ) from None
        connection.close()  # the agent serves one client: hold none
        connection = None
        yield RunningGuest(
            process,
            str(directory / "qmp.sock"),
            agent_path,
            directory / "serial.log",
            time.monotonic() - started,
        )
    finally:
        if connection is not None:
            connection.close()
        process.kill()
        process.wait(timeout=10)
