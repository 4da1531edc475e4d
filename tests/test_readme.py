"""The README documents every metric the exporter can serve, each with a sample line."""

from __future__ import annotations

import re

import prometheus_client

from qmp_exporter.alerting import AlertPusher
from qmp_exporter.config import AlertingConfig
from qmp_exporter.exposition.families import all_families
from qmp_exporter.exposition.selfmetrics import SelfMetrics
from tests.helpers.exporter import REPO

README = (REPO / "README.md").read_text()


def served_names() -> set[str]:
    names = {family.name for family in all_families()}
    registry = SelfMetrics().registry
    pusher_registry = prometheus_client.CollectorRegistry()
    AlertPusher(AlertingConfig(("http://127.0.0.1:9",)), pusher_registry)
    for reg in (registry, pusher_registry):
        for family in reg.collect():
            if family.name.startswith(("process_", "python_")):
                continue  # prometheus_client's standard metrics, documented as such
            for sample in family.samples:
                if not sample.name.endswith("_created"):
                    names.add(sample.name)
    return names


def test_every_metric_has_a_sample_line_in_the_readme() -> None:
    names = served_names()
    assert len(names) > 40
    missing = [n for n in sorted(names) if not re.search(rf"^{n}(\{{| )", README, re.M)]
    assert not missing, f"README has no sample line for: {missing}"


def test_every_metric_is_in_a_readme_table_or_list() -> None:
    missing = [n for n in sorted(served_names()) if f"`{n}" not in README]
    assert not missing, f"README does not describe: {missing}"
