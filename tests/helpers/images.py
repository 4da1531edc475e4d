"""Disk images for real-QEMU tests: qcow2 when ``qemu-img`` is installed, else raw."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path


def make_disk_image(directory: Path, size_mib: int = 16) -> tuple[Path, str]:
    """Create an empty disk image in ``directory``; return (path, QEMU format name)."""
    qemu_img = shutil.which("qemu-img")
    if qemu_img:
        path = directory / "disk.qcow2"
        subprocess.run(
            [qemu_img, "create", "-q", "-f", "qcow2", str(path), f"{size_mib}M"], check=True
        )
        return path, "qcow2"
    path = directory / "disk.raw"
    with open(path, "wb") as image:
        image.truncate(size_mib * 1024 * 1024)
    return path, "raw"


def pc_vm_args(image: Path, image_format: str) -> list[str]:
    """Extra QEMU arguments for a ``-M pc`` guest with 64 MiB, a virtio disk and a virtio
    balloon (use with ``qemu_factory(machine="pc", extra_args=...)``)."""
    return [
        "-m",
        "64",
        "-drive",
        f"if=none,id=disk0,file={image},format={image_format}",
        "-device",
        "virtio-blk-pci,drive=disk0,id=vblk0",
        "-device",
        "virtio-balloon-pci,id=balloon0",
    ]


#: ``__SO_ACCEPTCON`` in /proc/net/unix's Flags column: the socket is listening.
_LISTENING = 0x10000


def wait_listening(path: str, timeout: float = 5.0) -> None:
    """Wait until the unix socket at ``path`` listens. QEMU creates the socket file at
    ``bind()`` and listens just after, so a connect in between is refused."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open("/proc/net/unix", errors="surrogateescape") as table:  # any file name
            for line in table:
                fields = line.split()
                if len(fields) >= 8 and fields[7] == path and int(fields[3], 16) & _LISTENING:
                    return
        time.sleep(0.01)
    raise AssertionError(f"{path} is not listening after {timeout}s")
