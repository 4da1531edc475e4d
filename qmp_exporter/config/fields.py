"""Field parsers shared by several config sections: ``mode``, ``labels``, ``collectors``
and durations."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from qmp_exporter.collectors import COLLECTORS
from qmp_exporter.config.alert_labels import LABEL_NAME
from qmp_exporter.config.durations import parse_duration
from qmp_exporter.config.schema import Errors, excerpt, join, kind, list_items

MODES = ("persistent", "poll")
#: Label names the exporter sets itself on ``qemu_vm_info``.
RESERVED_LABELS = frozenset({"vm", "name", "uuid", "job", "instance"})


def duration_field(value: Any, path: str, errors: Errors, default: float, minimum: float) -> float:
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


def labels_field(value: Any, path: str, errors: Errors) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    if not isinstance(value, Mapping):
        errors.add(path, f"expected a mapping of label names to values, got {kind(value)}")
        return ()
    labels = []
    for key, label_value in value.items():
        key_path = join(path, str(key))
        if not isinstance(key, str) or not LABEL_NAME.match(key) or key.startswith("__"):
            errors.add(key_path, "not a valid Prometheus label name")
        elif key in RESERVED_LABELS:
            errors.add(key_path, f"label name is reserved ({', '.join(sorted(RESERVED_LABELS))})")
        elif not isinstance(label_value, str | int | float) or isinstance(label_value, bool):
            errors.add(key_path, f"expected a string value, got {kind(label_value)}")
        else:
            labels.append((key, str(label_value)))
    return tuple(sorted(labels))


def collectors_field(value: Any, path: str, errors: Errors) -> tuple[str, ...] | None:
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
