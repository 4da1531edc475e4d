"""The fleet sizing benchmark keeps working: its quick run (tiny simulated fleets, a real
Prometheus and agent) must fill every table. Its numbers are not judged here (bench/ is)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import sizing_report

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.prometheus


def test_quick_run_fills_every_table(tmp_path: Path) -> None:
    output = tmp_path / "benchmarks.md"
    output.write_text("# Benchmarks\n\n## Scale\n\nkept as it is\n")
    results = tmp_path / "results.json"
    completed = subprocess.run(
        [sys.executable, "-m", "bench.sizing", "--quick", "--no-qemu",
         "--no-plot", "--output", str(output), "--json", str(results)],
        cwd=REPO, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    text = output.read_text()
    assert "## Scale\n\nkept as it is\n" in text
    assert text.count("## Fleet sizing") == 1
    for heading in ("### Series per VM", "### Scrape body per VM", "### Head series",
                    "### Prometheus agent CPU"):  # fmt: skip
        assert heading in text, heading
    data = json.loads(results.read_text())
    series = data["series"]
    assert series["default"] > series["core"] > 0
    assert series["block"] > 0 and series["vcpu"] > 0
    assert data["families"]["qemu_vm_status"] == 16
    assert data["bytes_plain"] > data["bytes_gzip"] > 0
    heads = data["head"]
    assert [row["exporters"] for row in heads] == [1, 2]
    # every VM's series reach Prometheus: two exporters hold twice the series of one
    assert heads[1]["head_series"] > 1.5 * heads[0]["head_series"]
    assert heads[0]["head_series"] >= series["default"] * heads[0]["vms"]
    assert all(row["rss"] > 0 for row in heads)
    assert 0 < data["lean"]["lean"] < data["lean"]["full"]
    assert data["agent"]["central_series"] > 0 and data["agent"]["cpu_per_minute"] > 0


def test_section_replaces_only_its_own_text(tmp_path: Path) -> None:
    path = tmp_path / "benchmarks.md"
    path.write_text("# Benchmarks\n\n## Scale\n\nother table\n")
    sizing_report.write_section(path, f"{sizing_report.BEGIN}\nfirst\n{sizing_report.END}\n")
    sizing_report.write_section(path, f"{sizing_report.BEGIN}\nsecond\n{sizing_report.END}\n")
    text = path.read_text()
    assert text.count("## Fleet sizing") == 1
    assert "second" in text and "first" not in text
    assert "## Scale\n\nother table\n" in text
