"""Config parsing: strict, every error at once with its path; and the check-config command."""

from __future__ import annotations

import subprocess
import sys

import pytest

from qmp_exporter.config import ConfigError, parse_config, parse_yaml
from qmp_exporter.config.durations import parse_duration
from qmp_exporter.config.schema import read_yaml
from tests.helpers.exporter import REPO


def test_example_config_is_valid() -> None:
    config = parse_yaml((REPO / "config" / "qmp-exporter.yml").read_text())
    assert config.poll_interval == 15
    assert [m.name for m in config.monitors] == ["web-01", "db-01"]
    assert config.monitors[1].mode == "poll"
    assert config.monitors[0].labels == (("env", "prod"), ("team", "web"))


def test_addresses_are_normalised() -> None:
    config = parse_yaml(
        """
monitors:
  - {name: a, address: /run/a.qmp}
  - {name: b, address: "unix:/run/b.qmp"}
  - {name: c, address: "tcp:127.0.0.1:4444"}
  - {name: d, address: "tcp:[::1]:4444"}
"""
    )
    assert [m.address for m in config.monitors] == [
        "unix:/run/a.qmp",
        "unix:/run/b.qmp",
        "tcp:127.0.0.1:4444",
        "tcp:[::1]:4444",
    ]


def test_every_error_is_reported_with_its_path() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_yaml(
            """
poll_interval: 5
pol_interval: 5s
monitors:
  - {name: web, address: /run/a.qmp, labels: {vm: x, bad-name: y}}
  - {name: web, address: /run/b.qmp}
  - {name: db, address: "tcp:nohostport", mode: sometimes}
  - {name: c, address: /run/a.qmp}
  - 42
  - {address: /run/x.qmp}
alerting: {alertmanagers: ["ftp://x"], events: [vnc_connected]}
"""
        )
    errors = caught.value.errors
    assert errors == [
        "pol_interval: unknown key (allowed: alerting, discovery, monitors, poll_interval, probe, "
        "qmp_max_line_bytes, timeout)",
        "poll_interval: expected a duration string like '15s', got 5",
        "monitors[0].labels.vm: label name is reserved (instance, job, name, uuid, vm)",
        "monitors[0].labels.bad-name: not a valid Prometheus label name",
        "monitors[1].name: duplicate name 'web' (also monitors[0])",
        "monitors[2].address: 'tcp:nohostport': expected tcp:HOST:PORT",
        "monitors[2].mode: 'sometimes' is not one of persistent, poll",
        "monitors[3].address: unix:/run/a.qmp is already monitors[0]: "
        "QEMU serves one client per socket",
        "monitors[4]: expected a mapping with name and address, got int",
        "monitors[5].name: required: a non-empty string",
        "alerting.alertmanagers[0]: expected an http:// or https:// base URL, got 'ftp://x'",
        "alerting.events[0]: not a QMP event name: 'vnc_connected'",
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: 1\na: 2\n", "duplicate key 'a'"),
        ("monitors: [\n", "not valid YAML"),
        ("- just a list\n", "expected a mapping"),
        ("timeout: 20s\npoll_interval: 10s\n", "timeout: must not be longer than poll_interval"),
        ("poll_interval: 1ms\n", "shorter than the minimum"),
    ],
)
def test_broken_documents(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_yaml(text)
    assert message in str(caught.value)


def test_empty_document_means_no_monitors() -> None:
    config = parse_yaml("")
    assert config.monitors == ()
    assert config.poll_interval == 15


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("15s", 15), ("2m", 120), ("1h30m", 5400), ("1d", 86400), ("1m500ms", 60.5)],
)
def test_durations_parse(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5", "1.5s", "-1s", "s", "15 s", "1s2m"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "qmp_exporter", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=30,
    )


def test_check_config_command(tmp_path) -> None:
    good = run_cli("check-config", str(REPO / "config" / "qmp-exporter.yml"))
    assert good.returncode == 0, good.stderr
    assert "valid (2 monitor(s))" in good.stdout

    bad = tmp_path / "bad.yml"
    bad.write_text("poll_interval: 5\nmonitors: [{name: a}, {name: a, address: x}]\n")
    result = run_cli("check-config", str(bad))
    assert result.returncode == 1
    assert "3 error(s)" in result.stderr
    assert "- monitors[0].address: required" in result.stderr
    assert "- monitors[1].address: 'x': expected unix:/PATH" in result.stderr

    missing = run_cli("check-config", str(tmp_path / "nope.yml"))
    assert missing.returncode == 1
    assert "cannot read" in missing.stderr


def test_serve_refuses_a_broken_config(tmp_path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text("monitors: 3\n")
    result = run_cli("--config.file", str(bad), "--web.listen-address", "127.0.0.1:0")
    assert result.returncode == 1
    assert "monitors: expected a list, got int" in result.stderr


def test_bad_listen_address_is_a_usage_error() -> None:
    result = run_cli("--web.listen-address", "nonsense")
    assert result.returncode == 2
    assert "--web.listen-address" in result.stderr


def test_check_config_also_validates_a_web_config(tmp_path) -> None:
    web = tmp_path / "web.yml"
    web.write_text("basic_auth_users: [nope]\ntls_server_config: {cert_file: /nonexistent}\n")
    example = str(REPO / "config" / "qmp-exporter.yml")
    result = run_cli("check-config", example, "--web.config.file", str(web))
    assert result.returncode == 1
    assert "valid (2 monitor(s))" in result.stdout
    assert "basic_auth_users" in result.stderr
    assert "tls_server_config" in result.stderr
    web.write_text("basic_auth_users: {}\n")
    assert run_cli("check-config", example, "--web.config.file", str(web)).returncode == 0


def test_alert_event_names_have_the_pollers_bound_of_64_characters():
    longest = "E" * 64

    def alerting(event: str) -> dict[str, object]:
        return {"alerting": {"alertmanagers": ["http://am:9093"], "events": [event]}}

    assert parse_config(alerting(longest)).alerting.events == (longest,)
    with pytest.raises(ConfigError, match=r"alerting.events\[0\]: not a QMP event name"):
        parse_config(alerting(longest + "E"))


def test_every_list_of_the_wrong_kind_is_reported_at_once_with_its_path():
    with pytest.raises(ConfigError) as caught:
        parse_yaml(
            "monitors: {a: 1}\n"
            "discovery: /run/*.qmp\n"
            "alerting: {alertmanagers: http://am, events: null}\n"
            "probe: {allow: 3}\n"
        )
    assert caught.value.errors == [
        "monitors: expected a list, got dict",
        "alerting.alertmanagers: expected a list of URLs, got str",
        "alerting.events: expected a list of QMP event names, got nothing",
        "discovery: expected a list, got str",
        "probe.allow: expected a list of globs, got int",
    ]


def test_read_yaml_names_the_file_it_cannot_read(tmp_path):
    (tmp_path / "dup.yml").write_text("a: 1\na: 2\n")
    with pytest.raises(ConfigError, match="duplicate key 'a'") as caught:
        read_yaml(tmp_path / "dup.yml")
    assert caught.value.source == str(tmp_path / "dup.yml")
    with pytest.raises(ConfigError, match="cannot read"):
        read_yaml(tmp_path / "missing.yml")
