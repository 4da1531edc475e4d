"""What the trust model (``docs/security.md``, issue 22) costs, each figure beside a baseline
measured in the same run (the machine is shared and noisy; only the ratios mean much).

    python3 -m bench.trust_cost [--qemus 20] [--scans 40] [--sim-vms 1000] [--pollers 200]
                                [--write-docs]

Scan: ``--qemus`` real ``-M none`` QEMUs, each with a unix ``-qmp`` monitor in one directory;
one process scan (``- processes: true``: the owner and binary checks, the command line, the
socket checks against ``sock_diag`` and the process's fds) against one glob scan of the same
sockets (no ``/proc``), CPU per scan, alternating ABBA over ``--scans`` rounds.

Poll mode: ``--pollers`` monitors of a simulator of ``--sim-vms`` VMs (one process holding
thousands of fds) polled in ``poll`` mode (a connection per poll) with the default collectors
(``host`` among them: the peer is identified on every connection) against ``collectors: []``
(no identification); CPU per VM-poll. The simulator's process is no QEMU: its peer is refused
by its ``exe`` before any walk over its fds.
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.docsection import replace_section
from qmp_exporter.config import DiscoveryConfig, MonitorConfig
from qmp_exporter.discovery import scan
from qmp_exporter.host import Host
from qmp_exporter.polling.poller import MonitorPoller, PollSettings

DOCS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
BEGIN = "<!-- trust_cost begin -->"
END = "<!-- trust_cost end -->"


@contextmanager
def qemus(count: int) -> Iterator[Path]:
    """``count`` paused ``-M none`` QEMUs with a unix monitor each, in a fresh directory."""
    directory = Path(tempfile.mkdtemp(prefix="trust-bench-", dir="/tmp"))
    binary = shutil.which("qemu-system-x86_64")
    if binary is None:
        sys.exit("qemu-system-x86_64 is missing: run scripts/install-test-deps.sh")
    started = []
    try:
        for index in range(count):
            sock = directory / f"b{index}.qmp"
            argv = [binary, "-M", "none", "-display", "none", "-nodefaults", "-S"]
            argv += ["-name", f"bench-{index}", "-qmp", f"unix:{sock},server=on,wait=off"]
            started.append(subprocess.Popen(argv, stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + 30
        while len(glob.glob(f"{directory}/*.qmp")) < count:
            if time.monotonic() > deadline:
                sys.exit("the QEMUs did not start")
            time.sleep(0.05)
        time.sleep(0.5)  # every one listening
        yield directory
    finally:
        for process in started:
            process.kill()
            process.wait()
        shutil.rmtree(directory, ignore_errors=True)


def cpu_per_call(call: object, repeat: int) -> float:
    """CPU seconds (this process, threads included) per call of ``call``."""
    assert callable(call)
    started = time.process_time()
    for _ in range(repeat):
        call()
    return (time.process_time() - started) / repeat


def scan_costs(count: int, rounds: int) -> dict[str, float]:
    with qemus(count) as directory:
        host = Host()
        processes = [DiscoveryConfig("", "", processes=True)]
        globbed = [DiscoveryConfig(f"{directory}/*.qmp")]
        found = scan(processes, [], host, read_unwatched=False)
        ours = [m for m in found.monitors if m.address.startswith(f"unix:{directory}")]
        assert len(ours) == count, f"the process scan found {len(ours)} of {count} monitors"
        samples: dict[str, list[float]] = {"processes": [], "glob": []}
        for index in range(rounds):
            order = ("processes", "glob") if index % 4 in (0, 3) else ("glob", "processes")
            for name in order:
                entries = processes if name == "processes" else globbed
                samples[name].append(
                    cpu_per_call(lambda e=entries: scan(e, [], host, read_unwatched=False), 4)
                )
    return {name: statistics.median(values) for name, values in samples.items()}


async def poll_round(pollers: list[MonitorPoller]) -> float:
    started = time.process_time()
    await asyncio.gather(*(poller.poll_once() for poller in pollers))
    return (time.process_time() - started) / len(pollers)


def poll_costs(sim_vms: int, count: int, rounds: int) -> dict[str, float]:
    directory = Path(tempfile.mkdtemp(prefix="trust-sim-", dir="/tmp"))
    simulator = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "qmp_exporter.sim",
            "--count",
            str(sim_vms),
            "--dir",
            str(directory),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while len(glob.glob(f"{directory}/*.qmp")) < sim_vms:
            if time.monotonic() > deadline:
                sys.exit("the simulator did not start")
            time.sleep(0.1)
        sockets = sorted(glob.glob(f"{directory}/*.qmp"))[:count]

        async def measure() -> dict[str, float]:
            host = Host()
            variants = {
                "default collectors": None,
                "collectors: []": (),
            }
            pollers = {
                name: [
                    MonitorPoller(
                        MonitorConfig(f"v{i}", f"unix:{path}", mode="poll", collectors=collectors),
                        PollSettings(timeout=10),
                        host=host,
                    )
                    for i, path in enumerate(sockets)
                ]
                for name, collectors in variants.items()
            }
            for group in pollers.values():  # warm up; every VM answers
                await poll_round(group)
                assert all(p.state.up for p in group), "a simulated VM is down"
            samples: dict[str, list[float]] = {name: [] for name in variants}
            names = list(variants)
            for index in range(rounds):
                order = names if index % 4 in (0, 3) else names[::-1]
                for name in order:
                    samples[name].append(await poll_round(pollers[name]))
            return {name: statistics.median(values) for name, values in samples.items()}

        return asyncio.run(measure())
    finally:
        simulator.kill()
        simulator.wait()
        shutil.rmtree(directory, ignore_errors=True)


def section(args: argparse.Namespace, scans: dict[str, float], polls: dict[str, float]) -> str:
    processes, globbed = scans["processes"], scans["glob"]
    default, bare = polls["default collectors"], polls["collectors: []"]
    scan_row = (
        f"| one process scan of {args.qemus} QEMUs (owner, binary, command line, sockets) "
        f"| {processes * 1e3:.2f} ms ({processes * 1e6 / args.qemus:.0f} µs per QEMU) "
        f"| one glob scan of the same sockets: {globbed * 1e3:.2f} ms "
        f"| {processes / globbed:.1f}× |"
    )
    poll_row = (
        f"| a `poll`-mode VM-poll, default collectors (the peer identified per connection), "
        f"{args.pollers} monitors of a {args.sim_vms}-VM simulator | {default * 1e6:.0f} µs "
        f"| the same with `collectors: []`: {bare * 1e6:.0f} µs | {default / bare:.2f}× |"
    )
    return f"""{BEGIN}
`python3 -m bench.trust_cost` (medians, ABBA; CPU of the exporter's process, threads included):

| what | figure | baseline (same run) | ratio |
| --- | --- | --- | --- |
{scan_row}
{poll_row}

A process scan runs every `rescan` (30 s by default), off the event loop; it reads every
QEMU of the host (the figure per QEMU divides by the bench's own). The poll-mode ratio holds
the default collectors' own queries as well as the identification. Before the peer was refused
by its `exe`, the same `poll`-mode run cost 7.1 ms per VM-poll (the holder check walked the
simulator's ~2,000 fds on every connection; measured in the run that fixed it).
{END}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--qemus", type=int, default=20)
    parser.add_argument("--scans", type=int, default=40)
    parser.add_argument("--sim-vms", type=int, default=1000)
    parser.add_argument("--pollers", type=int, default=200)
    parser.add_argument("--poll-rounds", type=int, default=12)
    parser.add_argument("--write-docs", action="store_true", help="update docs/benchmarks.md")
    args = parser.parse_args()
    scans = scan_costs(args.qemus, args.scans)
    polls = poll_costs(args.sim_vms, args.pollers, args.poll_rounds)
    print(json.dumps({"scan_cpu_seconds": scans, "poll_cpu_seconds_per_vm_poll": polls}))
    text = section(args, scans, polls)
    print(text)
    if args.write_docs:
        replace_section(DOCS, text, BEGIN, END, "The trust model (issue 22): what it costs")


if __name__ == "__main__":
    main()
