"""The parsers on real answers of every QEMU version of the matrix (tests/transcripts/: the
same scenarios recorded from QEMU 7.2 and 10.0), and the differences docs/qemu-versions.md
lists, each checked where the exporter meets it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from qmp_exporter.collectors.block import parse_blockstats
from qmp_exporter.collectors.kvm_stats import KvmStatsCollector, parse_schemas
from qmp_exporter.collectors.migration import parse_migrate
from qmp_exporter.collectors.vcpu import parse_cpus_fast
from qmp_exporter.polling.answers import parse_status, parse_version_answer, parse_vnc
from qmp_exporter.qmp.greeting import parse_version
from tests.helpers.transcripts import VERSIONS, answer, events, greeting

by_version = pytest.mark.parametrize("version", VERSIONS, ids=[f"qemu-{v}" for v in VERSIONS])


def returned(version: str, scenario: str, command: str, arguments: Any = None, nth: int = 0) -> Any:
    return answer(version, scenario, command, arguments, nth)["return"]


def series(samples: list[tuple[str, Any, Any]]) -> set[tuple[str, Any]]:
    return {(name, labels) for name, labels, _ in samples}


@by_version
def test_greeting_and_query_version_name_the_version(version):
    info = greeting(version)["QMP"]
    assert info["capabilities"] == ["oob"]
    number, package = parse_version(info["version"])
    assert number is not None and number.startswith(f"{version}.")
    assert package.startswith(f"Debian 1:{version}")
    assert parse_version_answer(returned(version, "01", "query-version")) == (number, package)


@by_version
def test_query_status_is_read_the_same_with_or_without_singlestep(version):
    status = returned(version, "01", "query-status")
    assert parse_status(status) == ("running", True)
    assert ("singlestep" in status) == (version == "7.2"), "10.0 dropped singlestep"
    stopped = returned(version, "01", "query-status", nth=1)
    assert parse_status(stopped) == ("paused", False)


@by_version
def test_query_vnc_with_zero_one_and_two_clients(version):
    counts = [parse_vnc(returned(version, "02", "query-vnc", nth=n)).clients for n in range(3)]
    assert counts == [0, 1, 2]
    auth = parse_vnc(returned(version, "03", "query-vnc"))
    assert auth.enabled and auth.auth == "vnc"


@by_version
def test_query_cpus_fast_under_kvm(version):
    samples = parse_cpus_fast(returned(version, "05", "query-cpus-fast"))
    assert ("qemu_vcpus", (), 2) in samples
    vcpus = {dict(labels)["vcpu"] for _, labels, _ in samples if labels}
    assert vcpus == {"0", "1"}
    assert parse_cpus_fast(returned(version, "01", "query-cpus-fast")) == [("qemu_vcpus", (), 0)]


@by_version
def test_stats_schemas_of_other_providers_are_ignored(version):
    tcg = returned(version, "01", "query-stats-schemas")
    assert {entry["provider"] for entry in tcg} == ({"cryptodev"} if version == "10.0" else set())
    assert parse_schemas(tcg) == {}, "a non-empty schema list does not mean KVM stats"
    kvm = returned(version, "05", "query-stats-schemas")
    schema = parse_schemas(kvm)
    assert {target for target, _ in schema} == {"vm", "vcpu"}
    assert ("vcpu", "exits") in schema and ("vm", "pages_4k") in schema


def test_kvm_stats_are_the_same_series_on_both_versions():
    def collect(version: str) -> set[tuple[str, Any]]:
        async def ask(command: str, arguments: dict[str, Any] | None) -> Any:
            if arguments and arguments.get("providers") == [{"provider": "kvm"}]:
                arguments = {"target": arguments["target"]}  # recorded unfiltered
            return returned(version, "05", command, arguments)

        samples = asyncio.run(KvmStatsCollector(None).collect(ask))
        assert samples, version
        assert not any("cryptodev" in str(labels) for _, labels, _ in samples)
        return series(samples)

    assert collect("7.2") == collect("10.0")


def test_blockstats_are_the_same_series_on_both_versions():
    old, new = (returned(v, "04", "query-blockstats") for v in VERSIONS)
    assert "zone_append_operations" in new[0]["stats"]
    assert "zone_append_operations" not in old[0]["stats"]
    assert series(parse_blockstats(old)) == series(parse_blockstats(new))
    devices = {dict(labels)["device"] for _, labels, _ in parse_blockstats(new)}
    assert len(devices) == 2 and "" not in devices, "the -blockdev disk is named by its qdev"


@by_version
def test_query_block_lists_the_same_drives(version):
    drives = returned(version, "04", "query-block")
    inserted = [drive["inserted"] for drive in drives if "inserted" in drive]
    assert inserted
    assert all(("active" in entry) == (version == "10.0") for entry in inserted)


def completed_migration(version: str) -> dict[str, Any]:
    for nth in range(10):
        migrate = returned(version, "08", "query-migrate", nth=nth)
        if migrate.get("status") == "completed":
            return migrate
    raise LookupError(version)


def test_completed_migration_is_the_same_series_on_both_versions():
    old, new = (completed_migration(v) for v in VERSIONS)
    assert "skipped" in old["ram"] and "skipped" not in new["ram"]
    assert series(parse_migrate(old)) == series(parse_migrate(new))
    assert parse_migrate(new)


@by_version
def test_migration_event_statuses(version):
    statuses = [e["data"]["status"] for e in events(version, "08") if e["event"] == "MIGRATION"]
    expected = ["setup", "active", "completed"]
    if version == "10.0":
        expected.insert(2, "device")
    assert statuses == expected


def test_vnc_and_spice_events_are_the_same_on_both_versions():
    for scenario in ("02", "03", "06", "07"):
        old, new = ([e["event"] for e in events(v, scenario)] for v in VERSIONS)
        assert old == new, scenario
    connected = next(e for e in events("10.0", "02") if e["event"] == "VNC_CONNECTED")
    assert set(connected["data"]["client"]) == {"host", "service", "family", "websocket"}
