"""Run the real exporter (``python -m qmp_exporter``) as a subprocess and scrape it.

::

    with ExporterProcess({"poll_interval": "500ms", "monitors": [...]}) as exporter:
        wait_for(lambda: exporter.value("qemu_up", vm="web") == 1)
        exporter.text()          # the raw exposition
        exporter.samples()       # {(name, (("vm", "web"), ...)): value}
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[2]

SampleKey = tuple[str, tuple[tuple[str, str], ...]]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something true; fail with the last value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        with contextlib.suppress(requests.RequestException):
            last = predicate()
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last value: {last!r})")


def parse_samples(text: str) -> dict[SampleKey, float]:
    """Exposition text → {(sample name, sorted labels): value}."""
    samples: dict[SampleKey, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


class ExporterProcess:
    """The exporter as a subprocess with a generated config, on a free port."""

    def __init__(
        self,
        config: Mapping[str, Any] | None,
        extra_args: Sequence[str] = (),
        *,
        env: Mapping[str, str] | None = None,
        scheme: str = "http",
    ) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="qmpx-exp-"))
        self.config_path = self.workdir / "config.yml"
        self.port = free_port()
        self.scheme = scheme
        self.log_path = self.workdir / "exporter.log"
        self.extra_args = list(extra_args)
        self.env = dict(env or {})
        self.process: subprocess.Popen[bytes] | None = None
        if config is not None:
            self.write_config(config)

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def write_config(self, config: Mapping[str, Any] | str) -> None:
        text = config if isinstance(config, str) else yaml.safe_dump(dict(config))
        self.config_path.write_text(text)

    def start(self, wait: bool = True) -> ExporterProcess:
        args = [sys.executable, "-m", "qmp_exporter"]
        if self.config_path.exists():
            args += ["--config.file", str(self.config_path)]
        args += ["--web.listen-address", f"127.0.0.1:{self.port}", "--log.level", "debug"]
        args += self.extra_args
        env = {**os.environ, "PYTHONPATH": str(REPO), **self.env}
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(args, cwd=REPO, stdout=self._log, stderr=self._log, env=env)
        if wait:
            wait_for(self._healthy, timeout=20)
        return self

    def _healthy(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"exporter exited with {self.process.returncode}:\n{self.log()}")
        response = requests.get(f"{self.url}/-/healthy", timeout=2, verify=False)
        return response.status_code in (200, 401)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def stop(self) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._log.close()
        return self.process.returncode

    def __enter__(self) -> ExporterProcess:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- scraping --------------------------------------------------------------------------

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", 5)
        return requests.get(f"{self.url}{path}", **kwargs)

    def text(self) -> str:
        response = self.get("/metrics")
        response.raise_for_status()
        return response.text

    def samples(self) -> dict[SampleKey, float]:
        return parse_samples(self.text())

    def value(self, metric: str, /, **labels: str) -> float | None:
        """The value of the one sample with exactly these labels, or None."""
        return self.samples().get((metric, tuple(sorted(labels.items()))))
