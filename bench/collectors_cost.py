"""What collectors cost per poll, as ratios to a core-only poll of the same real QEMU
measured in the same run (the machine is shared and noisy; absolute times mean little).

    python3 -m bench.collectors_cost [--polls 300]

Starts one ``-M pc`` TCG VM with a virtio disk and balloon (and, where /dev/kvm works, one
KVM VM for ``kvm_stats``), polls each through the exporter's own poller on a held
connection, alternating the variants round by round so drift hits them all alike.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from qmp_exporter.collectors import COLLECTORS, DEFAULT_COLLECTORS
from qmp_exporter.config import MonitorConfig
from qmp_exporter.host import Host
from qmp_exporter.polling.poller import MonitorPoller, PollSettings
from tests.helpers.images import make_disk_image, pc_vm_args, wait_listening
from tests.helpers.qemu import QemuVM


class KvmVM(QemuVM):
    @property
    def argv(self) -> list[str]:
        argv = super().argv
        argv[argv.index("-accel") + 1] = "kvm"
        return argv


async def measure(
    address: str, variants: dict[str, tuple[str, ...]], polls: int
) -> dict[str, float]:
    pollers = {}
    for label, collectors in variants.items():
        monitor = MonitorConfig(name=label, address=address, mode="poll", collectors=collectors)
        settings = PollSettings(interval=60, timeout=5)
        pollers[label] = MonitorPoller(monitor, settings, host=Host())
    times: dict[str, list[float]] = {label: [] for label in variants}
    for _ in range(polls):
        for label, poller in pollers.items():
            started = time.perf_counter()
            await poller.poll_once()
            times[label].append(time.perf_counter() - started)
            assert poller.state.up, poller.state.error
    return {label: statistics.median(values) for label, values in times.items()}


def report(title: str, result: dict[str, float]) -> None:
    """Print each variant's median poll time as a ratio to the core-only poll."""
    base = result["core only"]
    print(title)
    for label, median in result.items():
        print(f"  {label:20s} {median / base:5.2f}x core-only")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--polls", type=int, default=300)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="qmpx-bench-"))
    image, image_format = make_disk_image(workdir)
    extra = pc_vm_args(image, image_format)
    vm = QemuVM(machine="pc", extra_args=extra).start()
    try:
        wait_listening(vm.qmp_path)
        variants = {
            "core only": (),
            "defaults": DEFAULT_COLLECTORS,
            "all but kvm_stats": tuple(c for c in COLLECTORS if c != "kvm_stats"),
        }
        title = (
            f"TCG -M pc, poll mode (connect + query-commands + queries), {args.polls} polls each"
        )
        report(title, asyncio.run(measure(vm.qmp_address(), variants, args.polls)))
    finally:
        vm.close()
    try:
        kvm = KvmVM(machine="pc", extra_args=extra).start()
    except Exception as err:  # no usable KVM here
        print(f"KVM: not measured ({err})")
        return
    try:
        wait_listening(kvm.qmp_path)
        variants = {
            "core only": (),
            "defaults": DEFAULT_COLLECTORS,
            "defaults + kvm_stats": (*DEFAULT_COLLECTORS, "kvm_stats"),
        }
        title = f"KVM -M pc, poll mode, {args.polls} polls each"
        report(title, asyncio.run(measure(kvm.qmp_address(), variants, args.polls)))
    finally:
        kvm.close()


if __name__ == "__main__":
    main()
