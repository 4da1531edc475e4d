"""Throwaway CA, server and client certificates made with the ``openssl`` command line."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


def _openssl(*args: str, cwd: Path) -> None:
    if shutil.which("openssl") is None:
        raise RuntimeError("the openssl command line tool is required for the TLS tests")
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def _key(name: str, cwd: Path) -> None:
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-out", f"{name}.key", cwd=cwd)  # fmt: skip


def make_ca(directory: Path, name: str = "ca") -> Path:
    """A self-signed CA; returns its certificate (key beside it as NAME.key)."""
    _key(name, directory)
    _openssl("req", "-x509", "-new", "-key", f"{name}.key", "-out", f"{name}.crt",
             "-days", "2", "-subj", f"/CN=qmp-exporter test {name}",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=directory)  # fmt: skip
    return directory / f"{name}.crt"


def make_leaf(directory: Path, name: str, ca: str, san: str, usage: str) -> Path:
    """A certificate NAME.crt (key NAME.key) signed by CA for ``usage`` serverAuth/clientAuth."""
    _key(name, directory)
    _openssl("req", "-new", "-key", f"{name}.key", "-out", f"{name}.csr",
             "-subj", f"/CN={name}", cwd=directory)  # fmt: skip
    ext = directory / f"{name}.ext"
    ext.write_text(f"subjectAltName={san}\nextendedKeyUsage={usage}\n"
                   "basicConstraints=CA:FALSE\n")  # fmt: skip
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
             "-CAcreateserial", "-out", f"{name}.crt", "-days", "2",
             "-extfile", ext.name, cwd=directory)  # fmt: skip
    return directory / f"{name}.crt"


@dataclass(frozen=True)
class PKI:
    """Paths of a test CA, two server certs, a client cert and a client from another CA."""

    directory: Path
    ca: Path
    server: Path
    server_key: Path
    server2: Path
    server2_key: Path
    client: Path
    client_key: Path
    rogue_client: Path
    rogue_client_key: Path


def make_pki(directory: Path) -> PKI:
    """Make every certificate the TLS tests need in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    make_ca(directory, "ca")
    make_ca(directory, "rogue-ca")
    server_san = "DNS:localhost,IP:127.0.0.1"
    make_leaf(directory, "server", "ca", server_san, "serverAuth")
    make_leaf(directory, "server2", "ca", server_san, "serverAuth")
    make_leaf(directory, "client", "ca", "DNS:prometheus.test", "clientAuth")
    make_leaf(directory, "rogue-client", "rogue-ca", "DNS:prometheus.test", "clientAuth")
    d = directory
    return PKI(
        directory=d,
        ca=d / "ca.crt",
        server=d / "server.crt",
        server_key=d / "server.key",
        server2=d / "server2.crt",
        server2_key=d / "server2.key",
        client=d / "client.crt",
        client_key=d / "client.key",
        rogue_client=d / "rogue-client.crt",
        rogue_client_key=d / "rogue-client.key",
    )
