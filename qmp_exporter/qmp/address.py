"""Monitor addresses: ``unix:/path``, a bare absolute path, or ``tcp:HOST:PORT``."""

from __future__ import annotations

from dataclasses import dataclass

from qmp_exporter.qmp.errors import AddressError


@dataclass(frozen=True, slots=True)
class UnixAddress:
    """A unix domain socket path."""

    path: str

    def __str__(self) -> str:
        return f"unix:{self.path}"


@dataclass(frozen=True, slots=True)
class TCPAddress:
    """A TCP host and port (IPv6 hosts in brackets: ``tcp:[::1]:4444``)."""

    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp:{host}:{self.port}"


Address = UnixAddress | TCPAddress


def parse_address(text: str) -> Address:
    """Parse an address string; raise :class:`AddressError` saying what is wrong."""
    if not isinstance(text, str) or not text:
        raise AddressError("empty address: expected unix:/PATH, /PATH or tcp:HOST:PORT")
    if "\0" in text:
        raise AddressError("address contains a NUL byte")
    if text.startswith("/"):
        return UnixAddress(text)
    if text.startswith("unix:"):
        path = text[len("unix:") :]
        if not path:
            raise AddressError(f"{text!r}: unix address without a path")
        return UnixAddress(path)
    if text.startswith("tcp:"):
        rest = text[len("tcp:") :]
        if rest.startswith("["):
            host, sep, tail = rest[1:].partition("]")
            if not sep or not tail.startswith(":"):
                raise AddressError(f"{text!r}: expected tcp:[IPV6]:PORT")
            port_text = tail[1:]
        else:
            host, sep, port_text = rest.rpartition(":")
            if not sep:
                raise AddressError(f"{text!r}: expected tcp:HOST:PORT")
        if not host:
            raise AddressError(f"{text!r}: empty host")
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise AddressError(f"{text!r}: port must be a number from 1 to 65535")
        return TCPAddress(host, int(port_text))
    raise AddressError(f"{text!r}: expected unix:/PATH, an absolute path, or tcp:HOST:PORT")
