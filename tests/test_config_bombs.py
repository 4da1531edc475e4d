"""Config bombs (issue 15, attack report C6 and C7): a YAML alias bomb, deep nesting and
huge values give a short, clear error at once, in the loader and in ``check-config``."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from qmp_exporter.config import ConfigError, parse_config, parse_yaml
from qmp_exporter.config.schema import MAX_DEPTH, MAX_ERRORS, StrictLoader, excerpt
from tests.test_config import run_cli


def alias_bomb(target: str = "alerting:\n  events: [*x7]") -> str:
    """The report's 431-byte "billion laughs": 9**8 strings once its aliases expand."""
    lines = ["poll_interval: 15s", "x0: &x0 [" + ",".join(['"lol"'] * 9) + "]"]
    lines += [f"x{i}: &x{i} [{','.join([f'*x{i - 1}'] * 9)}]" for i in range(1, 8)]
    return "\n".join(lines) + "\n" + target + "\n"


def deep(levels: int) -> str:
    return "monitors: " + "[" * levels + "]" * levels + "\n"


def refusal(text: str) -> tuple[ConfigError, float]:
    started = time.monotonic()
    with pytest.raises(ConfigError) as caught:
        parse_yaml(text, "bomb.yml")
    return caught.value, time.monotonic() - started


@pytest.mark.parametrize(
    "target",
    [
        "alerting:\n  events: [*x7]",
        "alerting:\n  alertmanagers: *x7",
        "monitors:\n  - {name: a, address: /a, collectors: *x7}",
        "probe:\n  allow: *x7",
    ],
)
def test_alias_bomb_is_refused_fast_with_a_short_message(target: str) -> None:
    text = alias_bomb(target)
    assert len(text) < 500
    error, seconds = refusal(text)
    assert seconds < 1.0
    assert len(str(error)) < 1000
    assert "alias" in str(error)


def test_a_self_referring_alias_is_refused() -> None:
    error, _ = refusal("monitors: &m [*m]\n")
    assert "contains it" in str(error)


@pytest.mark.parametrize("levels", [MAX_DEPTH + 1, 500, 100_000])
@pytest.mark.parametrize("opener", ["[", "{a: "])
def test_deep_nesting_is_a_clear_error_not_a_recursion_error(levels: int, opener: str) -> None:
    closer = "]" if opener == "[" else "}"
    error, seconds = refusal("monitors: " + opener * levels + closer * levels + "\n")
    # Ours, or (past 1,000 flow levels) the newest libyaml's "exceeded maximum nesting depth".
    assert f"nested deeper than {MAX_DEPTH} levels" in str(error) or (
        levels > 1000 and "maximum nesting depth" in str(error)
    ), error
    assert seconds < 1.0 and len(str(error)) < 1000


def test_nesting_through_a_chain_of_aliases_is_bounded() -> None:
    lines = ["a0: &a0 [1]"] + [f"a{i}: &a{i} [*a{i - 1}]" for i in range(1, 100)]
    error, _ = refusal("\n".join(lines) + "\n")
    assert "nested deeper" in str(error)


@pytest.mark.parametrize("opener", ["[", "{a: "])
def test_both_loaders_allow_exactly_max_depth(opener: str) -> None:
    closer = "]" if opener == "[" else "}"

    def nested(levels: int) -> str:
        return opener * levels + "1" + closer * levels + "\n"

    with pytest.raises(ConfigError, match=r"expected a mapping|unknown key"):  # loaded
        parse_yaml(nested(MAX_DEPTH))
    assert "nested deeper" in str(refusal(nested(MAX_DEPTH + 1))[0])
    # The pure-Python loader (used when PyYAML lacks libyaml) keeps the same bounds.
    assert yaml.load(nested(MAX_DEPTH), Loader=StrictLoader) is not None
    for text in (nested(MAX_DEPTH + 1), nested(100_000), alias_bomb()):
        with pytest.raises(yaml.YAMLError, match=r"nested deeper|alias"):
            yaml.load(text, Loader=StrictLoader)


def test_a_config_as_deep_as_allowed_still_loads() -> None:
    # Depth MAX_DEPTH: the top mapping, a label mapping... nested lists as an unknown key.
    text = "poll_interval: 15s\n"
    assert parse_yaml(text).poll_interval == 15.0
    with pytest.raises(ConfigError, match="unknown key"):
        parse_yaml("x: " + "[" * (MAX_DEPTH - 2) + "]" * (MAX_DEPTH - 2) + "\n")


def test_long_values_are_shown_as_bounded_excerpts() -> None:
    huge = "x" * 1_000_000
    with pytest.raises(ConfigError) as caught:
        parse_config(
            {"poll_interval": huge, "monitors": [{"name": "a", "address": "/a", "mode": huge}]}
        )
    message = str(caught.value)
    assert len(message) < 2000
    assert "more)" in message


def test_error_lists_are_bounded_and_count_the_rest() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"alerting": {"events": ["bad name"] * 5000}})
    assert len(caught.value.errors) == MAX_ERRORS
    assert caught.value.more == 5000 - MAX_ERRORS
    assert f"and {5000 - MAX_ERRORS} more error(s)" in str(caught.value)
    assert len(caught.value.one_line().splitlines()) == 1


def test_excerpt_does_not_walk_a_shared_structure() -> None:
    level: list[object] = ["lol"] * 9
    for _ in range(8):
        level = [level] * 9  # 9**9 strings if walked
    started = time.monotonic()
    text = excerpt(level)
    assert time.monotonic() - started < 0.1
    assert len(text) < 300


def test_check_config_prints_a_short_error_and_no_traceback(tmp_path: Path) -> None:
    for name, text in {"bomb.yml": alias_bomb(), "deep.yml": deep(500)}.items():
        path = tmp_path / name
        path.write_text(text)
        started = time.monotonic()
        result = run_cli("check-config", str(path))
        assert time.monotonic() - started < 10
        assert result.returncode == 1
        assert "Traceback" not in result.stderr
        assert len(result.stdout) + len(result.stderr) < 1000
        assert name in result.stderr
