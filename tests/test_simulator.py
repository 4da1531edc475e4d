"""The simulated monitors, through the real QMP client and raw sockets, and compared with
the real QEMU 7.2 transcripts in ``shared/qmp-transcripts`` (found beside the clone)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from qmp_exporter.qmp import (
    BacklogFullError,
    CommandError,
    CommandRefusedError,
    GreetingTimeoutError,
    connect,
)
from qmp_exporter.sim import (
    Churn,
    CommandFailed,
    PollGaps,
    SimulatedFleet,
    SimulatedMonitorServer,
    SimulatedVM,
)
from qmp_exporter.sim.demo import start_demo
from tests.helpers.transcripts import shape

REPO = Path(__file__).resolve().parents[1]


def _find_transcripts() -> Path | None:
    """``shared/qmp-transcripts`` beside the clone (CI: ``REPO/../shared``), or beside one
    of its parents (a git worktree under ``wt/``)."""
    for parent in [REPO, *REPO.parents][:4]:
        candidate = parent / ".." / "shared" / "qmp-transcripts"
        if candidate.is_dir():
            return candidate.resolve()
    return None


TRANSCRIPTS = _find_transcripts()
needs_transcripts = pytest.mark.skipif(
    TRANSCRIPTS is None,
    reason=f"TRANSCRIPTS MISSING: no shared/qmp-transcripts beside {REPO} or its parents; "
    "the comparison with real QEMU 7.2 answers did not run",
)


def run(coro_fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro_fn(*args), 20))


def transcript_records(name: str) -> list[dict[str, Any]]:
    assert TRANSCRIPTS is not None
    path = TRANSCRIPTS / name
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def transcript_answers(name: str) -> dict[str, list[dict[str, Any]]]:
    """Real QEMU's responses in one transcript file, by the command that was sent before."""
    answers: dict[str, list[dict[str, Any]]] = {}
    last: str | None = None
    for record in transcript_records(name):
        if record["dir"] == "send":
            try:
                last = json.loads(record["raw"]).get("execute")
            except (ValueError, AttributeError):
                last = None
        elif record["dir"] == "recv" and last:
            message = json.loads(record["raw"])
            if "return" in message or "error" in message:
                answers.setdefault(last, []).append(message)
    return answers


def transcript_events(name: str) -> dict[str, list[dict[str, Any]]]:
    events: dict[str, list[dict[str, Any]]] = {}
    for record in transcript_records(name):
        if record["dir"] == "recv":
            message = json.loads(record["raw"])
            if "event" in message:
                events.setdefault(message["event"], []).append(message)
    return events


def first_return(answers: dict[str, list[dict[str, Any]]], command: str) -> Any:
    return next(a["return"] for a in answers[command] if "return" in a)


class Served:
    """One simulated VM served on a socket in a fresh temporary directory."""

    def __init__(self, vm: SimulatedVM) -> None:
        self.vm = vm
        self.directory = tempfile.mkdtemp(prefix="simtest-")
        self.server = SimulatedMonitorServer(vm, os.path.join(self.directory, "vm.qmp"))

    async def __aenter__(self) -> Served:
        await self.server.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.server.close()
        os.rmdir(self.directory)


async def raw_session(path: str, lines: list[bytes], settle: float = 0.1) -> list[bytes]:
    """Send raw lines after reading the greeting; return every line received (greeting too)."""
    reader, writer = await asyncio.open_unix_connection(path)
    received = [await asyncio.wait_for(reader.readline(), 2)]
    for line in lines:
        writer.write(line)
    await writer.drain()
    deadline = time.monotonic() + settle
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            received.append(await asyncio.wait_for(reader.readline(), remaining))
        except TimeoutError:
            break
    writer.close()
    return received


# -- the wire format --------------------------------------------------------------------


def test_greeting_crlf_and_negotiation_errors_match_qemu() -> None:
    async def scenario() -> list[bytes]:
        async with Served(SimulatedVM("vm-alpha")) as served:
            return await raw_session(
                served.server.path,
                [
                    b'{"execute":"query-status"}\n',
                    b'{"execute":"qmp_capabilities"}\n',
                    b'{"execute":"qmp_capabilities"}\n',
                ],
            )

    lines = run(scenario)
    assert all(line.endswith(b"\r\n") for line in lines), lines
    greeting, before, negotiated, again = (json.loads(line) for line in lines)
    assert greeting["QMP"]["capabilities"] == ["oob"]
    assert greeting["QMP"]["version"]["qemu"] == {"major": 7, "minor": 2, "micro": 22}
    assert before == {
        "error": {
            "class": "CommandNotFound",
            "desc": "Expecting capabilities negotiation with 'qmp_capabilities'",
        }
    }
    assert negotiated == {"return": {}}
    assert again["error"]["class"] == "CommandNotFound"
    assert again["error"]["desc"] == "Capabilities negotiation is already complete, command ignored"


def test_id_echo_unknown_commands_and_bad_input() -> None:
    async def scenario() -> list[bytes]:
        async with Served(SimulatedVM("vm-alpha")) as served:
            return await raw_session(
                served.server.path,
                [
                    b'{"execute":"qmp_capabilities"}\n',
                    b'{"execute":"query-status","id":"poll-1"}\n',
                    b'{"execute":"query-status","id":{"n":42}}\n',
                    b'{"execute":"query-nonexistent","id":7}\n',
                    b'{"execute":"query-status","arguments":{"bogus":1}}\n',
                    b'{"execute": query-status}\n',
                    b'{"exec":"query-status"}\n',
                    b"[]\n",
                    b'{"execute":"query-name"}{"execute":"query-uuid"}\n',
                    b'{"execute":"query-name"\n',
                    b"}\n",
                ],
            )

    lines = run(scenario)[2:]  # after greeting and qmp_capabilities
    assert lines[0] == (
        b'{"return": {"status": "running", "singlestep": false, "running": true}, '
        b'"id": "poll-1"}\r\n'
    )
    assert json.loads(lines[1])["id"] == {"n": 42}
    assert lines[2] == (
        b'{"id": 7, "error": {"class": "CommandNotFound", '
        b'"desc": "The command query-nonexistent has not been found"}}\r\n'
    )
    assert json.loads(lines[3])["error"]["desc"] == "Parameter 'bogus' is unexpected"
    parse_error = json.loads(lines[4])
    assert parse_error["error"]["class"] == "GenericError"
    assert "id" not in parse_error
    assert json.loads(lines[5])["error"]["desc"] == "QMP input member 'exec' is unexpected"
    assert json.loads(lines[6])["error"]["desc"] == "QMP input must be a JSON object"
    assert json.loads(lines[7]) == {"return": {"name": "vm-alpha"}}
    assert "UUID" in json.loads(lines[8])["return"]
    # the incomplete object waited for its closing brace
    assert json.loads(lines[9]) == {"return": {"name": "vm-alpha"}}
    assert len(lines) == 10


# -- through the real client ------------------------------------------------------------


def test_every_query_through_the_client() -> None:
    vm = SimulatedVM(
        "vm-q",
        uuid="11111111-2222-3333-4444-555555555555",
        balloon=64 << 20,
        memory=64 << 20,
        cpus=2,
        block_devices=["disk0"],
    )

    async def scenario() -> dict[str, Any]:
        async with Served(vm) as served:
            client = await connect(served.server.address, timeout=2)
            answers = {}
            for command in (
                "query-version", "query-status", "query-vnc", "query-vnc-servers",
                "query-name", "query-uuid", "query-kvm", "query-cpus-fast", "query-blockstats",
                "query-block", "query-balloon", "query-memory-size-summary", "query-migrate",
                "query-spice", "query-stats-schemas", "query-commands",
            ):  # fmt: skip
                answers[command] = await client.execute(command)
            answers["stats"] = await client.execute("query-stats", {"target": "vm"})
            with pytest.raises(CommandError) as missing:
                await client.execute("query-stats")
            assert missing.value.desc == "Parameter 'target' is missing"
            with pytest.raises(CommandError) as gone:
                await client.execute("query-events")
            assert gone.value.error_class == "CommandNotFound"
            await client.close()
            return answers

    answers = run(scenario)
    assert answers["query-version"]["qemu"] == {"micro": 22, "minor": 2, "major": 7}
    assert answers["query-status"] == {"status": "running", "singlestep": False, "running": True}
    assert answers["query-name"] == {"name": "vm-q"}
    assert answers["query-uuid"] == {"UUID": "11111111-2222-3333-4444-555555555555"}
    assert answers["query-vnc"]["enabled"] is True
    assert answers["query-vnc"]["clients"] == []
    assert len(answers["query-cpus-fast"]) == 2
    assert [d["device"] for d in answers["query-blockstats"]] == ["disk0"]
    assert answers["query-balloon"] == {"actual": 64 << 20}
    assert answers["query-memory-size-summary"]["base-memory"] == 64 << 20
    assert answers["stats"] == []
    names = {entry["name"] for entry in answers["query-commands"]}
    assert {"query-status", "query-vnc", "qmp_capabilities", "stop", "cont"} <= names


def test_balloon_absent_and_vnc_disabled() -> None:
    async def scenario() -> tuple[Any, Any]:
        async with Served(SimulatedVM(None, vnc=False)) as served:
            client = await connect(served.server.address, timeout=2)
            with pytest.raises(CommandError) as balloon:
                await client.execute("query-balloon")
            vnc = await client.execute("query-vnc")
            name = await client.execute("query-name")
            await client.close()
            return balloon.value, (vnc, name)

    balloon, (vnc, name) = run(scenario)
    assert balloon.error_class == "DeviceNotActive"
    assert balloon.desc == "No balloon device has been activated"
    assert vnc == {"enabled": False}
    assert name == {}


def test_state_changes_emit_events_and_change_answers() -> None:
    vm = SimulatedVM("vm-ev", status="prelaunch")

    async def scenario() -> tuple[list[str], list[Any]]:
        async with Served(vm) as served:
            client = await connect(served.server.address, timeout=2)
            statuses = []
            for change in (
                vm.resume, vm.pause, vm.pause, vm.resume, vm.shutdown, vm.reset,
                vm.resume, vm.guest_panic, vm.watchdog, vm.powerdown,
            ):  # fmt: skip
                change()
                statuses.append((await client.execute("query-status"))["status"])
            client_info = vm.vnc_connect("127.0.0.1", 47906)
            vm.vnc_connect("127.0.0.1", 47912, initialize=False)
            listed = (await client.execute("query-vnc"))["clients"]
            vm.vnc_disconnect(client_info)
            after = (await client.execute("query-vnc"))["clients"]
            await asyncio.sleep(0.05)
            events = []
            while (event := client.events.get_nowait()) is not None:
                events.append(event)
            await client.close()
            return [e.name for e in events], [statuses, listed, after, events]

    names, (statuses, listed, after, events) = run(scenario)
    assert statuses == [
        "running", "paused", "paused", "running", "shutdown", "prelaunch", "running",
        "guest-panicked", "guest-panicked", "guest-panicked",
    ]  # fmt: skip
    assert names == [
        "RESUME", "STOP", "RESUME", "SHUTDOWN", "STOP", "RESET", "RESUME",
        "GUEST_PANICKED", "STOP", "WATCHDOG", "POWERDOWN",
        "VNC_CONNECTED", "VNC_INITIALIZED", "VNC_CONNECTED", "VNC_DISCONNECTED",
    ]  # fmt: skip
    assert [c["service"] for c in listed] == ["47912", "47906"]  # newest first, as QEMU
    assert [c["service"] for c in after] == ["47912"]
    assert all(e.timestamp and abs(e.timestamp - time.time()) < 30 for e in events)
    assert events[-1].data["client"]["service"] == "47906"
    with pytest.raises(CommandFailed, match="Resetting the Virtual Machine is required"):
        vm.resume()


def test_events_only_after_negotiation() -> None:
    vm = SimulatedVM("vm-neg")

    async def scenario() -> list[bytes]:
        async with Served(vm) as served:
            reader, writer = await asyncio.open_unix_connection(served.server.path)
            await reader.readline()
            vm.pause()  # not negotiated yet: no STOP for this session
            writer.write(b'{"execute":"qmp_capabilities"}\n')
            lines = [await asyncio.wait_for(reader.readline(), 2)]
            vm.resume()
            lines.append(await asyncio.wait_for(reader.readline(), 2))
            writer.close()
            return lines

    negotiated, resume = run(scenario)
    assert json.loads(negotiated) == {"return": {}}
    assert json.loads(resume)["event"] == "RESUME"


def test_one_client_at_a_time_like_qemu() -> None:
    async def scenario() -> None:
        async with Served(SimulatedVM("vm-one")) as served:
            first = await connect(served.server.address, timeout=2)
            # a waiting client: in the listen backlog, never greeted while `first` holds on
            waiting = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            waiting.setblocking(False)
            waiting.connect(served.server.path)
            with pytest.raises(GreetingTimeoutError):
                await connect(served.server.address, timeout=0.3)
            # the backlog holds two (QEMU's listen(1) on Linux): the next fails at once
            with pytest.raises(BacklogFullError):
                await connect(served.server.address, timeout=0.3)
            waiting.close()
            assert served.server.client_connected
            await first.close()
            await asyncio.sleep(0.1)  # the server skips the two clients that gave up
            second = await connect(served.server.address, timeout=2)
            assert (await second.execute("query-name")) == {"name": "vm-one"}
            await second.close()

    run(scenario)


def test_command_log_proves_what_a_client_sent() -> None:
    vm = SimulatedVM("vm-log")

    async def scenario() -> None:
        async with Served(vm) as served:
            reader = await connect(served.server.address, timeout=2)
            await reader.execute("query-status")
            with pytest.raises(CommandRefusedError):
                await reader.execute("stop")
            await reader.close()
            assert set(vm.command_counts) == {"qmp_capabilities", "query-status"}
            writer = await connect(served.server.address, timeout=2, allow_write=True)
            await writer.execute("stop")
            assert vm.status == "paused"
            await writer.execute("cont")
            await writer.close()

    run(scenario)
    assert vm.command_counts == {
        "qmp_capabilities": 2, "query-status": 1, "stop": 1, "cont": 1,
    }  # fmt: skip
    assert list(vm.command_log)[-2:] == [("stop", None), ("cont", None)]


# -- fleet, churn, demo, separate process ----------------------------------------------


def test_fleet_serves_every_vm_and_removes_its_sockets(tmp_path: Path) -> None:
    fleet = SimulatedFleet(tmp_path / "fleet", 30, prefix="t")

    async def scenario() -> list[Any]:
        await fleet.start()
        try:
            names = []
            for name, address in fleet.monitors:
                client = await connect(address, timeout=2)
                names.append((name, (await client.execute("query-name"))["name"]))
                await client.close()
            return names
        finally:
            await fleet.close()

    names = run(scenario)
    assert len(names) == 30
    assert all(expected == got for expected, got in names)
    assert fleet.total_command_counts() == {"qmp_capabilities": 30, "query-name": 30}
    assert list((tmp_path / "fleet").iterdir()) == []
    statuses = {vm.status for vm in fleet.vms}
    assert "running" in statuses and len(statuses) > 1


def test_churn_is_seeded_and_changes_things() -> None:
    def history(seed: int) -> list[str]:
        churn = Churn([SimulatedVM(f"c{i}", block_devices=["disk0"]) for i in range(5)], seed=seed)
        return [churn.step() for _ in range(200)]

    first = history(3)
    assert first == history(3)
    assert first != history(4)
    assert any("paused" in step for step in first)
    assert any("VNC client connected" in step for step in first)
    assert any("VNC client left" in step for step in first)


def test_demo_vms_through_the_client() -> None:
    async def scenario() -> tuple[list[tuple[str, str]], dict[str, Any], Path]:
        demo = await start_demo(count=3, churn_interval=3600)
        try:
            seen = {}
            for name, address in demo.monitors:
                client = await connect(address, timeout=2)
                status = (await client.execute("query-status"))["status"]
                vnc = await client.execute("query-vnc")
                seen[name] = (status, len(vnc.get("clients", [])))
                await client.close()
            return demo.monitors, seen, demo.directory
        finally:
            await demo.close()

    monitors, seen, directory = run(scenario)
    assert [name for name, _ in monitors] == ["demo-web-01", "demo-db-01", "demo-build-01"]
    assert all(address.startswith("unix:") for _, address in monitors)
    assert seen == {
        "demo-web-01": ("running", 1),
        "demo-db-01": ("paused", 0),
        "demo-build-01": ("prelaunch", 0),
    }
    assert not directory.exists()


def test_fleet_in_a_separate_process(tmp_path: Path) -> None:
    control = tmp_path / "control.sock"
    proc = subprocess.Popen(
        [sys.executable, "-m", "qmp_exporter.sim", "--count", "3",
         "--dir", str(tmp_path / "f"), "--control", str(control)],
        stdout=subprocess.PIPE, text=True, cwd=REPO,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready 3"

        async def scenario() -> tuple[list[str], str]:
            client = await connect(f"unix:{tmp_path / 'f' / 'sim-0001.qmp'}", timeout=2)
            await client.execute("query-status")
            reader, writer = await asyncio.open_unix_connection(str(control))
            writer.write(b"vnc_connect sim-0001\ncounts\n")
            ok = (await reader.readline()).decode()
            counts = (await reader.readline()).decode()
            event = await asyncio.wait_for(client.events.get(), 2)
            writer.close()
            await client.close()
            return [ok, counts], event.name if event else ""

        (ok, counts), event = run(scenario)
        assert ok.startswith("ok ")
        assert json.loads(counts) == {"qmp_capabilities": 1, "query-status": 1}
        assert event == "VNC_CONNECTED"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    assert sorted(p.name for p in (tmp_path / "f").iterdir()) == []


# -- against real QEMU 7.2 transcripts --------------------------------------------------


@needs_transcripts
def test_answers_have_the_members_and_types_of_real_qemu() -> None:
    real = transcript_answers("01-none-queries-errors-stop-cont.jsonl")
    real05 = transcript_answers("05-pc-tcg-nodisk-powerdown-ignored-sigterm.jsonl")
    real02 = transcript_answers("02-vnc-clients-and-events.jsonl")
    vm = SimulatedVM("vm-alpha", vnc_service="5955")

    async def scenario() -> dict[str, Any]:
        async with Served(vm) as served:
            client = await connect(served.server.address, timeout=2)
            ours = {}
            for command in (
                "query-version", "query-status", "query-name", "query-uuid", "query-kvm",
                "query-memory-size-summary", "query-migrate", "query-vnc", "query-spice",
                "query-vnc-servers", "query-cpus-fast",
            ):  # fmt: skip
                ours[command] = await client.execute(command)
            vm.vnc_connect("127.0.0.1", 47906)
            ours["query-vnc+client"] = await client.execute("query-vnc")
            await client.close()
            return ours

    ours = run(scenario)
    for command in (
        "query-version", "query-status", "query-name", "query-uuid", "query-kvm",
        "query-memory-size-summary", "query-migrate", "query-vnc", "query-spice",
    ):  # fmt: skip
        assert shape(ours[command]) == shape(first_return(real, command)), command
    assert shape(ours["query-vnc-servers"]) == shape(first_return(real02, "query-vnc-servers"))
    assert shape(ours["query-cpus-fast"]) == shape(first_return(real05, "query-cpus-fast"))
    with_client = next(a["return"] for a in real02["query-vnc"] if a["return"]["clients"])
    assert shape(ours["query-vnc+client"]) == shape(with_client)
    balloon_error = real["query-balloon"][0]["error"]
    assert balloon_error == {
        "class": "DeviceNotActive",
        "desc": "No balloon device has been activated",
    }


@needs_transcripts
def test_blockstats_and_events_match_real_qemu() -> None:
    real06 = transcript_answers("06-pc-tcg-disk-balloon-guest-shutdown.jsonl")
    real_disk = real06["query-blockstats"][0]["return"][0]
    vm = SimulatedVM("vm-pc-disk", block_devices=["disk0"], balloon=64 << 20)
    ours_disk = vm.answer("query-blockstats", None)
    ours_disk = json.loads(ours_disk)[0]
    assert set(ours_disk) <= set(real_disk)
    assert shape(ours_disk["stats"]) == shape(real_disk["stats"])
    assert shape(json.loads(vm.answer("query-balloon", None))) == shape(
        real06["query-balloon"][0]["return"]
    )

    real_events = {
        **transcript_events("02-vnc-clients-and-events.jsonl"),
        **transcript_events("06-pc-tcg-disk-balloon-guest-shutdown.jsonl"),
        **transcript_events("01-none-queries-errors-stop-cont.jsonl"),
    }
    lines: list[bytes] = []
    vm.add_listener(lines.append)
    vm.vnc_connect("127.0.0.1", 47906)
    vm.vnc_disconnect()
    vm.pause()
    vm.resume()
    vm.reset()
    vm.powerdown()
    vm.shutdown()
    assert all(line.endswith(b"\r\n") for line in lines)
    ours = [json.loads(line) for line in lines]
    for message in ours:
        real = real_events[message["event"]][0]
        assert shape(message) == shape(real), message["event"]


def test_poll_gaps_time_the_polls_of_each_vm() -> None:
    gaps = PollGaps()
    first, second = SimulatedVM("g1"), SimulatedVM("g2")
    gaps(first, "query-status")
    gaps(second, "query-status")
    time.sleep(0.05)
    gaps(first, "query-vnc")  # not the marker
    gaps(first, "query-status")
    summary = gaps.summary()
    assert summary["count"] == 1
    assert 0.04 < summary["max"] < 1
    gaps.reset()
    assert gaps.summary() == {"count": 0}


# -- dialects, TCP, layering --------------------------------------------------------------


@pytest.mark.parametrize(
    ("dialect", "greeting", "capabilities_reply", "status"),
    [
        ("2009", {"QMP": {"capabilities": []}},
         {"error": {"class": "CommandNotFound",
                    "desc": "The command qmp_capabilities has not been found"}},
         {"running": True, "singlestep": False}),
        ("2010", {"QMP": {"version": {"qemu": "0.13.0", "package": ""}, "capabilities": []}},
         {"return": {}}, {"running": True, "singlestep": False}),
        ("modern", {"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7},
                                        "package": "qmp-exporter simulator"},
                            "capabilities": ["oob"]}},
         {"return": {}}, {"status": "running", "singlestep": False, "running": True}),
    ],
)  # fmt: skip
def test_each_dialect_greets_negotiates_and_answers_like_its_era(
    dialect: str, greeting: dict, capabilities_reply: dict, status: dict
) -> None:
    async def scenario() -> list[bytes]:
        async with Served(SimulatedVM("vm-era", dialect=dialect)) as served:
            lines = [b'{"execute": "qmp_capabilities"}\n', b'{"execute": "query-status"}\n']
            return await raw_session(served.server.path, lines)

    received = run(scenario)
    assert all(line.endswith(b"\r\n") for line in received)
    assert [json.loads(line) for line in received] == [
        greeting,
        capabilities_reply,
        {"return": status},
    ]


def test_a_vm_with_fewer_commands_answers_command_not_found() -> None:
    async def scenario() -> tuple[Any, str]:
        vm = SimulatedVM("vm-old", commands={"query-status", "query-commands"})
        async with Served(vm) as served:
            client = await connect(served.server.address, timeout=2)
            listed = await client.execute("query-commands")
            with pytest.raises(CommandError) as caught:
                await client.execute("query-vnc")
            await client.close()
            return listed, caught.value.error_class

    listed, error_class = run(scenario)
    assert listed == [{"name": "query-commands"}, {"name": "query-status"}]
    assert error_class == "CommandNotFound"


def test_a_tcp_monitor_serves_like_a_unix_one() -> None:
    async def scenario() -> tuple[str, Any]:
        server = SimulatedMonitorServer(SimulatedVM("vm-tcp"), "tcp:127.0.0.1:0")
        await server.start()
        try:
            client = await connect(server.address, timeout=2)
            name = await client.execute("query-name")
            await client.close()
            return server.address, name
        finally:
            await server.close()

    address, name = run(scenario)
    assert address.startswith("tcp:127.0.0.1:") and not address.endswith(":0")
    assert name == {"name": "vm-tcp"}


def test_the_simulator_imports_no_server_code() -> None:
    code = (
        "import sys, qmp_exporter.sim, qmp_exporter.sim.cli, qmp_exporter.sim.demo\n"
        "print(' '.join(sorted(m for m in sys.modules if m.startswith('qmp_exporter'))))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)}, check=True,
    )  # fmt: skip
    loaded = result.stdout.split()
    assert "qmp_exporter.sim.session" in loaded
    forbidden = ("app", "web", "exposition", "polling", "alerting", "cli")
    assert [m for m in loaded if m.split(".")[1:2] and m.split(".")[1] in forbidden] == []
