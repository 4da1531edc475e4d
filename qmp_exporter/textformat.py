"""Metric families and the text exposition format (0.0.4); no QMP and no I/O here."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

Labels = tuple[tuple[str, str], ...]
#: One sample: (family name, labels without ``vm``, value).
Sample = tuple[str, Labels, float]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: Longest label value taken from outside (a monitor, a command line, a file name).
MAX_LABEL_CHARS = 128
#: Ends a label value that was cut to its bound.
CUT_MARKER = "\u2026"
_SURROGATES = re.compile("[\ud800-\udfff]")


def label_text(value: str, limit: int = MAX_LABEL_CHARS) -> str:
    """``value`` made fit for a label where it enters: valid UTF-8 (a lone surrogate, from a
    JSON ``\\udcff`` escape or bytes decoded with ``surrogateescape``, becomes U+FFFD) and at
    most ``limit`` characters (else its first ``limit - 1`` and :data:`CUT_MARKER`)."""
    if len(value) > limit:
        value = value[: limit - 1] + CUT_MARKER
    if value.isascii():  # the common case, checked without a copy
        return value
    try:
        value.encode()
    except UnicodeEncodeError:
        value = _SURROGATES.sub("\ufffd", value)
    return value


@dataclass(frozen=True, slots=True)
class Family:
    """A metric family: its full name (counters end in ``_total``), type and help text."""

    name: str
    kind: Literal["gauge", "counter", "untyped"]
    help: str

    def header(self) -> str:
        """The ``# HELP`` and ``# TYPE`` lines."""
        return f"# HELP {self.name} {escape_help(self.help)}\n# TYPE {self.name} {self.kind}\n"

    def sample(self, labels: Labels, value: float) -> Sample:
        """One sample of this family (labels without ``vm``)."""
        return (self.name, labels, value)


def escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def escape_label_value(value: str) -> str:
    """Escape a label value for the text format: backslash, double quote and newline."""
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return value


def format_value(value: float) -> str:
    """A sample value as the text format writes it."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def format_labels(labels: Iterable[tuple[str, str]]) -> str:
    """``{a="1",b="2"}``, or an empty string for no labels."""
    body = ",".join(f'{name}="{escape_label_value(value)}"' for name, value in labels)
    return f"{{{body}}}" if body else ""
