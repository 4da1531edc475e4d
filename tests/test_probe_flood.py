"""/probe under hostile clients (issue 15, attack report P3-P6): a watched VM is answered
from its poller's state and never raced; each target is rate- and concurrency-limited
(429 with Retry-After); the timeout header is capped; a failed probe is logged at debug
and counted, never as a VM going down; ``probe.allow`` is checked on the resolved path."""

from __future__ import annotations

import shutil
import socket
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from qmp_exporter.config import MonitorConfig, probe_pattern
from qmp_exporter.web import probe_limits
from qmp_exporter.web.probe import is_allowed, resolve_pattern, watched_monitor
from qmp_exporter.web.probe_limits import ProbeLimiter
from tests.helpers import fault_monitors as faults
from tests.helpers.exporter import ExporterProcess, parse_samples, wait_for


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A short directory for sockets (unix paths are limited to 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="qmpx-pflood-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


# -- the limiter and the resolved allow-list -----------------------------------------------


def test_limiter_allows_a_burst_then_one_a_second_and_one_live_probe_at_a_time() -> None:
    now = [100.0]
    limiter = ProbeLimiter(rate=1.0, burst=5, concurrency=1, clock=lambda: now[0])
    assert [limiter.admit("a", live=False) for _ in range(5)] == [None] * 5
    assert limiter.admit("a", live=False) == ("rate_limited", 1)
    assert limiter.admit("b", live=False) is None, "targets are limited separately"
    now[0] += 1.0
    assert limiter.admit("a", live=True) is None
    now[0] += 1.0
    assert limiter.admit("a", live=True) == ("concurrency_limit", 1)
    limiter.done("a")
    assert limiter.admit("a", live=True) is None


def test_limiter_forgets_only_idle_targets_whose_bucket_is_full_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(probe_limits, "MAX_TRACKED_TARGETS", 3)
    now = [100.0]
    limiter = ProbeLimiter(rate=1.0, burst=2, concurrency=1, clock=lambda: now[0])
    assert limiter.admit("live", live=True) is None
    assert [limiter.admit("spent", live=False) for _ in range(2)] == [None, None]
    assert limiter.admit("idle", live=False) is None
    now[0] += 1.0  # "idle" is full again; "spent" is a token short; "live" is in flight
    assert limiter.admit("new", live=False) is None
    assert len(limiter) == 3, "only 'idle' forgotten, to make room for 'new'"
    assert limiter.admit("spent", live=False) is None
    assert limiter.admit("spent", live=False) == ("rate_limited", 1), "its bucket was kept"
    assert limiter.admit("live", live=True) == ("concurrency_limit", 1), "still in flight"


def test_allow_is_checked_on_the_resolved_path(workdir: Path) -> None:
    allowed, outside = workdir / "run", workdir / "fleet"
    allowed.mkdir()
    outside.mkdir()
    (outside / "vm.qmp").touch()
    (allowed / "h-link.qmp").symlink_to(outside / "vm.qmp")
    (allowed / "real.qmp").touch()
    allow = (probe_pattern(f"{allowed}/*.qmp"),)
    assert is_allowed(f"unix:{allowed}/real.qmp", allow, ())
    assert not is_allowed(f"unix:{allowed}/h-link.qmp", allow, ()), "P3: link to outside"
    # A glob through a symlinked directory (/var/run -> /run) still matches.
    (workdir / "var-run").symlink_to(allowed)
    through = probe_pattern(f"{workdir}/var-run/*.qmp")
    assert resolve_pattern(through) == f"unix:{allowed}/*.qmp"
    assert is_allowed(f"unix:{workdir}/var-run/real.qmp", (through,), ())


def test_a_symlink_to_a_watched_socket_is_the_watched_monitor(workdir: Path) -> None:
    (workdir / "vm.qmp").touch()
    (workdir / "alias.qmp").symlink_to(workdir / "vm.qmp")
    monitor = MonitorConfig("vm", f"unix:{workdir}/vm.qmp", mode="poll")
    assert watched_monitor(f"unix:{workdir}/alias.qmp", [monitor]) is monitor
    assert watched_monitor(f"unix:{workdir}/other.qmp", [monitor]) is None


# -- the real exporter ---------------------------------------------------------------------


def flood(url: str, target: str, clients: int, seconds: float) -> Counter[int]:
    """``clients`` threads looping GET /probe on ``target`` for ``seconds``; statuses seen."""
    statuses: Counter[int] = Counter()
    lock = threading.Lock()
    end = time.monotonic() + seconds

    def client() -> None:
        with requests.Session() as session:
            while time.monotonic() < end:
                response = session.get(url + "/probe", params={"target": target}, timeout=10)
                if response.status_code == 429:
                    assert int(response.headers["Retry-After"]) >= 1
                with lock:
                    statuses[response.status_code] += 1

    with ThreadPoolExecutor(clients) as pool:
        for future in [pool.submit(client) for _ in range(clients)]:
            future.result()
    return statuses


@pytest.mark.load
def test_a_probe_flood_never_takes_a_watched_vm_down(workdir: Path) -> None:
    """P4: 16 clients looping /probe on a poll-mode VM's socket (allowed by a glob)."""
    with faults.MonitorLoop() as loop:
        monitor = loop.start(faults.make_healthy(str(workdir / "vm2p.qmp")))
        config = {
            "poll_interval": "500ms",
            "timeout": "300ms",
            "monitors": [{"name": "vm2p", "address": monitor.address, "mode": "poll"}],
            "probe": {"allow": [f"{workdir}/*.qmp"]},
        }
        with ExporterProcess(config, log_level="info") as exporter:
            wait_for(lambda: exporter.value("qemu_up", vm="vm2p") == 1)
            log_before = len(exporter.log())
            connections_before = monitor.connections
            ups: list[float | None] = []
            stop = threading.Event()

            def watch() -> None:
                while not stop.is_set():
                    ups.append(exporter.value("qemu_up", vm="vm2p"))
                    time.sleep(0.1)

            watcher = threading.Thread(target=watch)
            watcher.start()
            started = time.monotonic()
            try:
                statuses = flood(exporter.url, str(workdir / "vm2p.qmp"), 16, 3.0)
            finally:
                stop.set()
                watcher.join(10)
            elapsed = time.monotonic() - started
            assert ups and all(up == 1 for up in ups), ups
            assert set(statuses) <= {200, 429}, statuses
            assert statuses[429] > statuses[200]
            # Burst 5, then 1/s: the rest were refused.
            assert statuses[200] <= 5 + elapsed + 1
            # Answered from the poller's state: QEMU saw only the poller's sessions.
            polls = (elapsed + 1) / 0.5 + 2
            assert monitor.connections - connections_before <= polls
            response = exporter.get("/probe", params={"target": str(workdir / "vm2p.qmp")})
            if response.status_code == 200:
                assert parse_samples(response.text)[("qemu_up", (("vm", "vm2p"),))] == 1
            refused = statuses[429] + (response.status_code == 429)
            # The exporter's own metrics are sampled once a second.
            wait_for(
                lambda: (
                    exporter.value("qmp_exporter_probe_failures_total", reason="rate_limited")
                    == refused
                )
            )
            assert len(exporter.log()) - log_before < 2000, exporter.log()[log_before:]
            assert "down (" not in exporter.log()[log_before:]


@pytest.mark.load
def test_a_silent_target_is_probed_once_at_a_time_within_the_capped_timeout(
    workdir: Path,
) -> None:
    """P6: a client's timeout header of 100 s holds a probe no longer than the config's
    timeout; a second probe of the same target meanwhile is refused (429)."""
    silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    silent.bind(str(workdir / "silent.qmp"))  # accepts connections, never greets
    silent.listen(16)
    config = {"poll_interval": "15s", "timeout": "1s", "probe": {"allow": [f"{workdir}/*.qmp"]}}
    header = {"X-Prometheus-Scrape-Timeout-Seconds": "100"}
    try:
        with ExporterProcess(config, log_level="info") as exporter:
            target = {"target": str(workdir / "silent.qmp")}
            with ThreadPoolExecutor(2) as pool:
                first = pool.submit(exporter.get, "/probe", params=target, headers=header)
                silent.settimeout(5)
                held, _ = silent.accept()  # the first probe waits for the greeting now
                second = exporter.get("/probe", params=target, headers=header)
                started = time.monotonic()
                answer = first.result(timeout=10)
                held.close()
            assert second.status_code == 429 and second.headers["Retry-After"] == "1"
            assert answer.status_code == 200
            assert time.monotonic() - started < 1.5, "capped at the config's 1 s timeout"
            samples = parse_samples(answer.text)
            assert samples[("qemu_up", (("vm", f"unix:{workdir}/silent.qmp"),))] == 0
            wait_for(
                lambda: exporter.value("qmp_exporter_probe_failures_total", reason="timeout") == 1
            )
            assert (
                exporter.value("qmp_exporter_probe_failures_total", reason="concurrency_limit") == 1
            )
            assert "WARNING" not in exporter.log()
    finally:
        silent.close()


def test_a_symlink_out_of_the_allowed_directory_is_refused(workdir: Path) -> None:
    """P3: with allow ``run/*.qmp``, ``run/h-link.qmp -> fleet/vm.qmp`` is not probed."""
    (workdir / "run").mkdir()
    (workdir / "fleet").mkdir()
    with faults.MonitorLoop() as loop:
        monitor = loop.start(faults.make_healthy(str(workdir / "fleet" / "vm.qmp")))
        (workdir / "run" / "h-link.qmp").symlink_to(workdir / "fleet" / "vm.qmp")
        config = {"poll_interval": "15s", "probe": {"allow": [f"{workdir}/run/*.qmp"]}}
        with ExporterProcess(config) as exporter:
            response = exporter.get("/probe", params={"target": f"{workdir}/run/h-link.qmp"})
            assert response.status_code == 400 and "symlinks resolved" in response.text
        assert monitor.connections == 0
