"""The QEMU guest agent (``qemu-ga``) as a client sees it: QMP's JSON lines, but no greeting,
no capabilities, no ``id``, one client at a time and one command at a time.

A session: connect, resynchronise, ask, leave. Output left over from an earlier client may
still be on the way, so :meth:`AgentClient.sync` first sends a ``0xFF`` byte (the agent's
parser drops what it holds) and then ``guest-sync-delimited`` with a fresh id, whose answer the
agent sends after a ``0xFF`` byte of its own: everything before that byte, and any answer with
another id, is an earlier session's and is dropped.

Read-only: only the commands :func:`is_agent_read_only` names are ever sent (``guest-sync*``,
``guest-ping``, ``guest-info``, ``guest-get-*``, ``guest-network-get-interfaces``); never
``guest-exec``, ``guest-file-*``, ``guest-fsfreeze-*``, ``guest-shutdown`` or ``guest-set-*``.

>>> async with await connect_agent("unix:/run/qemu/vm1.qga", timeout=3) as agent:
...     await agent.execute("guest-get-fsinfo")
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from qmp_exporter.qmp.address import Address, parse_address
from qmp_exporter.qmp.errors import (
    CommandError,
    CommandRefusedError,
    CommandTimeoutError,
    ConnectionClosedError,
    LineTooLongError,
    ProtocolError,
)
from qmp_exporter.qmp.framing import DEFAULT_MAX_LINE_BYTES, decode_line
from qmp_exporter.qmp.transport import open_transport

#: The byte that resets the agent's parser, and that precedes its answer to
#: ``guest-sync-delimited``.
DELIMITER = b"\xff"
#: Default bound, in seconds, on the connect, the sync and each command.
DEFAULT_AGENT_TIMEOUT = 3.0
#: Answers of an earlier session read at most while resynchronising.
MAX_STALE_ANSWERS = 16

_READ_ONLY = frozenset(
    ("guest-sync", "guest-sync-delimited", "guest-ping", "guest-info",
     "guest-network-get-interfaces")
)  # fmt: skip


def is_agent_read_only(command: str) -> bool:
    """True for the agent commands that read and change nothing in the guest."""
    return command in _READ_ONLY or command.startswith("guest-get-")


class AgentClient:
    """One connection to a guest agent. Create it with :func:`connect_agent`."""

    def __init__(self, address: Address, timeout: float, max_line: int) -> None:
        self.address = address
        self.timeout = timeout
        self.max_line = max_line
        self._pending = bytearray()
        self._arrived = asyncio.Event()
        self._lost: Exception | None = None
        self._transport: asyncio.Transport | None = None

    async def _open(self) -> None:
        self._transport = await open_transport(
            self.address, self.timeout, self._receive, self._connection_lost
        )

    def _receive(self, data: bytes) -> None:
        self._pending += data
        self._arrived.set()

    def _connection_lost(self, exc: Exception | None) -> None:
        self._lost = exc or ConnectionClosedError(f"{self.address}: closed by the agent")
        self._arrived.set()

    async def sync(self) -> None:
        """Drop whatever an earlier session left, then agree on a fresh id (see the module's
        docstring); :class:`ProtocolError` when the agent answers with something else."""
        token = time.monotonic_ns() // 1000 % (2**31 - 1) + 1  # differs from an earlier one's
        self._pending.clear()
        self._write(DELIMITER)
        self._write(_line_of("guest-sync-delimited", {"id": token}))
        async with self._deadline("guest-sync-delimited"):
            for _ in range(MAX_STALE_ANSWERS):
                await self._skip_to_delimiter()
                answer = decode_line(await self._line())
                if answer.get("return") == token:
                    return
            raise ProtocolError(f"{self.address}: the agent did not answer its sync")

    async def execute(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        """Run one read-only command and return its ``return`` value; :class:`CommandError`
        for the agent's error, :class:`CommandRefusedError` (nothing sent) for a command that
        may change the guest."""
        if not is_agent_read_only(command):
            raise CommandRefusedError(
                f"{command!r} may change the guest; the agent client is read-only"
            )
        self._write(_line_of(command, arguments))
        async with self._deadline(command):
            answer = decode_line(await self._line())
        if "return" in answer:
            return answer["return"]
        error = answer.get("error")
        if isinstance(error, dict):
            raise CommandError(
                command, str(error.get("class", "")), str(error.get("desc", "")), error
            )
        raise ProtocolError(f"{command}: an answer with neither return nor error")

    async def close(self) -> None:
        """Leave (the agent then serves the next client)."""
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    async def __aenter__(self) -> AgentClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _write(self, data: bytes) -> None:
        if self._transport is None or self._lost is not None:
            raise ConnectionClosedError(f"{self.address}: the connection is closed")
        self._transport.write(data)

    def _deadline(self, command: str) -> _Deadline:
        return _Deadline(self.timeout, f"{self.address}: {command}: no answer")

    async def _skip_to_delimiter(self) -> None:
        """Drop bytes up to and including the agent's next ``0xFF``."""
        while (index := self._pending.find(DELIMITER)) < 0:
            self._pending.clear()
            await self._more()
        del self._pending[: index + 1]

    async def _line(self) -> bytes:
        """The next line, at most ``max_line`` bytes."""
        while (index := self._pending.find(b"\n")) < 0:
            if len(self._pending) > self.max_line:
                raise LineTooLongError(
                    f"{self.address}: a line of more than {self.max_line} bytes", self.max_line
                )
            await self._more()
        if index + 1 > self.max_line:
            raise LineTooLongError(
                f"{self.address}: a line of {index + 1} bytes (limit {self.max_line})",
                self.max_line,
            )
        line = bytes(self._pending[: index + 1])
        del self._pending[: index + 1]
        return line

    async def _more(self) -> None:
        if self._lost is not None:
            raise ConnectionClosedError(f"{self.address}: closed by the agent") from self._lost
        self._arrived.clear()
        await self._arrived.wait()
        if self._lost is not None and not self._pending:
            raise ConnectionClosedError(f"{self.address}: closed by the agent") from self._lost


def _line_of(command: str, arguments: dict[str, Any] | None) -> bytes:
    """One command as the agent reads it (no ``id``: the agent answers in order)."""
    message: dict[str, Any] = {"execute": command}
    if arguments:
        message["arguments"] = arguments
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


class _Deadline:
    """``asyncio.timeout`` raising :class:`CommandTimeoutError` (never ``wait_for``)."""

    def __init__(self, seconds: float, message: str) -> None:
        self._timeout = asyncio.timeout(seconds)
        self._message = message

    async def __aenter__(self) -> None:
        await self._timeout.__aenter__()

    async def __aexit__(self, kind: Any, error: Any, traceback: Any) -> None:
        try:
            await self._timeout.__aexit__(kind, error, traceback)
        except TimeoutError:
            raise CommandTimeoutError(self._message) from None


async def connect_agent(
    address: str | Address,
    timeout: float = DEFAULT_AGENT_TIMEOUT,
    max_line: int = DEFAULT_MAX_LINE_BYTES,
) -> AgentClient:
    """Connect to the guest agent at ``address`` and resynchronise (see the module's
    docstring); the caller asks, then closes (the agent serves one client)."""
    if isinstance(address, str):
        address = parse_address(address)
    client = AgentClient(address, timeout, max_line)
    await client._open()
    try:
        await client.sync()
    except BaseException:
        await client.close()
        raise
    return client
