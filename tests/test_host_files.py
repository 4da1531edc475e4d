"""Held procfs/sysfs files: re-read fresh on every read, and failing (never stale) once the
process behind them is gone."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from qmp_exporter.collectors.hostproc import GONE, HeldFiles, ReadError, parse_io, parse_schedstat


def test_a_held_file_reads_the_kernels_current_text():
    files = HeldFiles()
    path = f"/proc/self/task/{os.getpid()}/schedstat"
    before, _ = parse_schedstat(files.read(path))
    sum(i * i for i in range(300_000))  # spend CPU time
    after, _ = parse_schedstat(files.read(path))
    assert after > before
    files.close_all()


def test_a_held_file_of_an_exited_process_is_gone_then_released():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    files = HeldFiles()
    path = f"/proc/{child.pid}/stat"
    assert files.read(path).startswith(f"{child.pid} (".encode())
    held = HeldFiles._held
    child.kill()
    child.wait()
    with pytest.raises(ReadError) as caught:
        files.read(path)
    assert caught.value.reason == GONE
    assert HeldFiles._held == held - 1


def test_dropping_the_holder_closes_its_files():
    start = HeldFiles._held
    files = HeldFiles()
    files.read("/proc/self/stat")
    files.read("/proc/self/io")
    assert HeldFiles._held == start + 2
    del files
    assert HeldFiles._held == start


def test_io_of_the_kernels_layout_and_of_a_shorter_one():
    text = Path("/proc/self/io").read_bytes()
    fields = dict(line.split(b": ") for line in text.splitlines())
    assert parse_io(text) == (int(fields[b"read_bytes"]), int(fields[b"write_bytes"]))
    assert parse_io(b"rchar: 1\nwchar: 2\nread_bytes: 30\nwrite_bytes: 40\n") == (30, 40)
    with pytest.raises(ReadError):
        parse_io(b"rchar: 1\n")
