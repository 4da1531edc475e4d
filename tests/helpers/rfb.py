"""A minimal VNC (RFB 3.8) client for making QEMU's VNC events happen in tests.

* :func:`vnc_tcp_connect` opens a TCP connection only: QEMU emits ``VNC_CONNECTED`` on accept.
* :func:`rfb_handshake` also completes the RFB 3.8 handshake with security type None and
  ClientInit: QEMU adds ``VNC_INITIALIZED``.
* Closing either socket gives ``VNC_DISCONNECTED``.

::

    with rfb_handshake(vm.vnc_port) as session:
        assert session.width == 640
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

RFB_VERSION = b"RFB 003.008\n"
SECURITY_NONE = 1


class RFBError(RuntimeError):
    """The server did not follow the RFB handshake."""


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


def rfb_handshake(
    port: int, host: str = "127.0.0.1", *, shared: bool = True, timeout: float = 5.0
) -> RFBSession:
    """Connect and complete the RFB 3.8 handshake (security None, ClientInit)."""
    sock = vnc_tcp_connect(port, host, timeout)
    try:
        server_version = _read_exactly(sock, 12)
        if not server_version.startswith(b"RFB "):
            raise RFBError(f"not an RFB server: {server_version!r}")
        sock.sendall(RFB_VERSION)
        (count,) = _read_exactly(sock, 1)
        if count == 0:
            (length,) = struct.unpack(">I", _read_exactly(sock, 4))
            reason = _read_exactly(sock, length).decode(errors="replace")
            raise RFBError(f"server refused the connection: {reason}")
        types = _read_exactly(sock, count)
        if SECURITY_NONE not in types:
            raise RFBError(f"security type None not offered: {list(types)}")
        sock.sendall(bytes([SECURITY_NONE]))
        (result,) = struct.unpack(">I", _read_exactly(sock, 4))
        if result != 0:
            raise RFBError(f"SecurityResult {result}")
        sock.sendall(b"\x01" if shared else b"\x00")
        width, height = struct.unpack(">HH", _read_exactly(sock, 4))
        _read_exactly(sock, 16)  # pixel format
        (name_length,) = struct.unpack(">I", _read_exactly(sock, 4))
        name = _read_exactly(sock, name_length).decode(errors="replace")
    except BaseException:
        sock.close()
        raise
    return RFBSession(sock, server_version, width, height, name)


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise RFBError(f"connection closed after {len(data)} of {size} bytes")
        data += chunk
    return data
