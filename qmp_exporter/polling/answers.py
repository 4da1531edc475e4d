"""What QMP answers mean: the one place that reads ``query-status``, ``query-vnc``,
``query-version``, ``query-name`` and ``query-uuid`` for the poller and ``inventory`` (and
whether ``query-spice`` says SPICE is on, for the poller).

The parsers are strict: an answer of the wrong shape raises :class:`MalformedAnswerError`.
The poller lets that fail the poll; ``inventory`` catches it per field and shows ``-``.
Every string kept is bounded (cut by :func:`~qmp_exporter.collectors.values.bounded`, as
the collectors' label values are), so a lying monitor cannot grow a label without limit.
"""

from __future__ import annotations

from typing import Any

from qmp_exporter.collectors.values import MAX_LABEL_CHARS, bounded
from qmp_exporter.fleet.state import Identity, VncState
from qmp_exporter.qmp import CommandError, ProtocolError, parse_version

#: Longest RunState kept (the longest QAPI value is 14 characters).
MAX_STATUS_CHARS = 64
#: Longest VNC host, service, family or auth kept.
MAX_VNC_TEXT_CHARS = 256
#: Longest VM name or UUID kept.
MAX_TEXT_CHARS = MAX_LABEL_CHARS
#: Longest QEMU version kept, and longest package string.
MAX_VERSION_CHARS = 64
MAX_PACKAGE_CHARS = 256


class MalformedAnswerError(ProtocolError):
    """An answer that parsed as JSON but is not what the command returns."""


def returned(answer: Any) -> Any:
    """An answer from :meth:`QMPClient.execute_many`: raise it if it is QEMU's error."""
    if isinstance(answer, CommandError):
        raise answer
    return answer


def parse_status(answer: Any) -> tuple[str, bool]:
    """``query-status`` → (RunState, running). The seed dialect has no ``status``."""
    if not isinstance(answer, dict) or not isinstance(answer.get("running"), bool):
        raise MalformedAnswerError(f"query-status: unexpected answer {answer!r:.200}")
    running = answer["running"]
    status = answer.get("status")
    if status is None:
        status = "running" if running else "paused"
    elif not isinstance(status, str) or not 0 < len(status) <= MAX_STATUS_CHARS:
        raise MalformedAnswerError(f"query-status: bad status {status!r:.100}")
    return status, running


def parse_vnc(answer: Any) -> VncState:
    """``query-vnc`` → :class:`VncState`."""
    if not isinstance(answer, dict) or not isinstance(answer.get("enabled"), bool):
        raise MalformedAnswerError(f"query-vnc: unexpected answer {answer!r:.200}")
    if not answer["enabled"]:
        return VncState(enabled=False)
    clients = answer.get("clients", [])
    if not isinstance(clients, list):
        raise MalformedAnswerError("query-vnc: clients is not a list")

    def text(key: str) -> str:
        value = answer.get(key, "")
        if not isinstance(value, str | int) or isinstance(value, bool):
            raise MalformedAnswerError(f"query-vnc: {key} is {type(value).__name__}")
        return bounded(str(value), MAX_VNC_TEXT_CHARS)

    return VncState(True, text("host"), text("service"), text("family"), text("auth"), len(clients))


def spice_enabled(answer: Any) -> bool:
    """``query-spice`` (a value or a :class:`CommandError`) → whether SPICE is on. Lenient,
    never raising: anything but ``{"enabled": true, ...}`` (a QEMU without SPICE answers
    ``CommandNotFound``) is off."""
    return isinstance(answer, dict) and answer.get("enabled") is True


def parse_version_answer(answer: Any) -> tuple[str | None, str]:
    """``query-version`` → (version, package); version ``None`` when QEMU does not say it."""
    if not isinstance(answer, dict):
        raise MalformedAnswerError("query-version: not an object")
    version, package = parse_version(answer)
    if version is not None:
        version = bounded(version, MAX_VERSION_CHARS)
    return version, bounded(package, MAX_PACKAGE_CHARS)


def parse_name(answer: Any) -> str | None:
    """``query-name`` → the VM's name; ``None`` when it has none (QEMU answers ``{}``)."""
    return _text_member(answer, "name", "query-name")


def parse_uuid(answer: Any) -> str | None:
    """``query-uuid`` → the VM's UUID; ``None`` when the answer does not carry one."""
    return _text_member(answer, "UUID", "query-uuid")


def parse_identity(version: Any, name: Any, uuid: Any) -> Identity:
    """The answers to ``query-version``, ``query-name`` and ``query-uuid`` (values or
    :class:`CommandError` from :meth:`QMPClient.execute_many`) → :class:`Identity`.
    An old QEMU without ``query-name`` or ``query-uuid`` leaves that field empty; any other
    error of QEMU's is raised."""
    version_text, package = parse_version_answer(returned(version))
    return Identity(
        version=version_text or "",
        package=package,
        name=parse_name(_unless_missing(name)) or "",
        uuid=parse_uuid(_unless_missing(uuid)) or "",
    )


def _unless_missing(answer: Any) -> Any:
    """The answer, ``None`` for a command QEMU does not have; other errors raise."""
    if isinstance(answer, CommandError) and answer.error_class == "CommandNotFound":
        return None
    return returned(answer)


def _text_member(answer: Any, member: str, command: str) -> str | None:
    """A string member of an answer (bounded); ``None`` when the answer has no such member."""
    if not isinstance(answer, dict) or member not in answer:
        return None
    value = answer[member]
    if not isinstance(value, str):
        raise MalformedAnswerError(f"{command}: expected a string, got {type(value).__name__}")
    return bounded(value, MAX_TEXT_CHARS)
