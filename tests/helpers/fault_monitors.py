"""Faulty QMP monitors for the fault and read-only suites: scripted simulator monitors.

Each ``make_*`` returns a :class:`ScriptedMonitor` whose behaviour is one fault; a
:class:`MonitorLoop` serves any number of them from one background thread, so an exporter
subprocess (or any blocking test code) can talk to them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Coroutine, Iterator
from typing import Any

from tests.helpers.scripted_monitor import NO_GREETING, ScriptedMonitor, Session

__all__ = ["NO_GREETING", "MonitorLoop", "ScriptedMonitor", "Session"]

#: Bytes an "endless line" monitor sends at most (then it stops and waits).
ENDLESS_LINE_BYTES = 64 << 20


class MonitorLoop:
    """An event loop in a thread serving scripted monitors; ``call`` runs coroutines in it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="monitors", daemon=True)
        self.monitors: list[ScriptedMonitor] = []

    def __enter__(self) -> MonitorLoop:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        for monitor in self.monitors:
            with contextlib.suppress(Exception):
                self.call(monitor.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def call(self, coroutine: Coroutine[Any, Any, Any], timeout: float = 30) -> Any:
        future: concurrent.futures.Future[Any] = asyncio.run_coroutine_threadsafe(
            coroutine, self.loop
        )
        return future.result(timeout)

    def start(self, monitor: ScriptedMonitor) -> ScriptedMonitor:
        """Start serving ``monitor`` (stopped on exit)."""
        self.call(monitor.start())
        if monitor not in self.monitors:
            self.monitors.append(monitor)
        return monitor

    def stop(self, monitor: ScriptedMonitor) -> None:
        self.call(monitor.stop())


def make_healthy(path: str, **kwargs: Any) -> ScriptedMonitor:
    return ScriptedMonitor(path, dialect="modern", **kwargs)


def make_garbage_after_greeting(path: str) -> ScriptedMonitor:
    async def garbage(session: Session) -> None:
        await session.send_raw(b"\x00\xff this is not JSON }{\r\n")

    return ScriptedMonitor(path, on_connect=garbage)


def make_endless_line(path: str) -> ScriptedMonitor:
    async def endless(session: Session) -> None:
        chunk = b"x" * 65536
        for _ in range(ENDLESS_LINE_BYTES // len(chunk)):
            if session.closed:
                return
            await session.send_raw(chunk)

    return ScriptedMonitor(path, greeting=NO_GREETING, on_connect=endless)


def make_close_at_once(path: str) -> ScriptedMonitor:
    async def close(session: Session) -> None:
        session.abort()

    return ScriptedMonitor(path, greeting=NO_GREETING, on_connect=close, single_client=False)


def make_slow_answer(path: str, delay: float = 30.0) -> ScriptedMonitor:
    async def slow(session: Session, request: dict[str, Any]) -> None:
        await asyncio.sleep(delay)
        await session.reply(request, {"running": True, "singlestep": False, "status": "running"})

    return ScriptedMonitor(path, handlers={"query-status": slow}, concurrent=True)


def make_half_response(path: str) -> ScriptedMonitor:
    async def half(session: Session, request: dict[str, Any]) -> None:
        await session.send_raw(b'{"return": {"running": tr')
        # Silent from now on, but free for the next client once this one leaves (as QEMU).
        await session.wait_closed()

    return ScriptedMonitor(path, handlers={"query-status": half})


def make_disconnect_mid_response(path: str) -> ScriptedMonitor:
    async def cut(session: Session, request: dict[str, Any]) -> None:
        await session.send_raw(b'{"return": {"running": tr')
        session.abort()

    return ScriptedMonitor(path, handlers={"query-status": cut})


def make_answering(path: str, answers: dict[str, Any]) -> ScriptedMonitor:
    """A modern monitor answering the given commands with the given (maybe hostile) values."""
    return ScriptedMonitor(path, handlers=dict(answers))


@contextlib.contextmanager
def flapping(loop: MonitorLoop, path: str, times: int, up_seconds: float) -> Iterator[Any]:
    """Start and stop a healthy monitor at ``path`` ``times`` times in a background thread."""
    done = threading.Event()
    counter = {"cycles": 0}

    def run() -> None:
        for _ in range(times):
            monitor = make_healthy(path)
            loop.call(monitor.start())
            loop.call(asyncio.sleep(up_seconds))
            loop.call(monitor.stop())
            counter["cycles"] += 1
        done.set()

    thread = threading.Thread(target=run, name="flapping", daemon=True)
    thread.start()
    try:
        yield counter
    finally:
        thread.join(120)
