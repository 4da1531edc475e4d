"""The landing page at ``/``: every VM's latest published state in one table, plain HTML
and inline CSS.

Everything shown is escaped (VM names, errors and addresses may hold ``<``, ``&``, quotes);
the page loads nothing from anywhere (see :data:`LANDING_HEADERS`). :class:`LandingCache`
keeps the rendered page (and its gzip) until the fleet changes.
"""

from __future__ import annotations

import gzip
import html
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from qmp_exporter.discovery import ProcessRow
from qmp_exporter.fleet.state import VMState

#: What to add to a QEMU the process scan found but cannot watch, by problem.
RECIPES = {
    "no_monitor": "start it with -qmp unix:/run/qemu/{vm}.qmp,server=on,wait=off",
    "owned_by_libvirt": (
        "libvirt holds its monitor: add a second -qmp unix:/run/qemu/{vm}.qmp,server=on,"
        "wait=off through &lt;qemu:commandline&gt; in the domain XML"
    ),
    "name_clash": "its name is taken by another monitor: give one of them another name",
    "not_visible": (
        "its socket is hidden from the exporter (the service's PrivateTmp/ProtectHome): "
        "put the socket under /run"
    ),
    "foreign_socket": "something else than this QEMU listens where its command line says",
    "not_loopback": "its TCP monitor is not on loopback: use a unix socket",
    "bad_command_line": "its command line could not be read as QEMU's",
}
RECIPE_DOC = "docs/configuration.md, “Every QEMU on the host”"

CONTENT_TYPE = "text/html; charset=utf-8"
#: The page needs nothing but its own inline style: forbid everything else.
LANDING_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}
#: The page reloads itself at the poll interval, but not more often than this.
MIN_REFRESH_SECONDS = 5
#: Run states shown in green, amber or blue; anything else (and "down") is red.
_STATE_CLASS = {
    "running": "ok",
    "paused": "warn",
    "suspended": "warn",
    "prelaunch": "info",
    "inmigrate": "info",
    "postmigrate": "info",
    "finish-migrate": "info",
    "save-vm": "info",
    "restore-vm": "info",
    "debug": "warn",
}


@dataclass(frozen=True, slots=True)
class ReloadStatus:
    """Where the config came from and how the last (re)load went."""

    config_path: str | None
    ok: bool
    #: Wall-clock time of the last successful load.
    loaded_at: float


_STYLE = """
:root{--fg:#1d2330;--muted:#667085;--bg:#f6f7f9;--card:#fff;--line:#e4e7ec;
--ok:#067647;--okbg:#dcfae6;--warn:#93370d;--warnbg:#fef0c7;--bad:#b42318;--badbg:#fee4e2;
--info:#175cd3;--infobg:#d1e9ff;--link:#175cd3}
@media (prefers-color-scheme:dark){:root{--fg:#e6e8ec;--muted:#98a2b3;--bg:#0f1217;
--card:#161b22;--line:#2a313c;--okbg:#0b3b24;--ok:#75e0a7;--warnbg:#4e2f09;--warn:#fec84b;
--badbg:#55160c;--bad:#fda29b;--infobg:#102a56;--info:#84caff;--link:#84caff}}
*{box-sizing:border-box}
body{margin:0;padding:24px 32px;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,
sans-serif;color:var(--fg);background:var(--bg)}
header{display:flex;align-items:baseline;gap:16px;flex-wrap:wrap;margin-bottom:16px}
h1{font-size:22px;margin:0}
h1 small{font-weight:400;color:var(--muted);font-size:13px;margin-left:6px}
nav a{margin-right:14px;color:var(--link);text-decoration:none;font-weight:500}
nav a:hover{text-decoration:underline}
.cards{display:flex;gap:12px;flex-wrap:wrap;margin-bottom:16px}
.card{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:10px 16px}
.card b{display:block;font-size:20px}
.card span{color:var(--muted);font-size:12px;text-transform:uppercase;letter-spacing:.04em}
.reload{margin-bottom:16px;padding:10px 16px;border-radius:8px;border:1px solid var(--line);
background:var(--card)}
.reload.failed{border-color:var(--bad);background:var(--badbg);color:var(--bad)}
table{width:100%;border-collapse:collapse;background:var(--card);border:1px solid var(--line);
border-radius:8px;overflow:hidden}
th,td{text-align:left;padding:8px 12px;border-bottom:1px solid var(--line);vertical-align:top}
th{white-space:nowrap;font-size:12px;text-transform:uppercase;letter-spacing:.04em;color:var(--muted);
background:var(--bg)}
tbody tr:last-child td{border-bottom:0}
tbody tr:hover{background:var(--bg)}
.name{font-weight:600}
.sub{display:block;color:var(--muted);font-size:12px;font-family:ui-monospace,Menlo,monospace;
word-break:break-all}
.badge{display:inline-block;padding:1px 8px;border-radius:999px;font-size:12px;font-weight:600}
.ok{color:var(--ok);background:var(--okbg)}.warn{color:var(--warn);background:var(--warnbg)}
.bad{color:var(--bad);background:var(--badbg)}.info{color:var(--info);background:var(--infobg)}
.num{font-variant-numeric:tabular-nums}
.nowrap,.nowrap .sub{white-space:nowrap;word-break:normal}
tr.down td:first-child{box-shadow:inset 3px 0 var(--bad)}
.error{color:var(--bad);max-width:36em;word-break:break-word}
.muted{color:var(--muted)}
footer{margin-top:16px;color:var(--muted);font-size:12px}
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _age(then: float, now: float) -> str:
    """``12s ago``, ``3m ago``, ``2h ago``, ``4d ago``."""
    seconds = max(0.0, now - then)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit} ago"
    return f"{int(seconds)}s ago"


def _timestamp(when: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(when))


def _state_cell(state: VMState) -> str:
    if not state.up:
        if state.last_poll == 0:
            return '<span class="badge muted">waiting</span>'
        return '<span class="badge bad">down</span>'
    status = state.status or ("running" if state.running else "unknown")
    return f'<span class="badge {_STATE_CLASS.get(status, "bad")}">{_e(status)}</span>'


def _vnc_cell(state: VMState) -> str:
    vnc = state.vnc
    if vnc is None:
        return '<span class="muted">–</span>'
    if not vnc.enabled:
        return '<span class="muted">off</span>'
    host = f"[{vnc.host}]" if ":" in vnc.host else vnc.host
    clients = "1 client" if vnc.clients == 1 else f"{vnc.clients} clients"
    address = f"{host}:{vnc.service}"
    return f'<span class="num">{_e(clients)}</span><span class="sub">{_e(address)}</span>'


def _poll_cell(state: VMState, now: float) -> str:
    if state.last_poll == 0:
        return '<span class="muted">never</span>'
    stamp = _timestamp(state.last_poll)
    return (
        f'<span class="num" title="{_e(stamp)}">{_e(_age(state.last_poll, now))}</span>'
        f'<span class="sub">{state.poll_duration * 1000:.0f} ms</span>'
    )


def _row(state: VMState, now: float) -> str:
    monitor = state.monitor
    identity = state.identity
    version = identity.version if identity and identity.version else ""
    guest_name = identity.name if identity and identity.name else ""
    name_sub = f"{guest_name} · " if guest_name and guest_name != monitor.name else ""
    error = ""
    if state.error:
        reason = f"<b>{_e(state.error_reason)}</b>: " if state.error_reason else ""
        error = f"{reason}{_e(state.error)}"
    row_class = ' class="down"' if state.last_poll and not state.up else ""
    return (
        f'<tr data-vm="{_e(monitor.name)}"{row_class}>'
        f'<td><span class="name">{_e(monitor.name)}</span>'
        f'<span class="sub">{_e(name_sub)}{_e(monitor.address)} ({_e(monitor.mode)})</span></td>'
        f"<td>{_state_cell(state)}</td>"
        f'<td class="num">{_e(version) if version else "<span class=muted>–</span>"}</td>'
        f'<td class="nowrap">{_vnc_cell(state)}</td>'
        f'<td class="nowrap">{_poll_cell(state, now)}</td>'
        f'<td class="error">{error}</td>'
        "</tr>"
    )


def _reload_box(status: ReloadStatus, now: float) -> str:
    if status.config_path is None:
        return (
            '<div class="reload">No <code>--config.file</code>: watching the built-in demo '
            "VMs.</div>"
        )
    loaded = f"loaded {_e(_timestamp(status.loaded_at))} ({_e(_age(status.loaded_at, now))})"
    if status.ok:
        return f'<div class="reload">Config <code>{_e(status.config_path)}</code> {loaded}.</div>'
    return (
        f'<div class="reload failed"><b>The last reload of <code>{_e(status.config_path)}'
        f"</code> failed</b>: the configuration {loaded} is still in use (see the log).</div>"
    )


def render_landing_page(
    vms: Iterable[VMState],
    reload_status: ReloadStatus,
    *,
    version: str = "",
    poll_interval: float | None = None,
    now: float | None = None,
    processes: Iterable[ProcessRow] = (),
) -> bytes:
    """The whole page as UTF-8 bytes, from each VM's published state; rows sorted by VM name.
    ``processes``: the QEMU processes of the last process scan; the unwatched get a row
    saying what to add."""
    now = time.time() if now is None else now
    rows = sorted(vms, key=lambda vm: vm.name)
    up = sum(1 for vm in rows if vm.up)
    down = sum(1 for vm in rows if not vm.up and vm.last_poll)
    clients = sum(vm.vnc.clients for vm in rows if vm.up and vm.vnc)
    refresh = ""
    if poll_interval:
        seconds = max(MIN_REFRESH_SECONDS, round(poll_interval))
        refresh = f'<meta http-equiv="refresh" content="{seconds}">'
    body_rows = "".join(_row(vm, now) for vm in rows)
    if not rows:
        body_rows = '<tr><td colspan="6" class="muted">No monitors configured.</td></tr>'
    page = (
        "<!doctype html>"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f'{refresh}<link rel="icon" href="data:,">'
        f"<title>qmp-exporter · {len(rows)} VMs</title><style>{_STYLE}</style></head><body>"
        f"<header><h1>qmp-exporter<small>{_e(version)}</small></h1><nav>"
        '<a href="/metrics">Metrics</a><a href="/-/healthy">Health</a></nav></header>'
        '<div class="cards">'
        f'<div class="card"><b class="num">{len(rows)}</b><span>VMs</span></div>'
        f'<div class="card"><b class="num" style="color:var(--ok)">{up}</b><span>up</span></div>'
        f'<div class="card"><b class="num" style="color:var(--bad)">{down}</b>'
        "<span>down</span></div>"
        f'<div class="card"><b class="num">{clients}</b><span>VNC clients</span></div>'
        "</div>"
        f"{_reload_box(reload_status, now)}"
        '<table id="vms"><thead><tr><th>VM</th><th>State</th><th>QEMU</th><th>VNC</th>'
        "<th>Last poll</th><th>Error</th></tr></thead>"
        f"<tbody>{body_rows}</tbody></table>"
        f"{_unwatched(processes)}"
        f"<footer>Rendered {_e(_timestamp(now))}. Data comes from the latest background poll of "
        "each VM; a page view sends nothing to any VM.</footer>"
        "</body></html>"
    )
    return page.encode("utf-8", "replace")  # never a 500 for one bad character


class LandingCache:
    """The rendered landing page (and its gzip), rebuilt only after the fleet changed.

    A fleet listener: any change marks the page stale. A stale page is rebuilt at the
    next request, but not sooner than :attr:`min_age` seconds after the last build, nor
    sooner than ten times the last build's duration after it (a 0.3 s render at 10,000 VMs
    then takes at most a tenth of the loop however often ``/`` is requested).
    """

    def __init__(
        self,
        render: Callable[[], bytes],
        *,
        min_age: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._render = render
        self._clock = clock
        self.min_age = min_age
        self._stale = True
        self._built_at = -math.inf
        self._build_seconds = 0.0
        self._plain = b""
        self._gzipped: bytes | None = None
        #: Builds so far (each one rendered the page once).
        self.builds = 0

    def added(self, name: str, state: VMState) -> None:
        """A VM joined: the page is stale."""
        self._stale = True

    def removed(self, name: str) -> None:
        """A VM left: the page is stale."""
        self._stale = True

    def changed(self, name: str, state: VMState, timing_only: bool) -> None:
        """A VM was polled or changed: the page is stale."""
        self._stale = True

    def invalidate(self) -> None:
        """Something else shown changed (the reload status): rebuild at the next request."""
        self._stale = True
        self._built_at = -math.inf

    def page(self, gzipped: bool) -> bytes:
        """The page, plain or gzipped (the gzip made once per build, when first asked)."""
        now = self._clock()
        wait = max(self.min_age, 10 * self._build_seconds)
        if self._stale and now - self._built_at >= wait:
            started = time.perf_counter()
            self._plain = self._render()
            self._gzipped = None
            self._build_seconds = time.perf_counter() - started
            self._built_at = now
            self._stale = False
            self.builds += 1
        if not gzipped:
            return self._plain
        if self._gzipped is None:
            self._gzipped = gzip.compress(self._plain, compresslevel=6, mtime=0)
        return self._gzipped


def _unwatched(processes: Iterable[ProcessRow]) -> str:
    """A table of the QEMU processes found but not watched, with what to add (or nothing)."""
    rows = sorted((p for p in processes if not p.watched), key=lambda p: (p.vm, p.pid))
    if not rows:
        return ""
    body = "".join(
        f"<tr><td>{_e(p.vm)}</td><td>{p.pid}</td><td>{_e(p.problem)}</td>"
        f"<td>{RECIPES.get(p.problem, '').format(vm=_e(p.vm))}</td></tr>"
        for p in rows
    )
    return (
        f'<h2>QEMU processes not watched ({len(rows)})</h2><table id="unwatched"><thead><tr>'
        "<th>VM</th><th>PID</th><th>Problem</th><th>What to add</th></tr></thead>"
        f'<tbody>{body}</tbody></table><p class="muted">Recipe: {_e(RECIPE_DOC)}.</p>'
    )
