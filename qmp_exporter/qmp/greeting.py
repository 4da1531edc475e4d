"""The QMP greeting and QEMU's version, read from every dialect since 2009."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from qmp_exporter.qmp.errors import NotQMPError


@dataclass(frozen=True, slots=True)
class Greeting:
    """The parsed ``{"QMP": {...}}`` greeting."""

    #: ``"7.2.22"`` for the structured form, the string itself for the 2010 form,
    #: ``None`` for the 2009 dialect, which sends no version.
    version: str | None
    package: str
    capabilities: tuple[str, ...]
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def from_message(cls, message: dict[str, Any]) -> Greeting:
        body = message.get("QMP")
        if not isinstance(body, dict):
            # the peer's own member names are not shown: it may be any service
            raise NotQMPError(f"expected a QMP greeting, got an object of {len(message)} members")
        version_info = body.get("version")
        version, package = (None, "")
        if isinstance(version_info, dict):
            version, package = parse_version(version_info)
        caps = body.get("capabilities")
        capabilities = tuple(str(c) for c in caps) if isinstance(caps, list) else ()
        return cls(version, package, capabilities, message)


def parse_version(info: dict[str, Any]) -> tuple[str | None, str]:
    """Read ``query-version`` (or the greeting's ``version``) in either form:
    structured ``{"qemu": {"major", "minor", "micro"}}`` or the old string ``{"qemu": "0.12.50"}``.
    """
    qemu = info.get("qemu")
    package = info.get("package")
    package = package.strip() if isinstance(package, str) else ""
    if isinstance(qemu, dict):
        parts = [qemu.get(k) for k in ("major", "minor", "micro")]
        if all(isinstance(p, int) and not isinstance(p, bool) for p in parts):
            return ".".join(str(p) for p in parts), package
        return None, package
    if isinstance(qemu, str) and qemu:
        return qemu, package
    return None, package
