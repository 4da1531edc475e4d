"""The real Linux test guest (tests/helpers/guest.py, scripts/build-test-guest.sh) boots on
every QEMU of the matrix and its agent answers the read-only commands the guest-agent metrics
will use. One boot per QEMU version (module-scoped); the guest is built on first use and
cached outside the clone (CONTRIBUTING.md, "The test guest")."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from qmp_exporter.qmp import CommandRefusedError, connect_agent
from tests.helpers.guest import (
    ADDRESS,
    DATA_MOUNT,
    HOSTNAME,
    GuestFiles,
    GuestUnavailable,
    RunningGuest,
    guest_files,
    running_guest,
)
from tests.helpers.qemu import qmp_command
from tests.helpers.qemu_versions import QemuBuild


@pytest.fixture(scope="module")
def built_guest() -> GuestFiles:
    try:
        return guest_files()
    except GuestUnavailable as error:
        reason = str(error)
    pytest.fail(reason, pytrace=False)


@pytest.fixture(scope="module")
def guest(qemu_binary: QemuBuild, built_guest: GuestFiles) -> Iterator[RunningGuest]:
    directory = Path(tempfile.mkdtemp(prefix="qgst-"))  # short: unix socket paths
    try:
        with running_guest(qemu_binary, built_guest, directory) as running:
            yield running
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_agent_answers_ping(guest: RunningGuest) -> None:
    assert guest.agent("guest-ping") == {}


def test_data_disk_is_ext4_with_files(guest: RunningGuest) -> None:
    filesystems = guest.agent("guest-get-fsinfo")
    data = [fs for fs in filesystems if fs["mountpoint"] == DATA_MOUNT]
    assert len(data) == 1, filesystems
    assert data[0]["type"] == "ext4"
    assert data[0]["total-bytes"] > data[0]["used-bytes"] > 0
    assert [disk["bus-type"] for disk in data[0]["disk"]] == ["virtio"], data[0]


def test_osinfo(guest: RunningGuest, built_guest: GuestFiles) -> None:
    info = guest.agent("guest-get-osinfo")
    assert info["id"] == "debian"
    assert info["version-id"] == "12"
    assert info["machine"] == "x86_64"
    # The kernel is the one linux-image-amd64 named: linux-image-<release>=<version>.
    kernel_package = next(p for p in built_guest.packages if p.startswith("linux-image-"))
    assert info["kernel-release"] == kernel_package.split("=")[0].removeprefix("linux-image-")


def test_host_name(guest: RunningGuest) -> None:
    assert guest.agent("guest-get-host-name") == {"host-name": HOSTNAME}


def test_root_is_logged_in(guest: RunningGuest) -> None:
    # init logs root in on ttyS0 beside starting the agent: wait a little for its utmp entry.
    deadline = time.monotonic() + 10
    while not (users := guest.agent("guest-get-users")) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert [user["user"] for user in users] == ["root"]
    assert users[0]["login-time"] > 0


def test_network_interface_has_its_address(guest: RunningGuest) -> None:
    interfaces = {i["name"]: i for i in guest.agent("guest-network-get-interfaces")}
    addresses = [a["ip-address"] for a in interfaces["eth0"].get("ip-addresses", [])]
    assert ADDRESS in addresses, interfaces


def test_qmp_sees_the_balloon(guest: RunningGuest) -> None:
    assert qmp_command(guest.qmp_path, "query-balloon") == {"actual": 256 * 1024 * 1024}


# -- the package's guest-agent client (qmp_exporter.qmp.agent) against the real agent ----------

#: What the guest view will read.
READS = (
    "guest-ping", "guest-info", "guest-get-fsinfo", "guest-get-osinfo", "guest-get-host-name",
    "guest-network-get-interfaces", "guest-get-users",
)  # fmt: skip
#: Agent commands that change the guest: refused by the client, never sent.
WRITES = (
    "guest-exec", "guest-file-open", "guest-file-write", "guest-fsfreeze-freeze",
    "guest-shutdown", "guest-set-time", "guest-set-user-password", "guest-suspend-disk",
    "guest-network-set-interfaces", "qmp_capabilities", "query-status",
)  # fmt: skip


def test_the_agent_client_reads_what_the_guest_view_needs(guest: RunningGuest) -> None:
    async def session() -> dict[str, Any]:
        async with await connect_agent(f"unix:{guest.agent_path}", timeout=10) as agent:
            return {command: await agent.execute(command) for command in READS}

    answers = asyncio.run(session())
    assert answers["guest-ping"] == {}
    assert answers["guest-info"]["version"]
    (data,) = [fs for fs in answers["guest-get-fsinfo"] if fs["mountpoint"] == DATA_MOUNT]
    assert data["type"] == "ext4" and data["total-bytes"] > data["used-bytes"] > 0
    assert answers["guest-get-osinfo"]["kernel-release"]
    assert answers["guest-get-host-name"] == {"host-name": HOSTNAME}
    addresses = [
        a["ip-address"]
        for nic in answers["guest-network-get-interfaces"]
        for a in nic.get("ip-addresses", ())
    ]
    assert ADDRESS.split("/")[0] in addresses


def test_the_agent_client_never_sends_a_command_that_changes_the_guest(
    guest: RunningGuest,
) -> None:
    async def session() -> list[str]:
        refused = []
        async with await connect_agent(f"unix:{guest.agent_path}", timeout=10) as agent:
            for command in WRITES:
                with pytest.raises(CommandRefusedError):
                    await agent.execute(command)
                refused.append(command)
            assert await agent.execute("guest-ping") == {}  # the session goes on
        return refused

    assert asyncio.run(session()) == list(WRITES)
    assert [fs["mountpoint"] for fs in guest.agent("guest-get-fsinfo")].count(DATA_MOUNT) == 1
