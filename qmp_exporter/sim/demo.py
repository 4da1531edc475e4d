"""``qmp-exporter --demo``: a few simulated VMs inside the exporter's own process.

The demo VMs listen on temporary unix sockets and are watched through the same client and
poller code as real VMs; their states and VNC clients change now and then.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from qmp_exporter.sim.churn import Churn
from qmp_exporter.sim.server import SimulatedMonitorServer
from qmp_exporter.sim.vm import SimulatedVM

#: Seconds between demo changes, on average.
DEMO_CHURN_INTERVAL = 5.0
_ROLES = ("web", "db", "build")


def demo_vms(count: int) -> list[SimulatedVM]:
    """``count`` VMs: web ones run with a VNC viewer, db ones are paused, build ones wait in
    ``prelaunch`` (``-S``); named ``demo-web-01``, ``demo-db-01``, ``demo-build-01``, ..."""
    vms = []
    for index in range(count):
        role = _ROLES[index % len(_ROLES)]
        name = f"demo-{role}-{index // len(_ROLES) + 1:02d}"
        vm = SimulatedVM(
            name,
            status={"web": "running", "db": "paused", "build": "prelaunch"}[role],
            vnc=role != "db",
            vnc_service=str(5900 + index),
            balloon=(512 << 20) if role == "db" else None,
            memory=(1 << 30) if role == "db" else (512 << 20),
            cpus=2 if role == "db" else 1,
            block_devices=("disk0",),
        )
        if role == "web":
            vm.vnc_connect("192.0.2.10")
        vms.append(vm)
    return vms


@dataclass
class Demo:
    """Running demo VMs: :attr:`monitors` lists ``(name, address)``; call :meth:`close`."""

    monitors: list[tuple[str, str]]
    vms: list[SimulatedVM]
    servers: list[SimulatedMonitorServer]
    churn: Churn
    directory: Path
    _owns_directory: bool = field(default=False, repr=False)

    async def close(self) -> None:
        """Stop the changes and the servers; remove the temporary directory if ours."""
        await self.churn.stop()
        for server in self.servers:
            await server.close()
        if self._owns_directory:
            shutil.rmtree(self.directory, ignore_errors=True)


async def start_demo(
    directory: str | None = None,
    count: int = 3,
    *,
    churn_interval: float = DEMO_CHURN_INTERVAL,
    seed: int = 0,
) -> Demo:
    """Start ``count`` simulated VMs on unix sockets in ``directory`` (a new temporary one if
    not given) and let them change now and then."""
    if count < 1:
        raise ValueError("the demo needs at least one VM")
    owns = directory is None
    path = Path(tempfile.mkdtemp(prefix="qmp-demo-")) if directory is None else Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    vms = demo_vms(count)
    servers: list[SimulatedMonitorServer] = []
    try:
        for vm in vms:
            server = SimulatedMonitorServer(vm, path / f"{vm.name}.qmp")
            await server.start()
            servers.append(server)
    except BaseException:
        for server in servers:
            await server.close()
        if owns:
            shutil.rmtree(path, ignore_errors=True)
        raise
    churn = Churn(vms, interval=churn_interval, seed=seed)
    churn.start()
    monitors = [(vm.name or "", server.address) for vm, server in zip(vms, servers, strict=True)]
    return Demo(monitors, vms, servers, churn, path, owns)
