"""docs/metrics.md documents every metric the exporter can serve, each with a sample line; the
README's summary table covers them all and names none that is not served."""

from __future__ import annotations

import re
from fnmatch import fnmatchcase

import prometheus_client

from qmp_exporter.alerting import AlertPusher
from qmp_exporter.config import AlertingConfig, parse_yaml
from qmp_exporter.exposition.families import all_families
from qmp_exporter.exposition.selfmetrics import SelfMetrics
from qmp_exporter.web.webconfig.guard import auth_failure_counter
from tests.helpers.exporter import REPO

README = (REPO / "README.md").read_text()
METRICS_DOC = (REPO / "docs" / "metrics.md").read_text()

#: A metric name (or a glob of them) at the start of a `code span`.
MENTIONED_METRIC = re.compile(r"`((?:qemu|qmp_exporter)_[a-z0-9_]*\*?)")


def own_families() -> list[prometheus_client.Metric]:
    """The families of the exporter's own registries, with alerting and the web config on
    (prometheus_client's process_ and python_ metrics left out, documented as such)."""
    registry = SelfMetrics().registry
    pusher_registry = prometheus_client.CollectorRegistry()
    AlertPusher(AlertingConfig(("http://127.0.0.1:9",)), pusher_registry)
    auth_failure_counter(pusher_registry)  # served with --web.config.file
    return [
        family
        for reg in (registry, pusher_registry)
        for family in reg.collect()
        if not family.name.startswith(("process_", "python_"))
    ]


def served_names() -> set[str]:
    names = {family.name for family in all_families()}
    names.update(sample.name for family in own_families() for sample in family.samples)
    return names


def test_own_counters_have_no_created_series() -> None:
    """One rule for the exporter's own counters (see exposition/counters.py): none has a
    ``_created`` series."""
    counters = [family for family in own_families() if family.type == "counter"]
    assert len(counters) >= 5, [family.name for family in counters]
    created = [s.name for family in counters for s in family.samples if s.name.endswith("_created")]
    assert created == []


def mentioned_metrics(markdown: str) -> set[str]:
    return set(MENTIONED_METRIC.findall(markdown))


def readme_section(title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", README, re.M | re.S)
    assert match, f"README has no section {title!r}"
    return match.group(1)


def test_every_metric_has_a_sample_line_in_the_metrics_doc() -> None:
    names = served_names()
    assert len(names) > 40
    missing = [n for n in sorted(names) if not re.search(rf"^{n}(\{{| )", METRICS_DOC, re.M)]
    assert not missing, f"docs/metrics.md has no sample line for: {missing}"


def test_every_metric_is_in_a_metrics_doc_table_or_list() -> None:
    missing = [n for n in sorted(served_names()) if f"`{n}" not in METRICS_DOC]
    assert not missing, f"docs/metrics.md does not describe: {missing}"


def test_the_readme_summary_covers_every_metric() -> None:
    summary = mentioned_metrics(readme_section("Metrics"))
    missing = [
        n for n in sorted(served_names()) if not any(fnmatchcase(n, entry) for entry in summary)
    ]
    assert not missing, f"the README's metrics summary leaves out: {missing}"


def test_the_docs_name_no_metric_that_is_not_served() -> None:
    names = served_names()
    mentioned = mentioned_metrics(README) | mentioned_metrics(METRICS_DOC)
    assert len(mentioned) > 40
    stale = [m for m in sorted(mentioned) if not any(fnmatchcase(n, m) for n in names)]
    assert not stale, (
        f"README.md or docs/metrics.md names metrics the exporter does not serve: {stale}"
    )


def test_the_readme_config_example_is_valid() -> None:
    blocks = re.findall(r"```yaml\n(.*?)```", readme_section("Configuration"), re.S)
    assert len(blocks) == 1
    config = parse_yaml(blocks[0], "README.md")
    assert [monitor.name for monitor in config.monitors] == ["web-01", "db-01"]
    assert config.discovery and config.alerting.alertmanagers
