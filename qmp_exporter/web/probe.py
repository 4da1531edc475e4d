"""Multi-target probing, as the blackbox and SNMP exporters do it: ``/probe?target=ADDRESS``
connects to that one monitor now (poll mode), runs the collectors and answers with its
metrics. Only allowed addresses may be probed, so the endpoint cannot reach arbitrary
sockets. Also the Prometheus HTTP service discovery document of the probe-able monitors.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import posixpath
from collections.abc import Callable, Iterable, Sequence
from fnmatch import fnmatchcase

from qmp_exporter.config import Config, MonitorConfig
from qmp_exporter.exposition.families import CONNECTIONS, EVENTS, POLL_ERRORS, assemble
from qmp_exporter.exposition.render import vm_lines
from qmp_exporter.polling.poller import MonitorPoller, PollSettings
from qmp_exporter.qmp import AddressError, TCPAddress, UnixAddress, parse_address
from qmp_exporter.textformat import CONTENT_TYPE
from qmp_exporter.web.server import Request, Response, text_response

log = logging.getLogger(__name__)

#: Prometheus sends the scrape timeout in this header.
TIMEOUT_HEADER = "x-prometheus-scrape-timeout-seconds"
#: Kept back from Prometheus's timeout so the answer arrives in time (as blackbox does).
TIMEOUT_MARGIN = 0.5
#: Upper bound on one probe, whatever the header says.
MAX_PROBE_TIMEOUT = 60.0
#: Probes running at once; more wait (within their timeout) for a slot.
MAX_CONCURRENT_PROBES = 64
#: Longest target accepted (a unix socket path is at most 107 bytes; hosts are short).
MAX_TARGET_LENGTH = 512
#: Counters of a long-lived poller that mean nothing for a one-shot probe.
_ONE_SHOT_COUNTERS = frozenset({CONNECTIONS.name, EVENTS.name, POLL_ERRORS.name})


class TargetError(ValueError):
    """A ``target`` that cannot or may not be probed; the message is the 400's reason."""


def parse_target(text: str) -> str:
    """A target (``/path``, ``unix:/path``, ``tcp:host:port`` or ``host:port``) as a
    normalised address; :class:`TargetError` saying why not."""
    if not text:
        raise TargetError("missing target parameter (probe?target=ADDRESS)")
    if len(text) > MAX_TARGET_LENGTH:
        raise TargetError(f"target longer than {MAX_TARGET_LENGTH} characters")
    if not text.startswith(("/", "unix:", "tcp:")):
        text = f"tcp:{text}"
    try:
        address = parse_address(text)
    except AddressError as err:
        raise TargetError(f"bad target: {err}") from None
    if isinstance(address, UnixAddress):
        path = address.path
        if not path.startswith("/") or posixpath.normpath(path) != path:
            raise TargetError(f"bad target: {path!r} is not a normalised absolute path")
    return str(address)


def matches(pattern: str, address: str) -> bool:
    """Whether a normalised ``probe.allow`` glob matches a normalised address. For unix
    paths each ``/``-separated part is matched on its own, so ``*`` never crosses a
    directory; for TCP the host and port are matched separately."""
    kind, _, glob = pattern.partition(":")
    parsed = parse_address(address)
    if kind == "unix" and isinstance(parsed, UnixAddress):
        parts, globs = parsed.path.split("/"), glob.split("/")
        return len(parts) == len(globs) and all(
            fnmatchcase(part, g) for part, g in zip(parts, globs, strict=True)
        )
    if kind == "tcp" and isinstance(parsed, TCPAddress):
        host_glob, _, port_glob = glob.rpartition(":")
        if host_glob.startswith("[") and host_glob.endswith("]"):
            host_glob = host_glob[1:-1]
        return fnmatchcase(parsed.host.lower(), host_glob) and fnmatchcase(
            str(parsed.port), port_glob
        )
    return False


def is_allowed(address: str, allow: Sequence[str], monitors: Iterable[MonitorConfig]) -> bool:
    """With ``allow`` globs: whether one matches. Without: whether ``address`` is that of a
    configured or discovered ``poll``-mode monitor."""
    if allow:
        return any(matches(pattern, address) for pattern in allow)
    return any(m.address == address and m.mode == "poll" for m in monitors)


def timeout_from(headers: dict[str, str], default: float) -> float:
    """Seconds a probe may take: Prometheus's scrape timeout less a margin, else ``default``."""
    raw = headers.get(TIMEOUT_HEADER)
    try:
        offered = float(raw) if raw is not None else math.nan
    except ValueError:
        offered = math.nan
    if not math.isfinite(offered) or offered <= 0:
        return min(default, MAX_PROBE_TIMEOUT)
    budget = offered - TIMEOUT_MARGIN if offered > 2 * TIMEOUT_MARGIN else offered / 2
    return min(budget, MAX_PROBE_TIMEOUT)


async def probe(
    address: str,
    collectors: tuple[str, ...] | None,
    timeout: float,
    *,
    name: str | None = None,
    labels: tuple[tuple[str, str], ...] = (),
) -> bytes:
    """Connect to one monitor now, poll it once with ``collectors`` (``None``: the
    defaults) within ``timeout`` seconds, and return its exposition (``vm`` is ``name``, or
    the address). A monitor that cannot be reached gives ``qemu_up 0``, not an error."""
    monitor = MonitorConfig(
        name=name or address, address=address, mode="poll", labels=labels, collectors=collectors
    )
    poller = MonitorPoller(monitor, PollSettings(interval=timeout, timeout=timeout, start_spread=0))
    # One poll through the same code the fleet runs; in poll mode it closes its connection.
    started = asyncio.get_running_loop().time()
    try:
        await asyncio.wait_for(poller.poll_once(), timeout)
    except TimeoutError:
        await poller.stop()
        elapsed = asyncio.get_running_loop().time() - started
        poller.record_failure(
            TimeoutError(f"{address}: probe timed out after {timeout:g}s"), elapsed
        )
    lines = vm_lines(poller.state)
    return assemble(
        {name: text for name, text in lines.items() if name not in _ONE_SHOT_COUNTERS}
    ).encode()


class ProbeEndpoint:
    """The ``/probe`` and ``/discovery`` handlers; ``monitors`` gives the configured and
    discovered monitors as they are now, ``config`` the running configuration."""

    def __init__(
        self, config: Callable[[], Config], monitors: Callable[[], Iterable[MonitorConfig]]
    ) -> None:
        self._config = config
        self._monitors = monitors
        self._slots = asyncio.Semaphore(MAX_CONCURRENT_PROBES)

    async def handle_probe(self, request: Request) -> Response:
        """``GET /probe?target=ADDRESS``: 200 with the VM's metrics (``qemu_up 0`` when it
        cannot be reached), 400 with the reason for a bad or disallowed target."""
        targets = request.query.get("target", [])
        if len(targets) > 1:
            return text_response(400, "give one target parameter")
        try:
            address = parse_target(targets[0] if targets else "")
        except TargetError as err:
            return text_response(400, str(err))
        config = self._config()
        monitors = tuple(self._monitors())
        if not is_allowed(address, config.probe.allow, monitors):
            why = (
                "it matches no probe.allow glob"
                if config.probe.allow
                else "without probe.allow only poll-mode monitors of the config or of "
                "discovery may be probed"
            )
            return text_response(400, f"target {address} is not allowed: {why}")
        known = next((m for m in monitors if m.address == address), None)
        timeout = timeout_from(request.headers, config.timeout)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            await asyncio.wait_for(self._slots.acquire(), timeout)
        except TimeoutError:
            return text_response(503, "too many probes at once; try again")
        try:
            body = await probe(
                address,
                known.collectors if known else None,
                max(deadline - loop.time(), 0.01),
                name=known.name if known else None,
                labels=known.labels if known else (),
            )
        finally:
            self._slots.release()
        return Response(200, body, CONTENT_TYPE)

    async def handle_discovery(self, request: Request) -> Response:
        """``GET /discovery``: Prometheus HTTP SD JSON listing every known monitor that
        ``/probe`` would accept, one target group each."""
        config = self._config()
        if not config.probe.http_sd:
            return text_response(404, "HTTP service discovery is off (probe.http_sd: false)")
        return Response(200, sd_document(self._monitors(), config.probe.allow), "application/json")


def sd_document(monitors: Iterable[MonitorConfig], allow: Sequence[str]) -> bytes:
    """The HTTP SD JSON: ``[{"targets": [address], "labels": {...}}]`` for every monitor
    that may be probed; labels are the monitor's own plus ``__meta_qmp_vm`` and
    ``__meta_qmp_mode``."""
    monitors = tuple(monitors)
    groups = []
    for monitor in monitors:
        if not is_allowed(monitor.address, allow, monitors):
            continue
        labels = dict(monitor.labels)
        labels["__meta_qmp_vm"] = monitor.name
        labels["__meta_qmp_mode"] = monitor.mode
        groups.append({"targets": [monitor.address], "labels": labels})
    return json.dumps(groups, indent=1, sort_keys=True).encode()
