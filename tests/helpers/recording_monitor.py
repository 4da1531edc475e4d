"""A tiny QMP monitor on a unix socket that records every command it receives.

For proving what a client did *not* send: real QEMU cannot tell us that.
"""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path
from typing import Any

GREETING = {
    "QMP": {
        "version": {"qemu": {"major": 7, "minor": 2, "micro": 22}, "package": "recorder"},
        "capabilities": ["oob"],
    }
}
COMMANDS = ["qmp_capabilities", "query-commands", "query-status", "query-name", "stop", "cont"]


class RecordingMonitor:
    """Serves clients one after another; ``received`` lists every ``(execute, arguments)``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.received: list[tuple[str, dict[str, Any] | None]] = []
        self._server = socket.socket(socket.AF_UNIX)
        self._server.bind(str(path))
        self._server.listen(1)
        self._server.settimeout(0.05)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"unix:{self.path}"

    @property
    def commands(self) -> list[str]:
        return [name for name, _ in self.received]

    def close(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=5)
        self._server.close()

    def _serve(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(None)
                self._session(conn)

    def _session(self, conn: socket.socket) -> None:
        conn.sendall(json.dumps(GREETING).encode() + b"\r\n")
        for line in conn.makefile("rb"):
            message = json.loads(line)
            name = message.get("execute")
            self.received.append((name, message.get("arguments")))
            answer: dict[str, Any] = {"return": self._answer(name)}
            if name not in COMMANDS and not str(name).startswith("query-"):
                answer = {"error": {"class": "CommandNotFound", "desc": f"no {name}"}}
            if "id" in message:
                answer["id"] = message["id"]
            conn.sendall(json.dumps(answer).encode() + b"\r\n")

    @staticmethod
    def _answer(name: str) -> Any:
        if name == "query-commands":
            return [{"name": c} for c in COMMANDS]
        if name == "query-status":
            return {"status": "running", "singlestep": False, "running": True}
        return {}
