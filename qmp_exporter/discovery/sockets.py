"""Monitors found by globbing for QMP sockets (a ``- glob:`` discovery entry), Proxmox VE's
layout recognised."""

from __future__ import annotations

import os
import stat
from pathlib import PurePosixPath

from qmp_exporter.config import DiscoveryConfig, MonitorConfig
from qmp_exporter.host.cmdline import normalize_path
from qmp_exporter.textformat import label_text


def is_socket(path: str) -> bool:
    """Whether ``path`` is a unix socket (following symlinks); False when it is gone."""
    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        return False


def monitor_for(entry: DiscoveryConfig, path: str) -> MonitorConfig:
    """The monitor for one discovered socket; ``ValueError`` when it cannot be named (its
    file name is not UTF-8: it could be neither connected to by that name nor shown)."""
    if label_text(path, len(path)) != path:
        raise ValueError("the path is not UTF-8")
    file = PurePosixPath(path)
    fields = {"stem": file.stem, "name": file.name}
    labels = dict(entry.labels)
    if entry.proxmox:
        if not file.stem.isdigit():
            raise ValueError("not a Proxmox VM socket (expected <vmid>.qmp)")
        fields["vmid"] = file.stem
        labels["vmid"] = file.stem
    name = label_text(entry.name.format(**fields))
    if not name.strip():
        raise ValueError(f"name template {entry.name!r} gives an empty name")
    return MonitorConfig(
        name=name,
        address=f"unix:{path}",
        mode=entry.mode,
        labels=tuple(sorted(labels.items())),
        collectors=entry.collectors,
    )


def address_key(address: str) -> str:
    """One monitor however it is spelt: a unix socket by its resolved path (``/var/run`` is
    ``/run``)."""
    if address.startswith("unix:"):
        return "unix:" + normalize_path(os.path.realpath(address[len("unix:") :]))
    return address
