"""TLS and basic auth through the real exporter (``--web.config.file``), over real TLS."""

from __future__ import annotations

import os
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import pytest
import requests

from tests.helpers.exporter import ExporterProcess, ExporterStartError
from tests.helpers.tls_certs import PKI, make_pki

PASSWORD = "correct horse"
HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def exporters() -> Iterator:
    started: list[ExporterProcess] = []

    def start(web_config: Path, *extra: str) -> ExporterProcess:
        process = ExporterProcess(
            None, ["--web.config.file", str(web_config), *extra], log_level="info"
        )
        started.append(process)
        return process.start()

    yield start
    for process in started:
        process.stop()


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "qmp-exporter.yml"
    path.write_text("poll_interval: 1s\ntimeout: 500ms\nmonitors: []\n")
    return path


def tls_section(pki: PKI, extra: str = "") -> str:
    return f"tls_server_config:\n  cert_file: {pki.server}\n  key_file: {pki.server_key}\n" + extra


def write(path: Path, text: str) -> Path:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(text)
    os.replace(temporary, path)
    return path


def status(url: str, timeout: float = 5, **kwargs) -> int | str:
    try:
        return requests.get(url, timeout=timeout, **kwargs).status_code
    except requests.exceptions.SSLError:
        return "tls-refused"
    except requests.exceptions.ConnectionError:
        return "connection-refused"


def test_basic_auth_over_tls_right_wrong_absent(
    tmp_path: Path, pki: PKI, exporters, config_file: Path
) -> None:
    web = write(
        tmp_path / "web.yml",
        tls_section(pki)
        + f"basic_auth_users:\n  prometheus: '{HASH}'\n"
        + "http_server_config:\n"
        + "  headers: {X-Frame-Options: deny, X-Content-Type-Options: nosniff}\n",
    )
    exporter = exporters(web, "--config.file", str(config_file))
    url = exporter.endpoint(scheme="https")
    ca = str(pki.ca)
    right = requests.get(url, verify=ca, auth=("prometheus", PASSWORD), timeout=5)
    assert right.status_code == 200
    assert "qmp_exporter_" in right.text
    assert right.headers["X-Frame-Options"] == "deny"
    assert right.headers["X-Content-Type-Options"] == "nosniff"
    wrong = requests.get(url, verify=ca, auth=("prometheus", "wrong"), timeout=5)
    assert wrong.status_code == 401
    assert wrong.headers["WWW-Authenticate"] == "Basic"
    assert "qmp_exporter_" not in wrong.text
    assert status(url, verify=ca, auth=("stranger", PASSWORD)) == 401
    assert status(url, verify=ca) == 401
    # Every path is guarded, not only /metrics.
    assert status(exporter.endpoint("/-/healthy", "https"), verify=ca) == 401
    # Plain HTTP to the TLS port gets no page.
    assert status(exporter.endpoint()) != 200
    # A client that does not trust our CA refuses the server.
    assert status(url, auth=("prometheus", PASSWORD)) == "tls-refused"


def test_basic_auth_without_tls(tmp_path: Path, exporters, config_file: Path) -> None:
    web = write(tmp_path / "web.yml", f"basic_auth_users:\n  prometheus: '{HASH}'\n")
    exporter = exporters(web, "--config.file", str(config_file))
    assert status(exporter.endpoint(), auth=("prometheus", PASSWORD)) == 200
    assert status(exporter.endpoint(), auth=("prometheus", "nope")) == 401
    assert status(exporter.endpoint()) == 401


@pytest.mark.parametrize(
    ("auth", "expected"),
    [
        (
            "RequireAndVerifyClientCert",
            {"none": "refused", "good": 200, "rogue": "refused"},
        ),
        ("VerifyClientCertIfGiven", {"none": 200, "good": 200, "rogue": "refused"}),
        ("RequestClientCert", {"none": 200, "good": 200, "rogue": 200}),
    ],
)
def test_client_certificate_modes(
    tmp_path: Path, pki: PKI, exporters, config_file: Path, auth: str, expected: dict
) -> None:
    web = write(
        tmp_path / "web.yml",
        tls_section(pki, f"  client_auth_type: {auth}\n  client_ca_file: {pki.ca}\n"),
    )
    exporter = exporters(web, "--config.file", str(config_file))
    url = exporter.endpoint(scheme="https")
    ca = str(pki.ca)

    def outcome(cert: tuple[str, str] | None) -> int | str:
        result = status(url, verify=ca, cert=cert)
        return "refused" if isinstance(result, str) else result

    got = {
        "none": outcome(None),
        "good": outcome((str(pki.client), str(pki.client_key))),
        "rogue": outcome((str(pki.rogue_client), str(pki.rogue_client_key))),
    }
    assert got == expected


def test_client_allowed_sans(tmp_path: Path, pki: PKI, exporters, config_file: Path) -> None:
    base = f"  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {pki.ca}\n"
    client = (str(pki.client), str(pki.client_key))
    ca = str(pki.ca)
    allowed = write(
        tmp_path / "allowed.yml",
        tls_section(pki, base + "  client_allowed_sans: [prometheus.test]\n"),
    )
    other = write(
        tmp_path / "other.yml", tls_section(pki, base + "  client_allowed_sans: [other.test]\n")
    )
    first = exporters(allowed, "--config.file", str(config_file))
    second = exporters(other, "--config.file", str(config_file))
    assert status(first.endpoint(scheme="https"), verify=ca, cert=client) == 200
    assert status(second.endpoint(scheme="https"), verify=ca, cert=client) == 403


def server_cert_der(port: int, pki: PKI) -> bytes:
    context = ssl.create_default_context(cafile=str(pki.ca))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        return der


def der(path: Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(path.read_text())


def test_web_config_file_is_reread_when_it_changes(
    tmp_path: Path, pki: PKI, exporters, config_file: Path
) -> None:
    cert, key = tmp_path / "server.crt", tmp_path / "server.key"
    cert.write_bytes(pki.server.read_bytes())
    key.write_bytes(pki.server_key.read_bytes())
    tls = "tls_server_config: {cert_file: server.crt, key_file: server.key}\n"
    web = write(tmp_path / "web.yml", tls + f"basic_auth_users: {{prometheus: '{HASH}'}}\n")
    exporter = exporters(web, "--config.file", str(config_file))
    url = exporter.endpoint(scheme="https")
    ca = str(pki.ca)
    assert status(url, verify=ca, auth=("prometheus", PASSWORD)) == 200
    assert server_cert_der(exporter.port, pki) == der(pki.server)

    # New password and a new certificate on disk: picked up without a restart or signal.
    new_hash = bcrypt.hashpw(b"new password", bcrypt.gensalt(4)).decode()
    write(web, tls + f"basic_auth_users: {{prometheus: '{new_hash}'}}\n")
    write(cert, pki.server2.read_text())
    write(key, pki.server2_key.read_text())
    deadline = time.monotonic() + 5
    while status(url, verify=ca, auth=("prometheus", "new password")) != 200:
        assert time.monotonic() < deadline, exporter.log()
        time.sleep(0.2)
    assert status(url, verify=ca, auth=("prometheus", PASSWORD)) == 401
    assert server_cert_der(exporter.port, pki) == der(pki.server2)

    # A broken file keeps the last good one in force and says why in the log.
    mark = len(exporter.log_lines())
    write(web, tls + "basic_auth_users: {prometheus: not-a-hash}\n")
    time.sleep(1.2)
    assert status(url, verify=ca, auth=("prometheus", "new password")) == 200
    line = exporter.wait_for_log(
        r"web config not reloaded.*basic_auth_users\.prometheus", start=mark
    )
    assert "level=ERROR" in line


def test_unusable_web_config_stops_the_start(tmp_path: Path, config_file: Path) -> None:
    web = write(tmp_path / "web.yml", "tls_server_config: {cert_file: nope.crt}\n")
    with pytest.raises(ExporterStartError) as caught:
        ExporterProcess(
            None,
            ["--web.config.file", str(web), "--config.file", str(config_file)],
            log_level="info",
        ).start()
    message = str(caught.value)
    assert "tls_server_config.cert_file" in message
    assert "missing one of key or key_file" in message


@pytest.mark.load
def test_a_bcrypt_check_does_not_stall_other_requests(
    tmp_path: Path, exporters, config_file: Path
) -> None:
    slow_hash = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(13)).decode()  # ~0.6 s a check
    web = write(tmp_path / "web.yml", f"basic_auth_users: {{prometheus: '{slow_hash}'}}\n")
    exporter = exporters(web, "--config.file", str(config_file))
    url = exporter.endpoint()
    assert status(url, auth=("prometheus", PASSWORD), timeout=20) == 200  # now cached
    stop = threading.Event()

    def guess() -> None:
        attempt = 0
        while not stop.is_set():
            attempt += 1
            status(url, auth=("prometheus", f"guess{attempt}"), timeout=20)

    guessers = [threading.Thread(target=guess) for _ in range(2)]
    for thread in guessers:
        thread.start()
    try:
        time.sleep(0.3)
        latencies = []
        for _ in range(5):
            start = time.monotonic()
            assert status(url, auth=("prometheus", PASSWORD), timeout=20) == 200
            latencies.append(time.monotonic() - start)
    finally:
        stop.set()
        for thread in guessers:
            thread.join(30)
    # Uncached checks take ~0.6 s each, one at a time; a cached scrape must not wait for them.
    assert sorted(latencies)[len(latencies) // 2] < 0.3, latencies
