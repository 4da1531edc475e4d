"""Run the real exporter (``python -m qmp_exporter``) as a subprocess and scrape it.

::

    with ExporterProcess({"poll_interval": "500ms", "monitors": [...]}) as exporter:
        wait_for(lambda: exporter.value("qemu_up", vm="web") == 1)
        exporter.text()          # the raw exposition
        exporter.samples()       # {(name, (("vm", "web"), ...)): value}
        exporter.scrape()        # (seconds the scrape took, exposition)

The exporter listens on 127.0.0.1 port 0; :attr:`ExporterProcess.port` is read from its
"listening on" log line, so concurrent tests never race for a port.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[2]

SampleKey = tuple[str, tuple[tuple[str, str], ...]]

_LISTENING = re.compile(r"listening on (\S+):(\d+)")


class ExporterStartError(RuntimeError):
    """The exporter exited or did not listen in time; the message carries its log."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(
    predicate: Callable[[], Any],
    timeout: float = 10.0,
    what: str = "condition",
    *,
    interval: float = 0.05,
) -> Any:
    """Poll ``predicate`` until it returns something true; fail with the last value.

    A ``requests`` error counts as "not yet" (the server may be starting or restarting).
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        with contextlib.suppress(requests.RequestException):
            last = predicate()
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"{what} not met within {timeout}s (last value: {last!r})")


def parse_samples(text: str) -> dict[SampleKey, float]:
    """Exposition text → {(sample name, sorted labels): value}."""
    samples: dict[SampleKey, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def setpriv_prefix(drop_capabilities: Sequence[str]) -> list[str]:
    """A command prefix that runs the exporter without these capabilities (names as in
    ``capabilities(7)`` without ``CAP_``), for all children too."""
    if shutil.which("setpriv") is None:
        raise ExporterStartError("setpriv (util-linux) is required to drop capabilities")
    bounding = ",".join(f"-{name.lower()}" for name in drop_capabilities)
    return ["setpriv", "--inh-caps=-all", f"--bounding-set={bounding}", "--"]


class ExporterProcess:
    """The exporter as a subprocess: optional config (mapping or YAML text) and extra
    arguments; stdout and stderr go to a log file in its own temporary directory."""

    def __init__(
        self,
        config: Mapping[str, Any] | str | None = None,
        extra_args: Sequence[str] = (),
        *,
        env: Mapping[str, str] | None = None,
        scheme: str = "http",
        log_level: str = "debug",
        drop_capabilities: Sequence[str] = (),
        python: str = sys.executable,
    ) -> None:
        """``python`` runs the exporter (default: the tests' own)."""
        self.python = python
        self.workdir = Path(tempfile.mkdtemp(prefix="qmpx-exp-"))
        weakref.finalize(self, shutil.rmtree, self.workdir, True)
        self.config_path = self.workdir / "config.yml"
        self.log_path = self.workdir / "exporter.log"
        self.port = 0
        self.scheme = scheme
        self.log_level = log_level
        self.extra_args = list(extra_args)
        self.env = dict(env or {})
        self.drop_capabilities = tuple(drop_capabilities)
        self.process: subprocess.Popen[bytes] | None = None
        if config is not None:
            self.write_config(config)

    @property
    def url(self) -> str:
        """The base URL, e.g. ``http://127.0.0.1:PORT``."""
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def endpoint(self, path: str = "/metrics", scheme: str | None = None) -> str:
        """The URL of ``path``, with another scheme if given (e.g. plain HTTP to a TLS port)."""
        return f"{scheme or self.scheme}://127.0.0.1:{self.port}{path}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def write_config(self, config: Mapping[str, Any] | str) -> None:
        text = config if isinstance(config, str) else yaml.safe_dump(dict(config))
        self.config_path.write_text(text)

    def start(self, timeout: float = 20.0) -> ExporterProcess:
        """Start and wait until it listens; raise :class:`ExporterStartError` otherwise."""
        args = setpriv_prefix(self.drop_capabilities) if self.drop_capabilities else []
        args += [self.python, "-m", "qmp_exporter"]
        if self.config_path.exists():
            args += ["--config.file", str(self.config_path)]
        args += ["--web.listen-address", "127.0.0.1:0", "--log.level", self.log_level]
        args += self.extra_args
        env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1", **self.env}
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            args, cwd=REPO, stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log, env=env
        )
        deadline = time.monotonic() + timeout
        while not self.port:
            match = _LISTENING.search(self.log())
            if match:
                self.port = int(match.group(2))
            elif self.process.poll() is not None:
                self.stop()
                raise ExporterStartError(
                    f"exporter exited with {self.process.returncode}:\n{self.log()}"
                )
            elif time.monotonic() > deadline:
                self.stop()
                raise ExporterStartError(f"exporter not listening after {timeout}s:\n{self.log()}")
            else:
                time.sleep(0.05)
        return self

    def signal(self, sig: int) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM (SIGKILL after ``timeout``); the exit code. Safe to call twice."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        self._log.close()
        return self.process.returncode

    def __enter__(self) -> ExporterProcess:
        """Start, unless :meth:`start` already did (``with exporter.start():`` then starts
        no second process to leak)."""
        running = self.process is not None and self.process.poll() is None
        return self if running else self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- the log ---------------------------------------------------------------------------

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_lines(self) -> list[str]:
        return self.log().splitlines()

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

    # -- scraping --------------------------------------------------------------------------

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", 5)
        return requests.get(f"{self.url}{path}", **kwargs)

    def scrape(self, timeout: float = 5.0) -> tuple[float, str]:
        """(seconds the scrape of /metrics took, exposition text)."""
        started = time.monotonic()
        response = self.get("/metrics", timeout=timeout)
        response.raise_for_status()
        return time.monotonic() - started, response.text

    def text(self) -> str:
        return self.scrape()[1]

    def samples(self) -> dict[SampleKey, float]:
        return parse_samples(self.text())

    def value(self, metric: str, /, **labels: str) -> float | None:
        """The value of the one sample with exactly these labels, or None."""
        return self.samples().get((metric, tuple(sorted(labels.items()))))

    # -- resources (from /proc) --------------------------------------------------------------

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
