"""Which processes are QEMU: the one trust check before any host figure is read."""

from __future__ import annotations

import os
import re

from qmp_exporter.host.procfs import UNTRUSTED, reason_of

#: Basenames of a QEMU executable.
QEMU_EXE = re.compile(r"qemu-system-[A-Za-z0-9_.+-]+|qemu-kvm|kvm")
_DELETED = " (deleted)"  # the link of a binary replaced since (a package upgrade)


def check_qemu(pid: int, proc_root: str = "/proc") -> str | None:
    """``None`` when process ``pid`` runs a QEMU binary: its ``exe`` (not its name, which
    any user sets) is called ``qemu-system-*``, ``qemu-kvm`` or ``kvm``, and that file is
    root's and not writable by group or others. Else the reason it is not trusted."""
    link = f"{proc_root}/{pid}/exe"
    try:
        target = os.readlink(link)
        st = os.stat(link)  # the binary itself, even when deleted since
    except OSError as err:
        return reason_of(err)
    target = target.removesuffix(_DELETED)
    if QEMU_EXE.fullmatch(os.path.basename(target)) is None:
        return UNTRUSTED
    if st.st_uid != 0 or st.st_mode & 0o022:
        return UNTRUSTED
    return None
