"""The exporter-toolkit web config: strict parsing, basic auth, TLS contexts and reload."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import socket
import ssl
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import pytest

from qmp_exporter.web.ratelimit import PeerBuckets, TokenBucket
from qmp_exporter.web.webconfig import basic_auth
from qmp_exporter.web.webconfig.checker import BasicAuthChecker
from qmp_exporter.web.webconfig.settings import WebConfig, WebConfigError, load_web_config
from qmp_exporter.web.webconfig.watcher import WebConfigWatcher
from tests.helpers.tls_certs import PKI, make_pki

PASSWORD = b"s3cret pass"
# Cost 4 keeps the tests fast; the production cost (10+) only changes the time per check.
HASH = bcrypt.hashpw(PASSWORD, bcrypt.gensalt(4)).decode()
HASH_2Y = "$2y$" + HASH[4:]


def basic(user: str, password: bytes) -> str:
    return "Basic " + base64.b64encode(user.encode() + b":" + password).decode()


def granted(config: WebConfig, authorization_header: str | None) -> bool:
    """Whether ``config`` grants a request with this ``Authorization`` header, decided as the
    server's guard decides it: the attempt the config resolves, checked by the
    :class:`BasicAuthChecker` that serves (here without rate limits: these tests are about
    the answers, tests/test_auth_limits.py about the limits)."""
    if not config.requires_auth:
        return True
    checker = BasicAuthChecker(PeerBuckets(1e9, 1e9), TokenBucket(1e9, 1e9))
    attempt = config.basic_auth_attempt(authorization_header)
    try:
        verdict = asyncio.run(checker.check(attempt, config.auth_cache, "127.0.0.1:40000"))
    finally:
        checker.close()
    return verdict.granted


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return make_pki(tmp_path_factory.mktemp("pki"))


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def tls_yaml(pki: PKI, extra: str = "") -> str:
    return f"tls_server_config:\n  cert_file: {pki.server}\n  key_file: {pki.server_key}\n" + extra


# --- parsing -------------------------------------------------------------------------------


def test_empty_file_means_plain_http_without_auth(tmp_path: Path) -> None:
    config = load_web_config(write(tmp_path / "web.yml", ""))
    assert config.ssl_context() is None
    assert not config.requires_auth
    assert granted(config, None)


def test_every_error_is_reported_with_its_path(tmp_path: Path) -> None:
    text = """
tls_server_config:
  cert_file: missing.crt
  client_auth_type: Sometimes
  min_version: TLS10
  cipher_suites: [TLS_RSA_WITH_RC4_128_SHA]
  colour: blue
http_server_config:
  headers: {X-Frame-Options: allow, Server: me}
basic_auth_users:
  alice: plaintext
rate_limit: {interval: 1s, burst: 1}
extra: 1
"""
    with pytest.raises(WebConfigError) as caught:
        load_web_config(write(tmp_path / "web.yml", text))
    message = str(caught.value)
    for expected in (
        "tls_server_config.cert_file: " + str(tmp_path / "missing.crt") + ": no such file",
        "tls_server_config: missing one of key or key_file",
        "tls_server_config.client_auth_type: 'Sometimes' is not one of",
        "tls_server_config.min_version: TLS10 is not supported",
        "tls_server_config.cipher_suites[0]: unknown or unsupported cipher suite",
        "tls_server_config.colour: unknown key",
        "http_server_config.headers.X-Frame-Options: expected one of deny, sameorigin",
        "http_server_config.headers.Server: header can not be configured",
        "basic_auth_users.alice: expected a bcrypt hash",
        "rate_limit: not supported",
        "extra: unknown key",
    ):
        assert expected in message, (expected, message)
    assert str(tmp_path / "web.yml") in message


def test_relative_files_are_relative_to_the_config_file(tmp_path: Path, pki: PKI) -> None:
    text = (
        f"tls_server_config:\n  cert_file: {pki.server.name}\n  key_file: {pki.server_key.name}\n"
    )
    config = load_web_config(write(pki.directory / "web-relative.yml", text))
    assert config.tls is not None and config.tls.cert_file == str(pki.server)
    # The same file read from elsewhere finds nothing.
    with pytest.raises(WebConfigError, match="no such file"):
        load_web_config(write(tmp_path / "web.yml", text))


def test_duplicate_keys_and_bad_yaml_are_errors(tmp_path: Path) -> None:
    with pytest.raises(WebConfigError, match="duplicate key"):
        load_web_config(write(tmp_path / "a.yml", "basic_auth_users: {}\nbasic_auth_users: {}\n"))
    with pytest.raises(WebConfigError, match="not valid YAML"):
        load_web_config(write(tmp_path / "b.yml", "tls_server_config: [\n"))
    with pytest.raises(WebConfigError, match="cannot read"):
        load_web_config(tmp_path / "absent.yml")


@pytest.mark.parametrize(
    ("auth", "mode"),
    [
        ("NoClientCert", ssl.CERT_NONE),
        ("RequestClientCert", ssl.CERT_NONE),
        ("VerifyClientCertIfGiven", ssl.CERT_OPTIONAL),
        ("RequireAndVerifyClientCert", ssl.CERT_REQUIRED),
    ],
)
def test_client_auth_types_map_to_verify_modes(
    tmp_path: Path, pki: PKI, auth: str, mode: ssl.VerifyMode
) -> None:
    ca = f"  client_ca_file: {pki.ca}\n" if auth != "NoClientCert" else ""
    config = load_web_config(
        write(tmp_path / "web.yml", tls_yaml(pki, f"  client_auth_type: {auth}\n" + ca))
    )
    context = config.ssl_context()
    assert context is not None
    assert context.verify_mode == mode
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.maximum_version == ssl.TLSVersion.TLSv1_3


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("  client_auth_type: RequireAnyClientCert\n", "without verifying it"),
        ("  client_auth_type: RequireAndVerifyClientCert\n", "client_ca_file: required"),
        ("  client_ca_file: {ca}\n", "client CAs are configured without a client_auth_type"),
        ("  min_version: TLS13\n  max_version: TLS12\n", "min_version: is higher than max_version"),
        ("  curve_preferences: [X25519, CurveP256]\n", "takes a single curve"),
        ("  curve_preferences: [CurveP1000]\n", "unknown curve"),
        ("  client_allowed_sans: [a]\n", "requires client_auth_type RequireAndVerifyClientCert"),
        ("  prefer_server_cipher_suites: maybe\n", "expected true or false"),
    ],
)
def test_unsupported_tls_settings_are_refused_clearly(
    tmp_path: Path, pki: PKI, extra: str, message: str
) -> None:
    with pytest.raises(WebConfigError, match=message):
        load_web_config(write(tmp_path / "web.yml", tls_yaml(pki, extra.format(ca=pki.ca))))


def test_cipher_suites_curves_and_headers_are_applied(tmp_path: Path, pki: PKI) -> None:
    extra = (
        "  max_version: TLS12\n"
        "  cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, TLS_AES_128_GCM_SHA256]\n"
        "  curve_preferences: [CurveP384]\n"
        "http_server_config:\n"
        "  http2: false\n"
        "  headers: {X-Frame-Options: deny, X-Content-Type-Options: nosniff, "
        "Content-Security-Policy: \"default-src 'none'\", X-XSS-Protection: ''}\n"
    )
    config = load_web_config(write(tmp_path / "web.yml", tls_yaml(pki, extra)))
    context = config.ssl_context()
    assert context is not None
    tls12 = [c["name"] for c in context.get_ciphers() if c["protocol"] == "TLSv1.2"]
    assert tls12 == ["ECDHE-ECDSA-AES256-GCM-SHA384"]
    assert context.options & ssl.OP_CIPHER_SERVER_PREFERENCE
    assert dict(config.headers) == {
        "X-Frame-Options": "deny",
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "default-src 'none'",
    }
    assert config.http2 is False


def test_inline_cert_key_and_client_ca(tmp_path: Path, pki: PKI) -> None:
    def indent(path: Path) -> str:
        return "".join("    " + line + "\n" for line in path.read_text().splitlines())

    text = (
        "tls_server_config:\n  cert: |\n" + indent(pki.server)
        + "  key: |\n" + indent(pki.server_key)
        + "  client_ca: |\n" + indent(pki.ca)
        + "  client_auth_type: RequireAndVerifyClientCert\n"
    )  # fmt: skip
    config = load_web_config(write(tmp_path / "web.yml", text))
    context = config.ssl_context()
    assert context is not None and context.verify_mode == ssl.CERT_REQUIRED
    assert context.get_ca_certs()[0]["subject"] == ((("commonName", "qmp-exporter test ca"),),)


def test_a_key_that_does_not_match_the_cert_is_an_error(tmp_path: Path, pki: PKI) -> None:
    text = f"tls_server_config:\n  cert_file: {pki.server}\n  key_file: {pki.client_key}\n"
    with pytest.raises(WebConfigError, match="cannot load"):
        load_web_config(write(tmp_path / "web.yml", text))


# --- basic auth ----------------------------------------------------------------------------


def auth_config(tmp_path: Path, users: dict[str, str]) -> WebConfig:
    lines = "".join(f"  {user}: '{hashed}'\n" for user, hashed in users.items())
    return load_web_config(write(tmp_path / "web.yml", "basic_auth_users:\n" + lines))


def test_basic_auth_right_wrong_absent(tmp_path: Path) -> None:
    config = auth_config(tmp_path, {"prometheus": HASH, "grafana": HASH_2Y})
    assert config.requires_auth
    assert granted(config, basic("prometheus", PASSWORD))
    assert granted(config, basic("grafana", PASSWORD))  # $2y$ as htpasswd writes
    assert not granted(config, basic("prometheus", b"wrong"))
    assert not granted(config, basic("nobody", PASSWORD))
    assert not granted(config, None)
    assert not granted(config, "")
    assert not granted(config, "Bearer abc")
    assert not granted(config, "Basic !!!notbase64")
    assert not granted(config, "Basic " + base64.b64encode(b"nocolon").decode())
    assert granted(config, "basic  " + basic("prometheus", PASSWORD)[6:])


class CountingBcrypt:
    """The real bcrypt module, counting ``checkpw`` calls."""

    def __init__(self) -> None:
        self.calls = 0
        self.hashpw = bcrypt.hashpw
        self.gensalt = bcrypt.gensalt

    def checkpw(self, password: bytes, hashed: bytes) -> bool:
        self.calls += 1
        return bcrypt.checkpw(password, hashed)


def test_checks_are_cached_and_unknown_users_cost_a_bcrypt_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    counting = CountingBcrypt()
    monkeypatch.setattr(basic_auth, "import_bcrypt", lambda: counting)
    config = auth_config(tmp_path, {"prometheus": HASH})
    for _ in range(5):
        assert granted(config, basic("prometheus", PASSWORD))
    assert counting.calls == 1
    assert not granted(config, basic("mallory", PASSWORD))
    assert counting.calls == 2, "an unknown user must cost one bcrypt check too"
    assert not granted(config, basic("prometheus", b"guess"))
    assert counting.calls == 3
    # A different password for a cached user is checked again, never served from the cache.
    assert not granted(config, basic("prometheus", PASSWORD + b"x"))
    assert counting.calls == 4


def test_the_auth_cache_is_bounded(tmp_path: Path) -> None:
    config = auth_config(tmp_path, {"prometheus": HASH})
    for index in range(basic_auth.AUTH_CACHE_SIZE + 50):
        granted(config, basic("prometheus", str(index).encode()))
    assert len(config.auth_cache) == basic_auth.AUTH_CACHE_SIZE


def test_unknown_user_costs_about_as_much_as_a_known_one(tmp_path: Path) -> None:
    cost10 = bcrypt.hashpw(PASSWORD, bcrypt.gensalt(10)).decode()
    config = auth_config(tmp_path, {"prometheus": cost10})

    def seconds(user: str, attempt: int) -> float:
        start = time.perf_counter()
        granted(config, basic(user, b"wrong%d" % attempt))
        return time.perf_counter() - start

    known = min(seconds("prometheus", i) for i in range(3))
    unknown = min(seconds("nobody", i) for i in range(3))
    # Both pay a cost-10 bcrypt check (tens of ms); a skipped check would be ~1000x faster.
    assert unknown > known / 3, (known, unknown)


def test_missing_bcrypt_fails_at_load_with_the_install_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "bcrypt", None)  # makes `import bcrypt` fail
    with pytest.raises(WebConfigError, match=r"pip install qmp-exporter\[tls\]"):
        auth_config(tmp_path, {"prometheus": HASH})
    # Without users bcrypt is never needed.
    assert load_web_config(write(tmp_path / "plain.yml", "http_server_config: {}\n"))


def test_client_allowed_sans(tmp_path: Path, pki: PKI) -> None:
    extra = (
        f"  client_ca_file: {pki.ca}\n  client_auth_type: RequireAndVerifyClientCert\n"
        "  client_allowed_sans: [prometheus.test]\n"
    )
    config = load_web_config(write(tmp_path / "web.yml", tls_yaml(pki, extra)))
    assert config.client_cert_allowed({"subjectAltName": (("DNS", "prometheus.test"),)})
    assert not config.client_cert_allowed({"subjectAltName": (("DNS", "evil.test"),)})
    assert not config.client_cert_allowed(None)


# --- real TLS connections ------------------------------------------------------------------


class ThreadedTLSServer:
    """A one-line asyncio server on 127.0.0.1 in its own thread, for handshake tests."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = asyncio.run_coroutine_threadsafe(self._start(context), self.loop).result(10)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _start(self, context: ssl.SSLContext) -> asyncio.base_events.Server:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                await reader.readline()
                writer.write(b"ok\n")
                await writer.drain()
            except (ssl.SSLError, ConnectionError):
                pass
            finally:
                writer.close()

        return await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)

    def close(self) -> None:
        async def stop() -> None:
            self.server.close()
            await self.server.wait_closed()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def client_context(pki: PKI, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca))
    if cert is not None:
        context.load_cert_chain(cert, key)
    return context


def talk(port: int, context: ssl.SSLContext) -> tuple[str | None, bytes | None]:
    """(answer line or None if refused, DER of the server's certificate)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        try:
            with context.wrap_socket(raw, server_hostname="localhost") as tls:
                der = tls.getpeercert(binary_form=True)
                tls.sendall(b"hello\n")
                answer = tls.recv(100)
                return (answer.decode() if answer else None), der
        except (ssl.SSLError, ConnectionError):
            return None, None


@pytest.fixture
def serve() -> Iterator:
    servers: list[ThreadedTLSServer] = []

    def start(context: ssl.SSLContext) -> int:
        server = ThreadedTLSServer(context)
        servers.append(server)
        return server.port

    yield start
    for server in servers:
        server.close()


def der(path: Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(path.read_text())


@pytest.mark.parametrize(
    ("auth", "none", "good", "rogue"),
    [
        ("RequireAndVerifyClientCert", False, True, False),
        ("VerifyClientCertIfGiven", True, True, False),
        ("RequestClientCert", True, True, True),
        ("NoClientCert", True, True, True),
    ],
)
def test_client_cert_modes_over_real_tls(
    tmp_path: Path, pki: PKI, serve, auth: str, none: bool, good: bool, rogue: bool
) -> None:
    ca = f"  client_ca_file: {pki.ca}\n" if auth != "NoClientCert" else ""
    path = write(tmp_path / "web.yml", tls_yaml(pki, f"  client_auth_type: {auth}\n" + ca))
    port = serve(WebConfigWatcher(path).listening_context())
    outcomes = {
        "none": talk(port, client_context(pki))[0] == "ok\n",
        "good": talk(port, client_context(pki, pki.client, pki.client_key))[0] == "ok\n",
        "rogue": talk(port, client_context(pki, pki.rogue_client, pki.rogue_client_key))[0]
        == "ok\n",
    }
    assert outcomes == {"none": none, "good": good, "rogue": rogue}


def test_new_connections_see_a_new_certificate_on_disk(tmp_path: Path, pki: PKI, serve) -> None:
    cert = tmp_path / "server.crt"
    key = tmp_path / "server.key"
    cert.write_bytes(pki.server.read_bytes())
    key.write_bytes(pki.server_key.read_bytes())
    path = write(
        tmp_path / "web.yml", "tls_server_config: {cert_file: server.crt, key_file: server.key}\n"
    )
    clock = [0.0]
    watcher = WebConfigWatcher(path, clock=lambda: clock[0])
    port = serve(watcher.listening_context())
    assert talk(port, client_context(pki)) == ("ok\n", der(pki.server))

    # Rotate the cert as tools do: write new files and rename them into place.
    for source, target in ((pki.server2, cert), (pki.server2_key, key)):
        temporary = target.with_suffix(".new")
        temporary.write_bytes(source.read_bytes())
        os.replace(temporary, target)
    assert talk(port, client_context(pki)) == ("ok\n", der(pki.server)), "checked ≤ once per second"
    clock[0] += 1.5
    assert talk(port, client_context(pki)) == ("ok\n", der(pki.server2))


def test_a_broken_new_file_keeps_the_last_good_config(
    tmp_path: Path, pki: PKI, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(tmp_path / "web.yml", f"basic_auth_users: {{prometheus: '{HASH}'}}\n")
    clock = [0.0]
    watcher = WebConfigWatcher(path, clock=lambda: clock[0])
    good = watcher.current()

    write(path, "basic_auth_users: {prometheus: plaintext, other: x}\n")
    clock[0] += 1.0
    with caplog.at_level(logging.ERROR, logger="qmp_exporter.web.webconfig.watcher"):
        assert watcher.current() is good
        clock[0] += 1.0
        os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
        assert watcher.current() is good
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1, "the same error is logged once, not on every check"
    assert "basic_auth_users.prometheus" in errors[0].getMessage()
    assert "basic_auth_users.other" in errors[0].getMessage()

    hashed2 = bcrypt.hashpw(b"other", bcrypt.gensalt(4)).decode()
    write(path, f"basic_auth_users: {{prometheus: '{hashed2}'}}\n")
    clock[0] += 1.0
    new = watcher.current()
    assert new is not good
    assert granted(new, basic("prometheus", b"other"))
    assert not granted(new, basic("prometheus", PASSWORD))
    assert watcher.last_error is None


def test_changes_that_need_a_restart_are_refused(tmp_path: Path, pki: PKI) -> None:
    path = write(tmp_path / "web.yml", tls_yaml(pki))
    clock = [0.0]
    watcher = WebConfigWatcher(path, clock=lambda: clock[0])
    first = watcher.current()
    write(path, tls_yaml(pki, f"  client_ca_file: {pki.ca}\n"
                              "  client_auth_type: RequireAndVerifyClientCert\n"))  # fmt: skip
    clock[0] += 1.0
    assert watcher.current() is first
    assert "need a restart" in (watcher.last_error or "")
    write(path, "")
    clock[0] += 1.0
    assert watcher.current() is first
    assert "turning TLS on or off" in (watcher.last_error or "")


def test_the_watcher_fails_at_start_on_a_broken_file(tmp_path: Path) -> None:
    with pytest.raises(WebConfigError):
        WebConfigWatcher(write(tmp_path / "web.yml", "nope: 1\n"))
