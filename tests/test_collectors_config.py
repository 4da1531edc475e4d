"""Config keys for collectors, discovery and probe: parsed strictly, every error with its path."""

from __future__ import annotations

import dataclasses

import pytest

from qmp_exporter.config import ConfigError, ProbeConfig, parse_yaml


def errors_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_yaml(text)
    return info.value.errors


def test_monitor_collectors_default_and_explicit():
    config = parse_yaml(
        """
monitors:
  - {name: a, address: /run/a.qmp}
  - {name: b, address: /run/b.qmp, collectors: [block, kvm_stats]}
  - {name: c, address: /run/c.qmp, collectors: []}
"""
    )
    assert [m.collectors for m in config.monitors] == [
        None,
        ("block", "kvm_stats"),
        (),
    ]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.monitors[0].collectors = ()  # type: ignore[misc]  # the test edits a frozen config on purpose


def test_monitor_collectors_errors_have_paths():
    errors = errors_of(
        """
monitors:
  - {name: a, address: /run/a.qmp, collectors: [block, disk, block]}
  - {name: b, address: /run/b.qmp, collectors: block}
"""
    )
    assert any(e.startswith("monitors[0].collectors[1]: unknown collector 'disk'") for e in errors)
    assert any(
        e.startswith("monitors[0].collectors[2]: collector 'block' listed twice") for e in errors
    )
    assert any(e.startswith("monitors[1].collectors: expected a list") for e in errors)
    assert len(errors) == 3


def test_discovery_defaults_and_proxmox_layout():
    config = parse_yaml(
        """
discovery:
  - glob: /run/qemu/*.qmp
  - glob: /var/run/qemu-server/*.qmp
    name: "pve-{vmid}"
    labels: {site: lab}
    rescan: 10s
    collectors: [block]
"""
    )
    plain, pve = config.discovery
    assert (plain.name, plain.mode, plain.rescan, plain.proxmox) == (
        "{stem}",
        "persistent",
        30.0,
        False,
    )
    assert plain.collectors is None
    assert (pve.name, pve.mode, pve.rescan, pve.proxmox) == ("pve-{vmid}", "poll", 10.0, True)
    assert pve.labels == (("site", "lab"),)
    assert pve.collectors == ("block",)


def test_discovery_errors_have_paths():
    errors = errors_of(
        """
discovery:
  - glob: run/qemu/*.qmp
  - glob: /var/run/qemu-server/*.qmp
    mode: persistent
  - glob: /run/qemu/*.qmp
    name: "{vmid}"
    rescan: 100ms
    colour: red
  - glob: /run/x/*.qmp
    name: "{stem!r}"
  - glob: /run/x/*.qmp
  - glob: /run/y/*.qmp
    name: "{stem"
    mode: sometimes
"""
    )
    expected = [
        "discovery[0].glob: required: an absolute path glob",
        "discovery[1].mode: must be poll in the Proxmox layout",
        "discovery[2].colour: unknown key",
        "discovery[2].name: unknown field {vmid}",
        "discovery[2].rescan: 100ms is shorter than the minimum",
        "discovery[3].name: {stem}: format specs and conversions are not allowed",
        "discovery[4].glob: duplicate glob (also discovery[3])",
        "discovery[5].mode: 'sometimes' is not one of",
        "discovery[5].name: not a valid template",
    ]
    for prefix in expected:
        assert any(e.startswith(prefix) for e in errors), (prefix, errors)
    assert len(errors) == len(expected), errors


def test_probe_allow_normalised():
    config = parse_yaml(
        """
probe:
  allow: ["/var/run/qemu-server/*.qmp", "unix:/run/q/*.sock", "10.0.0.*:4444", "tcp:Host:44*"]
  http_sd: true
"""
    )
    assert config.probe == ProbeConfig(
        (
            "unix:/var/run/qemu-server/*.qmp",
            "unix:/run/q/*.sock",
            "tcp:10.0.0.*:4444",
            "tcp:host:44*",
        ),
        True,
    )
    assert parse_yaml("{}").probe == ProbeConfig((), False)


def test_probe_errors_have_paths():
    errors = errors_of(
        """
probe:
  allow: ["relative/*.qmp", "/run/../etc/*", 5]
  http_sd: "yes"
  deny: []
"""
    )
    for prefix in (
        "probe.allow[0]: 'relative/*.qmp': expected an absolute socket path glob",
        "probe.allow[1]: '/run/../etc/*': '..' is not allowed",
        "probe.allow[2]: expected a socket path glob",
        "probe.http_sd: expected true or false",
        "probe.deny: unknown key",
    ):
        assert any(e.startswith(prefix) for e in errors), (prefix, errors)
