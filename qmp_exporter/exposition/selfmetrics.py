"""The exporter's own global metrics, in a private prometheus_client registry."""

from __future__ import annotations

import platform
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from qmp_exporter import __version__
from qmp_exporter.discovery import ProcessRow, Scan
from qmp_exporter.discovery.scan import newly_skipped
from qmp_exporter.exposition.counters import OwnCounter
from qmp_exporter.exposition.families import PROCESS_INFO, PROCESSES, PROCESSES_SKIPPED
from qmp_exporter.host.trust import SKIP_REASONS
from qmp_exporter.polling.failures import ERROR_REASONS


class QemuProcesses(Collector):
    """``qemu_processes`` and ``qemu_process_info`` from the last scan: a
    :class:`~qmp_exporter.discovery.ScanListener` (nothing without a process scan)."""

    def __init__(self) -> None:
        self._rows: tuple[ProcessRow, ...] | None = None
        self.skipped = dict.fromkeys(SKIP_REASONS, 0)
        self._before = Scan()

    def scanned(self, scan: Scan) -> None:
        """Take the QEMU processes of a new scan; count each process it skipped once (by PID
        and start), however many scans skip it."""
        self._rows = scan.processes
        for skipped in newly_skipped(scan, self._before):
            self.skipped[skipped.reason] = self.skipped.get(skipped.reason, 0) + 1
        self._before = scan

    def collect(self) -> Iterator[Metric]:
        rows = self._rows
        if rows is None:
            return
        counts = GaugeMetricFamily(PROCESSES.name, PROCESSES.help, labels=["watched"])
        watched = sum(1 for row in rows if row.watched)
        counts.add_metric(["true"], watched)
        counts.add_metric(["false"], len(rows) - watched)
        yield counts
        labels = ["vm", "pid", "name", "uuid", "monitor", "problem"]
        info = GaugeMetricFamily(PROCESS_INFO.name, PROCESS_INFO.help, labels=labels)
        for r in rows:
            info.add_metric([r.vm, str(r.pid), r.name, r.uuid, r.monitor, r.problem], 1)
        yield info
        skipped = CounterMetricFamily(
            PROCESSES_SKIPPED.name.removesuffix("_total"), PROCESSES_SKIPPED.help, labels=["reason"]
        )
        for reason, count in self.skipped.items():
            skipped.add_metric([reason], count)
        yield skipped


#: The ``reason`` label of ``qmp_exporter_probe_failures_total`` (all exist at 0): the poll
#: error reasons of a probe that reached no VM, then the refusals.
PROBE_FAILURE_REASONS = (
    *ERROR_REASONS,
    "rate_limited",
    "concurrency_limit",
    "overloaded",
)


class ProbeFailures(OwnCounter):
    """``qmp_exporter_probe_failures_total{reason}``: every reason at 0 from the start."""

    def __init__(self) -> None:
        super().__init__(
            "qmp_exporter_probe_failures",
            "Probes (/probe) that reached no VM or were refused, by reason.",
            ["reason"],
        )
        for reason in PROBE_FAILURE_REASONS:
            self.labels(reason)

    def count(self, reason: str) -> None:
        """One more probe failed or was refused for ``reason``."""
        if reason in PROBE_FAILURE_REASONS:
            self.labels(reason).inc()


class SelfMetrics:
    """Build info, monitor count, reload status, and process metrics.

    They live in a registry of their own, never prometheus_client's default one, and are
    gathered by prometheus_client's collectors (not the QMP collectors of ``collectors/``).
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        # prometheus_client collectors of the process, the Python platform and the GC.
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.processes = QemuProcesses()
        self.registry.register(self.processes)
        build = Gauge(
            "qmp_exporter_build_info",
            "The exporter's version and the Python that runs it; value 1.",
            ["version", "python_version"],
            registry=self.registry,
        )
        build.labels(__version__, platform.python_version()).set(1)
        self.monitors = Gauge(
            "qmp_exporter_monitors",
            "Monitors being watched (configured and discovered).",
            registry=self.registry,
        )
        self.reload_successful = Gauge(
            "qmp_exporter_config_last_reload_successful",
            "1 when the last configuration (re)load succeeded, else 0.",
            registry=self.registry,
        )
        self.reload_success_time = Gauge(
            "qmp_exporter_config_last_reload_success_timestamp_seconds",
            "When the configuration was last loaded successfully, in seconds since the epoch.",
            registry=self.registry,
        )
        self.ready = Gauge(
            "qmp_exporter_ready",
            "1 when /-/ready answers 200; 0 while a poller outlives its stop deadline or a "
            "reload has run longer than 30s.",
            registry=self.registry,
        )
        self.ready.set(1)

        self.probe_failures = ProbeFailures()
        self.registry.register(self.probe_failures)

    def render(self) -> bytes:
        """The exposition of this registry."""
        return generate_latest(self.registry)
