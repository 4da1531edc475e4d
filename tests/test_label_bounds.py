"""Label values a monitor supplies are cut to a bound (128 characters, the last ``…``) by
one helper: a 900,000-character block device id does not become megabytes of /metrics."""

from __future__ import annotations

from typing import Any

from qmp_exporter.collectors.block import parse_blockstats
from qmp_exporter.collectors.kvm_stats import parse_schemas, parse_stats
from qmp_exporter.collectors.values import CUT_MARKER, MAX_LABEL_CHARS, bounded
from qmp_exporter.polling.answers import parse_identity, parse_vnc
from tests.helpers import fault_monitors as faults
from tests.helpers.exporter import ExporterProcess, parse_samples, wait_for

HUGE = 900_000


def test_bounded_keeps_short_values_and_cuts_long_ones_with_a_marker() -> None:
    assert bounded("drive-virtio-disk0") == "drive-virtio-disk0"
    assert bounded("x" * MAX_LABEL_CHARS) == "x" * MAX_LABEL_CHARS
    cut = bounded("y" * HUGE)
    assert len(cut) == MAX_LABEL_CHARS and cut.endswith(CUT_MARKER)
    assert bounded("abcdef", 4) == "abc" + CUT_MARKER


def test_block_labels_are_bounded_and_still_distinct() -> None:
    stats = {"rd_bytes": 1}
    answer = [
        {"device": "a" * HUGE + "1", "node-name": "n1", "stats": stats},
        {"device": "a" * HUGE + "2", "node-name": "n" * HUGE, "stats": stats},
        {"device": "", "node-name": "b" * HUGE, "stats": stats},
    ]
    devices = [dict(labels)["device"] for _, labels, _ in parse_blockstats(answer)]
    assert len(devices) == len(set(devices)) == 3, devices
    assert all(len(device) <= 2 * MAX_LABEL_CHARS + 1 for device in devices)


def test_kvm_stats_vcpu_path_is_bounded() -> None:
    stat = {"name": "exits", "type": "cumulative", "base": 10, "exponent": 0}
    schema = parse_schemas([{"provider": "kvm", "target": "vcpu", "stats": [stat]}])
    path = "/" + "p" * HUGE
    answer = [{"provider": "kvm", "qom-path": path, "stats": [{"name": "exits", "value": 3}]}]
    samples = parse_stats("vcpu", answer, schema)
    assert samples
    assert all(len(dict(labels)["vcpu"]) == MAX_LABEL_CHARS for _, labels, _ in samples)


def test_identity_and_vnc_texts_are_bounded() -> None:
    version = {"qemu": {"major": 7, "minor": 2, "micro": 0}, "package": "p" * HUGE}
    identity = parse_identity(version, {"name": "n" * HUGE}, {"UUID": "u" * HUGE})
    assert len(identity.name) == len(identity.uuid) == MAX_LABEL_CHARS
    assert identity.name.endswith(CUT_MARKER) and len(identity.package) <= 256
    vnc = parse_vnc({"enabled": True, "host": "h" * HUGE, "service": "5900", "clients": []})
    assert len(vnc.host) <= 256 and vnc.host.endswith(CUT_MARKER)


def huge_blockstats(answer: Any) -> Any:
    async def handler(session: faults.Session, request: dict[str, Any]) -> None:
        await session.reply(request, answer)

    return handler


def test_a_900000_character_block_device_id_keeps_metrics_small(tmp_path) -> None:
    stats = {"rd_bytes": 1, "wr_bytes": 2, "rd_operations": 3, "wr_operations": 4,
             "failed_rd_operations": 0, "invalid_rd_operations": 0}  # fmt: skip
    answer = [{"device": "d" * HUGE, "node-name": "n" * 100, "stats": stats}]
    with faults.MonitorLoop() as loop:
        monitor = loop.start(
            faults.ScriptedMonitor(
                str(tmp_path / "vm.qmp"), handlers={"query-blockstats": huge_blockstats(answer)}
            )
        )
        monitor_config = {"name": "vm", "address": monitor.address, "collectors": ["block"]}
        config = {"poll_interval": "500ms", "monitors": [monitor_config]}
        with ExporterProcess(config, log_level="info") as exporter:
            wait_for(
                lambda: any(n == "qemu_block_read_bytes_total" for n, _ in exporter.samples()),
                15,
                "the block series",
            )
            _, text = exporter.scrape()
    block = {labels for name, labels in parse_samples(text) if name.startswith("qemu_block_")}
    assert block, text[:2000]
    assert all(len(dict(labels)["device"]) == MAX_LABEL_CHARS for labels in block)
    assert len(text.encode()) < 64 << 10, len(text)
