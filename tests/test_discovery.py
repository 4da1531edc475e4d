"""Discovery over real unix sockets in a temp dir (and one real QEMU monitor)."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from pathlib import Path

import pytest

from qmp_exporter.config import DiscoveryConfig, MonitorConfig, parse_config
from qmp_exporter.polling.discovery import Discoverer, scan


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
    found, problems = scan([entry], [])
    assert problems == []
    assert [(m.name, m.address, m.mode, m.labels) for m in found] == [
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
    found, problems = scan(entries, configured)
    assert [m.name for m in found] == ["x", "b-x.qmp"]
    assert problems == [
        f"discovery[0]: {tmp_path}/a/taken.qmp: name 'taken' is already used by a configured "
        "monitor; not monitored (set a name template)",
        f"discovery[1]: {tmp_path}/b/x.qmp: name 'x' is already used by discovery[0] "
        f"({tmp_path}/a/x.qmp); not monitored (set a name template)",
        f"discovery[3]: {tmp_path}/a/x.qmp: already found by discovery[0]",
    ]


def test_scan_skips_sockets_a_configured_monitor_already_watches(tmp_path, sockets):
    path = sockets(tmp_path / "vm.qmp")
    configured = [MonitorConfig(name="mine", address=f"unix:{path}")]
    found, problems = scan([DiscoveryConfig(glob=f"{tmp_path}/*.qmp")], configured)
    assert (found, problems) == ([], [])


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
    found, problems = scan([entry], [])
    assert [(m.name, m.mode, m.labels) for m in found] == [("pve101", "poll", (("vmid", "101"),))]
    assert problems == [
        f"discovery[0]: {tmp_path}/guest.qmp: not a Proxmox VM socket (expected <vmid>.qmp)"
    ]


def test_rescan_returns_the_discovered_and_reports_problems_once(tmp_path, sockets, caplog):
    configured = {"name": "static", "address": f"{tmp_path}/static.sock"}
    config = parse_config(
        {"monitors": [configured], "discovery": [{"glob": f"{tmp_path}/*.qmp", "rescan": "1s"}]}
    )
    discoverer = Discoverer(config)

    async def scenario() -> list[list[str]]:
        found = []
        sockets(tmp_path / "static.qmp")  # clashes with the configured name
        found.append(await discoverer.rescan())
        found.append(await discoverer.rescan())
        sockets(tmp_path / "new.qmp")
        found.append(await discoverer.rescan())
        os.unlink(tmp_path / "new.qmp")
        found.append(await discoverer.rescan())
        return [[m.name for m in monitors] for monitors in found]

    assert asyncio.run(scenario()) == [[], [], ["new"], []]
    assert discoverer.discovered == ()
    clash = [r for r in caplog.records if "'static' is already used" in r.getMessage()]
    assert len(clash) == 1, "a lasting problem is logged once, not every rescan"


def test_changes_yields_sockets_added_and_removed_within_one_rescan(tmp_path, sockets):
    seen: list[tuple[float, list[str]]] = []
    config = parse_config({"discovery": [{"glob": f"{tmp_path}/*.qmp", "rescan": "1s"}]})

    async def follow(discoverer: Discoverer) -> None:
        async for monitors in discoverer.changes():
            seen.append((time.monotonic(), [m.name for m in monitors]))

    async def scenario() -> tuple[float, float]:
        task = asyncio.create_task(follow(Discoverer(config)))
        try:
            await asyncio.sleep(0.2)
            created = time.monotonic()
            sockets(tmp_path / "vm1.qmp")
            await wait_for(lambda: seen and seen[-1][1] == ["vm1"])
            removed = time.monotonic()
            os.unlink(tmp_path / "vm1.qmp")
            await wait_for(lambda: seen[-1][1] == [])
            return created, removed
        finally:
            task.cancel()

    async def wait_for(condition, limit: float = 3.0) -> None:
        deadline = time.monotonic() + limit
        while not condition():
            assert time.monotonic() < deadline, seen
            await asyncio.sleep(0.05)

    created, removed = asyncio.run(scenario())
    assert [names for _, names in seen] == [["vm1"], []], "only changes are yielded"
    assert seen[0][0] - created <= 1.5
    assert seen[1][0] - removed <= 1.5


def test_update_config_rescans_at_once(tmp_path, sockets):
    sockets(tmp_path / "a.qmp")
    seen: list[list[str]] = []
    config = parse_config({"discovery": [{"glob": f"{tmp_path}/*.qmp", "rescan": "1h"}]})
    discoverer = Discoverer(config)

    async def follow() -> None:
        async for monitors in discoverer.changes():
            seen.append([m.name for m in monitors])

    async def scenario() -> None:
        task = asyncio.create_task(follow())
        await wait_until(lambda: seen == [["a"]])
        discoverer.update_config(
            parse_config(
                {"discovery": [{"glob": f"{tmp_path}/*.qmp", "rescan": "1h", "name": "x-{stem}"}]}
            )
        )
        await wait_until(lambda: len(seen) == 2)
        task.cancel()

    async def wait_until(condition, limit: float = 3.0) -> None:
        deadline = time.monotonic() + limit
        while not condition():
            assert time.monotonic() < deadline, seen
            await asyncio.sleep(0.02)

    asyncio.run(scenario())
    assert seen == [["a"], ["x-a"]]
