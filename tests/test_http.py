"""The HTTP side: routes, methods, gzip, keep-alive, and bad requests that harm nothing."""

from __future__ import annotations

import concurrent.futures
import contextlib
import gzip
import http.server
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest
import requests

from tests.helpers.exporter import ExporterProcess, parse_samples, wait_for


@pytest.fixture(scope="module")
def exporter() -> Iterator[ExporterProcess]:
    with ExporterProcess({"poll_interval": "1s", "monitors": []}) as running:
        yield running


def raw_request(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


def test_metrics_has_own_metrics_and_says_no_monitors(exporter: ExporterProcess) -> None:
    response = exporter.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    samples = parse_samples(response.text)
    assert samples[("qmp_exporter_monitors", ())] == 0
    assert samples[("qmp_exporter_config_last_reload_successful", ())] == 1
    assert any(name == "qmp_exporter_build_info" for name, _ in samples)
    assert "no monitors configured" in exporter.log()


def test_gzip_when_asked(exporter: ExporterProcess) -> None:
    plain = exporter.get("/metrics", headers={"Accept-Encoding": "identity"})
    assert "Content-Encoding" not in plain.headers
    raw = requests.get(
        f"{exporter.url}/metrics", headers={"Accept-Encoding": "gzip"}, stream=True, timeout=5
    )
    assert raw.headers["Content-Encoding"] == "gzip"
    body = gzip.decompress(raw.raw.read())
    assert b"qmp_exporter_build_info" in body


def test_gzip_with_a_q_value_below_one(exporter: ExporterProcess) -> None:
    raw = requests.get(
        f"{exporter.url}/metrics",
        headers={"Accept-Encoding": "identity, gzip;q=0.5"},
        stream=True,
        timeout=5,
    )
    assert raw.headers["Content-Encoding"] == "gzip"
    assert b"qmp_exporter_build_info" in gzip.decompress(raw.raw.read())
    refused = exporter.get("/metrics", headers={"Accept-Encoding": "gzip;q=0, *"})
    assert "Content-Encoding" not in refused.headers
    assert "qmp_exporter_build_info" in refused.text


def test_landing_health_and_404(exporter: ExporterProcess) -> None:
    assert exporter.get("/").status_code == 200
    assert "text/html" in exporter.get("/").headers["Content-Type"]
    assert exporter.get("/-/healthy").text == "OK\n"
    assert exporter.get("/-/ready").status_code == 200
    missing = exporter.get("/metricsx")
    assert missing.status_code == 404
    assert exporter.get("/-/reload").status_code == 404  # lifecycle API not enabled


def test_wrong_method_is_405(exporter: ExporterProcess) -> None:
    response = requests.post(f"{exporter.url}/metrics", data=b"x", timeout=5)
    assert response.status_code == 405
    assert "GET" in response.headers["Allow"]


def test_head_has_no_body(exporter: ExporterProcess) -> None:
    response = requests.head(f"{exporter.url}/metrics", timeout=5)
    assert response.status_code == 200
    assert int(response.headers["Content-Length"]) > 0
    assert response.content == b""


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"NONSENSE\r\n\r\n", b"400"),
        (b"GET /metrics HTTP/9\r\n\r\n", b"400"),
        (b"GET /metrics HTTP/1.1\r\nbad header line\r\n\r\n", b"400"),
        (b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n", b"431"),
        (b"POST /metrics HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n", b"413"),
        (b"POST /metrics HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", b"411"),
        (b"GET /metrics HTTP/1.1\r\nContent-Length: -5\r\n\r\n", b"400"),
        # Issue 15 (report H5, H6: D5): no response and a traceback before.
        (
            b"GET /metrics?" + b"&".join(b"a%d" % i for i in range(33)) + b" HTTP/1.1\r\n\r\n",
            b"400",
        ),
        (b"POST /metrics HTTP/1.1\r\nContent-Length: \xb3\r\n\r\n", b"400"),
        (b"POST /metrics HTTP/1.1\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n", b"400"),
        (b"GET /metrics HTTP/1.1\r\nContent-Length: +3\r\n\r\n", b"400"),
        (b"GET metrics HTTP/1.1\r\n\r\n", b"400"),
        # H10 (D10): '//host/path' is a path of its own, never '/path' on 'host'.
        (b"GET //metrics HTTP/1.1\r\nConnection: close\r\n\r\n", b"404"),
        (b"GET //x/probe?target=unix:/tmp/x.qmp HTTP/1.1\r\nConnection: close\r\n\r\n", b"404"),
        (b"GET //x/-/healthy HTTP/1.1\r\nConnection: close\r\n\r\n", b"404"),
    ],
)
def test_bad_requests_get_4xx(
    exporter: ExporterProcess, request_bytes: bytes, status: bytes
) -> None:
    answer = raw_request(exporter.port, request_bytes)
    assert answer.split(b" ", 2)[1] == status, answer[:200]
    assert exporter.get("/metrics").status_code == 200  # and nothing else is harmed
    assert "Traceback" not in exporter.log()


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /metrics HTTP/1.0\n\n",  # printf '...\n\n' | nc
        b"GET /metrics HTTP/1.1\nHost: x\r\nConnection: close\n\r\n",  # mixed endings
        b"\r\n\nGET /metrics HTTP/1.0\r\n\r\n",  # empty lines before the request line
    ],
)
def test_bare_line_feeds_end_lines_too(exporter: ExporterProcess, request_bytes: bytes) -> None:
    answer = raw_request(exporter.port, request_bytes)
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
    assert b"\nqmp_exporter_build_info{" in answer


def test_a_head_of_many_short_lines_is_bounded(exporter: ExporterProcess) -> None:
    head = b"GET /metrics HTTP/1.1\r\n" + b"X: y\r\n" * 5000 + b"\r\n"
    assert raw_request(exporter.port, head).split(b" ", 2)[1] == b"431"


def test_a_double_slash_never_reaches_the_reload_endpoint() -> None:
    """Report H10 (D10): ``POST //evil.example/-/reload`` reloaded the config."""
    with ExporterProcess({"poll_interval": "1s", "monitors": []}, ["--web.enable-lifecycle"]) as e:
        for target in (b"//evil.example/-/reload", b"//-/reload"):
            answer = raw_request(
                e.port,
                b"POST " + target + b" HTTP/1.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            )
            assert answer.startswith(b"HTTP/1.1 404"), answer[:200]
        assert "reloaded" not in e.log()
        assert requests.post(f"{e.url}/-/reload", timeout=5).status_code == 200  # the real one


def test_the_landing_page_is_gzipped_when_asked(exporter: ExporterProcess) -> None:
    raw = requests.get(
        f"{exporter.url}/", headers={"Accept-Encoding": "gzip"}, stream=True, timeout=5
    )
    assert raw.headers["Content-Encoding"] == "gzip"
    assert b"qmp-exporter" in gzip.decompress(raw.raw.read())
    plain = exporter.get("/", headers={"Accept-Encoding": "identity"})
    assert "Content-Encoding" not in plain.headers and "<!doctype html>" in plain.text


def test_keep_alive_serves_several_requests_on_one_connection(exporter: ExporterProcess) -> None:
    request = b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n"
    with socket.create_connection(("127.0.0.1", exporter.port), timeout=5) as sock:
        for _ in range(3):
            sock.sendall(request)
            answer = b""
            while not answer.endswith(b"\r\n\r\nOK\n"):
                chunk = sock.recv(4096)
                assert chunk, answer
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 200 OK"), answer
            assert b"Connection: keep-alive" in answer


def test_a_silent_client_does_not_block_others(exporter: ExporterProcess) -> None:
    idle = [socket.create_connection(("127.0.0.1", exporter.port)) for _ in range(20)]
    half = socket.create_connection(("127.0.0.1", exporter.port))
    half.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # never finishes its headers
    try:
        started = time.monotonic()
        assert exporter.get("/metrics").status_code == 200
        assert time.monotonic() - started < 1.0
    finally:
        for sock in [*idle, half]:
            sock.close()


def test_concurrent_scrapes(exporter: ExporterProcess) -> None:
    def scrape(_: int) -> int:
        return requests.get(f"{exporter.url}/metrics", timeout=10).status_code

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        assert set(pool.map(scrape, range(64))) == {200}


@contextlib.contextmanager
def serve_once(body: bytes, headers: dict[str, str]) -> Iterator[str]:
    """A loopback HTTP server that answers every GET with ``body`` and ``headers``."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            for name, value in {**headers, "Content-Length": str(len(body))}.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/metrics"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_curl_reads_the_whole_gzip_exposition() -> None:
    """The gzip body is one stream (not several members, of which curl reads the first).

    The exporter's gzip body is captured once and served again, byte for byte, to curl: the
    demo's VMs change between two scrapes, so curl's reading is compared with Python's full
    decoding of the very same bytes."""
    curl = shutil.which("curl")
    assert curl, "curl is missing: run scripts/install-test-deps.sh"
    with ExporterProcess({"poll_interval": "1s", "monitors": []}, ["--demo"]) as demo:
        wait_for(lambda: demo.value("qemu_up", vm="demo-web-01") == 1)
        response = requests.get(
            f"{demo.url}/metrics", headers={"Accept-Encoding": "gzip"}, stream=True, timeout=10
        )
        assert response.headers["Content-Encoding"] == "gzip"
        body = response.raw.read(decode_content=False)
    whole = gzip.decompress(body).decode()  # Python reads every member
    assert "\nqmp_exporter_build_info{" in whole  # the last part, our own metrics
    with serve_once(body, {"Content-Encoding": "gzip"}) as url:
        compressed = subprocess.run(
            [curl, "-sf", "--compressed", url], capture_output=True, timeout=10, check=True
        ).stdout.decode()
    assert compressed == whole
    assert len(parse_samples(compressed)) > 20
