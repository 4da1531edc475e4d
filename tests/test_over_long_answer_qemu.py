"""A real QEMU whose ``query-blockstats`` answer is over the line limit (1,700 ``null-co``
drives: 1.13 MB on QEMU 7.2, 1.44 MB on 10.0), watched by the real exporter.

The poll fails every time (``protocol``), but the exporter backs off as after any other
failure: 0.5 s doubling up to the poll interval, then one failed poll per interval (not
one reconnect every 50 ms, which kept that QEMU at 88% CPU), and one warning that says
which collector asked and what to do. Raising ``qmp_max_line_bytes`` brings the VM up.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.helpers.exporter import ExporterProcess, wait_for
from tests.helpers.qemu import QemuVM, qmp_command
from tests.helpers.qemu_versions import QemuBuild

#: Enough drives for an answer over 1 MiB on every QEMU of the matrix (QEMU takes about
#: 9 s to open them, so the module starts it once per version).
DRIVES = 1700
INTERVAL = 1.0
#: The backoff's own attempts (0.5 + 1 s) are over by then; from then on, one per interval.
SETTLED = 0.5 + 1.0 + INTERVAL
#: Seconds watched once settled.
WATCHED = 3 * INTERVAL


def drive_args(count: int) -> list[str]:
    args: list[str] = []
    for index in range(count):
        args += ["-drive", f"driver=null-co,if=none,id=d{index}"]
    return args


@pytest.fixture(scope="module")
def big_vm(qemu_binary: QemuBuild) -> Iterator[QemuVM]:
    """The QEMU with the drives, once it greets (opening them takes it a while; until then
    a client would see no greeting, i.e. ``busy``)."""
    with QemuVM(name="big", build=qemu_binary, extra_args=drive_args(DRIVES)) as vm:
        qmp_command(vm.qmp_path, "query-status", timeout=60)
        yield vm


def failed_polls(exporter: ExporterProcess) -> float:
    return exporter.value("qmp_exporter_poll_errors_total", vm="big", reason="protocol") or 0


def test_an_answer_over_the_line_limit_is_retried_once_per_interval_with_one_warning(
    big_vm: QemuVM,
) -> None:
    config = {
        "poll_interval": f"{int(INTERVAL * 1000)}ms",
        "timeout": "1s",
        "monitors": [{"name": "big", "address": big_vm.qmp_address(), "collectors": ["block"]}],
    }
    with ExporterProcess(config, log_level="info") as exporter:
        wait_for(lambda: failed_polls(exporter) >= 1, 10, "the first failed poll")
        started = time.monotonic()
        time.sleep(SETTLED)
        settled = failed_polls(exporter)
        time.sleep(WATCHED - (time.monotonic() - started - SETTLED))
        failed = failed_polls(exporter) - settled
        connections = exporter.value("qmp_exporter_connections_total", vm="big")
        assert exporter.value("qemu_up", vm="big") == 0
        warnings = [line for line in exporter.log_lines() if "big: down" in line]
    # One failed poll per interval (jitter ±20%): 3 in 3 s, not the ~55 of no backoff.
    assert WATCHED / (INTERVAL * 1.2) - 1 <= failed <= WATCHED / (INTERVAL * 0.8) + 1, failed
    assert connections is not None and connections <= settled + failed + 1
    assert len(warnings) == 1, warnings
    warning = warnings[0]
    for words in ("down (protocol)", "query-blockstats", "1048576", "block collector",
                  "qmp_max_line_bytes", "collectors:"):  # fmt: skip
        assert words in warning, warning


def test_raising_qmp_max_line_bytes_lets_the_answer_in(big_vm: QemuVM) -> None:
    config = {
        "poll_interval": "2s",
        "qmp_max_line_bytes": 4 << 20,
        "monitors": [{"name": "big", "address": big_vm.qmp_address(), "collectors": ["block"]}],
    }
    with ExporterProcess(config, log_level="info") as exporter:
        wait_for(lambda: exporter.value("qemu_up", vm="big") == 1, 15, "the VM up")
        samples = exporter.samples()
    devices = {
        dict(labels)["device"]
        for name, labels in samples
        if name == "qemu_block_read_bytes_total" and dict(labels).get("vm") == "big"
    }
    assert len(devices) == DRIVES
