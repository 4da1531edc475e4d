"""One simulated guest: its state, its answers to queries in QEMU's dialect, its events.

Change it with its methods (``pause()``, ``vnc_connect()``, ...); every session serving it
sends the resulting events to its negotiated client. Answers without arguments are cached
as encoded bytes until the VM changes.
"""

from __future__ import annotations

import json
import time
import uuid as uuid_module
from collections import deque
from collections.abc import Callable, Collection, Sequence
from typing import Any

from qmp_exporter.sim.dialect import (
    NEEDS_RESET,
    RUN_STATES,
    ZONE_APPEND_STAT_KEYS,
    CommandFailed,
    check_dialect,
    check_qemu_version,
    dialect_status,
    dialect_version,
    stats_schemas,
)

#: Recent commands kept per VM with their arguments (all are counted in ``command_counts``).
COMMAND_LOG_SIZE = 64

BLOCK_STAT_KEYS = (
    "unmap_operations", "unmap_merged", "flush_total_time_ns", "wr_highest_offset",
    "wr_total_time_ns", "failed_wr_operations", "failed_rd_operations", "wr_merged", "wr_bytes",
    "failed_unmap_operations", "failed_flush_operations", "rd_total_time_ns",
    "invalid_unmap_operations", "flush_operations", "wr_operations", "unmap_bytes", "rd_merged",
    "rd_bytes", "unmap_total_time_ns", "invalid_flush_operations", "idle_time_ns",
    "rd_operations", "invalid_wr_operations", "invalid_rd_operations",
)  # fmt: skip


EventListener = Callable[[bytes], None]


class SimulatedVM:
    """The state of one simulated guest, its answers to queries, and the events it emits.

    Change it with the methods (``pause()``, ``vnc_connect()``, ...); every server serving it
    sends the resulting events to its negotiated client.
    """

    __slots__ = (
        "_answers",
        "_listeners",
        "_next_vnc_port",
        "balloon",
        "block_devices",
        "command_counts",
        "command_log",
        "commands",
        "cpus",
        "dialect",
        "kvm",
        "memory",
        "name",
        "qemu_version",
        "status",
        "uuid",
        "vnc_clients",
        "vnc_enabled",
        "vnc_host",
        "vnc_service",
    )

    def __init__(
        self,
        name: str | None,
        *,
        uuid: str | None = None,
        status: str = "running",
        vnc: bool = True,
        vnc_host: str = "127.0.0.1",
        vnc_service: str = "5900",
        balloon: int | None = None,
        memory: int = 64 << 20,
        cpus: int = 1,
        kvm: bool = False,
        block_devices: Sequence[str] = (),
        dialect: str = "modern",
        commands: Collection[str] | None = None,
        qemu_version: str = "7.2",
    ) -> None:
        if status not in RUN_STATES:
            raise ValueError(f"{status!r} is not a QEMU RunState")
        self.name = name
        #: The era of QEMU simulated (see :mod:`qmp_exporter.sim.dialect`).
        self.dialect = check_dialect(dialect)
        #: The modern QEMU whose answers are copied: ``7.2`` or ``10.0`` (see the dialect module).
        self.qemu_version = check_qemu_version(qemu_version)
        #: The commands this QEMU has (``query-commands``); ``None``: all of QEMU 7.2's
        #: that the simulator knows. A query outside it answers ``CommandNotFound``.
        self.commands: frozenset[str] | None = None if commands is None else frozenset(commands)
        self.uuid = uuid or str(uuid_module.uuid4())
        self.status = status
        self.vnc_enabled = vnc
        self.vnc_host = vnc_host
        self.vnc_service = vnc_service
        #: VNC clients, newest first (as ``query-vnc`` lists them).
        self.vnc_clients: list[dict[str, Any]] = []
        #: ``query-balloon`` ``actual`` in bytes; ``None``: no balloon (DeviceNotActive).
        self.balloon = balloon
        self.memory = memory
        self.cpus = cpus
        self.kvm = kvm
        #: Block device name -> mutable counters (``rd_bytes``, ``wr_operations``, ...).
        self.block_devices: dict[str, dict[str, int]] = {
            device: dict.fromkeys(BLOCK_STAT_KEYS, 0) for device in block_devices
        }
        #: Every command received, by name (also those refused), so tests can prove read-only.
        self.command_counts: dict[str, int] = {}
        #: The latest commands with their arguments: ``(name, arguments)``.
        self.command_log: deque[tuple[str, dict[str, Any] | None]] = deque(maxlen=COMMAND_LOG_SIZE)
        self._listeners: tuple[EventListener, ...] = ()
        self._answers: dict[str, bytes] = {}
        self._next_vnc_port = 47906

    def __repr__(self) -> str:
        return f"SimulatedVM({self.name!r}, status={self.status!r})"

    # -- state changes (each emits what QEMU emits) --------------------------------------

    def pause(self) -> None:
        """Like ``stop``: ``running`` -> ``paused`` with ``STOP``; otherwise nothing."""
        if self.status == "running":
            self._set_status("paused")
            self.emit("STOP")

    def resume(self) -> None:
        """Like ``cont``: to ``running`` with ``RESUME``; refused where QEMU needs a reset."""
        if self.status in NEEDS_RESET:
            raise CommandFailed("GenericError", "Resetting the Virtual Machine is required")
        if self.status != "running":
            self._set_status("running")
            self.emit("RESUME")

    def powerdown(self) -> None:
        """Like ``system_powerdown`` with a guest that ignores ACPI: ``POWERDOWN`` only."""
        self.emit("POWERDOWN")

    def reset(self) -> None:
        """Like ``system_reset``: ``RESET``; from ``shutdown``/``guest-panicked`` to
        ``prelaunch`` (as QEMU 7.2 does)."""
        self.emit("RESET", {"guest": False, "reason": "host-qmp-system-reset"})
        if self.status in NEEDS_RESET:
            self._set_status("prelaunch")

    def shutdown(self, guest: bool = True, reason: str = "guest-shutdown") -> None:
        """The guest powers off under ``-no-shutdown``: ``SHUTDOWN``, then ``STOP``, status
        ``shutdown``."""
        self.emit("SHUTDOWN", {"guest": guest, "reason": reason})
        was_running = self.status == "running"
        self._set_status("shutdown")
        if was_running:
            self.emit("STOP")

    def guest_panic(self) -> None:
        """The guest panics (``-action panic=pause``): ``GUEST_PANICKED``, ``STOP``."""
        self.emit("GUEST_PANICKED", {"action": "pause"})
        was_running = self.status == "running"
        self._set_status("guest-panicked")
        if was_running:
            self.emit("STOP")

    def watchdog(self, action: str = "reset") -> None:
        """A watchdog fires: ``WATCHDOG`` with its action."""
        self.emit("WATCHDOG", {"action": action})

    def set_status(self, status: str) -> None:
        """Set any RunState without an event (``inmigrate``, ``postmigrate``, ...)."""
        if status not in RUN_STATES:
            raise ValueError(f"{status!r} is not a QEMU RunState")
        self._set_status(status)

    def vnc_connect(
        self, host: str = "127.0.0.1", port: int | None = None, *, initialize: bool = True
    ) -> dict[str, Any]:
        """A VNC client connects: ``VNC_CONNECTED`` (on TCP accept), then ``VNC_INITIALIZED``
        (after the RFB handshake) unless ``initialize`` is false. Returns the client."""
        if not self.vnc_enabled:
            raise ValueError(f"{self.name}: VNC is disabled")
        if port is None:
            port = self._next_vnc_port
            self._next_vnc_port = 32768 + (port + 1 - 32768) % 28232
        client = {"family": _family(host), "service": str(port), "host": host, "websocket": False}
        self.vnc_clients.insert(0, client)
        self._changed()
        data = {"server": self._vnc_server_info(), "client": client}
        self.emit("VNC_CONNECTED", data)
        if initialize:
            self.emit("VNC_INITIALIZED", data)
        return client

    def vnc_disconnect(self, client: dict[str, Any] | None = None) -> dict[str, Any] | None:
        """A VNC client leaves (the oldest one unless given): ``VNC_DISCONNECTED``."""
        if not self.vnc_clients:
            return None
        if client is None:
            client = self.vnc_clients[-1]
        self.vnc_clients.remove(client)
        self._changed()
        self.emit("VNC_DISCONNECTED", {"server": self._vnc_server_info(), "client": client})
        return client

    def block_io(self, device: str, read_bytes: int = 0, write_bytes: int = 0) -> None:
        """Account guest disk I/O on ``device`` (counters only; QEMU sends no event)."""
        stats = self.block_devices[device]
        if read_bytes:
            stats["rd_bytes"] += read_bytes
            stats["rd_operations"] += 1
        if write_bytes:
            stats["wr_bytes"] += write_bytes
            stats["wr_operations"] += 1
            stats["wr_highest_offset"] = max(stats["wr_highest_offset"], write_bytes)
        self._changed()

    def emit(self, event: str, data: dict[str, Any] | None = None) -> None:
        """Send an event, timestamped now, to every serving monitor."""
        if not self._listeners:
            return
        now = time.time()
        seconds = int(now)
        message: dict[str, Any] = {
            "timestamp": {"seconds": seconds, "microseconds": int((now - seconds) * 1e6)},
            "event": event,
        }
        if data is not None:
            message["data"] = data
        line = json.dumps(message).encode() + b"\r\n"
        for listener in self._listeners:
            listener(line)

    # -- queries --------------------------------------------------------------------------

    def answer(self, command: str, arguments: dict[str, Any] | None) -> bytes:
        """The encoded ``return`` value of ``command``; raises :class:`CommandFailed`.

        Answers without arguments are cached until the VM changes.
        """
        if not arguments:
            cached = self._answers.get(command)
            if cached is not None:
                return cached
        handler = _QUERIES.get(command)
        if handler is None or (self.commands is not None and command not in self.commands):
            raise CommandFailed("CommandNotFound", f"The command {command} has not been found")
        allowed = _ARGUMENTS.get(command, ())
        for key in arguments or ():
            if key not in allowed:
                raise CommandFailed("GenericError", f"Parameter '{key}' is unexpected")
        encoded = json.dumps(handler(self, arguments or {})).encode()
        if not arguments:
            self._answers[command] = encoded
        return encoded

    def _query_status(self, _: dict[str, Any]) -> Any:
        return dialect_status(self.dialect, self.status, self.qemu_version)

    def _query_vnc(self, _: dict[str, Any]) -> Any:
        if not self.vnc_enabled:
            return {"enabled": False}
        return {
            "enabled": True,
            "auth": "none",
            "family": _family(self.vnc_host),
            "clients": self.vnc_clients,
            "service": self.vnc_service,
            "host": self.vnc_host,
        }

    def _query_vnc_servers(self, _: dict[str, Any]) -> Any:
        if not self.vnc_enabled:
            return []
        server = self._vnc_server_info()
        return [{"auth": "none", "clients": self.vnc_clients, "server": [server], "id": "default"}]

    def _query_name(self, _: dict[str, Any]) -> Any:
        return {} if self.name is None else {"name": self.name}

    def _query_balloon(self, _: dict[str, Any]) -> Any:
        if self.balloon is None:
            raise CommandFailed("DeviceNotActive", "No balloon device has been activated")
        return {"actual": self.balloon}

    def _query_cpus_fast(self, _: dict[str, Any]) -> Any:
        return [
            {
                "thread-id": 13540 + index,
                "props": {"core-id": 0, "thread-id": 0, "socket-id": index},
                "qom-path": f"/machine/unattached/device[{index}]",
                "cpu-index": index,
                "target": "x86_64",
            }
            for index in range(self.cpus)
        ]

    def _query_blockstats(self, _: dict[str, Any]) -> Any:
        added = {} if self.qemu_version == "7.2" else dict.fromkeys(ZONE_APPEND_STAT_KEYS, 0)
        return [
            {
                "device": device,
                "stats": {**stats, **added, "timed_stats": [], "account_invalid": True,
                          "account_failed": True},
                "node-name": f"#block{100 + index}",
                "qdev": f"/machine/peripheral-anon/device[{index}]",
            }
            for index, (device, stats) in enumerate(self.block_devices.items())
        ]  # fmt: skip

    def _query_block(self, _: dict[str, Any]) -> Any:
        return [
            {
                "io-status": "ok",
                "device": device,
                "locked": False,
                "removable": False,
                "inserted": _inserted(f"#block{100 + index}", self.qemu_version),
                "qdev": f"/machine/peripheral-anon/device[{index}]/virtio-backend",
                "type": "unknown",
            }
            for index, device in enumerate(self.block_devices)
        ]

    def _query_stats(self, arguments: dict[str, Any]) -> Any:
        target = arguments.get("target")
        if target is None:
            raise CommandFailed("GenericError", "Parameter 'target' is missing")
        if target not in ("vm", "vcpu", "cryptodev"):
            raise CommandFailed(
                "GenericError", f"Parameter 'target' does not accept value '{target}'"
            )
        return []  # no KVM stats providers, as under TCG

    def _query_commands(self, _: dict[str, Any]) -> Any:
        if self.commands is not None:
            return [{"name": name} for name in sorted(self.commands)]
        return [{"name": name} for name in (*WRITE_COMMANDS, *_QUERIES, "qmp_capabilities")]

    def has_command(self, command: str) -> bool:
        """True if this QEMU knows ``command`` (``qmp_capabilities`` is the session's)."""
        return self.commands is None or command in self.commands

    # -- internals ------------------------------------------------------------------------

    def _vnc_server_info(self) -> dict[str, Any]:
        return {
            "auth": "none",
            "family": _family(self.vnc_host),
            "service": self.vnc_service,
            "host": self.vnc_host,
            "websocket": False,
        }

    def _set_status(self, status: str) -> None:
        self.status = status
        self._changed()

    def _changed(self) -> None:
        if self._answers:
            self._answers = {}

    def add_listener(self, listener: EventListener) -> None:
        self._listeners = (*self._listeners, listener)

    def remove_listener(self, listener: EventListener) -> None:
        self._listeners = tuple(item for item in self._listeners if item is not listener)


def _inserted(node_name: str, qemu_version: str) -> dict[str, Any]:
    """``query-block``'s ``inserted`` of a 64 MiB null-co drive (10.0 adds ``active``)."""
    inserted: dict[str, Any] = {
        "iops_rd": 0, "detect_zeroes": "off", "image": {
            "virtual-size": 67108864, "filename": "null-co://", "format": "null-co",
            "actual-size": 0},
        "iops_wr": 0, "ro": False, "node-name": node_name, "backing_file_depth": 0,
        "drv": "null-co", "iops": 0, "bps_wr": 0, "write_threshold": 0, "encrypted": False,
        "bps": 0, "bps_rd": 0, "cache": {"no-flush": False, "direct": False, "writeback": True},
        "file": "null-co://",
    }  # fmt: skip
    if qemu_version != "7.2":
        inserted["active"] = True
    return inserted


def _family(host: str) -> str:
    if host.startswith("/"):
        return "unix"
    return "ipv6" if ":" in host else "ipv4"


_QUERIES: dict[str, Callable[[SimulatedVM, dict[str, Any]], Any]] = {
    "query-version": lambda vm, _: dialect_version(vm.dialect, vm.qemu_version),
    "query-status": SimulatedVM._query_status,
    "query-name": SimulatedVM._query_name,
    "query-uuid": lambda vm, _: {"UUID": vm.uuid},
    "query-kvm": lambda vm, _: {"enabled": vm.kvm, "present": True},
    "query-cpus-fast": SimulatedVM._query_cpus_fast,
    "query-balloon": SimulatedVM._query_balloon,
    "query-memory-size-summary": lambda vm, _: {"base-memory": vm.memory, "plugged-memory": 0},
    "query-migrate": lambda vm, _: {},
    "query-vnc": SimulatedVM._query_vnc,
    "query-vnc-servers": SimulatedVM._query_vnc_servers,
    "query-spice": lambda vm, _: {"migrated": False, "enabled": False, "mouse-mode": "client"},
    "query-stats": SimulatedVM._query_stats,
    "query-stats-schemas": lambda vm, arguments: [
        schema
        for schema in stats_schemas(vm.qemu_version)
        if arguments.get("provider") in (None, schema["provider"])
    ],
    "query-blockstats": SimulatedVM._query_blockstats,
    "query-block": SimulatedVM._query_block,
    "query-commands": SimulatedVM._query_commands,
}
_ARGUMENTS: dict[str, tuple[str, ...]] = {
    "query-stats": ("target", "providers", "vcpus"),
    "query-stats-schemas": ("provider",),
    "query-blockstats": ("query-nodes",),
}


def _stop(vm: SimulatedVM) -> None:
    vm.pause()


def _cont(vm: SimulatedVM) -> None:
    vm.resume()


WRITE_COMMANDS: dict[str, Callable[[SimulatedVM], None]] = {
    "stop": _stop,
    "cont": _cont,
    "system_reset": SimulatedVM.reset,
    "system_powerdown": SimulatedVM.powerdown,
}
