"""Prometheus-style durations: ``500ms``, ``15s``, ``2m``, ``1h30m``."""

from __future__ import annotations

import re

from qmp_exporter.config.schema import excerpt

_UNITS = {"y": 365 * 86400, "w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1, "ms": 0.001}
_PATTERN = re.compile(
    r"^(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?$"
)


def parse_duration(text: str) -> float:
    """Seconds in a duration string; ``ValueError`` saying the expected form otherwise."""
    match = _PATTERN.match(text) if isinstance(text, str) and text else None
    if match is None or not any(match.groups()):
        raise ValueError(f"{excerpt(text)} is not a duration (expected e.g. 500ms, 15s, 2m, 1h30m)")
    return sum(
        int(value) * factor
        for value, factor in zip(match.groups(), _UNITS.values(), strict=True)
        if value
    )
