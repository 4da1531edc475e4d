"""Optional per-VM collectors: each turns the answers to a few ``query-*`` commands into
metric samples. The core metrics (status, VNC, identity) are not collectors; see
:mod:`qmp_exporter.polling.poller`.

A collector module defines one :class:`~qmp_exporter.collectors.base.Collector` subclass and
adds it to ``COLLECTORS`` below (one registration line, as node_exporter does).
"""

from __future__ import annotations

from qmp_exporter.collectors.balloon import BalloonCollector
from qmp_exporter.collectors.base import Collector
from qmp_exporter.collectors.block import BlockCollector
from qmp_exporter.collectors.host import HostCollector
from qmp_exporter.collectors.kvm import KvmCollector
from qmp_exporter.collectors.kvm_stats import KvmStatsCollector
from qmp_exporter.collectors.memory import MemoryCollector
from qmp_exporter.collectors.migration import MigrationCollector
from qmp_exporter.collectors.spice import SpiceCollector
from qmp_exporter.collectors.vcpu import VcpuCollector

#: Every collector, by name. Order is the order of collection.
COLLECTORS: dict[str, type[Collector]] = {
    BlockCollector.name: BlockCollector,
    VcpuCollector.name: VcpuCollector,
    MemoryCollector.name: MemoryCollector,
    BalloonCollector.name: BalloonCollector,
    KvmCollector.name: KvmCollector,
    MigrationCollector.name: MigrationCollector,
    SpiceCollector.name: SpiceCollector,
    KvmStatsCollector.name: KvmStatsCollector,
    HostCollector.name: HostCollector,
}

#: Collectors a monitor runs when its config has no ``collectors:`` list: the figures the
#: libvirt exporters give (disk I/O, vCPUs, memory, balloon) plus ``kvm``, which asks once
#: per connection. Each of the first four costs one small query per poll (about 4 x 1,000
#: queries per interval for 1,000 VMs). ``migration`` and ``spice`` are off because most
#: fleets never use them; ``kvm_stats`` because its answers are large (about 45 stats per
#: vCPU every poll). ``host`` reads ``/proc`` and ``/sys``, no QMP: 1.3-1.4x a poll's CPU,
#: 1.01-1.12x the whole exporter's (docs/benchmarks.md), for what libvirt users look at first.
DEFAULT_COLLECTORS: tuple[str, ...] = ("block", "vcpu", "memory", "balloon", "kvm", "host")
