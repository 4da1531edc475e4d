"""Which processes are VMs: the one trust check before a process's command line or host
figures are used (``docs/security.md``).

A process is a VM when its owner is trusted (root, or a configured QEMU user) and, where its
``exe`` can be read, that binary is a QEMU installed by root. Its name (``comm``) and command
line are the process's own to choose, so they never decide alone.
"""

from __future__ import annotations

import os
import pwd
import re
from collections.abc import Iterable
from dataclasses import dataclass

from qmp_exporter.host.procfs import (
    GONE,
    PERMISSION,
    UNTRUSTED,
    ReadError,
    parse_uids,
    read_bytes,
    reason_of,
)

#: Basenames of a QEMU executable.
QEMU_EXE = re.compile(r"qemu-system-[A-Za-z0-9_.+-]+|qemu-kvm|kvm")
_DELETED = " (deleted)"  # the link of a binary replaced since (a package upgrade)

#: The users whose QEMUs are VMs when ``trusted_users`` is not set: root, and the users
#: libvirt (Debian's ``libvirt-qemu``, Fedora's ``qemu``) runs QEMU as, where they exist.
DEFAULT_TRUSTED_USERS = ("root", "libvirt-qemu", "qemu")

#: Why a process named like QEMU is not a VM (the ``reason`` of
#: ``qmp_exporter_processes_skipped_total``).
NOT_QEMU = "not_qemu"  # its exe is readable and is not a QEMU binary installed by root
UNTRUSTED_USER = "untrusted_user"  # its owner is not a trusted user
SKIP_REASONS = (NOT_QEMU, UNTRUSTED_USER)


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


def trusted_uids(users: Iterable[str] | None) -> frozenset[int]:
    """The user ids of ``users`` (names or numbers; ``None``: :data:`DEFAULT_TRUSTED_USERS`),
    looked up now; a name that does not exist (yet) is left out. Root is always trusted."""
    uids = {0}
    for user in DEFAULT_TRUSTED_USERS if users is None else users:
        if user.isdigit():
            uids.add(int(user))
            continue
        try:
            uids.add(pwd.getpwnam(user).pw_uid)
        except KeyError:
            continue
    return frozenset(uids)


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether one process is a VM: ``skip`` is ``None`` for a VM, else one of
    :data:`SKIP_REASONS` (or ``gone``); ``uids`` are its real and effective user ids."""

    skip: str | None
    uids: tuple[int, int] = (-1, -1)


def check_vm_process(pid: int, trusted: frozenset[int], proc_root: str = "/proc") -> Verdict:
    """Whether process ``pid`` is a VM: owned (real and effective user) by a ``trusted`` user,
    running a root-installed QEMU binary where its ``exe`` can be read (another user's cannot
    be without ``CAP_SYS_PTRACE``: the owner then decides alone)."""
    try:
        uids = parse_uids(read_bytes(f"{proc_root}/{pid}/status"))
    except ReadError as err:
        return Verdict(GONE if err.reason == GONE else UNTRUSTED_USER)
    if uids[0] not in trusted or uids[1] not in trusted:
        return Verdict(UNTRUSTED_USER, uids)
    problem = check_qemu(pid, proc_root)
    if problem is None or problem == PERMISSION:
        return Verdict(None, uids)
    return Verdict(GONE if problem == GONE else NOT_QEMU, uids)
