"""A wrong-password flood over TLS keep-alive, run as a child process by the auth tests.

``python -m tests.helpers.auth_flood --port P --clients N --seconds S [--source 127.0.0.2]``:
N clients each loop ``GET /metrics`` with user ``prometheus`` and a new wrong password, on one
keep-alive connection (a new one when the server closes it), from ``--source`` (loopback
only), pausing ``--interval`` seconds after each answer. Bounded: S seconds (at most 60) and
``--max-requests`` in all. Prints ``flooding`` once every client has had an answer (or after
3 s), then at the end one JSON line: the count of each status (or error name) seen.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import json
import socket
import ssl
import sys
import time

MAX_SECONDS = 60.0


def _tls_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


async def _connect(
    port: int, source: str, context: ssl.SSLContext
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    sock = socket.socket()
    sock.setblocking(False)
    sock.bind((source, 0))
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    return await asyncio.open_connection(sock=sock, ssl=context, server_hostname="localhost")


async def _answer(reader: asyncio.StreamReader) -> tuple[str, bool]:
    """The status of one response, and whether the connection stays open; body discarded."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = lines[0].split()[1]
    headers = dict(line.lower().partition(": ")[::2] for line in lines[1:] if line)
    await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers.get("connection") != "close"


async def flood(args: argparse.Namespace) -> dict[str, int]:
    context = _tls_context()
    deadline = time.monotonic() + min(args.seconds, MAX_SECONDS)
    counts: collections.Counter[str] = collections.Counter()
    answered: set[int] = set()
    sent = 0

    async def client(index: int) -> None:
        nonlocal sent
        connection: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        while time.monotonic() < deadline and sent < args.max_requests:
            sent += 1
            token = base64.b64encode(f"prometheus:wrong-{index}-{sent}".encode()).decode()
            request = f"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {token}\r\n\r\n"
            try:
                if connection is None:
                    opening = _connect(args.port, args.source, context)
                    connection = await asyncio.wait_for(opening, 5)
                reader, writer = connection
                writer.write(request.encode())
                status, keep = await asyncio.wait_for(_answer(reader), 5)
            except (
                OSError,
                EOFError,
                TimeoutError,
                ValueError,
                IndexError,
                asyncio.LimitOverrunError,
            ) as err:
                counts[type(err).__name__] += 1
                status, keep = "", False
            else:
                counts[status] += 1
                answered.add(index)
            await asyncio.sleep(args.interval)
            if not keep and connection is not None:
                connection[1].transport.abort()
                connection = None
        if connection is not None:
            connection[1].transport.abort()

    async def announce() -> None:
        ready_by = time.monotonic() + 3
        while len(answered) < args.clients and time.monotonic() < ready_by:
            await asyncio.sleep(0.05)
        print("flooding", flush=True)

    await asyncio.gather(announce(), *(client(i) for i in range(args.clients)))
    return dict(counts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--source", default="127.0.0.2")
    parser.add_argument("--max-requests", type=int, default=200_000)
    parser.add_argument("--interval", type=float, default=0.0)
    args = parser.parse_args()
    if not args.source.startswith("127."):
        sys.exit("loopback sources only")
    print(json.dumps(asyncio.run(flood(args))), flush=True)


if __name__ == "__main__":
    main()
