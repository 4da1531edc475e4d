"""The one place collectors are chosen for a VM and run in a poll (the poller, ``/probe``
through the poller, and the tests against real QEMU all come here)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from qmp_exporter.collectors import COLLECTORS, DEFAULT_COLLECTORS
from qmp_exporter.collectors.base import Collector, Connection
from qmp_exporter.host import Host
from qmp_exporter.host.peer import Peer
from qmp_exporter.polling.answers import MalformedAnswerError, returned
from qmp_exporter.qmp import (
    CommandError,
    CommandTimeoutError,
    ConnectionClosedError,
    ProtocolError,
    QMPClient,
    QMPError,
)
from qmp_exporter.textformat import Sample

log = logging.getLogger(__name__)

#: (collector name, success) for each collector that ran in one poll.
CollectorResults = tuple[tuple[str, bool], ...]


async def choose_collectors(
    client: QMPClient,
    names: Sequence[str] | None,
    earlier: Sequence[Collector] = (),
    host: Host | None = None,
    *,
    vm: str = "",
    peer: Peer | None = None,
) -> tuple[Collector, ...]:
    """The collectors named (``None``: the defaults) that this VM supports, in the order
    named, for the life of ``client``'s connection; one of the ``earlier`` connection's that
    :meth:`~Collector.serves_again` is kept, the others are closed (on failure the
    caller still holds them all). Asks ``query-commands``
    once (not at all for no names); a QEMU without it runs every named collector. The
    process behind the monitor is identified (through ``host``, once per connection) only
    when a chosen collector needs it, unless the caller identified it already (``peer``);
    without ``host`` no collector reads the host. ``vm`` names the VM in log lines."""
    if names is None:
        names = DEFAULT_COLLECTORS
    if not names:
        _close_all(earlier)
        return ()
    available: frozenset[str] | None
    try:
        answer = await client.execute("query-commands")
        available = frozenset(
            c["name"] for c in answer if isinstance(c, dict) and isinstance(c.get("name"), str)
        )
    except CommandError:
        available = None
    except TypeError as err:
        raise MalformedAnswerError(f"query-commands: {err}") from err
    classes = [
        cls for cls in (COLLECTORS.get(name) for name in names) if cls and cls.supported(available)
    ]
    if peer is None and host is not None and any(cls.needs_peer for cls in classes):
        peer = await host.peer(client.socket, vm)
    connection = Connection(available, peer, host, vm)
    chosen = []
    kept = {collector.name: collector for collector in earlier}
    for cls in classes:
        collector: Collector | None = kept.get(cls.name)
        if collector is None or not collector.serves_again(connection):
            collector = cls.for_connection(connection)
        if collector is not None:
            chosen.append(collector)
    _close_all(c for c in earlier if c not in chosen)
    return tuple(chosen)


def _close_all(collectors: Iterable[Collector]) -> None:
    for collector in collectors:
        collector.close()


def poll_commands(collectors: Sequence[Collector]) -> tuple[str, ...]:
    """The commands ``collectors`` ask every poll, each once: sent in the poll's batch."""
    return tuple(dict.fromkeys(c for collector in collectors for c in collector.poll_commands))


async def run_collectors(
    collectors: Sequence[Collector],
    client: QMPClient,
    prefetched: Mapping[str, Any] | None = None,
    *,
    vm: str = "",
) -> tuple[tuple[Sample, ...], CollectorResults]:
    """Run each collector once: their samples, and whether each succeeded. ``prefetched``
    answers (by command, asked without arguments) are served without asking again; a
    collector's own failure is recorded as its result, but a broken connection (closed,
    timed out, garbled) raises: the whole poll failed."""
    if not collectors:
        return (), ()
    answers = prefetched or {}

    async def query(command: str, arguments: dict[str, Any] | None = None) -> Any:
        if arguments is None and command in answers:
            return returned(answers[command])
        return await client.execute(command, arguments)

    samples: list[Sample] = []
    results = []
    for collector in collectors:
        try:
            samples.extend(await collector.collect(query))
            ok = True
        except (ConnectionClosedError, CommandTimeoutError, ProtocolError):
            raise
        except (QMPError, ValueError, TypeError, KeyError, AttributeError) as err:
            log.debug("%s: collector %s failed: %s", vm, collector.name, err)
            ok = False
        results.append((collector.name, ok))
    return tuple(samples), tuple(results)
