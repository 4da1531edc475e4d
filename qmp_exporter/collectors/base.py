"""The collector interface."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from qmp_exporter.host import Host
from qmp_exporter.host.peer import Peer
from qmp_exporter.textformat import Family, Sample

#: Runs one read-only QMP command and returns its answer (raises on error or timeout).
Query = Callable[[str, dict[str, Any] | None], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Connection:
    """What a collector is told of the QMP connection it is made for."""

    #: What ``query-commands`` listed (``None``: unknown).
    available_commands: frozenset[str] | None
    #: The process behind the monitor, identified beyond its PID; looked up only when a
    #: chosen collector :attr:`~Collector.needs_peer` (``None``: unknown, refused, or not
    #: looked up).
    peer: Peer | None = None
    #: The host's reader, for collectors that read the host (``None``: no host figures).
    host: Host | None = None
    #: The VM's name, for log lines (``""``: not told).
    vm: str = ""


class Collector(ABC):
    """Turns QMP answers into samples for one subject (block devices, vCPUs, ...).

    One instance lives for one QMP connection, so it may cache what it learnt once
    (a schema, say). ``collect`` is called once per poll; any exception it raises is
    recorded as this collector's failure for the VM and hides nothing else.
    """

    #: Short name used in config (``collectors: [block]``) and in the
    #: ``collector`` label of ``qmp_exporter_collector_success``.
    name: ClassVar[str]
    #: Commands that must all appear in ``query-commands`` for the collector to run.
    required_commands: ClassVar[tuple[str, ...]]
    #: Every family the collector may produce (for HELP/TYPE, docs and golden tests).
    families: ClassVar[tuple[Family, ...]]
    #: Commands (without arguments) that ``collect`` asks on every poll. The poller sends
    #: them together with its own queries in one write, and ``query`` then answers them
    #: from that batch; anything else ``collect`` asks goes to the VM as usual.
    poll_commands: ClassVar[tuple[str, ...]] = ()
    #: Whether :meth:`for_connection` needs :attr:`Connection.peer` (the host collector).
    needs_peer: ClassVar[bool] = False

    def __init__(self, available_commands: frozenset[str] | None) -> None:
        """``available_commands`` is what ``query-commands`` listed (``None``: unknown)."""
        self.available_commands = available_commands

    @classmethod
    def for_connection(cls, connection: Connection) -> Collector | None:
        """The collector for one connection, or ``None`` to run none. QMP collectors need
        only its commands; the host collector reads the process behind it."""
        return cls(connection.available_commands)

    def serves_again(self, connection: Connection) -> bool:
        """Whether this collector, made for an earlier connection, may serve a new one to the
        same monitor as it is (a ``poll``-mode monitor connects for every poll). QMP collectors
        start afresh; the host collector carries on while the process is the same."""
        return False

    def close(self) -> None:  # noqa: B027 (most collectors hold nothing: no-op by default)
        """Release what the collector holds (open files); called once it serves no more."""

    @classmethod
    def supported(cls, available_commands: frozenset[str] | None) -> bool:
        """Whether this VM offers what the collector needs."""
        return available_commands is None or all(
            c in available_commands for c in cls.required_commands
        )

    @abstractmethod
    async def collect(self, query: Query) -> Sequence[Sample]:
        """Query the VM and return samples (labels without ``vm``)."""
