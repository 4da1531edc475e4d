"""The Prometheus rule file: promtool checks it, its unit tests pass and cover every alert."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.helpers.ops_stack import require_binary

pytestmark = pytest.mark.prometheus

CONFIG = Path(__file__).resolve().parent.parent / "config"
RULES = CONFIG / "qmp-exporter.rules.yml"
RULES_TEST = CONFIG / "qmp-exporter.rules.test.yml"
#: The only alert without a `vm` label: a dead exporter serves no VM series.
ALERTS_WITHOUT_VM = {"QemuExporterDown", "QemuExporterNotReady"}


def _rules() -> list[dict]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def _alerts() -> dict[str, dict]:
    return {rule["alert"]: rule for rule in _rules() if "alert" in rule}


def _alert_tests() -> list[dict]:
    tests = yaml.safe_load(RULES_TEST.read_text())["tests"]
    return [case for test in tests for case in test.get("alert_rule_test", [])]


def _promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_binary("promtool"), *args], cwd=cwd, capture_output=True, text=True, timeout=60
    )


def test_promtool_check_rules_passes() -> None:
    result = _promtool("check", "rules", str(RULES), cwd=CONFIG)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_unit_tests_pass() -> None:
    result = _promtool("test", "rules", RULES_TEST.name, cwd=CONFIG)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_unit_tests_catch_a_broken_rule(tmp_path: Path) -> None:
    """The unit tests are not vacuous: a rule that never fires makes them fail."""
    shutil.copy(RULES_TEST, tmp_path / RULES_TEST.name)
    broken = RULES.read_text().replace(
        'increase(qemu_events_total{event="VNC_CONNECTED"}[5m]) > 0',
        'increase(qemu_events_total{event="VNC_CONNECTED"}[5m]) > 5',
    )
    assert broken != RULES.read_text()
    (tmp_path / RULES.name).write_text(broken)
    result = _promtool("test", "rules", RULES_TEST.name, cwd=tmp_path)
    assert result.returncode != 0
    assert "QemuVncClientConnected" in result.stdout + result.stderr


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    firing: set[str] = set()
    silent: set[str] = set()
    for case in _alert_tests():
        (firing if case["exp_alerts"] else silent).add(case["alertname"])
    alerts = set(_alerts())
    assert alerts - firing == set(), "alerts never tested firing"
    assert alerts - silent == set(), "alerts never tested not firing"
    assert (firing | silent) - alerts == set(), "tests name alerts that do not exist"


def test_alerts_are_named_and_documented() -> None:
    alerts = _alerts()
    assert "QemuVncClientConnected" in alerts
    for name, rule in alerts.items():
        assert re.fullmatch(r"Qemu[A-Z][A-Za-z]+", name), name
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        for key in ("summary", "description", "runbook"):
            assert len(rule["annotations"].get(key, "")) > 20, f"{name}: {key}"


def test_alerts_carry_the_vm_label() -> None:
    """Every firing expectation of a per-VM alert has `vm` (so the rule keeps the label)."""
    for case in _alert_tests():
        for alert in case["exp_alerts"]:
            if case["alertname"] in ALERTS_WITHOUT_VM:
                assert "vm" not in alert["exp_labels"]
            else:
                assert alert["exp_labels"].get("vm"), case["alertname"]
                assert "{{ $labels.vm }}" in _alerts()[case["alertname"]]["annotations"]["summary"]


def test_recording_rules_follow_naming_convention() -> None:
    records = [rule["record"] for rule in _rules() if "record" in rule]
    assert records
    for name in records:
        assert re.fullmatch(r"[a-z_]*:(qemu|qmp_exporter)_[a-z_]+:[a-z0-9_]+", name), name


def _expr_tests() -> list[tuple[set[str], str]]:
    """Each promql_expr_test's expression with the `hypervisor` values of its input series."""
    tests = yaml.safe_load(RULES_TEST.read_text())["tests"]
    cases = []
    for test in tests:
        hypervisors = {
            match.group(1)
            for series in test.get("input_series", [])
            for match in [re.search(r'hypervisor="([^"]+)"', series["series"])]
            if match
        }
        cases += [(hypervisors, case["expr"]) for case in test.get("promql_expr_test", [])]
    return cases


def test_every_recording_rule_is_tested_on_two_hypervisors() -> None:
    """Each recording rule's value is checked (against the raw sums, written out) on an input
    of two hypervisors, so a rule that drops or merges `hypervisor` fails promtool."""
    tested = {expr for hypervisors, expr in _expr_tests() if len(hypervisors) >= 2}
    records = {rule["record"] for rule in _rules() if "record" in rule}
    fleet = {name for name in records if not name.startswith("job")}
    assert fleet, "no fleet recording rules"
    assert fleet - tested == set()


def test_alerts_keep_the_hypervisor_label() -> None:
    """An alert that aggregates keeps `hypervisor` (and `vm`, but for QemuExporterDown) in its
    grouping, and every firing expectation carries `hypervisor`."""
    for name, rule in _alerts().items():
        for grouping in re.findall(r"\b(?:by|on)\s*\(([^)]*)\)", rule["expr"]):
            labels = {label.strip() for label in grouping.split(",")}
            assert "hypervisor" in labels, name
            assert "vm" in labels or name in ALERTS_WITHOUT_VM, name
        assert not re.search(r"\b(without|ignoring)\b", rule["expr"]), name
    for case in _alert_tests():
        for alert in case["exp_alerts"]:
            assert alert["exp_labels"].get("hypervisor"), case["alertname"]
