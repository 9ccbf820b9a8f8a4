"""Helpers for the CMP server tests: an in-process app on a real SoftHSM CA token, a client
that builds and protects requests with the CMP message layer, and ``tokenissue ca serve``
started as a subprocess on 127.0.0.1 and stopped by its PID.

The holder keys here are software keys: what is under test is the server, whose CA key is on
the SoftHSM token (no mock anywhere). The openssl interop tests use token keys on the holder
side too.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from tokenissue.ca.authority import CertificateAuthority
from tokenissue.ca.registration import RegistrationAuthority
from tokenissue.credentials import Secret
from tokenissue.protocols.cmp import (
    CMPResponse,
    MessageHeader,
    SharedSecret,
    build_cert_conf,
    decode_message,
    encode_message,
    parse_response,
    protect_pbm,
    protect_signature,
)

from support.cli import USER_PIN
from support.lifecycle import TokenCA
from support.servers import free_port, stop_process
from support.softhsm import SOFTHSM_MODULE, SoftHSM

CMP_TYPE = "application/pkixcmp"

__all__ = [
    "CMP_TYPE", "Registered", "Served", "confirm", "in_process_app", "new_key", "register",
    "response_of", "served", "signed", "snapshot",
]  # fmt: skip


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@dataclass
class Registered:
    ref: str
    code: Secret
    subject: x509.Name

    @property
    def kid(self) -> bytes:
        return self.ref.encode("ascii")

    @property
    def secret(self) -> SharedSecret:
        """The code as the MAC's shared secret (its UTF-8 octets), as the server takes it."""
        return SharedSecret.from_text(self.code.reveal())

    def protect(self, msg: Any, **kw: Any) -> bytes:
        return encode_message(protect_pbm(msg, self.secret, sender_kid=self.kid, **kw))


def register(
    ca_dir: Path, subject: str, profile: str = "personal", *, san: tuple[str, ...] = (), valid: timedelta | None = None
) -> Registered:
    """A registration made in-process (the RA officer's step), with its code."""
    with CertificateAuthority.open(ca_dir, module=SOFTHSM_MODULE) as ca:
        ra = RegistrationAuthority(ca)
        kw: dict[str, Any] = {"san": san}
        if valid is not None:
            kw["valid"] = valid
        reg, code = ra.register(subject, profile, **kw)
    return Registered(reg.ref, code, x509.Name.from_rfc4514_string(reg.subject))


def response_of(body: bytes) -> CMPResponse:
    return parse_response(decode_message(body))


def confirm(resp: CMPResponse, *, accepted: bool = True, cert: x509.Certificate | None = None, **kw: Any) -> Any:
    """A certConf for the certificate in ``resp`` (or ``cert``), in resp's transaction."""
    assert resp.transaction_id is not None and resp.sender_nonce is not None
    target = cert or resp.certificate
    assert target is not None
    header = MessageHeader(transaction_id=resp.transaction_id, recip_nonce=kw.pop("recip_nonce", resp.sender_nonce))
    return build_cert_conf(target, resp.cert_req_id or 0, accepted=accepted, header=header, **kw)


def signed(msg: Any, key: Any, cert: x509.Certificate) -> bytes:
    return encode_message(protect_signature(msg, key, cert))


def snapshot(ca_dir: Path) -> dict[str, Any]:
    """What must not change when a request is refused: certificates, statuses, audit, registrations."""
    with CertificateAuthority.open(ca_dir, module=SOFTHSM_MODULE) as ca:
        inv = ca.inventory
        return {
            "certs": sorted((r.serial, r.status.value) for r in inv.list_certificates()),
            "count": inv.certificate_count(),
            "audit": [(e.action, e.details) for e in inv.audit_entries()],
            "registrations": sorted((r.ref, r.status.value, r.serial) for r in inv.list_registrations()),
        }


@dataclass
class Served:
    """A ``tokenissue ca serve`` subprocess."""

    url: str
    proc: subprocess.Popen[bytes]
    stderr_path: Path
    log: list[dict[str, Any]] = field(default_factory=list)

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def access_log(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stderr().splitlines() if line.startswith("{")]


@contextmanager
def served(ca: TokenCA, *extra: str, env: dict[str, str] | None = None, port: int | None = None) -> Iterator[Served]:
    """Start ``tokenissue ca serve`` on ``port`` (default: a free one) of 127.0.0.1; wait for
    /health; stop it by PID after (unless it has died already, e.g. at a failpoint).

    A free port can be taken by another process between ``free_port()`` and the server's bind;
    then (and only when the test did not ask for a port) the server is started on another one.
    """
    for tries_left in reversed(range(3)):
        try:
            server = _start(ca, extra, env, port or free_port())
        except _PortTaken:
            if port is not None or not tries_left:
                raise
            continue
        break
    try:
        yield server
    finally:
        stop_process(server.proc, grace=20)


class _PortTaken(AssertionError):
    pass


def _start(ca: TokenCA, extra: tuple[str, ...], env: dict[str, str] | None, port: int) -> Served:
    stderr_path = ca.hsm.root / f"serve-{port}-{time.monotonic_ns()}.log"
    full_env = {**ca.hsm.env, **ca.env, **(env or {})}
    with stderr_path.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tokenissue.cli", "ca", "serve", "--ca-dir", str(ca.dir),
             "--listen", f"127.0.0.1:{port}", *extra],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, env=full_env,
        )  # fmt: skip
    scheme = "https" if "--tls-cert" in extra else "http"  # /health is polled without verifying TLS
    server = Served(f"{scheme}://127.0.0.1:{port}", proc, stderr_path)
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            err = server.stderr()
            raise (_PortTaken if "address already in use" in err.lower() else AssertionError)(
                f"ca serve exited {proc.returncode}: {err}"
            )
        try:
            if httpx.get(f"{server.url}/health", timeout=2, verify=False).status_code == 200:  # noqa: S501
                return server
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait(timeout=20)
            raise AssertionError(f"ca serve did not answer /health: {server.stderr()}")
        time.sleep(0.1)


def in_process_app(hsm: SoftHSM, ca: TokenCA, **kw: Any) -> tuple[Any, io.StringIO]:
    """The app for ``ca``, with python-pkcs11 in this process switched to ``hsm`` and refreshed
    (the CA token was made by a subprocess after the module was loaded)."""
    from tokenissue import p11
    from tokenissue.credentials import Pin
    from tokenissue.server.app import create_app

    assert os.environ.get("SOFTHSM2_CONF") == str(hsm.conf), "use the session_softhsm fixture"
    p11.load_module(SOFTHSM_MODULE).refresh()
    log = io.StringIO()
    return create_app(ca.dir, ca_pin=Pin(USER_PIN), module=SOFTHSM_MODULE, access_log=log, **kw), log
