"""One version: qmp_exporter.__version__ (pyproject reads it), --version prints it, and
debian/changelog and CHANGELOG.md carry it."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

from qmp_exporter import __version__

ROOT = Path(__file__).resolve().parent.parent


def test_pyproject_reads_the_version_from_the_package() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in pyproject["project"]
    assert "version" in pyproject["project"]["dynamic"]
    dynamic = pyproject["tool"]["setuptools"]["dynamic"]["version"]
    assert dynamic == {"attr": "qmp_exporter.__version__"}


def test_debian_changelog_carries_the_upstream_version() -> None:
    first = (ROOT / "debian" / "changelog").read_text().splitlines()[0]
    match = re.match(r"qmp-exporter \((?:\d+:)?([^)]+)-[^-)]+\) ", first)
    assert match, first
    assert match.group(1) == __version__


def test_changelog_md_has_this_release() -> None:
    text = (ROOT / "CHANGELOG.md").read_text()
    assert re.search(rf"(?m)^## \[{re.escape(__version__)}\]", text)


def test_version_flag_prints_it() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "qmp_exporter", "--version"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert result.stdout.strip() == f"qmp-exporter {__version__}"
