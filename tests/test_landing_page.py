"""The landing page at ``/``: rendered by the real exporter for real QEMUs, checked in a real
headless Chromium (DOM and screenshot), and its escaping checked directly.

``QMPX_UPDATE_SCREENSHOTS=1 pytest tests/test_landing_page.py`` refreshes
docs/screenshots/landing.png from the browser run.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import struct
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
import requests

from qmp_exporter.config import MonitorConfig
from qmp_exporter.fleet.state import Identity, VMState, VncState
from qmp_exporter.web.landing import ReloadStatus, render_landing_page
from tests.helpers.exporter import ExporterProcess, wait_for
from tests.helpers.rfb import rfb_handshake

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOT = ROOT / "docs" / "screenshots" / "landing.png"
#: A monitor name that would break the page if anything were not escaped.
NASTY = "<b>lab</b> & \"quoted\" 'vm'"


class Rows(HTMLParser):
    """Collects the VM table's rows: ``{data-vm: [cell text, ...]}``, plus every tag seen."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, list[str]] = {}
        self.tags: list[str] = []
        self._row: str | None = None
        self._cells: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag == "tr" and dict(attrs).get("data-vm") is not None:
            self._row = dict(attrs)["data-vm"]
            self._cells = []
        elif tag == "td" and self._row is not None:
            self._cells.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "tr" and self._row is not None:
            self.rows[self._row] = [" ".join(c.split()) for c in self._cells]
            self._row = None

    def handle_data(self, data: str) -> None:
        if self._row is not None and self._cells:
            self._cells[-1] += data + " "


def parse_rows(page: str) -> Rows:
    parser = Rows()
    parser.feed(page)
    return parser


# -- the page itself ------------------------------------------------------------------------


def test_everything_shown_is_escaped():
    state = VMState(
        MonitorConfig(NASTY, "unix:/run/<x>&.qmp", "poll"),
        up=False,
        identity=Identity(version="7.2.22", name="<script>alert(1)</script>"),
        error_reason="connect",
        error="<img src=x onerror=alert(1)> & more",
        last_poll=1000.0,
    )
    page = render_landing_page(
        [state],
        ReloadStatus("/etc/<conf>.yml", ok=False, loaded_at=900.0),
        version="1.0<",
        now=1010.0,
    ).decode()
    parsed = parse_rows(page)
    assert "script" not in parsed.tags and "img" not in parsed.tags and "b" in parsed.tags
    assert list(parsed.rows) == [NASTY]  # the attribute round-trips exactly
    name_cell, state_cell, _, _, poll_cell, error_cell = parsed.rows[NASTY]
    assert name_cell.startswith(NASTY)
    assert "<script>alert(1)</script>" in name_cell and "unix:/run/<x>&.qmp" in name_cell
    assert state_cell == "down"
    assert poll_cell.startswith("10s ago")
    assert error_cell == "connect : <img src=x onerror=alert(1)> & more"
    assert "&lt;conf&gt;" in page and "failed" in page


def test_states_vnc_and_empty_fleet():
    running = VMState(
        MonitorConfig("web", "unix:/a", "persistent"),
        up=True,
        status="running",
        running=True,
        identity=Identity(version="7.2.22", name="web"),
        vnc=VncState(True, host="::1", service="5901", clients=2),
        last_poll=100.0,
        last_success=100.0,
    )
    page = render_landing_page(
        [running, VMState(MonitorConfig("new", "unix:/b", "poll"))],
        ReloadStatus(None, ok=True, loaded_at=0.0),
        poll_interval=15.0,
        now=400.0,
    ).decode()
    rows = parse_rows(page).rows
    assert list(rows) == ["new", "web"]
    assert rows["web"][1:5] == ["running", "7.2.22", "2 clients [::1]:5901", "5m ago 0 ms"]
    assert rows["new"][1] == "waiting" and rows["new"][4] == "never"
    assert 'http-equiv="refresh" content="15"' in page
    empty = render_landing_page([], ReloadStatus("/c.yml", True, 0.0), now=1.0).decode()
    assert "No monitors configured." in empty


# -- in a real browser ------------------------------------------------------------------------


def chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        raise RuntimeError("chromium not found: run scripts/install-test-deps.sh")
    return path


def browse(tmp_path: Path, url: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    """Run headless Chromium once (its own profile directory, no network besides ``url``)."""
    profile = tmp_path / f"chromium-profile-{len(list(tmp_path.iterdir()))}"
    argv = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-proxy-server",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        *args,
        url,
    ]
    env = {**os.environ, "HOME": str(tmp_path)}
    result = subprocess.run(argv, capture_output=True, timeout=90, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-2000:]
    return result


def png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", header[16:24])


@pytest.fixture
def fleet(qemu_factory, tmp_path):
    web = qemu_factory(name="web-frontend", vnc=True)
    db = qemu_factory(name="db-primary", vnc=True)
    build = qemu_factory(name="build-runner", paused=True)
    lab = qemu_factory(name="lab")
    gone = tmp_path / "legacy.qmp"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(gone))
    listener.close()  # a socket file nobody listens on: connection refused
    return {"web": web, "db": db, "build": build, "lab": lab, "gone": gone}


@pytest.mark.qemu
def test_landing_page_in_headless_chromium(fleet, tmp_path, qemu_binary):
    config = {
        "poll_interval": "500ms",
        "timeout": "400ms",
        "monitors": [
            {"name": "web-frontend", "address": fleet["web"].qmp_address()},
            {"name": "db-primary", "address": fleet["db"].qmp_address(), "mode": "poll"},
            {"name": "build-runner", "address": fleet["build"].qmp_address()},
            {"name": NASTY, "address": fleet["lab"].qmp_address()},
            {"name": "legacy-vm", "address": f"unix:{fleet['gone']}", "mode": "poll"},
        ],
    }
    with (
        ExporterProcess(config) as exporter,
        rfb_handshake(fleet["web"].vnc_port),
        rfb_handshake(fleet["web"].vnc_port),
        rfb_handshake(fleet["db"].vnc_port),
    ):

        def settled() -> bool:
            rows = parse_rows(requests.get(f"{exporter.url}/", timeout=5).text).rows
            return (
                len(rows) == 5
                and rows["web-frontend"][3].startswith("2 clients")
                and rows["db-primary"][3].startswith("1 client")
                and rows["legacy-vm"][1] == "down"
            )

        wait_for(settled, timeout=20)
        response = requests.get(f"{exporter.url}/", timeout=5)
        assert response.headers["Content-Type"] == "text/html; charset=utf-8"
        assert "default-src 'none'" in response.headers["Content-Security-Policy"]

        dom = browse(tmp_path, f"{exporter.url}/", "--dump-dom").stdout.decode()
        shot = tmp_path / "landing.png"
        browse(tmp_path, f"{exporter.url}/", f"--screenshot={shot}", "--window-size=1200,800")

    parsed = parse_rows(dom)
    rows = parsed.rows
    assert sorted(rows) == sorted(m["name"] for m in config["monitors"])
    assert "script" not in parsed.tags
    web = rows["web-frontend"]
    assert web[0].startswith("web-frontend")
    assert web[1] == "running" and re.fullmatch(rf"{re.escape(qemu_binary.version)}\.\d+", web[2])
    assert web[3].startswith("2 clients 127.0.0.1:")
    assert rows["db-primary"][3].startswith("1 client 127.0.0.1:")
    assert rows["build-runner"][1] == "prelaunch" and rows["build-runner"][3] == "off"
    assert rows[NASTY][0].startswith(NASTY) and rows[NASTY][1] == "running"
    assert rows["legacy-vm"][1] == "down" and "connection refused" in rows["legacy-vm"][5]
    assert rows["web-frontend"][4].endswith(" ms") and "ago" in rows["web-frontend"][4]
    assert 'href="/metrics"' in dom and "Config" in dom

    assert png_size(shot) == (1200, 800)
    assert shot.stat().st_size > 20_000  # a rendered page, not a blank frame
    if os.environ.get("QMPX_UPDATE_SCREENSHOTS") == "1":
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, SCREENSHOT)
