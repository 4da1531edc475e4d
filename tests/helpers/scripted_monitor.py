"""A scripted QMP monitor on a unix socket, for what a real QEMU cannot show: the 2009 and
2010 dialects, garbage, over-long lines, silence, a close in the middle of a response,
errors without ``id``, delayed and reordered answers.

A thin adapter over the simulator (:mod:`qmp_exporter.sim`): a :class:`SimulatedVM` that
knows only ``query-version``, ``query-status``, ``query-name`` and ``query-commands`` (plus
the scripted commands), served with a :class:`Script` and a :class:`Recording`::

    async def stop(session, request):          # an event before the reply, like QEMU
        await session.event("STOP")
        await session.reply(request, {})

    async with ScriptedMonitor(path, dialect="2010", handlers={"stop": stop}) as monitor:
        client = await connect(monitor.address)
        ...
        assert monitor.commands() == ["qmp_capabilities", "stop"]

``handlers`` maps a command name to a plain value (sent as ``{"return": value}``) or an
``async def handler(session, request)`` answering through the :class:`Session` (``reply``,
``error``, ``event``, ``send``, ``send_raw``, ``close``, ``abort``, ``wait_closed``), or
silent. ``greeting`` replaces the dialect's greeting: a dict, raw bytes (garbage), or
:data:`NO_GREETING`. ``on_connect(session)`` runs after the greeting.

Everything received is recorded (``monitor.received``: decoded requests in order;
``monitor.received_raw``: raw lines), also refused/unknown commands.

For code outside the test's event loop, :meth:`ScriptedMonitor.in_thread` serves from a
background thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Coroutine, Iterator
from typing import Any

from qmp_exporter.sim import (
    NO_GREETING,
    Recording,
    Script,
    Session,
    SimulatedMonitorServer,
    SimulatedVM,
)
from qmp_exporter.sim.hooks import ConnectHook

__all__ = ["NO_GREETING", "ScriptedMonitor", "Session", "long_line"]

#: What the scripted QEMU knows besides its scripted commands.
BASE_COMMANDS = frozenset({"query-version", "query-status", "query-name", "query-commands"})


class ScriptedMonitor:
    """A simulated monitor on ``path`` whose behaviour is scripted; see the module docstring."""

    def __init__(
        self,
        path: str,
        *,
        dialect: str = "modern",
        greeting: dict[str, Any] | bytes | None = None,
        handlers: dict[str, Any] | None = None,
        on_connect: ConnectHook | None = None,
        eol: bytes = b"\r\n",
        single_client: bool = True,
        concurrent: bool = False,
        name: str | None = "scripted",
    ) -> None:
        handlers = dict(handlers or {})
        self.vm = SimulatedVM(name, dialect=dialect, commands=BASE_COMMANDS | set(handlers))
        self.recording = Recording()
        self.script = Script(
            handlers=handlers,
            greeting=greeting,
            on_connect=on_connect,
            eol=eol,
            concurrent=concurrent,
            recording=self.recording,
        )
        self.server = SimulatedMonitorServer(
            self.vm, path, script=self.script, max_clients=1 if single_client else None
        )
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def address(self) -> str:
        return self.server.address

    @property
    def greeting(self) -> dict[str, Any] | bytes | None:
        return self.script.greeting

    @greeting.setter
    def greeting(self, value: dict[str, Any] | bytes | None) -> None:
        self.script.greeting = value

    @property
    def received(self) -> list[dict[str, Any]]:
        return self.recording.received

    @property
    def received_raw(self) -> list[bytes]:
        return self.recording.received_raw

    @property
    def sessions(self) -> list[Session]:
        return self.recording.sessions

    @property
    def connections(self) -> int:
        return self.recording.connections

    def commands(self) -> list[str]:
        """The ``execute`` names received so far, in order."""
        return self.recording.commands()

    async def start(self) -> ScriptedMonitor:
        self._loop = asyncio.get_running_loop()
        await self.server.start()
        return self

    async def stop(self) -> None:
        """Stop listening, close every connection and remove the socket file."""
        await self.server.close()

    async def __aenter__(self) -> ScriptedMonitor:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def broadcast_event(self, name: str, data: dict[str, Any] | None = None) -> None:
        """Send an event to every negotiated session (the VM emits it)."""
        self.vm.emit(name, data)

    @contextlib.contextmanager
    def in_thread(self) -> Iterator[ScriptedMonitor]:
        """Serve from a background thread with its own event loop (for blocking tests)."""
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="scripted-monitor", daemon=True)
        thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self.start(), loop).result(10)
            yield self
        finally:
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self.stop(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            loop.close()

    def call(self, coroutine: Coroutine[Any, Any, Any], timeout: float = 10) -> Any:
        """Run a coroutine in the monitor's loop (from another thread) and return its result."""
        if self._loop is None:
            raise RuntimeError("the monitor is not started")
        future: concurrent.futures.Future[Any] = asyncio.run_coroutine_threadsafe(
            coroutine, self._loop
        )
        return future.result(timeout)


def long_line(size: int) -> bytes:
    """A valid QMP response line of at least ``size`` bytes (for line-limit tests)."""
    return b'{"return": "' + b"x" * size + b'"}\r\n'
