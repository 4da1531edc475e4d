"""Shared fixtures: real QEMU VMs.

* ``qemu_binary``: the path of ``qemu-system-x86_64``. When it is missing the test **fails**
  with a clear message; set ``QMP_EXPORTER_SKIP_QEMU=1`` to skip such tests instead.
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

from tests.helpers.qemu import QemuVM, find_qemu

SKIP_QEMU_ENV = "QMP_EXPORTER_SKIP_QEMU"

QEMU_FIXTURES = {"qemu_binary", "qemu_factory", "qemu_vm"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if QEMU_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.qemu)


@pytest.fixture(scope="session")
def qemu_binary() -> str:
    """Path of qemu-system-x86_64; fails (or skips with QMP_EXPORTER_SKIP_QEMU=1) without it."""
    path = find_qemu()
    if path is None:
        if os.environ.get(SKIP_QEMU_ENV) == "1":
            pytest.skip(f"qemu-system-x86_64 not installed and {SKIP_QEMU_ENV}=1")
        pytest.fail(
            "qemu-system-x86_64 is not installed: these tests need a real QEMU. "
            "Run scripts/install-test-deps.sh (apt-get install qemu-system-x86), "
            f"or set {SKIP_QEMU_ENV}=1 to skip them.",
            pytrace=False,
        )
    return path


@pytest.fixture
def qemu_factory(qemu_binary: str) -> Iterator[Callable[..., QemuVM]]:
    """Start real QEMUs: ``vm = qemu_factory(vnc=True, monitors=2)``; all killed at test end."""
    started: list[QemuVM] = []

    def start(**options: Any) -> QemuVM:
        vm = QemuVM(binary=qemu_binary, **options)
        started.append(vm)
        return vm.start()

    yield start
    for vm in started:
        vm.close()


@pytest.fixture
def qemu_vm(qemu_factory: Callable[..., QemuVM]) -> QemuVM:
    """One running ``-M none`` VM with one QMP monitor."""
    return qemu_factory()
