"""VNC handshake failures and SPICE console events: the per-client matcher on its own, and a
poller fed by a scripted monitor replaying events recorded from a real QEMU 7.2 (identical on
10.0): VNC clients with a wrong password, and SPICE clients sending a raw link message."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from qmp_exporter.alerting import build_alert
from qmp_exporter.config import MonitorConfig, parse_yaml
from qmp_exporter.polling.consoles import HANDSHAKE_FAILED, VncHandshakes
from qmp_exporter.polling.poller import MonitorPoller, PollSettings
from qmp_exporter.qmp import Event
from tests.helpers.scripted_monitor import ScriptedMonitor
from tests.helpers.waiting import wait_until

SETTINGS = PollSettings(interval=0.05, timeout=2.0, start_spread=0)

#: ``server`` of the recorded VNC events (``-vnc 127.0.0.1:N,password=on``).
VNC_SERVER = {
    "auth": "vnc",
    "family": "ipv4",
    "service": "6203",
    "host": "127.0.0.1",
    "websocket": False,
}
#: ``query-vnc`` of that QEMU, as recorded.
QUERY_VNC = {
    "enabled": True,
    "auth": "vnc",
    "family": "ipv4",
    "clients": [],
    "service": "6203",
    "host": "127.0.0.1",
}
#: ``server`` and ``query-spice`` of the recorded SPICE QEMU (``-spice port=N,addr=...``).
SPICE_SERVER = {"port": "41557", "family": "ipv4", "host": "127.0.0.1"}
QUERY_SPICE = {
    "migrated": False,
    "enabled": True,
    "auth": "spice",
    "port": 41557,
    "compiled-version": "0.15.1",
    "host": "127.0.0.1",
    "channels": [],
    "mouse-mode": "server",
}


def vnc_event(name: str, service: str, *, websocket: bool = False) -> Event:
    """A VNC event as QEMU sends it for the client 127.0.0.1:``service``."""
    client = {"family": "ipv4", "service": service, "host": "127.0.0.1", "websocket": websocket}
    return Event(name, {"server": VNC_SERVER, "client": client}, 1796171435.0)


def spice_events_recorded() -> list[tuple[str, dict[str, Any]]]:
    """07-spice-password.jsonl: a wrong ticket (connected, disconnected), then the right one
    (connected, initialized on the main channel, disconnected)."""

    def client(port: str, **more: Any) -> dict[str, Any]:
        return {"port": port, "family": "ipv4", "host": "127.0.0.1", **more}

    login = client(
        "59976", **{"channel-type": 1, "connection-id": -54844828, "channel-id": 0, "tls": False}
    )
    return [
        ("SPICE_CONNECTED", {"server": SPICE_SERVER, "client": client("59970")}),
        ("SPICE_DISCONNECTED", {"server": SPICE_SERVER, "client": client("59970")}),
        ("SPICE_CONNECTED", {"server": SPICE_SERVER, "client": client("59976")}),
        ("SPICE_INITIALIZED", {"server": {**SPICE_SERVER, "auth": "spice"}, "client": login}),
        ("SPICE_DISCONNECTED", {"server": SPICE_SERVER, "client": client("59976")}),
    ]


# -- the matcher ---------------------------------------------------------------------------


def feed(handshakes: VncHandshakes, *events: Event) -> list[Event]:
    return [failed for event in events for failed in handshakes.observe(event)]


def test_recorded_password_session_gives_four_failures_and_no_more() -> None:
    """03-vnc-password-auth.jsonl: four clients fail (no password set yet, a wrong one, one
    that leaves after the version, one that leaves after the challenge), two log in."""
    handshakes = VncHandshakes()
    events = []
    for service in ("46568", "46580", "46594", "46610"):
        events += [vnc_event("VNC_CONNECTED", service), vnc_event("VNC_DISCONNECTED", service)]
    for service in ("46624", "46640"):
        events += [
            vnc_event("VNC_CONNECTED", service),
            vnc_event("VNC_INITIALIZED", service),
            vnc_event("VNC_DISCONNECTED", service),
        ]
    failed = feed(handshakes, *events)
    assert [e.data["client"]["service"] for e in failed] == ["46568", "46580", "46594", "46610"]
    assert {e.name for e in failed} == {HANDSHAKE_FAILED}
    assert failed[0].data["client"]["host"] == "127.0.0.1"
    assert failed[0].data["reason"] == "disconnected"
    assert failed[0].data["server"] == VNC_SERVER
    assert failed[0].timestamp == 1796171435.0
    assert handshakes.pending == 0


def test_pending_clients_are_bounded_and_the_oldest_is_counted_when_evicted() -> None:
    handshakes = VncHandshakes(max_pending=3)
    failed = feed(handshakes, *(vnc_event("VNC_CONNECTED", str(p)) for p in range(1000, 1005)))
    assert [(e.data["client"]["service"], e.data["reason"]) for e in failed] == [
        ("1000", "evicted"),
        ("1001", "evicted"),
    ]
    assert handshakes.pending == 3
    # An evicted client's end is not counted twice; the others still are.
    assert feed(handshakes, vnc_event("VNC_DISCONNECTED", "1000")) == []
    assert len(feed(handshakes, vnc_event("VNC_DISCONNECTED", "1004"))) == 1
    assert handshakes.pending == 2


def test_many_half_open_clients_keep_memory_bounded() -> None:
    handshakes = VncHandshakes()
    failed = feed(handshakes, *(vnc_event("VNC_CONNECTED", str(p)) for p in range(10_000)))
    assert handshakes.pending == handshakes.max_pending == 64
    assert len(failed) == 10_000 - 64


def test_forget_after_a_lost_qmp_connection_counts_nothing() -> None:
    handshakes = VncHandshakes()
    assert feed(handshakes, vnc_event("VNC_CONNECTED", "5000")) == []
    handshakes.forget()
    assert handshakes.pending == 0
    assert feed(handshakes, vnc_event("VNC_DISCONNECTED", "5000")) == []


def test_websocket_and_tcp_clients_on_the_same_port_are_different_clients() -> None:
    handshakes = VncHandshakes()
    failed = feed(
        handshakes,
        vnc_event("VNC_CONNECTED", "6000"),
        vnc_event("VNC_CONNECTED", "6000", websocket=True),
        vnc_event("VNC_INITIALIZED", "6000", websocket=True),
        vnc_event("VNC_DISCONNECTED", "6000", websocket=True),
        vnc_event("VNC_DISCONNECTED", "6000"),
    )
    assert [e.data["client"]["websocket"] for e in failed] == [False]


def test_a_client_seen_connecting_twice_is_one_pending_client() -> None:
    handshakes = VncHandshakes()
    assert feed(handshakes, *[vnc_event("VNC_CONNECTED", "7000")] * 2) == []
    assert handshakes.pending == 1
    assert len(feed(handshakes, vnc_event("VNC_DISCONNECTED", "7000"))) == 1


@pytest.mark.parametrize(
    "data",
    [
        None,
        {},
        {"client": "x"},
        {"client": {"host": "h"}},
        {"client": {"host": True, "service": 1}},
    ],
)
def test_events_without_a_client_are_ignored(data: Any) -> None:
    handshakes = VncHandshakes()
    assert feed(handshakes, Event("VNC_CONNECTED", data), Event("VNC_DISCONNECTED", data)) == []
    assert handshakes.pending == 0


# -- the push ------------------------------------------------------------------------------


def test_alerting_events_may_list_the_synthetic_event() -> None:
    config = parse_yaml(
        "alerting:\n  alertmanagers: [http://127.0.0.1:9093]\n"
        "  events: [VNC_HANDSHAKE_FAILED, SPICE_INITIALIZED]\n"
    )
    assert config.alerting is not None
    assert config.alerting.events == (HANDSHAKE_FAILED, "SPICE_INITIALIZED")


def test_a_failure_alert_carries_the_client_in_annotations_only() -> None:
    handshakes = VncHandshakes()
    (failed,) = feed(
        handshakes, vnc_event("VNC_CONNECTED", "46580"), vnc_event("VNC_DISCONNECTED", "46580")
    )
    alert = build_alert(MonitorConfig("web", "/run/web.qmp"), failed, 1796171436.0, 300.0)
    assert alert["labels"] == {
        "alertname": "QemuEventVncHandshakeFailed",
        "vm": "web",
        "event": HANDSHAKE_FAILED,
    }
    annotations = alert["annotations"]
    assert annotations["summary"] == "VNC client 127.0.0.1 failed the handshake with VM web"
    assert "before completing the handshake (disconnected)" in annotations["description"]
    assert (annotations["client_host"], annotations["client_service"]) == ("127.0.0.1", "46580")
    assert annotations["server_auth"] == "vnc"


# -- the poller ----------------------------------------------------------------------------


class Watched:
    """A started poller of a scripted monitor, with what it published and passed on."""

    def __init__(self, monitor: ScriptedMonitor, mode: str = "persistent") -> None:
        self.monitor = monitor
        self.passed_on: list[Event] = []
        self.poller = MonitorPoller(
            MonitorConfig("vm", monitor.address, mode=mode),
            SETTINGS,
            on_event=lambda _monitor, event: self.passed_on.append(event),
        )

    def events(self) -> dict[str, int]:
        return dict(self.poller.state.counters.events)

    def failures(self) -> int | None:
        return self.poller.state.counters.vnc_handshake_failures

    async def send(self, name: str, data: dict[str, Any]) -> None:
        await self.monitor.sessions[-1].event(name, data)


@contextlib.asynccontextmanager
async def watching(
    tmp_path: Path, handlers: dict[str, Any] | None = None, mode: str = "persistent"
) -> AsyncIterator[Watched]:
    """A scripted monitor and its started poller, once up; the poller stops at the end."""
    async with ScriptedMonitor(str(tmp_path / "vm.qmp"), handlers=handlers or {}) as monitor:
        watched = Watched(monitor, mode)
        watched.poller.start()
        await wait_until(lambda: watched.poller.state.up)
        try:
            yield watched
        finally:
            await watched.poller.stop()


def test_poller_counts_failures_from_zero_and_passes_on_the_synthetic_event(
    tmp_path: Path,
) -> None:
    async def scenario() -> Watched:
        handlers = {"query-vnc": QUERY_VNC}
        async with watching(tmp_path, handlers) as watched:
            assert watched.failures() == 0
            for name in ("VNC_CONNECTED", "VNC_DISCONNECTED"):
                await watched.send(name, vnc_event(name, "46580").data)
            for name in ("VNC_CONNECTED", "VNC_INITIALIZED", "VNC_DISCONNECTED"):
                await watched.send(name, vnc_event(name, "46624").data)
            await wait_until(lambda: watched.events().get("VNC_DISCONNECTED") == 2)
        return watched

    watched = asyncio.run(scenario())
    assert watched.failures() == 1
    assert watched.events()["VNC_INITIALIZED"] == 1
    assert HANDSHAKE_FAILED not in watched.events()  # not a QMP event
    names = [e.name for e in watched.passed_on]
    assert names == [
        "VNC_CONNECTED",
        "VNC_DISCONNECTED",
        HANDSHAKE_FAILED,
        "VNC_CONNECTED",
        "VNC_INITIALIZED",
        "VNC_DISCONNECTED",
    ]
    assert watched.passed_on[2].data["client"]["service"] == "46580"


def test_a_client_pending_when_the_qmp_connection_drops_is_not_a_failure(
    tmp_path: Path,
) -> None:
    async def scenario() -> Watched:
        handlers = {"query-vnc": QUERY_VNC}
        async with watching(tmp_path, handlers) as watched:
            await watched.send("VNC_CONNECTED", vnc_event("VNC_CONNECTED", "9000").data)
            await wait_until(lambda: watched.events()["VNC_CONNECTED"] == 1)
            watched.monitor.sessions[-1].close()
            await wait_until(lambda: watched.poller.state.counters.connections == 2)
            await wait_until(lambda: watched.poller.state.up)
            await watched.send("VNC_DISCONNECTED", vnc_event("VNC_DISCONNECTED", "9000").data)
            await wait_until(lambda: watched.events()["VNC_DISCONNECTED"] == 1)
        return watched

    watched = asyncio.run(scenario())
    assert watched.failures() == 0
    assert HANDSHAKE_FAILED not in [e.name for e in watched.passed_on]


def test_no_vnc_no_failure_counter(tmp_path: Path) -> None:
    """Without VNC (the scripted QEMU has no query-vnc), the counter is absent."""

    async def scenario() -> Watched:
        async with watching(tmp_path) as watched:
            pass  # polled once up: what it published is checked below
        return watched

    watched = asyncio.run(scenario())
    assert watched.failures() is None
    assert not any(name.startswith("SPICE_") for name in watched.events())


def test_poll_mode_has_no_failure_counter_and_asks_no_query_spice(tmp_path: Path) -> None:
    async def scenario() -> Watched:
        handlers = {"query-vnc": QUERY_VNC, "query-spice": QUERY_SPICE}
        async with watching(tmp_path, handlers, mode="poll") as watched:
            pass  # polled once up: what it published is checked below
        return watched

    watched = asyncio.run(scenario())
    assert watched.failures() is None
    assert watched.events() == {}
    assert "query-spice" not in watched.monitor.commands()


def test_spice_events_are_precreated_and_counted_from_the_recording(tmp_path: Path) -> None:
    async def scenario() -> tuple[Watched, dict[str, int]]:
        handlers = {"query-spice": QUERY_SPICE}
        async with watching(tmp_path, handlers) as watched:
            at_start = watched.events()
            for name, data in spice_events_recorded():
                await watched.send(name, data)
            await wait_until(lambda: watched.events()["SPICE_DISCONNECTED"] == 2)
        return watched, at_start

    watched, at_start = asyncio.run(scenario())
    spice = ("SPICE_CONNECTED", "SPICE_INITIALIZED", "SPICE_DISCONNECTED")
    assert {name: at_start[name] for name in spice} == dict.fromkeys(spice, 0)
    assert {name: watched.events()[name] for name in spice} == {
        "SPICE_CONNECTED": 2,
        "SPICE_INITIALIZED": 1,
        "SPICE_DISCONNECTED": 2,
    }
    assert watched.monitor.commands().count("query-spice") == 1  # once per connection
    assert watched.failures() is None  # SPICE events are not VNC clients


@pytest.mark.parametrize(
    "answer",
    [{**QUERY_SPICE, "enabled": False}, None],
    ids=["disabled", "CommandNotFound"],
)
def test_spice_events_are_not_precreated_without_spice(tmp_path: Path, answer: Any) -> None:
    async def scenario() -> Watched:
        handlers = {} if answer is None else {"query-spice": answer}
        async with watching(tmp_path, handlers) as watched:
            pass  # polled once up: what it published is checked below
        return watched

    watched = asyncio.run(scenario())
    assert "query-spice" in watched.monitor.commands()
    assert "VNC_CONNECTED" in watched.events()
    assert not any(name.startswith("SPICE_") for name in watched.events())
