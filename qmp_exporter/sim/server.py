"""A simulated monitor listening on a unix socket (or TCP), like QEMU's ``-qmp ...,server=on``."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qmp_exporter.sim.hooks import Script
from qmp_exporter.sim.session import Session
from qmp_exporter.sim.vm import SimulatedVM

#: The listen backlog QEMU uses for ``-qmp ...,server=on``: Linux then queues 2 waiting clients.
QEMU_LISTEN_BACKLOG = 1

CommandObserver = Callable[[SimulatedVM, str], None]


class SimulatedMonitorServer:
    """Serves one :class:`SimulatedVM`, one client at a time, like QEMU's
    ``-qmp unix:PATH,server=on,wait=off``.

    ``path`` is a socket path (or ``unix:PATH``), or ``tcp:HOST:PORT`` (port 0: any free one).
    While ``max_clients`` clients are connected the server does not accept: later clients wait
    in the kernel's listen backlog (room for 2, as with QEMU) without a greeting, and further
    non-blocking connects fail with EAGAIN. Idle, it costs one registered socket, no task.
    ``script`` departs from plain QEMU (see :mod:`qmp_exporter.sim.hooks`).
    """

    __slots__ = (
        "_clients",
        "_listener",
        "_loop",
        "_reading",
        "_tcp",
        "max_clients",
        "observer",
        "path",
        "script",
        "vm",
    )

    def __init__(
        self,
        vm: SimulatedVM,
        path: str | Path,
        *,
        observer: CommandObserver | None = None,
        script: Script | None = None,
        max_clients: int | None = 1,
    ) -> None:
        self.vm = vm
        text = str(path)
        self._tcp: tuple[str, int] | None = None
        if text.startswith("tcp:"):
            host, _, port = text[4:].rpartition(":")
            self._tcp = (host.strip("[]"), int(port))
        self.path = text.removeprefix("unix:")
        #: Called with every command received (after it is counted).
        self.observer = observer
        self.script = script
        #: Clients served at once (``None``: any number); QEMU serves one.
        self.max_clients = max_clients
        self._listener: socket.socket | None = None
        self._clients: list[Session] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reading = False

    @property
    def address(self) -> str:
        """The address to give a client: ``unix:PATH`` or ``tcp:HOST:PORT``."""
        if self._tcp is None:
            return f"unix:{self.path}"
        host, port = self._tcp
        if self._listener is not None:
            port = self._listener.getsockname()[1]
        return f"tcp:[{host}]:{port}" if ":" in host else f"tcp:{host}:{port}"

    @property
    def client_connected(self) -> bool:
        """True while a client holds the monitor."""
        return bool(self._clients)

    async def start(self) -> None:
        """Create the socket (replacing a stale one) and start accepting."""
        self._loop = asyncio.get_running_loop()
        if self._tcp is None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            where: Any = self.path
        else:
            family = socket.AF_INET6 if ":" in self._tcp[0] else socket.AF_INET
            listener = socket.socket(family, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            where = self._tcp
        try:
            listener.bind(where)
            listener.listen(QEMU_LISTEN_BACKLOG)
            listener.setblocking(False)
        except OSError:
            listener.close()
            raise
        self._listener = listener
        self._start_reading()

    async def close(self) -> None:
        """Stop serving: drop the clients, close (and remove) the socket."""
        self._stop_reading()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
            if self._tcp is None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path)
        clients, self._clients = self._clients, []
        for client in clients:
            self.vm.remove_listener(client.send_event)
            client.abort()

    def drop_client(self) -> None:
        """Close the current clients' connections (as when QEMU exits or resets it)."""
        for client in self._clients:
            if client.transport is not None:
                client.transport.close()

    def _start_reading(self) -> None:
        if not self._reading and self._listener is not None and self._loop is not None:
            self._loop.add_reader(self._listener.fileno(), self._accept)
            self._reading = True

    def _stop_reading(self) -> None:
        if self._reading and self._listener is not None and self._loop is not None:
            self._loop.remove_reader(self._listener.fileno())
        self._reading = False

    def _full(self) -> bool:
        return self.max_clients is not None and len(self._clients) >= self.max_clients

    def _accept(self) -> None:
        if self._listener is None or self._full():
            return
        try:
            sock, _ = self._listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        sock.setblocking(False)
        protocol = Session(self)
        self._clients.append(protocol)
        if self._full():
            self._stop_reading()
        self.vm.add_listener(protocol.send_event)
        assert self._loop is not None
        task = self._loop.create_task(self._loop.connect_accepted_socket(lambda: protocol, sock))
        task.add_done_callback(lambda done: self._accepted(done, protocol, sock))

    def _accepted(self, task: asyncio.Task[Any], protocol: Session, sock: socket.socket) -> None:
        if task.cancelled() or task.exception() is not None:
            sock.close()
            self.client_gone(protocol)

    def client_gone(self, protocol: Session) -> None:
        """Forget a client that left (its session calls this), and take the next one."""
        if protocol not in self._clients:
            return
        self.vm.remove_listener(protocol.send_event)
        protocol.transport = None
        self._clients.remove(protocol)
        self._start_reading()
