"""Whether the monitor a process's command line names is that process's own: the check made
before the exporter connects to an address it read in a command line (``docs/security.md``).

A command line is the process's to write (``/proc/PID/mem``, or a symlink swapped in where it
said its socket is), so the address it names is believed only when the process itself
listens there:

* a unix socket: the listening socket bound at that file (found through ``sock_diag``, which
  gives each listening socket's file) is among the process's fds; where the fds or
  ``sock_diag`` cannot be read (another user's process without ``CAP_SYS_PTRACE``, a
  sandbox without ``AF_NETLINK``), the socket file is owned by the process's user;
* a TCP port: only on loopback, and the listening socket (``/proc/net/tcp{,6}``) is among the
  process's fds, or else is owned by the process's user;
* the rules about libvirt's and Proxmox VE's sockets apply to the file the path resolves to.

After connecting, the poller checks the peer (:meth:`Host.check_peer
<qmp_exporter.host.machine.Host.check_peer>`) against the process as well.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import stat
from dataclasses import dataclass, replace

from qmp_exporter.host import cmdline, sockdiag

#: Problems of a monitor named by a command line (beside :mod:`cmdline`'s).
NOT_VISIBLE = "not_visible"  # the socket file does not exist for the exporter (its sandbox)
FOREIGN_SOCKET = "foreign_socket"  # something else than the process listens there
NOT_LOOPBACK = "not_loopback"  # a TCP monitor on another address than loopback


def unix_listeners() -> dict[tuple[int, int], int] | None:
    """Each listening unix socket by the file it is bound to (see
    :func:`~qmp_exporter.host.sockdiag.listening_by_file`); ``None`` where ``sock_diag``
    cannot be used (not Linux, ``AF_NETLINK`` not allowed)."""
    try:
        return sockdiag.listening_by_file()
    except (OSError, AttributeError):
        return None


def tcp_listeners(proc_root: str = "/proc") -> dict[tuple[str, int], list[tuple[int, int]]]:
    """Each listening TCP socket: (address, port) -> [(socket inode, owner uid)]."""
    found: dict[tuple[str, int], list[tuple[int, int]]] = {}
    for table in ("tcp", "tcp6"):
        try:
            with open(f"{proc_root}/net/{table}", "rb") as file:
                lines = file.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != b"0A":  # TCP_LISTEN
                continue
            try:
                address, port = _address(fields[1].decode())
                found.setdefault((address, port), []).append((int(fields[9]), int(fields[7])))
            except ValueError:
                continue
    return found


def _address(text: str) -> tuple[str, int]:
    """``/proc/net/tcp{,6}``'s ``0100007F:115C`` -> (``127.0.0.1``, 4444)."""
    hex_ip, _, hex_port = text.partition(":")
    raw = bytes.fromhex(hex_ip)
    packed = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(packed)), int(hex_port, 16)


def socket_inodes(pid: int, proc_root: str = "/proc") -> frozenset[int] | None:
    """The inodes of the sockets process ``pid`` holds (``None``: its fds cannot be read)."""
    fd_dir = f"{proc_root}/{pid}/fd"
    try:
        fds = os.listdir(fd_dir)
    except OSError:
        return None
    inodes = set()
    for fd in fds:
        try:
            link = os.readlink(f"{fd_dir}/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(int(link[8:-1]))
    return frozenset(inodes)


@dataclass
class Listeners:
    """What one scan knows of the host's listening sockets, read once and only if needed."""

    proc_root: str = "/proc"
    _unix: dict[tuple[int, int], int] | None = None
    _unix_read: bool = False
    _tcp: dict[tuple[str, int], list[tuple[int, int]]] | None = None

    def unix(self) -> dict[tuple[int, int], int] | None:
        if not self._unix_read:
            self._unix, self._unix_read = unix_listeners(), True
        return self._unix

    def tcp(self) -> dict[tuple[str, int], list[tuple[int, int]]]:
        if self._tcp is None:
            self._tcp = tcp_listeners(self.proc_root)
        return self._tcp


def check_monitor(
    monitor: cmdline.Monitor,
    uids: tuple[int, int],
    held: frozenset[int] | None,
    listeners: Listeners,
    proxmox_dir: str | None = None,
) -> cmdline.Monitor:
    """``monitor`` as named by the command line of a process with user ids ``uids`` holding
    the sockets ``held`` (``None``: unknown), with a problem set unless that process itself
    listens there; a unix path is replaced by the file it resolves to."""
    if monitor.problem is not None or monitor.address is None:
        return monitor
    if monitor.address.startswith("unix:"):
        return _check_unix(monitor, monitor.address[5:], uids, held, listeners, proxmox_dir)
    return _check_tcp(monitor, uids, held, listeners)


def _check_unix(
    monitor: cmdline.Monitor,
    path: str,
    uids: tuple[int, int],
    held: frozenset[int] | None,
    listeners: Listeners,
    proxmox_dir: str | None,
) -> cmdline.Monitor:
    try:
        st = os.stat(path)
    except OSError as err:
        gone = err.errno in (errno.ENOENT, errno.EACCES, errno.ENOTDIR, errno.ELOOP)
        return replace(monitor, problem=NOT_VISIBLE if gone else FOREIGN_SOCKET)
    if not stat.S_ISSOCK(st.st_mode):
        return replace(monitor, problem=cmdline.NOT_A_SOCKET)
    resolved = cmdline.normalize_path(os.path.realpath(path))
    if resolved != path:
        if cmdline.LIBVIRT_MONITOR.search(resolved):
            return replace(monitor, problem=cmdline.OWNED_BY_LIBVIRT)
        if cmdline.proxmox_vmid(resolved, proxmox_dir) != monitor.vmid:
            return replace(monitor, problem=FOREIGN_SOCKET)  # a link into Proxmox's directory
        monitor = replace(monitor, address=f"unix:{resolved}")
    if held is not None and (by_file := listeners.unix()) is not None:
        listener = by_file.get((sockdiag.kernel_device(st.st_dev), st.st_ino))
        # None: nothing listens there (yet: QEMU binds, then listens): a connection would
        # be refused, and one made later is checked against SO_PEERCRED
        ours = listener is None or listener in held
    else:
        ours = st.st_uid in uids
    return monitor if ours else replace(monitor, problem=FOREIGN_SOCKET)


def _check_tcp(
    monitor: cmdline.Monitor,
    uids: tuple[int, int],
    held: frozenset[int] | None,
    listeners: Listeners,
) -> cmdline.Monitor:
    address = monitor.address or ""
    host, _, port_text = address[len("tcp:") :].rpartition(":")
    host = host.strip("[]")
    try:
        ip = ipaddress.ip_address(host)
        port = int(port_text)
    except ValueError:
        return replace(monitor, problem=NOT_LOOPBACK)  # a host name: resolved who knows where
    if not ip.is_loopback:
        return replace(monitor, problem=NOT_LOOPBACK)
    table = listeners.tcp()
    anywhere = "0.0.0.0" if ip.version == 4 else "::"
    candidates = [*table.get((str(ip), port), ()), *table.get((anywhere, port), ())]
    if ip.version == 4:
        candidates += table.get(("::", port), [])  # a dual-stack listener takes IPv4 too
    if held is not None:
        ours = any(inode in held for inode, _ in candidates)
    else:
        ours = any(uid in uids for _, uid in candidates)
    return monitor if ours else replace(monitor, problem=FOREIGN_SOCKET)
