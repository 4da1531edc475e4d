"""A private **system-mode** libvirt for tests: a system D-Bus, polkitd, virtlogd and libvirtd,
started as root in a private mount namespace so that nothing of the host's libvirt (its
``/run/libvirt`` sockets, ``/etc/libvirt`` definitions, ``/var/lib/libvirt`` state, its VMs)
is read or changed. Session mode has no read-only socket; this is how a test gets one.

::

    with SystemLibvirt() as lv:
        lv.start_vnc_domain("web")
        lv.virsh("suspend", "web")
        conn = libvirt.openReadOnly(lv.ro_uri)   # from any user, outside the namespace

**The namespace.** A holder process (this file run as a script) is started under
``unshare --mount --propagation private``; it mounts, inside that namespace only, directories
of a temporary root (``/tmp/lvsysXXXX``) over ``/run``, ``/etc/libvirt``, ``/var/lib/libvirt``,
``/var/cache/libvirt`` and ``/var/log/libvirt`` (where the host has no such directory, its
parent gets an overlay whose upper layer is in the temporary root, so the host's tree never
gains the mount point). Where the host lacks libvirt's polkit actions (they come with
``libvirt-daemon-system``, which the tests do not install), ``/usr/share/polkit-1/actions`` is
a copy with Debian's ``org.libvirt.unix.policy`` added. The daemons are then started with
``nsenter --mount=/proc/HOLDER/ns/mnt``, as children of the test (so it reaps them).

**How clients reach it.** The namespace's ``/run`` is the host directory ``ROOT/run``, so the
sockets are visible outside at ``ROOT/run/libvirt/libvirt-sock{,-ro}``; a client anywhere on the
host uses :attr:`SystemLibvirt.ro_uri` (``qemu+unix:///system?socket=…-ro``) with no
``nsenter``, as the exporter will. The daemons see ``/run/dbus/system_bus_socket`` of their own
bus, so libvirtd's polkit checks go to our polkitd: read-only is allowed for any user (libvirt's
``org.libvirt.unix.monitor``: ``allow_any`` yes), read-write is refused to a non-root user
(``org.libvirt.unix.manage``: ``auth_admin_keep``, and no agent), root bypasses polkit.

**QEMU.** ``qemu.conf`` turns off cgroups, namespaces and security drivers (a container or a
sandbox VM may have none of them to give, and the test needs none); QEMU runs as
``libvirt-qemu`` (Debian's build default; created by scripts/install-test-deps.sh). VNC
listens on 127.0.0.1 only.

**Leaving the block** destroys and undefines every domain, stops the daemons in reverse order
and reaps them; the holder then SIGKILLs whatever is still in the namespace (a QEMU whose
libvirtd died) and exits, which also happens when the test process dies (its stdin closes).
The temporary root is removed unless ``QMP_EXPORTER_KEEP_LIBVIRT=1`` (for debugging: the
daemons' logs are ``ROOT/logs/*.log``, QEMU's ``ROOT/log/qemu/NAME.log``);
``QMP_EXPORTER_LIBVIRT_DEBUG="1:qemu 1:rpc"`` sets libvirt's log filters for the daemons.

**The namespace has no /dev/kvm** (an empty file is mounted over it): the domains are TCG, and
where /dev/kvm is root's only (0600), libvirt 9.0's capability probe gets KVM while its cache
check as ``libvirt-qemu`` does not, so it probes again on every call (12 s to start, then
every ``virsh define`` hangs).
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
POLKITD = "/usr/lib/polkit-1/polkitd"
#: The programs this needs (looked up in :data:`PATH`, or absolute).
TOOLS = (
    "libvirtd", "virtlogd", "virsh", "dbus-daemon", "dbus-send", POLKITD, "unshare", "nsenter",
    "setpriv", "mount", "qemu-system-x86_64",
)  # fmt: skip
#: The users the daemons run as: QEMU (qemu.conf's default), polkitd, the bus.
USERS = ("libvirt-qemu", "polkitd", "messagebus")
#: The Python of read-only clients in tests, with the distribution's binding (python3-libvirt).
CLIENT_PYTHON = "/usr/bin/python3"
#: Seconds for the daemons to answer (libvirtd probes QEMU's capabilities first: a few s).
START_TIMEOUT = 90.0
#: Seconds for one ``virsh`` or client command.
COMMAND_TIMEOUT = 30.0
KEEP_ENV = "QMP_EXPORTER_KEEP_LIBVIRT"
#: libvirt's log filters for the daemons (their logs then at debug level), for debugging.
DEBUG_ENV = "QMP_EXPORTER_LIBVIRT_DEBUG"

#: The host paths the namespace replaces, and the directory of the temporary root for each.
PRIVATE_DIRS = {
    "/run": "run",
    "/etc/libvirt": "etc",
    "/var/lib/libvirt": "lib",
    "/var/cache/libvirt": "cache",
    "/var/log/libvirt": "log",
}
DEV_KVM = "/dev/kvm"
POLKIT_ACTIONS = Path("/usr/share/polkit-1/actions")
LIBVIRT_POLICY = "org.libvirt.unix.policy"

QEMU_CONF = """\
# tests/helpers/libvirt_system.py: no cgroups, namespaces or security drivers (a sandbox has
# none to spare); QEMU as Debian's default user libvirt-qemu; VNC on loopback only.
cgroup_controllers = [ ]
namespaces = [ ]
security_driver = "none"
remember_owner = 0
vnc_listen = "127.0.0.1"
spice_listen = "127.0.0.1"
"""
LIBVIRTD_CONF = """\
# tests/helpers/libvirt_system.py: the package defaults (auth_unix_ro = auth_unix_rw =
# "polkit", sockets in /run/libvirt), logs to stderr (ROOT/logs/libvirtd.log).
log_outputs = "3:stderr"
"""
VIRTLOGD_CONF = 'log_outputs = "3:stderr"\n'

#: Debian's /usr/share/polkit-1/actions/org.libvirt.unix.policy (libvirt-daemon-system
#: 9.0.0-4+deb12u2), the license header left out: read-only for anyone, read-write for an
#: administrator who authenticates.
LIBVIRT_UNIX_POLICY = """\
<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE policyconfig PUBLIC
 "-//freedesktop//DTD PolicyKit Policy Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/PolicyKit/1.0/policyconfig.dtd">
<policyconfig>
    <action id="org.libvirt.unix.monitor">
      <description>Monitor local virtualized systems</description>
      <message>System policy prevents monitoring of local virtualized systems</message>
      <defaults>
        <allow_any>yes</allow_any>
        <allow_inactive>yes</allow_inactive>
        <allow_active>yes</allow_active>
      </defaults>
    </action>
    <action id="org.libvirt.unix.manage">
      <description>Manage local virtualized systems</description>
      <message>System policy prevents management of local virtualized systems</message>
      <defaults>
        <allow_any>auth_admin_keep</allow_any>
        <allow_inactive>auth_admin_keep</allow_inactive>
        <allow_active>auth_admin_keep</allow_active>
      </defaults>
    </action>
</policyconfig>
"""

#: A small TCG domain with VNC and nothing to boot: SeaBIOS finds no disk and waits.
VNC_DOMAIN_XML = """\
<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>{memory_mib}</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices>
    <emulator>{emulator}</emulator>
    <graphics type='vnc' port='-1' autoport='yes' listen='127.0.0.1'/>
  </devices>
</domain>
"""


class LibvirtSystemError(RuntimeError):
    """The namespace or a daemon did not come up; the message carries the daemons' logs."""


def missing() -> list[str]:
    """What this host lacks for :class:`SystemLibvirt`: root, programs, users, the binding."""
    if os.geteuid() != 0:
        return ["root (mount namespace, system-mode libvirtd)"]
    lacking = [tool for tool in TOOLS if shutil.which(tool, path=PATH) is None]
    for user in USERS:
        try:
            pwd.getpwnam(user)
        except KeyError:
            lacking.append(f"the user {user}")
    probe = subprocess.run(
        [CLIENT_PYTHON, "-c", "import libvirt"], capture_output=True, timeout=30, check=False
    )
    if probe.returncode != 0:
        lacking.append(f"python3-libvirt for {CLIENT_PYTHON}")
    return lacking


@dataclass(frozen=True)
class Domain:
    name: str
    vnc_port: int


class SystemLibvirt:
    """dbus-daemon, polkitd, virtlogd and libvirtd (system mode) in a private mount namespace."""

    def __init__(self) -> None:
        # Short (socket paths) and traversable by the unprivileged clients.
        self.root = Path(tempfile.mkdtemp(prefix="lvsys", dir="/tmp"))
        self.root.chmod(0o755)
        for name in (*PRIVATE_DIRS.values(), "logs", "overlay", "domains"):
            (self.root / name).mkdir(mode=0o755)
        (self.root / "run/dbus").mkdir(mode=0o755)
        self.sockets = self.root / "run/libvirt"
        #: Read-write URI: root only (root bypasses polkit).
        self.uri = f"qemu+unix:///system?socket={self.sockets}/libvirt-sock"
        #: Read-only URI, for any local user outside the namespace.
        self.ro_uri = f"qemu+unix:///system?socket={self.sockets}/libvirt-sock-ro"
        self.bus_address = f"unix:path={self.root}/run/dbus/system_bus_socket"
        self.env = {"PATH": PATH, "LANG": "C", "HOME": "/root"}
        if os.environ.get(DEBUG_ENV):  # e.g. "1:qemu 1:rpc 3:object 3:json 3:event"
            self.env["LIBVIRT_LOG_FILTERS"] = os.environ[DEBUG_ENV]
            self.env["LIBVIRT_LOG_OUTPUTS"] = "1:stderr"
        self._holder: subprocess.Popen[bytes] | None = None
        self._daemons: list[subprocess.Popen[bytes]] = []
        #: Seconds each stage of :meth:`start` took: namespace, dbus, polkitd, virtlogd, libvirtd.
        self.timings: dict[str, float] = {}

    # -- the namespace ----------------------------------------------------------------------

    def _write_config(self) -> None:
        etc = self.root / "etc"
        (etc / "qemu.conf").write_text(QEMU_CONF)
        (etc / "libvirtd.conf").write_text(LIBVIRTD_CONF)
        (etc / "virtlogd.conf").write_text(VIRTLOGD_CONF)
        # Debian's system bus configuration, less what would start anything else: no service
        # activation (polkitd is started here), no fork, no pid file.
        system_conf = Path("/usr/share/dbus-1/system.conf").read_text()
        for pattern in (r"<standard_system_servicedirs\s*/>", r"<servicedir>.*?</servicedir>",
                        r"<servicehelper>.*?</servicehelper>", r"<fork\s*/>",
                        r"<pidfile>.*?</pidfile>", r"<syslog\s*/>"):  # fmt: skip
            system_conf = re.sub(pattern, "", system_conf, flags=re.S)
        # Relative includes are relative to the file: Debian's policies in /usr/share.
        system_conf = system_conf.replace(
            "<includedir>system.d</includedir>",
            "<includedir>/usr/share/dbus-1/system.d</includedir>",
        )
        (self.root / "dbus-system.conf").write_text(system_conf)

    def _mounts(self) -> list[list[str]]:
        """The holder's mount commands, in order."""
        commands: list[list[str]] = []
        overlaid: set[Path] = set()
        for target, name in PRIVATE_DIRS.items():
            path = Path(target)
            if not path.is_dir():
                # No mount point on the host: overlay the parent (upper layer in our root) and
                # make the directory there, never on the host's disk.
                parent = path.parent
                if not parent.is_dir():
                    raise LibvirtSystemError(f"neither {path} nor {parent} exist")
                if parent not in overlaid:
                    layer = self.root / "overlay" / str(parent).strip("/").replace("/", "_")
                    (layer / "upper").mkdir(parents=True)
                    (layer / "work").mkdir()
                    options = f"lowerdir={parent},upperdir={layer}/upper,workdir={layer}/work"
                    commands.append(
                        ["mount", "-t", "overlay", "overlay", "-o", options, str(parent)]
                    )
                    overlaid.add(parent)
                commands.append(["mkdir", str(path)])
            commands.append(["mount", "--bind", str(self.root / name), str(path)])
        if Path(DEV_KVM).exists():
            # No KVM in the namespace (the domains are TCG): where /dev/kvm is root's only
            # (0600, as in this sandbox), libvirt's capability probe gets KVM but its cache
            # check, as libvirt-qemu, does not, and it probes again on every call, forever.
            # An empty file with no permissions over it is no KVM for anyone.
            no_kvm = self.root / "no-kvm"
            no_kvm.touch(mode=0o000)
            commands.append(["mount", "--bind", str(no_kvm), DEV_KVM])
        if not (POLKIT_ACTIONS / LIBVIRT_POLICY).exists():
            actions = self.root / "polkit-actions"
            if POLKIT_ACTIONS.is_dir():
                shutil.copytree(POLKIT_ACTIONS, actions)
            else:
                actions.mkdir()
            (actions / LIBVIRT_POLICY).write_text(LIBVIRT_UNIX_POLICY)
            if not POLKIT_ACTIONS.is_dir():
                raise LibvirtSystemError(f"no {POLKIT_ACTIONS} (package polkitd)")
            commands.append(["mount", "--bind", str(actions), str(POLKIT_ACTIONS)])
        return commands

    def _start_holder(self) -> None:
        spec = json.dumps(self._mounts())
        self._holder = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "--",
             sys.executable, __file__, "hold", spec],
            env=self.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=open(self.root / "logs/holder.log", "ab"),  # noqa: SIM115 - the child holds it
            cwd="/",
        )  # fmt: skip
        assert self._holder.stdout is not None
        ready, _, _ = select.select([self._holder.stdout], [], [], 30)
        line = self._holder.stdout.readline() if ready else b""
        if line.strip() != b"ready":
            raise LibvirtSystemError(f"the namespace holder did not start:\n{self.logs()}")

    def namespace_argv(self, *argv: str) -> list[str]:
        """``argv`` prefixed to run inside the namespace (for a test or for debugging)."""
        assert self._holder is not None
        return ["nsenter", f"--mount=/proc/{self._holder.pid}/ns/mnt", "--", *argv]

    def in_namespace(self, *argv: str) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` as root inside the namespace (e.g. ``ls /run/libvirt``)."""
        return subprocess.run(
            self.namespace_argv(*argv), env=self.env, capture_output=True, text=True,
            timeout=COMMAND_TIMEOUT, check=False, cwd="/",
        )  # fmt: skip

    # -- the daemons ------------------------------------------------------------------------

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        with open(self.root / f"logs/{name}.log", "ab") as log:
            daemon = subprocess.Popen(
                self.namespace_argv(*argv), env=self.env, stdin=subprocess.DEVNULL,
                stdout=log, stderr=log, cwd="/",
            )  # fmt: skip
        self._daemons.append(daemon)
        return daemon

    def _wait(self, what: str, ready: Callable[[], object], timeout: float = START_TIMEOUT) -> None:
        """Wait until ``ready()`` is true; fail if a daemon exits or after ``timeout``."""
        deadline = time.monotonic() + timeout
        while not ready():
            for daemon in self._daemons:
                if daemon.poll() is not None:
                    raise LibvirtSystemError(
                        f"{daemon.args[-1]} exited with {daemon.returncode} while waiting for "
                        f"{what}:\n{self.logs()}"
                    )
            if time.monotonic() > deadline:
                raise LibvirtSystemError(f"no {what} within {timeout:g}s:\n{self.logs()}")
            time.sleep(0.05)

    def _polkit_on_bus(self) -> bool:
        reply = subprocess.run(
            ["dbus-send", f"--bus={self.bus_address}", "--print-reply",
             "--dest=org.freedesktop.DBus", "/org/freedesktop/DBus",
             "org.freedesktop.DBus.NameHasOwner", "string:org.freedesktop.PolicyKit1"],
            env=self.env, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False,
        )  # fmt: skip
        return "boolean true" in reply.stdout

    def start(self) -> SystemLibvirt:
        """Make the namespace, start the four daemons, wait until ``virsh`` connects."""
        began = time.monotonic()

        def lap(stage: str) -> None:
            self.timings[stage] = round(time.monotonic() - began - sum(self.timings.values()), 3)

        self._write_config()
        self._start_holder()
        lap("namespace")
        bus_socket = self.root / "run/dbus/system_bus_socket"
        self._spawn("dbus", ["dbus-daemon", f"--config-file={self.root}/dbus-system.conf",
                             "--nofork", "--nopidfile", "--nosyslog"])  # fmt: skip
        self._wait("the system bus", bus_socket.exists)
        lap("dbus")
        # Started as root, as D-Bus activation would: it changes to the user polkitd itself.
        self._spawn("polkitd", [POLKITD, "--no-debug"])
        self._wait("polkitd on the bus", self._polkit_on_bus)
        lap("polkitd")
        self._spawn("virtlogd", ["virtlogd"])
        self._wait("virtlogd's socket", (self.sockets / "virtlogd-sock").exists)
        lap("virtlogd")
        self._spawn("libvirtd", ["libvirtd"])
        self._wait(
            "libvirtd answering virsh",
            lambda: (
                (self.sockets / "libvirt-sock-ro").exists()
                and self.virsh("version", check=False).returncode == 0
            ),
        )
        lap("libvirtd")
        return self

    def virsh(
        self, *args: str, readonly: bool = False, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """``virsh ARGS`` as root from outside the namespace, read-write (``uri``) or
        ``readonly`` (``-r``, ``ro_uri``)."""
        connect = ["-r", "-c", self.ro_uri] if readonly else ["-c", self.uri]
        result = subprocess.run(
            ["virsh", "-q", *connect, *args], env=self.env, capture_output=True, text=True,
            timeout=COMMAND_TIMEOUT, check=False,
        )  # fmt: skip
        if check and result.returncode != 0:
            raise AssertionError(f"virsh {' '.join(args)} failed: {result.stderr}\n{self.logs()}")
        return result

    def start_vnc_domain(self, name: str, memory_mib: int = 64) -> Domain:
        """Define and start :data:`VNC_DOMAIN_XML`; its name and VNC port."""
        emulator = shutil.which("qemu-system-x86_64", path=PATH)
        xml = self.root / "domains" / f"{name}.xml"
        xml.write_text(VNC_DOMAIN_XML.format(name=name, memory_mib=memory_mib, emulator=emulator))
        self.virsh("define", str(xml))
        self.virsh("start", name)
        return Domain(name, self.vnc_port(name))

    def vnc_port(self, name: str) -> int:
        """The VNC TCP port of a running domain (``virsh vncdisplay``: ``127.0.0.1:N``)."""
        display = self.virsh("vncdisplay", name).stdout.strip()
        return 5900 + int(display.rsplit(":", 1)[1])

    def logs(self) -> str:
        """Every daemon's log, for a failure message."""
        parts = []
        for log in sorted((self.root / "logs").glob("*.log")):
            text = log.read_text(errors="replace")
            parts.append(f"--- {log.name}\n{text[-6000:]}")
        return "\n".join(parts)

    # -- the end ----------------------------------------------------------------------------

    def close(self) -> None:
        """Destroy and undefine every domain, stop and reap the daemons and the holder (which
        kills what is left in the namespace), remove the temporary root."""
        try:
            libvirtd = self._daemons[-1] if len(self._daemons) == 4 else None
            if libvirtd is not None and libvirtd.poll() is None:
                for name in self.virsh("list", "--all", "--name", check=False).stdout.split():
                    self.virsh("destroy", name, check=False)
                    self.virsh("undefine", name, check=False)
        finally:
            from tests.helpers.libvirt import stop_daemon  # here: this file also runs as a script

            for daemon in reversed(self._daemons):
                stop_daemon(daemon)
            if self._holder is not None:
                with contextlib.suppress(OSError):
                    assert self._holder.stdin is not None
                    self._holder.stdin.close()
                try:
                    self._holder.wait(30)
                except subprocess.TimeoutExpired:
                    self._holder.kill()
                    self._holder.wait(15)
                if self._holder.stdout is not None:
                    self._holder.stdout.close()
            if os.environ.get(KEEP_ENV) != "1":
                shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> SystemLibvirt:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _hold(spec: str) -> None:
    """The holder, run as root in the new mount namespace: mount, say ``ready``, wait for
    stdin to close, then SIGKILL every other process of this namespace."""
    for command in json.loads(spec):
        done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
        if done.returncode != 0:
            sys.stderr.write(f"holder: {' '.join(command)} failed: {done.stderr}")
            sys.exit(1)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    sys.stdin.buffer.read()  # until the test closes it, or dies
    namespace = os.readlink("/proc/self/ns/mnt")
    for _ in range(3):
        left = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            with contextlib.suppress(OSError):
                if os.readlink(entry / "ns/mnt") == namespace:
                    os.kill(int(entry.name), signal.SIGKILL)
                    left.append(entry.name)
        if not left:
            return
        sys.stderr.write(f"holder: killed {' '.join(left)}\n")
        time.sleep(0.5)


if __name__ == "__main__" and sys.argv[1:2] == ["hold"]:
    _hold(sys.argv[2])
