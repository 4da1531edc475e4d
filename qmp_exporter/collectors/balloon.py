"""The memory balloon from ``query-balloon``.

Sample output (only for VMs with a balloon device)::

    qemu_balloon_actual_bytes{vm="web1"} 67108864
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from qmp_exporter.collectors.base import Collector, Query
from qmp_exporter.collectors.values import as_count, as_dict
from qmp_exporter.qmp import CommandError
from qmp_exporter.textformat import Family, Sample

#: QEMU's answer to ``query-balloon`` when the VM has no balloon device.
NO_BALLOON = "DeviceNotActive"

ACTUAL_BYTES = Family(
    "qemu_balloon_actual_bytes", "gauge", "Guest memory as the balloon leaves it."
)


class BalloonCollector(Collector):
    """The guest's current memory as set by the balloon. A VM without a balloon device is
    not a failure: it simply has no ``qemu_balloon_actual_bytes`` series."""

    name = "balloon"
    required_commands = ("query-balloon",)
    poll_commands = ("query-balloon",)
    families = (ACTUAL_BYTES,)

    async def collect(self, query: Query) -> Sequence[Sample]:
        try:
            answer = await query("query-balloon", None)
        except CommandError as err:
            if err.error_class == NO_BALLOON:
                return []
            raise
        return parse_balloon(answer)


def parse_balloon(answer: Any) -> list[Sample]:
    """Samples from a ``query-balloon`` answer."""
    info = as_dict(answer, "query-balloon")
    return [ACTUAL_BYTES.sample((), as_count(info.get("actual"), "actual"))]
