"""QMP round trips per second of ``query-status`` on one real QEMU, three ways side by side:

* ``raw``: a minimal asyncio loop (write + readline + json.loads), the practical ceiling;
* ``ours``: ``qmp_exporter.qmp`` (``client.execute``);
* ``qemu.qmp``: QEMU's official Python library (pip-installed on demand: extra ``bench``).

One QEMU (``-M none``) with one ``-qmp`` socket per contender, so each holds its own
session. After a warm-up, ``--rounds`` rounds of ``--count`` round trips each run in an
order that rotates every round; the report gives each contender's median rate and the
ratios. Short rounds, many of them, interleaved: on a shared machine the load changes
from second to second, and this way each contender sees the same mix. Only the ratios are
meaningful; the client's own CPU time per round trip is printed too, as it is far less
sensitive to other load than the wall-clock rate.

    python3 -m bench.qmp_roundtrip [--count 1000] [--rounds 21] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from qmp_exporter.qmp import connect
from tests.helpers.qemu import QemuVM, find_qemu

RoundTrip = Callable[[], Awaitable[Any]]


def ensure_qemu_qmp() -> Any:
    """Import ``qemu.qmp``, pip-installing it (the ``bench`` extra) when missing."""
    try:
        return importlib.import_module("qemu.qmp")
    except ImportError:
        print("installing qemu.qmp (extra 'bench') ...", file=sys.stderr)
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "qemu.qmp>=0.0.3"], check=True
        )
        importlib.invalidate_caches()
        return importlib.import_module("qemu.qmp")


async def raw_contender(path: str) -> tuple[RoundTrip, Callable[[], Awaitable[None]]]:
    """The ceiling: no ids, no matching, no timeouts, no events."""
    reader, writer = await asyncio.open_unix_connection(path)
    await reader.readline()  # greeting
    writer.write(b'{"execute":"qmp_capabilities"}\n')
    await reader.readline()
    request = b'{"execute":"query-status"}\n'

    async def round_trip() -> Any:
        writer.write(request)
        return json.loads(await reader.readline())["return"]

    async def close() -> None:
        writer.close()
        await writer.wait_closed()

    return round_trip, close


async def ours_contender(path: str) -> tuple[RoundTrip, Callable[[], Awaitable[None]]]:
    client = await connect(f"unix:{path}", timeout=10)

    async def round_trip() -> Any:
        return await client.execute("query-status")

    return round_trip, client.close


async def qemu_qmp_contender(path: str) -> tuple[RoundTrip, Callable[[], Awaitable[None]]]:
    qmp = ensure_qemu_qmp()
    client = qmp.QMPClient("bench")
    await client.connect(path)

    async def round_trip() -> Any:
        return await client.execute("query-status")

    return round_trip, client.disconnect


async def measure(round_trip: RoundTrip, count: int) -> tuple[float, float]:
    """Round trips per second over ``count`` sequential round trips, and this process's
    CPU time (user + system) per round trip in microseconds."""
    cpu_started = time.process_time()
    started = time.perf_counter()
    for _ in range(count):
        await round_trip()
    elapsed = time.perf_counter() - started
    return count / elapsed, (time.process_time() - cpu_started) / count * 1e6


async def run(count: int, rounds: int, warmup: int) -> dict[str, Any]:
    factories = {"raw": raw_contender, "ours": ours_contender, "qemu.qmp": qemu_qmp_contender}
    ensure_qemu_qmp()
    if find_qemu() is None:
        sys.exit("qemu-system-x86_64 is not installed (scripts/install-test-deps.sh)")
    vm = QemuVM(name="bench", monitors=len(factories)).start()
    paths = vm.qmp_paths
    try:
        contenders = {}
        for (name, factory), path in zip(factories.items(), paths, strict=True):
            contenders[name] = await factory(path)
        for round_trip, _ in contenders.values():
            answer = await round_trip()
            assert answer["status"] == "running", answer
            await measure(round_trip, warmup)
        rates: dict[str, list[float]] = {name: [] for name in contenders}
        cpu: dict[str, list[float]] = {name: [] for name in contenders}
        names = list(contenders)
        for index in range(rounds):
            order = names[index % len(names) :] + names[: index % len(names)]
            for name in order:
                rate, cpu_us = await measure(contenders[name][0], count)
                rates[name].append(rate)
                cpu[name].append(cpu_us)
        for _, close in contenders.values():
            await close()
    finally:
        vm.close()
    medians = {name: statistics.median(values) for name, values in rates.items()}
    return {
        "count": count,
        "rounds": rounds,
        "rates": rates,
        "median": medians,
        "cpu_us_median": {name: statistics.median(values) for name, values in cpu.items()},
        "ours_vs_raw": medians["ours"] / medians["raw"],
        "ours_vs_qemu_qmp": medians["ours"] / medians["qemu.qmp"],
        "qemu_qmp_vs_raw": medians["qemu.qmp"] / medians["raw"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=1000, help="round trips per round")
    parser.add_argument("--rounds", type=int, default=21, help="alternating rounds")
    parser.add_argument("--warmup", type=int, default=1000, help="warm-up round trips each")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args()
    result = asyncio.run(run(args.count, args.rounds, args.warmup))
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"query-status round trips/s, median of {args.rounds} rounds of {args.count}:")
    for name, rate in result["median"].items():
        low, high = min(result["rates"][name]), max(result["rates"][name])
        cpu_us = result["cpu_us_median"][name]
        print(
            f"  {name:9} {rate:8.0f}/s   (rounds {low:.0f}..{high:.0f}; "
            f"client CPU {cpu_us:.0f} us per round trip)"
        )
    print(f"  ours / raw      = {result['ours_vs_raw']:.2f}  (goal >= 0.8)")
    print(f"  ours / qemu.qmp = {result['ours_vs_qemu_qmp']:.2f}  (goal >= 2.0)")


if __name__ == "__main__":
    main()
