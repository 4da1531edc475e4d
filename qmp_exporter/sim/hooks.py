"""Scripting hooks for a simulated monitor: what a test puts between a client and the VM.

A :class:`Script` given to :class:`~qmp_exporter.sim.server.SimulatedMonitorServer` can
replace the greeting (a dict, raw bytes, or :data:`NO_GREETING`), answer any command in the
VM's place (``handlers``: a plain value sent as ``{"return": value}``, or an
``async def handler(session, request)`` that answers, delays, garbles or closes through the
:class:`~qmp_exporter.sim.session.Session`), run ``on_connect(session)`` after the greeting,
change the line end, and record everything received in a :class:`Recording`.

Hooks run in order (the next command waits for a hook to finish, as a real monitor
answers in order) unless ``concurrent`` is set: then each handler runs on its own and
answers may come out of order.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from qmp_exporter.sim.session import Session

#: Pass as ``Script.greeting`` for a monitor that accepts connections and never greets.
NO_GREETING = b""

#: ``async def handler(session, request)``: answers ``request`` (or not) through ``session``.
Handler = Callable[["Session", dict[str, Any]], Awaitable[None]]
#: ``async def on_connect(session)``: runs once a client is greeted.
ConnectHook = Callable[["Session"], Awaitable[None]]


@dataclass
class Recording:
    """Everything the clients of one monitor sent, across sessions, in order."""

    #: Decoded requests (JSON objects), also those refused or unknown.
    received: list[dict[str, Any]] = field(default_factory=list)
    #: Raw input lines as received (each ends with ``\\n``).
    received_raw: list[bytes] = field(default_factory=list)
    #: Every session, oldest first.
    sessions: list[Session] = field(default_factory=list)

    @property
    def connections(self) -> int:
        """How many clients were greeted (or would have been, under ``NO_GREETING``)."""
        return len(self.sessions)

    def commands(self) -> list[str]:
        """The ``execute`` names received so far, in order."""
        return [str(request.get("execute")) for request in self.received]


@dataclass
class Script:
    """How a monitor departs from the plain simulated QEMU; see the module docstring."""

    #: Command name -> a plain ``return`` value or a :data:`Handler`.
    handlers: dict[str, Any] = field(default_factory=dict)
    #: The greeting: ``None`` for the VM's dialect, a dict, or raw bytes (may be empty).
    greeting: dict[str, Any] | bytes | None = None
    on_connect: ConnectHook | None = None
    #: Line end of replies, scripted events and the greeting (QEMU sends CRLF).
    eol: bytes = b"\r\n"
    #: Run each handler in its own task, so a slow answer does not hold back the next.
    concurrent: bool = False
    recording: Recording | None = None
