"""The host figures of QEMU processes that a process scan (``- processes: true``) finds but
nothing watches: no monitor, libvirt's own, or a name taken. Read on each rescan, in the
scan's thread, by the same process reader as the host collector's, never on a scrape.

Without QMP the vCPU threads are unknown, so an unwatched process has no per-vCPU families;
everything else of :class:`~qmp_exporter.host.process.ProcessReader` (CPU time by mode,
memory, swap, start time, I/O, tap traffic) it has. A process whose ``exe`` is not a QEMU
binary installed by root is never read.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from qmp_exporter.host.process import ProcessReader
from qmp_exporter.host.procfs import ReadError
from qmp_exporter.textformat import Sample


class TrustingHost(Protocol):
    """What is used of the :class:`~qmp_exporter.host.machine.Host`."""

    def trusted_process(self, pid: int) -> ProcessReader | None: ...

    def note_missing(self, pid: int, figure: str, reason: str) -> None: ...


@dataclass(frozen=True)
class UnwatchedHost:
    """What the host says of one unwatched QEMU process, labelled ``vm`` as the scan names
    it (``qemu_process_info``'s ``vm``)."""

    pid: int
    vm: str
    samples: tuple[Sample, ...]


def read_unwatched(
    host: TrustingHost, processes: Iterable[tuple[int, str]]
) -> tuple[UnwatchedHost, ...]:
    """The figures of each trusted process of ``processes`` ((pid, vm) pairs, the oldest
    process first), by PID; of two with the same ``vm`` the first only (one series per VM
    and figure). A process gone or untrusted is left out (logged once)."""
    hosts: list[UnwatchedHost] = []
    seen: set[str] = set()
    for pid, vm in processes:
        if vm in seen:
            host.note_missing(pid, "host", f"vm label {vm!r} taken by another QEMU process")
            continue
        reader = host.trusted_process(pid)
        if reader is None:
            continue
        try:
            reader.find_taps()  # (discovery's scan runs in a thread)
            samples = reader.read(())
        except ReadError as err:
            host.note_missing(pid, "host", err.reason)
            continue
        finally:
            reader.close()
        seen.add(vm)
        hosts.append(UnwatchedHost(pid, vm, tuple(samples)))
    return tuple(sorted(hosts, key=lambda h: h.pid))
