"""Real QEMU for tests: start ``qemu-system-x86_64 -M none`` with QMP sockets (and VNC), kill it.

Use the fixtures in ``tests/conftest.py`` rather than this module directly::

    def test_something(qemu_factory):
        vm = qemu_factory(name="vm-a", monitors=2, vnc=True, paused=True)
        vm.qmp_paths[0]      # "/tmp/qmpx-.../qmp0.sock" (give it to the client under test)
        vm.qmp_address(1)    # "unix:/tmp/qmpx-.../qmp1.sock"
        vm.vnc_port          # 5900 + display, found free at start
        qmp_command(vm.qmp_paths[1], "stop")   # a state change from the test's own monitor
        vm.kill()            # SIGKILL; vm.restart() brings it back on the same sockets

Readiness: :meth:`QemuVM.start` returns once every QMP socket and the VNC port listen
(from ``/proc/net/unix`` and ``/proc/net/tcp``, without connecting: a connection would use
QEMU's single client slot, or make VNC events). QEMU may still be a few milliseconds from
sending its greeting; a QMP client's greeting timeout covers that.

Every VM started here is killed by :meth:`QemuVM.close` (the fixtures call it), and its
temporary directory removed; at interpreter exit any VM still running is killed, and a QEMU
started from the main thread gets SIGKILL from the kernel if the test process dies first.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid as uuid_module
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.helpers.qemu_versions import QemuBuild

QEMU_BINARY = "qemu-system-x86_64"

#: VNC displays are drawn at random from this range (ports 6000..7899): below the
#: kernel's ephemeral range, and random so that tests running at once rarely collide.
VNC_DISPLAYS = range(100, 2000)

#: How long :meth:`QemuVM.start` waits for the sockets before giving up.
START_TIMEOUT = 20.0


#: VMs that may be running, for the exit hook.
_LIVE_VMS: weakref.WeakSet[QemuVM] = weakref.WeakSet()


@atexit.register
def _kill_leftovers() -> None:
    for vm in list(_LIVE_VMS):
        with contextlib.suppress(Exception):
            vm.kill()


def _die_with_parent() -> None:
    """In the child before exec: ask the kernel for SIGKILL when the parent thread ends."""
    pr_set_pdeathsig = 1
    ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGKILL)


class QemuStartError(RuntimeError):
    """QEMU exited or did not become ready; the message holds its stderr."""


def find_qemu() -> str | None:
    """Path of ``qemu-system-x86_64``, or ``None`` when it is not installed."""
    return shutil.which(QEMU_BINARY)


def tcp_port_listening(port: int, host: str = "127.0.0.1") -> bool:
    """True when something listens on ``host:port`` (IPv4), read from ``/proc/net/tcp``
    so that nothing connects."""
    # The kernel prints the address as the native-endian 32-bit value (LE here).
    wanted = f"{int.from_bytes(socket.inet_aton(host), 'little'):08X}:{port:04X}"
    try:
        with open("/proc/net/tcp") as table:
            next(table)
            for row in table:
                fields = row.split()
                if fields[1] == wanted and fields[3] == "0A":  # 0A = LISTEN
                    return True
    except OSError:
        pass
    return False


def unix_sockets_listening(paths: Sequence[str]) -> bool:
    """True when every path is a listening unix socket, read from ``/proc/net/unix``
    (flag ``__SO_ACCEPTCON``) so that nothing connects. (The socket file appears at bind(),
    a moment before listen(): a connect in between is refused.)"""
    wanted = set(paths)
    try:
        with open("/proc/net/unix", errors="surrogateescape") as table:  # any bytes in a name
            next(table)
            for row in table:
                fields = row.split(None, 7)
                if len(fields) == 8 and int(fields[3], 16) & 0x10000:
                    wanted.discard(fields[7].strip())
    except OSError:
        return False
    return not wanted


def unix_socket_listening(path: str) -> bool:
    """True when a unix socket at ``path`` is listening (see :func:`unix_sockets_listening`)."""
    return unix_sockets_listening([path])


def tcp_port_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when ``host:port`` can be bound now (it may be taken a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def free_vnc_display() -> int:
    """A VNC display number whose port (5900 + N) is free right now."""
    for _ in range(200):
        display = random.choice(VNC_DISPLAYS)
        if tcp_port_free(5900 + display):
            return display
    raise QemuStartError("no free VNC display found")


class QemuVM:
    """One ``qemu-system-x86_64 -M none`` process with ``monitors`` QMP unix sockets.

    ``paused`` adds ``-S`` (the VM starts in ``prelaunch``); ``vnc`` adds
    ``-vnc 127.0.0.1:N`` on a free display; ``extra_args`` go at the end of the command line.
    ``build`` (the ``qemu_binary`` fixture: one version of the matrix) gives the binary, its
    environment and its first arguments; without it, ``binary`` or the system's QEMU runs.
    ``pass_fds`` stay open in QEMU under their numbers (a tap given as ``fd=N``).
    """

    def __init__(
        self,
        *,
        name: str | None = None,
        uuid: str | None = None,
        monitors: int = 1,
        paused: bool = False,
        vnc: bool = False,
        machine: str = "none",
        extra_args: Sequence[str] = (),
        binary: str | None = None,
        build: QemuBuild | None = None,
        pass_fds: Sequence[int] = (),
    ) -> None:
        if monitors < 1:
            raise ValueError("a test VM needs at least one QMP monitor")
        if build is None:
            build = QemuBuild("system", binary or find_qemu() or QEMU_BINARY)
        self.build = build
        self.binary = build.binary
        self.name = name
        self.uuid = uuid
        self.paused = paused
        self.machine = machine
        self.extra_args = tuple(extra_args)
        self.pass_fds = tuple(pass_fds)
        # Short path under /tmp: unix socket paths are limited to 107 bytes.
        self.workdir = Path(tempfile.mkdtemp(prefix="qmpx-", dir="/tmp"))
        self.qmp_paths = [str(self.workdir / f"qmp{i}.sock") for i in range(monitors)]
        self.vnc_display: int | None = -1 if vnc else None
        self.process: subprocess.Popen[bytes] | None = None
        self._stderr_path = self.workdir / "stderr.log"

    # -- what tests use -------------------------------------------------------------------

    @property
    def qmp_path(self) -> str:
        """The first monitor's socket path."""
        return self.qmp_paths[0]

    def qmp_address(self, index: int = 0) -> str:
        """The address string of monitor ``index`` (``unix:/...``)."""
        return f"unix:{self.qmp_paths[index]}"

    @property
    def vnc_port(self) -> int:
        """The VNC TCP port on 127.0.0.1 (only with ``vnc=True``, after start)."""
        if self.vnc_display is None or self.vnc_display < 0:
            raise RuntimeError("this VM has no VNC server (start it with vnc=True)")
        return 5900 + self.vnc_display

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError("QEMU is not started")
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def argv(self) -> list[str]:
        """The command line of the current (or next) start."""
        argv = [self.binary, *self.build.prefix_args, "-M", self.machine]
        argv += ["-accel", "tcg", "-display", "none"]
        argv += ["-nodefaults", "-no-user-config"]
        if self.name is not None:
            argv += ["-name", self.name]
        if self.uuid is not None:
            argv += ["-uuid", self.uuid]
        if self.paused:
            argv.append("-S")
        if self.vnc_display is not None and self.vnc_display >= 0:
            argv += ["-vnc", f"127.0.0.1:{self.vnc_display}"]
        for path in self.qmp_paths:
            argv += ["-qmp", f"unix:{path},server=on,wait=off"]
        argv += self.extra_args
        return argv

    def start(self, timeout: float = START_TIMEOUT) -> QemuVM:
        """Start QEMU and wait until its sockets are ready; raise :class:`QemuStartError`
        with QEMU's stderr if it exits. A VNC display taken meanwhile is retried."""
        if self.running:
            raise RuntimeError("QEMU is already running")
        want_vnc = self.vnc_display is not None
        for attempt in range(5):
            if want_vnc and (attempt or self.vnc_display == -1):
                self.vnc_display = free_vnc_display()
            try:
                self._spawn_and_wait(timeout)
                return self
            except QemuStartError as err:
                if want_vnc and "VNC" in str(err) and attempt < 4:
                    continue  # another test took the display between our probe and QEMU
                raise
        raise AssertionError("unreachable")

    def kill(self, sig: int = signal.SIGKILL) -> int | None:
        """Send ``sig`` and wait for QEMU to exit; return its exit status."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(timeout=10)

    def restart(self, timeout: float = START_TIMEOUT) -> QemuVM:
        """Kill QEMU if it runs and start it again on the same sockets and VNC display."""
        self.kill()
        return self.start(timeout)

    def close(self) -> None:
        """Kill QEMU (if running) and remove the temporary directory. Idempotent."""
        try:
            self.kill()
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def stderr_text(self) -> str:
        """What QEMU wrote to stderr so far."""
        try:
            return self._stderr_path.read_text(errors="replace")
        except OSError:
            return ""

    def __enter__(self) -> QemuVM:
        return self.start() if not self.running else self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = f"pid {self.process.pid}" if self.running and self.process else "stopped"
        return f"<QemuVM {self.name or ''} {state} {self.workdir}>"

    # -- internals ------------------------------------------------------------------------

    def _spawn_and_wait(self, timeout: float) -> None:
        for path in self.qmp_paths:  # a stale socket file would look ready at once
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        in_main_thread = threading.current_thread() is threading.main_thread()
        with open(self._stderr_path, "wb") as stderr:
            self.process = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                env=self.build.environ(),
                pass_fds=self.pass_fds,
                start_new_session=True,  # a ^C in the test run does not reach QEMU first
                # The death signal follows the *thread* that forked: only from the main one.
                preexec_fn=_die_with_parent if in_main_thread else None,
            )
        _LIVE_VMS.add(self)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise QemuStartError(
                    f"QEMU exited with status {self.process.returncode}: "
                    f"{self.stderr_text().strip()}\nargv: {self.argv}"
                )
            if self._ready():
                return
            time.sleep(0.01)
        self.kill()
        raise QemuStartError(
            f"QEMU not ready within {timeout:g}s: {self.stderr_text().strip()}\nargv: {self.argv}"
        )

    def _ready(self) -> bool:
        # The socket file appears at bind(), a moment before listen(): wait for the latter.
        if not unix_sockets_listening(self.qmp_paths):
            return False
        return self.vnc_display is None or tcp_port_listening(self.vnc_port)


def new_uuid() -> str:
    """A random UUID string for ``-uuid``."""
    return str(uuid_module.uuid4())


def qmp_command(
    path: str,
    command: str,
    arguments: dict[str, Any] | None = None,
    timeout: float = 5.0,
) -> Any:
    """Run one command on a QMP unix socket with a plain blocking socket, independent of the
    client library under test: connect, greeting, ``qmp_capabilities``, the command, close.

    For tests that change a VM from their *own* monitor (``stop``, ``cont``): pass a socket
    that the code under test does not hold. Returns ``return``; raises ``RuntimeError`` on
    an ``error`` answer.
    """
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        reader = sock.makefile("rb")
        _read_until(reader, "QMP", deadline)
        for request_id, (name, args) in enumerate(
            [("qmp_capabilities", None), (command, arguments)], start=1
        ):
            message: dict[str, Any] = {"execute": name, "id": request_id}
            if args:
                message["arguments"] = args
            sock.sendall(json.dumps(message).encode() + b"\n")
            answer = _read_until(reader, "id", deadline, request_id)
            if "error" in answer:
                raise RuntimeError(f"{name}: {answer['error']}")
        return answer["return"]


def _read_until(reader: Any, member: str, deadline: float, value: Any = None) -> dict[str, Any]:
    while time.monotonic() < deadline:
        line = reader.readline()
        if not line:
            raise ConnectionError("QMP socket closed")
        message = json.loads(line)
        if member in message and (value is None or message[member] == value):
            return message
    raise TimeoutError(f"no QMP message with {member!r} in time")
