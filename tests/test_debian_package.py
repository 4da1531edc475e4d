"""The Debian package end to end, on this machine: the README's first command in a fresh clone,
then the installed package checked as an administrator would, then purged.

The module fixture makes a fresh clone of the repository under test with
``git clone --no-local`` (so **only committed work is tested: uncommitted changes are not in
the clone**), and runs the README's first command there exactly as written,
``bash scripts/install.sh --demo``: it builds the .deb with Debian's tools and Python and
installs it with apt-get, then runs the demo on port 10144 (in the foreground when systemd is
not PID 1, as in CI). ``QMP_EXPORTER_KEEP_DEB`` keeps a copy of the .deb for lintian.

It changes the machine: it needs root (CI runs as root) and fails, rather than touch anything,
when qmp-exporter is already installed or port 10144 is taken. Whatever happens, the package is
purged at the end, so the machine is as it was before (the last test checks what purge removes).
Marked ``package``: ``pytest -m "not package"`` leaves it out.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from qmp_exporter import __version__
from tests.helpers.exporter import SampleKey, free_port, parse_samples, wait_for
from tests.helpers.qemu import QemuVM

pytestmark = pytest.mark.package

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "qmp-exporter"
EXPORTER = "/usr/bin/qmp-exporter"  # not `qmp-exporter`: a pyenv shim may come first in PATH
CONFIG = "/etc/qmp-exporter/qmp-exporter.yml"
DEMO_PORT = 10144
DEMO_VMS = ("demo-web-01", "demo-db-01", "demo-build-01")
README_COMMAND = "bash scripts/install.sh --demo"
BUILD_TIMEOUT = 300.0  # the build, apt-get install and the demo's first poll
#: What the installed exporter runs with: systemd gives a unit a clean environment.
CLEAN_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}


def run(*command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command with a clean environment; its output is captured as text."""
    return subprocess.run(
        command, capture_output=True, text=True, env=CLEAN_ENV, check=check, timeout=120
    )


def package_installed() -> bool:
    status = run("dpkg-query", "-W", "-f=${Status}", PACKAGE, check=False)
    return status.returncode == 0 and "install ok installed" in status.stdout


def listener_on(port: int) -> str:
    """Who listens on 127.0.0.1/any ``port`` (``ss`` output), or "" when nobody does."""
    return run("ss", "-Hltnp", f"sport = :{port}", check=False).stdout.strip()


def demo_vms_up(port: int) -> bool:
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    return all(re.search(rf'^qemu_up\{{vm="{vm}"\}} 1', text, re.M) for vm in DEMO_VMS)


def stop_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the process group, SIGKILL if it is still there after 10 s."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def purge() -> None:
    env = dict(CLEAN_ENV, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(
        ["apt-get", "-o", "DPkg::Lock::Timeout=120", "purge", "-y", "-qq", PACKAGE],
        capture_output=True,
        env=env,
        check=True,
        timeout=120,
    )


@dataclass(frozen=True)
class Installed:
    """What the README's first command left: the clone, the kept .deb, its output."""

    clone: Path
    deb: Path
    log: str


@pytest.fixture(scope="module")
def installed() -> Iterator[Installed]:
    if os.geteuid() != 0:
        pytest.fail(
            "the Debian package test installs and purges a .deb with apt-get: run it as root "
            '(CI does), or leave it out with -m "not package"',
            pytrace=False,
        )
    if package_installed():
        pytest.fail(
            f"{PACKAGE} is already installed on this machine: this test would purge it. "
            f'Remove it first (apt-get purge {PACKAGE}) or leave the test out (-m "not package")',
            pytrace=False,
        )
    if holder := listener_on(DEMO_PORT):
        pytest.fail(f"port {DEMO_PORT} (the demo's) is already taken, by: {holder}", pytrace=False)
    work = Path(tempfile.mkdtemp(prefix="qmpx-deb-"))
    clone, keep, log_path = work / "clone", work / "deb", work / "install.log"
    subprocess.run(
        ["git", "clone", "--no-local", "--quiet", str(REPO), str(clone)], check=True, timeout=120
    )
    env = dict(os.environ, QMP_EXPORTER_KEEP_DEB=str(keep))
    with open(log_path, "wb") as log:
        demo = subprocess.Popen(
            shlex.split(README_COMMAND),
            cwd=clone,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + BUILD_TIMEOUT
        while not _quietly(lambda: demo_vms_up(DEMO_PORT)):
            exited = demo.poll() is not None and not Path("/run/systemd/system").is_dir()
            if exited or time.monotonic() > deadline:
                pytest.fail(
                    f"`{README_COMMAND}` in a fresh clone did not serve the demo VMs "
                    f"{', '.join(DEMO_VMS)} on :{DEMO_PORT} within {BUILD_TIMEOUT:.0f}s "
                    f"(exit code {demo.poll()}); its output:\n{log_path.read_text()}",
                    pytrace=False,
                )
            time.sleep(0.5)
        stop_group(demo)
        if Path("/run/systemd/system").is_dir():  # the demo ran as the service: back to normal
            run("systemctl", "revert", PACKAGE, check=False)
            run("systemctl", "stop", PACKAGE, check=False)
        debs = sorted(keep.glob(f"{PACKAGE}_*_all.deb"))
        assert len(debs) == 1, f"QMP_EXPORTER_KEEP_DEB kept {debs}"
        yield Installed(clone, debs[0], log_path.read_text())
    finally:
        try:
            stop_group(demo)
            if package_installed():
                purge()
        finally:
            shutil.rmtree(work, ignore_errors=True)


def _quietly(predicate: Callable[[], bool]) -> bool:
    """``predicate()``, with a connection error counting as False (not listening yet)."""
    try:
        return predicate()
    except requests.RequestException:
        return False


def unit_path() -> Path:
    files = run("dpkg", "-L", PACKAGE).stdout.split()
    units = [f for f in files if f.endswith("/systemd/system/qmp-exporter.service")]
    assert len(units) == 1, units
    return Path(units[0])


def unit_setting(unit: str, key: str) -> str:
    values = re.findall(rf"^{key}=(.*)$", unit, re.M)
    assert len(values) == 1, f"{key}= appears {len(values)} times in the unit"
    return values[0].strip()


def test_the_readme_gives_this_command_first(installed: Installed) -> None:
    readme = (installed.clone / "README.md").read_text()
    commands = re.findall(r"^```(?:sh|bash|console)?\n(.*?)^```", readme, re.M | re.S)
    assert commands, "no code block in the README"
    lines = [line.strip() for line in commands[0].splitlines()]
    first = next(line for line in lines if line and not line.startswith("#"))
    assert first == README_COMMAND


def test_the_readme_command_built_and_installed_the_package(installed: Installed) -> None:
    assert package_installed()
    assert "install.sh: building the package (dpkg-buildpackage)" in installed.log
    assert "running the demo" in installed.log or "runs its demo VMs" in installed.log


def test_version_is_the_package_version(installed: Installed) -> None:
    package_version = run("dpkg-query", "-W", "-f=${Version}", PACKAGE).stdout
    upstream = package_version.rsplit("-", 1)[0]
    assert upstream == __version__
    assert run(EXPORTER, "--version").stdout.strip() == f"qmp-exporter {upstream}"


def test_the_packaged_config_is_valid_and_a_conffile(installed: Installed) -> None:
    checked = run(EXPORTER, "check-config", CONFIG, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    conffiles = run("dpkg-query", "-W", "-f=${Conffiles}", PACKAGE).stdout
    listed = {line.split()[0] for line in conffiles.splitlines() if line.strip()}
    assert CONFIG in listed
    assert "/etc/default/qmp-exporter" in listed


def test_systemd_accepts_the_installed_unit(installed: Installed) -> None:
    verified = run("systemd-analyze", "verify", str(unit_path()), check=False)
    assert verified.returncode == 0, verified.stderr
    assert "qmp-exporter.service" not in verified.stderr, verified.stderr


def test_lintian_reports_no_errors(installed: Installed) -> None:
    report = run("lintian", "--no-tag-display-limit", str(installed.deb), check=False)
    assert report.returncode == 0, report.stdout + report.stderr
    errors = [line for line in report.stdout.splitlines() if line.startswith("E:")]
    assert errors == [], report.stdout


def test_the_user_is_in_the_monitor_group(installed: Installed) -> None:
    groups = run("id", "-nG", "qmp-exporter").stdout.split()
    assert "qemu-monitor" in groups
    shell = run("getent", "passwd", "qmp-exporter").stdout.strip().split(":")[-1]
    assert shell == "/usr/sbin/nologin"


def test_the_man_page_renders(installed: Installed) -> None:
    page = "/usr/share/man/man1/qmp-exporter.1.gz"
    assert run("man", "-w", "qmp-exporter").stdout.strip() == page
    env = dict(CLEAN_ENV, MANWIDTH="80", MANPAGER="cat", MAN_DISABLE_SECCOMP="1")
    rendered = subprocess.run(
        ["man", "-l", page], capture_output=True, text=True, env=env, check=True, timeout=60
    )
    assert "check-config" in rendered.stdout
    assert "--web.listen-address" in rendered.stdout


def test_dashboards_and_rules_are_shared_data(installed: Installed) -> None:
    shared = Path("/usr/share/qmp-exporter")
    assert (shared / "qmp-exporter.rules.yml").is_file()
    assert (shared / "qmp-exporter.json").is_file()


def exec_start(listen: str, config: Path) -> list[str]:
    """The installed unit's ExecStart, with ``$ARGS`` as an admin would set it in
    /etc/default: a listen address and a config file (the last --config.file counts)."""
    unit = unit_path().read_text()
    command = []
    for word in shlex.split(unit_setting(unit, "ExecStart")):
        if word == "$ARGS":
            command += [f"--web.listen-address={listen}", f"--config.file={config}"]
        else:
            command.append(word)
    return command


@contextlib.contextmanager
def exporter_as_unit_user(
    config: Path, *, with_supplementary_groups: bool
) -> Iterator[Callable[[], str]]:
    """Run the unit's ExecStart as its User and Group (and SupplementaryGroups, or none),
    with a clean environment as systemd would; yield a function that scrapes /metrics."""
    unit = unit_path().read_text()
    user, group = unit_setting(unit, "User"), unit_setting(unit, "Group")
    groups = unit_setting(unit, "SupplementaryGroups").split()
    privileges = [f"--reuid={user}", f"--regid={group}"]
    privileges.append(
        f"--groups={','.join(groups)}" if with_supplementary_groups else "--clear-groups"
    )
    listen = f"127.0.0.1:{free_port()}"
    process = subprocess.Popen(
        ["setpriv", *privileges, *exec_start(listen, config)],
        cwd="/",
        env=CLEAN_ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )

    def scrape() -> str:
        if process.poll() is not None:
            assert process.stderr is not None
            raise AssertionError(f"the exporter exited: {process.stderr.read().decode()}")
        return requests.get(f"http://{listen}/metrics", timeout=2).text

    try:
        yield scrape
    finally:
        stop_group(process)


def socket_for_the_monitor_group(vm: QemuVM) -> None:
    """What the docs tell admins: the socket's group is qemu-monitor, mode 0660, in a
    directory only that group (and root) may enter."""
    shutil.chown(vm.workdir, "root", "qemu-monitor")
    vm.workdir.chmod(0o750)
    shutil.chown(vm.qmp_path, "root", "qemu-monitor")
    os.chmod(vm.qmp_path, 0o660)


def config_for(vm: QemuVM, directory: Path) -> Path:
    directory.chmod(0o755)
    config = directory / "qmp-exporter.yml"
    config.write_text(
        f"poll_interval: 500ms\ntimeout: 400ms\nmonitors:\n  - name: pkg-vm\n"
        f"    address: unix:{vm.qmp_path}\n"
    )
    config.chmod(0o644)
    return config


def samples_if(
    scrape: Callable[[], str], condition: Callable[[dict[SampleKey, float]], bool]
) -> dict[SampleKey, float] | None:
    """The scraped samples when they meet ``condition``, else None (for :func:`wait_for`)."""
    samples = parse_samples(scrape())
    return samples if condition(samples) else None


def test_the_unit_command_as_its_user_reads_a_real_qemu(
    installed: Installed, qemu_factory: Callable[..., QemuVM]
) -> None:
    vm = qemu_factory(name="pkg-vm")
    socket_for_the_monitor_group(vm)
    config = config_for(vm, Path(tempfile.mkdtemp(prefix="qmpx-cfg-")))
    up = ("qemu_up", (("vm", "pkg-vm"),))
    connect_errors = ("qmp_exporter_poll_errors_total", (("reason", "connect"), ("vm", "pkg-vm")))
    try:
        with exporter_as_unit_user(config, with_supplementary_groups=True) as scrape:
            samples = wait_for(
                lambda: samples_if(scrape, lambda s: s.get(up) == 1),
                timeout=20,
                what="qemu_up 1 for the real QEMU, as the unit's user and groups",
            )
            versions = [k for k in samples if k[0] == "qemu_version_info"]
            assert versions and all(("vm", "pkg-vm") in labels for _, labels in versions)
        with exporter_as_unit_user(config, with_supplementary_groups=False) as scrape:
            samples = wait_for(
                lambda: samples_if(scrape, lambda s: s.get(connect_errors, 0) >= 1),
                timeout=20,
                what="a connect error without the qemu-monitor group",
            )
            assert samples[up] == 0
    finally:
        shutil.rmtree(config.parent, ignore_errors=True)


def test_purge_removes_what_the_package_made(installed: Installed) -> None:
    purge()
    assert not Path(EXPORTER).exists()
    assert not Path("/etc/qmp-exporter").exists()
    assert not Path("/etc/default/qmp-exporter").exists()
    assert run("getent", "passwd", "qmp-exporter", check=False).returncode == 2
    assert run("getent", "group", "qmp-exporter", check=False).returncode == 2
    assert run("getent", "group", "qemu-monitor", check=False).returncode == 2
    status = run("dpkg", "-s", PACKAGE, check=False)
    assert status.returncode != 0
    assert "is not installed" in status.stderr
