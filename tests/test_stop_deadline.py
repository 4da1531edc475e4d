"""Reload and stop are bounded (issue 23, attack report 3's D5): a poller that outlives its
stop deadline is detached (named in the log, nothing it publishes reaches the fleet, a
successor watches its monitor), the reload lock is never held on an unbounded wait, and
``/-/ready`` answers 503 (``qmp_exporter_ready`` 0) while a detached poller runs or a reload
has run too long; ``/-/healthy`` stays 200.

A poller that swallows its cancel is made by hand here (3.11's ``wait_for`` made one; see
``tests/test_cancel_race.py``); deadlines are short for the test, bounds generous."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest
import yaml

from qmp_exporter import app as app_module
from qmp_exporter.app import Exporter, Options
from qmp_exporter.config import MonitorConfig, load_config
from qmp_exporter.fleet.hub import Fleet
from qmp_exporter.polling import stopping
from qmp_exporter.polling.monitors import MonitorSource
from qmp_exporter.polling.poller import MonitorPoller, PollSettings
from tests.helpers.waiting import wait_until
from tests.test_fleet import Recorder

SETTINGS = PollSettings(interval=0.05, timeout=1.0, start_spread=0)
#: What the stubborn task writes into every state it publishes.
ZOMBIE = "published by the stubborn task"
#: A bound for what must end; never a latency asserted.
GENEROUS = 20.0


class Stubborn:
    """Makes the first task of the poller called ``name`` swallow every cancel and publish
    a state marked :data:`ZOMBIE` every few milliseconds, until :attr:`release` is set."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
        self.release = asyncio.Event()
        self.cancels = 0
        self.started = False
        original = MonitorPoller._run
        outer = self

        async def run(self: MonitorPoller) -> None:
            if self.name != name or outer.started:
                return await original(self)
            outer.started = True
            give_up = time.monotonic() + 2 * GENEROUS  # never hang the run (a failed test)
            while not outer.release.is_set() and time.monotonic() < give_up:
                try:
                    await asyncio.sleep(0.01)
                    self._publish(dataclasses.replace(self.state, error=ZOMBIE))
                except asyncio.CancelledError:
                    outer.cancels += 1  # swallowed

        monkeypatch.setattr(MonitorPoller, "_run", run)


def bounded(coroutine: Coroutine[Any, Any, Any]) -> Any:
    async def run() -> Any:
        async with asyncio.timeout(30):
            return await coroutine

    return asyncio.run(run())


@pytest.fixture(autouse=True)
def short_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stopping, "STOP_DEADLINE", 0.2)


def test_a_poller_outliving_its_stop_deadline_is_detached_and_silenced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    stubborn = Stubborn(monkeypatch, "stubborn")
    caplog.set_level(logging.INFO, logger="qmp_exporter.polling")

    async def scenario() -> None:
        fleet = Fleet()
        recorder = Recorder()
        fleet.subscribe(recorder)
        source = MonitorSource(fleet.source("qmp"), SETTINGS)
        monitors = [
            MonitorConfig(name, f"unix:{tmp_path}/{name}.qmp", mode="poll")
            for name in ("stubborn", "plain")
        ]
        await source.apply(monitors)
        await wait_until(lambda: fleet.states["stubborn"].error == ZOMBIE)
        # New settings restart every poller: the stubborn one outlives its deadline.
        await source.apply(monitors, dataclasses.replace(SETTINGS, interval=0.06))
        assert source.detached == 1
        assert stubborn.cancels == 2  # the stop's cancel and one more at the detach
        heard = len(recorder.heard)
        await asyncio.sleep(0.3)  # the stubborn task publishes on: nobody hears it
        assert not [s for _, n, s, _ in recorder.heard[heard:] if s and s.error == ZOMBIE]
        # A successor watches the monitor (and fails to connect: no socket there).
        await wait_until(lambda: fleet.states["stubborn"].error_reason == "connect")
        assert fleet.states["plain"].error_reason == "connect"
        # Removing the VM while its detached task runs is bounded too.
        await source.apply(monitors[1:])
        assert "stubborn" not in fleet.states and source.detached == 1
        stubborn.release.set()
        await wait_until(lambda: source.detached == 0)
        await source.close()

    bounded(scenario())
    detached = [r for r in caplog.records if "detached" in r.getMessage()]
    assert [r.getMessage().split(":")[0] for r in detached] == ["stubborn", "stubborn"]
    assert "still running 0.2s after it was cancelled" in detached[0].getMessage()
    assert "has ended" in detached[1].getMessage()


def test_a_successor_keeps_the_counters(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stubborn = Stubborn(monkeypatch, "vm")

    async def scenario() -> None:
        fleet = Fleet()
        source = MonitorSource(fleet.source("qmp"), SETTINGS)
        monitor = MonitorConfig("vm", f"unix:{tmp_path}/vm.qmp", mode="poll")
        await source.apply([monitor])
        first = source._pollers["vm"]
        first._errors["connect"] = 7
        first._counters = first._count()
        await source.apply([monitor], dataclasses.replace(SETTINGS, interval=0.06))
        successor = source._pollers["vm"]
        assert successor is not first and first.detached and not successor.detached
        await wait_until(lambda: fleet.states["vm"].error_reason == "connect")
        assert dict(fleet.states["vm"].counters.poll_errors)["connect"] >= 8
        await source.close()
        assert source.detached == 1  # close is bounded; the task runs until released
        stubborn.release.set()
        await wait_until(lambda: source.detached == 0)

    bounded(scenario())


async def status_of(port: int, path: str) -> tuple[int, str]:
    async with asyncio.timeout(10):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        answer = await reader.read()
        writer.close()
    head, _, body = answer.decode().partition("\r\n\r\n")
    return int(head.split()[1]), body.strip()


def ready_gauge(exporter: Exporter) -> str:
    lines = exporter._own_metrics.decode().splitlines()
    return next(line for line in lines if line.startswith("qmp_exporter_ready "))


def test_ready_answers_503_while_a_poller_is_detached_or_a_reload_runs_long(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stubborn = Stubborn(monkeypatch, "stubborn")
    monkeypatch.setattr(app_module, "RELOAD_READY_LIMIT", 0.2)
    path = tmp_path / "config.yml"

    def write(interval: str) -> None:
        monitor = {"name": "stubborn", "address": f"unix:{tmp_path}/vm.qmp", "mode": "poll"}
        path.write_text(yaml.safe_dump({"poll_interval": interval, "monitors": [monitor]}))

    async def scenario() -> None:
        write("1s")
        options = Options(config_path=str(path), listen_address="127.0.0.1:0")
        exporter = Exporter(load_config(path), options)
        await exporter.start()
        port = exporter.server.addresses[0][1]
        try:
            assert await status_of(port, "/-/ready") == (200, "OK")
            assert ready_gauge(exporter) == "qmp_exporter_ready 1.0"
            await wait_until(lambda: stubborn.started)
            write("2s")
            assert await exporter.reload()  # bounded: the stubborn poller is detached
            status, why = await status_of(port, "/-/ready")
            assert (status, why) == (503, "1 poller(s) outlived their stop deadline and still "
                                     "run (see the log)")  # fmt: skip
            assert (await status_of(port, "/-/healthy"))[0] == 200
            assert ready_gauge(exporter) == "qmp_exporter_ready 0.0"
            stubborn.release.set()
            await wait_until(lambda: exporter.monitor_source.detached == 0)
            assert await status_of(port, "/-/ready") == (200, "OK")

            # A reload stuck (here in its scan) answers 503 after the limit, and holds no
            # lock meanwhile: discovery's applies go on.
            gate = asyncio.Event()
            rescan = exporter.discoverer.rescan

            async def slow_rescan() -> Any:
                await gate.wait()
                return await rescan()

            monkeypatch.setattr(exporter.discoverer, "rescan", slow_rescan)
            reload = asyncio.ensure_future(exporter.reload())
            await asyncio.sleep(0.4)
            status, why = await status_of(port, "/-/ready")
            assert status == 503 and why.startswith("a reload has run for"), why
            assert not exporter._reload_lock.locked()
            await exporter._sample_own_metrics()
            assert ready_gauge(exporter) == "qmp_exporter_ready 0.0"
            gate.set()
            assert await reload
            assert await status_of(port, "/-/ready") == (200, "OK")
            assert ready_gauge(exporter) == "qmp_exporter_ready 1.0"
        finally:
            stubborn.release.set()
            await exporter.stop()

    bounded(scenario())


def test_a_stop_does_not_wait_for_ever_behind_a_stuck_reload(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A reload stuck in its scan (a hung /proc read) is cancelled after STOP_RELOAD_WAIT,
    and the closed monitor source starts nothing afterwards."""
    monkeypatch.setattr(app_module, "STOP_RELOAD_WAIT", 0.3)
    path = tmp_path / "config.yml"
    monitor = {"name": "vm", "address": f"unix:{tmp_path}/vm.qmp", "mode": "poll"}
    path.write_text(yaml.safe_dump({"poll_interval": "1s", "monitors": [monitor]}))

    async def scenario() -> int:
        options = Options(config_path=str(path), listen_address="127.0.0.1:0")
        exporter = Exporter(load_config(path), options)
        await exporter.start()
        never = asyncio.Event()

        async def stuck_rescan() -> Any:
            await never.wait()

        monkeypatch.setattr(exporter.discoverer, "rescan", stuck_rescan)
        reload = asyncio.ensure_future(exporter.reload())
        await asyncio.sleep(0.1)
        await exporter.stop()  # bounded() below fails the test if this never returns
        with pytest.raises(asyncio.CancelledError):
            await reload  # the reload was cancelled, not finished
        await exporter.monitor_source.apply([MonitorConfig("late", f"unix:{tmp_path}/l.qmp")])
        return len(exporter.monitor_source)

    with caplog.at_level(logging.WARNING, logger="qmp_exporter.app"):
        assert bounded(scenario()) == 0
    assert any("stopping while a reload still runs" in r.getMessage() for r in caplog.records)
