"""``monitors``: the QMP monitors to watch (:class:`MonitorConfig`), each with a unique
name and address."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from qmp_exporter.config.fields import MODES, collectors_field, labels_field
from qmp_exporter.config.schema import Errors, excerpt, join, kind, list_items, mapping
from qmp_exporter.qmp import AddressError, parse_address


@dataclass(frozen=True, slots=True)
class MonitorConfig:
    """One QMP monitor to watch."""

    name: str
    address: str
    mode: str = "persistent"
    labels: tuple[tuple[str, str], ...] = ()
    #: Optional collectors to run (``None``: the defaults in ``collectors.DEFAULT_COLLECTORS``).
    collectors: tuple[str, ...] | None = None
    #: For a monitor read from a process's command line: that process's PID and user ids
    #: (real, effective), which the socket's peer must match once connected (``None``: a
    #: configured or globbed monitor, not checked).
    process: tuple[int, tuple[int, int]] | None = None

    @property
    def label_dict(self) -> dict[str, str]:
        return dict(self.labels)


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
    labels = labels_field(raw.get("labels"), join(path, "labels"), errors)
    collectors = collectors_field(raw.get("collectors"), join(path, "collectors"), errors)
    if not ok or name is None or address is None:
        return None
    return MonitorConfig(
        name=name, address=address, mode=mode, labels=labels, collectors=collectors
    )


def parse_monitors(value: Any, errors: Errors) -> tuple[MonitorConfig, ...]:
    """The ``monitors`` list; a duplicate name or address is an error."""
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
