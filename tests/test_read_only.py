"""Read-only, provably: against recording monitors, through many polls, reconnects and
events, the exporter sends nothing but ``qmp_capabilities`` and ``query-*``."""

from __future__ import annotations

import re
import shutil
import tempfile
import time
from pathlib import Path

from tests.helpers import fault_monitors as faults
from tests.helpers.exporter import ExporterProcess, wait_for
from tests.helpers.scripted_monitor import Session

READ_ONLY = re.compile(r"^(qmp_capabilities|query-[a-z0-9-]+)$")
EVENTS = ("VNC_CONNECTED", "VNC_DISCONNECTED", "STOP", "RESUME", "RESET", "SHUTDOWN",
          "GUEST_PANICKED", "WATCHDOG", "BLOCK_IO_ERROR", "MIGRATION")  # fmt: skip


def test_only_read_only_commands_through_polls_reconnects_and_events() -> None:
    directory = Path(tempfile.mkdtemp(prefix="qmpx-ro-", dir="/tmp"))
    sessions_seen: list[Session] = []

    async def remember(session: Session) -> None:
        sessions_seen.append(session)

    try:
        with faults.MonitorLoop() as loop:
            monitors = {
                "held": loop.start(
                    faults.make_healthy(str(directory / "held.sock"), on_connect=remember)
                ),
                "polled": loop.start(faults.make_healthy(str(directory / "polled.sock"))),
                "old2009": loop.start(
                    faults.ScriptedMonitor(str(directory / "old.sock"), dialect="2009")
                ),
                "old2010": loop.start(
                    faults.ScriptedMonitor(str(directory / "mid.sock"), dialect="2010")
                ),
            }
            config = {
                "poll_interval": "200ms",
                "timeout": "200ms",
                "monitors": [
                    {"name": "held", "address": monitors["held"].address},
                    {"name": "polled", "address": monitors["polled"].address, "mode": "poll"},
                    {"name": "old2009", "address": monitors["old2009"].address},
                    {"name": "old2010", "address": monitors["old2010"].address},
                ],
            }
            with ExporterProcess(config) as exp:
                wait_for(lambda: all(exp.value("qemu_up", vm=n) == 1 for n in monitors))
                for round_number in range(5):
                    for name in EVENTS:
                        loop.call(monitors["held"].broadcast_event(name, {"guest": False}))
                    # Drop the held connection: the exporter reconnects and negotiates again.
                    for session in list(sessions_seen):
                        if not session.closed:
                            loop.loop.call_soon_threadsafe(session.abort)
                    wait_for(lambda n=round_number: monitors["held"].connections >= n + 2)
                    time.sleep(0.3)
                wait_for(lambda: exp.value("qemu_up", vm="held") == 1)
                assert (exp.value("qemu_events_total", vm="held", event="RESET") or 0) >= 1
                assert monitors["polled"].connections >= 5, "poll mode: a session per poll"
            for name, monitor in monitors.items():
                commands = monitor.commands()
                assert len(commands) >= 10, (name, commands)
                refused = sorted({c for c in commands if not READ_ONLY.match(c)})
                assert refused == [], (name, refused)
            assert monitors["held"].connections >= 6
            assert monitors["held"].commands().count("qmp_capabilities") >= 6
    finally:
        shutil.rmtree(directory, ignore_errors=True)
