"""Discovery over real unix sockets in a temp dir (and one real QEMU monitor)."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from pathlib import Path

import pytest

from qmp_exporter.config import DiscoveryConfig, MonitorConfig, parse_config
from qmp_exporter.discovery import Discoverer, Scan, scan
from qmp_exporter.host import Host
from tests.helpers.waiting import wait_until


@pytest.fixture
def sockets(tmp_path):
    """Creates listening unix sockets; closes them all at the end."""
    opened: list[socket.socket] = []

    def make(path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(str(path))
        sock.listen(1)
        opened.append(sock)
        return path

    yield make
    for sock in opened:
        sock.close()


def test_scan_finds_only_sockets_and_names_them_by_stem(tmp_path, sockets):
    sockets(tmp_path / "web1.qmp")
    sockets(tmp_path / "db.qmp")
    (tmp_path / "notes.qmp").write_text("a regular file")
    (tmp_path / "sub.qmp").mkdir()
    entry = DiscoveryConfig(glob=f"{tmp_path}/*.qmp", labels=(("site", "lab"),))
    found = scan([entry], [], Host())
    assert found.problems == ()
    assert found.processes is None, "no process scan"
    assert [(m.name, m.address, m.mode, m.labels) for m in found.monitors] == [
        ("db", f"unix:{tmp_path}/db.qmp", "persistent", (("site", "lab"),)),
        ("web1", f"unix:{tmp_path}/web1.qmp", "persistent", (("site", "lab"),)),
    ]


def test_scan_name_template_and_clashes_are_reported(tmp_path, sockets):
    sockets(tmp_path / "a" / "x.qmp")
    sockets(tmp_path / "b" / "x.qmp")
    sockets(tmp_path / "a" / "taken.qmp")
    configured = [MonitorConfig(name="taken", address="unix:/elsewhere.qmp")]
    entries = [
        DiscoveryConfig(glob=f"{tmp_path}/a/*.qmp"),
        DiscoveryConfig(glob=f"{tmp_path}/b/*.qmp"),
        DiscoveryConfig(glob=f"{tmp_path}/b/*.qmp", name="b-{name}"),
        DiscoveryConfig(glob=f"{tmp_path}/a/x*", name="again-{stem}"),
    ]
    found = scan(entries, configured, Host())
    assert [m.name for m in found.monitors] == ["x", "b-x.qmp"]
    assert list(found.problems) == [
        f"discovery[0]: {tmp_path}/a/taken.qmp: name 'taken' is already used by a configured "
        "monitor; not monitored (set a name template)",
        f"discovery[1]: {tmp_path}/b/x.qmp: name 'x' is already used by discovery[0] "
        f"({tmp_path}/a/x.qmp); not monitored (set a name template)",
        f"discovery[3]: {tmp_path}/a/x.qmp: already found by discovery[0]",
    ]


def test_scan_skips_sockets_a_configured_monitor_already_watches(tmp_path, sockets):
    path = sockets(tmp_path / "vm.qmp")
    configured = [MonitorConfig(name="mine", address=f"unix:{path}")]
    found = scan([DiscoveryConfig(glob=f"{tmp_path}/*.qmp")], configured, Host())
    assert found == Scan()


def test_scan_proxmox_layout_sets_vmid_and_poll(tmp_path, sockets, monkeypatch):
    # The Proxmox layout is recognised by its directory; point a real glob there by
    # building the entry as the config parser does for /var/run/qemu-server.
    sockets(tmp_path / "101.qmp")
    sockets(tmp_path / "guest.qmp")
    config = parse_config(
        {"discovery": [{"glob": "/var/run/qemu-server/*.qmp", "name": "pve{vmid}"}]}
    )
    entry = config.discovery[0]
    assert entry.proxmox and entry.mode == "poll"
    entry = DiscoveryConfig(
        glob=f"{tmp_path}/*.qmp", name=entry.name, mode=entry.mode, proxmox=True
    )
    found = scan([entry], [], Host())
    assert [(m.name, m.mode, m.labels) for m in found.monitors] == [
        ("pve101", "poll", (("vmid", "101"),))
    ]
    assert list(found.problems) == [
        f"discovery[0]: {tmp_path}/guest.qmp: not a Proxmox VM socket (expected <vmid>.qmp)"
    ]


def test_rescan_returns_the_discovered_and_reports_problems_once(tmp_path, sockets, caplog):
    configured = {"name": "static", "address": f"{tmp_path}/static.sock"}
    config = parse_config(
        {"monitors": [configured], "discovery": [{"glob": f"{tmp_path}/*.qmp", "rescan": "1s"}]}
    )
    discoverer = Discoverer(config, Host())
    heard: list[Scan] = []
    discoverer.subscribe(type("Listener", (), {"scanned": lambda self, scan: heard.append(scan)})())

    async def scenario() -> list[list[str]]:
        found = []
        sockets(tmp_path / "static.qmp")  # clashes with the configured name
        found.append(await discoverer.rescan())
        found.append(await discoverer.rescan())
        sockets(tmp_path / "new.qmp")
        found.append(await discoverer.rescan())
        os.unlink(tmp_path / "new.qmp")
        found.append(await discoverer.rescan())
        return [[m.name for m in scan.monitors] for scan in found]

    assert asyncio.run(scenario()) == [[], [], ["new"], []]
    assert [[m.name for m in scan.monitors] for scan in heard] == [[], [], ["new"], []], (
        "listeners hear the scan at hand, then each one that differs from the last"
    )
    clash = [r for r in caplog.records if "'static' is already used" in r.getMessage()]
    assert len(clash) == 1, "a lasting problem is logged once, not every rescan"


def test_changes_yields_sockets_added_and_removed_within_one_rescan(tmp_path, sockets):
    seen: list[tuple[float, list[str]]] = []
    config = parse_config({"discovery": [{"glob": f"{tmp_path}/*.qmp", "rescan": "1s"}]})

    async def follow(discoverer: Discoverer) -> None:
        async for found in discoverer.changes():
            seen.append((time.monotonic(), [m.name for m in found.monitors]))

    async def scenario() -> tuple[float, float]:
        task = asyncio.create_task(follow(Discoverer(config, Host())))
        try:
            await asyncio.sleep(0.2)
            created = time.monotonic()
            sockets(tmp_path / "vm1.qmp")
            await wait_until(lambda: seen and seen[-1][1] == ["vm1"], 3.0, context=seen)
            removed = time.monotonic()
            os.unlink(tmp_path / "vm1.qmp")
            await wait_until(lambda: seen[-1][1] == [], 3.0, context=seen)
            return created, removed
        finally:
            task.cancel()

    created, removed = asyncio.run(scenario())
    assert [names for _, names in seen] == [["vm1"], []], "only changes are yielded"
    assert seen[0][0] - created <= 1.5
    assert seen[1][0] - removed <= 1.5


def test_a_reload_scans_once_and_retimes_the_next_scan(tmp_path, sockets, monkeypatch):
    """A reload's own :meth:`Discoverer.rescan` is its one scan: ``changes()`` does not scan
    again for it, and its next scan follows the reloaded ``rescan``."""
    import qmp_exporter.discovery.discoverer as discoverer_module

    sockets(tmp_path / "a.qmp")
    scans: list[float] = []
    real_scan = discoverer_module.scan
    monkeypatch.setattr(
        discoverer_module, "scan", lambda *a: scans.append(time.monotonic()) or real_scan(*a)
    )
    seen: list[list[str]] = []
    config = parse_config({"discovery": [{"glob": f"{tmp_path}/*.qmp", "rescan": "1h"}]})
    discoverer = Discoverer(config, Host())

    async def follow() -> None:
        async for found in discoverer.changes():
            seen.append([m.name for m in found.monitors])

    async def scenario() -> list[str]:
        task = asyncio.create_task(follow())
        await wait_until(lambda: seen == [["a"]], 5.0, context=(seen, scans))
        reloaded = {"glob": f"{tmp_path}/*.qmp", "rescan": "1s", "name": "x-{stem}"}
        discoverer.update_config(parse_config({"discovery": [reloaded]}))
        found = await discoverer.rescan()  # what Exporter._reload does
        await asyncio.sleep(0.3)
        assert len(scans) == 2, "the reload's rescan, and no other"
        # the reloaded 1s, not the old 1h
        await wait_until(lambda: len(scans) == 3, 5.0, context=(seen, scans))
        task.cancel()
        return [m.name for m in found.monitors]

    assert asyncio.run(scenario()) == ["x-a"]
    assert seen == [["a"]], "the reload's scan is not yielded again"
