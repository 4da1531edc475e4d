#!/usr/bin/env python3
"""Fleet sizing: series per VM, scrape bytes, a real Prometheus's head series and memory,
and a Prometheus agent's CPU, written into docs/benchmarks.md ("Fleet sizing").

Every process (simulated fleets, exporters, real QEMUs, Prometheus) is started and stopped
here, on loopback, with its storage in a temporary directory. ``--quick`` uses small fleets.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.procs import (
    REPO,
    FleetProcess,
    Process,
    RealQemu,
    StaticServerProcess,
    free_port,
    make_workdir,
    wait_until,
)
from bench.sizing_report import (
    LEAN_FAMILY,
    SIM_COLLECTORS,
    Results,
    Settings,
    log,
    plot,
    render,
    write_section,
)


def fetch(url: str, gzip_ok: bool = False) -> bytes:
    request = urllib.request.Request(url, headers={"Accept-Encoding": "gzip"} if gzip_ok else {})
    with urllib.request.urlopen(request, timeout=30) as response:
        return bytes(response.read())


def samples(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def sample_value(text: str, name: str) -> float | None:
    """The value of the unlabelled sample ``name``."""
    for line in samples(text):
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def vm_of(line: str) -> str | None:
    start = line.find('vm="')
    if start < 0:
        return None
    return line[start + 4 : line.index('"', start + 4)]


class Exporter(Process):
    """``python -m qmp_exporter`` on ``monitors`` (name, address, collectors or None)."""

    def __init__(
        self,
        workdir: Path,
        monitors: Sequence[tuple[str, str, list[str] | None]],
        interval: str,
        tag: str,
    ) -> None:
        import yaml

        entries: list[dict[str, Any]] = []
        for name, address, collectors in monitors:
            entry: dict[str, Any] = {"name": name, "address": address}
            if collectors is not None:
                entry["collectors"] = collectors
            entries.append(entry)
        self.port = free_port()
        self.count = len(entries)
        config = workdir / f"exporter-{tag}.yml"
        config.write_text(yaml.safe_dump({"poll_interval": interval, "monitors": entries}))
        super().__init__(
            [sys.executable, "-m", "qmp_exporter", "--config.file", str(config),
             "--web.listen-address", f"127.0.0.1:{self.port}", "--log.level", "warn"],
            workdir / f"exporter-{tag}.log",
        )  # fmt: skip

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/metrics"

    def wait_all_up(self, timeout: float) -> str:
        def all_up() -> str | None:
            self.check_alive()
            try:
                text = fetch(self.url).decode()
            except OSError:
                return None
            up = [line for line in samples(text) if line.startswith("qemu_up{")]
            ok = len(up) == self.count and all(line.endswith(" 1") for line in up)
            return text if ok else None

        return str(wait_until(all_up, timeout, 0.5))


class Prometheus(Process):
    """A real Prometheus (server or agent) on loopback with its own temporary storage."""

    def __init__(
        self, workdir: Path, tag: str, targets: Sequence[str], interval: float, *,
        agent: bool = False, receiver: bool = False, remote_write: str | None = None,
    ) -> None:  # fmt: skip
        binary = shutil.which("prometheus")
        if binary is None:
            raise RuntimeError("prometheus is not installed (scripts/install-test-deps.sh)")
        self.port = free_port()
        config: dict[str, Any] = {
            "global": {"scrape_interval": f"{interval:g}s", "scrape_timeout": f"{interval:g}s"},
            "scrape_configs": [
                {"job_name": "qmp", "static_configs": [{"targets": list(targets)}]}
            ] if targets else [],
        }  # fmt: skip
        if remote_write:
            config["remote_write"] = [{"url": remote_write}]
        path = workdir / f"prometheus-{tag}.yml"
        path.write_text(json.dumps(config))  # JSON is YAML
        storage = workdir / f"prometheus-{tag}-data"
        args = [binary, f"--config.file={path}", f"--web.listen-address=127.0.0.1:{self.port}"]
        if agent:
            args += ["--enable-feature=agent", f"--storage.agent.path={storage}"]
        else:
            args += [f"--storage.tsdb.path={storage}"]
        if receiver:
            args.append("--web.enable-remote-write-receiver")
        super().__init__(args, workdir / f"prometheus-{tag}.log")
        self.base = f"http://127.0.0.1:{self.port}"
        wait_until(self._ready, 60, 0.2)

    def _ready(self) -> bool:
        self.check_alive()
        try:
            return fetch(self.base + "/-/ready") is not None
        except OSError:
            return False

    def own(self, name: str) -> float:
        value = sample_value(fetch(self.base + "/metrics").decode(), name)
        if value is None:
            raise RuntimeError(f"{name} missing from Prometheus's /metrics")
        return value

    def query(self, expr: str) -> float | None:
        url = f"{self.base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        result = json.loads(fetch(url))["data"]["result"]
        return float(result[0]["value"][1]) if result else None


def count_series(settings: Settings, workdir: Path, results: Results) -> None:
    """(a) series per VM for the core, the defaults and each collector alone."""
    groups: list[tuple[str, list[str] | None]] = [("core", []), ("default", None)]
    groups += [(name, [name]) for name in SIM_COLLECTORS]
    k = settings.per_group
    (workdir / "groups").mkdir()
    fleet = FleetProcess(workdir / "groups", len(groups) * k)
    monitors = fleet.monitors()
    entries = [
        (f"{group}-{i}", monitors[g * k + i][1], collectors)
        for g, (group, collectors) in enumerate(groups)
        for i in range(k)
    ]
    exporter = Exporter(workdir, entries, "2s", "groups")
    try:
        text = exporter.wait_all_up(120)
        time.sleep(2.5)  # a second poll: counters that need two polls are there too
        text = fetch(exporter.url).decode()
    finally:
        exporter.stop()
        fleet.stop()
    per_vm = Counter(vm_of(line) for line in samples(text))
    results.exporter_series = per_vm.pop(None, 0)
    for group, _ in groups:
        total = sum(count for vm, count in per_vm.items() if vm and vm.startswith(group + "-"))
        results.series[group] = total / k
    core = results.series["core"]
    for name in SIM_COLLECTORS:
        results.series[name] -= core
    families: Counter[str] = Counter()
    for line in samples(text):
        vm = vm_of(line)
        if vm and vm.startswith("default-"):
            families[line.split("{", 1)[0].split(" ", 1)[0]] += 1
    results.families = {name: count / k for name, count in families.most_common()}
    if settings.qemu:
        count_host_series(workdir, results)
    else:
        results.host_note = "not measured (--no-qemu)"


def count_host_series(workdir: Path, results: Results) -> None:
    """The host collector's series: two real QEMUs, one with ``[host]``, one with ``[]``."""
    qemus = [RealQemu(workdir, "host-on"), RealQemu(workdir, "host-off")]
    exporter = None
    try:
        for qemu in qemus:
            wait_until(qemu.ready, 30)
        exporter = Exporter(
            workdir,
            [("host-on", qemus[0].address, ["host"]), ("host-off", qemus[1].address, [])],
            "1s",
            "host",
        )
        exporter.wait_all_up(60)
        time.sleep(2.5)
        per_vm = Counter(vm_of(line) for line in samples(fetch(exporter.url).decode()))
        results.series["host"] = per_vm["host-on"] - per_vm["host-off"]
        results.host_note = "one real QEMU (-M none, 1 vCPU) with [host] minus one with []"
    finally:
        if exporter:
            exporter.stop()
        for qemu in qemus:
            qemu.stop()


def lean_body(body: bytes) -> bytes:
    """``body`` without the ``qemu_vm_status`` samples whose value is 0."""
    kept = [
        line
        for line in body.split(b"\n")
        if not (line.startswith(LEAN_FAMILY.encode() + b"{") and line.endswith(b" 0"))
    ]
    return b"\n".join(kept)


def wait_scrapes(prometheus: Prometheus, targets: int, scrapes: int, timeout: float) -> None:
    def done() -> bool:
        prometheus.check_alive()
        up = prometheus.query("count(up == 1)")
        least = prometheus.query("min(count_over_time(up[10m]))")
        return up == targets and least is not None and least >= scrapes

    wait_until(done, timeout, 0.5)


def measure_prometheus(settings: Settings, workdir: Path, results: Results) -> None:
    """(b) bytes per VM, (c) head series and memory, (e) the lean body, (d) the agent."""
    fleets: list[FleetProcess] = []
    exporters: list[Exporter] = []
    try:
        for i in range(max(settings.exporters)):
            (workdir / f"f{i}").mkdir()
            fleets.append(FleetProcess(workdir / f"f{i}", settings.fleet))
            monitors = [(name, address, None) for name, address in fleets[-1].monitors()]
            exporters.append(Exporter(workdir, monitors, "10s", f"f{i}"))
        log(f"{len(exporters)} exporters of {settings.fleet} simulated VMs started")
        for exporter in exporters:
            exporter.wait_all_up(300)
        plain, zipped = fetch(exporters[0].url), fetch(exporters[0].url, gzip_ok=True)
        results.bytes_plain = len(plain) / settings.fleet
        results.bytes_gzip = len(zipped) / settings.fleet
        for count in settings.exporters:
            targets = [f"127.0.0.1:{e.port}" for e in exporters[:count]]
            results.head.append(measure_head(settings, workdir, f"head{count}", targets))
            log(f"{count} exporters: {results.head[-1]}")
        lean = StaticServerProcess(workdir, lean_body(plain), "lean")
        full = StaticServerProcess(workdir, plain, "full")
        try:
            time.sleep(1)
            for tag, server in (("full", full), ("lean", lean)):
                head = measure_head(settings, workdir, tag, [f"127.0.0.1:{server.port}"])
                results.lean[tag] = head["head_series"]
        finally:
            lean.stop()
            full.stop()
        results.agent = measure_agent(settings, workdir, f"127.0.0.1:{exporters[0].port}")
    finally:
        for exporter in exporters:
            exporter.stop()
        for fleet in fleets:
            fleet.stop()


def measure_head(
    settings: Settings, workdir: Path, tag: str, targets: list[str]
) -> dict[str, float]:
    prometheus = Prometheus(workdir, tag, targets, settings.scrape_interval)
    try:
        wait_scrapes(prometheus, len(targets), settings.scrapes, 180)
        return {
            "exporters": len(targets),
            "vms": len(targets) * settings.fleet,
            "head_series": prometheus.own("prometheus_tsdb_head_series"),
            "rss": prometheus.own("process_resident_memory_bytes"),
        }
    finally:
        prometheus.stop()


def measure_agent(settings: Settings, workdir: Path, target: str) -> dict[str, float]:
    central = Prometheus(workdir, "central", [], settings.scrape_interval, receiver=True)
    agent = None
    try:
        agent = Prometheus(
            workdir, "agent", [target], settings.scrape_interval, agent=True,
            remote_write=f"{central.base}/api/v1/write",
        )  # fmt: skip
        wait_until(lambda: (central.query("count(qemu_up)") or 0) >= settings.fleet, 120, 0.5)
        start_cpu, start = agent.own("process_cpu_seconds_total"), time.monotonic()
        time.sleep(settings.agent_window)
        cpu = agent.own("process_cpu_seconds_total") - start_cpu
        window = time.monotonic() - start
        return {
            "vms": settings.fleet,
            "window": window,
            "cpu_per_minute": cpu / window * 60,
            "cpu_per_minute_per_1000": cpu / window * 60 * 1000 / settings.fleet,
            "rss": agent.own("process_resident_memory_bytes"),
            "central_series": central.own("prometheus_tsdb_head_series"),
        }
    finally:
        if agent:
            agent.stop()
        central.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny fleets, short windows")
    parser.add_argument("--no-qemu", action="store_true", help="skip the host collector's QEMUs")
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument("--output", type=Path, default=REPO / "docs" / "benchmarks.md")
    parser.add_argument("--json", type=Path, default=None, help="also dump raw results here")
    args = parser.parse_args()
    if args.quick:
        settings = Settings(3, 20, [1, 2], 1.0, 2, 3.0, not args.no_qemu)
    else:
        settings = Settings(5, 1000, [1, 3, 5], 5.0, 3, 60.0, not args.no_qemu)
    results = Results(settings)
    workdir = make_workdir()
    log(f"settings: {settings}; workdir {workdir}")
    try:
        count_series(settings, workdir, results)
        log(f"series per VM: {results.series}")
        measure_prometheus(settings, workdir, results)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    plot_name = None
    if not args.no_plot:
        plot_path = args.output.parent / "benchmarks-sizing.png"
        if plot(results, plot_path):
            plot_name = plot_path.name
    command = "python3 -m bench.sizing" + (" --quick" if args.quick else "")
    section = render(results, command, plot_name)
    write_section(args.output, section)
    if args.json:
        args.json.write_text(json.dumps(asdict(results), indent=1))
    print(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
