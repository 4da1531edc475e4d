"""The running exporter: config, fleet, HTTP endpoints, signals and reload."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, generate_latest

from qmp_exporter import DEFAULT_PORT, __version__
from qmp_exporter.alerting import AlertPusher
from qmp_exporter.coalesce import Coalescer
from qmp_exporter.config import (
    AlertingConfig,
    Config,
    ConfigError,
    MonitorConfig,
    load_config_if_changed,
)
from qmp_exporter.config.schema import shorten
from qmp_exporter.discovery import Discoverer, Scan
from qmp_exporter.exposition.render import FleetRenderer
from qmp_exporter.exposition.selfmetrics import SelfMetrics
from qmp_exporter.fdlimit import raise_fd_limit
from qmp_exporter.fleet.hub import Fleet
from qmp_exporter.host import Host
from qmp_exporter.polling.monitors import MonitorSource
from qmp_exporter.polling.poller import PollSettings
from qmp_exporter.qmp import Event
from qmp_exporter.textformat import CONTENT_TYPE
from qmp_exporter.web.http.server import HTTPServer, Request, Response, text_response
from qmp_exporter.web.landing import CONTENT_TYPE as LANDING_CONTENT_TYPE
from qmp_exporter.web.landing import (
    LANDING_HEADERS,
    LandingCache,
    ReloadStatus,
    render_landing_page,
)
from qmp_exporter.web.probe import ProbeEndpoint
from qmp_exporter.web.webconfig.guard import auth_failure_counter, make_guard, response_headers
from qmp_exporter.web.webconfig.watcher import WebConfigWatcher

log = logging.getLogger(__name__)

#: How often the exporter's own metrics (process, build, reload, Alertmanager push) are
#: sampled. They are rendered off the scrape path: counting a large process's open files
#: alone takes milliseconds.
OWN_METRICS_INTERVAL = 1.0
#: File descriptors kept free for HTTP clients, logs and the like.
FD_RESERVE = 64
#: A reload running longer than this, in seconds, makes ``/-/ready`` answer 503.
RELOAD_READY_LIMIT = 30.0
#: Seconds a stop waits for a reload in flight before it cancels it.
STOP_RELOAD_WAIT = 10.0


@dataclass(frozen=True, slots=True)
class Options:
    """How the exporter was started (from the command line)."""

    config_path: str | None = None
    listen_address: str = f":{DEFAULT_PORT}"
    web_config_path: str | None = None
    enable_lifecycle: bool = False


def parse_listen_address(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``:PORT`` or ``[IPV6]:PORT`` → (host, port); ``ValueError`` otherwise."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"{text!r}: expected HOST:PORT, :PORT or [IPV6]:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def watched_monitors(
    configured: Iterable[MonitorConfig],
    discovered: Iterable[MonitorConfig],
    extra: Iterable[MonitorConfig] = (),
) -> tuple[MonitorConfig, ...]:
    """The monitors to watch: configured, then discovered, then extra (the demo's), each
    name once; on a clash of names the first wins, so configured wins over discovered."""
    chosen: dict[str, MonitorConfig] = {}
    for monitor in (*configured, *discovered, *extra):
        chosen.setdefault(monitor.name, monitor)
    return tuple(chosen.values())


class Exporter:
    """Polls the configured monitors and serves what it learnt over HTTP."""

    def __init__(
        self,
        config: Config,
        options: Options,
        *,
        extra_monitors: tuple[MonitorConfig, ...] = (),
    ) -> None:
        self.config = config
        self.options = options
        self.extra_monitors = extra_monitors
        self.self_metrics = SelfMetrics()
        #: The host's processes, read by the host collector, discovery and live probes.
        self.host = Host()
        # Sources publish into the fleet; the first given its output wins a clash of names.
        self.fleet = Fleet()
        self.monitor_source = MonitorSource(
            self.fleet.source("qmp"),
            PollSettings.from_config(config),
            on_event=self._on_event,
            host=self.host,
        )
        self.renderer = FleetRenderer()
        self.fleet.subscribe(self.renderer)
        self.landing = LandingCache(self._render_landing)
        self._landing_status: ReloadStatus | None = None
        self.fleet.subscribe(self.landing)
        self.server = HTTPServer()
        # WebConfigError (a ConfigError) here when --web.config.file is unusable.
        self.web_config = (
            WebConfigWatcher(options.web_config_path) if options.web_config_path else None
        )
        if self.web_config is not None:
            failures = auth_failure_counter(self.self_metrics.registry)
            self.server.guard = make_guard(self.web_config, failures)
            self.server.response_headers = response_headers(self.web_config)
        self.event_listeners: list[Callable[[MonitorConfig, Event], None]] = []
        self.pusher: tuple[AlertPusher, CollectorRegistry] | None = self._make_pusher(
            config.alerting
        )
        self.reload_ok = True
        self.reload_time = time.time()
        self._reload_started: float | None = None  # monotonic, while a reload runs
        self._stopping = asyncio.Event()
        self._reload_lock = asyncio.Lock()
        # Reloads are coalesced: one in flight, one queued (a burst of SIGHUPs is two).
        self._reloads = Coalescer(self._reload_once)
        self._config_digest: str | None = None  # of the file last loaded by a reload
        #: The last scan discovery told of, and the part of one the fleet was last applied for.
        self._scan = Scan()
        self._applied: tuple[object, ...] | None = None
        self.discoverer = Discoverer(config, self.host)
        self.discoverer.subscribe(self.renderer)
        self.discoverer.subscribe(self.self_metrics.processes)
        self.discoverer.subscribe(self)
        # Probe-able: the configured and discovered monitors (not the demo's).
        # Watched ones are answered from the fleet's latest states.
        self.probes = ProbeEndpoint(
            lambda: self.config,
            lambda: watched_monitors(self.config.monitors, self._scan.monitors),
            states=lambda: self.fleet.states,
            on_failure=self.self_metrics.probe_failures.count,
            host=self.host,
        )
        self._discovery_task: asyncio.Task[None] | None = None
        self._own_metrics_task: asyncio.Task[None] | None = None
        self._own_metrics = b""
        self._add_routes()

    @staticmethod
    def _make_pusher(alerting: AlertingConfig) -> tuple[AlertPusher, CollectorRegistry] | None:
        """An Alertmanager pusher with its own registry (so a reload can replace it)."""
        if not alerting.alertmanagers:
            return None
        registry = CollectorRegistry(auto_describe=True)
        return AlertPusher(alerting, registry), registry

    async def _replace_pusher(self, alerting: AlertingConfig) -> None:
        old, self.pusher = self.pusher, self._make_pusher(alerting)
        if self.pusher is not None:
            self.pusher[0].start()
        if old is not None:
            await asyncio.to_thread(old[0].close)

    def monitors(self) -> tuple[MonitorConfig, ...]:
        """Every monitor to watch now: see :func:`watched_monitors`."""
        return watched_monitors(self.config.monitors, self._scan.monitors, self.extra_monitors)

    def scanned(self, scan: Scan) -> None:
        """Discovery found something new: the monitors to watch follow it at the next
        apply, the landing page (which lists the QEMU processes) at once."""
        self._scan = scan
        self.landing.invalidate()

    async def _apply_monitors(self, settings: PollSettings | None = None) -> None:
        """Make the fleet watch :meth:`monitors` (call with the reload lock held)."""
        self._applied = (self._scan.monitors, self._scan.processes)
        await self.monitor_source.apply(self.monitors(), settings)
        self.self_metrics.monitors.set(len(self.monitor_source))

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Start polling and listening."""
        monitors = self.monitors()
        limit = raise_fd_limit(len(monitors) + FD_RESERVE)
        self.host.limit_held_files((limit - len(monitors) - FD_RESERVE) // 2)
        if len(monitors) + FD_RESERVE > limit:
            log.warning(
                "open-files limit %d is too low for %d monitors: raise LimitNOFILE",
                limit,
                len(monitors),
            )
        if not monitors:
            log.info("no monitors configured: serving only the exporter's own metrics")
        self.self_metrics.reload_successful.set(1)
        self.self_metrics.reload_success_time.set(self.reload_time)
        if self.pusher is not None:
            self.pusher[0].start()
        async with self._reload_lock:
            await self._apply_monitors()
        self._discovery_task = asyncio.create_task(self._follow_discovery(), name="discovery")
        await self._sample_own_metrics()
        self._own_metrics_task = asyncio.create_task(self._own_metrics_loop(), name="own metrics")
        host, port = parse_listen_address(self.options.listen_address)
        ssl_context = self.web_config.listening_context() if self.web_config else None
        await self.server.start(host, port, ssl_context)
        log.info(
            "listening on %s, watching %d monitor(s) every %gs",
            ", ".join(f"{h}:{p}" for h, p in self.server.addresses),
            len(monitors),
            self.config.poll_interval,
        )

    async def stop(self) -> None:
        await self.server.close()
        try:  # a reload in flight finishes first, unless it is stuck (a scan of a hung /proc)
            async with asyncio.timeout(STOP_RELOAD_WAIT):
                await self._reloads.wait()
        except TimeoutError:
            log.warning("stopping while a reload still runs after %gs: cancelled", STOP_RELOAD_WAIT)
            self._reloads.cancel()  # and the closed monitor source starts nothing for it
        for task in (self._discovery_task, self._own_metrics_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.monitor_source.close()
        if self.pusher is not None:
            await asyncio.to_thread(self.pusher[0].close)

    def not_ready(self) -> str | None:
        """Why ``/-/ready`` answers 503 (a poller outlived its stop deadline and still runs,
        or a reload has run longer than :data:`RELOAD_READY_LIMIT`); None when ready."""
        detached = self.monitor_source.detached
        if detached:
            return f"{detached} poller(s) outlived their stop deadline and still run (see the log)"
        started = self._reload_started
        if started is not None and time.monotonic() - started > RELOAD_READY_LIMIT:
            return f"a reload has run for {time.monotonic() - started:.0f}s"
        return None

    async def _sample_own_metrics(self) -> None:
        """Render the exporter's own metrics (in a thread: reading /proc can take a while)."""
        self.self_metrics.ready.set(self.not_ready() is None)
        pusher = self.pusher

        def render() -> bytes:
            own = self.self_metrics.render()
            return own + generate_latest(pusher[1]) if pusher is not None else own

        self._own_metrics = await asyncio.to_thread(render)

    async def _own_metrics_loop(self) -> None:
        while True:
            await asyncio.sleep(OWN_METRICS_INTERVAL)
            try:
                await self._sample_own_metrics()
            except Exception:  # never let a sampling failure stop the loop
                log.exception("sampling the exporter's own metrics failed")

    async def _follow_discovery(self) -> None:
        """Apply the monitors whenever a rescan changed what discovery finds (the monitors,
        or the QEMU processes the exporter's own metrics list); the renderer and the own
        metrics hear every scan from the discoverer itself."""
        async for scan in self.discoverer.changes():
            if (scan.monitors, scan.processes) == self._applied:
                continue
            try:
                async with self._reload_lock:
                    await self._apply_monitors()
                await self._sample_own_metrics()
            except Exception:  # never let one scan end discovery: the next may apply
                log.exception("discovery: applying a scan failed")

    async def run(self) -> None:
        """Start, then serve until SIGTERM or SIGINT; SIGHUP reloads the config."""
        loop = asyncio.get_running_loop()
        await self.start()
        loop.add_signal_handler(signal.SIGTERM, self._stopping.set)
        loop.add_signal_handler(signal.SIGINT, self._stopping.set)
        loop.add_signal_handler(signal.SIGHUP, self._reloads.request)
        try:
            await self._stopping.wait()
            log.info("shutting down")
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            await self.stop()

    async def reload(self) -> bool:
        """Re-read the config file; keep the running config when the new one is invalid.
        Coalesced with other reloads asked for meanwhile (see :class:`Coalescer`); True
        when the reload that covers this request succeeded."""
        return await asyncio.shield(self._reloads.request())

    async def _reload_once(self) -> bool:
        """One reload; any failure sets the reload gauge to 0 and logs one line."""
        self._reload_started = time.monotonic()
        try:
            return await self._reload()
        except Exception as err:  # whatever went wrong, the running config is kept
            self._reload_failed(f"{type(err).__name__}: {shorten(str(err))}")
            log.debug("reload failed", exc_info=True)
            return False
        finally:
            self._reload_started = None
            with contextlib.suppress(Exception):
                await self._sample_own_metrics()  # the reload gauges show at once

    def _reload_failed(self, why: str) -> None:
        self.reload_ok = False
        self.self_metrics.reload_successful.set(0)
        log.error("reload failed, keeping the running config: %s", why)

    async def _reload(self) -> bool:
        path = self.options.config_path
        if path is None:
            log.info("reload: no --config.file; nothing to reload")
            return True
        try:
            # Read and validate off the loop (a large file takes seconds of CPU), and only
            # when the file changed since the last good reload.
            digest, loaded = await asyncio.to_thread(
                load_config_if_changed, path, self._config_digest
            )
        except ConfigError as err:
            self._reload_failed(err.one_line())
            return False
        config = self.config if loaded is None else loaded
        # The scan (a thread reading /proc, unbounded) runs before the lock is taken: the
        # lock is held only on bounded waits (the pusher's close, the pollers' stops).
        self.discoverer.update_config(config)
        await self.discoverer.rescan()  # tells this exporter, as every scan does
        async with self._reload_lock:
            if config.alerting != self.config.alerting:
                await self._replace_pusher(config.alerting)
            self.config = config
            await self._apply_monitors(PollSettings.from_config(config))
            self._config_digest = digest
            self.reload_ok = True
            self.reload_time = time.time()
            self.self_metrics.reload_successful.set(1)
            self.self_metrics.reload_success_time.set(self.reload_time)
            log.info(
                "reloaded %s%s: %d monitor(s)",
                path,
                " (unchanged)" if loaded is None else "",
                len(self.monitor_source),
            )
            return True

    def _on_event(self, monitor: MonitorConfig, event: Event) -> None:
        if self.pusher is not None:
            self.pusher[0].notify(monitor, event)
        for listener in self.event_listeners:
            listener(monitor, event)

    # -- HTTP --------------------------------------------------------------------------------

    def _add_routes(self) -> None:
        self.server.route("/metrics", self._metrics)
        self.server.route("/", self._landing)
        self.server.route("/-/healthy", self._healthy)
        self.server.route("/-/ready", self._ready)
        self.server.route("/probe", self.probes.handle_probe)
        self.server.route("/discovery", self.probes.handle_discovery)
        if self.options.enable_lifecycle:
            self.server.route("/-/reload", self._reload_endpoint, methods=("POST", "PUT"))

    async def _metrics(self, request: Request) -> Response:
        own = self._own_metrics
        headers = {"Vary": "Accept-Encoding"}
        if request.accepts_gzip():
            # One gzip stream; each family is compressed once per change of its text.
            body = self.renderer.gzip_chunks(own)
            headers["Content-Encoding"] = "gzip"
        else:
            body = [*self.renderer.chunks(), own]
        return Response(200, body, CONTENT_TYPE, headers)

    async def _healthy(self, request: Request) -> Response:
        return text_response(200, "OK")

    async def _ready(self, request: Request) -> Response:
        why = self.not_ready()
        return text_response(200, "OK") if why is None else text_response(503, why)

    async def _reload_endpoint(self, request: Request) -> Response:
        if await self.reload():
            return text_response(200, "config reloaded")
        return text_response(500, "reload failed; the running config is kept (see the log)")

    def _reload_status(self) -> ReloadStatus:
        return ReloadStatus(self.options.config_path, self.reload_ok, self.reload_time)

    async def _landing(self, request: Request) -> Response:
        status = self._reload_status()
        if status != self._landing_status:
            self._landing_status = status
            self.landing.invalidate()
        headers = {**LANDING_HEADERS, "Vary": "Accept-Encoding"}
        gzipped = request.accepts_gzip()
        if gzipped:
            headers["Content-Encoding"] = "gzip"
        return Response(200, self.landing.page(gzipped), LANDING_CONTENT_TYPE, headers)

    def _render_landing(self) -> bytes:
        return render_landing_page(
            self.fleet.states.values(),
            self._landing_status or self._reload_status(),
            version=__version__,
            poll_interval=self.config.poll_interval,
            processes=self._scan.processes or (),
        )
