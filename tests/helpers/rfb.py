"""A minimal VNC (RFB 3.8) client for making QEMU's VNC events happen in tests.

* :func:`vnc_tcp_connect` opens a TCP connection only: QEMU emits ``VNC_CONNECTED`` on accept.
* :func:`rfb_handshake` also completes the RFB 3.8 handshake with security type None (or VNC
  authentication with ``password=``: DES by the ``openssl`` CLI) and ClientInit: QEMU adds
  ``VNC_INITIALIZED``. A wrong password raises :class:`RFBAuthError`.
* :func:`rfb_version_only` leaves right after the version exchange.
* Closing either socket gives ``VNC_DISCONNECTED``.

::

    with rfb_handshake(vm.vnc_port) as session:
        assert session.width == 640
"""

from __future__ import annotations

import socket
import struct
import subprocess
from dataclasses import dataclass

RFB_VERSION = b"RFB 003.008\n"
SECURITY_NONE = 1
SECURITY_VNC = 2


class RFBError(RuntimeError):
    """The server did not follow the RFB handshake."""


class RFBAuthError(RFBError):
    """The server refused the VNC password (SecurityResult failed)."""


@dataclass
class RFBSession:
    """An RFB connection after the handshake: the socket and the parsed ServerInit."""

    sock: socket.socket
    server_version: bytes
    width: int
    height: int
    name: str

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RFBSession:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def vnc_tcp_connect(port: int, host: str = "127.0.0.1", timeout: float = 5.0) -> socket.socket:
    """Open a plain TCP connection to a VNC server (no RFB bytes sent)."""
    return socket.create_connection((host, port), timeout=timeout)


def vnc_des_key(password: str) -> bytes:
    """The DES key of a VNC password: its first 8 bytes, zero-padded, each byte's bits
    reversed (RFB's quirk)."""
    key = password.encode("latin-1")[:8].ljust(8, b"\0")
    return bytes(int(f"{byte:08b}"[::-1], 2) for byte in key)


def vnc_auth_response(password: str, challenge: bytes) -> bytes:
    """The 16-byte answer to a VNC authentication challenge: the challenge DES-encrypted
    (ECB) with :func:`vnc_des_key`, by the ``openssl`` CLI (3DES with three equal keys is
    single DES, and in OpenSSL 3's default provider)."""
    key = vnc_des_key(password)
    return subprocess.run(
        ["openssl", "enc", "-des-ede3-ecb", "-nopad", "-K", (key * 3).hex()],
        input=challenge,
        capture_output=True,
        check=True,
        timeout=10,
    ).stdout


def rfb_version_only(port: int, host: str = "127.0.0.1", timeout: float = 5.0) -> None:
    """Connect, exchange RFB versions, and leave (a client that never authenticates)."""
    with vnc_tcp_connect(port, host, timeout) as sock:
        server_version = _read_exactly(sock, 12)
        if not server_version.startswith(b"RFB "):
            raise RFBError(f"not an RFB server: {server_version!r}")
        sock.sendall(RFB_VERSION)


def rfb_handshake(
    port: int,
    host: str = "127.0.0.1",
    *,
    shared: bool = True,
    timeout: float = 5.0,
    password: str | None = None,
) -> RFBSession:
    """Connect and complete the RFB 3.8 handshake (security None, or VNC authentication with
    ``password``; then ClientInit). A refused password raises :class:`RFBAuthError`."""
    sock = vnc_tcp_connect(port, host, timeout)
    try:
        server_version = _read_exactly(sock, 12)
        if not server_version.startswith(b"RFB "):
            raise RFBError(f"not an RFB server: {server_version!r}")
        sock.sendall(RFB_VERSION)
        (count,) = _read_exactly(sock, 1)
        if count == 0:
            raise RFBError(f"server refused the connection: {_read_reason(sock)}")
        types = _read_exactly(sock, count)
        wanted = SECURITY_NONE if password is None else SECURITY_VNC
        if wanted not in types:
            raise RFBError(f"security type {wanted} not offered: {list(types)}")
        sock.sendall(bytes([wanted]))
        if password is not None:
            challenge = _read_exactly(sock, 16)
            sock.sendall(vnc_auth_response(password, challenge))
        (result,) = struct.unpack(">I", _read_exactly(sock, 4))
        if result != 0:
            raise RFBAuthError(f"SecurityResult {result}: {_read_reason(sock)}")
        sock.sendall(b"\x01" if shared else b"\x00")
        width, height = struct.unpack(">HH", _read_exactly(sock, 4))
        _read_exactly(sock, 16)  # pixel format
        (name_length,) = struct.unpack(">I", _read_exactly(sock, 4))
        name = _read_exactly(sock, name_length).decode(errors="replace")
    except BaseException:
        sock.close()
        raise
    return RFBSession(sock, server_version, width, height, name)


def _read_reason(sock: socket.socket) -> str:
    """RFB 3.8's reason string after a refusal (u32 length, text)."""
    (length,) = struct.unpack(">I", _read_exactly(sock, 4))
    return _read_exactly(sock, min(length, 4096)).decode(errors="replace").rstrip("\0")


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise RFBError(f"connection closed after {len(data)} of {size} bytes")
        data += chunk
    return data
