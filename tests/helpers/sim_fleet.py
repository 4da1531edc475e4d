"""A simulated fleet in a process of its own (``python -m qmp_exporter.sim``), for tests."""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from tests.helpers.exporter import REPO


def read_line(process: subprocess.Popen[bytes], timeout: float) -> str:
    """The child's next stdout line, or fail after ``timeout`` seconds."""
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    assert ready, f"no line from {process.args} in {timeout}s"
    return process.stdout.readline().decode().strip()


@contextlib.contextmanager
def simulated_fleet(
    directory: Path, count: int, *args: str, timeout: float = 30.0
) -> Iterator[subprocess.Popen[bytes]]:
    """``count`` simulated VMs with their sockets in ``directory`` (``args``: more flags of
    the simulator, e.g. ``--control``); yields the process once it said it is ready."""
    process = subprocess.Popen(
        [sys.executable, "-m", "qmp_exporter.sim", "--count", str(count),
         "--dir", str(directory), *args],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert read_line(process, timeout) == f"ready {count}"
        yield process
    finally:
        process.terminate()
        process.wait(10)
