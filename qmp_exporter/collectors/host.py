"""The host's view of a VM as a collector: what its QEMU process costs the hypervisor.

Sample output::

    qemu_process_cpu_seconds_total{vm="web1",mode="user"} 812.4
    qemu_vcpu_delay_seconds_total{vm="web1",vcpu="0"} 3.2519
    qemu_network_receive_bytes_total{vm="web1",interface="vnet3"} 1.2e+09

A sibling kind of collector: QMP answers alone cannot give these figures, so it is built per
connection for the process behind the monitor (:attr:`Connection.peer
<qmp_exporter.collectors.base.Connection.peer>`, identified by PID and start time once per
connection because it ``needs_peer``) and only when that process is a trusted QEMU binary.
The reading itself is :class:`~qmp_exporter.host.process.ProcessReader`'s, bound to that one
process: once it is gone, the collector fails on every poll and is not kept for the next
connection. ``collect`` adds the vCPU thread ids of the poll's ``query-cpus-fast`` answer
(the batch the ``vcpu`` collector shares), the first
:data:`~qmp_exporter.collectors.vcpu.MAX_VCPUS` of them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from qmp_exporter.collectors.base import Collector, Connection, Query
from qmp_exporter.collectors.values import as_dict, as_list
from qmp_exporter.collectors.vcpu import MAX_VCPUS
from qmp_exporter.host.process import FAMILIES, ProcessReader
from qmp_exporter.qmp import CommandError
from qmp_exporter.textformat import Sample


class HostCollector(Collector):
    """CPU, memory, I/O, per-vCPU time and run-queue delay, and tap traffic of the QEMU
    process behind the monitor."""

    name = "host"
    required_commands = ()
    poll_commands = ("query-cpus-fast",)
    families = FAMILIES
    needs_peer = True

    def __init__(self, available_commands: frozenset[str] | None, reader: ProcessReader) -> None:
        super().__init__(available_commands)
        self.reader = reader

    @classmethod
    def for_connection(cls, connection: Connection) -> HostCollector | None:
        """The collector for the process behind the monitor, or ``None`` (logged) when no
        trusted QEMU process is known."""
        host = connection.host
        if host is None:
            return None  # a caller that reads no host figures (inventory, a bare poller)
        peer = connection.peer
        if peer is None:
            return None  # Host.peer logged why
        reader = host.trusted_process(peer.pid, peer.started)
        return None if reader is None else cls(connection.available_commands, reader)

    def serves_again(self, connection: Connection) -> bool:
        """Whether the new connection's peer is the process this collector reads (same PID
        and start), and that process is still readable."""
        return self.reader.is_process(connection.peer)

    async def collect(self, query: Query) -> Sequence[Sample]:
        try:
            answer = await query("query-cpus-fast", None)
        except CommandError:  # QEMU before 2.12: the process without its vCPUs
            answer = []
        threads = vcpu_threads(answer)
        if len(answer) > MAX_VCPUS:  # a list, as vcpu_threads read it
            host = self.reader.host
            host.note_missing(self.reader.pid, "vcpu", f"more than {MAX_VCPUS} vCPUs listed")
        if self.reader.taps_due():  # a walk over the process's fds: not on the event loop
            await asyncio.to_thread(self.reader.find_taps)
        return self.reader.read(threads)

    def close(self) -> None:
        self.reader.close()


def vcpu_threads(answer: Any) -> list[tuple[int, int]]:
    """(cpu index, host thread id) of each vCPU in a ``query-cpus-fast`` answer, the first
    :data:`~qmp_exporter.collectors.vcpu.MAX_VCPUS` listed."""
    threads = []
    for position, cpu in enumerate(as_list(answer, "query-cpus-fast")[:MAX_VCPUS]):
        if type(cpu) is not dict:
            as_dict(cpu, f"query-cpus-fast[{position}]")  # raises, naming the item
        index, tid = cpu.get("cpu-index"), cpu.get("thread-id")
        if type(index) is int and type(tid) is int and tid > 0:
            threads.append((index, tid))
    return threads
