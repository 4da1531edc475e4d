"""What the exporter knows about one VM: immutable, replaced whole after every poll and
every event, and published by its source (see :mod:`qmp_exporter.fleet.source`)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from operator import attrgetter

from qmp_exporter.config import MonitorConfig
from qmp_exporter.textformat import Sample

#: QAPI RunState values (QEMU 7.2); ``qemu_vm_status`` has a series for each.
RUN_STATES = (
    "debug",
    "inmigrate",
    "internal-error",
    "io-error",
    "paused",
    "postmigrate",
    "prelaunch",
    "finish-migrate",
    "restore-vm",
    "running",
    "save-vm",
    "shutdown",
    "suspended",
    "watchdog",
    "guest-panicked",
    "colo",
)


@dataclass(frozen=True, slots=True)
class VncState:
    """``query-vnc``: the server's address and how many clients are connected."""

    enabled: bool
    host: str = ""
    service: str = ""
    family: str = ""
    auth: str = ""
    clients: int = 0


@dataclass(frozen=True, slots=True)
class Identity:
    """What does not change while a connection lasts: version, name, uuid."""

    version: str = ""
    package: str = ""
    name: str = ""
    uuid: str = ""


@dataclass(frozen=True, slots=True)
class Counters:
    """What a poller has counted since it started (kept across reconnects and restarts)."""

    #: Events received, by name, sorted (pre-created at 0 on the first held connection).
    events: tuple[tuple[str, int], ...] = ()
    #: Failed polls, by reason (every reason, at 0 from the start).
    poll_errors: tuple[tuple[str, int], ...] = ()
    #: QMP sessions opened.
    connections: int = 0
    #: VNC clients that left before logging in; ``None`` until a held connection saw VNC
    #: enabled (then 0 and up).
    vnc_handshake_failures: int | None = None


@dataclass(frozen=True, slots=True)
class VMState:
    """One VM as its poller last published it: the monitor it watches (name, address, mode,
    configured labels), the latest poll and the counters. ``up`` False means the poll's
    fields are stale or empty."""

    monitor: MonitorConfig
    up: bool = False
    identity: Identity | None = None
    status: str = ""
    running: bool = False
    vnc: VncState | None = None
    #: Samples from the optional collectors.
    samples: tuple[Sample, ...] = ()
    #: (collector name, success) for each collector that ran.
    collector_results: tuple[tuple[str, bool], ...] = ()
    #: Why the last poll failed: one of ERROR_REASONS, or "" when it succeeded.
    error_reason: str = ""
    error: str = ""
    #: Wall-clock time of the last successful poll (0 for never).
    last_success: float = 0.0
    #: Wall-clock time the last poll ended (0 for never).
    last_poll: float = 0.0
    poll_duration: float = 0.0
    counters: Counters = Counters()

    @property
    def name(self) -> str:
        """The ``vm`` label: the monitor's name."""
        return self.monitor.name

    def same_but_timing(self, other: VMState) -> bool:
        """Equal in everything but when the poll happened and how long it took: every field
        but :data:`TIMING_FIELDS`, so a field added later is compared without being listed."""
        return _BUT_TIMING(self) == _BUT_TIMING(other)


#: The fields of :class:`VMState` that a routine poll changes, and nothing else.
TIMING_FIELDS = ("last_success", "last_poll", "poll_duration")
#: The others, as one tuple (compared item by item, each by identity first: a poll's state
#: shares most of its fields with the one before).
_BUT_TIMING = attrgetter(*(f.name for f in fields(VMState) if f.name not in TIMING_FIELDS))
