"""Run the real exporter (``python -m qmp_exporter``) as a subprocess for tests."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

_LISTENING = re.compile(r"listening on (\S+):(\d+)")
ROOT = Path(__file__).resolve().parents[2]


class ExporterProcess:
    """One exporter process on 127.0.0.1 with a free port; its log lines are collected."""

    def __init__(self, args: Sequence[str], start_timeout: float = 20.0) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
        self.args = [sys.executable, "-m", "qmp_exporter",
                     "--web.listen-address", "127.0.0.1:0", *args]  # fmt: skip
        self.proc = subprocess.Popen(
            self.args, env=env, cwd=ROOT, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self._port_seen = threading.Event()
        self.port = 0
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self._port_seen.wait(start_timeout) or not self.port:
            self.stop()
            raise RuntimeError("exporter did not start:\n" + self.log())

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._lock:
                self.lines.append(line.rstrip("\n"))
            match = _LISTENING.search(line)
            if match and not self.port:
                self.port = int(match.group(2))
                self._port_seen.set()
        self._port_seen.set()

    def log(self) -> str:
        with self._lock:
            return "\n".join(self.lines)

    def log_lines(self) -> list[str]:
        with self._lock:
            return list(self.lines)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def url(self, path: str = "/metrics", scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def rss_bytes(self) -> int:
        with open(f"/proc/{self.pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def fd_count(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def thread_count(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/task"))

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        self._reader.join(5)
        return self.proc.returncode

    def wait_for_log(self, pattern: str, timeout: float = 10.0, start: int = 0) -> str:
        """The first log line from index ``start`` on matching ``pattern`` (regex)."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.log_lines()[start:]:
                if regex.search(line):
                    return line
            time.sleep(0.05)
        raise AssertionError(f"no log line matching {pattern!r}:\n{self.log()}")
