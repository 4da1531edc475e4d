"""Defensive readers for QMP answers: wrong JSON types or absurd numbers raise
``TypeError``/``ValueError`` so that only the collector reading them fails; text a monitor
supplies for a label value is cut to a bound by :func:`bounded`."""

from __future__ import annotations

import math
from typing import Any

from qmp_exporter.textformat import CUT_MARKER, MAX_LABEL_CHARS, label_text

__all__ = [
    "CUT_MARKER", "MAX_COUNTER", "MAX_LABEL_CHARS", "as_bool", "as_count", "as_dict", "as_list",
    "as_number", "as_str", "bounded",
]  # fmt: skip

#: QEMU's counters are uint64; anything larger is not a real answer.
MAX_COUNTER = 2**64 - 1


def as_dict(value: Any, what: str) -> dict[str, Any]:
    """``value`` if it is a JSON object, else ``TypeError`` naming ``what``."""
    if not isinstance(value, dict):
        raise TypeError(f"{what}: expected an object, got {type(value).__name__}")
    return value


def as_list(value: Any, what: str) -> list[Any]:
    """``value`` if it is a JSON array, else ``TypeError`` naming ``what``."""
    if not isinstance(value, list):
        raise TypeError(f"{what}: expected an array, got {type(value).__name__}")
    return value


def as_count(value: Any, what: str) -> int:
    """A non-negative integer no larger than a uint64."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what}: expected an integer, got {type(value).__name__}")
    if not 0 <= value <= MAX_COUNTER:
        raise ValueError(f"{what}: {value} is outside 0..2**64-1")
    return value


def as_number(value: Any, what: str) -> float:
    """A finite number (int or float, not bool) no larger in size than a uint64."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{what}: expected a number, got {type(value).__name__}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{what}: {value} is not finite")
    if abs(value) > MAX_COUNTER:
        raise ValueError(f"{what}: {value} is out of range")
    return value


def as_bool(value: Any, what: str) -> bool:
    """A JSON boolean."""
    if not isinstance(value, bool):
        raise TypeError(f"{what}: expected a boolean, got {type(value).__name__}")
    return value


def as_str(value: Any, what: str) -> str:
    """A JSON string."""
    if not isinstance(value, str):
        raise TypeError(f"{what}: expected a string, got {type(value).__name__}")
    return value


def bounded(value: str, limit: int = MAX_LABEL_CHARS) -> str:
    """``value`` valid UTF-8 and at most ``limit`` characters (see
    :func:`~qmp_exporter.textformat.label_text`): a monitor can neither grow a label (or the
    exposition) without bound nor send a lone surrogate that no exposition can encode."""
    return label_text(value, limit)
