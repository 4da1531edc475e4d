"""The guest-agent client (``qmp_exporter.qmp.agent``) against a recording fake agent, for
what the real one (tests/test_test_guest.py) cannot show: an earlier session's output left on
the socket, a silent or over-long agent, an error answer, and exactly what is sent."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from qmp_exporter.qmp import (
    CommandError,
    CommandRefusedError,
    CommandTimeoutError,
    LineTooLongError,
    connect_agent,
    is_agent_read_only,
)

Answer = Callable[[dict[str, Any]], bytes | None]


def agent_answer(request: dict[str, Any]) -> bytes | None:
    """What qemu-ga answers: the sync after a 0xFF byte, ping and info plainly."""
    command = request["execute"]
    if command == "guest-sync-delimited":
        return b"\xff" + json.dumps({"return": request["arguments"]["id"]}).encode() + b"\n"
    if command == "guest-ping":
        return b'{"return": {}}\n'
    if command == "guest-get-host-name":
        return b'{"return": {"host-name": "fake"}}\n'
    return b'{"error": {"class": "CommandNotFound", "desc": "no such command"}}\n'


async def with_agent(
    tmp_path: Path,
    session: Callable[[str], Awaitable[Any]],
    answer: Answer = agent_answer,
    greeting: bytes = b"",
) -> tuple[Any, bytes]:
    """Serve a fake agent at a socket in ``tmp_path``, run ``session(address)``; its result
    and every byte the agent received."""
    received = bytearray()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(greeting)  # an earlier session's leftovers, if any
        buffer = b""
        while chunk := await reader.read(65536):
            received.extend(chunk)
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                line = line.replace(b"\xff", b"")  # the client's parser reset
                if line.strip():
                    reply = answer(json.loads(line))
                    if reply is not None:
                        writer.write(reply)
                        await writer.drain()
        writer.close()

    path = str(tmp_path / "qga.sock")
    server = await asyncio.start_unix_server(serve, path)
    async with server:
        result = await session(f"unix:{path}")
    return result, bytes(received)


def sent_commands(received: bytes) -> list[str]:
    lines = received.replace(b"\xff", b"").splitlines()
    return [json.loads(line)["execute"] for line in lines if line.strip()]


def test_only_read_only_agent_commands_are_allowed() -> None:
    for command in ("guest-sync-delimited", "guest-ping", "guest-info", "guest-get-fsinfo",
                    "guest-get-osinfo", "guest-network-get-interfaces"):  # fmt: skip
        assert is_agent_read_only(command), command
    for command in ("guest-exec", "guest-exec-status", "guest-file-open", "guest-fsfreeze-freeze",
                    "guest-fsfreeze-status", "guest-shutdown", "guest-set-time",
                    "guest-suspend-ram", "qmp_capabilities", "query-status", ""):  # fmt: skip
        assert not is_agent_read_only(command), command


def test_a_session_resyncs_past_an_earlier_sessions_output_and_sends_only_reads(
    tmp_path: Path,
) -> None:
    async def session(address: str) -> list[Any]:
        async with await connect_agent(address, timeout=5) as agent:
            results = [await agent.execute("guest-ping")]
            for command in ("guest-exec", "guest-shutdown", "guest-file-open"):
                with pytest.raises(CommandRefusedError):
                    await agent.execute(command, {"path": "/etc/shadow"})
            results.append(await agent.execute("guest-get-host-name"))
            return results

    stale = b'{"return": {"fs": 1}}\n\xff{"return": 12345}\n'  # answers of someone before
    results, received = asyncio.run(with_agent(tmp_path, session, greeting=stale))
    assert results == [{}, {"host-name": "fake"}]
    assert received.startswith(b"\xff"), "the agent's parser is reset first"
    assert sent_commands(received) == ["guest-sync-delimited", "guest-ping", "guest-get-host-name"]


def test_an_agent_error_is_a_command_error(tmp_path: Path) -> None:
    async def session(address: str) -> str:
        async with await connect_agent(address, timeout=5) as agent:
            with pytest.raises(CommandError) as raised:
                await agent.execute("guest-get-users")
            return raised.value.error_class

    assert asyncio.run(with_agent(tmp_path, session))[0] == "CommandNotFound"


def test_a_silent_agent_is_a_timeout_and_an_endless_line_is_refused(tmp_path: Path) -> None:
    async def silent(address: str) -> None:
        with pytest.raises(CommandTimeoutError):
            await connect_agent(address, timeout=0.3)

    asyncio.run(with_agent(tmp_path, silent, answer=lambda request: None))

    def endless(request: dict[str, Any]) -> bytes:
        if request["execute"] == "guest-sync-delimited":
            return agent_answer(request) or b""
        return b'{"return": "' + b"x" * 5000  # no end of line

    async def long_line(address: str) -> None:
        async with await connect_agent(address, timeout=2, max_line=1024) as agent:
            with pytest.raises(LineTooLongError):
                await agent.execute("guest-ping")

    asyncio.run(with_agent(tmp_path, long_line, answer=endless))
