"""What QEMU says, by era: greetings, versions, run states and error replies.

``modern`` is QEMU 0.14 .. 10.x as the transcripts in ``shared/qmp-transcripts`` show it
(structured version, ``oob`` offered, ``qmp_capabilities`` required). ``2010`` is QEMU 0.13
(negotiation, version as a string); ``2009`` is QEMU 0.12 (no version in the greeting, no
negotiation: ``qmp_capabilities`` is an unknown command).

Within ``modern``, :data:`QEMU_VERSIONS` are the versions whose answers the simulator copies
(docs/qemu-versions.md): ``7.2`` (the default) and ``10.0`` (no ``singlestep`` in
``query-status``, its own version and package, ``inserted.active`` in ``query-block``,
``zone_append_*`` block stats, the ``cryptodev`` stats schema).
"""

from __future__ import annotations

import json
from typing import Any

DIALECTS = ("2009", "2010", "modern")
QEMU_VERSIONS = ("7.2", "10.0")

#: ``query-version`` of the simulated modern QEMU: the structured form of QEMU 7.2.
QEMU_VERSION: dict[str, Any] = {
    "qemu": {"micro": 22, "minor": 2, "major": 7},
    "package": "qmp-exporter simulator",
}
#: ``query-version`` of each modern version (10.0's as Debian's bookworm-backports build says it).
MODERN_VERSIONS: dict[str, dict[str, Any]] = {
    "7.2": QEMU_VERSION,
    "10.0": {
        "qemu": {"micro": 2, "minor": 0, "major": 10},
        "package": "Debian 1:10.0.2+ds-2+deb13u1~bpo12+1",
    },
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
_ENCODED_MODERN_GREETINGS: dict[str, bytes] = {
    version: json.dumps({"QMP": {"version": answer, "capabilities": ["oob"]}}).encode() + b"\r\n"
    for version, answer in MODERN_VERSIONS.items()
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


def check_qemu_version(version: str) -> str:
    """``version`` if it is one of :data:`QEMU_VERSIONS`; ValueError otherwise."""
    if version not in QEMU_VERSIONS:
        raise ValueError(f"qemu_version must be one of {QEMU_VERSIONS}")
    return version


def encoded_greeting(dialect: str, qemu_version: str = "7.2") -> bytes:
    """The greeting as sent (JSON and QEMU's CRLF)."""
    if dialect == "modern":
        return _ENCODED_MODERN_GREETINGS[qemu_version]
    return ENCODED_GREETINGS[dialect]


def dialect_version(dialect: str, qemu_version: str = "7.2") -> dict[str, Any]:
    """``query-version`` as each dialect (and modern version) answers it."""
    return MODERN_VERSIONS[qemu_version] if dialect == "modern" else _OLD_VERSIONS[dialect]


def dialect_status(dialect: str, status: str, qemu_version: str = "7.2") -> dict[str, Any]:
    """``query-status`` as each dialect answers it (``status`` only in the modern one;
    ``singlestep``, deprecated in 8.1, no longer in 10.0)."""
    running = status == "running"
    if dialect == "modern":
        if qemu_version == "7.2":
            return {"status": status, "singlestep": False, "running": running}
        return {"status": status, "running": running}
    return {"running": running, "singlestep": False}


#: ``query-stats-schemas`` of a QEMU without KVM: 10.0 lists its ``cryptodev`` provider.
CRYPTODEV_STATS_SCHEMA: dict[str, Any] = {
    "provider": "cryptodev",
    "target": "cryptodev",
    "stats": [
        {"name": f"{kind}-{operation}-{unit}", "exponent": 0, "type": "cumulative"}
        for kind, operations in (
            ("asym", ("verify", "sign", "decrypt", "encrypt")),
            ("sym", ("decrypt", "encrypt")),
        )
        for unit in ("bytes", "ops")
        for operation in operations
    ],
}


def stats_schemas(qemu_version: str) -> list[dict[str, Any]]:
    """``query-stats-schemas`` without KVM."""
    return [] if qemu_version == "7.2" else [CRYPTODEV_STATS_SCHEMA]


#: Block statistics 10.0 adds (zoned storage's append).
ZONE_APPEND_STAT_KEYS = (
    "zone_append_operations", "zone_append_bytes", "zone_append_merged",
    "zone_append_total_time_ns", "failed_zone_append_operations",
    "invalid_zone_append_operations",
)  # fmt: skip


def error(error_class: str, desc: str) -> dict[str, Any]:
    """The ``error`` member of a QMP reply."""
    return {"class": error_class, "desc": desc}


class CommandFailed(Exception):
    """A simulated command answers with QEMU's ``{"error": ...}``."""

    def __init__(self, error_class: str, desc: str) -> None:
        super().__init__(f"{error_class}: {desc}")
        self.error = error(error_class, desc)
