"""What a failed poll is called and what it costs: the ``reason`` label of
``qmp_exporter_poll_errors_total``, the text for the log and the VM's ``error``, and the wait
before the next try."""

from __future__ import annotations

import random

from qmp_exporter.collectors import COLLECTORS
from qmp_exporter.qmp import (
    CommandError,
    CommandTimeoutError,
    ConnectError,
    ConnectionClosedError,
    ConnectTimeoutError,
    LineTooLongError,
    MonitorBusyError,
)

#: Values of the ``reason`` label of ``qmp_exporter_poll_errors_total``.
ERROR_REASONS = ("connect", "busy", "timeout", "protocol", "command")

#: First reconnect delay after a failure; doubles up to the poll interval.
BACKOFF_START = 0.5


def backoff_delay(failures: int, interval: float) -> float:
    """Seconds to wait before the next try after ``failures`` failed polls in a row:
    :data:`BACKOFF_START` doubling per failure, capped at ``interval``, with ±20% jitter."""
    exponent = min(failures - 1, 64)  # 2**64 half-seconds is past any interval
    nominal: float = min(BACKOFF_START * 2.0**exponent, interval)
    return nominal * random.uniform(0.8, 1.2)


def error_reason(error: BaseException) -> str:
    """The ``reason`` label for an error."""
    if isinstance(error, MonitorBusyError):
        return "busy"
    if isinstance(error, CommandTimeoutError | ConnectTimeoutError | TimeoutError):
        return "timeout"
    if isinstance(error, ConnectError | ConnectionClosedError):
        return "connect"
    if isinstance(error, CommandError):
        return "command"
    return "protocol"


def describe_failure(error: BaseException) -> str:
    """What went wrong, for the log and the VM's ``error``; for an over-long answer also
    which collector asked for it and what to do about it."""
    message = str(error) or type(error).__name__
    if not isinstance(error, LineTooLongError) or error.command is None:
        return message
    askers = [n for n, c in COLLECTORS.items() if error.command in c.required_commands]
    if askers:
        who = f"the {' and '.join(askers)} collector{'s' if len(askers) > 1 else ''}"
        off = f", or turn {who} off in this monitor's `collectors:` list"
    else:
        who, off = "the exporter itself", ""
    return (
        f"{message}; {error.command} is asked by {who}: raise qmp_max_line_bytes "
        f"(now {error.limit}){off}"
    )
