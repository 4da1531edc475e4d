"""Faults: lying, stuck and vanishing monitors beside a healthy real QEMU.

One exporter subprocess watches them all at once (poll every 500 ms, timeout 300 ms) while
the test scrapes it continuously; the module fixture runs the scenario once and the tests
below each assert one expected outcome.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.helpers import fault_monitors as faults
from tests.helpers.exporter import ExporterProcess, parse_samples
from tests.helpers.qemu import QemuVM
from tests.helpers.qemu_versions import QemuBuild

POLL = 0.5
TIMEOUT = 0.3
FLAPS = 1000
#: VM name → the error reason it must show.
EXPECTED_REASONS = {
    "held": "busy",  # a real QEMU whose only monitor another client holds: no greeting
    "garbage": "protocol",
    "endless": "protocol",
    "close": "connect",
    "slow": "timeout",
    "half": "timeout",
    "cut": "connect",
    "denied": "connect",
}
#: Never up: exactly one warning for the whole run.
STEADY_FAULTS = tuple(EXPECTED_REASONS)
ALLOWED_COMMANDS = re.compile(r"^(qmp_capabilities|query-[a-z0-9-]+)$")


@dataclass
class Run:
    exporter: ExporterProcess
    scrape_seconds: list[float] = field(default_factory=list)
    healthy_ages: list[float] = field(default_factory=list)
    healthy_up: list[float] = field(default_factory=list)
    final: dict = field(default_factory=dict)
    rss: tuple[int, int] = (0, 0)
    fds: tuple[int, int] = (0, 0)
    removed_went_down: bool = False
    removed_came_back: bool = False
    flap_cycles: int = 0
    warm: bool = False
    commands: list[str] = field(default_factory=list)
    log: list[str] = field(default_factory=list)


def value(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def scrape_and_record(run: Run) -> dict:
    seconds, text = run.exporter.scrape()
    samples = parse_samples(text)
    run.scrape_seconds.append(seconds)
    if not run.warm:
        return samples
    run.healthy_up.append(value(samples, "qemu_up", vm="healthy") or 0.0)
    last = value(samples, "qmp_exporter_last_poll_success_timestamp_seconds", vm="healthy")
    if last:
        run.healthy_ages.append(time.time() - last)
    return samples


def scrape_for(run: Run, seconds: float, until=None) -> dict:
    deadline = time.monotonic() + seconds
    samples: dict = {}
    while time.monotonic() < deadline:
        samples = scrape_and_record(run)
        if until is not None and until(samples):
            return samples
        time.sleep(0.1)
    return samples


def hold_monitor(path: str, timeout: float = 10.0) -> socket.socket:
    """Connect to a QEMU monitor and read its greeting: this client now owns the socket."""
    deadline = time.monotonic() + timeout
    while True:
        holder = socket.socket(socket.AF_UNIX)
        try:
            holder.connect(path)
            holder.settimeout(timeout)
            assert b"QMP" in holder.recv(4096)
            return holder
        except ConnectionRefusedError:  # QEMU made the file but is not listening yet
            holder.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@pytest.fixture(scope="module")
def run(qemu_binary: QemuBuild) -> Iterator[Run]:
    if shutil.which("setpriv") is None:
        pytest.fail("setpriv (util-linux) is required to test a permission-denied socket")
    sockets = Path(tempfile.mkdtemp(prefix="qmpx-faults-", dir="/tmp"))
    healthy = QemuVM(name="healthy", build=qemu_binary).start()
    held = QemuVM(name="held", build=qemu_binary).start()
    holder = hold_monitor(held.qmp_path)
    loop = faults.MonitorLoop().__enter__()
    exporter = None
    try:
        paths = {name: str(sockets / f"{name}.sock") for name in
                 (*EXPECTED_REASONS, "removed", "flap")}  # fmt: skip
        makers = {
            "garbage": faults.make_garbage_after_greeting,
            "endless": faults.make_endless_line,
            "close": faults.make_close_at_once,
            "slow": faults.make_slow_answer,
            "half": faults.make_half_response,
            "cut": faults.make_disconnect_mid_response,
            "denied": faults.make_healthy,
            "removed": faults.make_healthy,
        }
        monitors = {name: loop.start(make(paths[name])) for name, make in makers.items()}
        os.chmod(paths["denied"], 0)
        addresses = {"healthy": healthy.qmp_address(), "held": held.qmp_address()}
        addresses.update((n, f"unix:{p}") for n, p in paths.items() if n != "held")
        config = {
            "poll_interval": f"{int(POLL * 1000)}ms",
            "timeout": f"{int(TIMEOUT * 1000)}ms",
            "monitors": [{"name": n, "address": a} for n, a in addresses.items()],
        }
        # Root ignores file modes; without CAP_DAC_OVERRIDE the 000 socket is refused.
        exporter = ExporterProcess(
            config, log_level="info", drop_capabilities=("dac_override", "dac_read_search")
        ).start()
        result = Run(exporter)

        def all_failed(samples: dict) -> bool:
            return value(samples, "qemu_up", vm="healthy") == 1 and all(
                sum(
                    value(samples, "qmp_exporter_poll_errors_total", vm=vm, reason=r) or 0
                    for r in ("connect", "busy", "timeout", "protocol", "command")
                )
                >= 2
                for vm in EXPECTED_REASONS
            )

        scrape_for(result, 15, until=all_failed)
        result.warm = True  # from now on the healthy VM must be up and fresh at every scrape
        result.rss = (exporter.rss_bytes(), 0)
        result.fds = (exporter.fd_count(), 0)

        with faults.flapping(loop, paths["flap"], FLAPS, up_seconds=0.002) as flaps:
            # The socket file is removed (monitor gone) and recreated later.
            loop.stop(monitors["removed"])
            scrape_for(result, 5, until=lambda s: value(s, "qemu_up", vm="removed") == 0)
            result.removed_went_down = value(
                scrape_and_record(result), "qemu_up", vm="removed") == 0  # fmt: skip
            loop.start(monitors["removed"])
            scrape_for(result, 5, until=lambda s: value(s, "qemu_up", vm="removed") == 1)
            result.removed_came_back = value(
                scrape_and_record(result), "qemu_up", vm="removed") == 1  # fmt: skip
            deadline = time.monotonic() + 60
            while flaps["cycles"] < FLAPS and time.monotonic() < deadline:
                scrape_for(result, 0.5)
        result.flap_cycles = flaps["cycles"]
        scrape_for(result, 3 * POLL)
        result.final = scrape_and_record(result)
        result.rss = (result.rss[0], exporter.rss_bytes())
        result.fds = (result.fds[0], exporter.fd_count())
        result.commands = [c for m in monitors.values() for c in m.commands()]
        exporter.stop()
        result.log = exporter.log_lines()
        other_reasons = [line for line in result.log if "down (" in line]
        print("\n".join(other_reasons))  # shown with -s or on failure
        yield result
    finally:
        if exporter is not None:
            exporter.stop()
        loop.__exit__(None, None, None)
        holder.close()
        healthy.close()
        held.close()
        shutil.rmtree(sockets, ignore_errors=True)


def test_the_healthy_vm_keeps_its_metrics_current(run: Run) -> None:
    assert run.healthy_up and all(up == 1 for up in run.healthy_up), run.exporter.log()
    # Each scrape sees a success no older than a few poll intervals.
    assert max(run.healthy_ages) < 4 * POLL + 1, max(run.healthy_ages)


def test_every_scrape_answers_well_under_a_second(run: Run) -> None:
    assert len(run.scrape_seconds) > 50
    assert max(run.scrape_seconds) < 1.0, sorted(run.scrape_seconds)[-5:]


@pytest.mark.parametrize(("vm", "reason"), sorted(EXPECTED_REASONS.items()))
def test_each_faulty_vm_is_down_with_the_right_reason(run: Run, vm: str, reason: str) -> None:
    assert value(run.final, "qemu_up", vm=vm) == 0
    errors = {
        r: value(run.final, "qmp_exporter_poll_errors_total", vm=vm, reason=r)
        for r in ("connect", "busy", "timeout", "protocol", "command")
    }
    assert errors[reason] and errors[reason] >= 2, errors
    # The expected reason dominates (a rare other one under heavy load is tolerated).
    others = sum(v or 0 for k, v in errors.items() if k != reason)
    assert others <= max(1, errors[reason] // 5), errors


def test_a_removed_and_recreated_socket_goes_down_then_up(run: Run) -> None:
    assert run.removed_went_down
    assert run.removed_came_back
    assert value(run.final, "qemu_up", vm="removed") == 1
    assert (value(run.final, "qmp_exporter_poll_errors_total", vm="removed", reason="connect")
            or 0) >= 1  # fmt: skip


def test_a_monitor_that_comes_and_goes_a_thousand_times(run: Run) -> None:
    assert run.flap_cycles == FLAPS
    sessions = value(run.final, "qmp_exporter_connections_total", vm="flap") or 0
    assert sessions >= 1, "it was seen up at least once"


def test_memory_and_file_descriptors_stay_bounded(run: Run) -> None:
    before, after = run.rss
    assert after - before < 16 << 20, f"RSS grew from {before} to {after}"
    fds_before, fds_after = run.fds
    assert fds_after <= fds_before + 4, (fds_before, fds_after)


def state_changes(log: list[str], vm: str) -> list[str]:
    """The VM's logged transitions in order: 'down:<reason>' and 'up'."""
    changes = []
    for line in log:
        down = re.search(rf"level=WARNING \S+: {re.escape(vm)}: down \((\w+)\)", line)
        if down:
            changes.append(f"down:{down.group(1)}")
        elif re.search(rf"level=INFO \S+: {re.escape(vm)}: up ", line):
            changes.append("up")
    return changes


@pytest.mark.parametrize("vm", [*STEADY_FAULTS, "removed", "flap", "healthy"])
def test_one_warning_per_state_change_not_per_poll(run: Run, vm: str) -> None:
    changes = state_changes(run.log, vm)
    for previous, current in itertools.pairwise(changes):
        assert previous != current, f"{vm}: repeated {current!r} without a change: {changes}"
    if vm in STEADY_FAULTS:
        polls = sum(
            value(run.final, "qmp_exporter_poll_errors_total", vm=vm, reason=r) or 0
            for r in ("connect", "busy", "timeout", "protocol", "command")
        )
        assert changes == [f"down:{EXPECTED_REASONS[vm]}"], changes
        assert polls >= 5, "many failed polls, one warning"
    if vm == "healthy":
        assert changes == []


def test_only_read_only_commands_were_sent(run: Run) -> None:
    assert run.commands, "the monitors recorded what they received"
    assert all(ALLOWED_COMMANDS.match(c) for c in run.commands), set(run.commands)
