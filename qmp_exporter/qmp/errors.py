"""The QMP client's exceptions: one tree, one root.

::

    QMPError
     ├── AddressError              an address string that names no socket
     ├── ConnectError              no QMP session could be set up
     │    ├── SocketNotFoundError       the unix socket file does not exist
     │    ├── ConnectRefusedError       nobody listens there (QEMU gone?)
     │    ├── PermissionDeniedError     the socket exists but we may not open it
     │    ├── ConnectTimeoutError       connect() did not complete in time
     │    │    └── GreetingIncompleteError  a greeting began but did not finish in time
     │    └── MonitorBusyError          another client holds the socket (QEMU serves one)
     │         ├── GreetingTimeoutError     connected, but no greeting came
     │         └── BacklogFullError         the socket's listen backlog is full
     ├── ProtocolError             the peer broke the protocol
     │    ├── NotQMPError               the first line was not a QMP greeting
     │    └── LineTooLongError          a line exceeded the size limit
     ├── ConnectionClosedError     the connection ended (EOF, reset, or closed by us)
     ├── CommandError              QEMU answered a command with an error (class, desc kept)
     ├── CommandTimeoutError       no answer to a command in time
     └── CommandRefusedError       the read-only guard refused to send a command
"""

from __future__ import annotations

from typing import Any


class QMPError(Exception):
    """Root of every error raised by :mod:`qmp_exporter.qmp`."""


class AddressError(QMPError, ValueError):
    """An address string that is not ``unix:PATH``, ``/abs/path`` or ``tcp:HOST:PORT``."""


class ConnectError(QMPError):
    """A QMP session could not be set up."""


class SocketNotFoundError(ConnectError):
    """The unix socket path does not exist."""


class ConnectRefusedError(ConnectError):
    """The connection was refused: nothing listens at the address."""


class PermissionDeniedError(ConnectError):
    """The socket exists but this process may not connect to it."""


class ConnectTimeoutError(ConnectError):
    """``connect()`` did not complete within the timeout (listen backlog full, or no route)."""


class GreetingIncompleteError(ConnectTimeoutError):
    """Connected and a greeting began, but it did not finish within the timeout: the
    monitor is there but slow (unlike :class:`GreetingTimeoutError`, where nothing came)."""


class MonitorBusyError(ConnectError):
    """QEMU serves one client per monitor socket, and another client (a management tool,
    another exporter, a shell) is holding this one."""


class GreetingTimeoutError(MonitorBusyError):
    """Connected, but no greeting came within the timeout: the socket is probably held."""


class BacklogFullError(MonitorBusyError):
    """The socket's listen backlog is full: clients are already queued behind a holder."""


class ProtocolError(QMPError):
    """The peer sent something that QMP does not allow."""


class NotQMPError(ProtocolError):
    """The first line from the peer was not a QMP greeting."""


class LineTooLongError(ProtocolError):
    """A line from the peer exceeded the configured maximum; the connection was closed.

    ``limit`` is that maximum in bytes; ``command`` the command whose answer was awaited
    first when it happened (the one that answered too much), if any.
    """

    def __init__(self, message: str, limit: int, command: str | None = None) -> None:
        super().__init__(message)
        self.limit = limit
        self.command = command


class ConnectionClosedError(QMPError):
    """The connection ended before the operation could complete."""


class CommandError(QMPError):
    """QEMU answered a command with ``{"error": {...}}``.

    ``error_class`` and ``desc`` are QEMU's own; ``desc`` is for people, never parse it.
    """

    def __init__(self, command: str, error_class: str, desc: str, data: Any = None) -> None:
        super().__init__(f"{command}: {error_class}: {desc}")
        self.command = command
        self.error_class = error_class
        self.desc = desc
        self.data = data


class CommandTimeoutError(QMPError):
    """A command got no answer within its timeout."""


class CommandRefusedError(QMPError):
    """The client refused a command before sending it (read-only mode)."""
