"""The web config in force, re-read when its YAML file or the files it names change."""

from __future__ import annotations

import logging
import os
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path

from qmp_exporter.web.webconfig.settings import WebConfig, WebConfigError, load_web_config
from qmp_exporter.web.webconfig.tls import swapping_context

log = logging.getLogger(__name__)


def _fingerprint(files: tuple[str, ...]) -> tuple[tuple[int, int, int, int] | None, ...]:
    prints: list[tuple[int, int, int, int] | None] = []
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

        None when TLS is not configured. A new certificate, key or client CA on disk is used
        by the next connection (see :func:`~qmp_exporter.web.webconfig.tls.swapping_context`).
        """
        if self._config.tls is None:
            return None
        return swapping_context(self._config.tls, lambda: self.current().ssl_context())


def _restart_needed(old: WebConfig, new: WebConfig) -> str | None:
    if old.tls_enabled != new.tls_enabled:
        return "turning TLS on or off needs a restart"
    if old.tls and new.tls and old.tls.handshake_policy != new.tls.handshake_policy:
        return (
            "client_auth_type, min/max_version, cipher_suites, prefer_server_cipher_suites "
            "and curve_preferences need a restart to change"
        )
    return None
