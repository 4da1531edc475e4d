"""One POST to Alertmanager within a deadline and a bound on what is read: a watchdog may shut
the connection's socket down (:class:`Attempt`), and a requests adapter cuts every answer to
:data:`MAX_ANSWER_BYTES` before requests sees it (:func:`bounded_session`)."""

from __future__ import annotations

import contextlib
import http.client
import io
import socket
import threading
from typing import Any

import requests
import requests.adapters
import urllib3
import urllib3.connection
import urllib3.exceptions

#: Bytes of an Alertmanager's answer read at most (an error page's start, for the log).
MAX_ANSWER_BYTES = 512


class Attempt:
    """One POST, which a watchdog may cut short by shutting its connection's socket down."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._connection: urllib3.connection.HTTPConnection | None = None
        self._over = False
        self.expired = False

    def use(self, connection: urllib3.connection.HTTPConnection) -> None:
        """Called as ``connection`` sends a request of this attempt (a redirect sends two)."""
        with self._lock:
            if self.expired:
                raise OSError("the deadline passed")
            self._connection = connection

    def expire(self) -> None:
        """The deadline passed (or the pusher closes): end the exchange where it stands."""
        with self._lock:
            if self._over:
                return
            self.expired = True
            sock = getattr(self._connection, "sock", None)
            if isinstance(sock, socket.socket):
                # The socket-level shutdown (not SSLSocket's, which drops its TLS state under
                # the reading thread): the blocked read returns and the request fails.
                with contextlib.suppress(OSError):
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)

    def finish(self) -> None:
        with self._lock:
            self._over = True


#: The attempt the current (sender) thread is making.
current = threading.local()


def _watch(connection: urllib3.connection.HTTPConnection) -> None:
    attempt: Attempt | None = getattr(current, "attempt", None)
    if attempt is not None:
        attempt.use(connection)


class _WatchedHTTPConnection(urllib3.connection.HTTPConnection):
    def request(self, *args: Any, **kwargs: Any) -> None:
        _watch(self)
        super().request(*args, **kwargs)


class _WatchedHTTPSConnection(urllib3.connection.HTTPSConnection):
    def request(self, *args: Any, **kwargs: Any) -> None:
        _watch(self)
        super().request(*args, **kwargs)


class _WatchedHTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


class _BoundedAdapter(requests.adapters.HTTPAdapter):
    """Connections the current :class:`Attempt` can shut down, and answers cut to
    :data:`MAX_ANSWER_BYTES` before requests sees them (it reads a redirect's whole body)."""

    def __init__(self) -> None:
        super().__init__()  # makes the pool manager (init_poolmanager, untyped in some stubs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": _WatchedHTTPPool,
            "https": _WatchedHTTPSPool,
        }

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> Any:
        response = super().send(request, *args, **kwargs)
        raw = response.raw
        head, complete = b"", False
        length = response.headers.get("Content-Length", "")
        # A success's body is read only when short (Alertmanager's is empty): an error's start
        # is worth a log line, a redirect's is read by requests
        if not response.ok or (length.isdigit() and int(length) <= MAX_ANSWER_BYTES):
            try:
                head = raw.read(MAX_ANSWER_BYTES + 1, decode_content=True)
                complete = len(head) <= MAX_ANSWER_BYTES and raw.closed
            except (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError):
                pass  # a broken or cut answer: its status stands, its connection goes
        if not complete:
            raw.close()  # the rest is never read: the connection goes with it
        raw.release_conn()
        response.raw = io.BytesIO(head[:MAX_ANSWER_BYTES])
        return response


def bounded_session() -> requests.Session:
    session = requests.Session()
    for prefix in ("http://", "https://"):
        session.mount(prefix, _BoundedAdapter())
    return session
