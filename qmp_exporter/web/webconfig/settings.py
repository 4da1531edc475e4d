"""Read and validate a web config file into a :class:`WebConfig` (format: see the package)."""

from __future__ import annotations

import hmac
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qmp_exporter.config import ConfigError
from qmp_exporter.config.schema import Errors, kind, mapping, read_yaml
from qmp_exporter.web.webconfig.basic_auth import (
    BCRYPT_HASH,
    Attempt,
    AuthCache,
    bcrypt_cost,
    decoy_hash,
    make_attempt,
)
from qmp_exporter.web.webconfig.tls import build_context
from qmp_exporter.web.webconfig.tls_settings import TLSSettings, parse_tls_settings

#: Response headers the toolkit lets a config set, with their allowed values (None: any).
EXTRA_HEADERS: dict[str, tuple[str, ...] | None] = {
    "Strict-Transport-Security": None,
    "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-XSS-Protection": None,
    "Content-Security-Policy": None,
}


class WebConfigError(ConfigError):
    """A web config file that cannot be used; ``errors`` lists every problem with its path."""


@dataclass(frozen=True, slots=True)
class WebConfig:
    """A validated web config: TLS settings, basic auth users and extra response headers."""

    source: str = ""
    tls: TLSSettings | None = None
    basic_auth_users: tuple[tuple[str, str], ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    http2: bool = True
    _context: ssl.SSLContext | None = field(default=None, compare=False, repr=False)
    _cache: AuthCache = field(default_factory=AuthCache, compare=False, repr=False)
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

    def basic_auth_attempt(self, authorization_header: str | None) -> Attempt | None:
        """The credential the ``Authorization`` header offers, resolved against this config's
        users (an unknown user against the decoy hash); None when it offers none."""
        return make_attempt(dict(self.basic_auth_users), self._decoy_hash, authorization_header)

    @property
    def auth_cache(self) -> AuthCache:
        """This config's cache of bcrypt answers (a new config starts with an empty one)."""
        return self._cache

    def client_cert_allowed(self, peercert: Mapping[str, Any] | None) -> bool:
        """Whether a verified client certificate (``getpeercert()``) has an allowed SAN."""
        if self.tls is None or not self.tls.client_allowed_sans:
            return True
        if not peercert:
            return False
        names = [value for _, value in peercert.get("subjectAltName", ())]
        allowed = self.tls.client_allowed_sans
        return any(hmac.compare_digest(n.encode(), a.encode()) for n in names for a in allowed)


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
        elif not isinstance(hashed, str) or not BCRYPT_HASH.match(hashed):
            errors.add(path, "expected a bcrypt hash like $2y$10$... (htpasswd -nBC 10)")
        elif not 4 <= bcrypt_cost(hashed) <= 31:
            errors.add(path, "bcrypt cost must be between 4 and 31")
        else:
            users.append((user, hashed))
    return tuple(sorted(users))


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
    tls = parse_tls_settings(data.get("tls_server_config"), base_dir, errors)
    http2, headers = _http(data.get("http_server_config"), errors)
    users = _users(data.get("basic_auth_users"), errors)
    if errors.items:
        raise WebConfigError(errors.items, source)
    decoy = b""
    if users:
        try:
            decoy = decoy_hash(max(bcrypt_cost(h) for _, h in users))
        except ImportError as err:
            raise WebConfigError([f"basic_auth_users: {err}"], source) from err
    context = None
    if tls is not None:
        try:
            context = build_context(tls)
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
    document = read_yaml(path, WebConfigError)
    return parse_web_config(document, Path(path).resolve().parent, str(path))
