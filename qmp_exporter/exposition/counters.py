"""The exporter's own counters: labelled, and without ``_created`` series.

prometheus_client's ``Counter`` adds a ``<name>_created`` sample (the time the series was
made) beside every ``<name>_total``. The exporter's own counters do without it, as Go
exporters (node_exporter, exporter-toolkit) do: each is made at start, its label sets at 0
(so ``rate()`` works from the first scrape), which leaves ``_created`` nothing to tell but
the start time, one more series per label set, and a value that differs from run to run.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector


class CounterChild:
    """One label set's count; :meth:`inc` may be called from any thread."""

    __slots__ = ("_lock", "value")

    def __init__(self, lock: threading.Lock) -> None:
        self._lock = lock
        self.value = 0.0

    def inc(self, amount: float = 1) -> None:
        with self._lock:
            self.value += amount


class OwnCounter(Collector):
    """``<name>_total{labels}``, with no ``_created``: ``labels(*values).inc()`` as with
    prometheus_client's ``Counter``. ``name`` is given without ``_total``."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._lock = threading.Lock()
        self._children: dict[tuple[str, ...], CounterChild] = {}
        if registry is not None:
            registry.register(self)

    def labels(self, *values: str) -> CounterChild:
        """The count of one label set (made at 0 on first use)."""
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name}: expected labels {self.labelnames}, got {values}")
        with self._lock:
            child = self._children.get(values)
            if child is None:
                child = self._children[values] = CounterChild(self._lock)
            return child

    def _family(self) -> CounterMetricFamily:
        return CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def describe(self) -> Iterator[Metric]:
        """The family without samples: registering never collects."""
        yield self._family()

    def collect(self) -> Iterator[Metric]:
        family = self._family()
        with self._lock:
            counts = [(values, child.value) for values, child in self._children.items()]
        for values, value in counts:
            family.add_metric(values, value)
        yield family
