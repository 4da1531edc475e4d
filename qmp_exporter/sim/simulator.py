"""Simulated QMP monitors, many in one asyncio process, speaking QEMU 7.2's dialect.

Used by ``qmp-exporter --demo`` and by the benchmark fleet (``bench/``). What a client sees is
taken from real QEMU 7.2 transcripts: the greeting with a structured version and the ``oob``
capability, ``CommandNotFound`` before ``qmp_capabilities`` (with QEMU's ``desc``), CRLF line
ends, the ``id`` echoed, QEMU's error classes, events with timestamps, and one client per
socket (a second client is not greeted until the first leaves).

Only ``stop``, ``cont``, ``system_reset`` and ``system_powerdown`` change a simulated VM; every
command received is counted in :attr:`SimulatedVM.command_counts`, so a test can prove that a
client sent nothing but ``qmp_capabilities`` and ``query-*``.

Run a fleet in a process of its own::

    python -m qmp_exporter.sim.simulator --count 1000 --dir /tmp/fleet [--churn] [--control SOCK]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import resource
import signal
import socket
import sys
import time
import uuid as uuid_module
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: ``query-version`` of the simulated QEMU: the structured form of QEMU 7.2.
QEMU_VERSION: dict[str, Any] = {
    "qemu": {"micro": 22, "minor": 2, "major": 7},
    "package": "qmp-exporter simulator",
}
#: The QAPI RunState values (``query-status`` ``status``).
RUN_STATES = (
    "debug", "inmigrate", "internal-error", "io-error", "paused", "postmigrate", "prelaunch",
    "finish-migrate", "restore-vm", "running", "save-vm", "shutdown", "suspended", "watchdog",
    "guest-panicked", "colo",
)  # fmt: skip
#: States that ``cont`` refuses to leave without a reset (QEMU's ``runstate_needs_reset``).
_NEEDS_RESET = frozenset({"shutdown", "guest-panicked", "internal-error"})
#: Bound on bytes of an unfinished command held per connection (QEMU's parser allows 64 MiB;
#: a simulator needs far less).
MAX_PENDING_INPUT = 1 << 20
#: Recent commands kept per VM with their arguments (all are counted in ``command_counts``).
COMMAND_LOG_SIZE = 64
#: The listen backlog QEMU uses for ``-qmp ...,server=on``: Linux then queues 2 waiting clients.
QEMU_LISTEN_BACKLOG = 1
#: File descriptors a fleet needs per VM: the listening socket and the accepted connection.
FDS_PER_VM = 2
#: Descriptors kept free for everything else in the process.
FD_RESERVE = 64

_BLOCK_STAT_KEYS = (
    "unmap_operations", "unmap_merged", "flush_total_time_ns", "wr_highest_offset",
    "wr_total_time_ns", "failed_wr_operations", "failed_rd_operations", "wr_merged", "wr_bytes",
    "failed_unmap_operations", "failed_flush_operations", "rd_total_time_ns",
    "invalid_unmap_operations", "flush_operations", "wr_operations", "unmap_bytes", "rd_merged",
    "rd_bytes", "unmap_total_time_ns", "invalid_flush_operations", "idle_time_ns",
    "rd_operations", "invalid_wr_operations", "invalid_rd_operations",
)  # fmt: skip


def _error(error_class: str, desc: str) -> dict[str, Any]:
    return {"class": error_class, "desc": desc}


class CommandFailed(Exception):
    """A simulated command answers with QEMU's ``{"error": ...}``."""

    def __init__(self, error_class: str, desc: str) -> None:
        super().__init__(f"{error_class}: {desc}")
        self.error = _error(error_class, desc)


EventListener = Callable[[bytes], None]
CommandObserver = Callable[["SimulatedVM", str], None]


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
        "cpus",
        "kvm",
        "memory",
        "name",
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
    ) -> None:
        if status not in RUN_STATES:
            raise ValueError(f"{status!r} is not a QEMU RunState")
        self.name = name
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
            device: dict.fromkeys(_BLOCK_STAT_KEYS, 0) for device in block_devices
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
        if self.status in _NEEDS_RESET:
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
        if self.status in _NEEDS_RESET:
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
        if handler is None:
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
        return {"status": self.status, "singlestep": False, "running": self.status == "running"}

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
        return [
            {
                "device": device,
                "stats": {**stats, "timed_stats": [], "account_invalid": True,
                          "account_failed": True},
                "node-name": f"#block{100 + index}",
                "qdev": f"/machine/peripheral-anon/device[{index}]",
            }
            for index, (device, stats) in enumerate(self.block_devices.items())
        ]  # fmt: skip

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
        return [{"name": name} for name in (*_WRITE_COMMANDS, *_QUERIES, "qmp_capabilities")]

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


def _family(host: str) -> str:
    if host.startswith("/"):
        return "unix"
    return "ipv6" if ":" in host else "ipv4"


_QUERIES: dict[str, Callable[[SimulatedVM, dict[str, Any]], Any]] = {
    "query-version": lambda vm, _: QEMU_VERSION,
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
    "query-stats-schemas": lambda vm, _: [],
    "query-blockstats": SimulatedVM._query_blockstats,
    "query-block": lambda vm, _: [],
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


_WRITE_COMMANDS: dict[str, Callable[[SimulatedVM], None]] = {
    "stop": _stop,
    "cont": _cont,
    "system_reset": SimulatedVM.reset,
    "system_powerdown": SimulatedVM.powerdown,
}

_GREETING = (
    json.dumps({"QMP": {"version": QEMU_VERSION, "capabilities": ["oob"]}}).encode() + b"\r\n"
)
_EMPTY_RETURN = b"{}"
_DECODER = json.JSONDecoder()
_INPUT_MEMBERS = frozenset({"execute", "exec-oob", "arguments", "id", "control"})


class _MonitorProtocol(asyncio.Protocol):
    """One client session: greeting, negotiation, commands, events."""

    __slots__ = ("_buffer", "negotiated", "server", "transport")

    def __init__(self, server: SimulatedMonitorServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.negotiated = False
        self._buffer = ""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(_GREETING)  # type: ignore[union-attr]

    def connection_lost(self, exc: Exception | None) -> None:
        self.server._client_gone(self)

    def send_event(self, line: bytes) -> None:
        # Only a negotiated session receives events (09-two-qmp-sockets.jsonl).
        if self.negotiated and self.transport is not None:
            self.transport.write(line)

    def data_received(self, data: bytes) -> None:
        text = self._buffer + data.decode("utf-8", "replace")
        self._buffer = ""
        position, length = 0, len(text)
        while True:
            while position < length and text[position] in " \t\r\n":
                position += 1
            if position >= length:
                return
            try:
                message, position = _DECODER.raw_decode(text, position)
            except json.JSONDecodeError as err:
                if err.pos >= len(text.rstrip()):  # incomplete: wait for the rest
                    rest = text[position:]
                    if len(rest) > MAX_PENDING_INPUT:
                        self._reply_error(None, "GenericError", "JSON parse error, too large")
                        return
                    self._buffer = rest
                    return
                self._reply_error(None, "GenericError", "JSON parse error, expecting value")
                newline = text.find("\n", err.pos)
                position = length if newline < 0 else newline + 1
                continue
            self._handle(message)

    def _handle(self, message: Any) -> None:
        if not isinstance(message, dict):
            self._reply_error(None, "GenericError", "QMP input must be a JSON object")
            return
        for member in message:
            if member not in _INPUT_MEMBERS:
                self._reply_error(
                    None, "GenericError", f"QMP input member '{member}' is unexpected"
                )
                return
        command_id = message.get("id")
        command = message.get("execute", message.get("exec-oob"))
        if command is None:
            self._reply_error(command_id, "GenericError", "QMP input lacks member 'execute'")
            return
        if not isinstance(command, str):
            self._reply_error(
                command_id, "GenericError", "QMP input member 'execute' must be a string"
            )
            return
        arguments = message.get("arguments")
        if arguments is not None and not isinstance(arguments, dict):
            self._reply_error(
                command_id, "GenericError", "QMP input member 'arguments' must be an object"
            )
            return
        vm = self.server.vm
        vm.command_counts[command] = vm.command_counts.get(command, 0) + 1
        vm.command_log.append((command, arguments))
        observer = self.server.observer
        if observer is not None:
            observer(vm, command)
        try:
            body = self._execute(vm, command, arguments)
        except CommandFailed as failure:
            self._reply(command_id, None, failure.error)
            return
        self._reply(command_id, body, None)

    def _execute(self, vm: SimulatedVM, command: str, arguments: dict[str, Any] | None) -> bytes:
        if command == "qmp_capabilities":
            if self.negotiated:
                raise CommandFailed(
                    "CommandNotFound",
                    "Capabilities negotiation is already complete, command ignored",
                )
            for key in arguments or ():
                if key != "enable":
                    raise CommandFailed("GenericError", f"Parameter '{key}' is unexpected")
            self.negotiated = True
            return _EMPTY_RETURN
        if not self.negotiated:
            raise CommandFailed(
                "CommandNotFound", "Expecting capabilities negotiation with 'qmp_capabilities'"
            )
        action = _WRITE_COMMANDS.get(command)
        if action is not None:
            for key in arguments or ():
                raise CommandFailed("GenericError", f"Parameter '{key}' is unexpected")
            action(vm)
            return _EMPTY_RETURN
        return vm.answer(command, arguments)

    def _reply(self, command_id: Any, body: bytes | None, error: dict[str, Any] | None) -> None:
        if self.transport is None:
            return
        if error is None:
            if command_id is None:
                line = b'{"return": ' + body + b"}\r\n"  # type: ignore[operator]
            else:
                line = b'{"return": ' + body + b', "id": ' + json.dumps(command_id).encode()
                line += b"}\r\n"  # type: ignore[operator]
        else:
            reply: dict[str, Any] = {} if command_id is None else {"id": command_id}
            reply["error"] = error
            line = json.dumps(reply).encode() + b"\r\n"
        self.transport.write(line)

    def _reply_error(self, command_id: Any, error_class: str, desc: str) -> None:
        self._reply(command_id, None, _error(error_class, desc))


class SimulatedMonitorServer:
    """Serves one :class:`SimulatedVM` on a unix socket, one client at a time, like QEMU's
    ``-qmp unix:PATH,server=on,wait=off``.

    While a client is connected the server does not accept: later clients wait in the
    kernel's listen backlog (room for 2, as with QEMU) without a greeting, and further
    non-blocking connects fail with EAGAIN. Idle, it costs one registered socket, no task.
    """

    __slots__ = ("_client", "_listener", "_loop", "_reading", "observer", "path", "vm")

    def __init__(
        self, vm: SimulatedVM, path: str | Path, *, observer: CommandObserver | None = None
    ) -> None:
        self.vm = vm
        self.path = str(path)
        #: Called with every command received (after it is counted).
        self.observer = observer
        self._listener: socket.socket | None = None
        self._client: _MonitorProtocol | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reading = False

    @property
    def address(self) -> str:
        """The address to give a client: ``unix:PATH``."""
        return f"unix:{self.path}"

    @property
    def client_connected(self) -> bool:
        """True while a client holds the monitor."""
        return self._client is not None

    async def start(self) -> None:
        """Create the socket (replacing a stale one) and start accepting."""
        self._loop = asyncio.get_running_loop()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(self.path)
            listener.listen(QEMU_LISTEN_BACKLOG)
            listener.setblocking(False)
        except OSError:
            listener.close()
            raise
        self._listener = listener
        self._start_reading()

    async def close(self) -> None:
        """Stop serving: drop the client, close and remove the socket."""
        self._stop_reading()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        client, self._client = self._client, None
        if client is not None:
            self.vm.remove_listener(client.send_event)
            if client.transport is not None:
                client.transport.abort()

    def drop_client(self) -> None:
        """Close the current client's connection (as when QEMU exits or resets it)."""
        if self._client is not None and self._client.transport is not None:
            self._client.transport.close()

    def _start_reading(self) -> None:
        if not self._reading and self._listener is not None and self._loop is not None:
            self._loop.add_reader(self._listener.fileno(), self._accept)
            self._reading = True

    def _stop_reading(self) -> None:
        if self._reading and self._listener is not None and self._loop is not None:
            self._loop.remove_reader(self._listener.fileno())
        self._reading = False

    def _accept(self) -> None:
        if self._listener is None or self._client is not None:
            return
        try:
            sock, _ = self._listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        self._stop_reading()
        sock.setblocking(False)
        protocol = _MonitorProtocol(self)
        self._client = protocol
        self.vm.add_listener(protocol.send_event)
        assert self._loop is not None
        task = self._loop.create_task(self._loop.connect_accepted_socket(lambda: protocol, sock))
        task.add_done_callback(lambda done: self._accepted(done, protocol, sock))

    def _accepted(
        self, task: asyncio.Task[Any], protocol: _MonitorProtocol, sock: socket.socket
    ) -> None:
        if task.cancelled() or task.exception() is not None:
            sock.close()
            self._client_gone(protocol)

    def _client_gone(self, protocol: _MonitorProtocol) -> None:
        if self._client is not protocol:
            return
        self.vm.remove_listener(protocol.send_event)
        protocol.transport = None
        self._client = None
        self._start_reading()


def raise_fd_limit() -> tuple[int, int]:
    """Raise this process's open-file soft limit to the hard limit; return (soft, hard)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    return soft, hard


def fleet_vm(index: int, name: str, rng: random.Random) -> SimulatedVM:
    """A benchmark-fleet VM: mostly running, some paused, VNC on, a disk, a balloon on half."""
    roll = rng.random()
    status = "paused" if roll < 0.1 else "prelaunch" if roll < 0.15 else "running"
    return SimulatedVM(
        name,
        uuid=str(uuid_module.UUID(int=rng.getrandbits(128), version=4)),
        status=status,
        vnc_service=str(5900 + index % 60000),
        balloon=(256 << 20) if index % 2 == 0 else None,
        memory=256 << 20,
        cpus=1 + index % 4,
        block_devices=("disk0",),
    )


class PollGaps:
    """Times between consecutive ``command`` (a poll's marker, ``query-status``) on each VM:
    how far a poller drifts past its interval."""

    def __init__(self, command: str = "query-status", keep: int = 200_000) -> None:
        self.command = command
        self.gaps: deque[float] = deque(maxlen=keep)
        self._last: dict[int, float] = {}

    def __call__(self, vm: SimulatedVM, command: str) -> None:
        if command != self.command:
            return
        now = time.monotonic()
        previous = self._last.get(id(vm))
        self._last[id(vm)] = now
        if previous is not None:
            self.gaps.append(now - previous)

    def reset(self) -> None:
        """Forget the gaps so far (the next poll of each VM starts a new gap)."""
        self.gaps.clear()
        self._last.clear()

    def summary(self) -> dict[str, float]:
        """Count, median, 99th percentile and maximum gap, in seconds."""
        ordered = sorted(self.gaps)
        if not ordered:
            return {"count": 0}

        def quantile(q: float) -> float:
            return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

        return {"count": len(ordered), "p50": quantile(0.5), "p99": quantile(0.99),
                "max": ordered[-1]}  # fmt: skip


class SimulatedFleet:
    """``count`` simulated VMs, each on its own socket ``DIR/NAME.qmp``, in this event loop."""

    def __init__(
        self,
        directory: str | Path,
        count: int,
        *,
        prefix: str = "sim",
        seed: int = 0,
        make_vm: Callable[[int, str, random.Random], SimulatedVM] = fleet_vm,
    ) -> None:
        self.directory = Path(directory)
        rng = random.Random(seed)
        width = max(4, len(str(count)))
        self.vms = [make_vm(i, f"{prefix}-{i:0{width}d}", rng) for i in range(count)]
        self.servers: list[SimulatedMonitorServer] = []
        #: Poll spacing as seen by the VMs.
        self.poll_gaps = PollGaps()

    @property
    def monitors(self) -> list[tuple[str, str]]:
        """``(name, address)`` of every VM, in order."""
        return [(server.vm.name or "", server.address) for server in self.servers]

    def by_name(self, name: str) -> SimulatedVM:
        for vm in self.vms:
            if vm.name == name:
                return vm
        raise KeyError(name)

    async def start(self) -> None:
        """Raise the file limit and open every socket; fail early if the limit is too low."""
        soft, _ = raise_fd_limit()
        needed = len(self.vms) * FDS_PER_VM + FD_RESERVE
        if needed > soft:
            raise OSError(
                f"{len(self.vms)} simulated VMs need about {needed} file descriptors; "
                f"the limit is {soft} (raise it with ulimit -n)"
            )
        self.directory.mkdir(parents=True, exist_ok=True)
        try:
            for vm in self.vms:
                server = SimulatedMonitorServer(
                    vm, self.directory / f"{vm.name}.qmp", observer=self.poll_gaps
                )
                await server.start()
                self.servers.append(server)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Stop every server and remove its socket."""
        servers, self.servers = self.servers, []
        for server in servers:
            await server.close()

    def total_command_counts(self) -> dict[str, int]:
        """Commands received by all VMs, by name."""
        total: dict[str, int] = {}
        for vm in self.vms:
            for command, count in vm.command_counts.items():
                total[command] = total.get(command, 0) + count
        return total


class Churn:
    """Changes VMs now and then (seeded): pause/resume, VNC clients come and go, disk I/O."""

    def __init__(self, vms: Sequence[SimulatedVM], *, interval: float = 1.0, seed: int = 0) -> None:
        self.vms = list(vms)
        self.interval = interval
        self.rng = random.Random(seed)
        self.steps = 0
        self._task: asyncio.Task[None] | None = None

    def step(self) -> str:
        """Make one random change; return a short description."""
        vm = self.rng.choice(self.vms)
        roll = self.rng.random()
        self.steps += 1
        if roll < 0.3:
            if vm.status == "running":
                vm.pause()
                return f"{vm.name}: paused"
            if vm.status in _NEEDS_RESET:
                vm.reset()
            vm.resume()
            return f"{vm.name}: resumed"
        if roll < 0.7 and vm.vnc_enabled:
            if vm.vnc_clients and (len(vm.vnc_clients) >= 3 or self.rng.random() < 0.5):
                vm.vnc_disconnect()
                return f"{vm.name}: VNC client left"
            vm.vnc_connect(initialize=self.rng.random() < 0.9)
            return f"{vm.name}: VNC client connected"
        if vm.block_devices:
            device = self.rng.choice(list(vm.block_devices))
            vm.block_io(device, read_bytes=4096 * self.rng.randint(1, 64),
                        write_bytes=4096 * self.rng.randint(0, 16))  # fmt: skip
            return f"{vm.name}: disk I/O"
        return f"{vm.name}: unchanged"

    def start(self) -> None:
        """Run in the background until :meth:`stop`."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.rng.uniform(0.5, 1.5) * self.interval)
            log.debug("churn: %s", self.step())


class _ControlProtocol(asyncio.Protocol):
    """Line commands for a fleet in another process: ``ACTION NAME`` -> ``ok TIME`` or
    ``error ...`` (``TIME``: just before the change); ``counts`` -> JSON of the commands the
    whole fleet received, by name; ``gaps`` -> JSON summary of :class:`PollGaps`;
    ``gaps_reset`` forgets them."""

    _ACTIONS: dict[str, Callable[[SimulatedVM], Any]] = {  # noqa: RUF012
        "pause": SimulatedVM.pause,
        "resume": SimulatedVM.resume,
        "vnc_connect": SimulatedVM.vnc_connect,
        "vnc_disconnect": SimulatedVM.vnc_disconnect,
        "shutdown": SimulatedVM.shutdown,
        "reset": SimulatedVM.reset,
        "guest_panic": SimulatedVM.guest_panic,
    }

    def __init__(self, fleet: SimulatedFleet) -> None:
        self.fleet = fleet
        self.names = {vm.name: vm for vm in fleet.vms}
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while b"\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\n", 1)
            reply = self._run(line.decode(errors="replace").split())
            assert self.transport is not None
            self.transport.write(reply.encode() + b"\n")

    def _run(self, words: list[str]) -> str:
        if words == ["counts"]:
            return json.dumps(self.fleet.total_command_counts())
        if words == ["gaps"]:
            return json.dumps(self.fleet.poll_gaps.summary())
        if words == ["gaps_reset"]:
            self.fleet.poll_gaps.reset()
            return "ok"
        if len(words) != 2 or words[0] not in self._ACTIONS or words[1] not in self.names:
            return (
                f"error: expected one of {sorted(self._ACTIONS)} and a VM name, "
                "or counts, gaps, gaps_reset"
            )
        started = time.time()
        try:
            self._ACTIONS[words[0]](self.names[words[1]])
        except (CommandFailed, ValueError) as err:
            return f"error: {err}"
        return f"ok {started:.6f}"


async def serve_fleet(
    directory: str, count: int, *, churn: float | None, control: str | None, seed: int
) -> None:
    """Serve a fleet until SIGINT/SIGTERM; print ``ready COUNT`` once every socket listens."""
    fleet = SimulatedFleet(directory, count, seed=seed)
    await fleet.start()
    control_server = None
    if control:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(control)
        control_server = await asyncio.get_running_loop().create_unix_server(
            lambda: _ControlProtocol(fleet), control
        )
    churner = Churn(fleet.vms, interval=churn, seed=seed) if churn else None
    if churner:
        churner.start()
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopped.set)
    print(f"ready {count}", flush=True)
    try:
        await stopped.wait()
    finally:
        if churner:
            await churner.stop()
        if control_server is not None:
            control_server.close()
        await fleet.close()


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m qmp_exporter.sim.simulator",
        description="Serve simulated QEMU 7.2 QMP monitors, one unix socket per VM.",
    )
    parser.add_argument("--count", type=int, required=True, help="number of VMs")
    parser.add_argument("--dir", required=True, help="directory for the sockets (NAME.qmp)")
    parser.add_argument(
        "--churn", nargs="?", type=float, const=1.0, default=None, metavar="SECONDS",
        help="change a random VM about every SECONDS (default 1)",
    )  # fmt: skip
    parser.add_argument("--control", help="unix socket for line commands (vnc_connect NAME)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(list(argv) if argv is not None else None)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        asyncio.run(
            serve_fleet(args.dir, args.count, churn=args.churn, control=args.control,
                        seed=args.seed)
        )  # fmt: skip
    except OSError as err:
        print(f"simulator: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
