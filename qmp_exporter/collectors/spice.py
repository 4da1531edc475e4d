"""The SPICE server from ``query-spice`` (builds with SPICE only).

Sample output::

    qemu_spice_enabled{vm="web1"} 1
    qemu_spice_clients{vm="web1"} 1
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from qmp_exporter.collectors.base import Collector, Query
from qmp_exporter.collectors.values import as_bool, as_count, as_dict, as_list
from qmp_exporter.textformat import Family, Sample

SPICE_ENABLED = Family("qemu_spice_enabled", "gauge", "1 if the VM has a SPICE server.")
SPICE_CLIENTS = Family("qemu_spice_clients", "gauge", "SPICE clients connected now.")


class SpiceCollector(Collector):
    """Whether SPICE is on and how many clients are connected. A client opens several
    channels (main, display, inputs, ...), so clients are counted by ``connection-id``."""

    name = "spice"
    required_commands = ("query-spice",)
    poll_commands = ("query-spice",)
    families = (SPICE_ENABLED, SPICE_CLIENTS)

    async def collect(self, query: Query) -> Sequence[Sample]:
        return parse_spice(await query("query-spice", None))


def parse_spice(answer: Any) -> list[Sample]:
    """Samples from a ``query-spice`` answer."""
    info = as_dict(answer, "query-spice")
    enabled = as_bool(info.get("enabled"), "query-spice.enabled")
    connections: set[int] = set()
    for index, item in enumerate(as_list(info.get("channels", []), "query-spice.channels")):
        channel = as_dict(item, f"query-spice.channels[{index}]")
        connections.add(
            as_count(channel.get("connection-id"), f"query-spice.channels[{index}].connection-id")
        )
    return [SPICE_ENABLED.sample((), int(enabled)), SPICE_CLIENTS.sample((), len(connections))]
