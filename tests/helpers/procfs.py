"""A generated stand-in for ``/proc`` and ``/sys``: QEMU processes as the host collector
reads them (its unit tests, and the 1,000-VM benchmark, whose simulated VMs share one
process)."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

#: A root-owned QEMU binary of this machine, for the ``exe`` link.
QEMU_BINARY = shutil.which("qemu-system-x86_64") or "/usr/bin/qemu-system-x86_64"
BOOT_TIME = 1_700_000_000
TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass
class FakeProcess:
    """One process's figures (ticks, kB, ns as the kernel writes them)."""

    pid: int
    exe: str = QEMU_BINARY
    utime: int = 1234
    stime: int = 567
    starttime: int = 4200
    rss_kb: int = 65536
    swap_kb: int | None = 128
    io: tuple[int, int] | None = (4096, 8192)
    #: thread id -> (run ns, delay ns)
    threads: dict[int, tuple[int, int]] = field(default_factory=dict)
    #: tap name -> {statistic file: value}
    taps: dict[str, dict[str, int]] = field(default_factory=dict)


def make_host(root: Path, processes: list[FakeProcess]) -> tuple[str, str]:
    """Writes ``root/proc`` and ``root/sys`` for ``processes``; returns both roots."""
    proc, sys = root / "proc", root / "sys"
    proc.mkdir(parents=True, exist_ok=True)
    (proc / "stat").write_text(f"cpu  1 2 3 4\nbtime {BOOT_TIME}\n")
    for process in processes:
        write_process(proc, sys, process)
    return str(proc), str(sys)


def write_process(proc: Path, sys: Path, p: FakeProcess) -> None:
    """One process and its taps."""
    base = proc / str(p.pid)
    (base / "task").mkdir(parents=True, exist_ok=True)
    (base / "fd").mkdir(exist_ok=True)
    (base / "fdinfo").mkdir(exist_ok=True)
    os.symlink(p.exe, base / "exe")
    fields = ["S", "1", str(p.pid), "0", "0", "-1", "4194560", "0", "0", "0", "0"]
    fields += [str(p.utime), str(p.stime), "0", "0", "20", "0", "3", "0", str(p.starttime)]
    fields += ["1000000", str(p.rss_kb * 1024 // PAGE), "0"]
    (base / "stat").write_text(f"{p.pid} (qemu-system-x86) {' '.join(fields)}\n")
    swap = "" if p.swap_kb is None else f"VmSwap:\t{p.swap_kb:8d} kB\n"
    (base / "status").write_text(f"Name:\tqemu-system-x86\nVmRSS:\t{p.rss_kb:8d} kB\n{swap}")
    if p.io is not None:
        (base / "io").write_text(
            f"rchar: 1\nwchar: 2\nread_bytes: {p.io[0]}\n"
            f"write_bytes: {p.io[1]}\ncancelled_write_bytes: 0\n"
        )
    for tid, (run, delay) in p.threads.items():
        (base / "task" / str(tid)).mkdir()
        (base / "task" / str(tid) / "schedstat").write_text(f"{run} {delay} 42\n")
    for fd, (tap, stats) in enumerate(p.taps.items(), start=20):
        os.symlink("/dev/net/tun", base / "fd" / str(fd))
        (base / "fdinfo" / str(fd)).write_text(f"pos:\t0\nflags:\t02\niff:\t{tap}\n")
        directory = sys / "class" / "net" / tap / "statistics"
        directory.mkdir(parents=True)
        for name in ("rx_bytes", "rx_packets", "rx_errors", "rx_dropped",
                     "tx_bytes", "tx_packets", "tx_errors", "tx_dropped"):  # fmt: skip
            (directory / name).write_text(f"{stats.get(name, 0)}\n")
    os.symlink("/dev/null", base / "fd" / "0")
