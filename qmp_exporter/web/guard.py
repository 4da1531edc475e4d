"""The HTTP server's guard and extra headers, from the web config in force."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

from qmp_exporter.web.auth.watcher import WebConfigWatcher
from qmp_exporter.web.server import Request, Response, text_response


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
