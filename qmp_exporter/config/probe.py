"""``probe``: who may be probed through ``/probe?target=...`` and whether ``/discovery``
serves HTTP SD (:class:`ProbeConfig`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from qmp_exporter.config.schema import Errors, excerpt, list_items, mapping


@dataclass(frozen=True, slots=True)
class ProbeConfig:
    """Who may be probed through ``/probe?target=...``.

    ``allow`` holds normalised globs (``unix:/var/run/qemu-server/*.qmp``,
    ``tcp:10.0.0.*:4444``); empty means only the addresses of ``poll``-mode monitors.
    """

    allow: tuple[str, ...] = ()
    #: Serve the known monitors as Prometheus HTTP service discovery JSON on ``/discovery``.
    http_sd: bool = False


def probe_pattern(value: Any) -> str:
    """Normalise a ``probe.allow`` glob to ``unix:/PATH-GLOB`` or ``tcp:HOST-GLOB:PORT-GLOB``;
    ``ValueError`` saying the expected forms otherwise."""
    if not isinstance(value, str) or not value or "\0" in value:
        raise ValueError(f"expected a socket path glob or HOST:PORT glob, got {excerpt(value)}")
    if value.startswith("unix:"):
        value = value[len("unix:") :]
    if value.startswith("/"):
        if any(part == ".." for part in value.split("/")):
            raise ValueError(f"{excerpt(value)}: '..' is not allowed in a path glob")
        return f"unix:{value}"
    if value.startswith("tcp:"):
        value = value[len("tcp:") :]
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port:
        raise ValueError(
            f"{excerpt(value)}: expected an absolute socket path glob (/var/run/qemu-server/*.qmp) "
            "or HOST:PORT (10.0.0.*:4444)"
        )
    return f"tcp:{host.lower()}:{port}"


def parse_probe(value: Any, errors: Errors) -> ProbeConfig:
    """The ``probe`` mapping (defaults when absent)."""
    raw = mapping(value, "probe", errors, {"allow", "http_sd"})
    allow = raw.get("allow", [])
    patterns: list[str] = []
    for path, item in list_items(allow, "probe.allow", errors, "a list of globs"):
        try:
            patterns.append(probe_pattern(item))
        except ValueError as err:
            errors.add(path, str(err))
    http_sd = raw.get("http_sd", False)
    if not isinstance(http_sd, bool):
        errors.add("probe.http_sd", f"expected true or false, got {excerpt(http_sd)}")
        http_sd = False
    return ProbeConfig(tuple(patterns), http_sd)
