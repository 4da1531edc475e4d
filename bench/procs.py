"""The processes a benchmark run starts, and how to read their CPU time and memory.

Every process here is started by the harness and stopped by it (by its own pid).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` so far, from ``/proc/PID/stat``."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS  # utime, stime


def rss_bytes(pid: int) -> int:
    """Resident memory of ``pid`` now, from ``/proc/PID/status`` (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.05) -> Any:
    """Call ``predicate`` until it returns something true; ``TimeoutError`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"not reached within {timeout:g}s (last: {value!r})")
        time.sleep(interval)


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


class Process:
    """A child process with its output in a log file; stopped with SIGTERM, then SIGKILL."""

    def __init__(self, args: Sequence[str], log_path: Path, *, stdout_pipe: bool = False) -> None:
        self.args = list(args)
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            self.args,
            cwd=REPO,
            env=_env(),
            stdout=subprocess.PIPE if stdout_pipe else self._log,
            stderr=self._log,
            text=stdout_pipe,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def check_alive(self) -> None:
        if self.popen.poll() is not None:
            raise RuntimeError(
                f"{self.args[1:3]} exited with {self.popen.returncode}:\n"
                + self.log_path.read_text(errors="replace")[-3000:]
            )

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        if self.popen.stdout is not None:
            self.popen.stdout.close()
        self._log.close()


class FleetProcess(Process):
    """``python -m qmp_exporter.sim`` serving ``count`` VMs, with a control socket."""

    def __init__(self, workdir: Path, count: int) -> None:
        self.directory = workdir / "fleet"
        self.control_path = workdir / "control.sock"
        super().__init__(
            [sys.executable, "-m", "qmp_exporter.sim", "--count", str(count),
             "--dir", str(self.directory), "--control", str(self.control_path)],
            workdir / "fleet.log",
            stdout_pipe=True,
        )  # fmt: skip
        assert self.popen.stdout is not None
        line = self.popen.stdout.readline().strip()
        if line != f"ready {count}":
            self.check_alive()
            raise RuntimeError(f"simulator said {line!r}")
        self.count = count
        self._control = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._control.connect(str(self.control_path))
        self._control_file = self._control.makefile("rwb")

    def monitors(self) -> list[tuple[str, str]]:
        width = max(4, len(str(self.count)))
        names = [f"sim-{i:0{width}d}" for i in range(self.count)]
        return [(name, f"unix:{self.directory / (name + '.qmp')}") for name in names]

    def control(self, command: str) -> str:
        self._control_file.write(command.encode() + b"\n")
        self._control_file.flush()
        return self._control_file.readline().decode().strip()

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = json.loads(self.control("counts"))
        return counts

    def gaps(self) -> dict[str, float]:
        gaps: dict[str, float] = json.loads(self.control("gaps"))
        return gaps

    def act(self, action: str, vm: str) -> float:
        """Change ``vm``; return the fleet's clock just before the change."""
        reply = self.control(f"{action} {vm}")
        if not reply.startswith("ok "):
            raise RuntimeError(reply)
        return float(reply.split()[1])

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self._control_file.close()
            self._control.close()
        super().stop()


class ExporterProcess(Process):
    """The exporter under test: ``python -m qmp_exporter --config.file ...``."""

    def __init__(
        self, workdir: Path, monitors: Sequence[tuple[str, str]], interval: float, tag: str
    ) -> None:
        import yaml

        self.port = free_port()
        config = workdir / f"exporter-{tag}.yml"
        config.write_text(
            yaml.safe_dump(
                {
                    "poll_interval": f"{round(interval * 1000)}ms",
                    "timeout": f"{round(min(5.0, interval) * 1000)}ms",
                    "monitors": [{"name": n, "address": a} for n, a in monitors],
                }
            )
        )
        self.started = time.time()
        super().__init__(
            [sys.executable, "-m", "qmp_exporter", "--config.file", str(config),
             "--web.listen-address", f"127.0.0.1:{self.port}", "--log.level", "warn"],
            workdir / f"exporter-{tag}.log",
        )  # fmt: skip


class RawPollerProcess(Process):
    """The baseline: ``bench/raw_poller.py``, the leanest asyncio poller, same queries.

    Its stdout lines (``up TIME``, ``event VM NAME TIME``) are collected by a thread."""

    def __init__(
        self,
        workdir: Path,
        monitors: Sequence[tuple[str, str]],
        interval: float,
        commands: Sequence[str],
        once: Sequence[str],
        tag: str,
    ) -> None:
        listing = workdir / f"raw-{tag}.json"
        listing.write_text(json.dumps([address for _, address in monitors]))
        self.started = time.time()
        super().__init__(
            [sys.executable, "-m", "bench.raw_poller", "--monitors", str(listing),
             "--interval", str(interval), "--commands", ",".join(commands),
             "--once", ",".join(once)],
            workdir / f"raw-{tag}.log",
            stdout_pipe=True,
        )  # fmt: skip
        self.all_up: float | None = None
        self.events: list[tuple[str, str, float]] = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            words = line.split()
            with self._lock:
                if words[:1] == ["up"]:
                    self.all_up = float(words[1])
                elif words[:1] == ["event"]:
                    self.events.append((words[1], words[2], float(words[3])))

    def alive_and_up(self) -> float | None:
        """When every monitor was up (None: not yet); RuntimeError if the poller exited."""
        self.check_alive()
        return self.all_up

    def event_time(self, vm_path: str, name: str, after: float) -> float | None:
        with self._lock:
            for path, event, when in self.events:
                if path == vm_path and event == name and when >= after:
                    return when
        return None


class StaticServerProcess(Process):
    """The scrape baseline: ``bench/static_server.py`` serving fixed bytes."""

    def __init__(self, workdir: Path, body: bytes, tag: str) -> None:
        self.port = free_port()
        path = workdir / f"static-{tag}.txt"
        path.write_bytes(body)
        super().__init__(
            [sys.executable, "-m", "bench.static_server", "--file", str(path),
             "--port", str(self.port)],
            workdir / f"static-{tag}.log",
        )  # fmt: skip


#: Names the QEMU version of the tests' matrix to run (``7.2``, ``10.0``: see
#: tests/helpers/qemu_versions.py); unset, the system's qemu-system-x86_64 runs.
QEMU_VERSION_ENV = "QMP_EXPORTER_QEMU_VERSION"


def qemu_command() -> tuple[list[str], dict[str, str]]:
    """The first words of the QEMU command line and the environment to start it in."""
    version = os.environ.get(QEMU_VERSION_ENV)
    if version:
        from tests.helpers.qemu_versions import find_build, missing_reason

        build = find_build(version)
        if build is None:
            raise RuntimeError(missing_reason(version))
        return build.command(), build.environ()
    binary = shutil.which("qemu-system-x86_64")
    if binary is None:
        raise RuntimeError(
            "qemu-system-x86_64 is not installed (scripts/install-test-deps.sh installs it)"
        )
    return [binary], dict(os.environ)


class RealQemu:
    """One real ``qemu-system-x86_64 -M none`` with a QMP socket and a VNC display."""

    def __init__(self, workdir: Path, name: str) -> None:
        command, environ = qemu_command()
        self.name = name
        self.socket_path = workdir / f"{name}.qmp"
        self.display = _free_vnc_display()
        self.vnc_port = 5900 + self.display
        self._log = open(workdir / f"{name}.log", "wb")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            [*command, "-M", "none", "-accel", "tcg", "-display", "none", "-nodefaults",
             "-name", name, "-qmp", f"unix:{self.socket_path},server=on,wait=off",
             "-vnc", f"127.0.0.1:{self.display}"],
            stdout=self._log, stderr=self._log, stdin=subprocess.DEVNULL, env=environ,
        )  # fmt: skip

    @property
    def address(self) -> str:
        return f"unix:{self.socket_path}"

    def ready(self) -> bool:
        if self.popen.poll() is not None:
            self._log.flush()
            log = Path(self._log.name).read_text(errors="replace")[-500:]
            raise RuntimeError(f"QEMU {self.name} exited with {self.popen.returncode}: {log}")
        return self.socket_path.exists() and _tcp_listening(self.vnc_port)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(10)
        self._log.close()


def _tcp_listening(port: int) -> bool:
    wanted = f"0100007F:{port:04X}"
    with open("/proc/net/tcp") as table:
        return any(
            line.split()[1] == wanted and line.split()[3] == "0A" for line in list(table)[1:]
        )


_TAKEN_DISPLAYS: set[int] = set()


def _free_vnc_display() -> int:
    for _ in range(200):
        display = random.randint(100, 2000)
        if display in _TAKEN_DISPLAYS:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", 5900 + display))
            except OSError:
                continue
        _TAKEN_DISPLAYS.add(display)
        return display
    raise RuntimeError("no free VNC display found")


def make_workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="qmpx-bench-"))
