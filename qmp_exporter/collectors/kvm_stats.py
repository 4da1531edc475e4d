"""KVM statistics from ``query-stats`` (QEMU 7.1+, KVM only), described by
``query-stats-schemas``.

The stat names come from the schema, as the value of a ``stat`` label; the schema's type
picks counter (``cumulative``) or gauge (``instant``, ``peak``), and its unit picks the
family (``seconds``, ``bytes``, ``cycles``; stats without a unit and booleans have none).
Values are scaled to base units (``halt_wait_ns`` becomes ``stat="halt_wait"`` in seconds).
Histograms (``log2-histogram``, ``linear-histogram``) are not exported: QEMU gives bucket
counts without a sum, which a Prometheus histogram cannot express. Sample output::

    qemu_kvm_vm_stat_total{vm="web1",stat="mmu_cache_miss"} 12
    qemu_kvm_vm_stat{vm="web1",stat="pages_4k"} 0
    qemu_kvm_vcpu_stat_total{vm="web1",vcpu="0",stat="exits"} 2345
    qemu_kvm_vcpu_stat{vm="web1",vcpu="0",stat="blocking"} 0
    qemu_kvm_vcpu_stat_seconds_total{vm="web1",vcpu="0",stat="halt_wait"} 0.0123
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from qmp_exporter.collectors.base import Collector, Query
from qmp_exporter.collectors.values import (
    as_count,
    as_dict,
    as_list,
    as_number,
    as_str,
    bounded,
)
from qmp_exporter.textformat import Family, Sample

PROVIDER = "kvm"
TARGETS = ("vm", "vcpu")
UNITS = ("", "seconds", "bytes", "cycles")
_COUNTER_TYPES = frozenset({"cumulative"})
_GAUGE_TYPES = frozenset({"instant", "peak"})
#: Name suffixes that repeat the unit (``halt_wait_ns``), dropped from the ``stat`` label.
_UNIT_SUFFIXES = {
    "seconds": ("_seconds", "_ns", "_us", "_ms"),
    "bytes": ("_bytes",),
    "cycles": ("_cycles",),
}


def family_name(target: str, unit: str, counter: bool) -> str:
    """``qemu_kvm_vcpu_stat_seconds_total`` and the like."""
    name = f"qemu_kvm_{target}_stat"
    if unit:
        name += f"_{unit}"
    return name + ("_total" if counter else "")


def _families() -> dict[tuple[str, str, bool], Family]:
    """Every family, by (target, unit, counter)."""
    families = {}
    for target in TARGETS:
        per = "per vCPU" if target == "vcpu" else "for the whole VM"
        for unit in UNITS:
            unit_text = f" in {unit}" if unit else ""
            families[(target, unit, True)] = Family(
                family_name(target, unit, True),
                "counter",
                f"KVM cumulative statistic{unit_text} {per}, by stat name.",
            )
            families[(target, unit, False)] = Family(
                family_name(target, unit, False),
                "gauge",
                f"KVM instant or peak statistic{unit_text} {per}, by stat name.",
            )
    return families


#: The families, by (target, unit, counter): the one place their names are made.
FAMILIES = _families()


@dataclass(frozen=True, slots=True)
class StatSchema:
    """How to export one stat: its family, its ``stat`` label and the scale to base units."""

    family: Family
    label: str
    scale: float


Schema = dict[tuple[str, str], StatSchema]


def parse_schemas(answer: Any) -> Schema:
    """``(target, name) -> StatSchema`` for the KVM stats a ``query-stats-schemas`` answer
    lists that can be exported (histograms and unknown units or types are left out)."""
    schema: Schema = {}
    for index, item in enumerate(as_list(answer, "query-stats-schemas")):
        where = f"query-stats-schemas[{index}]"
        entry = as_dict(item, where)
        target = entry.get("target")
        if entry.get("provider") != PROVIDER or target not in TARGETS:
            continue
        for number, raw in enumerate(as_list(entry.get("stats"), f"{where}.stats")):
            stat = as_dict(raw, f"{where}.stats[{number}]")
            name = as_str(stat.get("name"), f"{where}.stats[{number}].name")
            kind = stat.get("type")
            unit = stat.get("unit", "")
            if unit == "boolean":
                unit = ""
            if kind not in _COUNTER_TYPES | _GAUGE_TYPES or unit not in UNITS:
                continue
            exponent = stat.get("exponent", 0)
            base = stat.get("base", 10 if exponent == 0 else None)
            if (
                not isinstance(exponent, int)
                or isinstance(exponent, bool)
                or base not in (2, 10)
                or not -64 <= exponent <= 64
            ):
                continue
            label = name
            for suffix in _UNIT_SUFFIXES.get(unit, ()):
                if label.endswith(suffix) and len(label) > len(suffix):
                    label = label[: -len(suffix)]
                    break
            schema[(target, name)] = StatSchema(
                FAMILIES[(target, unit, kind in _COUNTER_TYPES)], label, float(base) ** exponent
            )
    return schema


def parse_stats(
    target: str, answer: Any, schema: Schema, vcpu_index: dict[str, str] | None = None
) -> list[Sample]:
    """Samples from a ``query-stats`` answer for ``target``. For vCPUs the ``vcpu`` label is
    the CPU index from ``vcpu_index`` (qom-path -> index), else the qom-path itself."""
    samples: list[Sample] = []
    for index, item in enumerate(as_list(answer, f"query-stats {target}")):
        where = f"query-stats {target}[{index}]"
        result = as_dict(item, where)
        if result.get("provider") != PROVIDER:
            continue
        base_labels: tuple[tuple[str, str], ...] = ()
        if target == "vcpu":
            path = as_str(result.get("qom-path"), f"{where}.qom-path")
            base_labels = (("vcpu", bounded((vcpu_index or {}).get(path, path))),)
        for number, raw in enumerate(as_list(result.get("stats"), f"{where}.stats")):
            stat = as_dict(raw, f"{where}.stats[{number}]")
            name = stat.get("name")
            described = schema.get((target, name)) if isinstance(name, str) else None
            if described is None:
                continue
            value = stat.get("value")
            what = f"{where}.{name}"
            if isinstance(value, bool):
                number_value: float = int(value)
            elif described.family.kind == "counter":
                number_value = as_count(value, what)
            else:
                number_value = as_number(value, what)
            if described.scale != 1:
                number_value *= described.scale
            samples.append(
                described.family.sample((*base_labels, ("stat", described.label)), number_value)
            )
    return samples


def parse_vcpu_index(answer: Any) -> dict[str, str]:
    """qom-path -> cpu-index (as a label value) from a ``query-cpus-fast`` answer."""
    mapping = {}
    for position, item in enumerate(as_list(answer, "query-cpus-fast")):
        cpu = as_dict(item, f"query-cpus-fast[{position}]")
        path = as_str(cpu.get("qom-path"), f"query-cpus-fast[{position}].qom-path")
        mapping[path] = str(as_count(cpu.get("cpu-index"), f"query-cpus-fast[{position}]"))
    return mapping


class KvmStatsCollector(Collector):
    """KVM's own per-VM and per-vCPU statistics. Reads the schema once per connection;
    asks ``query-cpus-fast`` only when a vCPU appears that it cannot yet name by index.
    Under TCG the schema is empty and the collector yields nothing."""

    name = "kvm_stats"
    required_commands = ("query-stats", "query-stats-schemas")
    families = tuple(FAMILIES.values())

    def __init__(self, available_commands: frozenset[str] | None) -> None:
        super().__init__(available_commands)
        self._schema: Schema | None = None
        self._vcpu_index: dict[str, str] = {}

    async def collect(self, query: Query) -> Sequence[Sample]:
        if self._schema is None:
            self._schema = parse_schemas(await query("query-stats-schemas", None))
        schema = self._schema
        targets = {target for target, _ in schema}
        samples: list[Sample] = []
        if "vm" in targets:
            answer = await query(
                "query-stats", {"target": "vm", "providers": [{"provider": PROVIDER}]}
            )
            samples += parse_stats("vm", answer, schema)
        if "vcpu" in targets:
            answer = await query(
                "query-stats", {"target": "vcpu", "providers": [{"provider": PROVIDER}]}
            )
            await self._learn_vcpus(query, answer)
            samples += parse_stats("vcpu", answer, schema, self._vcpu_index)
        return samples

    async def _learn_vcpus(self, query: Query, answer: Any) -> None:
        paths = (
            {item.get("qom-path") for item in answer if isinstance(item, dict)}
            if isinstance(answer, list)
            else set()
        )
        if paths <= self._vcpu_index.keys():
            return
        if self.available_commands is not None and "query-cpus-fast" not in self.available_commands:
            return
        self._vcpu_index = parse_vcpu_index(await query("query-cpus-fast", None))
