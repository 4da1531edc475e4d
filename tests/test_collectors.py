"""Collector parsing, with answers recorded from a real QEMU 7.2 (tests/transcripts/).

The real-QEMU behaviour is in tests/test_collectors_qemu.py; here each parser is checked
against real answers and against answers of the wrong shape.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qmp_exporter.collectors import COLLECTORS, DEFAULT_COLLECTORS
from qmp_exporter.collectors.balloon import BalloonCollector
from qmp_exporter.collectors.base import Collector
from qmp_exporter.collectors.block import BlockCollector, parse_blockstats
from qmp_exporter.collectors.host import HostCollector
from qmp_exporter.collectors.kvm import KvmCollector
from qmp_exporter.collectors.kvm_stats import KvmStatsCollector, parse_schemas, parse_stats
from qmp_exporter.collectors.memory import MemoryCollector
from qmp_exporter.collectors.migration import MigrationCollector
from qmp_exporter.collectors.spice import SpiceCollector
from qmp_exporter.collectors.vcpu import VcpuCollector
from qmp_exporter.host import Host
from qmp_exporter.host.process import ProcessReader
from qmp_exporter.qmp import CommandError
from qmp_exporter.textformat import format_labels, format_value
from tests.helpers.transcripts import earlier


def made(cls: type[Collector]) -> Collector:
    """A collector of ``cls`` for a VM whose commands are unknown; the host collector reads
    this process (untrusted, so built directly)."""
    if cls is HostCollector:
        return HostCollector(None, ProcessReader(Host(), os.getpid()))
    return cls(None)


class Answers:
    """Answers commands from recorded responses and remembers what was asked."""

    def __init__(self, responses: dict[str, Any]) -> None:
        self.responses = responses
        self.asked: list[tuple[str, Any]] = []

    async def __call__(self, command: str, arguments: dict[str, Any] | None) -> Any:
        self.asked.append((command, arguments))
        key = command
        if arguments and "target" in arguments:
            key = f"{command} {arguments['target']}"
        response = self.responses[key]
        if "error" in response:
            error = response["error"]
            raise CommandError(command, error["class"], error["desc"])
        return response["return"]


def run(collector_class: type, responses: dict[str, Any]) -> tuple[dict, Answers]:
    answers = Answers(responses)
    collector = collector_class(None)
    samples = asyncio.run(collector.collect(answers))
    assert_well_formed(collector_class, samples)
    return {(name, labels): value for name, labels, value in samples}, answers


def assert_well_formed(collector_class: type, samples: list) -> None:
    names = {family.name for family in collector_class.families}
    seen = set()
    for name, labels, value in samples:
        assert name in names, f"{name} is not one of {collector_class.__name__}.families"
        assert isinstance(value, int | float) and not isinstance(value, bool)
        assert (name, labels) not in seen, f"duplicate series {name}{labels}"
        seen.add((name, labels))


def test_registry_names_and_defaults():
    for name, cls in COLLECTORS.items():
        assert cls.name == name
        assert cls.required_commands or name == "host", name  # host reads the process
        for family in cls.families:
            assert family.name.startswith("qemu_")
            assert family.name.endswith("_total") == (family.kind == "counter"), family.name
    assert set(DEFAULT_COLLECTORS) <= set(COLLECTORS)
    assert "kvm_stats" not in DEFAULT_COLLECTORS
    assert "host" in DEFAULT_COLLECTORS  # what libvirt users look at first


def test_block_real_pc_answer():
    got, _ = run(BlockCollector, {"query-blockstats": earlier("BLOCKSTATS_06")})
    disk0 = (("device", "disk0"),)
    assert got[("qemu_block_read_bytes_total", disk0)] == 512
    assert got[("qemu_block_read_operations_total", disk0)] == 1
    assert got[("qemu_block_read_time_seconds_total", disk0)] == pytest.approx(275548e-9)
    assert got[("qemu_block_written_bytes_total", (("device", "disk1"),))] == 0
    failed = ("qemu_block_failed_operations_total", (*disk0, ("operation", "flush")))
    assert got[failed] == 0
    assert ("qemu_block_invalid_operations_total", (*disk0, ("operation", "unmap"))) in got
    devices = {dict(labels)["device"] for _, labels in got}
    assert devices == {"disk0", "disk1"}


def test_block_libvirt_empty_device_falls_back_to_qdev():
    got, _ = run(BlockCollector, {"query-blockstats": earlier("BLOCKSTATS_11_LIBVIRT")})
    assert got[("qemu_block_read_bytes_total", (("device", "ide0-0-0"),))] == 512


def test_block_falls_back_to_node_name_and_never_duplicates_series():
    stats = {"rd_bytes": 1}
    answer = [
        {"device": "", "node-name": "n1", "stats": stats},
        {"device": "", "qdev": "", "node-name": "n2", "stats": stats},
        {"device": "d", "node-name": "n3", "stats": stats},
        {"device": "d", "node-name": "n4", "stats": stats},
        {"device": "", "stats": stats},  # nothing to name it by: left out
    ]
    devices = [dict(labels)["device"] for _, labels, _ in parse_blockstats(answer)]
    assert devices == ["n1", "n2", "d", "d:n4"]


def test_block_without_blockstats_members_leaves_them_out():
    assert parse_blockstats([{"device": "old", "stats": {"rd_bytes": 5}}]) == [
        ("qemu_block_read_bytes_total", (("device", "old"),), 5)
    ]
    assert parse_blockstats(earlier("BLOCKSTATS_01_NONE")["return"]) == []


@pytest.mark.parametrize(
    "answer, error",
    [
        ({"device": "d"}, TypeError),
        ([{"device": "d", "stats": []}], TypeError),
        ([{"device": "d", "stats": {"rd_bytes": "12"}}], TypeError),
        ([{"device": "d", "stats": {"rd_bytes": True}}], TypeError),
        ([{"device": "d", "stats": {"rd_bytes": -1}}], ValueError),
        ([{"device": "d", "stats": {"rd_bytes": 10**30}}], ValueError),
        (["d"], TypeError),
    ],
)
def test_block_rejects_wrong_answers(answer, error):
    with pytest.raises(error):
        parse_blockstats(answer)


def test_vcpu_real_answers():
    got, _ = run(VcpuCollector, {"query-cpus-fast": earlier("CPUS_FAST_06")})
    assert got[("qemu_vcpus", ())] == 1
    assert got[("qemu_vcpu_info", (("vcpu", "0"), ("thread_id", "13551")))] == 1
    got, _ = run(VcpuCollector, {"query-cpus-fast": earlier("CPUS_FAST_01_NONE")})
    assert got == {("qemu_vcpus", ()): 0}


def test_vcpu_rejects_repeated_index_and_bad_thread():
    cpu = earlier("CPUS_FAST_06")["return"][0]
    with pytest.raises(ValueError):
        run(VcpuCollector, {"query-cpus-fast": {"return": [cpu, cpu]}})
    with pytest.raises(TypeError):
        run(VcpuCollector, {"query-cpus-fast": {"return": [{**cpu, "thread-id": "x"}]}})


def test_memory_real_answers():
    got, _ = run(MemoryCollector, {"query-memory-size-summary": earlier("MEMORY_06")})
    assert got == {("qemu_memory_base_bytes", ()): 67108864, ("qemu_memory_plugged_bytes", ()): 0}
    got, _ = run(MemoryCollector, {"query-memory-size-summary": {"return": {"base-memory": 8}}})
    assert got == {("qemu_memory_base_bytes", ()): 8}
    with pytest.raises(TypeError):
        run(MemoryCollector, {"query-memory-size-summary": {"return": {}}})


def test_balloon_present_and_absent():
    got, _ = run(BalloonCollector, {"query-balloon": earlier("BALLOON_06")})
    assert got == {("qemu_balloon_actual_bytes", ()): 67108864}
    # DeviceNotActive (no balloon device) is an answer, not a failure: no series.
    got, _ = run(BalloonCollector, {"query-balloon": earlier("BALLOON_01_NONE")})
    assert got == {}
    other = {"error": {"class": "GenericError", "desc": "something else"}}
    with pytest.raises(CommandError):
        run(BalloonCollector, {"query-balloon": other})


def test_kvm_enabled_is_asked_once_per_connection():
    answers = Answers({"query-kvm": earlier("KVM_07")})
    collector = KvmCollector(None)
    for _ in range(3):
        assert list(asyncio.run(collector.collect(answers))) == [("qemu_kvm_enabled", (), 1)]
    assert len(answers.asked) == 1
    got, _ = run(KvmCollector, {"query-kvm": earlier("KVM_11")})
    assert got == {("qemu_kvm_enabled", ()): 0}


def test_migration_completed_and_never():
    got, _ = run(MigrationCollector, {"query-migrate": earlier("MIGRATE_COMPLETED")})
    assert got[("qemu_migration_status", (("status", "completed"),))] == 1
    assert got[("qemu_migration_ram_total_bytes", ())] == 67641344
    assert got[("qemu_migration_ram_remaining_bytes", ())] == 0
    assert got[("qemu_migration_ram_transferred_bytes", ())] == 603263
    assert got[("qemu_migration_total_time_seconds", ())] == pytest.approx(0.010)
    assert got[("qemu_migration_downtime_seconds", ())] == pytest.approx(0.001)
    for never in (earlier("MIGRATE_01_NONE"), earlier("MIGRATE_INCOMING_10")):
        got, _ = run(MigrationCollector, {"query-migrate": never})
        assert got == {("qemu_migration_status", (("status", "none"),)): 1}
    with pytest.raises(ValueError):
        run(MigrationCollector, {"query-migrate": {"return": {"status": 'x"} 1\nevil'}}})


def test_spice_counts_clients_by_connection():
    got, _ = run(SpiceCollector, {"query-spice": earlier("SPICE_01")})
    assert got == {("qemu_spice_enabled", ()): 0, ("qemu_spice_clients", ()): 0}
    channel = {"host": "127.0.0.1", "port": "1", "family": "ipv4", "tls": False}
    answer = {
        "enabled": True,
        "migrated": False,
        "mouse-mode": "client",
        "channels": [
            {**channel, "connection-id": 7, "channel-type": 1, "channel-id": 0},
            {**channel, "connection-id": 7, "channel-type": 2, "channel-id": 0},
            {**channel, "connection-id": 9, "channel-type": 1, "channel-id": 0},
        ],
    }
    got, _ = run(SpiceCollector, {"query-spice": {"return": answer}})
    assert got == {("qemu_spice_enabled", ()): 1, ("qemu_spice_clients", ()): 2}


def test_kvm_stats_real_kvm_answers():
    responses = {
        "query-stats-schemas": earlier("STATS_SCHEMAS_KVM"),
        "query-stats vm": earlier("STATS_VM_07"),
        "query-stats vcpu": earlier("STATS_VCPU_07"),
        "query-cpus-fast": earlier("CPUS_FAST_07"),
    }
    answers = Answers(responses)
    collector = KvmStatsCollector(None)
    samples = asyncio.run(collector.collect(answers))
    assert_well_formed(KvmStatsCollector, samples)
    got = {(name, labels): value for name, labels, value in samples}
    vcpu0 = ("vcpu", "0")
    assert got[("qemu_kvm_vcpu_stat_total", (vcpu0, ("stat", "exits")))] == 2345
    assert got[("qemu_kvm_vcpu_stat", (vcpu0, ("stat", "guest_mode")))] == 0
    assert got[("qemu_kvm_vcpu_stat_seconds_total", (vcpu0, ("stat", "halt_wait")))] == 0
    assert got[("qemu_kvm_vm_stat_total", (("stat", "mmu_cache_miss"),))] == 12
    assert got[("qemu_kvm_vm_stat", (("stat", "max_mmu_rmap_size"),))] == 0  # a peak
    assert not any("hist" in dict(labels)["stat"] for _, labels in got)
    # Second poll: the schema and vCPU names are remembered.
    asyncio.run(collector.collect(answers))
    commands = [command for command, _ in answers.asked]
    assert commands.count("query-stats-schemas") == 1
    assert commands.count("query-cpus-fast") == 1
    assert commands.count("query-stats") == 4


def test_kvm_stats_scales_to_seconds_and_labels_unknown_vcpus_by_path():
    schema = parse_schemas(earlier("STATS_SCHEMAS_KVM")["return"])
    answer = [
        {
            "provider": "kvm",
            "qom-path": "/machine/cpu[9]",
            "stats": [{"name": "halt_wait_ns", "value": 2_500_000_000}],
        }
    ]
    samples = parse_stats("vcpu", answer, schema, {})
    assert samples == [
        (
            "qemu_kvm_vcpu_stat_seconds_total",
            (("vcpu", "/machine/cpu[9]"), ("stat", "halt_wait")),
            pytest.approx(2.5),
        )
    ]


def test_kvm_stats_under_tcg_sends_no_query_stats():
    got, answers = run(KvmStatsCollector, {"query-stats-schemas": earlier("STATS_SCHEMAS_01_TCG")})
    assert got == {}
    assert [command for command, _ in answers.asked] == ["query-stats-schemas"]


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["device", "stats", "rd_bytes", "actual", "enabled", "status", "x"]),
            children,
            max_size=4,
        )
    ),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None)
@given(answer=JSON, name=st.sampled_from(sorted(COLLECTORS)))
def test_any_answer_gives_valid_samples_or_a_type_or_value_error(answer, name):
    """Whatever a VM answers, a collector returns well-formed samples or raises
    TypeError/ValueError (recorded as that collector's failure only)."""
    collector = made(COLLECTORS[name])

    async def query(command: str, arguments: dict[str, Any] | None) -> Any:
        return answer

    try:
        samples = asyncio.run(collector.collect(query))
    except (TypeError, ValueError):
        return
    assert_well_formed(COLLECTORS[name], list(samples))


def test_exposition_of_real_answers_passes_promtool():
    """All families and samples from the real answers make a valid exposition."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool is required (scripts/install-test-deps.sh installs it)"
    responses = {
        "query-blockstats": earlier("BLOCKSTATS_06"),
        "query-cpus-fast": earlier("CPUS_FAST_07"),
        "query-memory-size-summary": earlier("MEMORY_06"),
        "query-balloon": earlier("BALLOON_06"),
        "query-kvm": earlier("KVM_07"),
        "query-migrate": earlier("MIGRATE_COMPLETED"),
        "query-spice": earlier("SPICE_01"),
        "query-stats-schemas": earlier("STATS_SCHEMAS_KVM"),
        "query-stats vm": earlier("STATS_VM_07"),
        "query-stats vcpu": earlier("STATS_VCPU_07"),
    }
    text = []
    for cls in COLLECTORS.values():
        collector = made(cls)
        samples = asyncio.run(collector.collect(Answers(responses)))
        for family in cls.families:
            mine = [s for s in samples if s[0] == family.name]
            if mine:
                text.append(family.header())
                text += [
                    f"{n}{format_labels((('vm', 't'), *labels))} {format_value(v)}\n"
                    for n, labels, v in mine
                ]
    exposition = "".join(text)
    result = subprocess.run(
        [promtool, "check", "metrics"], input=exposition, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "qemu_kvm_vcpu_stat_total" in exposition
    assert "qemu_process_resident_memory_bytes" in exposition
