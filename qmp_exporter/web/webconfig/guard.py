"""The HTTP server's guard and extra headers, from the web config in force."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry

from qmp_exporter.exposition.counters import OwnCounter
from qmp_exporter.web.http.server import Request, Response, text_response
from qmp_exporter.web.webconfig.checker import FAILURE_REASONS, BasicAuthChecker, Outcome
from qmp_exporter.web.webconfig.watcher import WebConfigWatcher

log = logging.getLogger(__name__)

#: The failure counter's reason for a client certificate outside ``client_allowed_sans``.
CLIENT_CERT = "client_cert"
#: Every reason a request can be refused for (the counter's label values).
REFUSAL_REASONS = (*FAILURE_REASONS, CLIENT_CERT)


def auth_failure_counter(registry: CollectorRegistry) -> OwnCounter:
    """``qmp_exporter_auth_failures_total{reason}`` in ``registry``, every reason at 0."""
    counter = OwnCounter(
        "qmp_exporter_auth_failures",
        "Requests refused by the web config's guard, by reason: "
        + ", ".join(REFUSAL_REASONS)
        + ".",
        ["reason"],
        registry=registry,
    )
    for reason in REFUSAL_REASONS:
        counter.labels(reason)
    return counter


def _unauthorized() -> Response:
    """The answer to a request without valid credentials, as the toolkit gives it."""
    return text_response(401, "Unauthorized", {"WWW-Authenticate": "Basic"})


def make_guard(
    watcher: WebConfigWatcher,
    failures: OwnCounter | None = None,
    checker: BasicAuthChecker | None = None,
) -> Callable[[Request], Any]:
    """An HTTP server guard enforcing the current web config's client SANs and basic auth.

    A credential checked before is answered at once; a new one is checked by bcrypt in one
    worker thread, rate-limited per peer host and globally: over a limit the answer is
    ``429 Too Many Requests`` with ``Retry-After``, at once. Each refusal counts in
    ``failures`` (see :func:`auth_failure_counter`).
    """
    checker = checker or BasicAuthChecker()

    def refused(reason: str) -> None:
        if failures is not None:
            failures.labels(reason).inc()

    async def guard(request: Request) -> Response | None:
        config = watcher.current()
        if not config.client_cert_allowed(request.peercert):
            refused(CLIENT_CERT)
            return text_response(403, "client certificate not allowed")
        if not config.requires_auth:
            return None
        attempt = config.basic_auth_attempt(request.headers.get("authorization"))
        verdict = await checker.check(attempt, config.auth_cache, request.peer)
        if verdict.granted:
            return None
        refused(verdict.outcome.value)
        if verdict.outcome in (Outcome.RATE_LIMITED, Outcome.BUSY):
            return text_response(
                429,
                "too many authentication attempts; retry later",
                {"Retry-After": str(verdict.retry_after)},
            )
        return _unauthorized()

    return guard


def response_headers(watcher: WebConfigWatcher) -> Callable[[], Mapping[str, str]]:
    """The extra headers of the current web config, for every response."""
    return lambda: dict(watcher.current().headers)
