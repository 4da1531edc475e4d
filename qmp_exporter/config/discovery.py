"""``discovery``: monitors found by globbing for sockets (Proxmox layout recognised) or in
the host's QEMU processes (:class:`DiscoveryConfig`)."""

from __future__ import annotations

import pwd
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from qmp_exporter.config.fields import MODES, collectors_field, duration_field, labels_field
from qmp_exporter.config.schema import Errors, excerpt, join, kind, list_items, mapping
from qmp_exporter.host.cmdline import PROXMOX_DIR

#: Where Proxmox VE keeps one QMP socket per VM, named ``<vmid>.qmp`` (``/var/run`` is
#: ``/run``); its tools connect per command, so the exporter must use ``poll`` mode there.
PROXMOX_DIRS = (f"/var{PROXMOX_DIR}", PROXMOX_DIR)
#: Fields a discovery ``name`` template may use (``vmid`` only in the Proxmox layout).
NAME_FIELDS = ("stem", "name")
PROXMOX_NAME_FIELDS = ("stem", "name", "vmid")
DEFAULT_RESCAN = 30.0
#: A user name as useradd(8) takes it.
USER_NAME = re.compile(r"[a-z_][a-z0-9_.-]{0,31}\$?")


@dataclass(frozen=True, slots=True)
class DiscoveryConfig:
    """Monitors found by globbing for sockets, or (``processes``) in the command lines of
    the host's QEMU processes; see :mod:`qmp_exporter.discovery`."""

    glob: str
    #: A ``str.format`` template over ``{stem}``, ``{name}`` (and ``{vmid}`` for Proxmox).
    name: str = "{stem}"
    mode: str = "persistent"
    labels: tuple[tuple[str, str], ...] = ()
    rescan: float = DEFAULT_RESCAN
    #: As for a monitor: ``None`` for the defaults.
    collectors: tuple[str, ...] | None = None
    #: The glob is in the Proxmox layout (``/var/run/qemu-server/<vmid>.qmp``).
    proxmox: bool = False
    #: ``- processes: true``: scan the host's QEMU processes (``glob`` is then empty).
    processes: bool = False
    #: With ``processes``: the users (besides root) whose QEMUs are VMs; ``None``: root,
    #: ``libvirt-qemu`` and ``qemu`` where they exist.
    trusted_users: tuple[str, ...] | None = None


def is_proxmox_glob(pattern: str) -> bool:
    """Whether a discovery glob looks in Proxmox VE's socket directory."""
    directory = pattern.rsplit("/", 1)[0]
    return directory in PROXMOX_DIRS


def _name_template(value: Any, path: str, errors: Errors, proxmox: bool) -> str:
    if not isinstance(value, str) or not value:
        errors.add(path, f"expected a non-empty template string, got {kind(value)}")
        return "{stem}"
    allowed = PROXMOX_NAME_FIELDS if proxmox else NAME_FIELDS
    try:
        parts = list(string.Formatter().parse(value))
    except ValueError as err:
        errors.add(path, f"not a valid template: {err}")
        return "{stem}"
    for _, field_name, spec, conversion in parts:
        if field_name is None:
            continue
        if field_name not in allowed:
            hint = "" if proxmox else " ({vmid} only in the Proxmox layout)"
            errors.add(
                path,
                f"unknown field {{{field_name}}}: use {', '.join('{' + f + '}' for f in allowed)}"
                + (hint if field_name == "vmid" else ""),
            )
            return "{stem}"
        if spec or conversion:
            errors.add(path, f"{{{field_name}}}: format specs and conversions are not allowed")
            return "{stem}"
    return value


def _discovery_entry(value: Any, path: str, errors: Errors) -> DiscoveryConfig | None:
    if not isinstance(value, Mapping):
        errors.add(path, f"expected a mapping with a glob, got {kind(value)}")
        return None
    if "processes" in value:
        return _process_entry(value, path, errors)
    allowed = {"glob", "name", "mode", "labels", "rescan", "collectors"}
    raw = mapping(value, path, errors, allowed)
    pattern = raw.get("glob")
    if not isinstance(pattern, str) or not pattern.startswith("/") or "\0" in pattern:
        errors.add(join(path, "glob"), f"required: an absolute path glob, got {excerpt(pattern)}")
        return None
    proxmox = is_proxmox_glob(pattern)
    mode = raw.get("mode", "poll" if proxmox else "persistent")
    if mode not in MODES:
        errors.add(join(path, "mode"), f"{excerpt(mode)} is not one of {', '.join(MODES)}")
        mode = "poll"
    elif proxmox and mode != "poll":
        errors.add(
            join(path, "mode"),
            "must be poll in the Proxmox layout: Proxmox connects to these sockets per "
            "command, and QEMU serves one client per socket",
        )
    name = _name_template(raw.get("name", "{stem}"), join(path, "name"), errors, proxmox)
    labels = labels_field(raw.get("labels"), join(path, "labels"), errors)
    if proxmox and "vmid" in dict(labels):
        errors.add(join(path, "labels.vmid"), "set by the exporter in the Proxmox layout")
    rescan = duration_field(raw.get("rescan"), join(path, "rescan"), errors, DEFAULT_RESCAN, 1.0)
    collectors = collectors_field(raw.get("collectors"), join(path, "collectors"), errors)
    return DiscoveryConfig(pattern, name, mode, labels, rescan, collectors, proxmox)


def _process_entry(value: Mapping[str, Any], path: str, errors: Errors) -> DiscoveryConfig | None:
    """``- processes: true`` with optional ``mode``, ``labels``, ``collectors``, ``rescan``,
    ``trusted_users`` (the ``vm`` label comes from each command line, so no ``name``)."""
    allowed = {"processes", "mode", "labels", "rescan", "collectors", "trusted_users"}
    raw = mapping(value, path, errors, allowed)
    if raw.get("processes") is not True:
        errors.add(join(path, "processes"), f"expected true, got {raw.get('processes')!r}")
        return None
    mode = raw.get("mode", "persistent")
    if mode not in MODES:
        errors.add(join(path, "mode"), f"{mode!r} is not one of {', '.join(MODES)}")
        mode = "persistent"
    labels = labels_field(raw.get("labels"), join(path, "labels"), errors)
    rescan = duration_field(raw.get("rescan"), join(path, "rescan"), errors, DEFAULT_RESCAN, 1.0)
    collectors = collectors_field(raw.get("collectors"), join(path, "collectors"), errors)
    users = _trusted_users(raw.get("trusted_users"), join(path, "trusted_users"), errors)
    return DiscoveryConfig(
        "", "", mode, labels, rescan, collectors, processes=True, trusted_users=users
    )


def _trusted_users(value: Any, path: str, errors: Errors) -> tuple[str, ...] | None:
    """User names or ids; a name must be one this host knows (root is always trusted)."""
    if value is None:
        return None
    users: list[str] = []
    for item_path, item in list_items(value, path, errors, "a list of user names or ids"):
        if isinstance(item, int) and not isinstance(item, bool) and item >= 0:
            users.append(str(item))
        elif isinstance(item, str) and item.isdigit() and item.isascii():
            users.append(str(int(item)))  # an id written as a string
        elif isinstance(item, str) and USER_NAME.fullmatch(item):
            try:
                pwd.getpwnam(item)
            except KeyError:
                errors.add(item_path, f"no user {item!r} on this host")
                continue
            users.append(item)
        else:
            errors.add(item_path, f"expected a user name or id, got {excerpt(item)}")
    return tuple(dict.fromkeys(users))


def parse_discovery(value: Any, errors: Errors) -> tuple[DiscoveryConfig, ...]:
    """The ``discovery`` list; a glob (or ``processes``) given twice is an error."""
    if value is None:
        return ()
    entries: list[DiscoveryConfig] = []
    seen: dict[str, str] = {}
    for path, item in list_items(value, "discovery", errors, "a list"):
        entry = _discovery_entry(item, path, errors)
        if entry is None:
            continue
        key = "processes" if entry.processes else entry.glob
        if key in seen:
            what = "processes" if entry.processes else "glob"
            errors.add(join(path, what), f"duplicate {what} (also {seen[key]})")
            continue
        seen[key] = path
        entries.append(entry)
    return tuple(entries)
