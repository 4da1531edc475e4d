"""The real stack: QEMUs -> exporter -> Prometheus (config/prometheus.yml + the rule file, 1 s
intervals) -> Alertmanager. A real VNC login makes QemuVncClientConnected fire, and every
dashboard query returns data."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from qmp_exporter.collectors import DEFAULT_COLLECTORS
from tests.helpers.exporter import ExporterProcess, wait_for
from tests.helpers.ops_stack import alertmanager, alertmanager_alerts, prometheus, require_binary
from tests.helpers.qemu import QemuVM
from tests.helpers.qemu_versions import QemuBuild
from tests.helpers.rfb import rfb_handshake
from tests.helpers.taps import persistent_tap, tap_args

pytestmark = [pytest.mark.prometheus, pytest.mark.qemu]

REPO = Path(__file__).resolve().parent.parent
PROMETHEUS_YML = REPO / "config" / "prometheus.yml"
RULES = REPO / "config" / "qmp-exporter.rules.yml"
DASHBOARD = REPO / "grafana" / "qmp-exporter.json"
#: What Grafana would put in for the dashboard's variables in these queries.
GRAFANA_VARIABLES = {
    "$__rate_interval": "15s",
    "$__range": "1h",
    "$hypervisor": ".*",
    "$instance": ".*",
    "$vm": ".*",
}


@dataclass
class Stack:
    prometheus: str
    alertmanager: str
    exporter: ExporterProcess
    vnc_vm: str
    other_vm: str


def prometheus_config(exporter_target: str, alertmanager_target: str, tmp_path: Path) -> str:
    """config/prometheus.yml with 1 s intervals, the exporter as its file_sd target, and the
    test's Alertmanager."""
    config = yaml.safe_load(PROMETHEUS_YML.read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["alerting"]["alertmanagers"][0]["static_configs"] = [{"targets": [alertmanager_target]}]
    (job,) = config["scrape_configs"]
    job.update(scrape_interval="1s", scrape_timeout="1s")
    del job["static_configs"]  # the example hypervisors do not exist
    job["file_sd_configs"][0]["refresh_interval"] = "1s"
    (tmp_path / "file_sd").mkdir()
    (tmp_path / "file_sd" / "qmp-exporter-test.yml").write_text(
        yaml.safe_dump([{"targets": [exporter_target], "labels": {"datacenter": "test"}}])
    )
    return yaml.safe_dump(config)


def query(prometheus_url: str, expr: str) -> list[dict[str, Any]]:
    response = requests.get(f"{prometheus_url}/api/v1/query", params={"query": expr}, timeout=5)
    body = response.json()
    assert body.get("status") == "success", f"{expr}: {body}"
    return body["data"]["result"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, qemu_binary: QemuBuild) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("stack")
    with contextlib.ExitStack() as cleanup:
        am_url = cleanup.enter_context(alertmanager(tmp))
        tap = cleanup.enter_context(persistent_tap())  # for the Resources row's network
        vnc_vm = QemuVM(
            name="vm-vnc", vnc=True, build=qemu_binary, machine="pc", extra_args=tap_args(tap)
        )
        cleanup.callback(vnc_vm.close)
        vnc_vm.start()
        other_vm = QemuVM(name="vm-prelaunch", vnc=True, paused=True, build=qemu_binary)
        cleanup.callback(other_vm.close)
        other_vm.start()
        exporter = ExporterProcess(
            {
                "poll_interval": "500ms",
                "monitors": [
                    {
                        "name": vnc_vm.name,
                        "address": vnc_vm.qmp_address(),
                        "labels": {"team": "web"},
                        "collectors": list(DEFAULT_COLLECTORS),
                    },
                    {"name": other_vm.name, "address": other_vm.qmp_address()},
                ],
                "alerting": {"alertmanagers": [am_url]},
            }
        )
        exporter.start()
        cleanup.callback(exporter.stop)
        wait_for(
            lambda: (
                exporter.value("qemu_vnc_enabled", vm=vnc_vm.name) == 1
                and exporter.value("qemu_vm_status", vm=other_vm.name, status="prelaunch") == 1
            ),
            15,
            "exporter sees both VMs",
        )
        prom_dir = tmp / "prometheus"
        prom_dir.mkdir()
        prom_url = cleanup.enter_context(
            prometheus(
                prom_dir,
                prometheus_config(f"127.0.0.1:{exporter.port}", am_url.split("//")[1], prom_dir),
                [RULES],
            )
        )
        # Two scrapes see the VNC counter at 0 before the connection (as after a restart).
        wait_for(
            lambda: query(
                prom_url,
                f'count_over_time(qemu_events_total{{event="VNC_CONNECTED",vm="{vnc_vm.name}"}}[1m])'
                " >= 2",
            ),
            20,
            "Prometheus scraped the exporter twice",
        )
        vnc = rfb_handshake(vnc_vm.vnc_port)
        cleanup.callback(vnc.close)
        yield Stack(prom_url, am_url, exporter, vnc_vm.name, other_vm.name)


def _firing(stack: Stack) -> list[dict[str, Any]]:
    response = requests.get(f"{stack.prometheus}/api/v1/alerts", timeout=5)
    return [a for a in response.json()["data"]["alerts"] if a["state"] == "firing"]


def test_vnc_alert_fires_after_a_real_vnc_connection(stack: Stack) -> None:
    alerts = wait_for(
        lambda: [a for a in _firing(stack) if a["labels"]["alertname"] == "QemuVncClientConnected"],
        20,
        "QemuVncClientConnected firing",
    )
    assert [a["labels"]["vm"] for a in alerts] == [stack.vnc_vm]
    labels = alerts[0]["labels"]
    assert labels["job"] == "qmp-exporter"
    assert labels["instance"] == f"127.0.0.1:{stack.exporter.port}"
    assert labels["datacenter"] == "test"  # from the file_sd target
    assert labels["severity"] == "warning"
    assert alerts[0]["annotations"]["summary"] == f"VNC client connected to VM {stack.vnc_vm}"
    # ... and Prometheus delivered it to Alertmanager.
    delivered = wait_for(
        lambda: alertmanager_alerts(stack.alertmanager, "QemuVncClientConnected"),
        15,
        "alert in Alertmanager",
    )
    assert delivered[0]["labels"]["vm"] == stack.vnc_vm


def test_no_other_alert_fires(stack: Stack) -> None:
    wait_for(lambda: _firing(stack), 20, "an alert firing")
    assert {a["labels"]["alertname"] for a in _firing(stack)} == {"QemuVncClientConnected"}


def test_exporter_pushes_the_vnc_login_to_alertmanager_at_once(stack: Stack) -> None:
    """The exporter's own push (not Prometheus): needs AlertPusher wired into the app."""
    pushed = wait_for(
        lambda: alertmanager_alerts(stack.alertmanager, "QemuEventVncConnected"),
        10,
        "QemuEventVncConnected in Alertmanager (is AlertPusher wired into qmp_exporter/app.py?)",
    )
    assert pushed[0]["labels"] == {
        "alertname": "QemuEventVncConnected",
        "vm": stack.vnc_vm,
        "event": "VNC_CONNECTED",
        "team": "web",
    }
    assert pushed[0]["annotations"]["client_host"] == "127.0.0.1"
    sent = stack.exporter.value("qmp_exporter_alerts_sent_total", alertmanager=stack.alertmanager)
    assert sent == 1


def _dashboard_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            queries.append((f"{panel['title']} ({target['refId']})", expr))
    return queries


def test_every_dashboard_query_returns_data(stack: Stack) -> None:
    queries = _dashboard_queries()
    assert len(queries) > 15
    empty: dict[str, str] = {}
    deadline = time.monotonic() + 20  # recording rules need a few evaluations
    while True:
        empty = {title: expr for title, expr in queries if not query(stack.prometheus, expr)}
        if not empty or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert empty == {}, "dashboard queries without data"
    # The VNC panels show this VM's connection, not just any series.
    connected_now = query(stack.prometheus, 'qemu_vnc_clients{vm=~".*"} > 0')
    assert [r["metric"]["vm"] for r in connected_now] == [stack.vnc_vm]
    states = query(stack.prometheus, "sum by (status) (job_status:qemu_vm_status:count)")
    assert {r["metric"]["status"]: r["value"][1] for r in states} == {
        "running": "1",
        "prelaunch": "1",
    }


def test_dashboard_variables_list_the_vms(stack: Stack) -> None:
    def values(label: str, match: str) -> list[str]:
        response = requests.get(
            f"{stack.prometheus}/api/v1/label/{label}/values", params={"match[]": match}, timeout=5
        )
        return response.json()["data"]

    assert values("vm", "qemu_up") == sorted([stack.vnc_vm, stack.other_vm])
    assert values("instance", "qmp_exporter_build_info") == [f"127.0.0.1:{stack.exporter.port}"]


def test_example_prometheus_config_is_valid(tmp_path: Path) -> None:
    promtool = require_binary("promtool")
    shutil.copy(PROMETHEUS_YML, tmp_path)
    shutil.copy(RULES, tmp_path)
    shutil.copytree(REPO / "config" / "file_sd", tmp_path / "file_sd")
    result = subprocess.run(
        [promtool, "check", "config", "prometheus.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout
    targets = yaml.safe_load((REPO / "config" / "file_sd" / "qmp-exporter.yml").read_text())
    assert targets[0]["targets"]


def test_vnc_port_is_the_one_connected(stack: Stack) -> None:
    """Sanity: the exporter reports exactly one VNC client on the VM the test logged in to."""
    assert stack.exporter.value("qemu_vnc_clients", vm=stack.vnc_vm) == 1
    assert stack.exporter.value("qemu_vnc_clients", vm=stack.other_vm) == 0
