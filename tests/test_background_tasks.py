"""No exception ends a background task (round 3's D1: a discovery task that died on one bad
scan stopped discovery until a restart): each is logged, and the task goes on."""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path
from typing import Any

import pytest

from qmp_exporter.config import MonitorConfig, parse_yaml
from qmp_exporter.discovery import Discoverer, Scan
from qmp_exporter.host import Host
from qmp_exporter.polling import poller as poller_module
from qmp_exporter.polling.poller import MonitorPoller, PollSettings
from tests.helpers.scripted_monitor import ScriptedMonitor


class Listener:
    """Hears scans; ``fails``: raises on every scan after the one told at subscription."""

    def __init__(self, fails: bool) -> None:
        self.fails = fails
        self.scans: list[Scan] = []

    def scanned(self, scan: Scan) -> None:
        self.scans.append(scan)
        if self.fails and len(self.scans) > 1:
            raise RuntimeError("a listener's defect")


def test_a_failing_scan_listener_harms_neither_discovery_nor_the_other_listeners(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = parse_yaml(f"discovery:\n  - glob: {tmp_path}/*.qmp\n")
    failing, other = Listener(fails=True), Listener(fails=False)

    async def scans() -> None:
        discoverer = Discoverer(config, Host())
        discoverer.subscribe(failing)  # the first: a failure must not keep the second away
        discoverer.subscribe(other)
        servers = []
        for name in ("a", "b"):  # two scans that differ: each is told to the listeners
            server = socket.socket(socket.AF_UNIX)
            server.bind(str(tmp_path / f"{name}.qmp"))
            servers.append(server)
            await discoverer.rescan()
        for server in servers:
            server.close()

    with caplog.at_level(logging.ERROR, logger="qmp_exporter.discovery"):
        asyncio.run(scans())
    assert [len(scan.monitors) for scan in other.scans] == [0, 1, 2], "each scan reached both"
    assert len(failing.scans) == 3
    assert sum("Listener failed on a scan" in r.getMessage() for r in caplog.records) == 2


def test_an_unexpected_error_in_a_poll_is_one_failed_poll(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A defect (here: the status parser raising what no one expects, once) is logged with
    its traceback, the VM is down for that poll (``protocol``), and the next poll is fine."""
    real = poller_module.parse_status
    calls = {"n": 0}

    def parse_once_badly(answer: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("a defect")
        return real(answer)

    monkeypatch.setattr(poller_module, "parse_status", parse_once_badly)

    async def scenario() -> list[tuple[bool, str | None]]:
        outcomes = []
        async with ScriptedMonitor(str(tmp_path / "vm.qmp")) as monitor:
            poller = MonitorPoller(
                MonitorConfig("vm", monitor.address, mode="poll", collectors=()),
                PollSettings(timeout=5),
            )
            for _ in range(2):
                await poller.poll_once()
                outcomes.append((poller.state.up, poller.state.error_reason))
        return outcomes

    with caplog.at_level(logging.ERROR, logger="qmp_exporter.polling.poller"):
        assert asyncio.run(scenario()) == [(False, "protocol"), (True, "")]
    (record,) = [r for r in caplog.records if "poll failed unexpectedly" in r.getMessage()]
    assert record.exc_info is not None
