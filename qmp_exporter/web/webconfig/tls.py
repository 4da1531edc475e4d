"""The server's SSL context: built from :class:`TLSSettings`, swapped per connection."""

from __future__ import annotations

import os
import ssl
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qmp_exporter.web.webconfig.tls_settings import (
    CIPHER_SUITES,
    CLIENT_AUTH_TYPES,
    CURVES,
    TLS_VERSIONS,
    TLSSettings,
)


def build_context(tls: TLSSettings) -> ssl.SSLContext:
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


def swapping_context(
    tls: TLSSettings, current: Callable[[], ssl.SSLContext | None]
) -> ssl.SSLContext:
    """A context for the listening socket that hands each new connection ``current()``.

    The context given to ``asyncio.start_server`` is fixed; its ``sni_callback`` (called
    on every ClientHello, with or without SNI) swaps in the context ``current`` returns, so
    a new certificate, key or client CA on disk is used by the next connection.
    """
    listening = build_context(tls)

    def swap(ssl_object: ssl.SSLObject, _server_name: str | None, _ctx: Any) -> None:
        context = current()
        if context is not None:
            ssl_object.context = context

    listening.sni_callback = swap
    return listening
