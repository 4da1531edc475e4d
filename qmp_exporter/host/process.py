"""One QEMU process as the host sees it: CPU, memory, I/O, per-vCPU time and run-queue delay,
and tap traffic, read from ``/proc`` and ``/sys`` (never on a scrape).

Sample output::

    qemu_process_cpu_seconds_total{vm="web1",mode="user"} 812.4
    qemu_vcpu_delay_seconds_total{vm="web1",vcpu="0"} 3.2519
    qemu_network_receive_bytes_total{vm="web1",interface="vnet3"} 1.2e+09

Whatever cannot be read is left out, with one log line per process, figure and cause.
Samples are built as plain tuples, not through ``Family.sample``: this runs for every VM on
every poll, and the families' names are fixed here.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Protocol

from qmp_exporter.host.peer import Peer
from qmp_exporter.host.procfs import (
    GONE,
    MALFORMED,
    MAX_FDS_EXAMINED,
    UNSUPPORTED,
    FileBudget,
    HeldFiles,
    ReadError,
    find_taps,
    open_process_dir,
    parse_io,
    parse_schedstat,
    parse_stat,
    parse_swap,
    read_bytes,
    read_counter,
)
from qmp_exporter.textformat import Family, Labels, Sample


class ReaderHost(Protocol):
    """What a reader uses of its :class:`~qmp_exporter.host.machine.Host`."""

    @property
    def proc_root(self) -> str: ...

    @property
    def sys_root(self) -> str: ...

    @property
    def files(self) -> FileBudget: ...

    def boot_time(self) -> float: ...

    def vcpu_labels(self, index: int) -> Labels: ...

    def note_missing(self, pid: int, figure: str, reason: str) -> None: ...


CPU_SECONDS = Family(
    "qemu_process_cpu_seconds_total", "counter", "Host CPU time used by the QEMU process, by mode."
)
RESIDENT_BYTES = Family(
    "qemu_process_resident_memory_bytes", "gauge", "Host memory resident for the QEMU process."
)
SWAP_BYTES = Family("qemu_process_swap_bytes", "gauge", "QEMU process memory swapped out.")
START_TIME = Family(
    "qemu_process_start_time_seconds", "gauge", "Start of the QEMU process, seconds since epoch."
)
IO_READ = Family(
    "qemu_process_io_read_bytes_total", "counter", "Bytes the QEMU process read from storage."
)
IO_WRITE = Family(
    "qemu_process_io_write_bytes_total", "counter", "Bytes the QEMU process wrote to storage."
)
VCPU_SECONDS = Family(
    "qemu_vcpu_cpu_seconds_total", "counter", "Host CPU time used by the vCPU's thread."
)
VCPU_DELAY = Family(
    "qemu_vcpu_delay_seconds_total",
    "counter",
    "Time the vCPU's thread was runnable but waited for a host CPU (the guest's steal time).",
)
#: (family, host-side statistic file): the guest's direction, as libvirt gives it; what the
#: guest received is what the host side of its tap transmitted.
NETWORK = (
    (Family("qemu_network_receive_bytes_total", "counter", "Bytes the guest received."),
     "tx_bytes"),
    (Family("qemu_network_receive_packets_total", "counter", "Packets the guest received."),
     "tx_packets"),
    (Family("qemu_network_transmit_bytes_total", "counter", "Bytes the guest sent."),
     "rx_bytes"),
    (Family("qemu_network_transmit_packets_total", "counter", "Packets the guest sent."),
     "rx_packets"),
)  # fmt: skip
#: Read every ``SLOW_EVERY`` polls only (they rarely move): half the sysfs reads per tap
#: (swap, from ``status``, likewise).
NETWORK_SLOW = (
    (Family("qemu_network_receive_errors_total", "counter", "Receive errors of the guest's tap."),
     "tx_errors"),
    (Family("qemu_network_receive_drops_total", "counter", "Frames for the guest dropped."),
     "tx_dropped"),
    (Family("qemu_network_transmit_errors_total", "counter", "Send errors of the guest's tap."),
     "rx_errors"),
    (Family("qemu_network_transmit_drops_total", "counter", "Frames from the guest dropped."),
     "rx_dropped"),
)  # fmt: skip
#: Every family a process reader may produce.
FAMILIES = (
    CPU_SECONDS, RESIDENT_BYTES, SWAP_BYTES, START_TIME, IO_READ, IO_WRITE,
    VCPU_SECONDS, VCPU_DELAY, *(f for f, _ in NETWORK), *(f for f, _ in NETWORK_SLOW),
)  # fmt: skip
SLOW_EVERY = 10
#: Taps are looked for again every so many polls (a NIC hot-plugged).
TAP_SCAN_EVERY = 60

_USER: Labels = (("mode", "user"),)
_SYSTEM: Labels = (("mode", "system"),)


class ProcessReader:
    """Reads one trusted QEMU process, again on every :meth:`read`; holds its files open
    until :meth:`close`. Made by :meth:`Host.trusted_process
    <qmp_exporter.host.machine.Host.trusted_process>`.

    The process is the one of ``pid`` that started ``started`` seconds after boot (else the
    one at ``pid`` when first read): every file is opened through its ``/proc/PID``
    directory, held open (:func:`~qmp_exporter.host.procfs.open_process_dir`), and every
    read compares ``stat``'s start with it. Once that process is gone the reader is gone
    for good (:class:`ReadError` ``gone``): it never reads a later process of the same PID."""

    def __init__(self, host: ReaderHost, pid: int, started: float | None = None) -> None:
        self.host = host
        self.pid = pid
        self._dir: int | None = None  # the process's /proc/PID, once opened
        self._gone = False
        self._start: list[Sample] | None = None  # fixed for the life of the process
        self._started = started  # its start, seconds after boot
        #: The last poll's vCPU threads, and (schedstat path, labels) of each.
        self._threads: Sequence[tuple[int, int]] = ()
        self._vcpus: list[tuple[str, Labels]] = []
        #: (tap, its labels, (family, statistic file) to read each poll), once found.
        self._taps: list[tuple[str, Labels, list[tuple[str, str]]]] | None = None
        self._polls = 0
        self._slow: list[Sample] = []  # tap errors and drops, read every SLOW_EVERY polls
        self._slow_process: list[Sample] = []  # swap, likewise
        self._skip: set[str] = set()  # figures that failed for good for this reader
        self._files = HeldFiles(host.files)  # stat, io, schedstat and tap counters, kept open

    def close(self) -> None:
        """Close the files held open (a later :meth:`read` opens them again, for the same
        process only)."""
        self._files.close_all()
        if self._dir is not None:
            os.close(self._dir)
            self._dir = None
            self.host.files.held -= 1

    def bind(self) -> None:
        """Open the process's directory and check (or learn) its start; :class:`ReadError`
        when the process is gone or is another."""
        self._stat()

    def check_alive(self) -> None:
        """:class:`ReadError` unless the process is still running (a zombie counts)."""
        self._stat()

    def is_process(self, peer: Peer | None) -> bool:
        """Whether ``peer`` is the process this reader reads (same PID, same start), still
        readable: a ``poll``-mode monitor then keeps its open files, tap list and cadence
        instead of doing the first poll's work on every poll."""
        return (
            peer is not None
            and not self._gone
            and peer.pid == self.pid
            and self._started is not None
            and peer.started == self._started
        )

    def _stat(self) -> tuple[float, float, int, float]:
        """The process's ``stat`` (:func:`parse_stat`), checked to be its own; the reader is
        gone for good once it cannot be read or another process's start shows."""
        if self._gone:
            raise ReadError(GONE, f"process {self.pid}")
        try:
            if self._dir is None:
                self._dir = open_process_dir(self.pid, self.host.proc_root)
                self.host.files.held += 1
            stat = parse_stat(self._files.read("stat", self._dir))
        except ReadError as err:
            if err.reason == GONE:
                self._die()
            raise
        started = stat[3]
        if self._started is None:
            self._started = started
        elif started != self._started:  # the PID's process was not (or is no longer) ours
            self._die()
            raise ReadError(GONE, f"process {self.pid}: its PID is another process's now")
        return stat

    def _die(self) -> None:
        self._gone = True
        self.close()

    def read(self, threads: Sequence[tuple[int, int]]) -> list[Sample]:
        """Samples for the process and its vCPU ``threads`` ((index, thread id) pairs)."""
        user, system, resident, _ = self._stat()  # ReadError: the whole read failed
        samples: list[Sample] = [
            (CPU_SECONDS.name, _USER, user),
            (CPU_SECONDS.name, _SYSTEM, system),
            (RESIDENT_BYTES.name, (), resident),
        ]
        if self._start is None:
            self._start = self._start_time()
        samples.extend(self._start)
        if self._polls % SLOW_EVERY == 0:
            self._slow_process = self._swap()
        samples.extend(self._slow_process)
        if "io" not in self._skip:
            self._io(samples)
        if threads != self._threads:
            self._threads = threads
            self._vcpus = [
                (f"task/{tid}/schedstat", self.host.vcpu_labels(index)) for index, tid in threads
            ]
        read, directory = self._files.read, self._dir
        for path, labels in self._vcpus:
            try:
                run, delay = parse_schedstat(read(path, directory))
            except ReadError as err:
                self.host.note_missing(self.pid, "vcpu", err.reason)
                continue
            samples.append((VCPU_SECONDS.name, labels, run))
            samples.append((VCPU_DELAY.name, labels, delay))
        if "network" not in self._skip:
            self._network(samples)
        self._polls += 1
        return samples

    def _start_time(self) -> list[Sample]:
        """The process's start as epoch seconds (fixed for its life)."""
        assert self._started is not None  # read by _stat
        try:
            return [(START_TIME.name, (), self.host.boot_time() + self._started)]
        except ReadError as err:
            self.host.note_missing(self.pid, "start time", err.reason)
            return []

    def _swap(self) -> list[Sample]:
        try:
            swap = parse_swap(read_bytes("status", self._dir))
        except ReadError as err:
            self.host.note_missing(self.pid, "swap", err.reason)
            return []
        return [] if swap is None else [SWAP_BYTES.sample((), swap)]

    def _io(self, samples: list[Sample]) -> None:
        try:
            read, written = parse_io(self._files.read("io", self._dir))
        except ReadError as err:
            reason = UNSUPPORTED if err.reason == GONE else err.reason
            self.host.note_missing(self.pid, "io", reason)
            self._skip.add("io")
            return
        samples.append((IO_READ.name, (), read))
        samples.append((IO_WRITE.name, (), written))

    def taps_due(self) -> bool:
        """Whether the next :meth:`read` wants the taps looked for first (:meth:`find_taps`:
        at the first read, then every :data:`TAP_SCAN_EVERY` reads)."""
        return "network" not in self._skip and (
            self._taps is None or self._polls % TAP_SCAN_EVERY == 0
        )

    def find_taps(self) -> None:
        """Look for the process's taps (a walk over its fds, at most
        :data:`~qmp_exporter.host.procfs.MAX_FDS_EXAMINED`: blocking, so the host collector
        calls it in a thread when :meth:`taps_due`); the reads use them from then on."""
        try:
            self._stat()  # bound to the process (its directory open), still ours
        except ReadError:
            return  # the read that follows says why
        sys_root = self.host.sys_root
        try:
            taps, complete = find_taps(self.pid, self.host.proc_root, self._dir)
        except ReadError as err:
            self.host.note_missing(self.pid, "network", err.reason)
            self._skip.add("network")
            return
        if not complete:
            self.host.note_missing(
                self.pid, "network", f"taps looked for among its first {MAX_FDS_EXAMINED} fds"
            )
        if self._taps is not None and taps != [tap for tap, _, _ in self._taps]:
            self._files.close_all()  # a tap went: reopened as needed
        self._taps = [
            (
                tap,
                (("interface", tap),),
                [
                    (family.name, f"{sys_root}/class/net/{tap}/statistics/{stat}")
                    for family, stat in NETWORK
                ],
            )
            for tap in taps
        ]

    def _network(self, samples: list[Sample]) -> None:
        sys_root = self.host.sys_root
        if self._taps is None:
            return  # not looked for yet (find_taps)
        slow = self._polls % SLOW_EVERY == 0
        if slow:
            self._slow = []
        read = self._files.read
        for tap, labels, counters in self._taps:
            try:
                for family_name, path in counters:
                    samples.append((family_name, labels, int(read(path))))
                if slow:
                    directory = f"{sys_root}/class/net/{tap}/statistics/"
                    for family, stat in NETWORK_SLOW:
                        value = read_counter(directory + stat)
                        self._slow.append(family.sample(labels, value))
            except ReadError as err:
                self.host.note_missing(self.pid, f"network {tap}", err.reason)
            except ValueError:
                self.host.note_missing(self.pid, f"network {tap}", MALFORMED)
        samples.extend(self._slow)
