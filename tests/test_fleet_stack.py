"""The fleet recipe of docs/fleet.md, end to end on loopback: three hypervisors, each a
simulated fleet with its exporter and a Prometheus agent that remote_writes to one central
Prometheus (the repo's rules) with a real Alertmanager. About 10 s."""

from __future__ import annotations

import contextlib
import functools
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from tests.helpers.exporter import REPO, ExporterProcess, wait_for
from tests.helpers.ops_stack import alertmanager, alertmanager_alerts, prometheus
from tests.helpers.sim_fleet import simulated_fleet

pytestmark = pytest.mark.prometheus

RULES = REPO / "config" / "qmp-exporter.rules.yml"
#: VMs per simulated hypervisor.
FLEETS = {"hv1": 3, "hv2": 4, "hv3": 5}
#: The hypervisor and VM that get a VNC client.
VNC_HYPERVISOR, VNC_VM = "hv2", "sim-0002"
#: Bound on each wait: 3 exporters, 4 Prometheus and an Alertmanager share 2 cores.
WAIT = 30.0


@contextlib.contextmanager
def controlled_fleet(directory: Path, count: int, seed: int) -> Iterator[Path]:
    """``count`` simulated VMs in ``directory/vms``; yields the fleet's control socket."""
    control = directory / "control.sock"
    with simulated_fleet(directory / "vms", count, "--control", str(control), "--seed", str(seed)):
        yield control


def sim_command(control: Path, line: str) -> str:
    """One line command to a simulated fleet; its one-line answer."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(5)
        sock.connect(str(control))
        sock.sendall(line.encode() + b"\n")
        return sock.makefile().readline().strip()


@contextlib.contextmanager
def prometheus_process(
    workdir: Path, config: dict[str, Any], args: list[str], storage_flag: str
) -> Iterator[str]:
    """A real Prometheus (central or agent) in ``workdir`` on 127.0.0.1; yields its base URL."""
    workdir.mkdir()
    with prometheus(workdir, yaml.safe_dump(config), args=args, storage_flag=storage_flag) as url:
        yield url


def central_config(alertmanager_url: str) -> dict[str, Any]:
    return {
        "global": {"evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "alerting": {
            "alertmanagers": [
                {"static_configs": [{"targets": [alertmanager_url.removeprefix("http://")]}]}
            ]
        },
    }


def agent_config(hypervisor: str, exporter_url: str, central_url: str) -> dict[str, Any]:
    """docs/fleet.md's agent: scrape the local exporter, label it once, remote_write it."""
    return {
        "global": {"scrape_interval": "1s", "external_labels": {"hypervisor": hypervisor}},
        "scrape_configs": [
            {"job_name": "qmp", "static_configs": [{"targets": [exporter_url.split("//")[1]]}]}
        ],
        "remote_write": [
            {
                "url": f"{central_url}/api/v1/write",
                "queue_config": {"batch_send_deadline": "500ms"},
            }
        ],
    }


def exporter_config(sockets: Path, hypervisor: str, alertmanager_url: str) -> dict[str, Any]:
    return {
        "poll_interval": "1s",
        "monitors": [
            {"name": path.stem, "address": f"unix:{path}"} for path in sorted(sockets.glob("*.qmp"))
        ],
        "alerting": {"alertmanagers": [alertmanager_url], "labels": {"hypervisor": hypervisor}},
    }


def query(url: str, promql: str) -> list[dict[str, Any]]:
    response = requests.get(f"{url}/api/v1/query", params={"query": promql}, timeout=5)
    response.raise_for_status()
    result: list[dict[str, Any]] = response.json()["data"]["result"]
    return result


def vms_by_hypervisor(central_url: str) -> dict[str, int]:
    rows = query(central_url, "count by (hypervisor) (qemu_up)")
    return {row["metric"].get("hypervisor", ""): int(float(row["value"][1])) for row in rows}


def by_label(url: str, promql: str, label: str) -> dict[str, float]:
    """A query's result as {value of ``label``: sample value}."""
    return {row["metric"].get(label, ""): float(row["value"][1]) for row in query(url, promql)}


#: (recording rule, the raw query it must equal, the label its series are keyed by).
RECORDED_EQUALS_RAW = [
    ("hypervisor:qemu_vms:count", "count by (hypervisor) (qemu_up)", "hypervisor"),
    ("hypervisor:qemu_vms_up:count", "sum by (hypervisor) (qemu_up)", "hypervisor"),
    ("hypervisor:qemu_vms_running:count", "sum by (hypervisor) (qemu_vm_running)", "hypervisor"),
    ("hypervisor:qemu_vnc_clients:sum", "sum by (hypervisor) (qemu_vnc_clients)", "hypervisor"),
    (":qemu_vms:count", "count(qemu_up)", "hypervisor"),
    (":qemu_vnc_clients:sum", "sum(qemu_vnc_clients)", "hypervisor"),
    ("status:qemu_vms:count", "count by (status) (qemu_vm_status == 1)", "status"),
]


def recorded_equals_raw(url: str, recorded: str, raw: str, label: str) -> dict[str, float]:
    """The recording rule's values when they equal the raw query's (and exist), else {}."""
    values = by_label(url, recorded, label)
    return values if values and values == by_label(url, raw, label) else {}


def alerts_named(alertmanager_url: str, alertname: str) -> list[dict[str, str]]:
    return [alert["labels"] for alert in alertmanager_alerts(alertmanager_url, alertname)]


def test_three_hypervisors_through_agents_into_one_central_prometheus(tmp_path: Path) -> None:
    with contextlib.ExitStack() as stack:
        am_url = stack.enter_context(alertmanager(tmp_path))
        central = stack.enter_context(
            prometheus_process(
                tmp_path / "central",
                central_config(am_url),
                ["--web.enable-remote-write-receiver"],
                "--storage.tsdb.path",
            )
        )
        controls: dict[str, Path] = {}
        for seed, (hypervisor, count) in enumerate(FLEETS.items()):
            home = tmp_path / hypervisor
            home.mkdir()
            controls[hypervisor] = stack.enter_context(controlled_fleet(home, count, seed))
            exporter = stack.enter_context(
                ExporterProcess(exporter_config(home / "vms", hypervisor, am_url), log_level="info")
            )
            stack.enter_context(
                prometheus_process(
                    home / "agent",
                    agent_config(hypervisor, exporter.url, central),
                    ["--enable-feature=agent"],
                    "--storage.agent.path",
                )
            )

        # Every VM of every hypervisor, told apart by the agent's external label alone.
        wait_for(lambda: vms_by_hypervisor(central) == FLEETS, WAIT, "count by (hypervisor)")
        assert query(central, "count(qemu_up)")[0]["value"][1] == str(sum(FLEETS.values()))
        assert alerts_named(am_url, "QemuVncClientConnected") == []

        assert sim_command(controls[VNC_HYPERVISOR], f"vnc_connect {VNC_VM}").startswith("ok ")
        pushed = wait_for(lambda: alerts_named(am_url, "QemuEventVncConnected"), WAIT, "push")
        ruled = wait_for(lambda: alerts_named(am_url, "QemuVncClientConnected"), WAIT, "rule")
        for labels in (*pushed, *ruled):
            assert (labels["hypervisor"], labels["vm"]) == (VNC_HYPERVISOR, VNC_VM), labels
        assert len(pushed) == len(ruled) == 1

        # The fleet recording rules give the raw sums (a rule lags its inputs by one evaluation).
        clients = {"hv1": 0, "hv2": 1, "hv3": 0}
        wait_for(
            lambda: by_label(central, "hypervisor:qemu_vnc_clients:sum", "hypervisor") == clients,
            WAIT, "the VNC client in hypervisor:qemu_vnc_clients:sum",
        )  # fmt: skip
        for recorded, raw, label in RECORDED_EQUALS_RAW:
            same = functools.partial(recorded_equals_raw, central, recorded, raw, label)
            wait_for(same, WAIT, f"{recorded} == {raw}")
        assert by_label(central, "hypervisor:qemu_vms:count", "hypervisor") == FLEETS
