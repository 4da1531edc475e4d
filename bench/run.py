"""Scale benchmark: the exporter against simulated fleets and real QEMUs, every figure a ratio
against a baseline measured in the same run.

    python -m bench.run            # N = 10, 100, 1000, 5000 and 20 real QEMUs
    python -m bench.run --quick    # N = 10, 100 and 2 real QEMUs, shorter windows

Writes the "Scale" section of docs/benchmarks.md (between its markers) and
docs/benchmarks-scale.png. The exporter runs as its own process (``python -m qmp_exporter``),
the simulated fleet in another (``python -m qmp_exporter.sim``), each baseline in a third.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from bench.docsection import replace_section
from bench.procs import (
    REPO,
    ExporterProcess,
    FleetProcess,
    RawPollerProcess,
    RealQemu,
    StaticServerProcess,
    cpu_seconds,
    make_workdir,
    rss_bytes,
    wait_until,
)
from bench.scrape import Scraper, count_up, median, sample_value, time_scrapes

#: The command that marks one poll of one VM (every exporter poll sends it once).
POLL_MARKER = "query-status"


@dataclass
class Settings:
    sizes: list[int]
    qemus: int
    #: Fixed poll interval; ``None``: :meth:`interval_for` scales it with the fleet.
    interval: float | None
    max_interval: float
    window: float
    scrapes: int
    spaced_scrapes: int
    latency_samples: int

    def interval_for(self, n: int) -> float:
        """N/200 seconds within [0.5 s, max]: enough polls per second for /proc's 10 ms CPU
        ticks to resolve small fleets, and the usual 5 s for large ones."""
        if self.interval is not None:
            return self.interval
        return max(0.5, min(self.max_interval, n / 200))

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Settings:
        quick = args.quick
        return cls(
            sizes=args.sizes or ([10, 100] if quick else [10, 100, 1000, 5000]),
            qemus=args.qemus if args.qemus is not None else (2 if quick else 20),
            interval=args.interval,
            max_interval=2.0 if quick else 5.0,
            window=args.window or (4.0 if quick else 15.0),
            scrapes=args.scrapes or (20 if quick else 100),
            spaced_scrapes=args.spaced_scrapes or (2 if quick else 8),
            latency_samples=args.latency_samples or (5 if quick else 20),
        )


@dataclass
class RunResult:
    """One process (exporter or baseline) watching one fleet."""

    up_seconds: float = float("nan")
    cpu_per_poll: float = float("nan")
    polls: int = 0
    rss: int = 0
    drift: dict[str, float] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    gauge_latencies: list[float] = field(default_factory=list)


@dataclass
class SizeResult:
    n: int
    interval: float
    exporter: RunResult
    raw: RunResult
    per_poll_commands: list[str]
    once_commands: list[str]
    body_bytes: int = 0
    gzip_bytes: int = 0
    scrape: dict[str, float] = field(default_factory=dict)


@dataclass
class QemuResult:
    count: int
    up_seconds: float
    rss: int
    scrape: dict[str, float]
    latencies: list[float]
    raw_latencies: list[float]
    body_bytes: int


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


# -- measuring one process ------------------------------------------------------------------


def wait_all_up(scraper: Scraper, count: int, timeout: float, check: Any) -> None:
    def all_up() -> bool:
        check()
        try:
            return count_up(scraper.text()) >= count
        except (ConnectionError, OSError):
            scraper._connection.close()
            return False

    # Checked less often for large fleets: each check is a scrape, which costs the exporter.
    wait_until(all_up, timeout, interval=max(0.05, count / 10_000))


def steady_window(
    fleet: FleetProcess, pid: int, settings: Settings, interval: float
) -> tuple[RunResult, dict[str, dict[str, int]]]:
    """CPU per VM-poll, drift and RSS over one window of steady polling."""
    time.sleep(interval)  # let every VM reach its steady phase
    before = fleet.counts()
    fleet.control("gaps_reset")
    cpu_before = cpu_seconds(pid)
    time.sleep(settings.window)
    cpu_after = cpu_seconds(pid)
    after = fleet.counts()
    gaps = fleet.gaps()
    delta = {name: after[name] - before.get(name, 0) for name in after}
    polls = delta.get(POLL_MARKER, 0)
    result = RunResult(
        cpu_per_poll=(cpu_after - cpu_before) / polls if polls else float("nan"),
        polls=polls,
        rss=rss_bytes(pid),
        drift={k: v - interval for k, v in gaps.items() if k != "count"},
    )
    return result, {"delta": delta, "total": after}


def measure_scrapes(
    exporter_port: int, body: bytes, workdir: Path, settings: Settings, interval: float, tag: str
) -> dict[str, float]:
    """Median scrape times: back to back (``exp``, ``exp_gz``), spaced by the poll interval
    so every VM has polled since the last scrape, as with Prometheus (``spaced``,
    ``spaced_gz``), and the static baseline (``static``, ``static_gz``, and spaced alike:
    ``spaced_static``, ``spaced_static_gz``)."""
    static = StaticServerProcess(workdir, body, tag)
    try:
        wait_until(lambda: _port_open(static.port), 10)
        timings: dict[str, list[float]] = {k: [] for k in ("exp", "static", "exp_gz", "static_gz")}
        # Fewer at large N, where one exporter scrape takes a large part of a second.
        rounds = max(2, min(settings.scrapes, 40_000 // max(len(body) // 2000, 1)) // 10)
        for _ in range(rounds):  # interleaved, so both see the same background noise
            timings["exp"] += time_scrapes(exporter_port, 10, gzip=False)
            timings["static"] += time_scrapes(static.port, 10, gzip=False)
            timings["exp_gz"] += time_scrapes(exporter_port, 10, gzip=True)
            timings["static_gz"] += time_scrapes(static.port, 10, gzip=True)
        # Spaced: each scrape after a pause of one poll interval, the static server's too, so
        # both meet the same cold caches and idle connection (its bytes have not changed,
        # the exporter's per-poll lines all have).
        scraper, static_scraper = Scraper(exporter_port), Scraper(static.port)
        for key in ("spaced", "spaced_gz", "spaced_static", "spaced_static_gz"):
            timings[key] = []
        for index in range(settings.spaced_scrapes):
            gzip = index % 2 == 0
            suffix = "_gz" if gzip else ""
            time.sleep(interval)
            timings["spaced" + suffix].append(scraper.get(gzip=gzip)[0])
            time.sleep(interval)
            timings["spaced_static" + suffix].append(static_scraper.get(gzip=gzip)[0])
        scraper.close()
        static_scraper.close()
    finally:
        static.stop()
    return {key: median(values) for key, values in timings.items()}


#: The baseline each scrape figure is compared with (the static server, scraped alike).
_BASELINE = {
    "exp": "static",
    "exp_gz": "static_gz",
    "spaced": "spaced_static",
    "spaced_gz": "spaced_static_gz",
}


def scrape_ratio(scrape: dict[str, float], key: str) -> tuple[float, float]:
    """(baseline ms, ratio) for one scrape figure; results of older runs had no spaced
    baseline and fall back to the back-to-back one."""
    base_key = _BASELINE[key]
    base = scrape.get(base_key, scrape[base_key.replace("spaced_", "")])
    return base, scrape[key] / base


def _port_open(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def watch_until(
    scraper: Scraper, predicates: dict[str, Any], t0: float, timeout: float
) -> dict[str, float]:
    """Scrape until each predicate holds; the time of the scrape (its start) that first
    showed each, minus ``t0``."""
    seen: dict[str, float] = {}
    deadline = time.time() + timeout
    while len(seen) < len(predicates) and time.time() < deadline:
        started = time.time()
        text = scraper.text()
        for key, predicate in predicates.items():
            if key not in seen and predicate(text):
                seen[key] = started - t0
    return seen


def exporter_latency_sim(
    fleet: FleetProcess, scraper: Scraper, vms: list[str], interval: float
) -> tuple[list[float], list[float]]:
    counter, gauge = [], []
    for vm in vms:
        text = scraper.text()
        base = sample_value(text, "qemu_events_total", vm=vm, event="VNC_CONNECTED") or 0
        clients = sample_value(text, "qemu_vnc_clients", vm=vm) or 0
        t0 = fleet.act("vnc_connect", vm)
        seen = watch_until(
            scraper,
            {
                "counter": lambda t, vm=vm, base=base: (
                    (sample_value(t, "qemu_events_total", vm=vm, event="VNC_CONNECTED") or 0) > base
                ),
                "gauge": lambda t, vm=vm, c=clients: (
                    (sample_value(t, "qemu_vnc_clients", vm=vm) or 0) > c
                ),
            },
            t0,
            2 * interval + 2,
        )
        counter.append(seen.get("counter", float("nan")))
        gauge.append(seen.get("gauge", float("nan")))
        fleet.act("vnc_disconnect", vm)
        time.sleep(0.05)
    return counter, gauge


def raw_latency_sim(fleet: FleetProcess, raw: RawPollerProcess, vms: list[str]) -> list[float]:
    paths = dict(fleet.monitors())
    latencies = []
    for vm in vms:
        t0 = fleet.act("vnc_connect", vm)
        path = paths[vm].removeprefix("unix:")
        try:
            when = wait_until(partial(raw.event_time, path, "VNC_CONNECTED", t0), 5, 0.001)
            latencies.append(when - t0)
        except TimeoutError:
            latencies.append(float("nan"))
        fleet.act("vnc_disconnect", vm)
        time.sleep(0.05)
    return latencies


# -- one fleet size --------------------------------------------------------------------------


def run_size(n: int, settings: Settings, rng: random.Random) -> SizeResult:
    interval = settings.interval_for(n)
    workdir = make_workdir()
    fleet = FleetProcess(workdir, n)
    try:
        monitors = fleet.monitors()
        sample_vms = [
            monitors[i][0] for i in rng.sample(range(n), min(n, settings.latency_samples))
        ]
        # The exporter.
        exporter = ExporterProcess(workdir, monitors, interval, f"n{n}")
        try:
            scraper = Scraper(exporter.port)
            wait_all_up(scraper, n, 60 + n / 50, exporter.check_alive)
            exp = RunResult(up_seconds=time.time() - exporter.started)
            log(f"N={n}: exporter has every VM up after {exp.up_seconds:.2f}s")
            window, counts = steady_window(fleet, exporter.pid, settings, interval)
            exp.cpu_per_poll, exp.polls, exp.rss, exp.drift = (
                window.cpu_per_poll, window.polls, window.rss, window.drift,
            )  # fmt: skip
            delta = counts["delta"]
            polls = delta.get(POLL_MARKER, 0)
            per_poll = sorted(c for c, k in delta.items() if polls and k >= 0.5 * polls)
            once = sorted(
                c for c in counts["total"] if c not in per_poll and c != "qmp_capabilities"
            )
            body = scraper.get()[1]
            gzip_body = scraper.get(gzip=True)[1]
            scrape = measure_scrapes(exporter.port, body, workdir, settings, interval, f"n{n}")
            exp.latencies, exp.gauge_latencies = exporter_latency_sim(
                fleet, scraper, sample_vms, interval
            )
            scraper.close()
            log(f"N={n}: exporter {exp.cpu_per_poll * 1e6:.0f} µs CPU/poll, scrape "
                f"{scrape['exp'] * 1e3:.2f} ms, RSS {exp.rss / 2**20:.0f} MiB")  # fmt: skip
        finally:
            exporter.stop()
        # The baseline poller, same queries on the same fleet.
        raw_proc = RawPollerProcess(workdir, monitors, interval, per_poll, once, f"n{n}")
        try:
            wait_until(raw_proc.alive_and_up, 60 + n / 50)
            raw = RunResult(up_seconds=(raw_proc.all_up or 0) - raw_proc.started)
            window, _ = steady_window(fleet, raw_proc.pid, settings, interval)
            raw.cpu_per_poll, raw.polls, raw.rss, raw.drift = (
                window.cpu_per_poll, window.polls, window.rss, window.drift,
            )  # fmt: skip
            raw.latencies = raw_latency_sim(fleet, raw_proc, sample_vms)
            log(f"N={n}: baseline {raw.cpu_per_poll * 1e6:.0f} µs CPU/poll")
        finally:
            raw_proc.stop()
        counts_all = fleet.counts()
        writes = {c: k for c, k in counts_all.items() if not _read_only(c)}
        if writes:
            raise RuntimeError(f"the fleet received commands that change a VM: {writes}")
        return SizeResult(n, interval, exp, raw, per_poll, once, len(body), len(gzip_body), scrape)
    finally:
        fleet.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def _read_only(command: str) -> bool:
    return command == "qmp_capabilities" or command.startswith("query-")


# -- real QEMUs ------------------------------------------------------------------------------


def run_qemus(count: int, settings: Settings, per_poll: list[str], once: list[str]) -> QemuResult:
    interval = settings.interval_for(1000)
    workdir = make_workdir()
    qemus: list[RealQemu] = []
    try:
        for index in range(count):
            qemus.append(RealQemu(workdir, f"qemu-{index:02d}"))
        for attempt in range(3):  # a VNC port can be taken between our probe and QEMU's bind
            try:
                wait_until(lambda: all(q.ready() for q in qemus), 60, 0.1)
                break
            except RuntimeError as err:
                if attempt == 2:
                    raise
                log(f"restarting QEMUs that failed to start: {err}")
                for index, qemu in enumerate(qemus):
                    if qemu.popen.poll() is not None:
                        qemu.stop()
                        qemus[index] = RealQemu(workdir, qemu.name)
        monitors = [(q.name, q.address) for q in qemus]
        exporter = ExporterProcess(workdir, monitors, interval, "qemu")
        try:
            scraper = Scraper(exporter.port)
            wait_all_up(scraper, count, 60, exporter.check_alive)
            up_seconds = time.time() - exporter.started
            time.sleep(min(interval, 2))
            body = scraper.get()[1]
            scrape = measure_scrapes(exporter.port, body, workdir, settings, interval, "qemu")
            latencies = []
            for index in range(settings.latency_samples):
                qemu = qemus[index % count]
                text = scraper.text()
                base = sample_value(text, "qemu_events_total", vm=qemu.name,
                                    event="VNC_CONNECTED") or 0  # fmt: skip
                gone = sample_value(text, "qemu_events_total", vm=qemu.name,
                                    event="VNC_DISCONNECTED") or 0  # fmt: skip
                t0 = time.time()
                viewer = socket.create_connection(("127.0.0.1", qemu.vnc_port))
                seen = watch_until(
                    scraper,
                    {"counter": lambda t, q=qemu, b=base: (sample_value(
                        t, "qemu_events_total", vm=q.name, event="VNC_CONNECTED") or 0) > b},
                    t0,
                    5,
                )  # fmt: skip
                latencies.append(seen.get("counter", float("nan")))
                viewer.close()
                watch_until(
                    scraper,
                    {"gone": lambda t, q=qemu, g=gone: (sample_value(
                        t, "qemu_events_total", vm=q.name, event="VNC_DISCONNECTED") or 0) > g},
                    time.time(),
                    5,
                )  # fmt: skip
            rss = rss_bytes(exporter.pid)
            scraper.close()
        finally:
            exporter.stop()
        raw_proc = RawPollerProcess(workdir, monitors, interval, per_poll, once, "qemu")
        raw_latencies = []
        try:
            wait_until(raw_proc.alive_and_up, 60)
            for index in range(settings.latency_samples):
                qemu = qemus[index % count]
                t0 = time.time()
                viewer = socket.create_connection(("127.0.0.1", qemu.vnc_port))
                try:
                    path = str(qemu.socket_path)
                    when = wait_until(
                        partial(raw_proc.event_time, path, "VNC_CONNECTED", t0), 5, 0.001
                    )
                    raw_latencies.append(when - t0)
                except TimeoutError:
                    raw_latencies.append(float("nan"))
                viewer.close()
                time.sleep(0.1)
        finally:
            raw_proc.stop()
        log(f"{count} QEMUs: scrape {scrape['exp'] * 1e3:.2f} ms, event latency "
            f"{median(latencies) * 1e3:.1f} ms")  # fmt: skip
        return QemuResult(count, up_seconds, rss, scrape, latencies, raw_latencies, len(body))
    finally:
        for qemu in qemus:
            qemu.stop()
        shutil.rmtree(workdir, ignore_errors=True)


# -- the report ------------------------------------------------------------------------------

BEGIN = "<!-- scale-results:begin (written by bench/run.py; edits here are overwritten) -->"
END = "<!-- scale-results:end -->"


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b and b == b and a == a else "n/a"


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f}" if seconds == seconds else "n/a"


def _goal(ok: bool) -> str:
    return "met" if ok else "**missed**"


def render_markdown(
    sizes: list[SizeResult], qemu: QemuResult | None, settings: Settings, plot: str | None
) -> str:
    lines = [
        BEGIN,
        "",
        f"Run of {time.strftime('%Y-%m-%d %H:%M')} on {platform.node() or 'this machine'} "
        f"({_cpu_count()} CPUs, Python {platform.python_version()}): poll interval "
        f"{_intervals(sizes, settings)}, steady window {settings.window:g}s, "
        f"{settings.scrapes} scrapes "
        f"per figure, {settings.latency_samples} events per latency figure. Figures are "
        "medians; ratios compare with the baseline measured in the same run.",
        "",
    ]
    if sizes:
        queries = ", ".join(sizes[-1].per_poll_commands)
        once = ", ".join(sizes[-1].once_commands) or "none"
        lines += [
            "### Poll cost (exporter CPU per VM-poll vs the raw asyncio poller)",
            "",
            f"Per poll both send: {queries}; once per connection: {once}.",
            "",
            "| N | exporter µs/poll | raw µs/poll | ratio | polls in window |",
            "| ---: | ---: | ---: | ---: | ---: |",
        ]
        for s in sizes:
            lines.append(
                f"| {s.n} | {s.exporter.cpu_per_poll * 1e6:.0f} | {s.raw.cpu_per_poll * 1e6:.0f} "
                f"| {_ratio(s.exporter.cpu_per_poll, s.raw.cpu_per_poll)} | {s.exporter.polls} |"
            )
        lines += [
            "",
            "### Scrape time (exporter vs the same bytes from a static server)",
            "",
            "Back to back: scrapes in a row, so few VMs changed in between. Spaced: one scrape "
            "per poll interval, so every VM has polled (and changed) since the last one, as "
            "with Prometheus; `gzip` asks for `Accept-Encoding: gzip` as Prometheus does.",
            "",
            "| N | body | exporter ms | static ms | ratio | gzip: exporter ms | static ms "
            "| ratio | spaced ms | static ms | ratio | spaced gzip ms | static ms | ratio |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
            "| ---: | ---: |",
        ]
        for s in sizes:
            sc = s.scrape
            lines.append(
                f"| {s.n} | {s.body_bytes / 1024:.0f} KiB | {_ms(sc['exp'])} | {_ms(sc['static'])} "
                f"| {_ratio(sc['exp'], sc['static'])} | {_ms(sc['exp_gz'])} "
                f"| {_ms(sc['static_gz'])} | {_ratio(sc['exp_gz'], sc['static_gz'])} "
                f"| {_ms(sc['spaced'])} | {_ms(scrape_ratio(sc, 'spaced')[0])} "
                f"| {scrape_ratio(sc, 'spaced')[1]:.2f}x "
                f"| {_ms(sc['spaced_gz'])} | {_ms(scrape_ratio(sc, 'spaced_gz')[0])} "
                f"| {scrape_ratio(sc, 'spaced_gz')[1]:.2f}x |"
            )
        lines += [
            "",
            "### Memory, start-up and drift",
            "",
            "Start-up: from process start until every VM is up (exporter: `qemu_up` is 1 for all; "
            "baseline: every VM polled once). Drift: time between two polls of one VM minus "
            "the interval, measured by the simulated VMs themselves.",
            "",
            "| N | exporter RSS | raw RSS | ratio | start-up exporter s | raw s | ratio "
            "| drift p50 ms | p99 ms | max ms | raw p99 ms |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for s in sizes:
            e, r = s.exporter, s.raw
            lines.append(
                f"| {s.n} | {e.rss / 2**20:.0f} MiB | {r.rss / 2**20:.0f} MiB "
                f"| {_ratio(e.rss, r.rss)} | {e.up_seconds:.2f} | {r.up_seconds:.2f} "
                f"| {_ratio(e.up_seconds, r.up_seconds)} | {_ms(e.drift.get('p50', float('nan')))} "
                f"| {_ms(e.drift.get('p99', float('nan')))} "
                f"| {_ms(e.drift.get('max', float('nan')))} "
                f"| {_ms(r.drift.get('p99', float('nan')))} |"
            )
        lines += [
            "",
            "### Event-to-metric latency (simulated VNC connect until /metrics shows it)",
            "",
            "Exporter: from the change in the VM until the first scrape (its start) that shows "
            '`qemu_events_total{event="VNC_CONNECTED"}` one higher, and `qemu_vnc_clients` '
            "(the re-poll the event triggers). Baseline: until the raw poller reads the event.",
            "",
            "| N | counter median ms | max ms | vnc_clients median ms | raw event median ms "
            "| ratio (counter/raw) |",
            "| ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for s in sizes:
            e = s.exporter
            lines.append(
                f"| {s.n} | {_ms(median(e.latencies))} | {_ms(max(e.latencies, default=0))} "
                f"| {_ms(median(e.gauge_latencies))} | {_ms(median(s.raw.latencies))} "
                f"| {_ratio(median(e.latencies), median(s.raw.latencies))} |"
            )
    if qemu is not None:
        sc = qemu.scrape
        lines += [
            "",
            f"### {qemu.count} real QEMUs",
            "",
            "| figure | exporter | baseline | ratio |",
            "| --- | ---: | ---: | ---: |",
            f"| scrape, median ms ({qemu.body_bytes / 1024:.0f} KiB) | {_ms(sc['exp'])} "
            f"| {_ms(sc['static'])} (static) | {_ratio(sc['exp'], sc['static'])} |",
            f"| scrape gzip, median ms | {_ms(sc['exp_gz'])} | {_ms(sc['static_gz'])} (static) "
            f"| {_ratio(sc['exp_gz'], sc['static_gz'])} |",
            f"| scrape spaced by the poll interval, median ms | {_ms(sc['spaced'])} "
            f"| {_ms(scrape_ratio(sc, 'spaced')[0])} (static, spaced alike) "
            f"| {scrape_ratio(sc, 'spaced')[1]:.2f}x |",
            f"| scrape spaced, gzip, median ms | {_ms(sc['spaced_gz'])} "
            f"| {_ms(scrape_ratio(sc, 'spaced_gz')[0])} (static, spaced alike) "
            f"| {scrape_ratio(sc, 'spaced_gz')[1]:.2f}x |",
            f"| VNC connect → `qemu_events_total`, median ms | {_ms(median(qemu.latencies))} "
            f"| {_ms(median(qemu.raw_latencies))} (raw poller gets the event) "
            f"| {_ratio(median(qemu.latencies), median(qemu.raw_latencies))} |",
            f"| start-up until all up, s | {qemu.up_seconds:.2f} | | |",
            f"| RSS | {qemu.rss / 2**20:.0f} MiB | | |",
        ]
    lines += ["", "### Goals", "", "| goal | measured | |", "| --- | --- | --- |"]
    for s in sizes:
        if s.n == 1000:
            ratio = s.exporter.cpu_per_poll / s.raw.cpu_per_poll
            lines.append(
                f"| poll cost ≤ 2x raw at 1,000 VMs | {ratio:.2f}x | {_goal(ratio <= 2)} |"
            )
        if s.n in (1000, 5000):
            for key, what in (("exp", "back to back"), ("spaced", "spaced"),
                              ("spaced_gz", "spaced, gzip")):  # fmt: skip
                ratio = scrape_ratio(s.scrape, key)[1]
                lines.append(
                    f"| scrape ≤ 2x static at {s.n:,} VMs ({what}) | {ratio:.2f}x "
                    f"| {_goal(ratio <= 2)} |"
                )
        if s.n == 1000:
            rss = s.exporter.rss / 2**20
            lines.append(f"| RSS ≤ 150 MB at 1,000 VMs | {rss:.0f} MiB | {_goal(rss <= 143)} |")
            lat = median(s.exporter.latencies) * 1e3
            lines.append(
                f"| event-to-metric median < 50 ms, 1,000 VMs | {lat:.1f} ms | {_goal(lat < 50)} |"
            )
    if qemu is not None:
        lat = median(qemu.latencies) * 1e3
        for key, what in (("exp", "back to back"), ("spaced_gz", "spaced, gzip")):
            scrape_ms = qemu.scrape[key] * 1e3
            lines.append(
                f"| scrape < 5 ms median, {qemu.count} real QEMUs ({what}) | {scrape_ms:.2f} ms "
                f"| {_goal(scrape_ms < 5)} |"
            )
        lines.append(
            f"| VNC connect → metric < 50 ms median, real QEMU | {lat:.1f} ms | {_goal(lat < 50)} |"
        )
    if plot:
        lines += ["", f"![Cost per VM against fleet size]({plot})"]
    lines += ["", END]
    return "\n".join(lines) + "\n"


def _intervals(sizes: list[SizeResult], settings: Settings) -> str:
    if settings.interval is not None:
        return f"{settings.interval:g}s"
    return ", ".join(f"{s.interval:g}s at N={s.n}" for s in sizes) + (
        f", {settings.interval_for(1000):g}s for the real QEMUs"
    )


def _cpu_count() -> int:
    import os

    return os.cpu_count() or 0


def write_section(path: Path, section: str) -> None:
    """Replace the results between the markers; add a "Scale" section if there is none."""
    replace_section(path, section, BEGIN, END, "Scale")


def plot(sizes: list[SizeResult], path: Path) -> None:
    try:
        import matplotlib
    except ImportError:
        log("installing matplotlib (bench only)")
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "matplotlib"], check=True)
        import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ns = [s.n for s in sizes]
    figure, axes = plt.subplots(2, 2, figsize=(10, 7.5))
    exporter, raw = "exporter", "raw asyncio poller"
    panels = [
        ("CPU per VM-poll (µs)", [(exporter, [s.exporter.cpu_per_poll * 1e6 for s in sizes]),
                                  (raw, [s.raw.cpu_per_poll * 1e6 for s in sizes])]),
        ("scrape time, median (ms)", [(exporter, [s.scrape["exp"] * 1e3 for s in sizes]),
                                      ("static bytes", [s.scrape["static"] * 1e3 for s in sizes])]),
        ("RSS (MiB)", [(exporter, [s.exporter.rss / 2**20 for s in sizes]),
                       (raw, [s.raw.rss / 2**20 for s in sizes])]),
        ("event → metric, median (ms)",
         [("exporter (/metrics)", [median(s.exporter.latencies) * 1e3 for s in sizes]),
          ("raw poller (event read)", [median(s.raw.latencies) * 1e3 for s in sizes])]),
    ]  # fmt: skip
    for axis, (title, series) in zip(axes.flat, panels, strict=True):
        for label, values in series:
            axis.plot(ns, values, marker="o", label=label)
        axis.set_xscale("log")
        axis.set_xlabel("VMs (N)")
        axis.set_title(title)
        axis.grid(True, alpha=0.3)
        axis.legend()
    axes.flat[1].set_yscale("log")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def _size_from_dict(data: dict[str, Any]) -> SizeResult:
    fields = {**data, "exporter": RunResult(**data["exporter"]), "raw": RunResult(**data["raw"])}
    return SizeResult(**fields)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, short windows")
    parser.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=None)
    parser.add_argument("--qemus", type=int, default=None, help="real QEMUs (0: none)")
    parser.add_argument("--interval", type=float, default=None)
    parser.add_argument("--window", type=float, default=None)
    parser.add_argument("--scrapes", type=int, default=None)
    parser.add_argument("--spaced-scrapes", type=int, default=None)
    parser.add_argument("--latency-samples", type=int, default=None)
    parser.add_argument("--output", type=Path, default=REPO / "docs" / "benchmarks.md")
    parser.add_argument("--json", type=Path, default=None, help="also dump raw results here")
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument(
        "--reuse-sizes", type=Path, default=None, metavar="JSON",
        help="take the simulated-fleet results from an earlier --json instead of measuring",
    )  # fmt: skip
    args = parser.parse_args()
    settings = Settings.from_args(args)
    rng = random.Random(1)
    log(f"settings: {settings}")
    sizes = []
    if args.reuse_sizes:
        sizes = [_size_from_dict(d) for d in json.loads(args.reuse_sizes.read_text())["sizes"]]
    for n in [] if args.reuse_sizes else settings.sizes:
        sizes.append(run_size(n, settings, rng))
        if args.json:  # kept as it goes, so a long run that fails later keeps its results
            args.json.write_text(json.dumps({"sizes": [asdict(s) for s in sizes]}, indent=1))
    per_poll = sizes[-1].per_poll_commands if sizes else ["query-status", "query-vnc"]
    once = sizes[-1].once_commands if sizes else []
    qemu = run_qemus(settings.qemus, settings, per_poll, once) if settings.qemus else None
    plot_name = None
    if not args.no_plot and len(sizes) > 1:
        plot_path = args.output.parent / "benchmarks-scale.png"
        plot(sizes, plot_path)
        plot_name = plot_path.name
    section = render_markdown(sizes, qemu, settings, plot_name)
    write_section(args.output, section)
    if args.json:
        args.json.write_text(
            json.dumps(
                {"settings": asdict(settings), "sizes": [asdict(s) for s in sizes],
                 "qemu": asdict(qemu) if qemu else None},
                indent=1,
            )
        )  # fmt: skip
    print(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
