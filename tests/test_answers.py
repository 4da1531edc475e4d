"""The shared QMP answer parsers, on real QEMU 7.2 answers and on answers of the wrong shape."""

from __future__ import annotations

import pytest

from qmp_exporter.fleet.state import Identity, VncState
from qmp_exporter.polling.answers import (
    MalformedAnswerError,
    parse_identity,
    parse_name,
    parse_status,
    parse_uuid,
    parse_version_answer,
    parse_vnc,
    returned,
)
from qmp_exporter.qmp import CommandError
from tests.helpers.transcripts import earlier


def test_status_of_a_running_and_a_prelaunch_vm():
    assert parse_status(earlier("STATUS_01")["return"]) == ("running", True)
    assert parse_status(earlier("STATUS_PRELAUNCH_04")["return"]) == ("prelaunch", False)


def test_status_in_the_seed_dialect_is_read_from_running():
    assert parse_status({"running": False, "singlestep": False}) == ("paused", False)


@pytest.mark.parametrize(
    "answer",
    [[], {"status": "running"}, {"running": "yes"}, {"running": True, "status": 7},
     {"running": True, "status": ""}, {"running": True, "status": "x" * 65}],
)  # fmt: skip
def test_status_of_the_wrong_shape_is_refused(answer):
    with pytest.raises(MalformedAnswerError, match="query-status"):
        parse_status(answer)


def test_vnc_listening_with_and_without_a_client():
    assert parse_vnc(earlier("VNC_01")["return"]) == VncState(
        True, "127.0.0.1", "5955", "ipv4", "none", 0
    )
    assert parse_vnc(earlier("VNC_ONE_CLIENT_02")["return"]).clients == 1
    assert parse_vnc(earlier("VNC_DISABLED_03")["return"]) == VncState(enabled=False)


@pytest.mark.parametrize(
    "answer",
    [None, {"enabled": 1}, {"enabled": True, "clients": {}}, {"enabled": True, "host": ["h"]},
     {"enabled": True, "service": True}],
)  # fmt: skip
def test_vnc_of_the_wrong_shape_is_refused(answer):
    with pytest.raises(MalformedAnswerError, match="query-vnc"):
        parse_vnc(answer)


def test_vnc_texts_are_bounded():
    state = parse_vnc({"enabled": True, "host": "h" * 1000, "service": 5900})
    assert len(state.host) == 256 and state.service == "5900"


def test_version_name_and_uuid():
    assert parse_version_answer(earlier("VERSION_01")["return"]) == (
        "7.2.22",
        "Debian 1:7.2+dfsg-7+deb12u18+b3",
    )
    assert parse_version_answer({"qemu": "0.12.50", "package": ""}) == ("0.12.50", "")
    assert parse_name(earlier("NAME_01")["return"]) == "vm-alpha"
    assert parse_uuid(earlier("UUID_01")["return"]) == "11111111-2222-3333-4444-555555555555"


def test_a_vm_without_a_name_has_none_but_a_name_of_the_wrong_type_is_refused():
    assert parse_name({}) is None
    with pytest.raises(MalformedAnswerError, match="query-name"):
        parse_name({"name": 42})
    with pytest.raises(MalformedAnswerError, match="query-version"):
        parse_version_answer("7.2.22")


def test_identity_from_recorded_answers():
    identity = parse_identity(
        earlier("VERSION_01")["return"], earlier("NAME_01")["return"], earlier("UUID_01")["return"]
    )
    assert identity == Identity(
        "7.2.22", "Debian 1:7.2+dfsg-7+deb12u18+b3", "vm-alpha",
        "11111111-2222-3333-4444-555555555555",
    )  # fmt: skip


def test_identity_of_an_old_qemu_without_name_and_uuid_commands():
    missing = CommandError("query-name", "CommandNotFound", "The command has not been found")
    identity = parse_identity({"qemu": "0.12.50"}, missing, missing)
    assert identity == Identity(version="0.12.50")


def test_identity_raises_qemus_other_errors():
    broken = CommandError("query-uuid", "GenericError", "no")
    with pytest.raises(CommandError):
        parse_identity(earlier("VERSION_01")["return"], {}, broken)
    with pytest.raises(CommandError):
        returned(CommandError("query-version", "GenericError", "no"))
    assert returned({"a": 1}) == {"a": 1}
