"""Shared fixtures: real QEMU VMs, on every QEMU version of the matrix.

* ``qemu_binary``: the QEMU build under test (:class:`tests.helpers.qemu_versions.QemuBuild`:
  binary, environment, first arguments), parametrized over the matrix: the system's QEMU 7.2
  and QEMU 10.0 from bookworm-backports (``scripts/fetch-qemu10.sh``), test ids ``qemu-7.2``
  and ``qemu-10.0`` (``pytest -k qemu-7.2`` runs one version: docs/qemu-versions.md). Every
  test that uses it, directly or through the fixtures below, runs once per version. When a
  version is missing, its tests **fail** with a clear message (10.0 exactly like 7.2); set
  ``QMP_EXPORTER_SKIP_QEMU=1`` to skip the tests of a missing version instead. It is
  module-scoped: pytest then runs a module's tests together, one version after the other; a
  session-scoped parameter would interleave modules and set their module fixtures up again
  (the Debian package would be built, installed and purged three times).
* ``qemu_factory``: a callable taking :class:`tests.helpers.qemu.QemuVM` keyword arguments
  (``name``, ``uuid``, ``monitors``, ``paused``, ``vnc``, ``machine``, ``extra_args``) that
  starts a VM and returns it once its sockets are ready; every VM it started is killed when
  the test ends.
* ``qemu_vm``: one started VM with defaults (``-M none``, one monitor, no VNC).

Tests using these are marked ``qemu`` automatically (``pytest -m "not qemu"`` deselects them).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.helpers.qemu import QemuVM
from tests.helpers.qemu_versions import VERSIONS, QemuBuild, find_build, missing_reason

SKIP_QEMU_ENV = "QMP_EXPORTER_SKIP_QEMU"

QEMU_FIXTURES = {"qemu_binary", "qemu_factory", "qemu_vm"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if QEMU_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.qemu)


@pytest.fixture(scope="module", params=VERSIONS, ids=[f"qemu-{v}" for v in VERSIONS])
def qemu_binary(request: pytest.FixtureRequest) -> QemuBuild:
    """One QEMU version of the matrix; fails (or skips with QMP_EXPORTER_SKIP_QEMU=1) when
    that version is missing."""
    version: str = request.param
    build = find_build(version)
    if build is None:
        reason = missing_reason(version)
        if os.environ.get(SKIP_QEMU_ENV) == "1":
            pytest.skip(f"{reason}; skipped since {SKIP_QEMU_ENV}=1")
        pytest.fail(
            f"{reason}. These tests need a real QEMU of every version in the matrix "
            f"{VERSIONS}; set {SKIP_QEMU_ENV}=1 to skip them.",
            pytrace=False,
        )
    return build


@pytest.fixture
def qemu_factory(qemu_binary: QemuBuild) -> Iterator[Callable[..., QemuVM]]:
    """Start real QEMUs: ``vm = qemu_factory(vnc=True, monitors=2)``; all killed at test end."""
    started: list[QemuVM] = []

    def start(**options: Any) -> QemuVM:
        vm = QemuVM(build=qemu_binary, **options)
        started.append(vm)
        return vm.start()

    yield start
    for vm in started:
        vm.close()


@pytest.fixture
def qemu_vm(qemu_factory: Callable[..., QemuVM]) -> QemuVM:
    """One running ``-M none`` VM with one QMP monitor."""
    return qemu_factory()
