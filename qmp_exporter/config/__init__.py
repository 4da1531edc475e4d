"""The exporter's YAML configuration: strict parsing into frozen dataclasses.

Every error is collected with its path (``monitors[2].address: ...``) and reported at once.
This module holds :class:`Config`, the top-level keys and the loaders; each section is parsed
in its own module (``monitors``, ``discovery``, ``alerting``, ``probe``), whose public names
are re-exported here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qmp_exporter.config.alerting import (
    DEFAULT_ALERT_EVENTS,
    EVENT_NAME,
    AlertingConfig,
    parse_alerting,
)
from qmp_exporter.config.discovery import (
    DEFAULT_RESCAN,
    NAME_FIELDS,
    PROXMOX_DIRS,
    PROXMOX_NAME_FIELDS,
    DiscoveryConfig,
    is_proxmox_glob,
    parse_discovery,
)
from qmp_exporter.config.fields import MODES, RESERVED_LABELS, duration_field
from qmp_exporter.config.monitors import MonitorConfig, check_address, parse_monitors
from qmp_exporter.config.probe import ProbeConfig, parse_probe, probe_pattern
from qmp_exporter.config.schema import (
    ConfigError,
    Errors,
    decode_yaml,
    kind,
    mapping,
    read_text,
    read_yaml,
)
from qmp_exporter.qmp.framing import DEFAULT_MAX_LINE_BYTES

__all__ = [
    "DEFAULT_ALERT_EVENTS",
    "DEFAULT_RESCAN",
    "EVENT_NAME",
    "MAX_LINE_BYTES_RANGE",
    "MODES",
    "NAME_FIELDS",
    "PROXMOX_DIRS",
    "PROXMOX_NAME_FIELDS",
    "RESERVED_LABELS",
    "AlertingConfig",
    "Config",
    "ConfigError",
    "DiscoveryConfig",
    "MonitorConfig",
    "ProbeConfig",
    "check_address",
    "is_proxmox_glob",
    "load_config",
    "load_config_if_changed",
    "parse_config",
    "parse_yaml",
    "probe_pattern",
]

#: Bounds of ``qmp_max_line_bytes``: 64 KiB to 64 MiB.
MAX_LINE_BYTES_RANGE = (64 << 10, 64 << 20)


@dataclass(frozen=True, slots=True)
class Config:
    """The whole configuration."""

    poll_interval: float = 15.0
    timeout: float = 5.0
    monitors: tuple[MonitorConfig, ...] = ()
    alerting: AlertingConfig = field(default_factory=AlertingConfig)
    discovery: tuple[DiscoveryConfig, ...] = ()
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    #: Longest line (one QMP answer or event) taken from a monitor, in bytes.
    qmp_max_line_bytes: int = DEFAULT_MAX_LINE_BYTES


def _max_line_bytes(value: Any, errors: Errors) -> int:
    """``qmp_max_line_bytes``: an integer within :data:`MAX_LINE_BYTES_RANGE`."""
    if value is None:
        return DEFAULT_MAX_LINE_BYTES
    low, high = MAX_LINE_BYTES_RANGE
    if isinstance(value, bool) or not isinstance(value, int):
        errors.add("qmp_max_line_bytes", f"expected a number of bytes, got {kind(value)}")
    elif not low <= value <= high:
        errors.add("qmp_max_line_bytes", f"{value} is outside {low}..{high} (64 KiB..64 MiB)")
    else:
        return value
    return DEFAULT_MAX_LINE_BYTES


def parse_config(data: Any, source: str = "config") -> Config:
    """Validate a decoded YAML document; raise :class:`ConfigError` listing every problem."""
    errors = Errors()
    if data is None:
        data = {}
    allowed = {
        "poll_interval", "timeout", "qmp_max_line_bytes", "monitors", "alerting", "discovery",
        "probe",
    }  # fmt: skip
    raw = mapping(data, "", errors, allowed)
    if not isinstance(data, Mapping):
        raise ConfigError(errors.items, source, errors.more)
    poll_interval = duration_field(raw.get("poll_interval"), "poll_interval", errors, 15.0, 0.1)
    timeout = duration_field(raw.get("timeout"), "timeout", errors, 5.0, 0.01)
    if timeout > poll_interval and "timeout" in raw:
        errors.add("timeout", "must not be longer than poll_interval")
    config = Config(
        poll_interval=poll_interval,
        timeout=timeout,
        monitors=parse_monitors(raw.get("monitors"), errors),
        alerting=parse_alerting(raw.get("alerting"), errors),
        discovery=parse_discovery(raw.get("discovery"), errors),
        probe=parse_probe(raw.get("probe"), errors),
        qmp_max_line_bytes=_max_line_bytes(raw.get("qmp_max_line_bytes"), errors),
    )
    if errors.items:
        raise ConfigError(errors.items, source, errors.more)
    return config


def parse_yaml(text: str, source: str = "config") -> Config:
    """Parse YAML text into a :class:`Config`."""
    return parse_config(decode_yaml(text, source), source)


def load_config(path: str | Path) -> Config:
    """Read and validate a config file; :class:`ConfigError` on any problem."""
    return parse_config(read_yaml(path), str(path))


def load_config_if_changed(path: str | Path, digest: str | None) -> tuple[str, Config | None]:
    """The SHA-256 of the file's text and its config, or ``None`` for the config when the
    text's digest is ``digest`` (a reload of an unchanged file parses nothing)."""
    text = read_text(path)
    new_digest = hashlib.sha256(text.encode()).hexdigest()
    if new_digest == digest:
        return new_digest, None
    return new_digest, parse_config(decode_yaml(text, str(path)), str(path))
