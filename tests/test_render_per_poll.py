"""The renderer caches each family as bytes and rebuilds only what changed: the exposition is
always the same as rendering every family in order without any cache, and a poll that changes
nothing but its timing reuses every other family's bytes."""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import zlib

from qmp_exporter.config import MonitorConfig
from qmp_exporter.exposition.render import (
    PER_POLL_FAMILIES,
    FleetRenderer,
    all_families,
    vm_lines,
)
from qmp_exporter.polling.fleet import Fleet
from qmp_exporter.polling.poller import MonitorPoller, PollSettings
from qmp_exporter.polling.state import Identity, VMState, VncState
from qmp_exporter.qmp import Event


def reference_body(fleet: Fleet) -> bytes:
    """Every family in order (the per-poll ones last), every VM's lines: the exposition
    without any caching."""
    fragments = [vm_lines(poller) for poller in fleet.pollers.values()]
    parts = []
    families = all_families()
    ordered = [f for f in families if f.name not in PER_POLL_FAMILIES] + [
        f for f in families if f.name in PER_POLL_FAMILIES
    ]
    for family in ordered:
        texts = [f[family.name] for f in fragments if family.name in f]
        if texts:
            parts.append(family.header())
            parts.extend(texts)
    return "".join(parts).encode()


def make_fleet(count: int) -> Fleet:
    fleet = Fleet(PollSettings())
    for index in range(count):
        monitor = MonitorConfig(name=f"vm-{index}", address=f"unix:/nonexistent/{index}.qmp")
        poller = MonitorPoller(monitor, fleet.settings, on_change=fleet._vm_changed)
        fleet.pollers[monitor.name] = poller
        poller.connections = 1
        poller._succeeded(
            VMState(
                up=True,
                identity=Identity("7.2.22", "pkg", f"vm-{index}", "uuid"),
                status="running",
                running=True,
                vnc=VncState(True, "127.0.0.1", "5900", "ipv4", "none", 0),
                samples=(("qemu_memory_base_bytes", (), 1024.0),),
                collector_results=(("memory", True),),
                last_success=1700000000.5,
                last_poll=1700000000.5,
            ),
            0.002,
        )
    fleet.membership += 1
    return fleet


def repoll(poller: MonitorPoller, **changes: object) -> None:
    state = poller.state
    poller._succeeded(
        dataclasses.replace(
            state, last_success=state.last_success + 5, last_poll=state.last_poll + 5, **changes
        ),
        state.poll_duration * 1.5,
    )


def test_same_exposition_and_stable_chunks_reused_after_a_poll() -> None:
    async def scenario() -> None:
        fleet = make_fleet(5)
        renderer = FleetRenderer(fleet)
        assert renderer.body() == reference_body(fleet)
        assert gzip.decompress(renderer.gzipped()) == renderer.body()
        assert gzip.decompress(renderer.gzipped(b"# own\n")) == renderer.body() + b"# own\n"
        # One gzip member, not several: readers that stop after the first get everything.
        single = zlib.decompressobj(31)
        assert single.decompress(renderer.gzipped(b"x\n")) == renderer.body() + b"x\n"
        assert single.eof and single.unused_data == b""
        stable_before = {n: c for n, c in renderer._chunks.items() if n not in PER_POLL_FAMILIES}

        poller = fleet.pollers["vm-3"]
        changes: list[bool] = []
        fleet.listeners.append(lambda changed, stable: changes.append(stable))
        repoll(poller)  # only per-poll values change
        assert changes == [False]
        body = renderer.body()
        assert body == reference_body(fleet)
        assert b'qmp_exporter_poll_duration_seconds{vm="vm-3"} 0.003' in body
        stable_after = {n: c for n, c in renderer._chunks.items() if n not in PER_POLL_FAMILIES}
        assert stable_after.keys() == stable_before.keys()
        assert all(stable_after[n] is stable_before[n] for n in stable_before)
        assert gzip.decompress(renderer.gzipped()) == body

        repoll(poller, status="paused", running=False)  # a real change
        assert changes == [False, True]
        body = renderer.body()
        assert body == reference_body(fleet)
        assert b'qemu_vm_status{vm="vm-3",status="paused"} 1' in body
        assert gzip.decompress(renderer.gzipped()) == body

        poller._event(Event("VNC_CONNECTED"))  # counters are stable lines too
        assert renderer.body() == reference_body(fleet)
        assert b'qemu_events_total{vm="vm-3",event="VNC_CONNECTED"} 1' in renderer.body()

        del fleet.pollers["vm-0"]
        fleet.membership += 1
        assert renderer.body() == reference_body(fleet)
        assert b'vm="vm-0"' not in renderer.body()

    asyncio.run(scenario())
