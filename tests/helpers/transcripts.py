"""Real QMP transcripts of QEMU 7.2 and 10.0, the same scenarios on both (tests/transcripts/,
README there), read as the exporter would have seen them: for parser tests over the matrix.

``answer("10.0", "01", "query-status")`` is the whole response QEMU sent to that command
(``{"return": ...}`` or ``{"error": ...}``); ``events("7.2", "02")`` the events in order.
``earlier("BLOCKSTATS_06")`` is a response from an earlier recording of QEMU 7.2 that the
scenarios above do not hold (a libvirt-style command line, an incoming migration, a disk
with a backing file): ``earlier-qemu-7.2.json``, each with the scenario it was recorded in.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from tests.helpers.qemu_versions import VERSIONS

TRANSCRIPTS = Path(__file__).resolve().parents[1] / "transcripts"

__all__ = ["VERSIONS", "answer", "earlier", "events", "greeting", "messages"]


@cache
def _lines(version: str, scenario: str) -> tuple[tuple[str, Any], ...]:
    (path,) = (TRANSCRIPTS / f"qemu-{version}").glob(f"{scenario}-*.jsonl")
    lines = []
    for row in path.read_text().splitlines():
        line = json.loads(row)
        if line["dir"] in ("send", "recv"):
            lines.append((line["dir"], json.loads(line["raw"])))
    return tuple(lines)


def messages(version: str, scenario: str) -> list[tuple[str, Any]]:
    """``("send" | "recv", message)`` pairs of one transcript (file ``NN-*.jsonl``), in order."""
    return list(_lines(version, scenario))


def greeting(version: str, scenario: str = "01") -> dict[str, Any]:
    """The QMP greeting QEMU sent."""
    return next(message for way, message in _lines(version, scenario) if "QMP" in message)


def answer(
    version: str, scenario: str, command: str, arguments: dict[str, Any] | None = None, nth: int = 0
) -> dict[str, Any]:
    """The response to the ``nth`` time ``command`` (with exactly ``arguments``) was sent."""
    found = 0
    waiting = False
    for way, message in _lines(version, scenario):
        if way == "send":
            waiting = message.get("execute") == command and message.get("arguments") == arguments
        elif waiting and ("return" in message or "error" in message):
            if found == nth:
                return dict(message)
            found += 1
            waiting = False
    raise LookupError(f"QEMU {version} transcript {scenario}: no {command} {arguments} #{nth}")


def events(version: str, scenario: str) -> list[dict[str, Any]]:
    """The events QEMU sent, in order."""
    return [message for way, message in _lines(version, scenario) if "event" in message]


def shape(value: Any) -> Any:
    """Members and types, not values: what a client's parser depends on."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in sorted(value.items())}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return type(value).__name__


@cache
def _earlier() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((TRANSCRIPTS / "earlier-qemu-7.2.json").read_text())
    return data


def earlier(name: str) -> Any:
    """A whole response from the earlier QEMU 7.2 recording, by its name."""
    return _earlier()[name]["response"]
