"""The exporter-toolkit web config file (``--web.config.file``): TLS and basic auth.

Reads the same YAML as Go exporters built on prometheus/exporter-toolkit::

    tls_server_config:
      cert_file: server.crt          # or inline PEM: cert: ...
      key_file: server.key           # or inline PEM: key: ...
      client_auth_type: RequireAndVerifyClientCert
      client_ca_file: ca.crt         # or inline PEM: client_ca: ...
      client_allowed_sans: [prometheus.example.org]
      min_version: TLS12
      max_version: TLS13
      cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256]
      prefer_server_cipher_suites: true
      curve_preferences: [X25519]
    http_server_config:
      http2: false                   # accepted; this server speaks HTTP/1.1 only
      headers: {X-Frame-Options: deny}
    basic_auth_users:
      prometheus: $2y$10$...         # bcrypt hashes

Relative file names are relative to the web config file's directory, as in the toolkit.
Unknown keys are errors, and every error is reported at once with its path.

What Python's ``ssl`` module cannot do is refused with a message rather than approximated:
``RequireAnyClientCert`` (accept any certificate without verifying it), TLS 1.0/1.1,
``rate_limit``, and more than one entry in ``curve_preferences``.

bcrypt is an optional dependency (``pip install qmp-exporter[tls]``), imported only when
``basic_auth_users`` is configured.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import logging
import os
import re
import ssl
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

from qmp_exporter.config import ConfigError
from qmp_exporter.config.schema import Errors, StrictLoader, kind, mapping
from qmp_exporter.web.server import Request, Response, text_response

log = logging.getLogger(__name__)

#: The toolkit's ``client_auth_type`` values mapped to Python's ``verify_mode``.
#: ``RequestClientCert`` asks for a certificate but never checks it: Python's ssl cannot ask
#: without verifying, and since an unchecked certificate grants nothing, it maps to CERT_NONE.
CLIENT_AUTH_TYPES: dict[str, ssl.VerifyMode] = {
    "NoClientCert": ssl.CERT_NONE,
    "RequestClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
_UNSUPPORTED_CLIENT_AUTH = {
    "RequireAnyClientCert": "accepts any client certificate without verifying it, which "
    "Python's ssl module cannot do; use RequireAndVerifyClientCert with client_ca_file",
}
_UNSUPPORTED_CLIENT_AUTH["RequireClientCert"] = _UNSUPPORTED_CLIENT_AUTH["RequireAnyClientCert"]

TLS_VERSIONS: dict[str, ssl.TLSVersion] = {
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
_OLD_TLS_VERSIONS = ("TLS10", "TLS11")

#: Go's names of the TLS 1.2 suites in ``tls.CipherSuites()`` mapped to OpenSSL's names.
CIPHER_SUITES: dict[str, str] = {
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
}
#: TLS 1.3 suites: accepted and, as in Go, not configurable (always enabled).
TLS13_CIPHER_SUITES = frozenset(
    {"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"}
)
CURVES: dict[str, str] = {
    "CurveP256": "prime256v1",
    "CurveP384": "secp384r1",
    "CurveP521": "secp521r1",
    "X25519": "X25519",
}
#: Response headers the toolkit lets a config set, with their allowed values (None: any).
EXTRA_HEADERS: dict[str, tuple[str, ...] | None] = {
    "Strict-Transport-Security": None,
    "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-XSS-Protection": None,
    "Content-Security-Policy": None,
}
_BCRYPT_HASH = re.compile(r"^\$2[abxy]?\$\d\d\$[./A-Za-z0-9]{53}$")
#: How many successful or failed credential checks are remembered (the toolkit keeps 100).
AUTH_CACHE_SIZE = 100
_INSTALL_HINT = "bcrypt is not installed: pip install qmp-exporter[tls]"
_TLS_KEYS = {
    "cert", "key", "client_ca", "cert_file", "key_file", "client_auth_type",
    "client_ca_file", "client_allowed_sans", "min_version", "max_version", "cipher_suites",
    "prefer_server_cipher_suites", "curve_preferences",
}  # fmt: skip


class WebConfigError(ConfigError):
    """A web config file that cannot be used; ``errors`` lists every problem with its path."""


def _import_bcrypt() -> ModuleType:
    """Import bcrypt on first need; ImportError with the install hint when it is missing."""
    try:
        import bcrypt
    except ImportError as err:
        raise ImportError(_INSTALL_HINT) from err
    return bcrypt


@dataclass(frozen=True, slots=True)
class TLSSettings:
    """The ``tls_server_config`` section, file names already made absolute."""

    cert_file: str | None = None
    key_file: str | None = None
    cert: str | None = None
    key: str | None = None
    client_ca_file: str | None = None
    client_ca: str | None = None
    client_auth_type: str = "NoClientCert"
    client_allowed_sans: tuple[str, ...] = ()
    min_version: str = "TLS12"
    max_version: str = "TLS13"
    cipher_suites: tuple[str, ...] = ()
    prefer_server_cipher_suites: bool = True
    curve_preferences: tuple[str, ...] = ()

    @property
    def files(self) -> tuple[str, ...]:
        """The files this section reads (watched for changes)."""
        return tuple(f for f in (self.cert_file, self.key_file, self.client_ca_file) if f)

    @property
    def handshake_policy(self) -> tuple[Any, ...]:
        """What OpenSSL fixes per connection before a context switch: needs a restart."""
        return (
            self.client_auth_type,
            self.min_version,
            self.max_version,
            self.cipher_suites,
            self.prefer_server_cipher_suites,
            self.curve_preferences,
        )


class _AuthCache:
    """A bounded, thread-safe map of credential digests to the result of their bcrypt check."""

    def __init__(self, size: int = AUTH_CACHE_SIZE) -> None:
        self._size = size
        self._items: OrderedDict[bytes, bool] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, digest: bytes) -> bool | None:
        with self._lock:
            result = self._items.get(digest)
            if result is not None:
                self._items.move_to_end(digest)
            return result

    def put(self, digest: bytes, result: bool) -> None:
        with self._lock:
            self._items[digest] = result
            self._items.move_to_end(digest)
            while len(self._items) > self._size:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


#: One bcrypt computation at a time, as in the toolkit: a flood of wrong passwords costs one core.
_BCRYPT_LOCK = threading.Lock()


@dataclass(frozen=True, slots=True)
class WebConfig:
    """A validated web config: TLS settings, basic auth users and extra response headers."""

    source: str = ""
    tls: TLSSettings | None = None
    basic_auth_users: tuple[tuple[str, str], ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    http2: bool = True
    _context: ssl.SSLContext | None = field(default=None, compare=False, repr=False)
    _cache: _AuthCache = field(default_factory=_AuthCache, compare=False, repr=False)
    _decoy_hash: bytes = field(default=b"", compare=False, repr=False)

    @property
    def tls_enabled(self) -> bool:
        return self.tls is not None

    @property
    def requires_auth(self) -> bool:
        """Whether requests must carry valid basic auth credentials."""
        return bool(self.basic_auth_users)

    @property
    def files(self) -> tuple[str, ...]:
        """Every file this config was built from (the YAML first)."""
        own = (self.source,) if self.source else ()
        return own + (self.tls.files if self.tls else ())

    def ssl_context(self) -> ssl.SSLContext | None:
        """The server-side SSL context, or None when TLS is not configured."""
        return self._context

    def check_basic_auth(self, authorization_header: str | None) -> bool:
        """Whether the ``Authorization`` header grants access (always True without users).

        Costs one bcrypt check per new credential (cached after that); an unknown user costs
        the same check against a decoy hash, so timing does not reveal which users exist.
        """
        if not self.basic_auth_users:
            return True
        credentials = _parse_basic(authorization_header)
        if credentials is None:
            return False
        user, password = credentials
        stored = dict(self.basic_auth_users).get(user)
        hashed = stored.encode() if stored is not None else self._decoy_hash
        digest = hashlib.sha256(
            b"\0".join((user.encode("utf-8", "surrogateescape"), hashed, password))
        ).digest()
        cached = self._cache.get(digest)
        if cached is not None:
            return cached and stored is not None
        bcrypt = _import_bcrypt()
        with _BCRYPT_LOCK:
            try:
                ok = bool(bcrypt.checkpw(password, hashed))
            except ValueError:
                ok = False
        ok = ok and stored is not None
        self._cache.put(digest, ok)
        return ok

    def client_cert_allowed(self, peercert: Mapping[str, Any] | None) -> bool:
        """Whether a verified client certificate (``getpeercert()``) has an allowed SAN."""
        if self.tls is None or not self.tls.client_allowed_sans:
            return True
        if not peercert:
            return False
        names = [value for _, value in peercert.get("subjectAltName", ())]
        allowed = self.tls.client_allowed_sans
        return any(hmac.compare_digest(n.encode(), a.encode()) for n in names for a in allowed)


def _parse_basic(header: str | None) -> tuple[str, bytes] | None:
    """``Basic base64(user:password)`` → (user, password bytes); None if malformed."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic" or not token:
        return None
    try:
        raw = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, sep, password = raw.partition(b":")
    if not sep:
        return None
    return user.decode("utf-8", "surrogateescape"), password


def _string(raw: dict[str, Any], key: str, path: str, errors: Errors) -> str | None:
    value = raw.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        errors.add(f"{path}.{key}", f"expected a string, got {kind(value)}")
        return None
    return value


def _string_list(raw: dict[str, Any], key: str, path: str, errors: Errors) -> tuple[str, ...]:
    value = raw.get(key)
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        errors.add(f"{path}.{key}", f"expected a list of strings, got {value!r}")
        return ()
    return tuple(value)


def _file(raw: dict[str, Any], key: str, base: Path, errors: Errors) -> str | None:
    name = _string(raw, key, "tls_server_config", errors)
    if name is None:
        return None
    path = Path(name) if os.path.isabs(name) else base / name
    if not path.is_file():
        errors.add(f"tls_server_config.{key}", f"{path}: no such file")
        return None
    return str(path)


def _tls(value: Any, base: Path, errors: Errors) -> TLSSettings | None:
    raw = mapping(value, "tls_server_config", errors, _TLS_KEYS)
    if not any(raw.get(k) for k in raw):
        return None
    p = "tls_server_config"
    start = len(errors.items)
    cert_file = _file(raw, "cert_file", base, errors)
    key_file = _file(raw, "key_file", base, errors)
    ca_file = _file(raw, "client_ca_file", base, errors)
    cert = _string(raw, "cert", p, errors)
    key = _string(raw, "key", p, errors)
    client_ca = _string(raw, "client_ca", p, errors)
    for file_key, inline_key in (("cert_file", "cert"), ("key_file", "key"),
                                 ("client_ca_file", "client_ca")):  # fmt: skip
        if raw.get(file_key) and raw.get(inline_key):
            errors.add(f"{p}.{inline_key}", f"give either {inline_key} or {file_key}, not both")
    if not raw.get("cert_file") and not cert:
        errors.add(p, "missing one of cert or cert_file")
    if not raw.get("key_file") and not key:
        errors.add(p, "missing one of key or key_file")

    auth = _string(raw, "client_auth_type", p, errors) or "NoClientCert"
    if auth in _UNSUPPORTED_CLIENT_AUTH:
        errors.add(f"{p}.client_auth_type", f"{auth} {_UNSUPPORTED_CLIENT_AUTH[auth]}")
    elif auth not in CLIENT_AUTH_TYPES:
        errors.add(
            f"{p}.client_auth_type",
            f"{auth!r} is not one of {', '.join(CLIENT_AUTH_TYPES)}",
        )
    has_ca = bool(raw.get("client_ca_file") or client_ca)
    if has_ca and auth == "NoClientCert":
        errors.add(p, "client CAs are configured without a client_auth_type")
    if CLIENT_AUTH_TYPES.get(auth, ssl.CERT_NONE) != ssl.CERT_NONE and not has_ca:
        errors.add(f"{p}.client_ca_file", f"required with client_auth_type {auth}")
    sans = _string_list(raw, "client_allowed_sans", p, errors)
    if sans and auth != "RequireAndVerifyClientCert":
        errors.add(
            f"{p}.client_allowed_sans", "requires client_auth_type RequireAndVerifyClientCert"
        )

    versions = {}
    for key_name, default in (("min_version", "TLS12"), ("max_version", "TLS13")):
        version = _string(raw, key_name, p, errors) or default
        if version in _OLD_TLS_VERSIONS:
            errors.add(f"{p}.{key_name}", f"{version} is not supported: use TLS12 or TLS13")
        elif version not in TLS_VERSIONS:
            errors.add(f"{p}.{key_name}", f"unknown TLS version {version!r} (TLS12, TLS13)")
        versions[key_name] = version
    if (
        versions["min_version"] in TLS_VERSIONS
        and versions["max_version"] in TLS_VERSIONS
        and TLS_VERSIONS[versions["min_version"]] > TLS_VERSIONS[versions["max_version"]]
    ):
        errors.add(f"{p}.min_version", "is higher than max_version")

    ciphers = _string_list(raw, "cipher_suites", p, errors)
    for index, name in enumerate(ciphers):
        if name not in CIPHER_SUITES and name not in TLS13_CIPHER_SUITES:
            errors.add(
                f"{p}.cipher_suites[{index}]",
                f"unknown or unsupported cipher suite {name!r} "
                f"(supported: {', '.join(CIPHER_SUITES)})",
            )
    prefer = raw.get("prefer_server_cipher_suites", True)
    if not isinstance(prefer, bool):
        errors.add(f"{p}.prefer_server_cipher_suites", f"expected true or false, got {prefer!r}")
        prefer = True
    curves = _string_list(raw, "curve_preferences", p, errors)
    for index, name in enumerate(curves):
        if name not in CURVES:
            errors.add(
                f"{p}.curve_preferences[{index}]",
                f"unknown curve {name!r} ({', '.join(CURVES)})",
            )
    if len(curves) > 1:
        errors.add(
            f"{p}.curve_preferences",
            "Python's ssl module takes a single curve: give one entry",
        )
    if len(errors.items) > start:
        return None
    return TLSSettings(
        cert_file=cert_file,
        key_file=key_file,
        cert=cert,
        key=key,
        client_ca_file=ca_file,
        client_ca=client_ca,
        client_auth_type=auth,
        client_allowed_sans=sans,
        min_version=versions["min_version"],
        max_version=versions["max_version"],
        cipher_suites=ciphers,
        prefer_server_cipher_suites=prefer,
        curve_preferences=curves,
    )


def _http(value: Any, errors: Errors) -> tuple[bool, tuple[tuple[str, str], ...]]:
    raw = mapping(value, "http_server_config", errors, {"http2", "headers"})
    http2 = raw.get("http2", True)
    if not isinstance(http2, bool):
        errors.add("http_server_config.http2", f"expected true or false, got {http2!r}")
        http2 = True
    headers = raw.get("headers") or {}
    if not isinstance(headers, Mapping):
        errors.add("http_server_config.headers", f"expected a mapping, got {kind(headers)}")
        return http2, ()
    result = []
    for name, header_value in headers.items():
        path = f"http_server_config.headers.{name}"
        if name not in EXTRA_HEADERS:
            errors.add(path, f"header can not be configured (allowed: {', '.join(EXTRA_HEADERS)})")
            continue
        if not isinstance(header_value, str) or any(c in header_value for c in "\r\n\0"):
            errors.add(path, "expected a one-line string")
            continue
        allowed = EXTRA_HEADERS[name]
        if header_value == "":
            continue
        if allowed is not None and header_value not in allowed:
            errors.add(path, f"expected one of {', '.join(allowed)}, got {header_value!r}")
            continue
        result.append((name, header_value))
    return http2, tuple(result)


def _users(value: Any, errors: Errors) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    if not isinstance(value, Mapping):
        errors.add("basic_auth_users", f"expected a mapping of users to hashes, got {kind(value)}")
        return ()
    users = []
    for user, hashed in value.items():
        path = f"basic_auth_users.{user}"
        if not isinstance(user, str) or not user or ":" in user:
            errors.add(path, "a user name is a non-empty string without ':'")
        elif not isinstance(hashed, str) or not _BCRYPT_HASH.match(hashed):
            errors.add(path, "expected a bcrypt hash like $2y$10$... (htpasswd -nBC 10)")
        elif not 4 <= _bcrypt_cost(hashed) <= 31:
            errors.add(path, "bcrypt cost must be between 4 and 31")
        else:
            users.append((user, hashed))
    return tuple(sorted(users))


def _bcrypt_cost(hashed: str) -> int:
    return int(hashed.split("$")[2])


_DECOYS: dict[int, bytes] = {}


def _decoy_hash(bcrypt: ModuleType, cost: int) -> bytes:
    """A hash of a random password that unknown users are checked against, one per cost.

    It has the highest cost any user has, so an unknown user takes as long as a known one.
    """
    if cost not in _DECOYS:
        _DECOYS[cost] = bcrypt.hashpw(os.urandom(16).hex().encode(), bcrypt.gensalt(cost))
    return _DECOYS[cost]


def _build_context(tls: TLSSettings) -> ssl.SSLContext:
    """An SSLContext for ``tls``; ssl.SSLError/OSError if a file does not load."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = TLS_VERSIONS[tls.min_version]
    context.maximum_version = TLS_VERSIONS[tls.max_version]
    if tls.cert_file and tls.key_file:
        context.load_cert_chain(tls.cert_file, tls.key_file)
    else:
        _load_inline_chain(context, tls)
    context.verify_mode = CLIENT_AUTH_TYPES[tls.client_auth_type]
    if tls.client_ca_file:
        context.load_verify_locations(cafile=tls.client_ca_file)
    elif tls.client_ca:
        context.load_verify_locations(cadata=tls.client_ca)
    tls12 = [CIPHER_SUITES[name] for name in tls.cipher_suites if name in CIPHER_SUITES]
    if tls12:
        context.set_ciphers(":".join(tls12))
    if tls.prefer_server_cipher_suites:
        context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    else:
        context.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    if tls.curve_preferences:
        context.set_ecdh_curve(CURVES[tls.curve_preferences[0]])
    return context


def _load_inline_chain(context: ssl.SSLContext, tls: TLSSettings) -> None:
    """Load a cert/key given inline (or mixed with a file) via a private temporary dir."""
    with tempfile.TemporaryDirectory(prefix="qmp-exporter-tls-") as tmp:
        cert_file = tls.cert_file
        key_file = tls.key_file
        if cert_file is None:
            cert_file = os.path.join(tmp, "cert.pem")
            Path(cert_file).write_text(tls.cert or "", encoding="utf-8")
        if key_file is None:
            key_file = os.path.join(tmp, "key.pem")
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(tls.key or "")
        context.load_cert_chain(cert_file, key_file)


def parse_web_config(data: Any, base_dir: Path, source: str = "web config") -> WebConfig:
    """Validate a decoded web config document; WebConfigError listing every problem."""
    errors = Errors()
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise WebConfigError([f"expected a mapping at the top, got {kind(data)}"], source)
    allowed = {"tls_server_config", "http_server_config", "basic_auth_users"}
    for key in data:
        if key == "rate_limit":
            errors.add(key, "not supported by qmp-exporter")
        elif key not in allowed:
            errors.add(str(key), f"unknown key (allowed: {', '.join(sorted(allowed))})")
    tls = _tls(data.get("tls_server_config"), base_dir, errors)
    http2, headers = _http(data.get("http_server_config"), errors)
    users = _users(data.get("basic_auth_users"), errors)
    if errors.items:
        raise WebConfigError(errors.items, source)
    decoy = b""
    if users:
        try:
            bcrypt = _import_bcrypt()
        except ImportError as err:
            raise WebConfigError([f"basic_auth_users: {err}"], source) from err
        decoy = _decoy_hash(bcrypt, max(_bcrypt_cost(h) for _, h in users))
    context = None
    if tls is not None:
        try:
            context = _build_context(tls)
        except (ssl.SSLError, OSError, ValueError) as err:
            raise WebConfigError([f"tls_server_config: cannot load: {err}"], source) from err
    return WebConfig(
        source=source,
        tls=tls,
        basic_auth_users=users,
        headers=headers,
        http2=http2,
        _context=context,
        _decoy_hash=decoy,
    )


def load_web_config(path: str | Path) -> WebConfig:
    """Read and validate a web config file; WebConfigError on any problem."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise WebConfigError([f"cannot read: {err}"], source) from err
    try:
        data = yaml.load(text, Loader=StrictLoader)  # a SafeLoader subclass
    except yaml.YAMLError as err:
        raise WebConfigError([f"not valid YAML: {err}".replace("\n", " ")], source) from err
    return parse_web_config(data, Path(path).resolve().parent, source)


def _fingerprint(files: tuple[str, ...]) -> tuple[tuple[int, int, int, int] | None, ...]:
    prints = []
    for name in files:
        try:
            st = os.stat(name)
        except OSError:
            prints.append(None)
        else:
            prints.append((st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns))
    return tuple(prints)


class WebConfigWatcher:
    """Keeps the current web config, re-reading it when the file or its certs change.

    A change is looked for at most once per ``interval`` seconds, when ``current()`` is
    called. A broken new file is logged and the last good config stays in force. TLS cannot
    be turned on or off, nor its handshake policy changed, without a restart: such a change
    is refused the same way.
    """

    def __init__(
        self,
        path: str | Path,
        interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = str(path)
        self._interval = interval
        self._clock = clock
        self._config = load_web_config(self.path)
        self._fingerprint = _fingerprint(self._config.files)
        self._checked_at = clock()
        self._lock = threading.Lock()
        self.last_error: str | None = None

    def current(self) -> WebConfig:
        """The config in force, re-read first if the files changed (checked ≤ 1/interval)."""
        now = self._clock()
        if now - self._checked_at < self._interval:
            return self._config
        with self._lock:
            if now - self._checked_at < self._interval:
                return self._config
            self._checked_at = now
            self._reload_if_changed()
        return self._config

    def _reload_if_changed(self) -> None:
        old = self._config
        files = old.files
        fingerprint = _fingerprint(files)
        if fingerprint == self._fingerprint:
            return
        self._fingerprint = fingerprint
        try:
            new = load_web_config(self.path)
        except WebConfigError as err:
            self._refuse(str(err))
            return
        refusal = _restart_needed(old, new)
        if refusal:
            self._refuse(f"{self.path}: {refusal}; keeping the running web config")
            return
        # The new config may read other files: watch those from now on.
        self._fingerprint = _fingerprint(new.files)
        self._config = new
        self.last_error = None
        log.info("reloaded web config %s", self.path)

    def _refuse(self, message: str) -> None:
        if message != self.last_error:
            log.error("web config not reloaded: %s", message.replace("\n", " "))
        self.last_error = message

    def listening_context(self) -> ssl.SSLContext | None:
        """A context for the listening socket that hands each new connection the current one.

        The context given to ``asyncio.start_server`` is fixed; its ``sni_callback`` (called
        on every ClientHello, with or without SNI) swaps in the current config's context, so a
        new certificate, key or client CA on disk is used by the next connection.
        """
        first = self._config.ssl_context()
        if first is None:
            return None
        listening = _build_context(self._config.tls)  # type: ignore[arg-type]

        def swap(ssl_object: ssl.SSLObject, _server_name: str | None, _ctx: Any) -> None:
            context = self.current().ssl_context()
            if context is not None:
                ssl_object.context = context

        listening.sni_callback = swap
        return listening


def _restart_needed(old: WebConfig, new: WebConfig) -> str | None:
    if old.tls_enabled != new.tls_enabled:
        return "turning TLS on or off needs a restart"
    if old.tls and new.tls and old.tls.handshake_policy != new.tls.handshake_policy:
        return (
            "client_auth_type, min/max_version, cipher_suites, prefer_server_cipher_suites "
            "and curve_preferences need a restart to change"
        )
    return None


def _unauthorized() -> Response:
    """The answer to a request without valid credentials, as the toolkit gives it."""
    return text_response(401, "Unauthorized", {"WWW-Authenticate": "Basic"})


def make_guard(watcher: WebConfigWatcher) -> Callable[[Request], Any]:
    """An HTTP server guard enforcing the current web config's client SANs and basic auth.

    A credential not yet in the cache is checked by bcrypt in a worker thread.
    """

    async def guard(request: Request) -> Response | None:
        config = watcher.current()
        if not config.client_cert_allowed(request.peercert):
            return text_response(403, "client certificate not allowed")
        if not config.requires_auth:
            return None
        header = request.headers.get("authorization")
        if await asyncio.to_thread(config.check_basic_auth, header):
            return None
        return _unauthorized()

    return guard


def response_headers(watcher: WebConfigWatcher) -> Callable[[], Mapping[str, str]]:
    """The extra headers of the current web config, for every response."""
    return lambda: dict(watcher.current().headers)
