"""What an exporter without privileges can tell of a monitor's peer, run as a script by the
unprivileged user (:data:`~tests.helpers.pidns.AS_NOBODY`) on an inherited connected socket:

    python3 -m tests.helpers.package_mode FD

prints, as JSON, :func:`~qmp_exporter.host.peer.identify` of socket FD by each way (pidfd,
credentials), first as it is (another user's ``/proc/PID/fd`` is unreadable), then with
``socket(AF_NETLINK, ...)`` refused by a seccomp filter, as the packaged unit's
``RestrictAddressFamilies=`` (no ``AF_NETLINK``) refuses it (libseccomp, through ctypes).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import json
import socket
import sys
from typing import Any

from qmp_exporter.host.peer import PeerUnknown, identify

_SCMP_ACT_ALLOW = 0x7FFF0000
_SCMP_CMP_EQ = 4


class _ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]  # fmt: skip


def refuse_netlink() -> None:
    """From now on ``socket(AF_NETLINK, ...)`` fails with ``EAFNOSUPPORT`` in this process."""
    name = ctypes.util.find_library("seccomp")
    if name is None:
        raise RuntimeError("libseccomp is needed")
    lib = ctypes.CDLL(name)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [
        ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint, ctypes.POINTER(_ArgCmp)
    ]  # fmt: skip
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    context = lib.seccomp_init(_SCMP_ACT_ALLOW)
    refuse = 0x00050000 | errno.EAFNOSUPPORT  # SCMP_ACT_ERRNO(EAFNOSUPPORT)
    rule = _ArgCmp(0, _SCMP_CMP_EQ, socket.AF_NETLINK, 0)
    number = lib.seccomp_syscall_resolve_name(b"socket")
    if lib.seccomp_rule_add_array(context, refuse, number, 1, ctypes.byref(rule)) != 0:
        raise RuntimeError("seccomp_rule_add_array failed")
    if lib.seccomp_load(context) != 0:
        raise RuntimeError("seccomp_load failed")


def identities(sock: socket.socket) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for way, pidfd in (("pidfd", True), ("credentials", False)):
        try:
            peer = identify(sock, pidfd=pidfd)
            found[way] = {"pid": peer.pid, "how": peer.how, "unchecked": peer.unchecked}
        except PeerUnknown as err:
            found[way] = {"refused": err.reason}
    return found


def main(fd: int) -> None:
    sock = socket.socket(fileno=fd)
    found = {"fd_unreadable": identities(sock)}
    refuse_netlink()
    found["netlink_refused"] = identities(sock)
    print(json.dumps(found))


if __name__ == "__main__":
    main(int(sys.argv[1]))
