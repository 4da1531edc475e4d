"""Hostile HTTP clients, run as a child process so that they never share the measuring loop.

::

    python -m tests.helpers.attackers --port PORT --case idle --n 600 --hold 20

Opens ``--n`` connections to 127.0.0.1:PORT (at most 100 connects in flight), prints
``ready OPENED`` on stdout, keeps attacking until its stdin closes or ``--hold`` seconds
pass, then closes everything, prints ``stats {json}`` and exits. Every loop is bounded.

Cases (the ones of issue 15; the report's H/T numbers in brackets):

- ``idle``: TCP connections that send nothing (H12; to a TLS port: T2);
- ``slowloris``: a request head one byte every ``--interval`` seconds (H11);
- ``keepalive``: one request each, then idle, a new one every ``--interval`` (H13, T6);
- ``noread``: ``GET /metrics`` (no gzip, receive buffer 4 KiB), never read (H14);
- ``malformed``: 4 clients looping malformed requests (H5, H6, H10);
- ``authflood``: TLS keep-alive clients, a new wrong password per request (T5).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import resource
import socket
import ssl
import sys
import time
from collections import Counter

HOST = "127.0.0.1"
CONNECT_CONCURRENCY = 100
MALFORMED = [
    b"GET /metrics?" + b"&".join(b"a%d" % i for i in range(33)) + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST /-/reload HTTP/1.1\r\nHost: x\r\nContent-Length: \xb3\r\n\r\n",
    b"POST /-/reload HTTP/1.1\r\nHost: x\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n",
    b"POST //evil.example/-/reload HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    b"GET //x/probe?target=unix:/tmp/x.qmp HTTP/1.1\r\nHost: x\r\n\r\n",
]


class Attack:
    """One case's connections and what it saw."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.stop = asyncio.Event()
        self.stats: Counter[str] = Counter()
        self.sockets: list[socket.socket] = []
        self.streams: list[asyncio.StreamWriter] = []
        self.context: ssl.SSLContext | None = None
        if args.tls:
            self.context = ssl.create_default_context()
            self.context.check_hostname = False
            self.context.verify_mode = ssl.CERT_NONE

    async def raw(self, rcvbuf: int | None = None) -> socket.socket:
        """A connected non-blocking TCP socket, kept until the end."""
        sock = socket.socket()
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        self.sockets.append(sock)
        await asyncio.get_running_loop().sock_connect(sock, (HOST, self.args.port))
        return sock

    async def stream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A stream (TLS with ``--tls``), kept until the end."""
        reader, writer = await asyncio.open_connection(
            HOST, self.args.port, ssl=self.context, server_hostname="x" if self.context else None
        )
        self.streams.append(writer)
        return reader, writer

    async def connect_all(self, make: object) -> None:
        """Open ``--n`` connections with ``make()``, a bounded number at a time."""
        gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

        async def one() -> None:
            async with gate:
                try:
                    await asyncio.wait_for(make(), 10)  # type: ignore[operator]
                    self.stats["opened"] += 1
                except (OSError, TimeoutError) as err:
                    self.stats[f"connect_error:{type(err).__name__}"] += 1

        await asyncio.gather(*(one() for _ in range(self.args.n)))

    async def pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), seconds)

    async def idle(self) -> None:
        await self.connect_all(self.raw)
        self.ready()

    async def slowloris(self) -> None:
        await self.connect_all(self.raw)
        self.ready()
        head = b"GET /metrics HTTP/1.1\r\nHost: x\r\n" + b"X-a: b\r\n" * 10000
        for position in range(len(head)):
            if self.stop.is_set():
                break
            for sock in self.sockets:
                with contextlib.suppress(OSError):
                    sock.send(head[position : position + 1])
            await self.pause(self.args.interval)

    async def keepalive(self) -> None:
        async def one() -> None:
            reader, writer = await self.stream()
            await self.request(reader, writer, b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n")

        await self.connect_all(one)
        self.ready()
        while not self.stop.is_set():  # bounded by --hold
            await self.pause(self.args.interval)
            for writer in self.streams:
                with contextlib.suppress(OSError):
                    writer.write(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n")

    async def noread(self) -> None:
        request = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"

        async def one() -> None:
            sock = await self.raw(rcvbuf=4096)
            await asyncio.get_running_loop().sock_sendall(sock, request)

        await self.connect_all(one)
        self.ready()

    async def malformed(self) -> None:
        self.ready()

        async def client() -> None:
            for round_ in range(100_000):  # bounded; --hold ends it first
                if self.stop.is_set():
                    return
                payload = MALFORMED[round_ % len(MALFORMED)]
                try:
                    reader, writer = await asyncio.open_connection(HOST, self.args.port)
                except OSError as err:
                    self.stats[f"error:{type(err).__name__}"] += 1
                    continue
                await self.request(reader, writer, payload)
                writer.close()

        await asyncio.gather(*(client() for _ in range(4)))

    async def authflood(self) -> None:
        self.ready()
        tries = iter(range(10_000_000))

        async def client() -> None:
            reader = writer = None
            while not self.stop.is_set():
                if writer is None or writer.is_closing():
                    try:
                        reader, writer = await asyncio.wait_for(self.stream(), 10)
                    except (OSError, TimeoutError):
                        self.stats["connect_error"] += 1
                        await self.pause(0.1)
                        continue
                assert reader is not None
                token = base64.b64encode(f"prometheus:wrong{next(tries)}".encode()).decode()
                request = (
                    f"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {token}\r\n\r\n"
                )
                await self.request(reader, writer, request.encode())

        await asyncio.gather(*(client() for _ in range(self.args.n)))

    async def request(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes
    ) -> None:
        """Send ``data``, read the answer's head and body; count its status."""
        try:
            writer.write(data)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 15)
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await asyncio.wait_for(reader.readexactly(length), 15)
            self.stats[f"status_{head.split(b' ', 2)[1].decode()}"] += 1
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ssl.SSLError) as err:
            self.stats[f"error:{type(err).__name__}"] += 1
            writer.close()

    def ready(self) -> None:
        print(f"ready {self.stats['opened']}", flush=True)

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()
        for writer in self.streams:
            if not writer.is_closing():
                with contextlib.suppress(AttributeError, OSError):  # a TLS transport half gone
                    writer.transport.abort()


async def _stdin_closed() -> None:
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.buffer.read)


async def main(args: argparse.Namespace) -> None:
    attack = Attack(args)
    started = time.monotonic()
    task = asyncio.create_task(getattr(attack, args.case)())
    waiter = asyncio.create_task(_stdin_closed())
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(waiter), args.hold)
    attack.stop.set()
    with contextlib.suppress(TimeoutError, Exception):
        await asyncio.wait_for(task, 5)
    attack.close()
    attack.stats["seconds"] = round(time.monotonic() - started)
    print(f"stats {json.dumps(attack.stats)}", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--case",
        required=True,
        choices=["idle", "slowloris", "keepalive", "noread", "malformed", "authflood"],
    )
    parser.add_argument("--n", type=int, default=600)
    parser.add_argument("--tls", action="store_true")
    parser.add_argument("--interval", type=float, default=0.5)
    parser.add_argument("--hold", type=float, default=30.0, help="seconds at most")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < min(hard, args.n + 256):  # one fd per connection
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, args.n + 256), hard))
    asyncio.run(main(args))
    sys.exit(0)
