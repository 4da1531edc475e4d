"""Random changes to simulated VMs now and then: the fleet's weather."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Sequence

from qmp_exporter.sim.dialect import NEEDS_RESET
from qmp_exporter.sim.vm import SimulatedVM

log = logging.getLogger(__name__)


class Churn:
    """Changes VMs now and then (seeded): pause/resume, VNC clients come and go, disk I/O."""

    def __init__(self, vms: Sequence[SimulatedVM], *, interval: float = 1.0, seed: int = 0) -> None:
        self.vms = list(vms)
        self.interval = interval
        self.rng = random.Random(seed)
        self.steps = 0
        self._task: asyncio.Task[None] | None = None

    def step(self) -> str:
        """Make one random change; return a short description."""
        vm = self.rng.choice(self.vms)
        roll = self.rng.random()
        self.steps += 1
        if roll < 0.3:
            if vm.status == "running":
                vm.pause()
                return f"{vm.name}: paused"
            if vm.status in NEEDS_RESET:
                vm.reset()
            vm.resume()
            return f"{vm.name}: resumed"
        if roll < 0.7 and vm.vnc_enabled:
            if vm.vnc_clients and (len(vm.vnc_clients) >= 3 or self.rng.random() < 0.5):
                vm.vnc_disconnect()
                return f"{vm.name}: VNC client left"
            vm.vnc_connect(initialize=self.rng.random() < 0.9)
            return f"{vm.name}: VNC client connected"
        if vm.block_devices:
            device = self.rng.choice(list(vm.block_devices))
            vm.block_io(device, read_bytes=4096 * self.rng.randint(1, 64),
                        write_bytes=4096 * self.rng.randint(0, 16))  # fmt: skip
            return f"{vm.name}: disk I/O"
        return f"{vm.name}: unchanged"

    def start(self) -> None:
        """Run in the background until :meth:`stop`."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.rng.uniform(0.5, 1.5) * self.interval)
            log.debug("churn: %s", self.step())
