"""The baseline for poll cost: the leanest asyncio QMP poller we could write.

One held connection per VM (a bare ``asyncio.Protocol``, lines split by hand, ``json.loads``
per line), ``--once`` commands after connecting, then the ``--commands`` per VM per interval,
all written at once and their answers awaited together (pipelined, as the exporter does),
polls spread evenly over the interval. No metrics, no snapshots, no timeouts,
no error handling beyond giving up: what any exporter must at least do.

Prints ``up TIME`` once every VM has been polled, and ``event PATH NAME TIME`` for each
``VNC_CONNECTED`` (for the event-latency floor).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from typing import Any, cast

_EVENTS_SHOWN = frozenset({"VNC_CONNECTED"})


class Monitor(asyncio.Protocol):
    def __init__(self, path: str) -> None:
        self.path = path
        self.buffer = b""
        self.waiter: asyncio.Future[list[dict[str, Any]]] | None = None
        self.expected = 1
        self.answers: list[dict[str, Any]] = []
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # a stream transport: it writes

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data
        *lines, self.buffer = buffer.split(b"\n")
        for line in lines:
            message = json.loads(line)
            if "event" in message:
                if message["event"] in _EVENTS_SHOWN:
                    print(f"event {self.path} {message['event']} {time.time():.6f}", flush=True)
            elif self.waiter is not None and not self.waiter.done():
                self.answers.append(message)
                if len(self.answers) >= self.expected:
                    self.waiter.set_result(self.answers)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError(f"{self.path}: closed"))

    async def next_message(self) -> dict[str, Any]:
        return (await self.execute_all(b"", 1))[0]

    async def execute(self, command: bytes) -> dict[str, Any]:
        return (await self.execute_all(command, 1))[0]

    async def execute_all(self, commands: bytes, count: int) -> list[dict[str, Any]]:
        """Write ``commands`` (``count`` of them, or none) and wait for ``count`` answers."""
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.expected = count
        self.answers = []
        if commands:
            self.transport.write(commands)
        return await self.waiter


async def poll_vm(
    path: str, phase: float, interval: float, commands: list[bytes], once: list[bytes],
    first_poll: asyncio.Future[None] | None, polled: list[int],
) -> None:  # fmt: skip
    loop = asyncio.get_running_loop()
    monitor = Monitor(path)
    await loop.create_unix_connection(lambda: monitor, path)
    await monitor.next_message()  # greeting
    await monitor.execute(b'{"execute":"qmp_capabilities"}\n')
    for command in once:
        await monitor.execute(command)
    next_poll = time.monotonic()
    first = True
    batch = b"".join(commands)
    while True:
        await monitor.execute_all(batch, len(commands))
        if first:
            first = False
            polled[0] += 1
            if polled[0] == polled[1] and first_poll is not None:
                first_poll.set_result(None)
            next_poll += phase
        next_poll += interval
        await asyncio.sleep(max(0.0, next_poll - time.monotonic()))


async def main_async(args: argparse.Namespace) -> None:
    with open(args.monitors) as listing:
        paths = [address.removeprefix("unix:") for address in json.load(listing)]
    encode = [
        json.dumps({"execute": name}).encode() + b"\n" for name in args.commands.split(",") if name
    ]
    once = [json.dumps({"execute": name}).encode() + b"\n" for name in args.once.split(",") if name]
    first_poll = asyncio.get_running_loop().create_future()
    polled = [0, len(paths)]
    tasks = [
        asyncio.create_task(
            poll_vm(path, args.interval * index / len(paths), args.interval, encode, once,
                    first_poll, polled)
        )
        for index, path in enumerate(paths)
    ]  # fmt: skip
    await first_poll
    print(f"up {time.time():.6f}", flush=True)
    await asyncio.gather(*tasks)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--monitors", required=True, help="JSON list of unix:PATH addresses")
    parser.add_argument("--interval", type=float, required=True)
    parser.add_argument("--commands", required=True, help="comma-separated, per poll")
    parser.add_argument("--once", default="", help="comma-separated, once per connection")
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        asyncio.run(main_async(args))
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
