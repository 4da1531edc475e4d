"""The exporter's YAML configuration: strict parsing into frozen dataclasses.

Every error is collected with its path (``monitors[2].address: ...``) and reported at once.
"""

from __future__ import annotations

import hashlib
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qmp_exporter.collectors import COLLECTORS
from qmp_exporter.config.alert_labels import alert_labels
from qmp_exporter.config.durations import parse_duration
from qmp_exporter.config.schema import ConfigError as ConfigError  # re-exported
from qmp_exporter.config.schema import (
    Errors,
    decode_yaml,
    excerpt,
    join,
    kind,
    list_items,
    mapping,
    read_text,
    read_yaml,
)
from qmp_exporter.qmp import AddressError, parse_address
from qmp_exporter.qmp.framing import DEFAULT_MAX_LINE_BYTES

MODES = ("persistent", "poll")
#: Events pushed to Alertmanager when ``alerting.events`` is not given.
DEFAULT_ALERT_EVENTS = ("VNC_CONNECTED", "GUEST_PANICKED")
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
#: Label names the exporter sets itself on ``qemu_vm_info``.
RESERVED_LABELS = frozenset({"vm", "name", "uuid", "job", "instance"})
#: A QMP event name (QEMU's are upper case and well under 64 characters). The bound keeps a
#: lying monitor from putting an endless name into the ``event`` label.
EVENT_NAME = re.compile(r"^[A-Z][A-Z0-9_]{0,63}$")
#: Where Proxmox VE keeps one QMP socket per VM, named ``<vmid>.qmp``; its tools connect
#: per command, so the exporter must use ``poll`` mode there.
PROXMOX_DIRS = ("/var/run/qemu-server", "/run/qemu-server")
#: Fields a discovery ``name`` template may use (``vmid`` only in the Proxmox layout).
NAME_FIELDS = ("stem", "name")
PROXMOX_NAME_FIELDS = ("stem", "name", "vmid")
DEFAULT_RESCAN = 30.0
#: Bounds of ``qmp_max_line_bytes``: 64 KiB to 64 MiB.
MAX_LINE_BYTES_RANGE = (64 << 10, 64 << 20)


@dataclass(frozen=True, slots=True)
class MonitorConfig:
    """One QMP monitor to watch."""

    name: str
    address: str
    mode: str = "persistent"
    labels: tuple[tuple[str, str], ...] = ()
    #: Optional collectors to run (``None``: the defaults in ``collectors.DEFAULT_COLLECTORS``).
    collectors: tuple[str, ...] | None = None

    @property
    def label_dict(self) -> dict[str, str]:
        return dict(self.labels)


@dataclass(frozen=True, slots=True)
class AlertingConfig:
    """Where and on which events to push alerts to Alertmanager at once."""

    alertmanagers: tuple[str, ...] = ()
    events: tuple[str, ...] = DEFAULT_ALERT_EVENTS
    #: Constant labels on every pushed alert (e.g. ``hypervisor``), sorted by name.
    labels: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class DiscoveryConfig:
    """Monitors found by globbing for sockets, or (``processes``) in the command lines of
    the host's QEMU processes; see :mod:`qmp_exporter.polling.discovery`."""

    glob: str
    #: A ``str.format`` template over ``{stem}``, ``{name}`` (and ``{vmid}`` for Proxmox).
    name: str = "{stem}"
    mode: str = "persistent"
    labels: tuple[tuple[str, str], ...] = ()
    rescan: float = DEFAULT_RESCAN
    #: As for a monitor: ``None`` for the defaults.
    collectors: tuple[str, ...] | None = None
    #: The glob is in the Proxmox layout (``/var/run/qemu-server/<vmid>.qmp``).
    proxmox: bool = False
    #: ``- processes: true``: scan the host's QEMU processes (``glob`` is then empty).
    processes: bool = False


@dataclass(frozen=True, slots=True)
class ProbeConfig:
    """Who may be probed through ``/probe?target=...``.

    ``allow`` holds normalised globs (``unix:/var/run/qemu-server/*.qmp``,
    ``tcp:10.0.0.*:4444``); empty means only the addresses of ``poll``-mode monitors.
    """

    allow: tuple[str, ...] = ()
    #: Serve the known monitors as Prometheus HTTP service discovery JSON on ``/discovery``.
    http_sd: bool = False


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


def _duration(value: Any, path: str, errors: Errors, default: float, minimum: float) -> float:
    if value is None:
        return default
    if not isinstance(value, str):
        errors.add(path, f"expected a duration string like '15s', got {excerpt(value)}")
        return default
    try:
        seconds = parse_duration(value)
    except ValueError as err:
        errors.add(path, str(err))
        return default
    if seconds < minimum:
        errors.add(path, f"{value} is shorter than the minimum of {minimum:g}s")
        return default
    return seconds


def _labels(value: Any, path: str, errors: Errors) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    if not isinstance(value, Mapping):
        errors.add(path, f"expected a mapping of label names to values, got {kind(value)}")
        return ()
    labels = []
    for key, label_value in value.items():
        key_path = join(path, str(key))
        if not isinstance(key, str) or not _LABEL_NAME.match(key) or key.startswith("__"):
            errors.add(key_path, "not a valid Prometheus label name")
        elif key in RESERVED_LABELS:
            errors.add(key_path, f"label name is reserved ({', '.join(sorted(RESERVED_LABELS))})")
        elif not isinstance(label_value, str | int | float) or isinstance(label_value, bool):
            errors.add(key_path, f"expected a string value, got {kind(label_value)}")
        else:
            labels.append((key, str(label_value)))
    return tuple(sorted(labels))


def check_address(value: Any, path: str, errors: Errors) -> str | None:
    """Validate a monitor address; return it normalised (``unix:...``/``tcp:...``)."""
    if not isinstance(value, str):
        errors.add(path, f"expected an address string, got {kind(value)}")
        return None
    try:
        return str(parse_address(value))
    except AddressError as err:
        errors.add(path, str(err))
        return None


def _monitor(value: Any, path: str, errors: Errors) -> MonitorConfig | None:
    if not isinstance(value, Mapping):
        errors.add(path, f"expected a mapping with name and address, got {kind(value)}")
        return None
    raw = mapping(value, path, errors, {"name", "address", "mode", "labels", "collectors"})
    name = raw.get("name")
    ok = True
    if not isinstance(name, str) or not name.strip():
        errors.add(join(path, "name"), "required: a non-empty string")
        name = None
        ok = False
    if "address" not in raw:
        errors.add(join(path, "address"), "required")
        ok = False
    address = check_address(raw.get("address"), join(path, "address"), errors) if ok else None
    mode = raw.get("mode", "persistent")
    if mode not in MODES:
        errors.add(join(path, "mode"), f"{excerpt(mode)} is not one of {', '.join(MODES)}")
        ok = False
    labels = _labels(raw.get("labels"), join(path, "labels"), errors)
    collectors = _collectors(raw.get("collectors"), join(path, "collectors"), errors)
    if not ok or name is None or address is None:
        return None
    return MonitorConfig(
        name=name, address=address, mode=mode, labels=labels, collectors=collectors
    )


def _monitors(value: Any, errors: Errors) -> tuple[MonitorConfig, ...]:
    if value is None:
        return ()
    monitors: list[MonitorConfig] = []
    seen_names: dict[str, str] = {}
    seen_addresses: dict[str, str] = {}
    for path, item in list_items(value, "monitors", errors, "a list"):
        monitor = _monitor(item, path, errors)
        if monitor is None:
            continue
        if monitor.name in seen_names:
            errors.add(
                join(path, "name"),
                f"duplicate name {excerpt(monitor.name)} (also {seen_names[monitor.name]})",
            )
            continue
        if monitor.address in seen_addresses:
            errors.add(
                join(path, "address"),
                f"{monitor.address} is already {seen_addresses[monitor.address]}: "
                "QEMU serves one client per socket",
            )
            continue
        seen_names[monitor.name] = path
        seen_addresses[monitor.address] = path
        monitors.append(monitor)
    return tuple(monitors)


def _alerting(value: Any, errors: Errors) -> AlertingConfig:
    raw = mapping(value, "alerting", errors, {"alertmanagers", "events", "labels"})
    urls: list[str] = []
    managers = raw.get("alertmanagers", [])
    for path, url in list_items(managers, "alerting.alertmanagers", errors, "a list of URLs"):
        if not isinstance(url, str) or not re.match(r"^https?://[^/\s]+", url):
            errors.add(path, f"expected an http:// or https:// base URL, got {excerpt(url)}")
        else:
            urls.append(url.rstrip("/"))
    events = raw.get("events", list(DEFAULT_ALERT_EVENTS))
    names: list[str] = []
    for path, name in list_items(events, "alerting.events", errors, "a list of QMP event names"):
        if not isinstance(name, str) or not EVENT_NAME.match(name):
            errors.add(path, f"not a QMP event name: {excerpt(name)}")
        else:
            names.append(name)
    labels = alert_labels(raw.get("labels"), "alerting.labels", errors)
    return AlertingConfig(tuple(urls), tuple(names), labels)


def _collectors(value: Any, path: str, errors: Errors) -> tuple[str, ...] | None:
    """A ``collectors:`` list of names from ``COLLECTORS``; ``None`` (the defaults) when absent."""
    if value is None:
        return None
    names: list[str] = []
    for item_path, name in list_items(value, path, errors, "a list of collector names"):
        if not isinstance(name, str) or name not in COLLECTORS:
            errors.add(
                item_path, f"unknown collector {excerpt(name)} (known: {', '.join(COLLECTORS)})"
            )
        elif name in names:
            errors.add(item_path, f"collector {excerpt(name)} listed twice")
        else:
            names.append(name)
    return tuple(names)


def is_proxmox_glob(pattern: str) -> bool:
    """Whether a discovery glob looks in Proxmox VE's socket directory."""
    directory = pattern.rsplit("/", 1)[0]
    return directory in PROXMOX_DIRS


def _name_template(value: Any, path: str, errors: Errors, proxmox: bool) -> str:
    if not isinstance(value, str) or not value:
        errors.add(path, f"expected a non-empty template string, got {kind(value)}")
        return "{stem}"
    allowed = PROXMOX_NAME_FIELDS if proxmox else NAME_FIELDS
    try:
        parts = list(string.Formatter().parse(value))
    except ValueError as err:
        errors.add(path, f"not a valid template: {err}")
        return "{stem}"
    for _, field_name, spec, conversion in parts:
        if field_name is None:
            continue
        if field_name not in allowed:
            hint = "" if proxmox else " ({vmid} only in the Proxmox layout)"
            errors.add(
                path,
                f"unknown field {{{field_name}}}: use {', '.join('{' + f + '}' for f in allowed)}"
                + (hint if field_name == "vmid" else ""),
            )
            return "{stem}"
        if spec or conversion:
            errors.add(path, f"{{{field_name}}}: format specs and conversions are not allowed")
            return "{stem}"
    return value


def _discovery_entry(value: Any, path: str, errors: Errors) -> DiscoveryConfig | None:
    if not isinstance(value, Mapping):
        errors.add(path, f"expected a mapping with a glob, got {kind(value)}")
        return None
    if "processes" in value:
        return _process_entry(value, path, errors)
    allowed = {"glob", "name", "mode", "labels", "rescan", "collectors"}
    raw = mapping(value, path, errors, allowed)
    pattern = raw.get("glob")
    if not isinstance(pattern, str) or not pattern.startswith("/") or "\0" in pattern:
        errors.add(join(path, "glob"), f"required: an absolute path glob, got {excerpt(pattern)}")
        return None
    proxmox = is_proxmox_glob(pattern)
    mode = raw.get("mode", "poll" if proxmox else "persistent")
    if mode not in MODES:
        errors.add(join(path, "mode"), f"{excerpt(mode)} is not one of {', '.join(MODES)}")
        mode = "poll"
    elif proxmox and mode != "poll":
        errors.add(
            join(path, "mode"),
            "must be poll in the Proxmox layout: Proxmox connects to these sockets per "
            "command, and QEMU serves one client per socket",
        )
    name = _name_template(raw.get("name", "{stem}"), join(path, "name"), errors, proxmox)
    labels = _labels(raw.get("labels"), join(path, "labels"), errors)
    if proxmox and "vmid" in dict(labels):
        errors.add(join(path, "labels.vmid"), "set by the exporter in the Proxmox layout")
    rescan = _duration(raw.get("rescan"), join(path, "rescan"), errors, DEFAULT_RESCAN, 1.0)
    collectors = _collectors(raw.get("collectors"), join(path, "collectors"), errors)
    return DiscoveryConfig(pattern, name, mode, labels, rescan, collectors, proxmox)


def _process_entry(value: Mapping[str, Any], path: str, errors: Errors) -> DiscoveryConfig | None:
    """``- processes: true`` with optional ``mode``, ``labels``, ``collectors``, ``rescan``
    (the ``vm`` label comes from each command line, so no ``name``)."""
    raw = mapping(value, path, errors, {"processes", "mode", "labels", "rescan", "collectors"})
    if raw.get("processes") is not True:
        errors.add(join(path, "processes"), f"expected true, got {raw.get('processes')!r}")
        return None
    mode = raw.get("mode", "persistent")
    if mode not in MODES:
        errors.add(join(path, "mode"), f"{mode!r} is not one of {', '.join(MODES)}")
        mode = "persistent"
    labels = _labels(raw.get("labels"), join(path, "labels"), errors)
    rescan = _duration(raw.get("rescan"), join(path, "rescan"), errors, DEFAULT_RESCAN, 1.0)
    collectors = _collectors(raw.get("collectors"), join(path, "collectors"), errors)
    return DiscoveryConfig("", "", mode, labels, rescan, collectors, processes=True)


def _discovery(value: Any, errors: Errors) -> tuple[DiscoveryConfig, ...]:
    if value is None:
        return ()
    entries: list[DiscoveryConfig] = []
    seen: dict[str, str] = {}
    for path, item in list_items(value, "discovery", errors, "a list"):
        entry = _discovery_entry(item, path, errors)
        if entry is None:
            continue
        key = "processes" if entry.processes else entry.glob
        if key in seen:
            what = "processes" if entry.processes else "glob"
            errors.add(join(path, what), f"duplicate {what} (also {seen[key]})")
            continue
        seen[key] = path
        entries.append(entry)
    return tuple(entries)


def probe_pattern(value: Any) -> str:
    """Normalise a ``probe.allow`` glob to ``unix:/PATH-GLOB`` or ``tcp:HOST-GLOB:PORT-GLOB``;
    ``ValueError`` saying the expected forms otherwise."""
    if not isinstance(value, str) or not value or "\0" in value:
        raise ValueError(f"expected a socket path glob or HOST:PORT glob, got {excerpt(value)}")
    if value.startswith("unix:"):
        value = value[len("unix:") :]
    if value.startswith("/"):
        if any(part == ".." for part in value.split("/")):
            raise ValueError(f"{excerpt(value)}: '..' is not allowed in a path glob")
        return f"unix:{value}"
    if value.startswith("tcp:"):
        value = value[len("tcp:") :]
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port:
        raise ValueError(
            f"{excerpt(value)}: expected an absolute socket path glob (/var/run/qemu-server/*.qmp) "
            "or HOST:PORT (10.0.0.*:4444)"
        )
    return f"tcp:{host.lower()}:{port}"


def _probe(value: Any, errors: Errors) -> ProbeConfig:
    raw = mapping(value, "probe", errors, {"allow", "http_sd"})
    allow = raw.get("allow", [])
    patterns: list[str] = []
    for path, item in list_items(allow, "probe.allow", errors, "a list of globs"):
        try:
            patterns.append(probe_pattern(item))
        except ValueError as err:
            errors.add(path, str(err))
    http_sd = raw.get("http_sd", False)
    if not isinstance(http_sd, bool):
        errors.add("probe.http_sd", f"expected true or false, got {excerpt(http_sd)}")
        http_sd = False
    return ProbeConfig(tuple(patterns), http_sd)


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
    poll_interval = _duration(raw.get("poll_interval"), "poll_interval", errors, 15.0, 0.1)
    timeout = _duration(raw.get("timeout"), "timeout", errors, 5.0, 0.01)
    if timeout > poll_interval and "timeout" in raw:
        errors.add("timeout", "must not be longer than poll_interval")
    config = Config(
        poll_interval=poll_interval,
        timeout=timeout,
        monitors=_monitors(raw.get("monitors"), errors),
        alerting=_alerting(raw.get("alerting"), errors),
        discovery=_discovery(raw.get("discovery"), errors),
        probe=_probe(raw.get("probe"), errors),
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
