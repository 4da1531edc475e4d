"""The fleet sizing results (bench/sizing.py): what is measured, and its Markdown section
and plot in docs/."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.docsection import replace_section

#: Collectors the simulator answers for; ``host`` needs a real QEMU process (its /proc).
SIM_COLLECTORS = ("block", "vcpu", "memory", "balloon", "kvm", "migration", "spice", "kvm_stats")
BEGIN = "<!-- fleet-sizing:begin (written by bench/sizing.py; edits here are overwritten) -->"
END = "<!-- fleet-sizing:end -->"
LEAN_FAMILY = "qemu_vm_status"


@dataclass
class Settings:
    per_group: int  # simulated VMs per collector group when counting series
    fleet: int  # simulated VMs per exporter for the Prometheus runs
    exporters: list[int]  # exporter counts for the head-series runs
    scrape_interval: float
    scrapes: int
    agent_window: float
    qemu: bool


@dataclass
class Results:
    settings: Settings
    series: dict[str, float] = field(default_factory=dict)  # group -> series per VM
    exporter_series: int = 0  # series without a vm label (the exporter's own)
    host_note: str = ""
    families: dict[str, float] = field(default_factory=dict)  # default VM: family -> per VM
    bytes_plain: float = 0.0
    bytes_gzip: float = 0.0
    head: list[dict[str, float]] = field(default_factory=list)
    lean: dict[str, float] = field(default_factory=dict)
    agent: dict[str, float] = field(default_factory=dict)


def log(message: str) -> None:
    print(f"[sizing {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _mib(value: float) -> str:
    return f"{value / 2**20:.0f} MiB"


def render(results: Results, command: str, plot_name: str | None) -> str:
    s = results.settings
    default = results.series["default"]
    lines = [
        BEGIN,
        f"Measured with `{command}` on a shared 2-core machine (other jobs were running: "
        "the CPU and memory figures are upper bounds). Series are exposition lines; "
        f"collector rows are the VMs with that collector alone minus the core ({s.per_group} "
        "simulated VMs each, QEMU 7.2 answers).",
        "",
        "### Series per VM",
        "",
        "| collectors | series per VM |",
        "|---|---:|",
        f"| core (`collectors: []`) | {results.series['core']:.1f} |",
        f"| default (`{', '.join(('block', 'vcpu', 'memory', 'balloon', 'kvm', 'host'))}`) on "
        f"the simulator, whose VMs have no QEMU process for `host` | {default:.1f} |",
    ]
    for name in (*SIM_COLLECTORS, "host"):
        if name in results.series:
            lines.append(f"| + `{name}` alone | {results.series[name]:+.1f} |")
    lines += [
        "",
        "`kvm_stats` is measured on the simulator, which answers like a QEMU without KVM (no "
        "KVM stats): on a KVM host it adds per-vCPU series (not measured here).",
        "",
        f"The exporter's own series (no `vm` label): {results.exporter_series}. "
        f"`host`: {results.host_note}; it grows by 2 per vCPU and 8 per tap (a real VM "
        "with 2 vCPUs and a tap: +18 over the simulator's default row, so the head series "
        "and memory below are about a quarter higher on a hypervisor).",
        "",
        "Largest families of a default VM:",
        "",
        "| family | series per VM | share |",
        "|---|---:|---:|",
    ]
    for name, count in list(results.families.items())[:6]:
        lines.append(f"| `{name}` | {count:.1f} | {count / default:.0%} |")
    lines += [
        "",
        "### Scrape body per VM",
        "",
        f"{s.fleet} simulated VMs, default collectors: {results.bytes_plain:,.0f} bytes "
        f"per VM plain, {results.bytes_gzip:,.0f} bytes gzip "
        f"({results.bytes_plain / results.bytes_gzip:.1f}×).",
        "",
        "### Head series",
        "",
        f"A real Prometheus ({_prometheus_version()}), loopback, "
        f"{s.scrape_interval:g} s scrape interval, its own empty storage, after "
        f"{s.scrapes} scrapes of every target; exporters of {s.fleet} simulated VMs each, "
        "default collectors, polled every 10 s. Head series include Prometheus's 5 per "
        "target (`up`, `scrape_*`).",
        "",
        "| exporters | VMs | head series | head series per VM | Prometheus RSS |",
        "|---:|---:|---:|---:|---:|",
    ]
    for row in results.head:
        lines.append(
            f"| {row['exporters']:.0f} | {row['vms']:,.0f} | {row['head_series']:,.0f} "
            f"| {row['head_series'] / row['vms']:.1f} | {_mib(row['rss'])} |"
        )
    full, lean = results.lean.get("full", 0.0), results.lean.get("lean", 0.0)
    share = results.families.get(LEAN_FAMILY, 0.0) / default
    lines += [
        "",
        "### A leaner `qemu_vm_status` (measured, not offered yet)",
        "",
        f"`{LEAN_FAMILY}` is {share:.0%} of a default VM's series "
        f"({results.families.get(LEAN_FAMILY, 0):.0f} of {default:.1f}: one per state, 1 for "
        f"the current one; {results.families.get(LEAN_FAMILY, 0) / results.series['core']:.0%} "
        "of a VM with `collectors: []`), "
        + ("over" if share > 0.25 else "under")
        + " the 25% the issue set as the bar. An info-style alternative writes only the "
        "current state's series "
        f'(`{LEAN_FAMILY}{{status="running"}} 1`). The same {s.fleet}-VM body served as '
        "fixed bytes, with and without the zero-valued status series, into the same Prometheus:",
        "",
        "| body | head series | per VM |",
        "|---|---:|---:|",
        f"| as today | {full:,.0f} | {full / s.fleet:.1f} |",
        f"| status: current state only | {lean:,.0f} | {lean / s.fleet:.1f} |",
        "",
        f"Saving: {full - lean:,.0f} head series per {s.fleet} VMs "
        f"({(full - lean) / full if full else 0:.0%}). It is not a config option yet: the "
        "default contract (`qemu_vm_status` with every state) stays; an opt-in key is left for "
        "later.",
        "",
        "### Prometheus agent CPU",
        "",
    ]
    agent = results.agent
    lines += [
        f"A Prometheus agent (`--enable-feature=agent`) scraping one exporter of "
        f"{agent['vms']:.0f} VMs every {s.scrape_interval:g} s and `remote_write`-ing to a "
        "central Prometheus (`--web.enable-remote-write-receiver`), over "
        f"{agent['window']:.0f} s: **{agent['cpu_per_minute_per_1000']:.2f} CPU seconds per "
        f"minute per 1,000 VMs** (RSS {_mib(agent['rss'])}; the central one held "
        f"{agent['central_series']:,.0f} head series).",
    ]
    if plot_name:
        lines += ["", f"![Head series and Prometheus memory against VMs]({plot_name})"]
    lines.append(END)
    return "\n".join(lines) + "\n"


def _prometheus_version() -> str:
    binary = shutil.which("prometheus") or "prometheus"
    output = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout
    words = output.split()
    return f"Prometheus {words[2]}" if len(words) > 2 else "Prometheus"


def write_section(path: Path, section: str) -> None:
    """Replace the text between the markers; add a "Fleet sizing" section if there is none."""
    replace_section(path, section, BEGIN, END, "Fleet sizing")


def plot(results: Results, path: Path) -> bool:
    """Head series and RSS against VMs; False when matplotlib is not importable."""
    try:  # imported by name: matplotlib is a bench-only extra, without type stubs
        matplotlib = importlib.import_module("matplotlib")
    except ImportError:
        log("no matplotlib: no plot (bench/run.py's way: pip install matplotlib in .venv)")
        return False
    matplotlib.use("Agg")
    plt = importlib.import_module("matplotlib.pyplot")

    vms = [row["vms"] for row in results.head]
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    axes[0].plot(vms, [row["head_series"] for row in results.head], marker="o")
    axes[0].set_title("Prometheus head series")
    axes[1].plot(vms, [row["rss"] / 2**20 for row in results.head], marker="o")
    axes[1].set_title("Prometheus RSS (MiB)")
    for axis in axes:
        axis.set_xlabel("simulated VMs")
        axis.grid(True, alpha=0.3)
        axis.set_ylim(bottom=0)
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)
    return True
