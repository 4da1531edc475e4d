"""What a QEMU command line says about its monitors, name and UUID (for process discovery).

Input: ``/proc/PID/cmdline`` (readable for every process). QEMU's option syntax handled:

* ``-opt`` and ``--opt``; values are QEMU "keyval": ``a=b,c=d`` with ``,,`` for a literal
  comma; an implied first key (``-name NAME`` = ``guest=NAME``, ``-mon X`` = ``chardev=X``,
  ``-chardev socket,...`` = ``backend=socket``); bare ``flag`` = ``flag=on``, ``noflag`` =
  ``flag=off`` (old ``server,nowait``).
* ``-qmp``/``-qmp-pretty`` take a chardev spec: ``unix:PATH,...`` or ``tcp:HOST:PORT,...``.
  Without ``server`` QEMU connects out (client mode): nothing to connect to.
* ``-chardev socket,id=X,(path=P | host=H,port=N | fd=N),server=on`` with ``-mon chardev=X,
  mode=control`` (``-mon`` defaults to HMP, which is not QMP).
* ``-netdev``/``-chardev`` given as JSON (libvirt 7 and later).

Known owners: libvirt's own monitor (``charmonitor``, ``.../libvirt/qemu/domain-*/monitor.sock``)
is refused, libvirt holds it; Proxmox VE's ``/run/qemu-server/<vmid>.qmp`` gives a ``vmid``.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field

from qmp_exporter.textformat import label_text

#: Problems with a monitor (None: usable).
FD_PASSED = "fd_passed"  # the monitor socket was passed as an fd: nothing on disk to connect to
CLIENT_MODE = "client_mode"  # QEMU connects out (no server=on): not a listening socket
OWNED_BY_LIBVIRT = "owned_by_libvirt"  # libvirt's own monitor: libvirt holds it
NOT_A_SOCKET = "not_a_socket"  # stdio, pty, file, ...
RELATIVE_PATH = "relative_path"  # relative to QEMU's cwd (readable only with ptrace access)

LIBVIRT_MONITOR = re.compile(r"/libvirt/qemu/(domain-[^/]+/monitor\.sock|[^/]+\.monitor)$")
#: Proxmox VE's socket directory (``/var/run`` is ``/run``).
PROXMOX_DIR = "/run/qemu-server"
NO_MONITOR = "no_monitor"


#: Longest option value read (a ``-name``, a ``-netdev`` JSON): longer ones are ignored, so
#: a command line of megabytes costs no more than its options' count.
MAX_OPTION_CHARS = 64 * 1024
#: Deepest nesting of an option's JSON (QEMU's own are 3 or 4 deep).
MAX_JSON_DEPTH = 32
#: Longest unix socket path (``sun_path``, its NUL included).
MAX_SOCKET_PATH_BYTES = 107


def split_cmdline(raw: bytes) -> list[str]:
    """/proc/PID/cmdline -> argv (a trailing NUL ends the last argument); bytes that are not
    UTF-8 become U+FFFD: a command line is any process's to write, and what is read from it
    may end in a label."""
    if raw.endswith(b"\0"):
        raw = raw[:-1]
    return [a.decode("utf-8", "replace") for a in raw.split(b"\0")] if raw else []


def keyval(text: str, implied: str | None = None) -> dict[str, str]:
    """QEMU keyval: ``a=b,c`` -> {a: b, c: on}; ``,,`` is a comma; ``noX`` -> X=off for a
    bare flag; the first item without ``=`` is the implied key's value when given."""
    items: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == ",":
            if text[i + 1 : i + 2] == ",":
                current.append(",")
                i += 2
                continue
            items.append("".join(current))
            current = []
        else:
            current.append(ch)
        i += 1
    items.append("".join(current))
    out: dict[str, str] = {}
    for index, item in enumerate(items):
        if not item:
            continue
        key, eq, value = item.partition("=")
        if eq:
            out[key] = value
        elif index == 0 and implied is not None:
            out[implied] = item
        elif key.startswith("no") and len(key) > 2:
            out[key[2:]] = "off"
        else:
            out[key] = "on"
    return out


def _label(value: str | None) -> str | None:
    return None if value is None else label_text(value)


def _on(value: str | None) -> bool:
    return value in ("on", "yes", "true", "y")


def normalize_path(path: str) -> str:
    """The key of a socket path: normalised, /var/run -> /run (a symlink on every systemd
    host). Not realpath: the exporter may not see the same mount namespace as QEMU."""
    path = os.path.normpath(path)
    if path.startswith("//"):  # POSIX keeps a leading "//"; Linux reads it as "/"
        path = "/" + path.lstrip("/")
    if path == "/var/run" or path.startswith("/var/run/"):
        path = path[len("/var") :]
    return path


@dataclass(frozen=True)
class Monitor:
    #: ``unix:/run/...`` / ``tcp:127.0.0.1:4444`` (exporter address syntax) or None.
    address: str | None
    source: str  # "-qmp", "-qmp-pretty", "-mon"
    chardev: str | None = None
    problem: str | None = None
    vmid: str | None = None  # Proxmox VE


@dataclass
class QemuCommandLine:
    binary: str
    name: str | None = None
    uuid: str | None = None
    smbios_uuid: str | None = None
    proxmox_vmid: str | None = None  # "-id N" (Proxmox VE) or from the .qmp path
    monitors: list[Monitor] = field(default_factory=list)
    taps: list[str] = field(default_factory=list)  # ifname= of tap netdevs
    tap_fds: int = 0  # tap netdevs passed as fd=/fds= (libvirt): names only via fdinfo
    owner: str | None = None  # "libvirt", "proxmox" or None
    #: Options skipped as not QEMU's to write (a value over 64 KiB, JSON too deep or invalid).
    skipped_options: int = 0

    @property
    def usable_monitors(self) -> list[Monitor]:
        return [m for m in self.monitors if m.problem is None]

    @property
    def problem(self) -> str | None:
        """The process row's ``problem`` label: empty (None) when a monitor is usable."""
        if self.usable_monitors:
            return None
        if self.owner == "libvirt":
            return OWNED_BY_LIBVIRT
        return NO_MONITOR


def _chardev_address(spec: dict[str, str], cwd: str | None) -> tuple[str | None, str | None]:
    """(address, problem) of a socket chardev as keyval."""
    if "fd" in spec:
        return None, FD_PASSED
    if "path" in spec:
        path = spec["path"]
        if not os.path.isabs(path):
            if cwd is None:
                return None, RELATIVE_PATH
            path = os.path.join(cwd, path)
        path = normalize_path(path)
        if len(path.encode()) > MAX_SOCKET_PATH_BYTES or "\ufffd" in path:
            return None, NOT_A_SOCKET  # no unix socket has such a path (or not as read)
        address = f"unix:{path}"
    elif "port" in spec:
        host = label_text(spec.get("host") or "127.0.0.1")  # empty: every address, loopback too
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1" if host == "0.0.0.0" else "::1"
        address = f"tcp:[{host}]:{spec['port']}" if ":" in host else f"tcp:{host}:{spec['port']}"
    else:
        return None, NOT_A_SOCKET
    if not _on(spec.get("server")):
        return address, CLIENT_MODE
    return address, None


def _legacy_chardev(text: str) -> dict[str, str]:
    """``-qmp`` spec ``unix:PATH,opts`` / ``tcp:HOST:PORT,opts`` -> socket chardev keyval."""
    kind, _, rest = text.partition(":")
    if kind == "unix":
        opts = keyval(rest, implied="path")
        return {"backend": "socket", **opts}
    if kind == "tcp":
        opts = keyval(rest, implied="_hostport")
        hostport = opts.pop("_hostport", "")
        if hostport.startswith("["):
            host, _, port = hostport[1:].partition("]:")
        else:
            host, _, port = hostport.rpartition(":")
        return {"backend": "socket", "host": host, "port": port, **opts}
    return {"backend": kind or text}


def _json_or_keyval(text: str, implied: str) -> dict[str, str] | None:
    """The option's keys and values; ``None`` for JSON that is too deep or invalid."""
    if text.startswith("{"):
        if _json_depth(text) > MAX_JSON_DEPTH:
            return None
        try:
            data = json.loads(text)
        except (ValueError, RecursionError):
            return None
        if not isinstance(data, dict):
            return None
        return {
            str(k): ("on" if v is True else "off" if v is False else str(v))
            for k, v in data.items()
        }
    return keyval(text, implied=implied)


def _json_depth(text: str) -> int:
    """The deepest nesting of brackets in ``text`` (strings not told apart: an upper bound)."""
    if text.count("[") + text.count("{") <= MAX_JSON_DEPTH:
        return 0
    depth = deepest = 0
    for ch in text:
        if ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def parse(
    argv: list[str], cwd: str | None = None, proxmox_dir: str | None = None
) -> QemuCommandLine:
    """Monitors, name, UUID and taps from a QEMU argv (argv[0] is the binary); a relative
    socket path needs QEMU's ``cwd``. ``proxmox_dir``: ``PROXMOX_DIR`` when not given."""
    proxmox_dir = normalize_path(proxmox_dir or PROXMOX_DIR)
    result = QemuCommandLine(binary=argv[0] if argv else "")
    chardevs: dict[str, dict[str, str]] = {}
    mons: list[dict[str, str]] = []
    qmps: list[tuple[str, str]] = []
    i = 1
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--"):
            arg = arg[1:]
        value = argv[i + 1] if i + 1 < len(argv) else ""
        takes_value = True
        if len(value) > MAX_OPTION_CHARS:
            result.skipped_options += 1  # too long to be QEMU's: skipped with its option
        elif arg in ("-qmp", "-qmp-pretty"):
            qmps.append((arg, value))
        elif arg == "-chardev":
            spec = _json_or_keyval(value, "backend")
            if spec is None:
                result.skipped_options += 1
            elif "id" in spec:
                chardevs[spec["id"]] = spec
        elif arg == "-mon":
            mons.append(keyval(value, implied="chardev"))
        elif arg == "-name":
            result.name = _label(keyval(value, implied="guest").get("guest"))
        elif arg == "-uuid":
            result.uuid = _label(value.lower())
        elif arg == "-smbios":
            result.smbios_uuid = _label(keyval(value, implied="type").get("uuid"))
        elif arg == "-id":  # Proxmox VE: qemu-server passes "-id <vmid>" (a pve-qemu option)
            result.proxmox_vmid = _label(value)
        elif arg in ("-netdev", "-net", "-nic"):
            spec = _json_or_keyval(value, "type")
            if spec is None:
                result.skipped_options += 1
            elif spec.get("type") == "tap":
                if "ifname" in spec:
                    result.taps.append(label_text(spec["ifname"], 16))  # IFNAMSIZ
                elif "fd" in spec or "fds" in spec:
                    result.tap_fds += 1
        elif arg.startswith("-"):
            # Options without a value that may precede others (so we do not eat the next
            # option). Unknown options with a value are skipped with their value.
            takes_value = arg not in _FLAGS
        i += 2 if takes_value else 1
    for option, spec_text in qmps:
        spec = _legacy_chardev(spec_text)
        address, problem = (
            _chardev_address(spec, cwd) if spec.get("backend") == "socket" else (None, NOT_A_SOCKET)
        )
        result.monitors.append(
            _classify(Monitor(address, option, None, problem), result, proxmox_dir)
        )
    for mon in mons:
        if mon.get("mode") != "control":
            continue  # HMP
        chardev_id = mon.get("chardev")
        spec = chardevs.get(chardev_id or "", {})
        if spec.get("backend") != "socket":
            address, problem = None, NOT_A_SOCKET
        else:
            address, problem = _chardev_address(spec, cwd)
        source = "-mon pretty" if _on(mon.get("pretty")) else "-mon"
        result.monitors.append(
            _classify(Monitor(address, source, chardev_id, problem), result, proxmox_dir)
        )
    return result


def _classify(monitor: Monitor, result: QemuCommandLine, proxmox_dir: str) -> Monitor:
    """Known owners: libvirt's monitor (refused) and Proxmox VE's (vmid)."""
    address = monitor.address or ""
    path = address[len("unix:") :] if address.startswith("unix:") else ""
    if monitor.chardev == "charmonitor" or LIBVIRT_MONITOR.search(path):
        result.owner = "libvirt"
        return Monitor(
            monitor.address, monitor.source, monitor.chardev, monitor.problem or OWNED_BY_LIBVIRT
        )
    vmid = proxmox_vmid(path, proxmox_dir)
    if vmid is not None:
        result.owner = "proxmox"
        result.proxmox_vmid = result.proxmox_vmid or vmid
        return Monitor(monitor.address, monitor.source, monitor.chardev, monitor.problem, vmid)
    return monitor


def proxmox_vmid(path: str, proxmox_dir: str | None = None) -> str | None:
    """The VM id of a Proxmox VE socket path (``<proxmox_dir>/<vmid>.qmp``), else ``None``."""
    directory, _, file = path.rpartition("/")
    vmid = file.removesuffix(".qmp")
    if directory == normalize_path(proxmox_dir or PROXMOX_DIR) and file != vmid and vmid.isdigit():
        return vmid
    return None


#: Value-less options that appear on real QEMU command lines (the rest take one value).
_FLAGS = frozenset(
    (
        "-nodefaults", "-no-user-config", "-nographic", "-daemonize", "-S", "-no-shutdown",
        "-no-reboot", "-no-hpet", "-no-acpi", "-enable-kvm", "-snapshot", "-full-screen",
        "-no-quit", "-only-migratable", "-sandbox-none", "-nodefconfig", "-no-fd-bootchk",
        "-no-kvm", "-semihosting", "-preconfig",
    )
)  # fmt: skip


def read(
    pid: int, proc_root: str = "/proc", proxmox_dir: str | None = None
) -> QemuCommandLine | None:
    """Parse a running process's command line; ``None`` when it is gone or unreadable."""
    try:
        with open(f"{proc_root}/{pid}/cmdline", "rb") as file:
            raw = file.read()
    except OSError:
        return None
    try:
        cwd: str | None = os.readlink(f"{proc_root}/{pid}/cwd")
    except OSError:
        cwd = None  # another user's process without CAP_SYS_PTRACE
    return parse(split_cmdline(raw), cwd, proxmox_dir)
