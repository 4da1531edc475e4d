"""The ``tls_server_config`` section: its validation, and the toolkit's (Go's) names in it."""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qmp_exporter.config.schema import Errors, kind, mapping

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
_TLS_KEYS = {
    "cert", "key", "client_ca", "cert_file", "key_file", "client_auth_type",
    "client_ca_file", "client_allowed_sans", "min_version", "max_version", "cipher_suites",
    "prefer_server_cipher_suites", "curve_preferences",
}  # fmt: skip


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


def parse_tls_settings(value: Any, base: Path, errors: Errors) -> TLSSettings | None:
    """The ``tls_server_config`` section; None if absent, empty or invalid (see ``errors``)."""
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
