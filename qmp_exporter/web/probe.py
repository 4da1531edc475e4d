"""Multi-target probing, as the blackbox and SNMP exporters do it: ``/probe?target=ADDRESS``
answers with that one monitor's metrics. A monitor the exporter already watches is answered
from its poller's latest published state (a probe never races the poller for QEMU's one
client slot); any other allowed monitor is connected to now (poll mode). Only allowed
addresses may be probed, checked on the path with symlinks resolved, and each target is
rate- and concurrency-limited. Also the Prometheus HTTP service discovery document of the
probe-able monitors.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import math
import os.path
import posixpath
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from fnmatch import fnmatchcase
from typing import Any

from qmp_exporter.config import Config, MonitorConfig
from qmp_exporter.exposition.families import CONNECTIONS, EVENTS, POLL_ERRORS, assemble
from qmp_exporter.exposition.render import vm_lines
from qmp_exporter.fleet.state import VMState
from qmp_exporter.host import Host
from qmp_exporter.polling.poller import MonitorPoller, PollSettings
from qmp_exporter.qmp import AddressError, TCPAddress, UnixAddress, parse_address
from qmp_exporter.textformat import CONTENT_TYPE
from qmp_exporter.web.http.server import Request, Response, text_response
from qmp_exporter.web.probe_limits import ProbeLimiter

log = logging.getLogger(__name__)
#: How often a probe looks for the first state of a watched VM that has not polled yet.
FIRST_POLL_CHECK = 0.05

#: Prometheus sends the scrape timeout in this header.
TIMEOUT_HEADER = "x-prometheus-scrape-timeout-seconds"
#: Kept back from Prometheus's timeout so the answer arrives in time (as blackbox does).
TIMEOUT_MARGIN = 0.5
#: Upper bound on one probe, whatever the header says (and never past the config's timeout).
MAX_PROBE_TIMEOUT = 10.0
#: Probes running at once; more wait (within their timeout) for a slot.
MAX_CONCURRENT_PROBES = 64
#: Longest target accepted (a unix socket path is at most 107 bytes; hosts are short).
MAX_TARGET_LENGTH = 512
#: Counters of a long-lived poller that mean nothing for a one-shot probe.
_ONE_SHOT_COUNTERS = frozenset({CONNECTIONS.name, EVENTS.name, POLL_ERRORS.name})


class ProbeLog(logging.LoggerAdapter[logging.Logger]):
    """The logger of a probe's poller: its records go out at debug, marked ``probe:`` (a
    failed probe is not the configured VM going down)."""

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        super().log(logging.DEBUG, f"probe: {msg}", *args, **kwargs)


#: Takes the records of every probe's poller.
PROBE_LOG = ProbeLog(logging.getLogger(f"{__name__}.poller"))


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


_GLOB_CHARS = re.compile(r"[*?\[]")


def resolve(address: str) -> str:
    """A normalised address with a unix path's symlinks resolved (what connect reaches)."""
    parsed = parse_address(address)
    if isinstance(parsed, UnixAddress):
        return f"unix:{os.path.realpath(parsed.path)}"
    return address


def resolve_pattern(pattern: str) -> str:
    """A normalised ``probe.allow`` glob with the symlinks of its literal leading
    directories resolved (``/var/run/...`` → ``/run/...``), to match resolved paths."""
    kind, _, glob = pattern.partition(":")
    if kind != "unix":
        return pattern
    parts = glob.split("/")
    literal = next((i for i, part in enumerate(parts) if _GLOB_CHARS.search(part)), len(parts))
    if literal <= 1:
        return pattern
    head = os.path.realpath("/".join(parts[:literal]))
    return "unix:" + "/".join([head.rstrip("/"), *parts[literal:]])


def is_allowed(address: str, allow: Sequence[str], monitors: Iterable[MonitorConfig]) -> bool:
    """With ``allow`` globs: whether one matches the address with symlinks resolved (a
    link in an allowed directory to a socket elsewhere is refused). Without: whether
    ``address`` is that of a configured or discovered ``poll``-mode monitor."""
    if allow:
        resolved = resolve(address)
        return any(matches(resolve_pattern(pattern), resolved) for pattern in allow)
    return any(m.address == address and m.mode == "poll" for m in monitors)


def watched_monitor(address: str, monitors: Iterable[MonitorConfig]) -> MonitorConfig | None:
    """The watched monitor at ``address``: the same address, or the same socket once
    symlinks are resolved."""
    monitors = tuple(monitors)
    exact = next((m for m in monitors if m.address == address), None)
    if exact is not None or not address.startswith("unix:"):
        return exact
    resolved = resolve(address)
    name = posixpath.basename(resolved)
    for monitor in monitors:  # only the likely ones are resolved (a syscall per part)
        if monitor.address.startswith("unix:") and (
            monitor.address == resolved
            or (
                posixpath.basename(monitor.address) == name and resolve(monitor.address) == resolved
            )
        ):
            return monitor
    return None


def timeout_from(headers: Mapping[str, str], default: float) -> float:
    """Seconds a probe may take: Prometheus's scrape timeout less a margin, but never more
    than ``default`` (the config's timeout) nor :data:`MAX_PROBE_TIMEOUT`."""
    cap = min(default, MAX_PROBE_TIMEOUT)
    raw = headers.get(TIMEOUT_HEADER)
    try:
        offered = float(raw) if raw is not None else math.nan
    except ValueError:
        offered = math.nan
    if not math.isfinite(offered) or offered <= 0:
        return cap
    budget = offered - TIMEOUT_MARGIN if offered > 2 * TIMEOUT_MARGIN else offered / 2
    return min(budget, cap)


def exposition_of(state: VMState) -> bytes:
    """One VM's exposition as ``/probe`` answers it (a poller's counters left out: they mean
    nothing to a one-shot probe), in the one family order."""
    lines = vm_lines(state)
    return assemble(
        {name: text for name, text in lines.items() if name not in _ONE_SHOT_COUNTERS}
    ).encode()


async def probe_state(
    monitor: MonitorConfig, timeout: float, max_line: int | None = None, host: Host | None = None
) -> VMState:
    """Poll ``monitor`` once now within ``timeout`` seconds, taking lines of at most
    ``max_line`` bytes (the config's ``qmp_max_line_bytes``; ``None``: its default) and reading
    its process through ``host``; the state it ends in. What the poller logs goes out at
    debug."""
    settings = PollSettings(interval=timeout, timeout=timeout, start_spread=0)
    if max_line is not None:
        settings = dataclasses.replace(settings, max_line=max_line)
    poller = MonitorPoller(monitor, settings, host=host, logger=PROBE_LOG)
    # One poll through the same code the fleet runs; in poll mode it closes its connection.
    try:
        await poller.poll_once(within=timeout)
    finally:
        await poller.stop()
    return poller.state


class ProbeEndpoint:
    """The ``/probe`` and ``/discovery`` handlers; ``monitors`` gives the configured and
    discovered monitors as they are now, ``config`` the running configuration, ``states``
    the fleet's latest published states by VM name, and ``on_failure`` hears the reason of
    every probe that failed or was refused (``qmp_exporter_probe_failures_total``); ``host``
    reads the host figures of a monitor probed live."""

    def __init__(
        self,
        config: Callable[[], Config],
        monitors: Callable[[], Iterable[MonitorConfig]],
        states: Callable[[], Mapping[str, VMState]] = dict,
        on_failure: Callable[[str], None] = lambda reason: None,
        limiter: ProbeLimiter | None = None,
        host: Host | None = None,
    ) -> None:
        self._config = config
        self._host = host
        self._monitors = monitors
        self._states = states
        self._on_failure = on_failure
        self._limiter = limiter or ProbeLimiter()
        self._slots = asyncio.Semaphore(MAX_CONCURRENT_PROBES)

    def _refuse(self, status: int, reason: str, retry_after: int, text: str) -> Response:
        self._on_failure(reason)
        log.debug("probe refused (%s): %s", reason, text)
        return text_response(status, text, {"Retry-After": str(retry_after)})

    async def handle_probe(self, request: Request) -> Response:
        """``GET /probe?target=ADDRESS``: 200 with the VM's metrics (``qemu_up 0`` when it
        cannot be reached), 400 with the reason for a bad or disallowed target, 429 (with
        ``Retry-After``) past the target's rate or concurrency limit, 503 when too many
        probes run at once."""
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
                "it matches no probe.allow glob (symlinks resolved)"
                if config.probe.allow
                else "without probe.allow only poll-mode monitors of the config or of "
                "discovery may be probed"
            )
            return text_response(400, f"target {address} is not allowed: {why}")
        known = watched_monitor(address, monitors)
        state = self._states().get(known.name) if known is not None else None
        if state is not None and known is not None and state.monitor.address != known.address:
            state = None  # the fleet has not caught up with a changed address yet
        live = state is None
        key = resolve(address)
        refused = self._limiter.admit(key, live=live)
        if refused is not None:
            reason, retry_after = refused
            return self._refuse(
                429, reason, retry_after, f"too many probes of {address}; retry later"
            )
        timeout = timeout_from(request.headers, config.timeout)
        if state is not None and known is not None:
            state = await self._first_poll(known.name, state, timeout)
            return Response(200, exposition_of(state), CONTENT_TYPE)
        try:
            return await self._live(address, key, known, timeout, config.qmp_max_line_bytes)
        finally:
            self._limiter.done(key)

    async def _first_poll(self, name: str, state: VMState, timeout: float) -> VMState:
        """``state``, or, when that VM has not been polled yet, its first polled state
        within ``timeout`` (the probe queues behind its poller)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not state.last_poll and loop.time() < deadline:
            await asyncio.sleep(FIRST_POLL_CHECK)
            state = self._states().get(name, state)
        return state

    async def _live(
        self,
        address: str,
        resolved: str,
        known: MonitorConfig | None,
        timeout: float,
        max_line: int,
    ) -> Response:
        """Connect to the monitor now (at the resolved path, as checked)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            async with asyncio.timeout(timeout):
                await self._slots.acquire()
        except TimeoutError:
            return self._refuse(503, "overloaded", 1, "too many probes at once; try again")
        try:
            monitor = MonitorConfig(
                name=known.name if known else address,
                address=resolved,
                mode="poll",
                labels=known.labels if known else (),
                collectors=known.collectors if known else None,
            )
            remaining = max(deadline - loop.time(), 0.01)
            state = await probe_state(monitor, remaining, max_line, self._host)
        finally:
            self._slots.release()
        if not state.up:
            self._on_failure(state.error_reason or "protocol")
            log.debug("probe of %s failed (%s): %s", address, state.error_reason, state.error)
        return Response(200, exposition_of(state), CONTENT_TYPE)

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
