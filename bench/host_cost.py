"""What the ``host`` collector costs per VM-poll, as a ratio to the same poll without it,
measured in the same run (the machine is shared and noisy; only the ratios mean much).

    python3 bench/host_cost.py [--vms 1000] [--rounds 8] [--real 20] [--real-rounds 100]

Simulated: ``--vms`` simulated monitors (one simulator process; twice as many, as a monitor
serves one client) polled on held connections by the exporter's own pollers, half with the
default collectors and half with ``host`` added; simulated VMs share one process, so
the host collector of each reads its own process (as many vCPU threads as the simulator
gives it, one to four, and one tap) from a generated ``/proc`` (``tests/helpers/procfs.py``);
as root its taps are real ones of the kernel (read from the real ``/sys``, as on a
hypervisor), else they are generated files. Real: ``--real`` (times two) paused ``-M pc
-smp 2`` QEMUs, each with a tap NIC as root, read from the real ``/proc``. Variants
alternate round by round (ABBA) so drift hits both alike; the figure is the exporter's CPU
time per VM-poll (median over rounds).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import itertools
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
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
from tests.helpers.taps import persistent_tap, tap_args

WITHOUT = DEFAULT_COLLECTORS
WITH = (*DEFAULT_COLLECTORS, "host")
FIRST_FAKE_PID = 100_000
#: The thread ids a simulated VM's ``query-cpus-fast`` gives (13540 + index, 1 to 4 vCPUs):
#: each fake process has them all, so every vCPU's ``schedstat`` is found, as on a real host.
SIMULATED_VCPU_THREADS = range(13540, 13544)


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


@contextlib.contextmanager
def kernel_taps(names: list[str]) -> Iterator[bool]:
    """Real taps of these names for the block (as root; yields whether they exist): the
    generated processes hold them, so their counters come from the kernel's sysfs, as on a
    hypervisor."""
    if os.geteuid() != 0:
        yield False
        return
    commands = "".join(f"tuntap add dev {name} mode tap\n" for name in names)
    subprocess.run(["ip", "-batch", "-"], input=commands, text=True, check=True)
    try:
        yield True
    finally:
        deletions = "".join(f"link delete {name}\n" for name in names)
        subprocess.run(["ip", "-force", "-batch", "-"], input=deletions, text=True, check=False)


def simulated(vms: int, rounds: int) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="qmpx-hostbench-"))
    processes = [
        FakeProcess(
            pid=FIRST_FAKE_PID + i,
            threads={tid: (10**9 * i, 10**6) for tid in SIMULATED_VCPU_THREADS},
            taps={f"qhb{i}i0": {"rx_bytes": i, "tx_bytes": 2 * i}},
        )
        for i in range(vms)
    ]
    proc_root, fixture_sys = make_host(workdir / "host", processes)
    with kernel_taps([tap for p in processes for tap in p.taps]) as real_taps:
        sys_root = "/sys" if real_taps else fixture_sys
        pids = itertools.cycle(p.pid for p in processes)

        def fake_process(
            available: frozenset[str] | None, peer_pid: int | None
        ) -> Collector | None:
            return HostCollector.trusted(available, next(pids), proc_root, sys_root)

        sockets = workdir / "sockets"
        sockets.mkdir()
        sim = subprocess.Popen(
            [sys.executable, "-m", "qmp_exporter.sim", "--count", str(2 * vms),
             "--dir", str(sockets)],
            cwd=Path(__file__).resolve().parents[1],
        )  # fmt: skip
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
            taps = "kernel taps" if real_taps else "generated /sys (not root)"
            report(f"{vms} simulated VMs, generated /proc, {taps}, {rounds} rounds", result)
        finally:
            sim.kill()
            sim.wait()


def real(count: int, rounds: int) -> None:
    """``count`` twice over real paused QEMUs, each with two vCPUs and (as root, as on a
    hypervisor) a NIC on a tap of its own."""
    with contextlib.ExitStack() as stack:
        taps = [stack.enter_context(persistent_tap()) for _ in range(2 * count)] if (
            os.geteuid() == 0
        ) else [None] * (2 * count)
        vms = []
        for tap in taps:
            extra = ("-smp", "2", "-m", "32", *(tap_args(tap) if tap else ()))
            vm = QemuVM(machine="pc", paused=True, extra_args=extra).start()
            stack.callback(vm.close)
            vms.append(vm)
        addresses = [vm.qmp_address() for vm in vms]
        result = asyncio.run(cpu_per_poll(addresses, rounds))
        nic = ", a tap each" if taps[0] else ", no tap (not root)"
        title = f"{count} real QEMUs (paused, -M pc -smp 2{nic}), real /proc, {rounds} rounds"
        report(title, result)


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
