"""Pebble (Debian's ACME test server) and pebble-challtestsrv, started and stopped by PID.

Used by the ACME tests in tests/interop (their fixtures are in its conftest.py) and by
bench/acme.py. Everything binds 127.0.0.1 on free ports. challtestsrv answers every A query
with 127.0.0.1, so Pebble's http-01 validation of any domain connects to 127.0.0.1:HTTP_PORT,
where the client's own responder listens; its management API (``/set-txt``, ``/clear-txt``)
serves dns-01 TXT records.

Pebble ships no TLS certificate: a throw-away CA and server certificate for 127.0.0.1 and
localhost are made here; ``Pebble.trust`` is that CA, for ``--acme-trust``.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import json
import os
import socket
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from support.servers import free_port, stop_process

PEBBLE = Path("/usr/bin/pebble")
CHALLTESTSRV = Path("/usr/bin/pebble-challtestsrv")
EAB_EXAMPLE = Path("/usr/share/doc/pebble/examples/pebble-config-external-account-bindings.json")

__all__ = ["CHALLTESTSRV", "EAB_EXAMPLE", "PEBBLE", "Pebble", "run_pebble"]


def _wait_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited {proc.returncode}:\n{log.read_text(errors='replace')}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.02)
    raise RuntimeError(f"{proc.args} did not listen on {port}:\n{log.read_text(errors='replace')}")


def _tls_material(d: Path) -> tuple[Path, Path, Path]:
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tokenissue test Pebble TLS CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = d / "tls-ca.pem", d / "tls-cert.pem", d / "tls-key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return paths


@dataclass
class Pebble:
    dir: Path
    port: int  #: ACME API (HTTPS)
    management_port: int  #: /roots/0 and friends (HTTPS)
    http_port: int  #: where Pebble's validator connects for http-01 (the client serves it)
    challtestsrv_port: int  #: challtestsrv's management API (plain HTTP)
    trust: Path  #: the CA of Pebble's TLS certificate
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def directory(self) -> str:
        return f"https://127.0.0.1:{self.port}/dir"

    @property
    def location(self) -> str:
        """``--ca`` for tokenissue."""
        return f"acme+https://127.0.0.1:{self.port}/dir"

    @property
    def http01_address(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    def _get(self, path: str) -> bytes:
        ctx = ssl.create_default_context(cafile=str(self.trust))
        with urllib.request.urlopen(f"https://127.0.0.1:{self.management_port}{path}", context=ctx, timeout=10) as r:
            data: bytes = r.read()
            return data

    def root(self) -> x509.Certificate:
        """The root Pebble issues under (it makes a new one at every start)."""
        return x509.load_pem_x509_certificate(self._get("/roots/0"))

    def challtestsrv(self, path: str, body: dict[str, str]) -> None:
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.challtestsrv_port}{path}", data=json.dumps(body).encode(), method="POST"
        )
        with urllib.request.urlopen(req, timeout=10):  # noqa: S310
            pass

    def stop(self) -> None:
        for p in reversed(self.procs):
            stop_process(p, grace=5)
        self.procs.clear()


@contextlib.contextmanager
def run_pebble(d: Path, *, eab: dict[str, str] | None = None, nonce_reject: int = 0) -> Iterator[Pebble]:
    """Start challtestsrv and Pebble on free 127.0.0.1 ports; stop both (by PID) on exit.

    ``eab``: kid → base64url HMAC key; when given, Pebble requires external account binding.
    ``nonce_reject``: the percentage of good nonces Pebble refuses with badNonce.
    """
    d.mkdir(parents=True, exist_ok=True)
    trust, cert, key = _tls_material(d)
    dns_port, mgmt_port = free_port(), free_port()
    peb = Pebble(dir=d, port=free_port(), management_port=free_port(), http_port=free_port(),
                 challtestsrv_port=mgmt_port, trust=trust)
    config = {
        "pebble": {
            "listenAddress": f"127.0.0.1:{peb.port}",
            "managementListenAddress": f"127.0.0.1:{peb.management_port}",
            "certificate": str(cert),
            "privateKey": str(key),
            "httpPort": peb.http_port,
            "tlsPort": free_port(),
            "ocspResponderURL": "",
            "externalAccountBindingRequired": eab is not None,
            **({"externalAccountMACKeys": eab} if eab else {}),
        }
    }
    (d / "pebble.json").write_text(json.dumps(config))
    env = {**os.environ, "PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": str(nonce_reject)}
    try:
        log1 = d / "challtestsrv.log"
        with log1.open("wb") as out:
            p1 = subprocess.Popen(
                [str(CHALLTESTSRV), "-defaultIPv4", "127.0.0.1", "-defaultIPv6", "", "-dns01", f"127.0.0.1:{dns_port}",
                 "-http01", "", "-https01", "", "-tlsalpn01", "", "-management", f"127.0.0.1:{mgmt_port}"],
                stdout=out, stderr=subprocess.STDOUT, env=env,
            )  # fmt: skip
        peb.procs.append(p1)
        _wait_port(mgmt_port, p1, log1)
        log2 = d / "pebble.log"
        with log2.open("wb") as out:
            p2 = subprocess.Popen(
                [str(PEBBLE), "-config", str(d / "pebble.json"), "-dnsserver", f"127.0.0.1:{dns_port}"],
                stdout=out, stderr=subprocess.STDOUT, env=env, cwd=d,
            )  # fmt: skip
        peb.procs.append(p2)
        _wait_port(peb.port, p2, log2)
        _wait_port(peb.management_port, p2, log2)
        yield peb
    finally:
        peb.stop()
