"""A fleet of simulated VMs, each on its own socket, and the poll spacing they observe."""

from __future__ import annotations

import random
import resource
import time
import uuid as uuid_module
from collections import deque
from collections.abc import Callable
from pathlib import Path

from qmp_exporter.fdlimit import raise_fd_limit
from qmp_exporter.sim.server import SimulatedMonitorServer
from qmp_exporter.sim.vm import SimulatedVM

#: File descriptors a fleet needs per VM: the listening socket and the accepted connection.
FDS_PER_VM = 2
#: Descriptors kept free for everything else in the process.
FD_RESERVE = 64


def fleet_vm(
    index: int, name: str, rng: random.Random, *, qemu_version: str = "7.2"
) -> SimulatedVM:
    """A benchmark-fleet VM: mostly running, some paused, VNC on, a disk, a balloon on half;
    answering like QEMU ``qemu_version``."""
    roll = rng.random()
    status = "paused" if roll < 0.1 else "prelaunch" if roll < 0.15 else "running"
    return SimulatedVM(
        name,
        uuid=str(uuid_module.UUID(int=rng.getrandbits(128), version=4)),
        status=status,
        vnc_service=str(5900 + index % 60000),
        balloon=(256 << 20) if index % 2 == 0 else None,
        memory=256 << 20,
        cpus=1 + index % 4,
        block_devices=("disk0",),
        qemu_version=qemu_version,
    )


class PollGaps:
    """Times between consecutive ``command`` (a poll's marker, ``query-status``) on each VM:
    how far a poller drifts past its interval."""

    def __init__(self, command: str = "query-status", keep: int = 200_000) -> None:
        self.command = command
        self.gaps: deque[float] = deque(maxlen=keep)
        self._last: dict[int, float] = {}

    def __call__(self, vm: SimulatedVM, command: str) -> None:
        if command != self.command:
            return
        now = time.monotonic()
        previous = self._last.get(id(vm))
        self._last[id(vm)] = now
        if previous is not None:
            self.gaps.append(now - previous)

    def reset(self) -> None:
        """Forget the gaps so far (the next poll of each VM starts a new gap)."""
        self.gaps.clear()
        self._last.clear()

    def summary(self) -> dict[str, float]:
        """Count, median, 99th percentile and maximum gap, in seconds."""
        ordered = sorted(self.gaps)
        if not ordered:
            return {"count": 0}

        def quantile(q: float) -> float:
            return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

        return {"count": len(ordered), "p50": quantile(0.5), "p99": quantile(0.99),
                "max": ordered[-1]}  # fmt: skip


class SimulatedFleet:
    """``count`` simulated VMs, each on its own socket ``DIR/NAME.qmp``, in this event loop."""

    def __init__(
        self,
        directory: str | Path,
        count: int,
        *,
        prefix: str = "sim",
        seed: int = 0,
        make_vm: Callable[[int, str, random.Random], SimulatedVM] = fleet_vm,
    ) -> None:
        self.directory = Path(directory)
        rng = random.Random(seed)
        width = max(4, len(str(count)))
        self.vms = [make_vm(i, f"{prefix}-{i:0{width}d}", rng) for i in range(count)]
        self.servers: list[SimulatedMonitorServer] = []
        #: Poll spacing as seen by the VMs.
        self.poll_gaps = PollGaps()

    @property
    def monitors(self) -> list[tuple[str, str]]:
        """``(name, address)`` of every VM, in order."""
        return [(server.vm.name or "", server.address) for server in self.servers]

    def by_name(self, name: str) -> SimulatedVM:
        for vm in self.vms:
            if vm.name == name:
                return vm
        raise KeyError(name)

    async def start(self) -> None:
        """Raise the file limit and open every socket; fail early if the limit is too low."""
        needed = len(self.vms) * FDS_PER_VM + FD_RESERVE
        soft = raise_fd_limit(needed)
        if soft != resource.RLIM_INFINITY and needed > soft:
            raise OSError(
                f"{len(self.vms)} simulated VMs need about {needed} file descriptors; "
                f"the limit is {soft} (raise it with ulimit -n)"
            )
        self.directory.mkdir(parents=True, exist_ok=True)
        try:
            for vm in self.vms:
                server = SimulatedMonitorServer(
                    vm, self.directory / f"{vm.name}.qmp", observer=self.poll_gaps
                )
                await server.start()
                self.servers.append(server)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Stop every server and remove its socket."""
        servers, self.servers = self.servers, []
        for server in servers:
            await server.close()

    def total_command_counts(self) -> dict[str, int]:
        """Commands received by all VMs, by name."""
        total: dict[str, int] = {}
        for vm in self.vms:
            for command, count in vm.command_counts.items():
                total[command] = total.get(command, 0) + count
        return total
