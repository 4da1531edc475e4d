"""A user's fake QMP monitor whose listening socket names another process as its peer (stdlib
only: run it as the unprivileged attacker, ``AS_NOBODY``):

    python3 hostile_listener.py launder SOCKET CPUS QEMU-SOCKET -- QEMU-ARGV...
    python3 hostile_listener.py orphan SOCKET CPUS PIDFILE

``launder``: listen on SOCKET, fork; this process execs QEMU-ARGV (same PID: ``listen()``'s
caller, which ``SO_PEERCRED`` and ``SO_PEERPIDFD`` name, is now a real QEMU, root's binary),
the child serves SOCKET and, once QEMU has made QEMU-SOCKET, renames SOCKET over it: whoever
connects to QEMU's advertised monitor reaches the fake. ``orphan``: listen, fork; the child
serves, this process writes its PID to PIDFILE and exits (its PID may be reused later).

The fake answers what the exporter asks; ``query-cpus-fast`` lists CPUS vCPUs, all on the
threads of the process named as the peer (so every vCPU's ``schedstat`` would be readable).
Each client is served in a thread: an asyncio server would call ``listen()`` again, which
makes the caller the socket's peer.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time

COMMANDS = ("query-status", "query-vnc", "query-version", "query-name", "query-commands",
            "query-cpus-fast", "query-kvm", "query-block", "query-blockstats")  # fmt: skip
VERSION = {"qemu": {"major": 7, "minor": 2, "micro": 0}, "package": ""}


def answer(command: str, cpus: int, peer: int) -> object:
    if command == "query-cpus-fast":
        try:
            threads = sorted(int(t) for t in os.listdir(f"/proc/{peer}/task"))
        except OSError:
            threads = [peer]
        return [{"cpu-index": i, "thread-id": threads[i % len(threads)]} for i in range(cpus)]
    return {
        "qmp_capabilities": {},
        "query-status": {"status": "running", "running": True, "singlestep": False},
        "query-vnc": {"enabled": False},
        "query-version": VERSION,
        "query-name": {"name": "fake"},
        "query-commands": [{"name": name} for name in COMMANDS],
        "query-kvm": {"enabled": True, "present": True},
        "query-block": [],
        "query-blockstats": [],
    }.get(command)


def serve(connection: socket.socket, cpus: int, peer: int) -> None:
    with connection:
        connection.sendall(json.dumps({"QMP": {"version": VERSION, "capabilities": []}}).encode()
                           + b"\r\n")  # fmt: skip
        for line in connection.makefile("rb"):
            try:
                request = json.loads(line)
            except ValueError:
                continue
            returned = answer(request.get("execute", ""), cpus, peer)
            reply: dict[str, object] = (
                {"return": returned} if returned is not None
                else {"error": {"class": "CommandNotFound", "desc": "not found"}}
            )  # fmt: skip
            if "id" in request:
                reply["id"] = request["id"]
            try:
                connection.sendall(json.dumps(reply).encode() + b"\r\n")
            except OSError:
                return


def main(argv: list[str]) -> None:
    mode, path, cpus = argv[0], argv[1], int(argv[2])
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    os.chmod(path, 0o777)
    listener.listen(16)
    peer = os.getpid()  # the PID SO_PEERCRED gives for this listener, whatever runs there
    if os.fork() != 0:
        if mode == "launder":
            qemu = argv[argv.index("--") + 1 :]
            os.execv(qemu[0], qemu)  # the listener is close-on-exec: QEMU does not hold it
        with open(argv[3], "w") as pidfile:
            pidfile.write(f"{peer}\n")
        os._exit(0)
    if mode == "launder":
        target = argv[3]
        deadline = time.monotonic() + 10
        while not os.path.exists(target) and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.2)  # QEMU listens on it by now
        os.rename(path, target)
        open(target + ".taken", "w").close()
    while True:
        connection, _ = listener.accept()
        threading.Thread(target=serve, args=(connection, cpus, peer), daemon=True).start()


if __name__ == "__main__":
    main(sys.argv[1:])
