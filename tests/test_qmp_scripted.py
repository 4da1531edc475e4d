"""The QMP client against a scripted monitor: old dialects and faults real QEMU cannot show."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

from qmp_exporter.qmp import (
    CommandError,
    CommandRefusedError,
    CommandTimeoutError,
    ConnectionClosedError,
    ConnectRefusedError,
    ConnectTimeoutError,
    GreetingTimeoutError,
    LineTooLongError,
    MonitorBusyError,
    NotQMPError,
    PermissionDeniedError,
    QMPError,
    SocketNotFoundError,
    connect,
)
from tests.helpers.exporter import free_port
from tests.helpers.scripted_monitor import NO_GREETING, ScriptedMonitor, Session, long_line


@pytest.fixture
def sock_path() -> Iterator[str]:
    directory = tempfile.mkdtemp(prefix="qmps-", dir="/tmp")
    yield os.path.join(directory, "mon.sock")
    for name in os.listdir(directory):
        os.unlink(os.path.join(directory, name))
    os.rmdir(directory)


def run(coroutine: Awaitable[Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coroutine, 30))


def with_monitor(
    path: str, body: Callable[[ScriptedMonitor], Awaitable[Any]], **options: Any
) -> Any:
    async def main() -> Any:
        async with ScriptedMonitor(path, **options) as monitor:
            return await body(monitor)

    return run(main())


# -- dialects ------------------------------------------------------------------------------


def test_2009_dialect_works_without_negotiation(sock_path: str) -> None:
    async def body(monitor: ScriptedMonitor) -> None:
        client = await connect(monitor.address, timeout=2)
        assert client.greeting is not None
        assert client.greeting.version is None
        assert client.greeting.capabilities == ()
        assert await client.execute("query-status") == {"running": True, "singlestep": False}
        assert await client.execute("query-version") == {"qemu": "0.12.50", "package": ""}
        await monitor.broadcast_event("STOP")
        event = await asyncio.wait_for(client.events.get(), 2)
        assert event is not None and event.name == "STOP"
        await client.close()
        # The client tried qmp_capabilities once, got CommandNotFound and carried on.
        assert monitor.commands() == ["qmp_capabilities", "query-status", "query-version"]

    with_monitor(sock_path, body, dialect="2009")


def test_2010_dialect_negotiates_and_reads_string_version(sock_path: str) -> None:
    async def body(monitor: ScriptedMonitor) -> None:
        client = await connect(monitor.address, timeout=2)
        assert client.greeting is not None
        assert client.greeting.version == "0.13.0"
        assert monitor.sessions[0].negotiated
        assert await client.execute("query-status") == {"running": True, "singlestep": False}
        await client.close()
        assert monitor.commands() == ["qmp_capabilities", "query-status"]

    with_monitor(sock_path, body, dialect="2010")


def test_modern_dialect_structured_version_and_lf_line_ends(sock_path: str) -> None:
    async def body(monitor: ScriptedMonitor) -> None:
        client = await connect(monitor.address, timeout=2)
        assert client.greeting is not None
        assert client.greeting.version == "7.2.22"
        assert client.greeting.capabilities == ("oob",)
        status = await client.execute("query-status")
        assert status["status"] == "running"
        await client.close()

    with_monitor(sock_path, body, dialect="modern", eol=b"\n")


def test_members_in_any_order_and_unknown_members_ignored(sock_path: str) -> None:
    async def odd_reply(session: Session, request: dict[str, Any]) -> None:
        await session.send_raw(
            b'{"future-member": [1, 2], "id": %d, "return": {"name": "odd"}, "x": null}\r\n'
            % request["id"]
        )

    greeting = {
        "QMP": {
            "capabilities": ["oob", "future-cap"],
            "extra": 1,
            "version": {"package": " v ", "qemu": {"minor": 0, "micro": 1, "major": 10}},
        }
    }

    async def body(monitor: ScriptedMonitor) -> None:
        client = await connect(monitor.address, timeout=2)
        assert client.greeting is not None
        assert client.greeting.version == "10.0.1"
        assert client.greeting.package == "v"
        assert await client.execute("query-name") == {"name": "odd"}
        await client.close()

    with_monitor(sock_path, body, greeting=greeting, handlers={"query-name": odd_reply})


# -- events and matching -------------------------------------------------------------------


def test_event_before_response_and_out_of_order_answers(sock_path: str) -> None:
    async def slow(session: Session, request: dict[str, Any]) -> None:
        await asyncio.sleep(0.2)
        await session.reply(request, "slow")

    async def fast(session: Session, request: dict[str, Any]) -> None:
        await session.event("STOP")
        await session.reply(request, "fast")

    async def body(monitor: ScriptedMonitor) -> None:
        client = await connect(monitor.address, timeout=2)
        slow_task = asyncio.create_task(client.execute("query-slow"))
        await asyncio.sleep(0.05)
        assert await client.execute("query-fast") == "fast"
        assert not slow_task.done()
        assert await slow_task == "slow"
        event = client.events.get_nowait()
        assert event is not None and event.name == "STOP"
        assert event.timestamp == pytest.approx(1_700_000_000.5)
        await client.close()

    with_monitor(
        sock_path, body, concurrent=True, handlers={"query-slow": slow, "query-fast": fast}
    )


def test_errors_without_id_never_match_a_command(sock_path: str) -> None:
    async def noisy(session: Session, request: dict[str, Any]) -> None:
        # What QEMU sends for a malformed line: several errors, none with an id.
        for _ in range(3):
            await session.error(None, "GenericError", "JSON parse error, stray '-s'")
        await session.event("RESUME")
        await session.reply(request, {"status": "running"})

    async def body(monitor: ScriptedMonitor) -> None:
        client = await connect(monitor.address, timeout=2)
        assert await client.execute("query-status") == {"status": "running"}
        assert client.unmatched_responses == 3
        # The next command still gets its own answer.
        assert await client.execute("query-name") == {"name": "scripted"}
        await client.close()

    with_monitor(sock_path, body, handlers={"query-status": noisy})


def test_command_error_keeps_class_and_desc(sock_path: str) -> None:
    async def body(monitor: ScriptedMonitor) -> None:
        client = await connect(monitor.address, timeout=2)
        with pytest.raises(CommandError) as caught:
            await client.execute("query-balloon")
        assert caught.value.error_class == "CommandNotFound"
        assert caught.value.desc == "The command query-balloon has not been found"
        assert caught.value.command == "query-balloon"
        assert not client.closed
        await client.close()

    with_monitor(sock_path, body)


def test_command_timeout_then_late_answer_is_ignored(sock_path: str) -> None:
    async def late(session: Session, request: dict[str, Any]) -> None:
        await asyncio.sleep(0.3)
        await session.reply(request, "late")

    async def body(monitor: ScriptedMonitor) -> None:
        client = await connect(monitor.address, timeout=2)
        started = time.monotonic()
        with pytest.raises(CommandTimeoutError, match="query-late"):
            await client.execute("query-late", timeout=0.1)
        assert time.monotonic() - started < 1.0
        assert await client.execute("query-name") == {"name": "scripted"}
        await asyncio.sleep(0.5)  # the late answer arrives and matches nothing
        assert client.unmatched_responses == 1
        assert await client.execute("query-name") == {"name": "scripted"}
        await client.close()

    with_monitor(sock_path, body, concurrent=True, handlers={"query-late": late})


def test_each_pending_command_keeps_its_own_timeout(sock_path: str) -> None:
    async def silent(session: Session, request: dict[str, Any]) -> None:
        return None

    async def body(monitor: ScriptedMonitor) -> None:
        client = await connect(monitor.address, timeout=2)
        started = time.monotonic()
        long_wait = asyncio.create_task(client.execute("query-silent", timeout=0.6))
        await asyncio.sleep(0.01)
        with pytest.raises(CommandTimeoutError):  # shorter, sent later: expires first
            await client.execute("query-silent", timeout=0.1)
        assert 0.09 < time.monotonic() - started < 0.55
        assert not long_wait.done()
        with pytest.raises(CommandTimeoutError, match=r"0\.6s"):
            await long_wait
        assert 0.55 < time.monotonic() - started < 1.5
        assert await client.execute("query-name") == {"name": "scripted"}
        await client.close()

    with_monitor(sock_path, body, handlers={"query-silent": silent})


def test_late_answer_never_reaches_a_newer_command(sock_path: str) -> None:
    answers = iter(["first, late", "second"])

    async def slow(session: Session, request: dict[str, Any]) -> None:
        await asyncio.sleep(0.3)
        await session.reply(request, next(answers))

    async def body(monitor: ScriptedMonitor) -> None:
        client = await connect(monitor.address, timeout=2)
        with pytest.raises(CommandTimeoutError):
            await client.execute("query-slow", timeout=0.1)
        cancelled = asyncio.create_task(client.execute("query-slow"))
        await asyncio.sleep(0.05)
        cancelled.cancel()
        # Sent while both earlier answers are still due: it must get only its own.
        assert await client.execute("query-name") == {"name": "scripted"}
        await asyncio.sleep(0.7)
        assert client.unmatched_responses == 2
        ids = [r["id"] for r in monitor.received]
        assert len(set(ids[1:])) == 3, ids  # no id reused while its answer was due
        assert await client.execute("query-name") == {"name": "scripted"}
        await client.close()

    with_monitor(sock_path, body, concurrent=True, handlers={"query-slow": slow})


def test_answer_with_a_lookalike_id_matches_nothing(sock_path: str) -> None:
    async def tricky(session: Session, request: dict[str, Any]) -> None:
        for fake in (True, float(request["id"]), str(request["id"]), [request["id"]]):
            await session.send({"return": "wrong", "id": fake})
        await session.reply(request, "right")

    async def body(monitor: ScriptedMonitor) -> None:
        client = await connect(monitor.address, timeout=2)
        assert await client.execute("query-tricky") == "right"
        assert client.unmatched_responses == 4
        await client.close()

    with_monitor(sock_path, body, handlers={"query-tricky": tricky})


def test_event_queue_is_bounded_and_counts_drops(sock_path: str) -> None:
    async def burst(session: Session, request: dict[str, Any]) -> None:
        for i in range(10):
            await session.event("RTC_CHANGE", {"offset": i})
        await session.reply(request, {})

    async def body(monitor: ScriptedMonitor) -> None:
        client = await connect(monitor.address, timeout=2, event_queue_size=4)
        await client.execute("query-burst")
        assert len(client.events) == 4
        assert client.events.dropped == 6
        first = client.events.get_nowait()
        assert first is not None and first.data == {"offset": 6}
        await client.close()
        # After close, the queue drains and then ends.
        remaining = [event async for event in client.events]
        assert [e.data["offset"] for e in remaining] == [7, 8, 9]

    with_monitor(sock_path, body, handlers={"query-burst": burst})


def test_on_event_callback_receives_events_and_survives_its_errors(sock_path: str) -> None:
    seen: list[str] = []

    def on_event(event: Any) -> None:
        seen.append(event.name)
        if event.name == "BAD":
            raise RuntimeError("callback bug")

    async def two(session: Session, request: dict[str, Any]) -> None:
        await session.event("BAD")
        await session.event("GOOD")
        await session.reply(request, {})

    async def body(monitor: ScriptedMonitor) -> None:
        client = await connect(monitor.address, timeout=2, on_event=on_event)
        assert client.events is None
        await client.execute("query-two")
        assert seen == ["BAD", "GOOD"]
        assert not client.closed
        await client.close()

    with_monitor(sock_path, body, handlers={"query-two": two})


# -- read-only guard -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "command", ["stop", "cont", "quit", "system_reset", "human-monitor-command", "querystatus"]
)
def test_read_only_client_refuses_before_sending(sock_path: str, command: str) -> None:
    async def body(monitor: ScriptedMonitor) -> None:
        client = await connect(monitor.address, timeout=2)
        with pytest.raises(CommandRefusedError):
            await client.execute(command, {"command-line": "quit"})
        await client.execute("query-status")
        await client.close()
        assert monitor.commands() == ["qmp_capabilities", "query-status"]
        assert all(command.encode() not in line for line in monitor.received_raw)

    with_monitor(sock_path, body, handlers={command: {}})


def test_allow_write_opt_in_sends_the_command(sock_path: str) -> None:
    async def body(monitor: ScriptedMonitor) -> None:
        client = await connect(monitor.address, timeout=2, allow_write=True)
        assert await client.execute("stop") == {}
        await client.close()
        assert monitor.commands() == ["qmp_capabilities", "stop"]

    with_monitor(sock_path, body, handlers={"stop": {}})


# -- broken peers --------------------------------------------------------------------------


def test_garbage_greeting_is_not_qmp(sock_path: str) -> None:
    async def body(monitor: ScriptedMonitor) -> None:
        with pytest.raises(NotQMPError, match="not a QMP greeting"):
            await connect(monitor.address, timeout=2)

    with_monitor(sock_path, body, greeting=b"SSH-2.0-OpenSSH_9.2\r\n")


def test_json_but_not_a_greeting_is_not_qmp(sock_path: str) -> None:
    async def body(monitor: ScriptedMonitor) -> None:
        with pytest.raises(NotQMPError):
            await connect(monitor.address, timeout=2)

    with_monitor(sock_path, body, greeting={"hello": "world"})


def test_no_greeting_says_the_socket_is_probably_held(sock_path: str) -> None:
    async def body(monitor: ScriptedMonitor) -> None:
        started = time.monotonic()
        with pytest.raises(GreetingTimeoutError) as caught:
            await connect(monitor.address, timeout=0.3)
        assert 0.25 < time.monotonic() - started < 1.5
        assert isinstance(caught.value, MonitorBusyError)
        assert "another client" in str(caught.value)
        assert monitor.received_raw == []

    with_monitor(sock_path, body, greeting=NO_GREETING)


def test_second_client_waits_while_first_holds_the_socket(sock_path: str) -> None:
    async def body(monitor: ScriptedMonitor) -> None:
        first = await connect(monitor.address, timeout=2)
        with pytest.raises(GreetingTimeoutError):
            await connect(monitor.address, timeout=0.3)
        await first.close()
        second = await connect(monitor.address, timeout=2)
        assert await second.execute("query-name") == {"name": "scripted"}
        await second.close()

    with_monitor(sock_path, body)


def test_over_long_greeting_closes_with_line_too_long(sock_path: str) -> None:
    async def body(monitor: ScriptedMonitor) -> None:
        with pytest.raises(LineTooLongError):
            await connect(monitor.address, timeout=2, max_line=4096)

    with_monitor(sock_path, body, greeting=b"{" * 100_000)


@pytest.mark.parametrize("terminated", [True, False])
def test_over_long_response_fails_command_and_closes(sock_path: str, terminated: bool) -> None:
    async def huge(session: Session, request: dict[str, Any]) -> None:
        data = long_line(200_000)
        await session.send_raw(data if terminated else data[:-2])

    async def body(monitor: ScriptedMonitor) -> None:
        client = await connect(monitor.address, timeout=2, max_line=65536)
        with pytest.raises(LineTooLongError, match="65536"):
            await client.execute("query-huge")
        assert client.closed
        assert isinstance(client.close_reason, LineTooLongError)
        assert client._decoder.pending <= 65536 + 262144  # bounded by one read
        with pytest.raises(ConnectionClosedError):
            await client.execute("query-name")

    with_monitor(sock_path, body, handlers={"query-huge": huge})


def test_line_just_under_the_limit_is_accepted(sock_path: str) -> None:
    async def big(session: Session, request: dict[str, Any]) -> None:
        await session.send_raw(b'{"id": %d, "return": "%s"}\r\n' % (request["id"], b"y" * 9000))

    async def body(monitor: ScriptedMonitor) -> None:
        client = await connect(monitor.address, timeout=2, max_line=10_000)
        assert await client.execute("query-big") == "y" * 9000
        await client.close()

    with_monitor(sock_path, body, handlers={"query-big": big})


def test_close_mid_response(sock_path: str) -> None:
    async def cut(session: Session, request: dict[str, Any]) -> None:
        await session.send_raw(b'{"id": %d, "return": {"sta' % request["id"])
        session.close()

    async def body(monitor: ScriptedMonitor) -> None:
        client = await connect(monitor.address, timeout=2)
        with pytest.raises(ConnectionClosedError, match="query-status"):
            await client.execute("query-status")
        reason = await asyncio.wait_for(client.wait_closed(), 2)
        assert isinstance(reason, ConnectionClosedError)
        assert client.closed

    with_monitor(sock_path, body, handlers={"query-status": cut})


def test_close_before_greeting(sock_path: str) -> None:
    async def hang_up(session: Session) -> None:
        session.close()

    async def body(monitor: ScriptedMonitor) -> None:
        with pytest.raises(ConnectionClosedError):
            await connect(monitor.address, timeout=2)

    with_monitor(sock_path, body, greeting=NO_GREETING, on_connect=hang_up)


def test_garbage_after_greeting_closes_with_protocol_error(sock_path: str) -> None:
    async def junk(session: Session, request: dict[str, Any]) -> None:
        await session.send_raw(b"\xff\xfe not json\r\n")

    async def body(monitor: ScriptedMonitor) -> None:
        client = await connect(monitor.address, timeout=2)
        with pytest.raises(QMPError, match="not JSON"):
            await client.execute("query-junk")
        assert client.closed

    with_monitor(sock_path, body, handlers={"query-junk": junk})


def test_cancelled_connect_leaves_no_connection(sock_path: str) -> None:
    async def body(monitor: ScriptedMonitor) -> None:
        task = asyncio.create_task(connect(monitor.address, timeout=5))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # The server sees the client go away, so the single slot frees for the next one.
        monitor.greeting = {"QMP": {"capabilities": []}}
        await asyncio.sleep(0.1)
        assert monitor.sessions[0].disconnected

    with_monitor(sock_path, body, greeting=NO_GREETING)


# -- connect errors ------------------------------------------------------------------------


def test_no_such_socket(sock_path: str) -> None:
    with pytest.raises(SocketNotFoundError, match="no such socket"):
        run(connect(sock_path, timeout=1))


def test_connection_refused_on_stale_socket_file(sock_path: str) -> None:
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(sock_path)  # bound, never listening: what a killed QEMU leaves behind
    stale.close()
    with pytest.raises(ConnectRefusedError, match="refused"):
        run(connect(f"unix:{sock_path}", timeout=1))


def test_permission_denied(sock_path: str) -> None:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(sock_path)
    listener.listen()
    os.chmod(sock_path, 0o600)
    os.chmod(os.path.dirname(sock_path), 0o755)
    try:
        if os.geteuid() == 0:
            # root ignores file modes: connect as "nobody" for a moment.
            os.setegid(65534)
            os.seteuid(65534)
        else:
            os.chmod(sock_path, 0o000)
        try:
            with pytest.raises(PermissionDeniedError, match="permission denied"):
                run(connect(sock_path, timeout=1))
        finally:
            if os.getuid() == 0:
                os.seteuid(0)
                os.setegid(0)
    finally:
        listener.close()


def test_tcp_connect_timeout_when_the_accept_queue_is_full() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)  # never accepts: once its queue is full, SYNs are dropped
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(4):
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
            fillers.append(filler)
        started = time.monotonic()
        with pytest.raises(ConnectTimeoutError, match=r"0\.3s"):
            run(connect(f"tcp:127.0.0.1:{port}", timeout=0.3))
        assert time.monotonic() - started < 1.0
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


def test_tcp_connection_refused() -> None:
    port = free_port()
    with pytest.raises(ConnectRefusedError):
        run(connect(f"tcp:127.0.0.1:{port}", timeout=1))


# -- several commands in one write ---------------------------------------------------------


def test_execute_many_answers_in_order_with_errors_in_place(sock_path: str) -> None:
    async def body(monitor: ScriptedMonitor) -> None:
        client = await connect(monitor.address, timeout=2)
        answers = await client.execute_many(
            [("query-status", None), ("query-nosuch", None), ("query-version", None)]
        )
        assert answers[0]["status"] == "running"
        assert isinstance(answers[1], CommandError)
        assert answers[1].error_class == "CommandNotFound"
        assert answers[2]["qemu"]["major"] == 7
        with pytest.raises(CommandRefusedError):  # refused before anything is sent
            await client.execute_many([("query-status", None), ("stop", None)])
        await client.close()
        assert monitor.commands() == [
            "qmp_capabilities",
            "query-status",
            "query-nosuch",
            "query-version",
        ]

    with_monitor(sock_path, body)


def test_execute_many_out_of_order_answers_and_a_timeout(sock_path: str) -> None:
    async def slow(session: Session, request: dict[str, Any]) -> None:
        await asyncio.sleep(5)

    async def body(monitor: ScriptedMonitor) -> None:
        client = await connect(monitor.address, timeout=2)
        with pytest.raises(CommandTimeoutError):
            await client.execute_many([("query-status", None), ("query-slow", None)], timeout=0.3)
        # The connection still serves, and the late answer matches nothing.
        assert (await client.execute("query-status"))["running"] is True
        await client.close()

    with_monitor(sock_path, body, handlers={"query-slow": slow}, concurrent=True)
