"""``alerting.labels``: constant labels (e.g. ``hypervisor``) on every alert the exporter
pushes to Alertmanager, validated and bounded."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from qmp_exporter.config.schema import Errors, join, kind, shorten

#: A Prometheus label name (names starting with ``__`` are refused separately).
LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
#: Label names a pushed alert sets itself, so ``alerting.labels`` may not.
ALERT_OWN_LABELS = frozenset({"vm", "alertname", "event", "job", "instance"})
#: Bounds of ``alerting.labels``: how many, and the longest name and value.
MAX_ALERT_LABELS = 16
MAX_ALERT_LABEL_NAME = 64
MAX_ALERT_LABEL_VALUE = 256


def alert_labels(value: Any, path: str, errors: Errors) -> tuple[tuple[str, str], ...]:
    """The labels at ``path`` as sorted ``(name, value)`` pairs; each problem is an error."""
    if value is None:
        return ()
    if not isinstance(value, Mapping):
        errors.add(path, f"expected a mapping of label names to values, got {kind(value)}")
        return ()
    if len(value) > MAX_ALERT_LABELS:
        errors.add(path, f"at most {MAX_ALERT_LABELS} labels, got {len(value)}")
        return ()
    labels = []
    for key, label_value in value.items():
        key_path = join(path, shorten(str(key)))
        if not _is_label_name(key):
            errors.add(
                key_path,
                f"not a Prometheus label name of at most {MAX_ALERT_LABEL_NAME} characters",
            )
        elif key in ALERT_OWN_LABELS:
            errors.add(
                key_path,
                f"the pushed alert sets this label itself ({', '.join(sorted(ALERT_OWN_LABELS))})",
            )
        elif not isinstance(label_value, str | int | float) or isinstance(label_value, bool):
            errors.add(key_path, f"expected a string value, got {kind(label_value)}")
        elif not 0 < len(str(label_value)) <= MAX_ALERT_LABEL_VALUE:
            errors.add(key_path, f"expected a value of 1 to {MAX_ALERT_LABEL_VALUE} characters")
        else:
            labels.append((key, str(label_value)))
    return tuple(sorted(labels))


def _is_label_name(key: Any) -> bool:
    return (
        isinstance(key, str)
        and len(key) <= MAX_ALERT_LABEL_NAME
        and bool(LABEL_NAME.match(key))
        and not key.startswith("__")
    )
