"""How the tests find each QEMU version of the matrix (tests/helpers/qemu_versions.py): 10.0
only when its unpacked folder is complete, else a reason that says how to get it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.qemu_versions import (
    QEMU10_ROOT_ENV,
    SYSTEM_MODULE_DIR,
    VERSIONS,
    find_build,
    missing_reason,
)


def unpacked_qemu10(root: Path) -> Path:
    """A folder shaped like scripts/fetch-qemu10.sh's output (a stand-in binary)."""
    binary = root / "usr/bin/qemu-system-x86_64"
    binary.parent.mkdir(parents=True)
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    (root / "usr/share/qemu").mkdir(parents=True)
    (root / "usr/share/seabios").mkdir(parents=True)
    moddir = root / "moddir"
    moddir.mkdir()
    for module in SYSTEM_MODULE_DIR.glob("*.so"):
        (moddir / module.name).touch()
    return root


def test_the_matrix_is_7_2_then_10_0():
    assert VERSIONS == ("7.2", "10.0")
    with pytest.raises(ValueError, match="matrix"):
        find_build("9.2")


def test_a_missing_qemu10_is_none_with_a_reason(tmp_path, monkeypatch):
    monkeypatch.setenv(QEMU10_ROOT_ENV, str(tmp_path / "nothing"))
    assert find_build("10.0") is None
    reason = missing_reason("10.0")
    assert str(tmp_path / "nothing") in reason and "scripts/install-test-deps.sh" in reason


def test_an_unpacked_qemu10_runs_with_its_modules_and_firmware(tmp_path, monkeypatch):
    root = unpacked_qemu10(tmp_path / "q10")
    monkeypatch.setenv(QEMU10_ROOT_ENV, str(root))
    build = find_build("10.0")
    assert build is not None and build.id == "qemu-10.0"
    assert build.env == {"QEMU_MODULE_DIR": str(root / "moddir")}
    assert build.command("-M", "none") == [
        str(root / "usr/bin/qemu-system-x86_64"),
        "-L", str(root / "usr/share/qemu"), "-L", str(root / "usr/share/seabios"),
        "-M", "none",
    ]  # fmt: skip
    assert build.environ()["QEMU_MODULE_DIR"] == str(root / "moddir")


def test_a_module_folder_without_a_stub_for_a_7_2_module_is_not_used(tmp_path, monkeypatch):
    root = unpacked_qemu10(tmp_path / "q10")
    monkeypatch.setenv(QEMU10_ROOT_ENV, str(root))
    stubs = sorted((root / "moddir").iterdir())
    if not stubs:
        pytest.fail(f"no QEMU modules in {SYSTEM_MODULE_DIR}: is qemu-system-x86 installed?")
    stubs[0].unlink()  # QEMU would fall back to the 7.2 module of that name, and abort
    assert find_build("10.0") is None
