"""Real Prometheus / Alertmanager processes for tests: start on free ports, wait until
ready, always stop. A missing binary fails the test loudly (never a skip)."""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.helpers.exporter import free_port


def require_binary(*names: str) -> str:
    """The path of the first of ``names`` on PATH; fails the test with a clear message if none."""
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    pytest.fail(
        f"required binary not found: {' or '.join(names)} "
        "(install it with scripts/install-test-deps.sh)",
        pytrace=False,
    )


class Process:
    """A child process with its output in a log file, stopped by :meth:`stop`."""

    def __init__(self, argv: Sequence[str], log_path: Path, env: dict[str, str] | None = None):
        self.argv = list(argv)
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            self.argv, stdout=self._log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def wait_http_ok(self, url: str, timeout: float = 20.0) -> None:
        """Wait until ``url`` answers 200; fail with the process log if it exits or times out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                pytest.fail(f"{self.argv[0]} exited with {self.popen.returncode}:\n{self.log()}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(url, timeout=1).status_code == 200:
                    return
            time.sleep(0.1)
        pytest.fail(f"{self.argv[0]} not ready at {url} after {timeout}s:\n{self.log()}")

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=5)
        self._log.close()


@contextlib.contextmanager
def alertmanager(tmp_path: Path, port: int | None = None) -> Iterator[str]:
    """A real Alertmanager on 127.0.0.1 (clustering off); yields its base URL."""
    binary = require_binary("prometheus-alertmanager", "alertmanager")
    port = port or free_port()
    config = tmp_path / "alertmanager.yml"
    config.write_text(
        "route:\n  receiver: blackhole\n  group_wait: 1s\nreceivers:\n  - name: blackhole\n"
    )
    storage = tmp_path / "alertmanager-data"
    storage.mkdir(exist_ok=True)
    process = Process(
        [
            binary,
            f"--config.file={config}",
            f"--storage.path={storage}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
            "--log.level=warn",
        ],
        tmp_path / f"alertmanager-{port}.log",
    )
    try:
        url = f"http://127.0.0.1:{port}"
        process.wait_http_ok(f"{url}/-/ready")
        yield url
    finally:
        process.stop()


@contextlib.contextmanager
def prometheus(
    tmp_path: Path,
    config_text: str,
    rule_files: Sequence[Path] = (),
    *,
    args: Sequence[str] = (),
    storage_flag: str = "--storage.tsdb.path",
) -> Iterator[str]:
    """A real Prometheus with ``config_text`` (rule files copied next to it); yields its URL.
    ``args`` adds flags (``--enable-feature=agent``, which takes ``--storage.agent.path`` as
    its ``storage_flag``)."""
    binary = require_binary("prometheus")
    for rule_file in rule_files:
        shutil.copy(rule_file, tmp_path / rule_file.name)
    config = tmp_path / "prometheus.yml"
    config.write_text(config_text)
    port = free_port()
    process = Process(
        [
            binary,
            f"--config.file={config}",
            f"{storage_flag}={tmp_path / 'prometheus-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
            *args,
        ],
        tmp_path / "prometheus.log",
    )
    try:
        url = f"http://127.0.0.1:{port}"
        process.wait_http_ok(f"{url}/-/ready")
        yield url
    finally:
        process.stop()


def alertmanager_alerts(url: str, alertname: str | None = None) -> list[dict[str, Any]]:
    """The alerts a real Alertmanager holds (API v2), all or those named ``alertname``."""
    params = {"filter": f'alertname="{alertname}"'} if alertname else None
    response = requests.get(f"{url}/api/v2/alerts", params=params, timeout=5)
    response.raise_for_status()
    alerts: list[dict[str, Any]] = response.json()
    return alerts


_PROMQL_KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring"}
_PROMQL_KEYWORDS |= {"group_left", "group_right", "inf", "nan", "atan2"}


def promql_metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (strings, matchers, ranges and grouping
    clauses removed; identifiers followed by ``(`` are functions)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.$])[a-zA-Z_:][a-zA-Z0-9_:]*", text):
        rest = text[match.end() :].lstrip()
        if rest.startswith("(") or match.group().lower() in _PROMQL_KEYWORDS:
            continue
        names.add(match.group())
    return names
