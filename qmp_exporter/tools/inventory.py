"""``qmp-exporter inventory``: ask every VM once (connect, query, leave) and print one row each.

The heir of the 2009 ``vm-info`` script, for a whole fleet at once::

    $ qmp-exporter inventory --format json unix:/run/qemu/alpha.qmp
    [{"vm": "unix:/run/qemu/alpha.qmp", "name": "vm-alpha", "uuid": "1111...",
      "status": "running", "version": "7.2.22",
      "vnc": {"enabled": true, "address": "127.0.0.1:5955", "clients": 0}, "error": null}]

Only ``qmp_capabilities`` and ``query-*`` commands are sent.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, TextIO, TypeVar

import yaml

from qmp_exporter.config import ConfigError, MonitorConfig, load_config
from qmp_exporter.discovery import scan
from qmp_exporter.fleet.state import VncState
from qmp_exporter.host import Host
from qmp_exporter.polling.answers import (
    MalformedAnswerError,
    parse_name,
    parse_status,
    parse_uuid,
    parse_version_answer,
    parse_vnc,
)
from qmp_exporter.qmp import AddressError, CommandError, QMPError, connect
from qmp_exporter.tools.text import printable

FORMATS = ("table", "json", "yaml")
#: VMs asked at the same time; more wait for a free slot (bounds open sockets).
MAX_CONCURRENT = 64
DEFAULT_TIMEOUT = 5.0
#: Extra time before the overall per-VM bound cuts in, so the client's own step bounds
#: (which say *which* step was slow) fire first.
_GRACE = 0.5
#: Columns of the table, in order: (heading, row attribute).
_COLUMNS = (
    ("VM", "vm"),
    ("NAME", "name"),
    ("UUID", "uuid"),
    ("STATUS", "status"),
    ("VERSION", "version"),
    ("VNC", "vnc_address"),
    ("CLIENTS", "vnc_clients"),
    ("ERROR", "error"),
)
#: Columns shortened first when the table is wider than the terminal, with their minimum width.
_SHRINKABLE = (("error", 10), ("uuid", 8), ("name", 8), ("vm", 8))

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class VncInfo:
    """How a row shows ``query-vnc``: whether VNC is on, where it listens, how many clients."""

    enabled: bool
    address: str | None = None
    clients: int = 0

    @classmethod
    def of(cls, vnc: VncState) -> VncInfo:
        """The row's view of a parsed answer: ``host:port`` (IPv6 in brackets) and clients."""
        if not vnc.enabled:
            return cls(enabled=False)
        address = None
        if vnc.host and vnc.service:
            host = f"[{vnc.host}]" if ":" in vnc.host else vnc.host
            address = f"{host}:{vnc.service}"
        return cls(True, address, vnc.clients)


@dataclass(frozen=True, slots=True)
class InventoryRow:
    """What one VM said: ``error`` is ``None`` when it answered; what it did not say is ``None``."""

    vm: str
    name: str | None = None
    uuid: str | None = None
    status: str | None = None
    version: str | None = None
    vnc: VncInfo | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The row as plain data: keys ``vm, name, uuid, status, version, vnc, error``."""
        return asdict(self)

    @property
    def vnc_address(self) -> str | None:
        if self.vnc is None:
            return None
        return self.vnc.address if self.vnc.enabled else "off"

    @property
    def vnc_clients(self) -> str | None:
        if self.vnc is None or not self.vnc.enabled:
            return None
        return str(self.vnc.clients)


Target = MonitorConfig | str


def _target_name_and_address(target: Target) -> tuple[str, str]:
    if isinstance(target, MonitorConfig):
        return target.name, target.address
    return target, target


async def gather_inventory(
    targets: Sequence[Target], timeout: float = DEFAULT_TIMEOUT
) -> list[InventoryRow]:
    """Ask every monitor at once (at most :data:`MAX_CONCURRENT` open at a time); one row each,
    in the order given. Each VM is bounded by ``timeout`` from connect to its last answer.
    An address listed twice is asked once: QEMU serves one client per socket, so a second
    concurrent connection would only wait for the first."""
    slots = asyncio.Semaphore(MAX_CONCURRENT)
    asked: dict[str, asyncio.Task[InventoryRow]] = {}

    async def ask(address: str) -> InventoryRow:
        async with slots:
            return await inventory_one(address, address, timeout)

    names = []
    for target in targets:
        vm, address = _target_name_and_address(target)
        names.append((vm, address))
        if address not in asked:
            asked[address] = asyncio.ensure_future(ask(address))
    await asyncio.gather(*asked.values())
    return [dataclasses.replace(asked[address].result(), vm=vm) for vm, address in names]


async def inventory_one(vm: str, address: str, timeout: float) -> InventoryRow:
    """Connect, query, leave; a row with ``error`` set when the VM did not answer in time."""
    found: dict[str, Any] = {}
    try:
        # The client bounds each step and says which one failed; this is only a safety net.
        async with asyncio.timeout(timeout + _GRACE):
            await _ask(address, timeout, found)
    except TimeoutError:
        return InventoryRow(vm, **found, error=f"{address}: no answer within {timeout:g}s")
    except AddressError as err:
        return InventoryRow(vm, error=str(err))
    except QMPError as err:
        return InventoryRow(vm, **found, error=str(err) or type(err).__name__)
    except OSError as err:
        return InventoryRow(vm, **found, error=f"{address}: {err.strerror or err}")
    return InventoryRow(vm, **found)


async def _ask(address: str, timeout: float, found: dict[str, Any]) -> None:
    """Fill ``found`` with what the VM says; commands it lacks leave their field unset."""
    deadline = time.monotonic() + timeout
    client = await connect(address, timeout)
    try:
        left = max(deadline - time.monotonic(), 0.001)
        version, status, name, uuid, vnc = await asyncio.gather(
            *(
                _optional(client.execute(command, timeout=left))
                for command in (
                    "query-version",
                    "query-status",
                    "query-name",
                    "query-uuid",
                    "query-vnc",
                )
            )
        )
    finally:
        await client.close()
    if version is None and client.greeting is not None:
        found["version"] = client.greeting.version
    else:
        found["version"] = _lenient(lambda answer: parse_version_answer(answer)[0], version)
    found["status"] = _lenient(lambda answer: parse_status(answer)[0], status)
    found["name"] = _lenient(parse_name, name)
    found["uuid"] = _lenient(parse_uuid, uuid)
    vnc_state = _lenient(parse_vnc, vnc)
    found["vnc"] = None if vnc_state is None else VncInfo.of(vnc_state)


async def _optional(call: Any) -> Any:
    """The command's answer, or ``None`` when QEMU answered with an error (command missing,
    feature not built in); connection problems still raise."""
    try:
        return await call
    except CommandError:
        return None


def _lenient(parse: Callable[[Any], _T | None], answer: Any) -> _T | None:
    """``parse(answer)``, or ``None`` (shown as ``-``) when QEMU gave no answer or one of
    the wrong shape: one bad field never hides the others."""
    if answer is None:
        return None
    try:
        return parse(answer)
    except MalformedAnswerError:
        return None


# -- output ------------------------------------------------------------------------------


def format_rows(rows: Sequence[InventoryRow], fmt: str = "table", width: int | None = None) -> str:
    """Render rows as ``table`` (aligned, at most ``width`` columns wide), ``json`` or ``yaml``."""
    if fmt == "json":
        return json.dumps([r.to_dict() for r in rows], indent=2) + "\n"
    if fmt == "yaml":
        return yaml.safe_dump([r.to_dict() for r in rows], sort_keys=False, allow_unicode=True)
    if fmt == "table":
        return _table(rows, width)
    raise ValueError(f"unknown format {fmt!r} (one of {', '.join(FORMATS)})")


def _cell(value: str | None) -> str:
    """A value made safe for one table cell: no control characters, ``-`` for nothing."""
    if value is None or value == "":
        return "-"
    return printable(value)


def _table(rows: Sequence[InventoryRow], width: int | None) -> str:
    cells = [{attr: _cell(getattr(row, attr)) for _, attr in _COLUMNS} for row in rows]
    if not any(row.error for row in rows):
        columns = [c for c in _COLUMNS if c[1] != "error"]
    else:
        columns = list(_COLUMNS)
    widths = {attr: max([len(head)] + [len(c[attr]) for c in cells]) for head, attr in columns}
    if width is not None:
        _fit(widths, width)
    lines = [_line([head for head, _ in columns], [widths[a] for _, a in columns])]
    for cell in cells:
        values = [_shorten(cell[a], widths[a]) for _, a in columns]
        lines.append(_line(values, [widths[a] for _, a in columns]))
    return "\n".join(lines) + "\n"


def _fit(widths: dict[str, int], limit: int) -> None:
    """Shrink the shrinkable columns, in order, until the table fits ``limit``."""
    gaps = 2 * (len(widths) - 1)
    for attr, minimum in _SHRINKABLE:
        excess = sum(widths.values()) + gaps - limit
        if excess <= 0:
            return
        if attr in widths and widths[attr] > minimum:
            widths[attr] = max(minimum, widths[attr] - excess)


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _line(values: Sequence[str], widths: Sequence[int]) -> str:
    return "  ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)).rstrip()


# -- command line ------------------------------------------------------------------------


def add_inventory_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``inventory`` subcommand's options to ``parser``."""
    parser.add_argument(
        "addresses",
        nargs="*",
        metavar="ADDRESS",
        help="monitor addresses (unix:/PATH, /PATH, tcp:HOST:PORT) to ask instead of the config",
    )
    parser.add_argument(
        "--config.file",
        dest="config_file",
        # SUPPRESS: a --config.file given before the subcommand is not overwritten.
        default=argparse.SUPPRESS,
        help="the exporter's config: ask every monitor it lists or discovers "
        "(default qmp-exporter.yml when no ADDRESS is given)",
    )
    parser.add_argument(
        "--format", choices=FORMATS, default="table", help="output format (default: table)"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds each VM may take to answer (default: the config's timeout, else 5)",
    )


def run_inventory(
    args: argparse.Namespace, stdout: TextIO | None = None, stderr: TextIO | None = None
) -> int:
    """Run ``inventory`` on the config's monitors (listed and discovered) and/or the
    addresses given: 0 when every VM answered, 1 when some did not, 2 for a bad config."""
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    targets: list[Target] = list(args.addresses)
    timeout = args.timeout
    config_file = getattr(args, "config_file", None)
    if not targets or config_file:
        try:
            config = load_config(config_file or "qmp-exporter.yml")
        except ConfigError as err:
            print(f"qmp-exporter inventory: {err}", file=stderr)
            return 2
        found = scan(config.discovery, config.monitors, Host(), read_unwatched=False)
        for problem in found.problems:
            print(f"qmp-exporter inventory: {problem}", file=stderr)
        targets = [*config.monitors, *found.monitors, *targets]
        if timeout is None:
            timeout = config.timeout
    if timeout is None:
        timeout = DEFAULT_TIMEOUT
    if timeout <= 0:
        print("qmp-exporter inventory: --timeout must be positive", file=stderr)
        return 2
    if not targets:
        print("qmp-exporter inventory: no monitors in the config and no ADDRESS", file=stderr)
        return 2
    try:
        rows = asyncio.run(gather_inventory(targets, timeout))
    except KeyboardInterrupt:
        return 130
    width = shutil.get_terminal_size().columns if stdout.isatty() else None
    stdout.write(format_rows(rows, args.format, width))
    stdout.flush()
    return 1 if any(row.error for row in rows) else 0
