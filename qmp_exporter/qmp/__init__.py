"""A QMP (QEMU Monitor Protocol) client for asyncio: every dialect since 2009, bounded,
read-only unless asked otherwise; and a read-only client of the QEMU guest agent, which speaks
QMP's JSON (:mod:`~qmp_exporter.qmp.agent`). Knows nothing of metrics or configuration.

>>> client = await connect("unix:/run/qemu/vm1.qmp", timeout=5)
>>> await client.execute("query-status")
{'status': 'running', 'singlestep': False, 'running': True}
"""

from qmp_exporter.qmp.address import Address, TCPAddress, UnixAddress, parse_address
from qmp_exporter.qmp.agent import AgentClient, connect_agent, is_agent_read_only
from qmp_exporter.qmp.client import DEFAULT_TIMEOUT, QMPClient, connect, is_read_only
from qmp_exporter.qmp.errors import (
    AddressError,
    BacklogFullError,
    CommandError,
    CommandRefusedError,
    CommandTimeoutError,
    ConnectError,
    ConnectionClosedError,
    ConnectRefusedError,
    ConnectTimeoutError,
    GreetingIncompleteError,
    GreetingTimeoutError,
    LineTooLongError,
    MonitorBusyError,
    NotQMPError,
    PermissionDeniedError,
    ProtocolError,
    QMPError,
    SocketNotFoundError,
)
from qmp_exporter.qmp.events import Event, EventQueue
from qmp_exporter.qmp.framing import DEFAULT_MAX_LINE_BYTES, LineDecoder
from qmp_exporter.qmp.greeting import Greeting, parse_version

__all__ = [
    "DEFAULT_MAX_LINE_BYTES",
    "DEFAULT_TIMEOUT",
    "Address",
    "AddressError",
    "AgentClient",
    "BacklogFullError",
    "CommandError",
    "CommandRefusedError",
    "CommandTimeoutError",
    "ConnectError",
    "ConnectRefusedError",
    "ConnectTimeoutError",
    "ConnectionClosedError",
    "Event",
    "EventQueue",
    "Greeting",
    "GreetingIncompleteError",
    "GreetingTimeoutError",
    "LineDecoder",
    "LineTooLongError",
    "MonitorBusyError",
    "NotQMPError",
    "PermissionDeniedError",
    "ProtocolError",
    "QMPClient",
    "QMPError",
    "SocketNotFoundError",
    "TCPAddress",
    "UnixAddress",
    "connect",
    "connect_agent",
    "is_agent_read_only",
    "is_read_only",
    "parse_address",
    "parse_version",
]
