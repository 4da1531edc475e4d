"""A fake Alertmanager on 127.0.0.1 for the push's faults: slow, failing, huge or trickled
answers (a fault injector, not Alertmanager: for the API itself the tests use the real one).

    with FakeAlertmanager(delay=0.05) as am:         # accepts every POST after 50 ms
        pusher = AlertPusher(AlertingConfig((am.url,)), registry)
        ...
        am.alerts                                      # every alert accepted, in order

``mode``:

* ``"ok"``: 200 after ``delay`` seconds, the alerts recorded;
* ``"huge"``: 500 with a body of ``size`` bytes, written lazily in 64 KiB chunks (never held in
  memory) until the client goes; ``bytes_written`` says how far it got;
* ``"trickle_body"``: 500 headers at once, then one body byte every ``delay`` seconds;
* ``"trickle_headers"``: the status line and headers one byte every ``delay`` seconds.

Trickles stop after ``max_trickle`` bytes, or when the client has gone, or at :meth:`close`.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import threading
from typing import Any

CHUNK = b"x" * 65536


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        fake = self.server.fake
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        fake.posts += 1
        with contextlib.suppress(OSError):
            getattr(self, f"_{fake.mode}")(fake, body)

    def _ok(self, fake: FakeAlertmanager, body: bytes) -> None:
        if fake.closed.wait(fake.delay):
            return
        with fake.lock:
            fake.alerts.extend(json.loads(body))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _huge(self, fake: FakeAlertmanager, body: bytes) -> None:
        self.send_response(500)
        self.send_header("Content-Length", str(fake.size))
        self.end_headers()
        for _ in range(fake.size // len(CHUNK)):
            self.wfile.write(CHUNK)
            fake.bytes_written += len(CHUNK)
        self.close_connection = True

    def _trickle_body(self, fake: FakeAlertmanager, body: bytes) -> None:
        self.send_response(500)
        self.send_header("Content-Length", "1000000")
        self.end_headers()
        self.wfile.flush()
        self._trickle(fake, b"x" * fake.max_trickle)

    def _trickle_headers(self, fake: FakeAlertmanager, body: bytes) -> None:
        self._trickle(fake, b"HTTP/1.1 500 Slow\r\nContent-Length: 0\r\n\r\n")

    def _trickle(self, fake: FakeAlertmanager, data: bytes) -> None:
        for byte in data[: fake.max_trickle]:
            self.wfile.write(bytes([byte]))
            self.wfile.flush()
            fake.bytes_written += 1
            if fake.closed.wait(fake.delay):
                break
        self.close_connection = True


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeAlertmanager


class FakeAlertmanager:
    """A fake Alertmanager serving from a thread; see the module docstring."""

    def __init__(
        self, mode: str = "ok", *, delay: float = 0.0, size: int = 0, max_trickle: int = 30
    ) -> None:
        self.mode, self.delay, self.size, self.max_trickle = mode, delay, size, max_trickle
        self.alerts: list[dict[str, Any]] = []
        self.posts = 0
        self.bytes_written = 0
        self.lock = threading.Lock()
        self.closed = threading.Event()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.fake = self
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )

    def received(self, vm: str) -> list[dict[str, Any]]:
        """The alerts accepted for ``vm``."""
        with self.lock:
            return [a for a in self.alerts if a["labels"].get("vm") == vm]

    def events(self, vm: str, event: str) -> int:
        """How many events of ``vm`` the accepted alerts stand for (coalesced ones count all)."""
        return sum(
            int(a["annotations"].get("events", 1))
            for a in self.received(vm)
            if a["labels"].get("event") == event
        )

    def __enter__(self) -> FakeAlertmanager:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self.closed.set()
        self._server.shutdown()
        self._server.server_close()
