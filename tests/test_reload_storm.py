"""Reload storms (issue 15, attack report C1, C2, C7): reloads are read and validated off
the loop and coalesced, so /metrics and /-/healthy keep answering; any failed reload sets
the reload gauge to 0 and logs one line."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from qmp_exporter.coalesce import Coalescer
from tests.helpers.exporter import ExporterProcess, wait_for
from tests.helpers.sim_fleet import simulated_fleet

#: The report used 10,000 monitors; the issue scales them to 2,000 for CI.
MONITORS = 2000
#: Debian 12's Python 3.11.2 (the package's runtime), where reloads wedged (round 3's D5).
DEBIAN_PYTHON = Path("/usr/bin/python3")


def big_config(directory: Path) -> dict:
    """2,000 monitors whose sockets do not exist (each poller backs off)."""
    return {
        "poll_interval": "15s",
        "timeout": "1s",
        "monitors": [
            {"name": f"vm{i:04d}", "address": f"unix:{directory}/missing-{i}.qmp", "mode": "poll"}
            for i in range(MONITORS)
        ],
    }


class LatencyWatch:
    """Requests ``/-/healthy`` and ``/metrics`` in a loop from a thread; the slowest of each."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.slowest = {"/-/healthy": 0.0, "/metrics": 0.0}
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            for path in self.slowest:
                started = time.monotonic()
                try:
                    requests.get(self.url + path, timeout=5).raise_for_status()
                except requests.RequestException as err:
                    self.failures.append(f"{path}: {err}")
                self.slowest[path] = max(self.slowest[path], time.monotonic() - started)
            time.sleep(0.02)

    def __enter__(self) -> LatencyWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(10)


def reloads_done(exporter: ExporterProcess) -> int:
    return exporter.log().count("reloaded ")


def started(exporter: ExporterProcess) -> None:
    """Until every poller has failed its first connect (2,000 warnings logged), so the
    latencies measured are the reloads' own."""
    wait_for(lambda: exporter.value("qmp_exporter_monitors") == MONITORS, 20)
    wait_for(lambda: exporter.log().count(": down (") >= MONITORS, 30)
    time.sleep(0.5)


@pytest.mark.load
def test_fifty_sighups_are_coalesced_and_scrapes_stay_fast(tmp_path: Path) -> None:
    config = big_config(tmp_path)
    with ExporterProcess(config, log_level="info") as exporter:
        started(exporter)
        # One more monitor: the first reload parses the file (in a thread); the rest find
        # it unchanged.
        config["monitors"].append({"name": "extra", "address": f"unix:{tmp_path}/extra.qmp"})
        exporter.write_config(config)
        with LatencyWatch(exporter.url) as watch:
            time.sleep(0.3)
            for _ in range(50):
                exporter.signal(signal.SIGHUP)
                time.sleep(0.02)
            wait_for(lambda: reloads_done(exporter) >= 1, 30)
            time.sleep(1.0)  # a queued reload, if any, runs now
        runs = reloads_done(exporter)
        # Coalesced (one in flight, one queued): far fewer runs than signals. The exact
        # rule is test_coalescer_runs_one_in_flight_and_one_queued's.
        assert 1 <= runs < 50, runs
        assert watch.failures == []
        assert watch.slowest["/-/healthy"] < 1.0, watch.slowest
        assert watch.slowest["/metrics"] < 1.0, watch.slowest
        assert exporter.value("qmp_exporter_config_last_reload_successful") == 1
        assert exporter.value("qmp_exporter_monitors") == MONITORS + 1


@pytest.mark.load
def test_ten_concurrent_reload_requests_share_runs(tmp_path: Path) -> None:
    with ExporterProcess(
        big_config(tmp_path), ["--web.enable-lifecycle"], log_level="info"
    ) as exporter:
        started(exporter)
        with LatencyWatch(exporter.url) as watch, ThreadPoolExecutor(10) as pool:
            answers = list(
                pool.map(
                    lambda _: requests.post(exporter.url + "/-/reload", timeout=30),
                    range(10),
                )
            )
        assert [a.status_code for a in answers] == [200] * 10
        assert 1 <= reloads_done(exporter) < 10
        assert watch.failures == []
        assert max(watch.slowest.values()) < 1.0, watch.slowest


def test_deep_or_bombed_config_on_sighup_sets_the_gauge_to_zero_and_logs_one_line(
    tmp_path: Path,
) -> None:
    config = big_config(tmp_path)
    config["monitors"] = config["monitors"][:3]
    with ExporterProcess(config, log_level="info") as exporter:
        wait_for(lambda: exporter.value("qmp_exporter_monitors") == 3)
        assert exporter.value("qmp_exporter_config_last_reload_successful") == 1
        exporter.write_config("monitors: " + "[" * 500 + "]" * 500 + "\n")
        start = len(exporter.log_lines())
        exporter.signal(signal.SIGHUP)
        wait_for(lambda: exporter.value("qmp_exporter_config_last_reload_successful") == 0)
        new = exporter.log_lines()[start:]
        failed = [line for line in new if "reload failed" in line]
        assert len(failed) == 1 and "nested deeper than 32 levels" in failed[0], new
        assert not any("Traceback" in line or "never retrieved" in line for line in new), new
        assert all(len(line) < 2000 for line in new)
        assert exporter.value("qmp_exporter_monitors") == 3


def test_coalescer_runs_one_in_flight_and_one_queued() -> None:
    async def scenario() -> tuple[int, list[bool]]:
        gate = asyncio.Event()
        started: list[int] = []

        async def work() -> bool:
            started.append(len(started))
            await gate.wait()
            return True

        coalescer = Coalescer(work)
        first = coalescer.request()
        await asyncio.sleep(0)
        later = [coalescer.request() for _ in range(49)]
        assert all(f is later[0] for f in later) and later[0] is not first
        gate.set()
        results = await asyncio.gather(first, *later)
        await coalescer.wait()
        again = await coalescer.request()
        return coalescer.runs, [*results, again]

    runs, results = asyncio.run(scenario())
    assert runs == 3
    assert all(results)


def poll_successes(exporter: ExporterProcess) -> list[float]:
    """Every VM's ``qmp_exporter_last_poll_success_timestamp_seconds``."""
    return [
        value
        for (name, _), value in exporter.samples().items()
        if name == "qmp_exporter_last_poll_success_timestamp_seconds"
    ]


def test_reloads_of_a_thousand_poll_mode_monitors_finish_on_debians_python(
    tmp_path: Path,
) -> None:
    """Round 3's R2: 1,000 poll-mode monitors at 1 s, four reloads each changing
    ``poll_interval`` (every poller restarts). On 3.11 a poller could swallow its cancel
    and the reload waited for it for ever, every poller stopped, data ageing, /-/healthy OK.
    Each reload must finish, every VM be polled after it, and /-/ready stay 200. Bounds are
    generous: latencies are bench/'s."""
    assert DEBIAN_PYTHON.exists(), f"{DEBIAN_PYTHON} (Debian 12's Python 3.11) is required"
    vms = tmp_path / "vms"
    vms.mkdir()

    def config(interval: str) -> dict:
        # No collectors: the host one would identify each connection's peer, the simulator's
        # one process with 2,000 fds, a scan per poll that only a simulator makes (and the
        # 2 cores of CI cannot keep up with at 1,000 polls a second).
        glob = {"glob": f"{vms}/*.qmp", "mode": "poll", "rescan": "30s", "collectors": []}
        return {"poll_interval": interval, "discovery": [glob]}

    with (
        simulated_fleet(vms, 1000),
        ExporterProcess(config("1s"), log_level="info", python=str(DEBIAN_PYTHON)) as exporter,
    ):
        wait_for(lambda: len(poll_successes(exporter)) == 1000, 60, "1,000 VMs polled")
        for done, interval in enumerate(("2s", "1s", "2s", "1s"), 1):
            exporter.write_config(config(interval))
            asked = time.time()
            exporter.signal(signal.SIGHUP)
            wait_for(lambda n=done: reloads_done(exporter) >= n, 60, f"reload {done} finished")
            wait_for(lambda t=asked: min(poll_successes(exporter)) > t, 60, "every VM polled since")
        assert requests.get(exporter.url + "/-/ready", timeout=10).status_code == 200
        assert exporter.value("qmp_exporter_ready") == 1
        assert "detached" not in exporter.log()
