"""Optional per-VM collectors: each turns the answers to a few ``query-*`` commands into
metric samples. The core metrics (status, VNC, identity) are not collectors; see
:mod:`qmp_exporter.poller`.

A collector module defines one :class:`~qmp_exporter.collectors.base.Collector` subclass and
adds it to ``COLLECTORS`` below (one registration line, as node_exporter does).
"""

from __future__ import annotations

from qmp_exporter.collectors.base import Collector

#: Every collector, by name. Order is the order of collection.
COLLECTORS: dict[str, type[Collector]] = {}

#: Collectors a monitor runs when its config has no ``collectors:`` list.
DEFAULT_COLLECTORS: tuple[str, ...] = ()
