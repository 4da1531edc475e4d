"""The Grafana dashboard: importable JSON, its variables and panels, and every query names only
metrics that a real exporter serves (checked against a real scrape with a real QEMU).
tests/test_prometheus_stack.py runs each query on a real Prometheus."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from qmp_exporter.collectors import DEFAULT_COLLECTORS
from tests.helpers.exporter import ExporterProcess, wait_for
from tests.helpers.ops_stack import promql_metric_names
from tests.helpers.qemu import QemuVM
from tests.helpers.taps import persistent_tap, tap_args

REPO = Path(__file__).resolve().parent.parent
DASHBOARD = REPO / "grafana" / "qmp-exporter.json"
RULES = REPO / "config" / "qmp-exporter.rules.yml"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def _dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def _panels() -> list[dict]:
    return [panel for panel in _dashboard()["panels"] if panel["type"] != "row"]


def _exprs() -> list[str]:
    return [target["expr"] for panel in _panels() for target in panel["targets"]]


def _recording_rules() -> dict[str, str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {r["record"]: r["expr"] for g in groups for r in g["rules"] if "record" in r}


def test_dashboard_is_importable_json() -> None:
    dashboard = _dashboard()
    assert dashboard["uid"] == "qmp-exporter"
    assert dashboard["title"]
    assert isinstance(dashboard["schemaVersion"], int)
    assert "id" not in dashboard or dashboard["id"] is None  # import assigns the id
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_datasource_and_vm_variables() -> None:
    variables = {v["name"]: v for v in _dashboard()["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    vm = variables["vm"]
    assert vm["type"] == "query"
    assert vm["multi"] and vm["includeAll"] and vm["allValue"] == ".*"
    assert vm["query"]["query"].startswith("label_values(qemu_up")
    assert vm["datasource"] == DATASOURCE
    assert variables["instance"]["query"]["query"].startswith(
        "label_values(qmp_exporter_build_info"
    )
    hypervisor = variables["hypervisor"]
    assert hypervisor["query"]["query"] == "label_values(qemu_up, hypervisor)"
    assert hypervisor["multi"] and hypervisor["includeAll"] and hypervisor["allValue"] == ".*"
    assert 'hypervisor=~"$hypervisor"' in vm["query"]["query"]


def test_sections() -> None:
    rows = [panel["title"] for panel in _dashboard()["panels"] if panel["type"] == "row"]
    assert rows == ["Fleet overview", "VNC", "Events", "Exporter health", "Resources"]
    titles = {panel["title"] for panel in _panels()}
    for wanted in ("VMs up", "VMs by run state", "VMs by QEMU version", "VNC connections"):
        assert wanted in titles
    assert {"Connected now", "QMP events", "Poll errors", "Data age"} <= titles


def test_every_panel_uses_the_datasource_variable() -> None:
    for panel in _panels():
        assert panel["datasource"] == DATASOURCE, panel["title"]
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]
            assert target["expr"].strip(), panel["title"]


def test_panels_fit_the_grid_without_overlap() -> None:
    taken: set[tuple[int, int]] = set()
    for panel in _dashboard()["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        cells = {
            (x, y)
            for x in range(pos["x"], pos["x"] + pos["w"])
            for y in range(pos["y"], pos["y"] + pos["h"])
        }
        assert not cells & taken, f"{panel['title']} overlaps another panel"
        taken |= cells


def test_per_vm_queries_follow_the_variables() -> None:
    """Raw qemu_* queries filter on $vm; fleet-wide panels use recording rules instead."""
    records = _recording_rules()
    for expr in _exprs():
        names = promql_metric_names(expr)
        if names <= set(records):
            continue
        if any(name.startswith("qemu_") for name in names):
            assert 'vm=~"$vm"' in expr, expr
        assert 'instance=~"$instance"' in expr, expr


def test_every_query_follows_the_hypervisor_variable() -> None:
    for expr in _exprs():
        assert 'hypervisor=~"$hypervisor"' in expr, expr


#: Most series one target may draw: topk/bottomk(k, ...) draws k; an aggregation without
#: grouping (or `... or vector(0)` of one) draws 1; one grouped only by QEMU's run state draws
#: at most the 16 RunState values.
RUN_STATES = 16
MAX_SERIES_PER_PANEL = 20


def _series_bound(expr: str) -> int | None:
    """The most series `expr` can return whatever the fleet's size, or None if unbounded."""
    expr = expr.strip()
    top = re.fullmatch(r"(?:topk|bottomk)\(\s*(\d+)\s*,.*\)", expr, re.S)
    if top:
        return int(top.group(1))
    if re.fullmatch(r"(?:sum|count|max|min|avg)\s*\(.*\)(?:\s*or\s+vector\(0\))?", expr, re.S):
        return 1
    if re.fullmatch(r"(?:sum|count)\s+by\s*\(\s*status\s*\)\s*\(.*\)", expr, re.S):
        return RUN_STATES
    return None


def test_no_panel_draws_more_than_20_series() -> None:
    """At 100 hypervisors x 100 VMs a panel stays readable: each target is bounded by its
    outermost operation (topk/bottomk(k, ...) -> k; sum/count/... without `by` -> 1; a count
    or sum by run state -> 16; anything else, e.g. a raw per-VM selector or `sum by (vm)`,
    is unbounded) and a panel's targets together draw at most 20 series."""
    for panel in _panels():
        bounds = [_series_bound(target["expr"]) for target in panel["targets"]]
        assert None not in bounds, f"{panel['title']}: unbounded query"
        assert sum(b for b in bounds if b is not None) <= MAX_SERIES_PER_PANEL, panel["title"]


def test_series_bound_rejects_per_vm_queries() -> None:
    assert _series_bound('sum by (vm) (rate(qemu_vcpu_cpu_seconds_total{vm=~"$vm"}[1m]))') is None
    assert _series_bound('qemu_vm_info{vm=~"$vm"}') is None
    assert _series_bound("sum by (vm) (a) or topk(3, b)") is None
    assert _series_bound("topk(10, sum by (vm) (a))") == 10


def test_recording_rules_used_by_the_dashboard_exist() -> None:
    records = _recording_rules()
    used = {name for expr in _exprs() for name in promql_metric_names(expr) if ":" in name}
    assert used
    assert used <= set(records)


@pytest.mark.qemu
def test_queries_name_only_metrics_a_real_exporter_serves(
    qemu_factory: Callable[..., QemuVM],
) -> None:
    with persistent_tap() as tap:  # the host view's network figures need a tap
        vm = qemu_factory(name="vm-scrape", vnc=True, machine="pc", extra_args=tap_args(tap))
        exporter = ExporterProcess(
            {
                "poll_interval": "500ms",
                "monitors": [
                    {
                        "name": vm.name,
                        "address": vm.qmp_address(),
                        "collectors": list(DEFAULT_COLLECTORS),
                    }
                ],
                "alerting": {"alertmanagers": ["http://127.0.0.1:9"]},
            }
        )
        with exporter:
            ready = f'qemu_network_receive_bytes_total{{vm="{vm.name}",interface="{tap}"}}'
            wait_for(lambda: ready in exporter.text(), 15)
            text = exporter.text()
    served = {s.name for f in text_string_to_metric_families(text) for s in f.samples}
    records = _recording_rules()
    used = {name for expr in _exprs() for name in promql_metric_names(expr)}
    assert used - set(records) - served == set(), (
        "dashboard names metrics the exporter does not serve"
    )
    for record, expr in records.items():
        # the fleet totals sum the per-hypervisor records
        assert promql_metric_names(expr) - served - set(records) == set(), record
    groups = yaml.safe_load(RULES.read_text())["groups"]
    for rule in (r for g in groups for r in g["rules"] if "alert" in r):
        # `up` is Prometheus's own per-target series (QemuExporterDown); qemu_process_info
        # needs a process scan, which would connect to every QEMU on the host, other tests'
        # too (tests/test_process_discovery.py checks it is served).
        missing = promql_metric_names(rule["expr"]) - served - {"up", "qemu_process_info"}
        assert missing == set(), f"{rule['alert']} uses {missing}"
    assert re.search(r"^qmp_exporter_alerts_sent_total\{", text, re.M), "AlertPusher not wired"
