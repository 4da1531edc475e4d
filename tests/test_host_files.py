"""Held procfs/sysfs files: re-read fresh on every read, and failing (never stale) once the
process behind them is gone."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from qmp_exporter.host.procfs import (
    GONE,
    FileBudget,
    HeldFiles,
    ReadError,
    parse_io,
    parse_schedstat,
)


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
