"""Live reload: SIGHUP and POST /-/reload (--web.enable-lifecycle) re-read the config."""

from __future__ import annotations

import re
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.helpers import fault_monitors as faults
from tests.helpers.exporter import ExporterProcess, wait_for

ALLOWED_COMMANDS = re.compile(r"^(qmp_capabilities|query-[a-z0-9-]+)$")


@pytest.fixture
def monitors() -> Iterator[tuple[faults.MonitorLoop, dict]]:
    directory = Path(tempfile.mkdtemp(prefix="qmpx-reload-", dir="/tmp"))
    with faults.MonitorLoop() as loop:
        started = {
            name: loop.start(faults.make_healthy(str(directory / f"{name}.sock")))
            for name in ("keep", "drop", "add")
        }
        yield loop, started
        for monitor in started.values():
            assert all(ALLOWED_COMMANDS.match(c) for c in monitor.commands()), monitor.commands()
    shutil.rmtree(directory, ignore_errors=True)


def config(monitors: dict, *names: str) -> dict:
    return {
        "poll_interval": "500ms",
        "timeout": "300ms",
        "monitors": [{"name": n, "address": monitors[n].address} for n in names],
    }


def up(exporter: ExporterProcess, vm: str) -> float | None:
    return exporter.value("qemu_up", vm=vm)


def series_of(exporter: ExporterProcess, vm: str) -> list[str]:
    return [name for (name, labels) in exporter.samples() if ("vm", vm) in labels]


def reload_state(exporter: ExporterProcess) -> tuple[float | None, float | None]:
    return (
        exporter.value("qmp_exporter_config_last_reload_successful"),
        exporter.value("qmp_exporter_config_last_reload_success_timestamp_seconds"),
    )


@pytest.mark.parametrize("trigger", ["sighup", "post"])
def test_reload_adds_removes_and_keeps(monitors, trigger: str) -> None:
    loop, scripted = monitors
    with ExporterProcess(config(scripted, "keep", "drop"), ["--web.enable-lifecycle"]) as exp:
        wait_for(lambda: up(exp, "keep") == 1 and up(exp, "drop") == 1)
        loop.call(
            scripted["keep"].broadcast_event("RESET", {"guest": False, "reason": "host-qmp-reset"})
        )
        wait_for(lambda: exp.value("qemu_events_total", vm="keep", event="RESET") == 1)
        sessions_before = exp.value("qmp_exporter_connections_total", vm="keep")
        monitor_connections = scripted["keep"].connections
        ok_before, stamp_before = reload_state(exp)
        assert ok_before == 1

        exp.write_config(config(scripted, "keep", "add"))
        if trigger == "sighup":
            exp.signal(signal.SIGHUP)
        else:
            response = requests.post(f"{exp.url}/-/reload", timeout=10)
            assert response.status_code == 200, response.text
        wait_for(lambda: up(exp, "add") == 1)
        wait_for(lambda: series_of(exp, "drop") == [])
        # The unchanged VM kept its connection and its counters.
        assert exp.value("qmp_exporter_connections_total", vm="keep") == sessions_before
        assert scripted["keep"].connections == monitor_connections
        assert exp.value("qemu_events_total", vm="keep", event="RESET") == 1
        ok_after, stamp_after = reload_state(exp)
        assert ok_after == 1
        assert stamp_after is not None and stamp_before is not None and stamp_after > stamp_before
        # The removed VM's connection was closed: its monitor serves a new client at once.
        wait_for(lambda: all(s.closed or s.writer.is_closing() for s in scripted["drop"].sessions))


def test_a_bad_config_keeps_the_running_one(monitors) -> None:
    _, scripted = monitors
    with ExporterProcess(config(scripted, "keep"), ["--web.enable-lifecycle"]) as exp:
        wait_for(lambda: up(exp, "keep") == 1)
        _, stamp = reload_state(exp)
        exp.write_config(
            "poll_interval: soon\nmonitors:\n  - {name: keep, address: 'ftp:x'}\n  - {address: 1}\n"
        )
        response = requests.post(f"{exp.url}/-/reload", timeout=10)
        assert response.status_code == 500
        assert reload_state(exp) == (0, stamp)
        log = exp.log()
        for error in ("poll_interval", "monitors[0].address", "monitors[1].name"):
            assert error in log, (error, log)
        # Still polling the old config.
        assert up(exp, "keep") == 1
        exp.signal(signal.SIGHUP)
        wait_for(lambda: exp.log().count("reload failed") >= 2)
        assert reload_state(exp)[0] == 0

        exp.write_config(config(scripted, "keep", "add"))
        exp.signal(signal.SIGHUP)
        wait_for(lambda: reload_state(exp)[0] == 1)
        wait_for(lambda: up(exp, "add") == 1)
        assert reload_state(exp)[1] > stamp


def test_reload_endpoint_needs_the_lifecycle_flag(monitors) -> None:
    _, scripted = monitors
    with ExporterProcess(config(scripted, "keep")) as exp:
        wait_for(lambda: up(exp, "keep") == 1)
        exp.write_config(config(scripted, "keep", "add"))
        response = requests.post(f"{exp.url}/-/reload", timeout=10)
        assert response.status_code in (404, 405)
        assert up(exp, "add") is None
