"""``python -m qmp_exporter.sim``: serve a simulated fleet in a process of its own.

Usage: ``python -m qmp_exporter.sim --count 1000 --dir /tmp/fleet [--churn] [--control SOCK]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any, cast

from qmp_exporter.sim.churn import Churn
from qmp_exporter.sim.dialect import QEMU_VERSIONS, CommandFailed
from qmp_exporter.sim.fleet import SimulatedFleet, fleet_vm
from qmp_exporter.sim.vm import SimulatedVM


class _ControlProtocol(asyncio.Protocol):
    """Line commands for a fleet in another process: ``ACTION NAME`` -> ``ok TIME`` or
    ``error ...`` (``TIME``: just before the change); ``counts`` -> JSON of the commands the
    whole fleet received, by name; ``gaps`` -> JSON summary of :class:`PollGaps`;
    ``gaps_reset`` forgets them."""

    _ACTIONS: dict[str, Callable[[SimulatedVM], Any]] = {  # noqa: RUF012
        "pause": SimulatedVM.pause,
        "resume": SimulatedVM.resume,
        "vnc_connect": SimulatedVM.vnc_connect,
        "vnc_disconnect": SimulatedVM.vnc_disconnect,
        "shutdown": SimulatedVM.shutdown,
        "reset": SimulatedVM.reset,
        "guest_panic": SimulatedVM.guest_panic,
    }

    def __init__(self, fleet: SimulatedFleet) -> None:
        self.fleet = fleet
        self.names = {vm.name: vm for vm in fleet.vms}
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # a stream transport: it writes

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while b"\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\n", 1)
            reply = self._run(line.decode(errors="replace").split())
            assert self.transport is not None
            self.transport.write(reply.encode() + b"\n")

    def _run(self, words: list[str]) -> str:
        if words == ["counts"]:
            return json.dumps(self.fleet.total_command_counts())
        if words == ["gaps"]:
            return json.dumps(self.fleet.poll_gaps.summary())
        if words == ["gaps_reset"]:
            self.fleet.poll_gaps.reset()
            return "ok"
        if len(words) != 2 or words[0] not in self._ACTIONS or words[1] not in self.names:
            return (
                f"error: expected one of {sorted(self._ACTIONS)} and a VM name, "
                "or counts, gaps, gaps_reset"
            )
        started = time.time()
        try:
            self._ACTIONS[words[0]](self.names[words[1]])
        except (CommandFailed, ValueError) as err:
            return f"error: {err}"
        return f"ok {started:.6f}"


async def serve_fleet(
    directory: str,
    count: int,
    *,
    churn: float | None,
    control: str | None,
    seed: int,
    qemu_version: str = "7.2",
) -> None:
    """Serve a fleet until SIGINT/SIGTERM; print ``ready COUNT`` once every socket listens."""
    make_vm = functools.partial(fleet_vm, qemu_version=qemu_version)
    fleet = SimulatedFleet(directory, count, seed=seed, make_vm=make_vm)
    await fleet.start()
    control_server = None
    if control:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(control)
        control_server = await asyncio.get_running_loop().create_unix_server(
            lambda: _ControlProtocol(fleet), control
        )
    churner = Churn(fleet.vms, interval=churn, seed=seed) if churn else None
    if churner:
        churner.start()
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopped.set)
    print(f"ready {count}", flush=True)
    try:
        await stopped.wait()
    finally:
        if churner:
            await churner.stop()
        if control_server is not None:
            control_server.close()
        await fleet.close()


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m qmp_exporter.sim",
        description="Serve simulated QEMU QMP monitors, one unix socket per VM.",
    )
    parser.add_argument("--count", type=int, required=True, help="number of VMs")
    parser.add_argument("--dir", required=True, help="directory for the sockets (NAME.qmp)")
    parser.add_argument(
        "--churn", nargs="?", type=float, const=1.0, default=None, metavar="SECONDS",
        help="change a random VM about every SECONDS (default 1)",
    )  # fmt: skip
    parser.add_argument("--control", help="unix socket for line commands (vnc_connect NAME)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--qemu-version", choices=QEMU_VERSIONS, default="7.2",
        help="answer like this QEMU version (docs/qemu-versions.md; default 7.2)",
    )  # fmt: skip
    args = parser.parse_args(list(argv) if argv is not None else None)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        asyncio.run(
            serve_fleet(args.dir, args.count, churn=args.churn, control=args.control,
                        seed=args.seed, qemu_version=args.qemu_version)
        )  # fmt: skip
    except OSError as err:
        print(f"simulator: {err}", file=sys.stderr)
        return 1
    return 0
