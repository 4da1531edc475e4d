"""A private libvirt for one test: ``virtlogd`` and ``libvirtd`` in session mode
(``qemu:///session``) as children of the test, with their runtime, config and cache
directories in a temporary directory of their own, so nothing of the host's libvirt
(``qemu:///system``, its sockets, networks or domains) is used or changed.

::

    with LibvirtSession() as libvirt:
        libvirt.virsh("define", "domain.xml")
        libvirt.virsh("start", "web")

Run as root, the daemons run as ``nobody`` (``setpriv``): a root ``libvirtd`` is always the
system instance. Leaving the block destroys and undefines every domain, then stops the
daemons and reaps them (no ``-d``: the sandbox's PID 1 does not reap daemons).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

#: The programs a session needs.
TOOLS = ("libvirtd", "virtlogd", "virsh", "setpriv", "qemu-system-x86_64")
#: Seconds for the first ``virsh`` connection (libvirtd probes QEMU's capabilities: ~4 s).
START_TIMEOUT = 90.0
#: Seconds for one ``virsh`` command.
VIRSH_TIMEOUT = 30.0
URI = "qemu:///session"


class LibvirtStartError(RuntimeError):
    """libvirtd did not answer in time; the message carries its log."""


#: Set to 1 to skip the libvirt tests where what they need is missing (else they fail).
SKIP_LIBVIRT_ENV = "QMP_EXPORTER_SKIP_LIBVIRT"


def require(missing: list[str], what: str) -> None:
    """Fail (or, with :data:`SKIP_LIBVIRT_ENV` set to 1, skip) the test when ``missing``
    names what ``what`` needs."""
    import pytest

    if not missing:
        return
    reason = f"{what} needs {', '.join(missing)} (scripts/install-test-deps.sh)"
    if os.environ.get(SKIP_LIBVIRT_ENV) == "1":
        pytest.skip(f"{reason}; skipped since {SKIP_LIBVIRT_ENV}=1")
    pytest.fail(f"{reason}; set {SKIP_LIBVIRT_ENV}=1 to skip it.", pytrace=False)


def stop_daemon(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 15 s; reaped."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(15)


def missing_tools() -> list[str]:
    """The programs of :data:`TOOLS` that are not on PATH (nor in /usr/sbin)."""
    path = f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin"
    return [tool for tool in TOOLS if shutil.which(tool, path=path) is None]


class LibvirtSession:
    """virtlogd + libvirtd (session mode) under a private temporary directory."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="lv", dir="/tmp"))  # short: socket paths
        self.root.chmod(0o755)
        self.user = pwd.getpwnam("nobody") if os.geteuid() == 0 else None
        for name in ("run", "config", "cache", "home"):
            (self.root / name).mkdir(mode=0o700)
        self._chown(self.root)
        self.env = {
            "PATH": f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin",
            "HOME": str(self.root / "home"),
            "XDG_RUNTIME_DIR": str(self.root / "run"),
            "XDG_CONFIG_HOME": str(self.root / "config"),
            "XDG_CACHE_HOME": str(self.root / "cache"),
            "LANG": "C",
        }
        self.log_path = self.root / "libvirtd.log"
        self._daemons: list[subprocess.Popen[bytes]] = []

    def _chown(self, path: Path) -> None:
        if self.user is None:
            return
        for item in (path, *path.rglob("*")):
            os.chown(item, self.user.pw_uid, self.user.pw_gid)

    def _prefix(self) -> list[str]:
        if self.user is None:
            return []
        return ["setpriv", f"--reuid={self.user.pw_uid}", f"--regid={self.user.pw_gid}",
                "--clear-groups"]  # fmt: skip

    def write(self, name: str, content: bytes) -> Path:
        """A file ``name`` in the session's directory, owned by the daemons' user."""
        path = self.root / name
        path.write_bytes(content)
        self._chown(path)
        return path

    def start(self) -> LibvirtSession:
        """Start both daemons and wait until ``virsh`` connects; raise
        :class:`LibvirtStartError` with libvirtd's log otherwise."""
        log = open(self.log_path, "ab")  # noqa: SIM115 - the children hold it
        try:
            for daemon in ("virtlogd", "libvirtd"):
                self._daemons.append(subprocess.Popen(
                    [*self._prefix(), daemon], env=self.env, stdin=subprocess.DEVNULL,
                    stdout=log, stderr=log, cwd=self.root,
                ))  # fmt: skip
                if daemon == "virtlogd":
                    self._wait_for_socket(self.root / "run/libvirt/virtlogd-sock")
        finally:
            log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            for daemon in self._daemons:
                if daemon.poll() is not None:
                    raise LibvirtStartError(
                        f"{daemon.args[-1]} exited with {daemon.returncode}:\n{self.log()}"
                    )
            result = self.virsh("version", check=False)
            if result.returncode == 0:
                return self
            if time.monotonic() > deadline:
                raise LibvirtStartError(
                    f"virsh could not connect within {START_TIMEOUT}s ({result.stderr.strip()}); "
                    f"libvirtd log:\n{self.log()}"
                )
            time.sleep(0.2)

    def _wait_for_socket(self, path: Path, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not path.exists():
            if self._daemons[-1].poll() is not None or time.monotonic() > deadline:
                raise LibvirtStartError(f"no {path} from virtlogd:\n{self.log()}")
            time.sleep(0.05)

    def virsh(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``virsh -c qemu:///session ARGS`` as the daemons' user."""
        result = subprocess.run(
            [*self._prefix(), "virsh", "-q", "-c", URI, *args], env=self.env, cwd=self.root,
            capture_output=True, text=True, timeout=VIRSH_TIMEOUT, check=False,
        )  # fmt: skip
        if check and result.returncode != 0:
            raise AssertionError(f"virsh {' '.join(args)} failed: {result.stderr}\n{self.log()}")
        return result

    def domstats(self, domain: str, *flags: str) -> dict[str, str]:
        """``virsh domstats FLAGS DOMAIN`` as {"cpu.time": "…", …}."""
        out = self.virsh("domstats", *flags, domain).stdout
        pairs = (line.strip().split("=", 1) for line in out.splitlines() if "=" in line)
        return {key: value for key, value in pairs}

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def close(self) -> None:
        """Destroy and undefine every domain, stop and reap the daemons, remove the directory."""
        try:
            if self._daemons and self._daemons[-1].poll() is None:
                names = self.virsh("list", "--all", "--name", check=False).stdout.split()
                for name in names:
                    self.virsh("destroy", name, check=False)
                    self.virsh("undefine", name, check=False)
        finally:
            for daemon in reversed(self._daemons):
                stop_daemon(daemon)
            self._kill_leftover_qemus()
            shutil.rmtree(self.root, ignore_errors=True)

    def _kill_leftover_qemus(self) -> None:
        """SIGKILL a QEMU whose domain could not be destroyed (libvirtd gone)."""
        for pid_file in (self.root / "run/libvirt/qemu/run").glob("*.pid"):
            with contextlib.suppress(ValueError, OSError):
                os.kill(int(pid_file.read_text().strip()), signal.SIGKILL)

    def __enter__(self) -> LibvirtSession:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc_info: object) -> None:
        self.close()
