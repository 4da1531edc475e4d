"""What libvirt's read-only socket gives an unprivileged user (groundwork of issue 24), against a
real system-mode libvirtd in a private mount namespace (tests/helpers/libvirt_system.py) with
one running TCG domain with VNC and no ``<qemu:commandline>``:

* as ``nobody``, ``openReadOnly`` lists the domain and ``getAllDomainStats`` gives its state,
  CPU and vCPU figures; read-write ``open``, ``suspend`` and ``qemu-monitor-command`` are
  refused;
* a read-only connection gets GRAPHICS events for a real RFB login and LIFECYCLE events for
  ``virsh suspend`` / ``resume``;
* ``virsh dominfo`` shows no taint afterwards;
* the host's own /run/libvirt, /etc/libvirt, /var/lib/libvirt … are not changed.

Where its programs are missing the test fails; ``QMP_EXPORTER_SKIP_LIBVIRT=1`` skips it instead.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.libvirt import require
from tests.helpers.libvirt_system import CLIENT_PYTHON, Domain, SystemLibvirt, missing
from tests.helpers.pidns import AS_NOBODY
from tests.helpers.rfb import rfb_handshake

pytestmark = pytest.mark.libvirt

DOMAIN = "lvsys1"
CLIENT = Path(__file__).parent / "helpers" / "libvirt_ro_client.py"
CLIENT_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C", "HOME": "/nonexistent"}
#: The host paths a test libvirt must leave alone (a developer's libvirt lives there).
HOST_PATHS = (
    "/run/libvirt", "/run/dbus", "/etc/libvirt", "/var/lib/libvirt", "/var/cache/libvirt",
    "/var/log/libvirt",
)  # fmt: skip
EVENT_TIMEOUT = 30.0
# libvirt's enums (include/libvirt/libvirt-domain.h), so the test needs no binding itself.
VIR_DOMAIN_RUNNING = 1
VIR_DOMAIN_EVENT_SUSPENDED = 3
VIR_DOMAIN_EVENT_RESUMED = 4
GRAPHICS_CONNECT, GRAPHICS_INITIALIZE, GRAPHICS_DISCONNECT = 0, 1, 2


def host_state() -> dict[str, list[tuple[str, int, int]] | None]:
    """What is at :data:`HOST_PATHS` on the host: each entry's path, mtime and size."""
    state: dict[str, list[tuple[str, int, int]] | None] = {}
    for top in HOST_PATHS:
        if not os.path.lexists(top):
            state[top] = None
            continue
        entries = []
        for directory, names, files in os.walk(top):
            for name in sorted(names + files):
                info = os.lstat(os.path.join(directory, name))
                entries.append((os.path.join(directory, name), info.st_mtime_ns, info.st_size))
            if len(entries) > 5000:
                break
        info = os.lstat(top)
        state[top] = [(top, info.st_mtime_ns, info.st_size), *sorted(entries)]
    return state


@pytest.fixture(scope="module")
def system_libvirt() -> Iterator[tuple[SystemLibvirt, Domain]]:
    require(missing(), "system libvirt")
    before = host_state()
    began = time.monotonic()
    with SystemLibvirt() as lv:
        domain = lv.start_vnc_domain(DOMAIN)
        print(f"system libvirt up in {time.monotonic() - began:.2f}s: {lv.timings}")
        yield lv, domain
    assert host_state() == before, "the host's libvirt paths changed"


def as_nobody(*argv: str) -> list[str]:
    # -I: not the script's own directory first on sys.path (tests/helpers/libvirt.py is there).
    return [*AS_NOBODY, CLIENT_PYTHON, "-I", str(CLIENT), *argv]


def test_host_paths_are_not_the_daemons(system_libvirt: tuple[SystemLibvirt, Domain]) -> None:
    lv, _ = system_libvirt
    inside = lv.in_namespace("stat", "-c", "%d:%i", "/run/libvirt/libvirt-sock-ro").stdout.strip()
    ours = os.stat(lv.sockets / "libvirt-sock-ro")
    assert inside == f"{ours.st_dev}:{ours.st_ino}"  # the namespace's /run is our ROOT/run
    pid_file = lv.in_namespace("cat", f"/run/libvirt/qemu/{DOMAIN}.pid").stdout.strip()
    assert pid_file.isdigit() and (lv.root / f"run/libvirt/qemu/{DOMAIN}.pid").exists()
    # The domain's definition is in ROOT/etc, not in the host's /etc/libvirt.
    assert (lv.root / f"etc/qemu/{DOMAIN}.xml").exists()
    assert not Path(f"/etc/libvirt/qemu/{DOMAIN}.xml").exists()


def test_unprivileged_read_only_client(system_libvirt: tuple[SystemLibvirt, Domain]) -> None:
    lv, _ = system_libvirt
    done = subprocess.run(
        as_nobody("probe", lv.ro_uri, lv.uri), env=CLIENT_ENV, capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"{done.stderr}\n{lv.logs()}"
    result = json.loads(done.stdout.splitlines()[-1])
    print(json.dumps(result, indent=1))
    assert list(result["domains"]) == [DOMAIN]
    stats = result["stats"][DOMAIN]
    assert stats["state.state"] == VIR_DOMAIN_RUNNING
    assert stats["cpu.time"] > 0
    assert stats["vcpu.0.time"] > 0
    assert "vcpu.0.delay" not in stats or stats["vcpu.0.delay"] >= 0
    refused = result["refused"]
    # Read-write: polkit's org.libvirt.unix.manage is auth_admin_keep and there is no agent.
    assert refused["open"] is not None and "polkit" in refused["open"], refused
    assert "read only access prevents virDomainSuspend" in refused["suspend"], refused
    assert "read only access prevents" in refused["qemuMonitorCommand"], refused


class EventClient:
    """``libvirt_ro_client.py events`` as nobody; its JSON lines in a queue."""

    def __init__(self, uri: str) -> None:
        self.process = subprocess.Popen(
            as_nobody("events", uri), env=CLIENT_ENV, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        threading.Thread(target=self._read, daemon=True).start()
        first = self.lines.get(timeout=EVENT_TIMEOUT)
        assert first == "ready", first

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.strip())

    def wait_for(self, what: str, match: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        deadline = time.monotonic() + EVENT_TIMEOUT
        while True:
            for event in self.seen:
                if match(event):
                    return event
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {what} within {EVENT_TIMEOUT:g}s; seen {self.seen}")
            try:
                self.seen.append(json.loads(self.lines.get(timeout=left)))
            except queue.Empty:
                continue

    def close(self) -> str:
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(15)
        assert self.process.stderr is not None
        return self.process.stderr.read()


def test_read_only_events(system_libvirt: tuple[SystemLibvirt, Domain]) -> None:
    lv, domain = system_libvirt
    client = EventClient(lv.ro_uri)
    try:

        def graphics(phase: int) -> Callable[[dict[str, Any]], bool]:
            return lambda e: e["kind"] == "graphics" and e["phase"] == phase

        with rfb_handshake(domain.vnc_port) as session:
            connect = client.wait_for("GRAPHICS connect", graphics(GRAPHICS_CONNECT))
            client.wait_for("GRAPHICS initialize", graphics(GRAPHICS_INITIALIZE))
            local_port = session.sock.getsockname()[1]
        client.wait_for("GRAPHICS disconnect", graphics(GRAPHICS_DISCONNECT))
        assert connect["domain"] == DOMAIN
        assert connect["remote"]["node"] == "127.0.0.1"
        assert connect["remote"]["service"] == str(local_port)
        assert connect["scheme"] == "none"

        lv.virsh("suspend", DOMAIN)
        client.wait_for(
            "LIFECYCLE suspended", lambda e: e.get("event") == VIR_DOMAIN_EVENT_SUSPENDED
        )
        assert lv.virsh("domstate", DOMAIN, readonly=True).stdout.strip() == "paused"
        lv.virsh("resume", DOMAIN)
        client.wait_for("LIFECYCLE resumed", lambda e: e.get("event") == VIR_DOMAIN_EVENT_RESUMED)
    finally:
        stderr = client.close()
        print("\n".join(json.dumps(event) for event in client.seen))
    assert client.process.returncode == 0, stderr


def test_no_taint(system_libvirt: tuple[SystemLibvirt, Domain]) -> None:
    """Last: after everything the read-only clients did, the domain is not tainted."""
    lv, _ = system_libvirt
    info = lv.virsh("dominfo", DOMAIN).stdout
    assert "State:" in info and "running" in info
    assert "taint" not in info.lower(), info
    log = (lv.root / f"log/qemu/{DOMAIN}.log").read_text()
    assert "taint" not in log.lower(), log
