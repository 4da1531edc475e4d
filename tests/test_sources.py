"""The source contract (``qmp_exporter.fleet.source``), proven with fake sources beside the
real QMP monitor source: a second owning source whose VMs come and go on their own (as a
libvirt connection's domains do), an augmenting source that adds to VMs another owns (as the
guest agent will), and the one precedence rule when two sources name the same VM. What the
fleet shows reaches the renderer of ``/metrics`` through the listener API alone."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from qmp_exporter.config import MonitorConfig
from qmp_exporter.exposition.render import FleetRenderer
from qmp_exporter.fleet.hub import Fleet
from qmp_exporter.fleet.source import Augmentation, AugmentOutput, SourceOutput
from qmp_exporter.fleet.state import VMState
from qmp_exporter.polling.monitors import MonitorSource
from qmp_exporter.polling.poller import PollSettings
from tests.helpers.scripted_monitor import ScriptedMonitor
from tests.helpers.waiting import wait_until

SETTINGS = PollSettings(interval=0.05, timeout=2.0, start_spread=0)
USER_CPU = "qemu_process_cpu_seconds_total"


class Recorder:
    """A fleet listener that writes down what it hears."""

    def __init__(self) -> None:
        self.heard: list[tuple[str, str, VMState | None]] = []

    def added(self, name: str, state: VMState) -> None:
        self.heard.append(("added", name, state))

    def removed(self, name: str) -> None:
        self.heard.append(("removed", name, None))

    def changed(self, name: str, state: VMState, timing_only: bool) -> None:
        self.heard.append(("changed", name, state))


class DomainSource:
    """A fake owning source whose VMs come and go on their own, as libvirt's domains do."""

    def __init__(self, output: SourceOutput) -> None:
        self.output = output
        self.domains: set[str] = set()

    def domain_started(self, name: str, status: str = "running") -> None:
        self.domains.add(name)
        monitor = MonitorConfig(name, f"libvirt:{name}")
        self.output.publish(VMState(monitor, up=True, status=status, running=True), False)

    def domain_gone(self, name: str) -> None:
        self.domains.discard(name)
        self.output.withdraw(name)

    async def close(self) -> None:
        for name in sorted(self.domains):
            self.domain_gone(name)


class AgentSource:
    """A fake augmenting source: what a guest agent would add to VMs others own."""

    def __init__(self, output: AugmentOutput) -> None:
        self.output = output

    def report(self, vm: str, used: float) -> None:
        sample = ("qemu_guest_filesystem_used_bytes", (("mountpoint", "/"),), used)
        self.output.augment(vm, Augmentation((sample,), (("agent", True),)))

    def lost(self, vm: str) -> None:
        self.output.clear(vm)


def state_of(fleet: Fleet, name: str) -> VMState:
    return fleet.states[name]


def test_a_second_owning_source_adds_and_withdraws_vms_on_its_own() -> None:
    fleet = Fleet()
    recorder = Recorder()
    fleet.subscribe(recorder)
    domains = DomainSource(fleet.source("libvirt"))
    domains.domain_started("db")
    domains.domain_started("db", status="paused")
    domains.domain_gone("db")
    assert [(kind, name) for kind, name, _ in recorder.heard] == [
        ("added", "db"),
        ("changed", "db"),
        ("removed", "db"),
    ]
    assert recorder.heard[1][2] is not None and recorder.heard[1][2].status == "paused"
    assert "db" not in fleet.states


def test_the_first_source_wins_a_clash_and_the_other_shows_when_it_withdraws(caplog) -> None:
    fleet = Fleet()
    first = DomainSource(fleet.source("qmp"))
    second = DomainSource(fleet.source("libvirt"))
    recorder = Recorder()
    fleet.subscribe(recorder)
    second.domain_started("web", status="paused")
    assert state_of(fleet, "web").status == "paused"
    with caplog.at_level(logging.WARNING):
        first.domain_started("web", status="running")
        first.domain_started("web", status="running")
        second.domain_started("web", status="suspended")  # unseen: the first source shows
    assert state_of(fleet, "web").status == "running"
    clashes = [r for r in caplog.records if "named by both qmp and libvirt" in r.getMessage()]
    assert len(clashes) == 1, "logged once"
    first.domain_gone("web")
    assert state_of(fleet, "web").status == "suspended", "the other source's latest shows"
    second.domain_gone("web")
    assert "web" not in fleet.states
    kinds = [kind for kind, name, _ in recorder.heard]
    assert kinds == ["added", "changed", "changed", "changed", "removed"], kinds


def test_an_augmenting_source_adds_to_a_vm_another_owns_and_waits_for_one() -> None:
    fleet = Fleet()
    domains = DomainSource(fleet.source("libvirt"))
    agents = AgentSource(fleet.augmenter("agent"))
    recorder = Recorder()
    fleet.subscribe(recorder)
    agents.report("db", 10.0)  # no VM "db" yet: waits, unseen
    assert recorder.heard == [] and "db" not in fleet.states
    domains.domain_started("db")
    db = state_of(fleet, "db")
    assert db.samples == (("qemu_guest_filesystem_used_bytes", (("mountpoint", "/"),), 10.0),)
    assert db.collector_results == (("agent", True),)
    agents.report("db", 10.0)  # the same again: nothing to tell
    assert len(recorder.heard) == 1
    agents.report("db", 20.0)
    assert state_of(fleet, "db").samples[0][2] == 20.0
    domains.domain_gone("db")  # the augmentation stays for the VM's return
    domains.domain_started("db")
    assert state_of(fleet, "db").samples[0][2] == 20.0
    agents.lost("db")
    assert state_of(fleet, "db").samples == ()
    assert [kind for kind, _, _ in recorder.heard] == [
        "added",
        "changed",
        "removed",
        "added",
        "changed",
    ]


def test_what_the_fleet_shows_reaches_the_renderer(tmp_path: Path) -> None:
    """A QMP monitor and a second source's VM side by side in one exposition, an augmenting
    source's figure inside its VM's family, through the listener API alone."""

    async def scenario() -> tuple[str, bytes]:
        async with ScriptedMonitor(str(tmp_path / "vm.qmp")) as monitor:
            fleet = Fleet()
            renderer = FleetRenderer()
            fleet.subscribe(renderer)
            qmp = MonitorSource(fleet.source("qmp"), SETTINGS)
            domains = DomainSource(fleet.source("libvirt"))
            agents = fleet.augmenter("agent")
            await qmp.apply([MonitorConfig("vm", monitor.address)])
            domains.domain_started("vm", status="paused")  # the same VM: QMP's is shown
            domains.domain_started("lv")
            sample = (USER_CPU, (("mode", "user"),), 7.0)
            agents.augment("vm", Augmentation((sample,)))
            await wait_until(lambda: fleet.states["vm"].up)
            body = b"".join(renderer.chunks()).decode()
            await qmp.close()
            await domains.close()
            return body, b"".join(renderer.chunks())

    text, after = asyncio.run(scenario())
    assert 'qemu_up{vm="vm"} 1\n' in text and 'qemu_up{vm="lv"} 1\n' in text
    assert text.count('qemu_up{vm="vm"}') == 1, "one VM, one series, however many sources"
    assert 'qemu_vm_status{vm="vm",status="running"} 1\n' in text, "QMP's state is shown"
    assert f'{USER_CPU}{{vm="vm",mode="user"}} 7\n' in text
    assert after == b"", "every VM withdrawn when its sources close"
