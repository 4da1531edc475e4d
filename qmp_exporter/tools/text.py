"""Text a monitor sent, made safe for a terminal (``shell``) or a table cell (``inventory``).

A monitor is not trusted: an event name, an error's ``desc`` or a version string may carry
escape sequences that retitle the window, clear the screen or forge output. Every character
that is not printable (C0 and C1 controls such as ESC, BEL and CSI, DEL, format characters
such as a right-to-left override, line separators, lone surrogates) is written as its Python
escape, so ``EV\\x1b[2J`` shows as ``EV\\x1b[2J``; everything else is kept as it is.
"""

from __future__ import annotations

import json
from typing import Any


def printable(text: str) -> str:
    """``text`` with each character that is not printable written as its escape (``\\x1b``)."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def printable_json(value: Any, indent: int | None = 2) -> str:
    """``value`` as JSON (non-ASCII text kept readable) with every character that is not
    printable escaped the JSON way (``\\u001b``, ``\\u009b``): still valid JSON."""
    text = json.dumps(value, indent=indent, ensure_ascii=False)
    if text.isprintable():
        return text
    # json.dumps has escaped C0 controls already; what is left (DEL, C1, format characters,
    # separators, lone surrogates) is inside strings, where \\uXXXX is valid
    return "".join(c if c.isprintable() or c == "\n" else json.dumps(c)[1:-1] for c in text)
