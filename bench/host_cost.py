"""What the ``host`` collector costs per VM-poll, as a ratio to the same poll without it,
measured in the same run (the machine is shared and noisy; only the ratios mean much).

    python3 bench/host_cost.py [--vms 1000] [--rounds 8] [--real 20] [--real-rounds 100]

Simulated: ``--vms`` simulated monitors (one simulator process; twice as many, as a monitor
serves one client) polled on held connections by the exporter's own pollers, half with the
default collectors and half with ``host`` added; simulated VMs share one process, so
the host collector of each reads its own process (2 vCPU threads, one tap) from a generated
``/proc`` and ``/sys`` (``tests/helpers/procfs.py``). Real: ``--real`` (times two) paused
``-M pc -smp 2`` QEMUs, each read from the real ``/proc``. Variants alternate round by round
(ABBA) so drift hits both alike; the figure is the exporter's CPU time per VM-poll
(median over rounds).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from qmp_exporter.collectors import DEFAULT_COLLECTORS
from qmp_exporter.collectors.base import Collector
from qmp_exporter.collectors.host import HostCollector
from qmp_exporter.config import MonitorConfig
from qmp_exporter.fdlimit import raise_fd_limit
from qmp_exporter.polling.poller import MonitorPoller, PollSettings
from tests.helpers.procfs import FakeProcess, make_host
from tests.helpers.qemu import QemuVM

WITHOUT = DEFAULT_COLLECTORS
WITH = (*DEFAULT_COLLECTORS, "host")
FIRST_FAKE_PID = 100_000


async def cpu_per_poll(addresses: list[str], rounds: int) -> dict[str, float]:
    """Median exporter CPU µs per VM-poll of each variant over ``rounds`` alternating rounds.
    A monitor serves one client: the first half of ``addresses`` is polled without the host
    collector, the second half with it."""
    fleets = {}
    half = len(addresses) // 2
    variants = (("without host", WITHOUT), ("with host", WITH))
    parts = (addresses[:half], addresses[half:])
    for (label, collectors), part in zip(variants, parts, strict=True):
        fleets[label] = [
            MonitorPoller(
                MonitorConfig(name=f"{label}-{i}", address=a, collectors=collectors),
                PollSettings(interval=60, timeout=30, start_spread=0),
            )
            for i, a in enumerate(part)
        ]
        await asyncio.gather(*(p.poll_once() for p in fleets[label]))  # connect
    samples: dict[str, list[float]] = {label: [] for label in fleets}
    for round_number in range(rounds):
        order = list(fleets.items())
        if round_number % 2:
            order.reverse()  # ABBA: neither variant always goes first
        for label, pollers in order:
            gc.collect()  # the other variant's garbage is not charged to this one
            started = time.process_time()
            await asyncio.gather(*(p.poll_once() for p in pollers))
            samples[label].append((time.process_time() - started) / len(pollers) * 1e6)
            down = [p.name for p in pollers if not p.state.up]
            assert not down, (down[:3], pollers[0].state.error)
    with_host = fleets["with host"][0].state
    assert any(name == "host" for name, _ in with_host.collector_results), "host did not run"
    for pollers in fleets.values():
        for poller in pollers:
            await poller.stop()
    return {label: statistics.median(values) for label, values in samples.items()}


def report(title: str, result: dict[str, float]) -> None:
    base, host = result["without host"], result["with host"]
    print(title)
    print(f"  without host {base:7.1f} µs CPU per VM-poll")
    added = f"{host / base:.2f}x (+{host - base:.1f} µs)"
    print(f"  with host    {host:7.1f} µs CPU per VM-poll: {added}")


def simulated(vms: int, rounds: int) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="qmpx-hostbench-"))
    processes = [
        FakeProcess(
            pid=FIRST_FAKE_PID + i,
            threads={10 * i + 1: (10**9 * i, 10**6), 10 * i + 2: (10**9, 10**5)},
            taps={f"tap{i}i0": {"rx_bytes": i, "tx_bytes": 2 * i}},
        )
        for i in range(vms)
    ]
    proc_root, sys_root = make_host(workdir / "host", processes)
    pids = itertools.cycle(p.pid for p in processes)

    def fake_process(available: frozenset[str] | None, peer_pid: int | None) -> Collector | None:
        return HostCollector.trusted(available, next(pids), proc_root, sys_root)

    sockets = workdir / "sockets"
    sockets.mkdir()
    sim = subprocess.Popen(
        [sys.executable, "-m", "qmp_exporter.sim", "--count", str(2 * vms), "--dir", str(sockets)],
        cwd=Path(__file__).resolve().parents[1],
    )
    try:
        deadline = time.monotonic() + 60
        while len(list(sockets.glob("*.qmp"))) < 2 * vms and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1)
        addresses = [f"unix:{p}" for p in sorted(sockets.glob("*.qmp"))]
        real_for_connection: Callable[..., Collector | None] = HostCollector.for_connection
        HostCollector.for_connection = fake_process  # type: ignore[method-assign,assignment]
        try:
            result = asyncio.run(cpu_per_poll(addresses, rounds))
        finally:
            HostCollector.for_connection = real_for_connection  # type: ignore[method-assign]
        report(f"{vms} simulated VMs, persistent, generated /proc, {rounds} rounds", result)
    finally:
        sim.kill()
        sim.wait()


def real(count: int, rounds: int) -> None:
    vms = [
        QemuVM(machine="pc", paused=True, extra_args=("-smp", "2", "-m", "32")).start()
        for _ in range(2 * count)
    ]
    try:
        addresses = [vm.qmp_address() for vm in vms]
        result = asyncio.run(cpu_per_poll(addresses, rounds))
        report(f"{count} real QEMUs (paused, -M pc -smp 2), real /proc, {rounds} rounds", result)
    finally:
        for vm in vms:
            vm.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--vms", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--real", type=int, default=20)
    parser.add_argument("--real-rounds", type=int, default=100)
    args = parser.parse_args()
    raise_fd_limit(4 * args.vms + 256)
    simulated(args.vms, args.rounds)
    if args.real:
        real(args.real, args.real_rounds)


if __name__ == "__main__":
    main()
