"""qmp-exporter(1) is written from the --help parser: every option and command is in it,
and man renders it without a warning."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from qmp_exporter import __version__
from qmp_exporter.cli import build_parser
from qmp_exporter.manpage import render


def _parsers() -> list[argparse.ArgumentParser]:
    parser = build_parser()
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found += list(action.choices.values())
    return found


def test_every_option_and_command_is_documented() -> None:
    page = render(build_parser(), date="2026-01-01").replace("\\-", "-")
    for parser in _parsers():
        for action in parser._actions:
            if action.help == argparse.SUPPRESS:
                continue  # hidden, as in --help (--manpage itself)
            if isinstance(action, argparse._SubParsersAction):
                for name in action.choices:
                    assert f".SS {name}" in page
                continue
            for option in action.option_strings:
                assert option in page, option
            if action.help:
                first_words = " ".join(action.help.split()[:3])
                assert first_words.split("%")[0] in page, action.help
    assert f'"qmp-exporter {__version__}"' in page


def test_man_renders_it_without_warnings(tmp_path) -> None:
    man = shutil.which("man")
    if man is None:
        pytest.skip("man is not installed")
    page = tmp_path / "qmp-exporter.1"
    page.write_text(render(build_parser(), date="2026-01-01"))
    result = subprocess.run(
        [man, "--warnings", "-E", "UTF-8", "-l", "-Tutf8", "-Z", str(page)],
        capture_output=True,
        text=True,
        env={"LC_ALL": "C.UTF-8", "MANWIDTH": "80", "PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr


def test_the_hidden_manpage_option_prints_it_and_help_does_not_show_it() -> None:
    root = Path(__file__).resolve().parent.parent
    env = {"SOURCE_DATE_EPOCH": "1767225600", "PATH": "/usr/bin:/bin"}
    page = subprocess.run(
        [sys.executable, "-m", "qmp_exporter", "--manpage"],
        capture_output=True,
        text=True,
        cwd=root,
        env=env,
        timeout=60,
        check=True,
    ).stdout
    assert page == render(build_parser(), date="2026-01-01")
    help_text = subprocess.run(
        [sys.executable, "-m", "qmp_exporter", "--help"],
        capture_output=True,
        text=True,
        cwd=root,
        timeout=60,
        check=True,
    ).stdout
    assert "--manpage" not in help_text
    assert "--manpage" not in page
