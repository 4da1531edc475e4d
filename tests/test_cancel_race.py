"""A cancel is never swallowed (issue 23, attack report 3's D5): Python 3.11's
``asyncio.wait_for`` returns the inner result when a cancel arrives as the inner future
completes, so a poller being stopped kept polling and a reload waited for it for ever.
The package uses ``asyncio.timeout`` or an explicit timer instead, and the race, built on
purpose (``tests/helpers/cancel_race.py``), is run on Debian 12's Python, the package's
runtime."""

from __future__ import annotations

import ast
import json
import os
import subprocess
from pathlib import Path

from tests.helpers.exporter import REPO

PACKAGE_DIR = REPO / "qmp_exporter"
#: Debian 12's Python 3.11.2: the runtime of the package, where the race shows.
DEBIAN_PYTHON = Path("/usr/bin/python3")


def wait_for_uses(package_dir: Path = PACKAGE_DIR) -> list[str]:
    """Every ``wait_for`` named in the package's code (called, imported or referred to;
    comments and docstrings aside), as ``file:line``."""
    found = []
    for path in sorted(package_dir.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            named = (
                (isinstance(node, ast.Attribute) and node.attr == "wait_for")
                or (isinstance(node, ast.Name) and node.id == "wait_for")
                or (
                    isinstance(node, ast.ImportFrom)
                    and any(alias.name == "wait_for" for alias in node.names)
                )
            )
            if named:
                found.append(f"{path.relative_to(package_dir.parent)}:{node.lineno}")
    return found


def test_the_package_never_uses_wait_for() -> None:
    assert wait_for_uses() == [], "use asyncio.timeout or an explicit timer (3.11 swallows cancels)"


def test_the_wait_for_check_finds_each_form(tmp_path: Path) -> None:
    (tmp_path / "bad.py").write_text(
        '"""wait_for( in a docstring is fine."""\n'
        "import asyncio\n"
        "from asyncio import wait_for\n"
        "async def f(x):  # wait_for( in a comment is fine\n"
        "    await asyncio.wait_for(x, 1)\n"
        "    return wait_for\n"
        "def wait_for_next_request(): ...\n"
    )
    found = wait_for_uses(tmp_path)
    assert sorted(int(f.rsplit(":", 1)[1]) for f in found) == [3, 5, 6], found


def test_the_cancel_race_propagates_on_debians_python() -> None:
    assert DEBIAN_PYTHON.exists(), f"{DEBIAN_PYTHON} (Debian 12's Python 3.11) is required"
    finished = subprocess.run(
        [str(DEBIAN_PYTHON), str(REPO / "tests" / "helpers" / "cancel_race.py")],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    found = json.loads(finished.stdout)
    version = tuple(int(part) for part in found["python"].split(".")[:2])
    # The race is really built: a bare wait_for swallows it on 3.11 (not on 3.12).
    assert found["control"] == ("swallowed" if version < (3, 12) else "cancelled"), found
    assert {case: found[case] for case in ("greeting", "tcp_connect", "poller")} == {
        "greeting": "cancelled",
        "tcp_connect": "cancelled",
        "poller": "cancelled",
    }, found
