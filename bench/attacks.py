"""Full-size hostile-client runs of issue 15 against the exporter (loopback only).

A simulated fleet (``python -m qmp_exporter.sim``, 500 VMs: the report's 2.1 MB
``/metrics``) is watched by the exporter, plain and then with TLS + basic auth (bcrypt
cost 10). Each case runs its attackers in a child process (``tests/helpers/attackers.py``)
for ``--seconds`` while a Prometheus stand-in scrapes ``/metrics`` (gzip, new connection,
5 s timeout) once a second; the exporter's RSS is read before, at every scrape, and
``--after`` seconds after the attackers left (the issue's check: 30 s). The table goes
into docs/benchmarks.md between the attack-results markers.

    python -m bench.attacks                  # ~6 minutes
    python -m bench.attacks --after 5 --seconds 8 --output /tmp/b.md

Cases: 1,100 and 4,000 idle TCP connections; 512 keep-alive connections (a request each
every 50 s); 520 clients that request /metrics and never read; 4 clients looping
malformed requests; over TLS: 4,000 connections that never handshake, 512 keep-alive ones
without credentials (401), 200 clients sending wrong passwords.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import bcrypt
import requests
import yaml

from tests.helpers.exporter import ExporterProcess, parse_samples, wait_for
from tests.helpers.tls_certs import make_pki

ROOT = Path(__file__).resolve().parents[1]

BEGIN = "<!-- attack-results:begin (written by bench/attacks.py; edits here are overwritten) -->"
END = "<!-- attack-results:end -->"
MB = 1024 * 1024
PASSWORD = "s3cret"
#: (label, attackers' case, connections, TLS + auth, seconds between a client's requests).
CASES = [
    ("1,100 idle TCP connections", "idle", 1100, False, 0.5),
    ("4,000 idle TCP connections", "idle", 4000, False, 0.5),
    ("512 keep-alive connections, a request each every 50 s", "keepalive", 512, False, 50.0),
    ("520 clients that request /metrics and never read", "noread", 520, False, 0.5),
    ("4 clients looping malformed requests", "malformed", 4, False, 0.5),
    ("4,000 TLS connections that never handshake", "idle", 4000, True, 0.5),
    ("512 TLS keep-alive connections without credentials (401)", "keepalive", 512, True, 50.0),
    ("200 clients sending wrong basic-auth passwords", "authflood", 200, True, 0.5),
]


@dataclass
class Row:
    """One case's figures."""

    label: str
    latencies: list[float]
    failed: int
    rss_before: float
    rss_peak: float
    rss_after: float
    attacker: dict[str, int]

    def markdown(self) -> str:
        ok = self.latencies or [float("nan")]
        failed = f" ({self.failed} failed)" if self.failed else ""
        return (
            f"| {self.label} | {statistics.median(ok):.3f} / {max(ok):.3f} s{failed} "
            f"| {self.rss_before:.0f} → {self.rss_peak:.0f} → {self.rss_after:.0f} MB |"
        )


def _line(process: subprocess.Popen[bytes], timeout: float) -> str:
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    if not ready:
        raise RuntimeError(f"no line from {process.args!r} in {timeout}s")
    return process.stdout.readline().decode().strip()


@contextlib.contextmanager
def fleet(directory: Path, count: int) -> Iterator[list[dict[str, str]]]:
    """A simulated fleet; yields its monitors."""
    process = subprocess.Popen(
        [sys.executable, "-m", "qmp_exporter.sim", "--count", str(count), "--dir", str(directory)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    try:
        if _line(process, 60) != f"ready {count}":
            raise RuntimeError("simulator did not start")
        yield [{"name": p.stem, "address": f"unix:{p}"} for p in sorted(directory.glob("*.qmp"))]
    finally:
        process.terminate()
        process.wait(10)


def scrape(exporter: ExporterProcess, ca: str | None) -> float | None:
    """Seconds one Prometheus-like scrape took, or None when it failed (5 s timeout)."""
    started = time.monotonic()
    try:
        response = requests.get(
            exporter.endpoint("/metrics"),
            headers={"Accept-Encoding": "gzip", "Connection": "close"},
            timeout=5,
            verify=ca or True,
            auth=("prometheus", PASSWORD) if ca else None,
        )
        response.raise_for_status()
    except requests.RequestException:
        return None
    return time.monotonic() - started


def up_count(exporter: ExporterProcess, ca: str | None) -> float:
    """How many VMs ``/metrics`` says are up."""
    response = requests.get(
        exporter.endpoint("/metrics"),
        timeout=10,
        verify=ca or True,
        auth=("prometheus", PASSWORD) if ca else None,
    )
    samples = parse_samples(response.text)
    return sum(v for (name, _), v in samples.items() if name == "qemu_up")


def run_case(
    exporter: ExporterProcess,
    ca: str | None,
    case: tuple[str, str, int, bool, float],
    seconds: float,
    after: float,
) -> Row:
    """One attack: attackers in a child for ``seconds``; scrapes once a second meanwhile."""
    label, name, count, tls, interval = case

    def rss() -> float:
        return exporter.rss_bytes() / MB

    before = rss()
    args = [sys.executable, "-m", "tests.helpers.attackers", "--port", str(exporter.port)]
    args += ["--case", name, "--n", str(count), "--interval", str(interval)]
    args += ["--hold", str(seconds + 120), *(["--tls"] if tls else [])]
    child = subprocess.Popen(
        args, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )  # fmt: skip
    latencies: list[float] = []
    failed = 0
    peak = before
    try:
        _line(child, 120)  # ready: every connection opened
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            started = time.monotonic()
            took = scrape(exporter, ca)
            if took is None:
                failed += 1
            else:
                latencies.append(took)
            peak = max(peak, rss())
            time.sleep(max(0.0, 1.0 - (time.monotonic() - started)))
    finally:
        assert child.stdin is not None
        child.stdin.close()
        stats = _line(child, 30)
        child.wait(10)
    time.sleep(after)
    attacker = json.loads(stats.removeprefix("stats "))
    return Row(label, latencies, failed, before, peak, rss(), attacker)


def exporters(workdir: Path, vms: int) -> Iterator[tuple[ExporterProcess, str | None, bool]]:
    """The plain exporter, then the TLS + basic-auth one, each with a fleet of its own."""
    pki = make_pki(workdir / "pki")
    web = workdir / "web.yml"
    password_hash = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(10)).decode()
    web.write_text(
        f"tls_server_config:\n  cert_file: {pki.server}\n  key_file: {pki.server_key}\n"
        f"basic_auth_users:\n  prometheus: '{password_hash}'\n"
    )
    for tls in (False, True):
        with fleet(workdir / f"fleet-{tls}", vms) as monitors:
            config = {"poll_interval": "5s", "timeout": "2s", "monitors": monitors}
            extra = ["--web.config.file", str(web)] if tls else []
            exporter = ExporterProcess(
                yaml.safe_dump(config), extra, scheme="https" if tls else "http", log_level="info"
            )
            ca = str(pki.ca) if tls else None
            with exporter:
                all_up = lambda e=exporter, c=ca: up_count(e, c) == vms  # noqa: E731
                wait_for(all_up, 120, "every VM up", interval=1)
                yield exporter, ca, tls


def write_section(path: Path, section: str) -> None:
    """Replace the results between the markers (they must exist)."""
    text = path.read_text()
    head, rest = text.split(BEGIN, 1)
    path.write_text(head + BEGIN + "\n" + section.rstrip("\n") + "\n" + END + rest.split(END, 1)[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vms", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=10.0, help="attack window per case")
    parser.add_argument("--after", type=float, default=30.0, help="RSS read this long after")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = parser.parse_args()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="qmpx-attacks-") as workdir:
        for exporter, ca, tls in exporters(Path(workdir), args.vms):
            for case in (c for c in CASES if c[3] == tls):
                row = run_case(exporter, ca, case, args.seconds, args.after)
                print(row.markdown(), json.dumps(row.attacker), flush=True)
                rows.append(row)
    section = "\n".join(
        [
            f"{args.vms} simulated VMs; scrape latency p50 / max over a {args.seconds:g} s "
            f"attack window (one scrape a second, 5 s timeout); exporter RSS before → peak → "
            f"{args.after:g} s after.",
            "",
            "| attack | scrape during the attack | RSS |",
            "| --- | --- | --- |",
            *(row.markdown() for row in rows),
        ]
    )
    write_section(args.output, section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
