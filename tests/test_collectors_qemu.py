"""Collectors against real QEMU: ``-M pc`` with a virtio disk and a virtio balloon (TCG),
``-M none`` (no balloon, no CPUs), and KVM statistics where /dev/kvm is usable."""

from __future__ import annotations

import asyncio
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from qmp_exporter.collectors import COLLECTORS
from qmp_exporter.collectors.kvm_stats import parse_schemas
from qmp_exporter.config import MonitorConfig
from qmp_exporter.host import Host
from qmp_exporter.polling.collect import choose_collectors, run_collectors
from qmp_exporter.polling.poller import MonitorPoller, PollSettings
from qmp_exporter.qmp import connect
from tests.helpers.exporter import wait_for
from tests.helpers.images import make_disk_image, pc_vm_args, wait_listening
from tests.helpers.qemu import QemuVM, qmp_command

KVM_GET_API_VERSION = 0xAE00


def kvm_unusable_reason() -> str | None:
    """Why KVM cannot be used here, or None when it can."""
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError as err:
        return f"/dev/kvm is not usable here ({err.strerror}): KVM statistics need KVM"
    try:
        version = fcntl.ioctl(fd, KVM_GET_API_VERSION)
    except OSError as err:
        return f"/dev/kvm does not answer KVM_GET_API_VERSION ({err.strerror})"
    finally:
        os.close(fd)
    return None if version == 12 else f"unexpected KVM API version {version}"


async def collect_all(address: str, names: list[str] | None = None) -> dict[str, Any]:
    """Run the named collectors (default: all) once on a fresh connection through the
    poller's own :func:`choose_collectors` and :func:`run_collectors`. Returns
    {"samples": {(name, labels): value}, "failed": [collector], "skipped": [collector]}."""
    wanted = names or list(COLLECTORS)
    client = await connect(address, timeout=5)
    try:
        collectors = await choose_collectors(client, wanted, host=Host())
        samples, results = await run_collectors(collectors, client)
    finally:
        await client.close()
    chosen = {collector.name for collector in collectors}
    return {
        "samples": {(family, labels): value for family, labels, value in samples},
        "failed": [name for name, ok in results if not ok],
        "skipped": [name for name in wanted if name not in chosen],
    }


@pytest.fixture
def pc_vm(qemu_factory, tmp_path) -> QemuVM:
    image, image_format = make_disk_image(tmp_path)
    vm = qemu_factory(machine="pc", extra_args=pc_vm_args(image, image_format))
    wait_listening(vm.qmp_path)
    return vm


@pytest.fixture
def none_vm(qemu_vm) -> QemuVM:
    wait_listening(qemu_vm.qmp_path)
    return qemu_vm


def test_stats_schemas_of_other_providers_give_no_kvm_stats(none_vm, qemu_binary):
    """QEMU 10.0 lists a ``cryptodev`` stats provider even under TCG: kvm_stats ignores it."""
    schemas = qmp_command(none_vm.qmp_path, "query-stats-schemas")
    providers = {entry["provider"] for entry in schemas}
    assert providers == ({"cryptodev"} if qemu_binary.version == "10.0" else set())
    assert parse_schemas(schemas) == {}
    result = asyncio.run(collect_all(none_vm.qmp_address(), ["kvm", "kvm_stats"]))
    assert result["failed"] == []
    assert not any(name.startswith("qemu_kvm_") and name != "qemu_kvm_enabled"
                   for name, _ in result["samples"])  # fmt: skip
    assert result["samples"][("qemu_kvm_enabled", ())] == 0


def test_pc_vm_with_disk_and_balloon(pc_vm):
    result = asyncio.run(collect_all(pc_vm.qmp_address()))
    samples, failed = result["samples"], result["failed"]
    assert failed == []
    assert result["skipped"] == []
    disk = (("device", "disk0"),)
    for family in (
        "qemu_block_read_bytes_total",
        "qemu_block_written_bytes_total",
        "qemu_block_read_operations_total",
        "qemu_block_write_operations_total",
        "qemu_block_flush_operations_total",
        "qemu_block_read_time_seconds_total",
        "qemu_block_write_time_seconds_total",
        "qemu_block_flush_time_seconds_total",
    ):
        assert samples[(family, disk)] >= 0, family
    assert samples[("qemu_block_failed_operations_total", (*disk, ("operation", "read")))] == 0
    assert samples[("qemu_vcpus", ())] == 1
    [(_, labels)] = [key for key in samples if key[0] == "qemu_vcpu_info"]
    thread = dict(labels)["thread_id"]
    assert Path(f"/proc/{pc_vm.pid}/task/{thread}").exists(), "thread id is a QEMU thread"
    assert samples[("qemu_memory_base_bytes", ())] == 64 * 1024 * 1024
    assert samples[("qemu_memory_plugged_bytes", ())] == 0
    assert samples[("qemu_balloon_actual_bytes", ())] == 64 * 1024 * 1024
    assert samples[("qemu_kvm_enabled", ())] == 0
    assert samples[("qemu_migration_status", (("status", "none"),))] == 1
    assert samples[("qemu_spice_enabled", ())] == 0
    assert not any(name.startswith("qemu_kvm_v") for name, _ in samples), "TCG: no KVM stats"


def test_block_counters_grow_as_the_guest_firmware_reads(pc_vm):
    """SeaBIOS probes the virtio disk at boot: the read counters move off zero."""
    disk = (("device", "disk0"),)
    for _ in range(50):
        samples = asyncio.run(collect_all(pc_vm.qmp_address(), ["block"]))["samples"]
        if samples[("qemu_block_read_operations_total", disk)] > 0:
            break
        time.sleep(0.1)
    assert samples[("qemu_block_read_operations_total", disk)] > 0
    assert samples[("qemu_block_read_bytes_total", disk)] >= 512
    assert samples[("qemu_block_read_time_seconds_total", disk)] > 0


def test_machine_none_balloon_absent_is_not_a_failure(none_vm):
    result = asyncio.run(collect_all(none_vm.qmp_address()))
    samples = result["samples"]
    assert result["failed"] == []
    assert samples[("qemu_vcpus", ())] == 0
    assert samples[("qemu_memory_base_bytes", ())] == 0
    assert not any(name.startswith(("qemu_balloon", "qemu_block")) for name, _ in samples)


def test_poller_runs_collectors_and_reports_each(pc_vm, none_vm):
    """Through the exporter's own poller: every collector succeeds on the pc VM; on
    ``-M none`` the balloon collector succeeds too (no balloon is an answer)."""

    async def poll(address: str) -> MonitorPoller:
        monitor = MonitorConfig(
            name="t", address=address, mode="poll", collectors=tuple(COLLECTORS)
        )
        settings = PollSettings(interval=5, timeout=5, start_spread=0)
        poller = MonitorPoller(monitor, settings, host=Host())
        await poller.poll_once()
        return poller

    for vm in (pc_vm, none_vm):
        state = asyncio.run(poll(vm.qmp_address())).state
        assert state.up, state.error
        results = dict(state.collector_results)
        assert results == dict.fromkeys(COLLECTORS, True), results
    names = {name for name, _, _ in state.samples}
    assert "qemu_vcpus" in names


class KvmVM(QemuVM):
    """A test VM under KVM instead of TCG."""

    @property
    def argv(self) -> list[str]:
        argv = super().argv
        argv[argv.index("-accel") + 1] = "kvm"
        return argv


@pytest.fixture
def kvm_vm(qemu_binary, tmp_path) -> Iterator[QemuVM]:
    reason = kvm_unusable_reason()
    if reason is not None:
        pytest.skip(f"KVM statistics not tested: {reason}")
    image, image_format = make_disk_image(tmp_path)
    vm = KvmVM(build=qemu_binary, machine="pc", extra_args=pc_vm_args(image, image_format))
    try:
        vm.start()
        wait_listening(vm.qmp_path)
        yield vm
    finally:
        vm.close()


def test_kvm_statistics(kvm_vm):
    exits_key = ("qemu_kvm_vcpu_stat_total", (("vcpu", "0"), ("stat", "exits")))

    def collected_after_first_exit():
        # Right after start vCPU 0 may not have run yet: its exit counter is then 0.
        result = asyncio.run(collect_all(kvm_vm.qmp_address(), ["kvm", "kvm_stats"]))
        return result if result["samples"].get(exits_key, 0) > 0 else None

    result = wait_for(collected_after_first_exit, timeout=10, what="vCPU 0 counts exits")
    samples = result["samples"]
    assert result["failed"] == []
    assert samples[("qemu_kvm_enabled", ())] == 1
    exits = samples[exits_key]
    assert ("qemu_kvm_vcpu_stat_seconds_total", (("vcpu", "0"), ("stat", "halt_wait"))) in samples
    assert any(name == "qemu_kvm_vm_stat_total" for name, _ in samples)
    assert any(name == "qemu_kvm_vm_stat" for name, _ in samples)
    again = asyncio.run(collect_all(kvm_vm.qmp_address(), ["kvm_stats"]))["samples"]
    later = again[("qemu_kvm_vcpu_stat_total", (("vcpu", "0"), ("stat", "exits")))]
    assert later >= exits, "a counter does not go backwards"
