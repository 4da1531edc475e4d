"""The exporter's YAML configuration: strict parsing into frozen dataclasses.

Every error is collected with its path (``monitors[2].address: ...``) and reported at once.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from qmp_exporter.durations import parse_duration
from qmp_exporter.qmp import AddressError, parse_address

MODES = ("persistent", "poll")
#: Events pushed to Alertmanager when ``alerting.events`` is not given.
DEFAULT_ALERT_EVENTS = ("VNC_CONNECTED", "GUEST_PANICKED")
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
#: Label names the exporter sets itself on ``qemu_vm_info``.
RESERVED_LABELS = frozenset({"vm", "name", "uuid", "job", "instance"})
_EVENT_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")


class ConfigError(Exception):
    """A configuration that cannot be used; ``errors`` lists every problem with its path."""

    def __init__(self, errors: list[str], source: str = "config") -> None:
        self.errors = errors
        self.source = source
        super().__init__(
            f"{source}: {len(errors)} error(s):\n" + "\n".join(f"- {e}" for e in errors)
        )


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


@dataclass(frozen=True, slots=True)
class Config:
    """The whole configuration."""

    poll_interval: float = 15.0
    timeout: float = 5.0
    monitors: tuple[MonitorConfig, ...] = ()
    alerting: AlertingConfig = field(default_factory=AlertingConfig)


class _Errors:
    """Collects error messages with their paths."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, path: str, message: str) -> None:
        self.items.append(f"{path}: {message}" if path else message)


def _mapping(value: Any, path: str, errors: _Errors, allowed: set[str]) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        errors.add(path, f"expected a mapping, got {_kind(value)}")
        return {}
    for key in value:
        if key not in allowed:
            errors.add(
                _join(path, str(key)), f"unknown key (allowed: {', '.join(sorted(allowed))})"
            )
    return dict(value)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _kind(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__


def _duration(value: Any, path: str, errors: _Errors, default: float, minimum: float) -> float:
    if value is None:
        return default
    if not isinstance(value, str):
        errors.add(path, f"expected a duration string like '15s', got {value!r}")
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


def _labels(value: Any, path: str, errors: _Errors) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    if not isinstance(value, Mapping):
        errors.add(path, f"expected a mapping of label names to values, got {_kind(value)}")
        return ()
    labels = []
    for key, label_value in value.items():
        key_path = _join(path, str(key))
        if not isinstance(key, str) or not _LABEL_NAME.match(key) or key.startswith("__"):
            errors.add(key_path, "not a valid Prometheus label name")
        elif key in RESERVED_LABELS:
            errors.add(key_path, f"label name is reserved ({', '.join(sorted(RESERVED_LABELS))})")
        elif not isinstance(label_value, str | int | float) or isinstance(label_value, bool):
            errors.add(key_path, f"expected a string value, got {_kind(label_value)}")
        else:
            labels.append((key, str(label_value)))
    return tuple(sorted(labels))


def check_address(value: Any, path: str, errors: _Errors) -> str | None:
    """Validate a monitor address; return it normalised (``unix:...``/``tcp:...``)."""
    if not isinstance(value, str):
        errors.add(path, f"expected an address string, got {_kind(value)}")
        return None
    try:
        return str(parse_address(value))
    except AddressError as err:
        errors.add(path, str(err))
        return None


def _monitor(value: Any, path: str, errors: _Errors) -> MonitorConfig | None:
    if not isinstance(value, Mapping):
        errors.add(path, f"expected a mapping with name and address, got {_kind(value)}")
        return None
    raw = _mapping(value, path, errors, {"name", "address", "mode", "labels"})
    name = raw.get("name")
    ok = True
    if not isinstance(name, str) or not name.strip():
        errors.add(_join(path, "name"), "required: a non-empty string")
        ok = False
    if "address" not in raw:
        errors.add(_join(path, "address"), "required")
        ok = False
    address = check_address(raw.get("address"), _join(path, "address"), errors) if ok else None
    mode = raw.get("mode", "persistent")
    if mode not in MODES:
        errors.add(_join(path, "mode"), f"{mode!r} is not one of {', '.join(MODES)}")
        ok = False
    labels = _labels(raw.get("labels"), _join(path, "labels"), errors)
    if not ok or address is None:
        return None
    return MonitorConfig(name=name, address=address, mode=mode, labels=labels)


def _monitors(value: Any, errors: _Errors) -> tuple[MonitorConfig, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        errors.add("monitors", f"expected a list, got {_kind(value)}")
        return ()
    monitors: list[MonitorConfig] = []
    seen_names: dict[str, int] = {}
    seen_addresses: dict[str, int] = {}
    for index, item in enumerate(value):
        path = f"monitors[{index}]"
        monitor = _monitor(item, path, errors)
        if monitor is None:
            continue
        if monitor.name in seen_names:
            errors.add(
                _join(path, "name"),
                f"duplicate name {monitor.name!r} (also monitors[{seen_names[monitor.name]}])",
            )
            continue
        if monitor.address in seen_addresses:
            errors.add(
                _join(path, "address"),
                f"{monitor.address} is already monitors[{seen_addresses[monitor.address]}]: "
                "QEMU serves one client per socket",
            )
            continue
        seen_names[monitor.name] = index
        seen_addresses[monitor.address] = index
        monitors.append(monitor)
    return tuple(monitors)


def _alerting(value: Any, errors: _Errors) -> AlertingConfig:
    raw = _mapping(value, "alerting", errors, {"alertmanagers", "events"})
    urls: list[str] = []
    managers = raw.get("alertmanagers", [])
    if not isinstance(managers, list):
        errors.add("alerting.alertmanagers", f"expected a list of URLs, got {_kind(managers)}")
        managers = []
    for index, url in enumerate(managers):
        path = f"alerting.alertmanagers[{index}]"
        if not isinstance(url, str) or not re.match(r"^https?://[^/\s]+", url):
            errors.add(path, f"expected an http:// or https:// base URL, got {url!r}")
        else:
            urls.append(url.rstrip("/"))
    events = raw.get("events", list(DEFAULT_ALERT_EVENTS))
    names: list[str] = []
    if not isinstance(events, list):
        errors.add("alerting.events", f"expected a list of QMP event names, got {_kind(events)}")
        events = []
    for index, name in enumerate(events):
        if not isinstance(name, str) or not _EVENT_NAME.match(name):
            errors.add(f"alerting.events[{index}]", f"not a QMP event name: {name!r}")
        else:
            names.append(name)
    return AlertingConfig(tuple(urls), tuple(names))


def parse_config(data: Any, source: str = "config") -> Config:
    """Validate a decoded YAML document; raise :class:`ConfigError` listing every problem."""
    errors = _Errors()
    if data is None:
        data = {}
    allowed = {"poll_interval", "timeout", "monitors", "alerting"}
    raw = _mapping(data, "", errors, allowed)
    if not isinstance(data, Mapping):
        raise ConfigError(errors.items, source)
    poll_interval = _duration(raw.get("poll_interval"), "poll_interval", errors, 15.0, 0.1)
    timeout = _duration(raw.get("timeout"), "timeout", errors, 5.0, 0.01)
    if timeout > poll_interval and "timeout" in raw:
        errors.add("timeout", "must not be longer than poll_interval")
    config = Config(
        poll_interval=poll_interval,
        timeout=timeout,
        monitors=_monitors(raw.get("monitors"), errors),
        alerting=_alerting(raw.get("alerting"), errors),
    )
    if errors.items:
        raise ConfigError(errors.items, source)
    return config


class _StrictLoader(yaml.SafeLoader):
    """A safe YAML loader that rejects duplicate keys instead of keeping the last."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if isinstance(key, list | dict):
            continue
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def parse_yaml(text: str, source: str = "config") -> Config:
    """Parse YAML text into a :class:`Config`."""
    try:
        data = yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as err:
        raise ConfigError([f"not valid YAML: {err}".replace("\n", " ")], source) from err
    return parse_config(data, source)


def load_config(path: str | Path) -> Config:
    """Read and validate a config file; :class:`ConfigError` on any problem."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError([f"cannot read: {err}"], str(path)) from err
    return parse_yaml(text, str(path))
