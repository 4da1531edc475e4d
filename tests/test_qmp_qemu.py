"""The QMP client against a real qemu-system-x86_64."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from qmp_exporter.qmp import (
    BacklogFullError,
    CommandError,
    CommandRefusedError,
    ConnectionClosedError,
    ConnectRefusedError,
    Event,
    GreetingTimeoutError,
    LineTooLongError,
    MonitorBusyError,
    QMPClient,
    connect,
)
from tests.helpers.exporter import free_port
from tests.helpers.qemu import QemuVM, new_uuid, qmp_command, tcp_port_listening
from tests.helpers.qemu_versions import QemuBuild
from tests.helpers.rfb import rfb_handshake, vnc_tcp_connect

Factory = Callable[..., QemuVM]


def run(coroutine: Awaitable[Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coroutine, 60))


async def next_event(client: QMPClient, name: str, timeout: float = 5.0) -> Event:
    """The next event called ``name`` (others are skipped)."""
    assert client.events is not None
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"no {name} event within {timeout}s")
        event = await asyncio.wait_for(client.events.get(), remaining)
        assert event is not None, "connection closed while waiting for an event"
        if event.name == name:
            return event


def test_greeting_and_negotiation(qemu_vm: QemuVM, qemu_binary: QemuBuild) -> None:
    async def main() -> None:
        client = await connect(qemu_vm.qmp_address(), timeout=5)
        assert client.greeting is not None
        major, minor, _micro = (int(p) for p in client.greeting.version.split("."))
        assert f"{major}.{minor}" == qemu_binary.version, "the matrix runs the version it names"
        assert "oob" in client.greeting.capabilities
        version = await client.execute("query-version")
        assert version["qemu"]["major"] == major
        # Negotiation happened: a second qmp_capabilities is refused by QEMU itself.
        with pytest.raises(CommandError) as caught:
            await client.execute("qmp_capabilities")
        assert caught.value.error_class == "CommandNotFound"
        await client.close()
        assert client.closed

    run(main())


def test_every_polled_query(qemu_factory: Factory) -> None:
    vm_uuid = new_uuid()
    vm = qemu_factory(name="vm-queries", uuid=vm_uuid, vnc=True)

    async def main() -> None:
        async with await connect(vm.qmp_address(), timeout=5) as client:
            commands = {c["name"] for c in await client.execute("query-commands")}
            assert {"query-status", "query-vnc", "query-blockstats"} <= commands
            assert await client.execute("query-name") == {"name": "vm-queries"}
            assert (await client.execute("query-uuid"))["UUID"] == vm_uuid
            status = await client.execute("query-status")
            assert status["status"] == "running" and status["running"] is True
            kvm = await client.execute("query-kvm")
            assert kvm["enabled"] is False  # -accel tcg
            vnc = await client.execute("query-vnc")
            assert vnc["enabled"] is True and vnc["service"] == str(vm.vnc_port)
            assert await client.execute("query-blockstats") == []
            assert await client.execute("query-cpus-fast") == []
            assert (await client.execute("query-memory-size-summary"))["base-memory"] == 0
            assert await client.execute("query-migrate") == {}
            assert await client.execute("query-stats", {"target": "vm"}) == []
            with pytest.raises(CommandError) as caught:
                await client.execute("query-balloon")
            assert caught.value.error_class == "DeviceNotActive"
            if "query-spice" in commands:
                assert (await client.execute("query-spice"))["enabled"] is False
            else:
                with pytest.raises(CommandError, match="CommandNotFound"):
                    await client.execute("query-spice")

    run(main())


@pytest.mark.parametrize(
    ("paused", "after_stop", "expected"),
    [(False, False, "running"), (False, True, "paused"), (True, False, "prelaunch")],
)
def test_query_status_states(
    qemu_factory: Factory, paused: bool, after_stop: bool, expected: str
) -> None:
    vm = qemu_factory(paused=paused, monitors=2)
    if after_stop:
        qmp_command(vm.qmp_paths[1], "stop")

    async def main() -> None:
        async with await connect(vm.qmp_address(), timeout=5) as client:
            status = await client.execute("query-status")
            assert status["status"] == expected
            assert status["running"] is (expected == "running")

    run(main())


def test_stop_resume_from_second_monitor_reach_this_client(qemu_factory: Factory) -> None:
    vm = qemu_factory(monitors=2)

    async def main() -> None:
        async with await connect(vm.qmp_address(0), timeout=5) as client:
            await asyncio.to_thread(qmp_command, vm.qmp_paths[1], "stop")
            stop = await next_event(client, "STOP")
            assert stop.timestamp is not None and abs(stop.timestamp - time.time()) < 60
            assert (await client.execute("query-status"))["status"] == "paused"
            await asyncio.to_thread(qmp_command, vm.qmp_paths[1], "cont")
            await next_event(client, "RESUME")
            assert (await client.execute("query-status"))["status"] == "running"

    run(main())


def test_vnc_events_from_a_real_rfb_handshake(qemu_factory: Factory) -> None:
    vm = qemu_factory(vnc=True, name="vm-vnc")

    async def main() -> None:
        async with await connect(vm.qmp_address(), timeout=5) as client:
            tcp_only = await asyncio.to_thread(vnc_tcp_connect, vm.vnc_port)
            connected = await next_event(client, "VNC_CONNECTED")
            assert connected.data["client"]["host"] == "127.0.0.1"
            assert connected.data["client"]["service"] == str(tcp_only.getsockname()[1])
            vnc = await client.execute("query-vnc")
            assert len(vnc["clients"]) == 1
            tcp_only.close()
            await next_event(client, "VNC_DISCONNECTED")

            session = await asyncio.to_thread(rfb_handshake, vm.vnc_port)
            assert session.name == "QEMU (vm-vnc)"
            await next_event(client, "VNC_CONNECTED")
            initialized = await next_event(client, "VNC_INITIALIZED")
            assert initialized.data["client"]["service"] == str(session.sock.getsockname()[1])
            session.close()
            disconnected = await next_event(client, "VNC_DISCONNECTED")
            assert disconnected.data["server"]["auth"] == "none"

    run(main())


def test_second_client_on_held_socket_times_out_saying_held(qemu_vm: QemuVM) -> None:
    async def main() -> None:
        holder = await connect(qemu_vm.qmp_address(), timeout=5)
        started = time.monotonic()
        with pytest.raises(GreetingTimeoutError) as caught:
            await connect(qemu_vm.qmp_address(), timeout=0.5)
        elapsed = time.monotonic() - started
        assert 0.45 < elapsed < 2.0
        assert isinstance(caught.value, MonitorBusyError)
        assert "another client is probably holding it" in str(caught.value)
        # The holder is unaffected, and once it leaves the socket serves the next client.
        assert (await holder.execute("query-status"))["running"] is True
        await holder.close()
        async with await connect(qemu_vm.qmp_address(), timeout=5) as second:
            assert (await second.execute("query-status"))["running"] is True

    run(main())


def test_qemu_killed_mid_session(qemu_vm: QemuVM) -> None:
    async def main() -> None:
        client = await connect(qemu_vm.qmp_address(), timeout=5)
        await client.execute("query-status")
        qemu_vm.kill()
        reason = await asyncio.wait_for(client.wait_closed(), 5)
        assert isinstance(reason, ConnectionClosedError)
        assert client.closed
        with pytest.raises(ConnectionClosedError):
            await client.execute("query-status")
        assert client.events is not None
        assert await asyncio.wait_for(client.events.get(), 1) is None  # iteration ends
        # The socket file stays behind: connecting now is refused, not "not found".
        with pytest.raises(ConnectRefusedError):
            await connect(qemu_vm.qmp_address(), timeout=2)
        await asyncio.to_thread(qemu_vm.restart)
        async with await connect(qemu_vm.qmp_address(), timeout=5) as again:
            assert (await again.execute("query-status"))["running"] is True

    run(main())


def test_read_only_guard_keeps_real_vm_running(qemu_vm: QemuVM) -> None:
    async def main() -> None:
        async with await connect(qemu_vm.qmp_address(), timeout=5) as client:
            for command in ("stop", "quit", "system_reset"):
                with pytest.raises(CommandRefusedError):
                    await client.execute(command)
            assert (await client.execute("query-status"))["status"] == "running"
        assert qemu_vm.running

    run(main())


def test_real_answer_over_the_line_limit(qemu_vm: QemuVM) -> None:
    async def main() -> None:
        client = await connect(qemu_vm.qmp_address(), timeout=5, max_line=4096)
        with pytest.raises(LineTooLongError):
            await client.execute("query-qmp-schema")  # about 200 KiB on QEMU 7.2
        assert client.closed
        async with await connect(qemu_vm.qmp_address(), timeout=5) as roomy:
            assert len(await roomy.execute("query-qmp-schema")) > 100

    run(main())


def test_full_backlog_fails_at_once(qemu_vm: QemuVM) -> None:
    async def main() -> None:
        holder = await connect(qemu_vm.qmp_address(), timeout=5)
        waiting: list[socket.socket] = []
        try:
            # QEMU's listen backlog holds a couple of waiting clients, then refuses more.
            for _ in range(8):
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.setblocking(False)
                try:
                    sock.connect(qemu_vm.qmp_path)
                except BlockingIOError:
                    sock.close()
                    break
                waiting.append(sock)
            else:
                pytest.fail("the listen backlog never filled up")
            started = time.monotonic()
            with pytest.raises(BacklogFullError) as caught:
                await connect(qemu_vm.qmp_address(), timeout=5)
            assert time.monotonic() - started < 1.0  # no waiting for a 5 s greeting timeout
            assert isinstance(caught.value, MonitorBusyError)
        finally:
            for sock in waiting:
                sock.close()
            await holder.close()

    run(main())


def test_tcp_monitor(qemu_factory: Factory) -> None:
    port = free_port()
    vm = qemu_factory(extra_args=["-qmp", f"tcp:127.0.0.1:{port},server=on,wait=off"])
    deadline = time.monotonic() + 10
    while not tcp_port_listening(port):
        assert time.monotonic() < deadline, "QEMU's TCP monitor never listened"
        time.sleep(0.01)

    async def main() -> None:
        async with await connect(f"tcp:127.0.0.1:{port}", timeout=5) as client:
            assert (await client.execute("query-status"))["running"] is True
        vm.kill()
        with pytest.raises(ConnectRefusedError):
            await connect(f"tcp:127.0.0.1:{port}", timeout=5)

    run(main())
