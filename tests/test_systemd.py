"""The systemd unit: valid, sandboxed (exposure <= 2.5 by systemd-analyze), runs unprivileged."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.ops_stack import require_binary

UNIT = Path(__file__).resolve().parent.parent / "systemd" / "qmp-exporter.service"
MAX_EXPOSURE = 2.5


def _directives() -> dict[str, list[str]]:
    """Every ``Key=value`` of the unit, keys may repeat (``section.Key`` -> values)."""
    values: dict[str, list[str]] = {}
    section = ""
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        values.setdefault(f"{section}.{key}", []).append(value)
    return values


def _analyze(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_binary("systemd-analyze"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def security_report(tmp_path_factory: pytest.TempPathFactory) -> str:
    work = tmp_path_factory.mktemp("unit")
    shutil.copy(UNIT, work / UNIT.name)
    result = _analyze("security", "--offline=true", "--no-pager", UNIT.name, cwd=work)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_exposure_is_at_most_2_5(security_report: str) -> None:
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", security_report)
    assert match, security_report[-2000:]
    exposure = float(match.group(1))
    print(f"systemd-analyze security exposure: {exposure}")
    assert exposure <= MAX_EXPOSURE


def test_the_documented_exposure_is_what_systemd_analyze_prints(security_report: str) -> None:
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", security_report)
    assert match, security_report[-2000:]
    documented = re.search(
        r"`systemd-analyze security --offline=true` rates its exposure \*\*(\d+\.\d+)\*\*",
        (UNIT.parents[1] / "docs" / "operations.md").read_text(),
    )
    assert documented, "docs/operations.md states no exposure figure"
    assert documented.group(1) == match.group(1)


@pytest.mark.parametrize(
    "check",
    [
        "NoNewPrivileges=",
        "ProtectSystem=",
        "ProtectHome=",
        "PrivateTmp=",
        "PrivateDevices=",
        "RestrictAddressFamilies=~AF_PACKET",
        "RestrictAddressFamilies=~AF_NETLINK",
        "RestrictAddressFamilies=~…",
        "SystemCallFilter=~@privileged",
        "SystemCallFilter=~@mount",
        "SystemCallArchitectures=",
        "CapabilityBoundingSet=~CAP_SYS_ADMIN",
        "CapabilityBoundingSet=~CAP_NET_ADMIN",
        "AmbientCapabilities=",
        "User=/DynamicUser=",
        "MemoryDenyWriteExecute=",
    ],
)
def test_sandboxing_option_understood_by_systemd(security_report: str, check: str) -> None:
    """systemd itself rates the option as applied (a ✓ line), not just present in the file."""
    lines = [line for line in security_report.splitlines() if check in line.split()[:2]]
    assert lines, f"{check} not in report"
    assert all(line.startswith("✓") for line in lines), lines


def test_unit_has_no_unknown_or_invalid_directives(tmp_path: Path) -> None:
    """``systemd-analyze verify`` warns about nothing (its ExecStart pointed at this checkout)."""
    text = UNIT.read_text().replace(
        "ExecStart=/usr/bin/qmp-exporter", f"ExecStart={sys.executable} -m qmp_exporter"
    )
    (tmp_path / UNIT.name).write_text(text)
    result = _analyze("verify", f"./{UNIT.name}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr


def test_runs_unprivileged_with_socket_group_and_environment_file() -> None:
    d = _directives()
    assert d["Service.User"] == ["qmp-exporter"]
    assert d["Service.SupplementaryGroups"] == ["qemu-monitor"]
    assert d["Service.EnvironmentFile"] == ["-/etc/default/qmp-exporter"]
    assert "$ARGS" in d["Service.ExecStart"][0]
    assert "--config.file=/etc/qmp-exporter/qmp-exporter.yml" in d["Service.ExecStart"][0]
    assert d["Service.Restart"] == ["on-failure"]
    assert d["Service.CapabilityBoundingSet"] == [""]
    assert d["Service.RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6"]
    assert d["Service.ProtectSystem"] == ["strict"]
    assert d["Install.WantedBy"] == ["multi-user.target"]


def test_unit_parses_as_ini() -> None:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keep key case, as systemd does
    parser.read_string(UNIT.read_text())
    assert set(parser.sections()) == {"Unit", "Service", "Install"}
