"""Tap interfaces for tests (root only): a persistent one for QEMU's ``ifname=``, or one
opened here and passed to QEMU as an fd."""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

TUNSETIFF = 0x400454CA
IFF_TAP, IFF_NO_PI = 0x0002, 0x1000


def new_tap_name() -> str:
    """A name unique among tests running at once (at most 15 bytes)."""
    return f"qh{secrets.token_hex(4)}"


def set_up(name: str) -> None:
    """No IPv6 chatter from the host into the tap; link up."""
    Path(f"/proc/sys/net/ipv6/conf/{name}/disable_ipv6").write_text("1\n")
    subprocess.run(["ip", "link", "set", name, "up"], check=True)


@contextlib.contextmanager
def persistent_tap() -> Iterator[str]:
    """A tap that exists until the block ends, for ``-netdev tap,ifname=NAME``."""
    name = new_tap_name()
    subprocess.run(["ip", "tuntap", "add", "dev", name, "mode", "tap"], check=True)
    try:
        set_up(name)
        yield name
    finally:
        subprocess.run(["ip", "link", "delete", name], check=False)


@contextlib.contextmanager
def open_tap() -> Iterator[tuple[str, int]]:
    """A tap opened here: (name, fd) for ``-netdev tap,fd=N`` with ``pass_fds``."""
    name = new_tap_name()
    fd = os.open("/dev/net/tun", os.O_RDWR)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI))
        set_up(name)
        yield name, fd
    finally:
        os.close(fd)


def tap_args(name: str) -> list[str]:
    """QEMU arguments for a NIC on the persistent tap ``name`` (a ``-M pc`` machine)."""
    netdev = f"tap,id=n0,ifname={name},script=no,downscript=no"
    return ["-netdev", netdev, "-device", "rtl8139,netdev=n0"]
