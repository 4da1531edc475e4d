"""Which VNC clients never finished the handshake: each client's ``VNC_CONNECTED`` is paired
with its ``VNC_INITIALIZED`` (a login) or its ``VNC_DISCONNECTED`` (before a login: a wrong
password, a scan, an aborted TLS or auth step), by the client's host, service and websocket
flag in the events' data.

Memory is bounded: at most :data:`MAX_PENDING_CLIENTS` clients per VM wait for their outcome.
When one more connects, the oldest waiting client is counted as failed at once (a client
still half-open after that many newer ones connected is part of a scan or a flood) and its
later ``VNC_DISCONNECTED`` is ignored.

A client still waiting when the QMP connection drops is forgotten, not counted: its outcome
was not seen.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from qmp_exporter.qmp import Event

#: The synthetic event for a VNC client that left (or was evicted) before logging in.
HANDSHAKE_FAILED = "VNC_HANDSHAKE_FAILED"
#: VNC clients per VM whose handshake outcome is awaited.
MAX_PENDING_CLIENTS = 64
#: Longest client host, service or family kept.
MAX_CLIENT_TEXT_CHARS = 256

#: (host, service, websocket) of a VNC client.
ClientKey = tuple[str, str, bool]


def _text(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    return str(value)[:MAX_CLIENT_TEXT_CHARS]


def client_of(data: Any) -> dict[str, Any] | None:
    """The ``client`` of a VNC event's data, bounded (host, service, family, websocket);
    ``None`` when it has no host and service."""
    client = data.get("client") if isinstance(data, dict) else None
    if not isinstance(client, dict):
        return None
    host, service = _text(client.get("host")), _text(client.get("service"))
    if host is None or service is None:
        return None
    return {
        "host": host,
        "service": service,
        "family": _text(client.get("family")) or "",
        "websocket": client.get("websocket") is True,
    }


def _key(client: dict[str, Any]) -> ClientKey:
    return (client["host"], client["service"], client["websocket"])


class VncHandshakes:
    """Pairs VNC events per client and concludes which clients failed the handshake."""

    def __init__(self, max_pending: int = MAX_PENDING_CLIENTS) -> None:
        if max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        self.max_pending = max_pending
        #: Clients connected and not yet logged in or gone, oldest first.
        self._pending: OrderedDict[ClientKey, dict[str, Any]] = OrderedDict()

    @property
    def pending(self) -> int:
        """How many clients wait for their outcome."""
        return len(self._pending)

    def observe(self, event: Event) -> list[Event]:
        """Take one QMP event; return the :data:`HANDSHAKE_FAILED` events it concludes (an
        unpaired or unrelated event concludes none). Each carries the client (and, for a
        disconnect, the server) as QEMU sent it, plus ``reason``: ``disconnected`` or
        ``evicted``."""
        if event.name not in ("VNC_CONNECTED", "VNC_INITIALIZED", "VNC_DISCONNECTED"):
            return []
        client = client_of(event.data)
        if client is None:
            return []
        key = _key(client)
        if event.name == "VNC_INITIALIZED":
            self._pending.pop(key, None)
            return []
        if event.name == "VNC_DISCONNECTED":
            if self._pending.pop(key, None) is None:
                return []  # logged in, evicted, or connected before this QMP session
            server = event.data.get("server") if isinstance(event.data, dict) else None
            data: dict[str, Any] = {"client": client, "reason": "disconnected"}
            if isinstance(server, dict):
                data["server"] = server  # passed on, not kept: the push bounds annotations
            return [Event(HANDSHAKE_FAILED, data, event.timestamp)]
        # VNC_CONNECTED: the same key again means its end was not seen; it starts afresh.
        self._pending.pop(key, None)
        failed = []
        while len(self._pending) >= self.max_pending:
            _, oldest = self._pending.popitem(last=False)
            failed.append(
                Event(HANDSHAKE_FAILED, {"client": oldest, "reason": "evicted"}, event.timestamp)
            )
        self._pending[key] = client
        return failed

    def forget(self) -> None:
        """The QMP connection closed: the waiting clients' outcomes will not be seen."""
        self._pending.clear()
