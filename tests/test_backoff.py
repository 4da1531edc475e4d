"""Every kind of failure is followed by the poller's backoff (0.5 s doubling up to the poll
interval, ±20% jitter), framing errors and closes included; the warning for it is logged
once; a greeting that arrives too slowly is a ``timeout``, not ``busy``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from qmp_exporter.config import ConfigError, MonitorConfig, parse_yaml
from qmp_exporter.polling.failures import backoff_delay, error_reason
from qmp_exporter.polling.poller import MonitorPoller, PollSettings
from qmp_exporter.qmp import GreetingIncompleteError, GreetingTimeoutError, QMPError, connect
from qmp_exporter.qmp.transport import READ_BUFFER_BYTES
from tests.helpers.scripted_monitor import NO_GREETING, ScriptedMonitor, Session, long_line

INTERVAL = 1.0
#: Watched this long: attempts at about 0, 0.5, 1.5, 2.5 and 3.5 s (at most 6 with jitter),
#: where polling without backoff (one reconnect every 50 ms) makes about 80.
WATCHED = 4.0
SETTINGS = PollSettings(interval=INTERVAL, timeout=1.0, start_spread=0, max_line=65536)


async def garbage(session: Session) -> None:
    await session.send_raw(b"\x00\xff this is not JSON }{\r\n")


async def close_after_greeting(session: Session) -> None:
    session.close()


async def garbage_after_a_pause(session: Session) -> None:
    await asyncio.sleep(0.05)  # the greeting leaves alone; the garbage comes in a later read
    await session.send_raw(b"not JSON either\r\n")


async def garbage_answer(session: Session, request: dict[str, Any]) -> None:
    await session.send_raw(b"}{ not an answer\r\n")


async def too_long(session: Session, request: dict[str, Any]) -> None:
    await session.send_raw(long_line(200_000))


#: name -> (monitor options, the reason every failed poll must have)
FAULTS: dict[str, tuple[dict[str, Any], str]] = {
    "garbage": ({"on_connect": garbage}, "protocol"),
    "non-JSON answer to a poll": ({"handlers": {"query-status": garbage_answer}}, "protocol"),
    "garbage in a later read": ({"on_connect": garbage_after_a_pause}, "protocol"),
    "close after the greeting": ({"on_connect": close_after_greeting}, "connect"),
    "over-long answer": ({"handlers": {"query-blockstats": too_long}}, "protocol"),
}


@dataclass
class Watched:
    """What one faulty monitor's poller did while watched."""

    sessions: int
    errors: dict[str, int]
    ever_up: bool
    warnings: list[str] = field(default_factory=list)


class _Warnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture(scope="module")
def watched(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Watched]:
    """Every fault of :data:`FAULTS` polled at once (persistent mode) for :data:`WATCHED`
    seconds, each by its own poller named after it."""
    folder = tmp_path_factory.mktemp("backoff")

    async def one(index: int, fault: str) -> Watched:
        ups: list[bool] = []
        path = str(folder / f"vm{index}.qmp")
        async with ScriptedMonitor(path, single_client=False, **FAULTS[fault][0]) as monitor:
            poller = MonitorPoller(
                MonitorConfig(fault, monitor.address),
                SETTINGS,
                on_state=lambda state, timing_only: ups.append(state.up),
            )
            poller.start()
            await asyncio.sleep(WATCHED)
            await poller.stop()
            return Watched(monitor.connections, dict(poller.state.counters.poll_errors), any(ups))

    async def scenario() -> list[Watched]:
        return await asyncio.gather(*(one(i, fault) for i, fault in enumerate(FAULTS)))

    handler = _Warnings()
    logger = logging.getLogger("qmp_exporter.polling.poller")
    logger.addHandler(handler)
    try:
        results = dict(zip(FAULTS, asyncio.run(scenario()), strict=True))
    finally:
        logger.removeHandler(handler)
    for fault, result in results.items():
        result.warnings = [m for m in handler.messages if m.startswith(f"{fault}: ")]
    return results


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_the_reconnect_rate_is_bounded_by_the_backoff(
    watched: dict[str, Watched], fault: str
) -> None:
    result, reason = watched[fault], FAULTS[fault][1]
    assert not result.ever_up
    assert 3 <= result.sessions <= 6, f"{result.sessions} sessions in {WATCHED}s"
    errors = result.errors
    assert errors[reason] >= 3 and sum(errors.values()) == errors[reason], errors
    assert len(result.warnings) == 1, result.warnings
    assert f"{fault}: down ({reason})" in result.warnings[0]


def test_an_over_long_answer_says_which_collector_asked_and_what_to_do(
    watched: dict[str, Watched],
) -> None:
    (warning,) = watched["over-long answer"].warnings
    for words in ("query-blockstats", "65536", "the block collector", "qmp_max_line_bytes",
                  "`collectors:`"):  # fmt: skip
        assert words in warning, warning


def test_the_backoff_doubles_from_half_a_second_up_to_the_interval() -> None:
    for failures, nominal in ((1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 5.0), (500, 5.0)):
        delay = backoff_delay(failures, 5.0)
        assert 0.8 * nominal <= delay <= 1.2 * nominal, (failures, delay)


def one_byte_at_a_time(seconds_per_byte: float) -> Callable[[Session], Awaitable[None]]:
    async def greet(session: Session) -> None:
        greeting = b'{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}}}}\r\n'
        for byte in greeting:
            if session.closed:
                return
            await session.send_raw(bytes([byte]))
            await asyncio.sleep(seconds_per_byte)

    return greet


@pytest.mark.parametrize(
    ("on_connect", "error", "reason"),
    [
        (one_byte_at_a_time(0.02), GreetingIncompleteError, "timeout"),
        (None, GreetingTimeoutError, "busy"),
    ],
    ids=["greeting byte by byte", "no greeting"],
)
def test_a_slow_greeting_is_a_timeout_and_no_greeting_is_busy(
    tmp_path: Path, on_connect: Any, error: type[Exception], reason: str
) -> None:
    async def scenario() -> BaseException:
        options: dict[str, Any] = {"greeting": NO_GREETING}
        if on_connect is not None:
            options["on_connect"] = on_connect
        async with ScriptedMonitor(str(tmp_path / "vm.qmp"), **options) as monitor:
            with pytest.raises(error) as raised:
                await connect(monitor.address, timeout=0.5)
            return raised.value

    assert error_reason(asyncio.run(scenario())) == reason


def test_garbage_read_just_after_the_greeting_is_protocol_not_connect(tmp_path: Path) -> None:
    """The flaky ``garbage`` fault: the greeting fills one read exactly, the garbage comes in
    the next, which the client handles before its connect resumes; the session is then
    closed, and the reason must still be the garbage (``protocol``), not ``connect``."""
    head = b'{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}}, '
    tail = b'"capabilities": []}}\r\n'
    padding = b" " * (READ_BUFFER_BYTES - len(head) - len(tail))
    raw = head + padding + tail + b"\x00\xff this is not JSON }{\r\n"

    async def scenario() -> list[str]:
        reasons = []
        async with ScriptedMonitor(str(tmp_path / "vm.qmp"), greeting=raw) as monitor:
            for _ in range(20):
                with pytest.raises(QMPError) as raised:
                    await connect(monitor.address, timeout=2)
                reasons.append(error_reason(raised.value))
        return reasons

    assert asyncio.run(scenario()) == ["protocol"] * 20


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("65535", "outside 65536..67108864"),
        ("67108865", "outside"),
        ("true", "number of bytes"),
        ("1MiB", "number of bytes"),
    ],
)
def test_qmp_max_line_bytes_is_bounded(value: str, error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        parse_yaml(f"qmp_max_line_bytes: {value}")


def test_qmp_max_line_bytes_reaches_the_pollers() -> None:
    assert PollSettings.from_config(parse_yaml("")).max_line == 1 << 20
    config = parse_yaml("qmp_max_line_bytes: 4194304")
    assert PollSettings.from_config(config).max_line == 4 << 20
