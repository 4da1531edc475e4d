"""The QEMU builds of the tests' matrix: the system's QEMU 7.2 and QEMU 10.0 from Debian's
bookworm-backports, unpacked beside it by ``scripts/fetch-qemu10.sh`` (docs/qemu-versions.md).

A :class:`QemuBuild` says how to start one version: its binary, the environment it needs and
the arguments that go before all others. 10.0 runs from its unpacked folder with
``QEMU_MODULE_DIR`` (its modules plus a stub per 7.2-only module name, so that it never loads
a 7.2 module) and ``-L`` for its own firmware, keymaps and SeaBIOS::

    build = find_build("10.0")          # None when it is not there
    [build.binary, *build.prefix_args, "-M", "none", ...] with env=build.environ()
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

#: The versions every real-QEMU test runs on, in order; the pytest ids are ``qemu-<version>``.
VERSIONS = ("7.2", "10.0")

#: The environment variable naming the folder ``scripts/fetch-qemu10.sh`` unpacked into.
QEMU10_ROOT_ENV = "QMP_EXPORTER_QEMU10_ROOT"
DEFAULT_QEMU10_ROOT = "/opt/qemu-10"

#: Where the system's QEMU (7.2) keeps its modules; 10.0 must never load one of these.
SYSTEM_MODULE_DIR = Path("/usr/lib/x86_64-linux-gnu/qemu")

SYSTEM_BINARY = "qemu-system-x86_64"


@dataclass(frozen=True)
class QemuBuild:
    """How to start one QEMU version."""

    version: str
    binary: str
    env: Mapping[str, str] = field(default_factory=dict)
    prefix_args: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        """The pytest id: ``qemu-7.2``, ``qemu-10.0``."""
        return f"qemu-{self.version}"

    def command(self, *args: str) -> list[str]:
        """The command line starting this build with ``args``."""
        return [self.binary, *self.prefix_args, *args]

    def environ(self) -> dict[str, str]:
        """The process environment for this build (the current one plus :attr:`env`)."""
        return {**os.environ, **self.env}


def qemu10_root() -> Path:
    """The folder QEMU 10.0 is unpacked in."""
    return Path(os.environ.get(QEMU10_ROOT_ENV) or DEFAULT_QEMU10_ROOT)


def find_build(version: str) -> QemuBuild | None:
    """The build of ``version`` (one of :data:`VERSIONS`), or ``None`` when it is missing."""
    if version == VERSIONS[0]:
        binary = shutil.which(SYSTEM_BINARY)
        return QemuBuild(version, binary) if binary else None
    if version == "10.0":
        return _qemu10(qemu10_root())
    raise ValueError(f"no QEMU {version!r} in the matrix {VERSIONS}")


def missing_reason(version: str) -> str:
    """Why :func:`find_build` found nothing, and how to get it."""
    if version == VERSIONS[0]:
        return (
            f"{SYSTEM_BINARY} (QEMU {version}) is not installed: run scripts/install-test-deps.sh "
            "(apt-get install qemu-system-x86)"
        )
    return (
        f"QEMU {version} is not unpacked in {qemu10_root()} (or its moddir/ is incomplete): run "
        f"scripts/install-test-deps.sh (it calls scripts/fetch-qemu10.sh; {QEMU10_ROOT_ENV} "
        "names another folder)"
    )


def _qemu10(root: Path) -> QemuBuild | None:
    binary = root / "usr/bin/qemu-system-x86_64"
    modules = root / "moddir"
    if not os.access(binary, os.X_OK) or not _shadows_system_modules(modules):
        return None
    args = ["-L", str(root / "usr/share/qemu")]
    if (root / "usr/share/seabios").is_dir():
        args += ["-L", str(root / "usr/share/seabios")]
    return QemuBuild("10.0", str(binary), {"QEMU_MODULE_DIR": str(modules)}, tuple(args))


def _shadows_system_modules(modules: Path) -> bool:
    """True when ``modules`` has an entry for every module name of the system's QEMU."""
    if not modules.is_dir():
        return False
    present = {entry.name for entry in modules.iterdir()}
    system = {entry.name for entry in SYSTEM_MODULE_DIR.glob("*.so")}
    return system <= present
