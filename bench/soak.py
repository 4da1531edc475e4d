"""Bounded soak: real QEMUs restarting and VNC clients churning under a running exporter.

Samples the exporter's resident memory, open file descriptors and OS threads, and the
scrape time, and writes a table into docs/benchmarks.md (section "Soak"). Growth is
reported as ratios of the last sample to the one taken after warm-up, in the same run.

    python -m bench.soak                 # 3 minutes
    python -m bench.soak --seconds 60 --vms 3

Asyncio task counts are not sampled: the exporter exposes no such metric; threads are
(``/proc/PID/task``). Everything listens on 127.0.0.1 and unix sockets; the run stops by
itself after ``--seconds`` and kills every QEMU it started.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import statistics
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from tests.helpers.exporter import ExporterProcess
from tests.helpers.qemu import QemuVM, find_qemu
from tests.helpers.rfb import rfb_handshake, vnc_tcp_connect

ROOT = Path(__file__).resolve().parents[1]

SECTION = "## Soak"


@dataclass
class Sample:
    seconds: float
    rss_bytes: int
    fds: int
    threads: int
    scrape_max: float
    restarts: int
    vnc_clients: int


def churn_vnc(vms: list[QemuVM], stop: threading.Event, counter: dict[str, int]) -> None:
    """Open and close VNC clients (half with a full RFB handshake) as fast as ~20/s."""
    index = 0
    while not stop.is_set():
        vm = vms[index % len(vms)]
        index += 1
        with contextlib.suppress(OSError, RuntimeError):
            if index % 2:
                rfb_handshake(vm.vnc_port, timeout=2).close()
            else:
                vnc_tcp_connect(vm.vnc_port, timeout=2).close()
            counter["clients"] += 1
        stop.wait(0.05)


def run(seconds: float, vm_count: int, restart_every: float) -> tuple[list[Sample], int, int]:
    if find_qemu() is None:
        raise SystemExit("qemu-system-x86_64 is required (scripts/install-test-deps.sh)")
    vms = [QemuVM(name=f"soak-{i}", vnc=True).start() for i in range(vm_count)]
    lines = ["poll_interval: 1s", "timeout: 500ms", "monitors:"]
    lines += [f"  - {{name: soak-{i}, address: '{vm.qmp_address()}'}}" for i, vm in enumerate(vms)]
    exporter = ExporterProcess("\n".join(lines) + "\n", log_level="info").start()
    stop = threading.Event()
    counter = {"clients": 0}
    churner = threading.Thread(target=churn_vnc, args=(vms, stop, counter), daemon=True)
    samples: list[Sample] = []
    restarts = 0
    try:
        churner.start()
        start = time.monotonic()
        next_restart = start + restart_every
        next_sample = start
        scrape_times: list[float] = []
        while (now := time.monotonic()) - start < seconds:
            if now >= next_restart:
                vm = vms[restarts % len(vms)]
                vm.kill()
                vm.restart()
                restarts += 1
                next_restart = now + restart_every
            with contextlib.suppress(Exception):
                scrape_times.append(exporter.scrape(timeout=5)[0])
            if now >= next_sample:
                samples.append(Sample(
                    seconds=now - start,
                    rss_bytes=exporter.rss_bytes(),
                    fds=exporter.fd_count(),
                    threads=exporter.thread_count(),
                    scrape_max=max(scrape_times, default=0.0),
                    restarts=restarts,
                    vnc_clients=counter["clients"],
                ))  # fmt: skip
                scrape_times = []
                next_sample = now + max(seconds / 18, 2.0)
            time.sleep(0.5)
    finally:
        stop.set()
        churner.join(10)
        exporter.stop()
        for vm in vms:
            vm.close()
    warnings = [line for line in exporter.log_lines() if "level=WARNING" in line]
    return samples, len(warnings), restarts


def table(
    samples: list[Sample], seconds: float, vm_count: int, warnings: int, restarts: int
) -> str:
    baseline = samples[min(2, len(samples) - 1)]  # after warm-up
    last = samples[-1]
    rows = [
        f"{SECTION}",
        "",
        f"`python -m bench.soak --seconds {seconds:g} --vms {vm_count}`: {vm_count} real QEMUs "
        "(`-M none`, VNC), one killed and restarted every few seconds, VNC clients connecting "
        "and leaving (half of them with a full RFB handshake) about 20 times a second, "
        "/metrics scraped every 0.5 s. Growth is last sample ÷ the sample after warm-up "
        "(same run). Asyncio tasks are not exposed by the exporter; OS threads are shown.",
        "",
        "| t (s) | RSS (MiB) | fds | threads | slowest scrape (ms) | restarts | VNC clients |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for s in samples:
        rows.append(
            f"| {s.seconds:.0f} | {s.rss_bytes / 2**20:.1f} | {s.fds} | {s.threads} | "
            f"{s.scrape_max * 1000:.1f} | {s.restarts} | {s.vnc_clients} |"
        )
    rows += [
        "",
        f"RSS growth ×{last.rss_bytes / baseline.rss_bytes:.3f}, fds {baseline.fds} → "
        f"{last.fds}, threads {baseline.threads} → {last.threads}; median slowest scrape "
        f"{statistics.median(s.scrape_max for s in samples) * 1000:.1f} ms; {warnings} warning "
        f"line(s) in the exporter's log for {restarts} restarts (one per state change).",
        "",
    ]
    return "\n".join(rows)


def write_section(path: Path, text: str) -> None:
    old = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.S | re.M)
    new = pattern.sub(lambda _: text + "\n", old) if pattern.search(old) else (
        old.rstrip("\n") + "\n\n" + text
    )  # fmt: skip
    path.write_text(new.rstrip("\n") + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=180.0)
    parser.add_argument("--vms", type=int, default=3)
    parser.add_argument("--restart-every", type=float, default=6.0)
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = parser.parse_args()
    samples, warnings, restarts = run(args.seconds, args.vms, args.restart_every)
    text = table(samples, args.seconds, args.vms, warnings, restarts)
    print(text)
    write_section(args.output, text)
    baseline, last = samples[min(2, len(samples) - 1)], samples[-1]
    grew = last.rss_bytes > baseline.rss_bytes * 1.25 or last.fds > baseline.fds + 8
    if grew:
        print("GROWTH: memory or file descriptors grew during the soak", file=sys.stderr)
    return 1 if grew else 0


if __name__ == "__main__":
    raise SystemExit(main())
