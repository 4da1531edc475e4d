"""The Python packaging: ``python -m build`` makes an sdist and a wheel that ``twine check``
accepts; the wheel holds the package and the console script, the sdist what the Debian build
needs (debian/, systemd/).

The build runs offline (``--no-isolation``) with the test environment's setuptools (Debian's
own in .venv), from a copy of the working tree. Marked ``package`` (the main test stage only).
"""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from qmp_exporter import __version__

pytestmark = pytest.mark.package

REPO = Path(__file__).resolve().parents[1]
IGNORED = shutil.ignore_patterns(
    ".git", ".venv*", "__pycache__", "*.egg-info", "build", "dist", ".mypy_cache", ".ruff_cache"
)


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """{"sdist": path, "wheel": path}, built from a copy of this checkout."""
    work = tmp_path_factory.mktemp("dists")
    source, out = work / "src", work / "dist"
    shutil.copytree(REPO, source, ignore=IGNORED)
    built = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    sdists = list(out.glob("qmp[-_]exporter-*.tar.gz"))  # setuptools < 69 keeps the dash
    wheels = list(out.glob("qmp_exporter-*-py3-none-any.whl"))
    assert len(sdists) == 1 and len(wheels) == 1, sorted(p.name for p in out.iterdir())
    return {"sdist": sdists[0], "wheel": wheels[0]}


def sdist_top(sdist: Path) -> str:
    """The sdist's top directory: name and version (PEP 625 writes qmp_exporter, setuptools
    before 69 qmp-exporter)."""
    top = sdist.name.removesuffix(".tar.gz")
    assert top in (f"qmp_exporter-{__version__}", f"qmp-exporter-{__version__}"), top
    return top


def test_twine_accepts_both(dists: dict[str, Path]) -> None:
    checked = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", dists["sdist"], dists["wheel"]],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.count("PASSED") == 2, checked.stdout


def test_the_names_carry_the_version(dists: dict[str, Path]) -> None:
    assert dists["sdist"].name.removesuffix(".tar.gz") == sdist_top(dists["sdist"])
    assert dists["wheel"].name == f"qmp_exporter-{__version__}-py3-none-any.whl"


def test_the_wheel_holds_the_package_and_the_command(dists: dict[str, Path]) -> None:
    with zipfile.ZipFile(dists["wheel"]) as wheel:
        names = set(wheel.namelist())
        assert "qmp_exporter/__init__.py" in names
        assert "qmp_exporter/cli.py" in names
        modules = {str(p.relative_to(REPO)) for p in (REPO / "qmp_exporter").rglob("*.py")}
        assert modules - names == set(), "every module of the package, sub-packages included"
        assert not [n for n in names if n.startswith(("tests/", "bench/"))]
        entry_points = wheel.read(f"qmp_exporter-{__version__}.dist-info/entry_points.txt")
    parser = configparser.ConfigParser()
    parser.read_string(entry_points.decode())
    assert dict(parser["console_scripts"]) == {"qmp-exporter": "qmp_exporter.cli:main"}


def test_the_sdist_holds_what_the_debian_build_needs(dists: dict[str, Path]) -> None:
    top = sdist_top(dists["sdist"])
    with tarfile.open(dists["sdist"]) as sdist:
        names = set(sdist.getnames())
    for path in (
        "debian/control",
        "debian/rules",
        "debian/changelog",
        "systemd/qmp-exporter.service",
        "qmp_exporter/__init__.py",
        "pyproject.toml",
        "README.md",
    ):
        assert f"{top}/{path}" in names, path
