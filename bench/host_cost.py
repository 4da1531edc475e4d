"""What the ``host`` collector costs per VM-poll, as a ratio to the same poll without it,
measured in the same run (the machine is shared and noisy; only the ratios mean much).

    python3 -m bench.host_cost [--vms 1000] [--rounds 8] [--real 20] [--real-rounds 100]
                               [--whole-seconds 60]

Simulated: ``--vms`` simulated monitors (one simulator process; twice as many, as a monitor
serves one client) polled on held connections by the exporter's own pollers, half with the
other default collectors and half with ``host`` added; simulated VMs share one process, so
the host collector of each reads its own process (as many vCPU threads as the simulator
gives it, one to four, and one tap) from a generated ``/proc`` (``tests/helpers/procfs.py``);
as root its taps are real ones of the kernel (read from the real ``/sys``, as on a
hypervisor), else they are generated files. Real: ``--real`` (times two) paused ``-M pc
-smp 2`` QEMUs, each with a tap NIC as root, read from the real ``/proc``, on held
connections and then in ``poll`` mode. Variants alternate round by round (ABBA) so drift
hits both alike; the figure is the exporter's CPU time per VM-poll (median over rounds).
Whole: two exporter processes side by side on ``--real`` QEMUs each, polled and scraped
every second, one with ``host``: each one's whole CPU per VM-poll.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import itertools
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import requests

from bench.procs import cpu_seconds
from qmp_exporter.collectors import DEFAULT_COLLECTORS
from qmp_exporter.collectors.base import Collector, Connection
from qmp_exporter.collectors.host import HostCollector
from qmp_exporter.config import MonitorConfig
from qmp_exporter.fdlimit import raise_fd_limit
from qmp_exporter.host import Host
from qmp_exporter.host.peer import PIDFD, Peer
from qmp_exporter.polling.poller import MonitorPoller, PollSettings
from tests.helpers.exporter import free_port, parse_samples, wait_for
from tests.helpers.procfs import TICKS, FakeProcess, make_host
from tests.helpers.qemu import QemuVM
from tests.helpers.taps import persistent_tap, tap_args

WITHOUT = tuple(name for name in DEFAULT_COLLECTORS if name != "host")
WITH = (*WITHOUT, "host")
FIRST_FAKE_PID = 100_000
#: The thread ids a simulated VM's ``query-cpus-fast`` gives (13540 + index, 1 to 4 vCPUs):
#: each fake process has them all, so every vCPU's ``schedstat`` is found, as on a real host.
SIMULATED_VCPU_THREADS = range(13540, 13544)


async def cpu_per_poll(
    addresses: list[str], rounds: int, mode: str = "persistent", host: Host | None = None
) -> dict[str, float]:
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
                MonitorConfig(name=f"{label}-{i}", address=a, mode=mode, collectors=collectors),
                PollSettings(interval=60, timeout=30, start_spread=0),
                host=host or Host(),
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
    # the generated /proc has no simulator process: each connection's peer is refused (and
    # logged) before fake_process hands the collector a generated one
    logging.getLogger("qmp_exporter.host").setLevel(logging.ERROR)
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
        real_for_connection: Callable[..., Collector | None] = HostCollector.for_connection
        pids = itertools.cycle(p.pid for p in processes)
        host = Host(proc_root, sys_root)

        def fake_process(connection: Connection) -> Collector | None:
            peer = Peer(next(pids), 0, FakeProcess.starttime / TICKS, PIDFD)
            return real_for_connection(Connection(connection.available_commands, peer, host))

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
            HostCollector.for_connection = fake_process  # type: ignore[method-assign,assignment]
            try:
                result = asyncio.run(cpu_per_poll(addresses, rounds, host=host))
            finally:
                HostCollector.for_connection = real_for_connection  # type: ignore[method-assign,assignment]
            taps = "kernel taps" if real_taps else "generated /sys (not root)"
            report(f"{vms} simulated VMs, generated /proc, {taps}, {rounds} rounds", result)
        finally:
            sim.kill()
            sim.wait()


@contextlib.contextmanager
def real_qemus(count: int) -> Iterator[tuple[list[QemuVM], bool]]:
    """``count`` real paused QEMUs, each with two vCPUs and (as root, as on a hypervisor) a
    NIC on a tap of its own; and whether they have taps."""
    with contextlib.ExitStack() as stack:
        root = os.geteuid() == 0
        vms = []
        for _ in range(count):
            tap = stack.enter_context(persistent_tap()) if root else None
            extra = ("-smp", "2", "-m", "32", *(tap_args(tap) if tap else ()))
            vm = QemuVM(machine="pc", paused=True, extra_args=extra).start()
            stack.callback(vm.close)
            vms.append(vm)
        yield vms, root


def real(count: int, rounds: int) -> None:
    """Held connections, then ``poll`` mode (a connection per poll) on the same QEMUs."""
    with real_qemus(2 * count) as (vms, taps):
        addresses = [vm.qmp_address() for vm in vms]
        results = {mode: asyncio.run(cpu_per_poll(addresses, rounds, mode))
                   for mode in ("persistent", "poll")}  # fmt: skip
    nic = ", a tap each" if taps else ", no tap (not root)"
    for mode, result in results.items():
        report(f"{count} real QEMUs (paused, -M pc -smp 2{nic}), {mode} mode, {rounds} rounds",
               result)  # fmt: skip


def whole_exporter(count: int, seconds: float) -> None:
    """Two exporter processes side by side, each watching ``count`` real QEMUs of its own
    (polled every second, scraped every second with gzip, as Prometheus does), one with
    ``host`` in its collectors: each one's whole CPU (polls, rendering, scrapes) per VM-poll."""
    with real_qemus(2 * count) as (vms, _), tempfile.TemporaryDirectory() as workdir:
        exporters: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
        stack = contextlib.ExitStack()
        with stack:
            for label, collectors, part in (
                ("without host", WITHOUT, vms[:count]), ("with host", WITH, vms[count:]),
            ):  # fmt: skip
                config = Path(workdir) / f"{len(exporters)}.yml"
                monitors = [
                    {"name": f"vm{i}", "address": vm.qmp_address(), "collectors": list(collectors)}
                    for i, vm in enumerate(part)
                ]
                config.write_text(json.dumps({"poll_interval": "1s", "monitors": monitors}))
                port = free_port()
                process = subprocess.Popen(
                    [sys.executable, "-m", "qmp_exporter", f"--config.file={config}",
                     f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                    cwd=Path(__file__).resolve().parents[1],
                )  # fmt: skip
                stack.callback(process.wait)
                stack.callback(process.terminate)
                exporters[label] = (process, f"http://127.0.0.1:{port}/metrics")
            for label, (_, url) in exporters.items():
                wait_for(partial(_all_up, url, count), 60, f"{label}: every VM up")
            time.sleep(2)
            start = {label: cpu_seconds(p.pid) for label, (p, _) in exporters.items()}
            began = time.monotonic()
            sizes = {label: 0 for label in exporters}
            while time.monotonic() - began < seconds:
                for label, (_, url) in exporters.items():
                    sizes[label] = len(requests.get(url, timeout=10).content)
                time.sleep(1)
            elapsed = time.monotonic() - began
            used = {label: cpu_seconds(p.pid) - start[label] for label, (p, _) in exporters.items()}
        polls = count * elapsed  # one poll per VM per second
        result = {label: used[label] / polls * 1e6 for label in exporters}
        report(
            f"whole exporter, {count} real QEMUs each, 1 s polls and scrapes, {elapsed:.0f} s "
            f"(scrape bodies {sizes['without host']} and {sizes['with host']} bytes)",
            result,
        )


def _all_up(url: str, count: int) -> bool:
    try:
        samples = parse_samples(requests.get(url, timeout=5).text)
    except requests.RequestException:
        return False
    return sum(name == "qemu_up" and value == 1 for (name, _), value in samples.items()) == count


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--vms", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--real", type=int, default=20)
    parser.add_argument("--real-rounds", type=int, default=100)
    parser.add_argument("--whole-seconds", type=float, default=60, help="0: skip that part")
    args = parser.parse_args()
    raise_fd_limit(4 * args.vms + 256)
    if args.vms:
        simulated(args.vms, args.rounds)
    if args.real:
        real(args.real, args.real_rounds)
        if args.whole_seconds:
            whole_exporter(args.real, args.whole_seconds)


if __name__ == "__main__":
    main()
