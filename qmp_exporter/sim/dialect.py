"""What QEMU says, by era: greetings, versions, run states and error replies.

``modern`` is QEMU 0.14 .. 10.x as the transcripts in ``shared/qmp-transcripts`` show it
(structured version, ``oob`` offered, ``qmp_capabilities`` required). ``2010`` is QEMU 0.13
(negotiation, version as a string); ``2009`` is QEMU 0.12 (no version in the greeting, no
negotiation: ``qmp_capabilities`` is an unknown command).
"""

from __future__ import annotations

import json
from typing import Any

DIALECTS = ("2009", "2010", "modern")

#: ``query-version`` of the simulated modern QEMU: the structured form of QEMU 7.2.
QEMU_VERSION: dict[str, Any] = {
    "qemu": {"micro": 22, "minor": 2, "major": 7},
    "package": "qmp-exporter simulator",
}
#: ``query-version`` of the old dialects: the version as a string.
_OLD_VERSIONS: dict[str, dict[str, Any]] = {
    "2009": {"qemu": "0.12.50", "package": ""},
    "2010": {"qemu": "0.13.0", "package": ""},
}
#: The greeting of each dialect, as sent (JSON and QEMU's CRLF).
GREETINGS: dict[str, dict[str, Any]] = {
    "2009": {"QMP": {"capabilities": []}},
    "2010": {"QMP": {"version": {"qemu": "0.13.0", "package": ""}, "capabilities": []}},
    "modern": {"QMP": {"version": QEMU_VERSION, "capabilities": ["oob"]}},
}
ENCODED_GREETINGS: dict[str, bytes] = {
    dialect: json.dumps(greeting).encode() + b"\r\n" for dialect, greeting in GREETINGS.items()
}

#: The QAPI RunState values (``query-status`` ``status``).
RUN_STATES = (
    "debug", "inmigrate", "internal-error", "io-error", "paused", "postmigrate", "prelaunch",
    "finish-migrate", "restore-vm", "running", "save-vm", "shutdown", "suspended", "watchdog",
    "guest-panicked", "colo",
)  # fmt: skip
#: States that ``cont`` refuses to leave without a reset (QEMU's ``runstate_needs_reset``).
NEEDS_RESET = frozenset({"shutdown", "guest-panicked", "internal-error"})


def check_dialect(dialect: str) -> str:
    """``dialect`` if it is one of :data:`DIALECTS`; ValueError otherwise."""
    if dialect not in DIALECTS:
        raise ValueError(f"dialect must be one of {DIALECTS}")
    return dialect


def dialect_version(dialect: str) -> dict[str, Any]:
    """``query-version`` as each dialect answers it."""
    return QEMU_VERSION if dialect == "modern" else _OLD_VERSIONS[dialect]


def dialect_status(dialect: str, status: str) -> dict[str, Any]:
    """``query-status`` as each dialect answers it (``status`` only in the modern one)."""
    running = status == "running"
    if dialect == "modern":
        return {"status": status, "singlestep": False, "running": running}
    return {"running": running, "singlestep": False}


def error(error_class: str, desc: str) -> dict[str, Any]:
    """The ``error`` member of a QMP reply."""
    return {"class": error_class, "desc": desc}


class CommandFailed(Exception):
    """A simulated command answers with QEMU's ``{"error": ...}``."""

    def __init__(self, error_class: str, desc: str) -> None:
        super().__init__(f"{error_class}: {desc}")
        self.error = error(error_class, desc)
