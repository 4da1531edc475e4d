"""Python 3.11's cancel race, built on purpose (issue 23, attack report 3's D5); run by
``tests/test_cancel_race.py`` under Debian's ``/usr/bin/python3`` with the repository on
``PYTHONPATH``. Prints one JSON object: each case's outcome, ``"cancelled"`` (the cancel
went through) or ``"swallowed"`` (the task carried on as if never cancelled).

The race: a task waits for something that completes in the same loop iteration as the
task is cancelled. 3.11's ``asyncio.wait_for`` then returns the result and drops the cancel
(3.12 rebuilt it on ``asyncio.timeout``). The cases:

- ``control``: a bare ``wait_for`` of a future, so the race is shown to be built (swallowed
  on 3.11, cancelled on 3.12);
- ``greeting``: a QMP connect, cancelled by the same callback that delivers the greeting;
- ``tcp_connect``: a QMP connect over TCP, cancelled as the TCP connect completes;
- ``poller``: a poll-mode poller's task, cancelled as the greeting of a poll arrives.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from qmp_exporter.config import MonitorConfig
from qmp_exporter.polling.poller import MonitorPoller, PollSettings
from qmp_exporter.qmp import QMPClient, connect

GREETING = (
    b'{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": ""},'
    b' "capabilities": []}}\r\n'
)
#: How long a case waits for its task to end once cancelled.
SETTLE = 2.0


async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A monitor that greets and answers every command with an empty return."""
    writer.write(GREETING)
    try:
        while line := await reader.readline():
            command = json.loads(line)
            writer.write(json.dumps({"return": {}, "id": command.get("id")}).encode() + b"\r\n")
    except (ConnectionError, ValueError):
        pass
    finally:
        writer.close()


async def outcome(task: asyncio.Task[Any]) -> str:
    """How ``task`` took its cancel: ended cancelled, or still running / ended normally."""
    await asyncio.wait((task,), timeout=SETTLE)
    if task.done() and task.cancelled():
        return "cancelled"
    task.cancel()  # once more, to end it (the swallowed cancel was the first)
    await asyncio.wait((task,), timeout=SETTLE)
    if task.done() and not task.cancelled() and task.exception() is None:
        result = task.result()
        if isinstance(result, QMPClient):
            await result.close()
    return "swallowed"


async def control() -> str:
    inner: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(asyncio.wait_for(inner, 10))
    await asyncio.sleep(0)  # the task now waits
    inner.set_result("done")  # completes, and in the same iteration ...
    task.cancel()  # ... the cancel arrives
    return await outcome(task)


def cancelling_on_greeting(victim: Callable[[], asyncio.Task[Any] | None]) -> Callable[[], None]:
    """Make the next greeting a client receives cancel ``victim()`` in the same callback;
    returns the undo."""
    original = QMPClient._receive
    armed = [True]

    def receive(self: QMPClient, data: bytes) -> None:
        original(self, data)
        task = victim()
        if armed[0] and self._greeted.done() and task is not None:
            armed[0] = False
            task.cancel()

    QMPClient._receive = receive  # type: ignore[method-assign]
    return lambda: setattr(QMPClient, "_receive", original)


async def greeting(directory: Path) -> str:
    path = directory / "greeting.qmp"
    server = await asyncio.start_unix_server(serve, str(path))
    tasks: list[asyncio.Task[Any]] = []
    undo = cancelling_on_greeting(lambda: tasks[0] if tasks else None)
    try:
        tasks.append(asyncio.create_task(connect(f"unix:{path}", 5)))
        return await outcome(tasks[0])
    finally:
        undo()
        server.close()


async def tcp_connect() -> str:
    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    loop = asyncio.get_running_loop()
    original = loop.create_connection
    tasks: list[asyncio.Task[Any]] = []

    async def create_connection(*args: Any, **kwargs: Any) -> Any:
        connected = await original(*args, **kwargs)
        tasks[0].cancel()  # as the connect completes
        return connected

    loop.create_connection = create_connection  # type: ignore[method-assign]
    try:
        tasks.append(asyncio.create_task(connect(f"tcp:127.0.0.1:{port}", 5)))
        return await outcome(tasks[0])
    finally:
        del loop.create_connection  # type: ignore[method-assign]
        server.close()


async def poller(directory: Path) -> str:
    path = directory / "poller.qmp"
    server = await asyncio.start_unix_server(serve, str(path))
    monitor = MonitorConfig("race", f"unix:{path}", mode="poll")
    watched = MonitorPoller(monitor, PollSettings(interval=0.05, timeout=5, start_spread=0))
    undo = cancelling_on_greeting(lambda: watched._task)
    try:
        watched.start()
        assert watched._task is not None
        return await outcome(watched._task)
    finally:
        undo()
        await asyncio.wait((asyncio.ensure_future(watched.stop()),), timeout=SETTLE)
        server.close()


async def main() -> dict[str, str]:
    with tempfile.TemporaryDirectory() as name:
        directory = Path(name)
        cases: dict[str, Callable[[], Coroutine[Any, Any, str]]] = {
            "control": control,
            "greeting": lambda: greeting(directory),
            "tcp_connect": tcp_connect,
            "poller": lambda: poller(directory),
        }
        found = {"python": sys.version.split()[0]}
        for case, run in cases.items():
            found[case] = await run()
        return found


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main())))
