"""A tap's counters over rtnetlink against the kernel's sysfs files for a real tap (root, as
the other tap tests), its answers of every kind, and the collector's fallback to sysfs where
rtnetlink cannot serve."""

from __future__ import annotations

import errno
import socket
import struct
import time
from pathlib import Path

import pytest

from qmp_exporter.collectors import linkstats
from qmp_exporter.collectors.host import HostCollector
from qmp_exporter.collectors.hostproc import GONE, MALFORMED, HeldFiles, ReadError
from qmp_exporter.collectors.linkstats import (
    HOST_STATS,
    LinkStats,
    interface_index,
    link_stats,
    sysfs_counters,
)
from tests.helpers.procfs import FakeProcess, make_host
from tests.helpers.taps import persistent_tap

#: A broadcast frame of an experimental EtherType, from a locally administered address.
FRAME = b"\xff" * 6 + b"\x02\x00\x00\x00\x00\x01" + b"\x88\xb5" + b"x" * 60


def send_frames(tap: str, count: int) -> None:
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as sender:
        sender.bind((tap, 0))
        for _ in range(count):
            sender.send(FRAME)


def settled(tap: str) -> dict[str, int]:
    """The tap's sysfs counters once two reads agree (frames still in flight move them)."""
    files = HeldFiles()
    deadline = time.monotonic() + 5
    last = sysfs_counters(tap, files)
    while time.monotonic() < deadline:
        now = sysfs_counters(tap, files)
        if now == last:
            return dict(zip(HOST_STATS, now, strict=True))
        last = now
    raise AssertionError(f"{tap}: counters kept moving")


def test_rtnetlink_gives_what_sysfs_gives_for_a_real_tap():
    with persistent_tap() as tap:
        send_frames(tap, 5)  # no reader on the tap: the host side's tx counts them as dropped
        expected = settled(tap)
        got = dict(zip(HOST_STATS, LinkStats().read(interface_index(tap)), strict=True))
        assert got == expected
        assert got["tx_packets"] + got["tx_dropped"] >= 5


def test_an_interface_that_is_not_there_is_gone():
    reader = LinkStats()
    with pytest.raises(ReadError) as caught:
        reader.read(2**31 - 1)
    assert caught.value.reason == GONE
    with pytest.raises(ReadError) as caught:
        interface_index("qhnosuchtap")
    assert caught.value.reason == GONE


def message(kind: int, sequence: int, payload: bytes) -> bytearray:
    return bytearray(struct.pack("=IHHII", 16 + len(payload), kind, 0, sequence, 0) + payload)


def test_answers_it_cannot_use_are_malformed_or_the_kernels_error():
    stats_msg = struct.pack("=BBHII", 0, 0, 0, 7, 1)
    counters = struct.pack("=8Q", *range(1, 9))
    good = message(92, 1, stats_msg + struct.pack("=HH", 4 + len(counters), 1) + counters)
    assert linkstats._answer(good, len(good), 7) == tuple(range(1, 9))
    cases = {
        "an error": (message(2, 1, struct.pack("=i", -errno.ENODEV)), GONE),
        "another kind": (message(16, 1, stats_msg), MALFORMED),
        "no statistics": (message(92, 1, stats_msg), MALFORMED),
        "statistics cut short": (message(92, 1, stats_msg + struct.pack("=HH", 12, 1) + b"\0" * 8),
                                 MALFORMED),
        "a zero-length attribute": (message(92, 1, stats_msg + struct.pack("=HH", 0, 1)),
                                    MALFORMED),
    }  # fmt: skip
    for what, (answer, reason) in cases.items():
        with pytest.raises(ReadError) as caught:
            linkstats._answer(answer, len(answer), 7)
        assert caught.value.reason == reason, what


def test_without_rtnetlink_the_collector_reads_the_same_from_sysfs(tmp_path, monkeypatch, caplog):
    with persistent_tap() as tap:
        send_frames(tap, 3)
        settled(tap)
        process = FakeProcess(pid=4321, taps={tap: {}})
        proc, _ = make_host(tmp_path, [process])
        by_netlink = HostCollector(None, process.pid, proc_root=proc, sys_root="/sys").read(())
        assert link_stats() is not None

        def refused() -> None:
            raise OSError(errno.EAFNOSUPPORT, "Address family not supported by protocol")

        monkeypatch.setattr(linkstats, "_local", type(linkstats._local)())
        monkeypatch.setattr(linkstats, "_unavailable", [])
        monkeypatch.setattr(linkstats.LinkStats, "__init__", lambda self: refused())
        with caplog.at_level("INFO"):
            by_sysfs = HostCollector(None, process.pid, proc_root=proc, sys_root="/sys").read(())
            assert link_stats() is None
        assert [r for r in caplog.records if "rtnetlink cannot serve" in r.getMessage()]
    network = sorted(s for s in by_netlink if s[0].startswith("qemu_network_"))
    assert len(network) == 8
    assert network == sorted(s for s in by_sysfs if s[0].startswith("qemu_network_"))


def test_the_fixtures_sysfs_is_read_as_sysfs(tmp_path):
    process = FakeProcess(pid=4321, taps={"vnet7": {"tx_bytes": 1500}})
    proc, sys = make_host(tmp_path, [process])
    assert Path(sys) != Path("/sys")
    samples = HostCollector(None, process.pid, proc_root=proc, sys_root=sys).read(())
    labels = (("interface", "vnet7"),)
    assert ("qemu_network_receive_bytes_total", labels, 1500) in samples
