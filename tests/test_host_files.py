"""Held procfs/sysfs files: re-read fresh on every read, and failing (never stale) once the
process behind them is gone."""

from __future__ import annotations

import asyncio
import os
import resource
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from qmp_exporter.collectors.host import HostCollector
from qmp_exporter.host import Host
from qmp_exporter.host.process import ProcessReader
from qmp_exporter.host.procfs import (
    GONE,
    MAX_FDS_EXAMINED,
    FileBudget,
    HeldFiles,
    ReadError,
    find_taps,
    parse_io,
    parse_schedstat,
)
from tests.helpers.taps import open_tap


def test_a_held_file_reads_the_kernels_current_text():
    files = HeldFiles(FileBudget())
    path = f"/proc/self/task/{os.getpid()}/schedstat"
    before, _ = parse_schedstat(files.read(path))
    sum(i * i for i in range(300_000))  # spend CPU time
    after, _ = parse_schedstat(files.read(path))
    assert after > before
    files.close_all()


def test_a_held_file_of_an_exited_process_is_gone_then_released():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    budget = FileBudget()
    files = HeldFiles(budget)
    path = f"/proc/{child.pid}/stat"
    assert files.read(path).startswith(f"{child.pid} (".encode())
    assert budget.held == 1
    child.kill()
    child.wait()
    with pytest.raises(ReadError) as caught:
        files.read(path)
    assert caught.value.reason == GONE
    assert budget.held == 0


def test_close_all_closes_the_files_and_gives_back_the_budget():
    budget = FileBudget()
    files = HeldFiles(budget)
    files.read("/proc/self/stat")
    files.read("/proc/self/io")
    fds = len(os.listdir("/proc/self/fd"))
    assert budget.held == 2
    files.close_all()
    assert budget.held == 0
    assert len(os.listdir("/proc/self/fd")) == fds - 2


def test_past_the_budget_files_are_read_but_not_held():
    budget = FileBudget(1)
    files = HeldFiles(budget)
    files.read("/proc/self/stat")
    assert files.read("/proc/self/io").startswith(b"rchar:")
    assert budget.held == 1
    files.close_all()


def test_io_of_the_kernels_layout_and_of_a_shorter_one():
    text = Path("/proc/self/io").read_bytes()
    fields = dict(line.split(b": ") for line in text.splitlines())
    assert parse_io(text) == (int(fields[b"read_bytes"]), int(fields[b"write_bytes"]))
    assert parse_io(b"rchar: 1\nwchar: 2\nread_bytes: 30\nwrite_bytes: 40\n") == (30, 40)
    with pytest.raises(ReadError):
        parse_io(b"rchar: 1\n")


def test_taps_are_looked_for_among_a_bounded_number_of_fds():
    """Round 3's D11: a process holding many fds costs a bounded walk; its taps are found
    among its lowest MAX_FDS_EXAMINED fds (a QEMU opens its taps early)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = MAX_FDS_EXAMINED + 600
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted + 200), max(hard, wanted + 200)))
    held: list[int] = []
    try:
        with open_tap() as (early, _):
            held += [os.open("/dev/null", os.O_RDONLY) for _ in range(MAX_FDS_EXAMINED + 100)]
            with open_tap() as (late, late_fd):
                assert late_fd > MAX_FDS_EXAMINED
                names, complete = find_taps(os.getpid())
        assert early in names and late not in names
        assert complete is False
        for fd in held:
            os.close(fd)
        held.clear()
        with open_tap() as (tap, _):
            assert find_taps(os.getpid()) == ([tap], True)
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_the_host_collector_looks_for_taps_off_the_event_loop():
    reader = Host().trusted_process(os.getpid())
    assert reader is None  # the test's Python is no QEMU: build the reader directly
    reader = ProcessReader(Host(), os.getpid())
    collector = HostCollector(None, reader)
    threads: list[int] = []
    real = reader.find_taps

    def recording() -> None:
        threads.append(threading.get_ident())
        real()

    reader.find_taps = recording  # type: ignore[method-assign]

    async def polls() -> None:
        async def query(command: str, arguments: object = None) -> list[object]:
            return []

        for _ in range(2):
            await collector.collect(query)

    asyncio.run(polls())
    collector.close()
    assert len(threads) == 1, "looked for at the first poll only"
    assert threads[0] != threading.get_ident(), "in a thread, not on the event loop"
