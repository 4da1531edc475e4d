"""The HTTP server's deadlines and connection cap, in process with small limits.

Each test runs an :class:`HTTPServer` on 127.0.0.1 with limits scaled down (a cap of a few
connections, deadlines of a fraction of a second) so that what a hostile client can hold
is checked in well under a second per case. The landing page cache is checked here too.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from qmp_exporter.web.http.http_limits import HTTPLimits
from qmp_exporter.web.http.server import HTTPServer, Request, Response, text_response
from qmp_exporter.web.landing import LandingCache
from tests.helpers.tls_certs import make_pki
from tests.helpers.waiting import wait_until

BIG_BODY = [b"x" * 65536] * 64  # 4 MiB in shared chunks


async def _ok(request: Request) -> Response:
    return text_response(200, "OK")


async def _big(request: Request) -> Response:
    return Response(200, BIG_BODY)


def run(
    limits: HTTPLimits,
    scenario: Callable[[HTTPServer], Awaitable[None]],
    context: ssl.SSLContext | None = None,
) -> None:
    """Serve ``/`` and ``/big`` on 127.0.0.1 with ``limits`` while ``scenario`` runs (10 s max)."""

    async def main() -> None:
        server = HTTPServer(limits)
        server.route("/", _ok)
        server.route("/big", _big)
        await server.start("127.0.0.1", 0, context)
        try:
            await asyncio.wait_for(scenario(server), 10.0)
        finally:
            await server.close()

    asyncio.run(main())


async def _connect(
    server: HTTPServer, **kwargs: object
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(*server.addresses[0], **kwargs)  # type: ignore[arg-type]


async def _get(server: HTTPServer, path: str = "/", timeout: float = 2.0) -> bytes:
    """One GET on a new connection, answer head and body (the server closes)."""
    reader, writer = await _connect(server)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        return await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()


async def _closed_within(reader: asyncio.StreamReader, seconds: float) -> bytes:
    """What the server sent before closing; fails if it is still open after ``seconds``."""
    return await asyncio.wait_for(reader.read(), seconds)


def test_an_unfinished_head_gets_408_at_the_head_deadline() -> None:
    async def scenario(server: HTTPServer) -> None:
        reader, writer = await _connect(server)
        started = time.monotonic()
        with contextlib.suppress(ConnectionError):  # closed early on a loaded machine: fine
            for byte in b"GET / HTTP/":  # slowloris: a byte at a time does not extend it
                writer.write(bytes([byte]))
                await asyncio.sleep(0.01)
        answer = await _closed_within(reader, 2.0)
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert time.monotonic() - started < 1.0
        assert server.connections.timeouts == 1
        writer.close()

    run(HTTPLimits(header_timeout=0.3), scenario)


def test_an_idle_keep_alive_connection_is_closed() -> None:
    async def scenario(server: HTTPServer) -> None:
        reader, writer = await _connect(server)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = await _closed_within(reader, 2.0)  # keep-alive, then closed when idle
        assert answer.startswith(b"HTTP/1.1 200") and b"Connection: keep-alive" in answer
        writer.close()

    run(HTTPLimits(keepalive_timeout=0.3), scenario)


def test_a_cancelled_connection_ends_cancelled_and_is_let_go() -> None:
    async def scenario(server: HTTPServer) -> None:
        reader, writer = await _connect(server)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # keep-alive: then held idle
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and b"Connection: keep-alive" in head
        assert await reader.readexactly(3) == b"OK\n"
        (task,) = server.connections.tasks()
        task.cancel()  # as HTTPServer.close() and an eviction do
        await asyncio.wait([task])
        assert task.cancelled(), "the connection's task passes its cancellation on"
        assert list(server.connections.tasks()) == []
        assert await _closed_within(reader, 2.0) == b"", "and its connection closed"
        writer.close()

    run(HTTPLimits(), scenario)


def test_requests_per_connection_are_bounded() -> None:
    async def scenario(server: HTTPServer) -> None:
        reader, writer = await _connect(server)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 3)
        answers = await _closed_within(reader, 2.0)
        assert answers.count(b"HTTP/1.1 200") == 2
        assert answers.count(b"Connection: close") == 1
        writer.close()

    run(HTTPLimits(max_requests_per_connection=2), scenario)


@pytest.mark.parametrize("status", [401, 403, 429])
def test_a_denied_request_closes_the_connection(status: int) -> None:
    async def scenario(server: HTTPServer) -> None:
        server.guard = lambda request: text_response(status, "no")
        reader, writer = await _connect(server)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = await _closed_within(reader, 2.0)
        assert answer.startswith(f"HTTP/1.1 {status}".encode()), answer
        assert b"Connection: close" in answer
        writer.close()

    run(HTTPLimits(), scenario)


def test_at_the_cap_a_new_client_evicts_an_idle_one_first() -> None:
    async def scenario(server: HTTPServer) -> None:
        held = [await _connect(server) for _ in range(3)]  # opening: sent nothing
        idle_reader, idle_writer = await _connect(server)
        idle_writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await idle_reader.readuntil(b"OK\n")).startswith(b"HTTP/1.1 200")
        assert (await _get(server)).startswith(b"HTTP/1.1 200")  # a fifth: it gets in
        assert await _closed_within(idle_reader, 1.0) == b""  # the keep-alive one went
        assert server.connections.evictions == 1
        assert all(not reader.at_eof() for reader, _ in held)
        for _, writer in [*held, (idle_reader, idle_writer)]:
            writer.close()

    run(HTTPLimits(max_connections=4, per_peer_share=100), scenario)


def test_at_the_cap_new_clients_always_get_in() -> None:
    async def scenario(server: HTTPServer) -> None:
        held = [await _connect(server) for _ in range(40)]  # 5x the cap, sending nothing
        for _ in range(5):
            assert (await _get(server)).startswith(b"HTTP/1.1 200")
        assert len(server.connections) <= 8
        assert server.connections.evictions >= 32
        for _, writer in held:
            writer.close()

    run(HTTPLimits(max_connections=8), scenario)


def test_a_client_that_never_reads_is_dropped() -> None:
    async def scenario(server: HTTPServer) -> None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, server.addresses[0])
        sock.send(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        await wait_until(lambda: server.connections.timeouts == 1, 3.0)  # abandoned after the stall
        await wait_until(lambda: len(server.connections) == 0, 3.0)
        sock.close()

    run(HTTPLimits(write_stall_timeout=0.3), scenario)


def test_tls_handshakes_pending_are_bounded(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.server, pki.server_key)

    async def scenario(server: HTTPServer) -> None:
        silent = [await _connect(server) for _ in range(10)]  # TCP only, no ClientHello
        await wait_until(
            lambda: server.connections.evictions == 6, 3.0
        )  # 4 pending per peer at most
        client = ssl.create_default_context(cafile=str(pki.ca))
        reader, writer = await _connect(server, ssl=client, server_hostname="localhost")
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert (await asyncio.wait_for(reader.read(), 2.0)).startswith(b"HTTP/1.1 200")
        await wait_until(lambda: len(server.connections) == 0, 3.0)  # the handshake deadline
        assert server.connections.evictions == 7  # the real client's handshake took a slot too
        for _, silent_writer in silent:
            silent_writer.close()
        writer.close()

    limits = HTTPLimits(per_peer_pending_handshakes=4, tls_handshake_timeout=0.5)
    run(limits, scenario, context)


def test_the_landing_page_is_rebuilt_only_after_a_change() -> None:
    now = [0.0]
    renders: list[int] = []

    def render() -> bytes:
        renders.append(1)
        return f"<p>page {len(renders)}</p>".encode() * 50

    cache = LandingCache(render, min_age=1.0, clock=lambda: now[0])
    first = cache.page(gzipped=False)
    cache.changed("vm", None, timing_only=True)  # type: ignore[arg-type]
    now[0] = 0.5
    assert cache.page(gzipped=False) is first  # changed, but built under min_age ago
    now[0] = 1.0
    second = cache.page(gzipped=False)
    assert b"page 2" in second
    now[0] = 60.0
    assert cache.page(gzipped=False) is second  # nothing changed since: no render
    assert gzip.decompress(cache.page(gzipped=True)) == second
    assert cache.page(gzipped=True) is cache.page(gzipped=True)  # gzipped once per build
    assert cache.builds == len(renders) == 2
