"""Load for the fleet tests: many CMP enrollments sent concurrently to several ``ca serve``
replicas, each client failing over to the next replica as a load balancer would.

A client that gets no answer (connection refused or cut), HTTP 500/502/503 or a CMP
systemUnavail repeats **the same message** (same transactionID, same nonce, same MAC) at the
next replica after a short pause, until it gets an answer or its deadline passes. That is
what RFC 4210 §5.3.22-style retries by transactionID are for, and what makes "no certificate
lost or issued twice" checkable: every attempt ends with one certificate or a refusal.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from tokenissue.ca.authority import CertificateAuthority
from tokenissue.ca.registration import RegistrationAuthority
from tokenissue.protocols.cmp import CMPResponse, MessageHeader, build_ir

from support.cmp_server import CMP_TYPE, Registered, confirm, new_key, response_of
from support.softhsm import SOFTHSM_MODULE

RETRY_STATUSES = frozenset({500, 502, 503})

__all__ = ["Attempt", "Outcome", "register_many", "run_attempts"]


def register_many(ca_dir: Path, n: int, prefix: str) -> list[Registered]:
    """``n`` registrations made in one CA session (the RA officer's desk, in bulk)."""
    out = []
    with CertificateAuthority.open(ca_dir, module=SOFTHSM_MODULE) as ca:
        ra = RegistrationAuthority(ca)
        for i in range(n):
            reg, code = ra.register(f"CN={prefix} {i:04d},O=tokenissue fleet tests", "personal")
            out.append(Registered(reg.ref, code, x509.Name.from_rfc4514_string(reg.subject)))
    return out


@dataclass
class Attempt:
    """One enrollment: a fresh key and transactionID, the registration's code as MAC key."""

    reg: Registered
    first_replica: int
    implicit_confirm: bool = True
    key: Any = field(default_factory=new_key)
    tid: bytes = field(default_factory=lambda: os.urandom(16))


@dataclass
class Outcome:
    attempt: Attempt
    certificate: x509.Certificate | None = None
    failure: str | None = None  #: the CMP failureInfo of a refusal
    text: str | None = None
    tries: int = 0  #: messages sent, retries included
    retried_on: list[str] = field(default_factory=list)  #: why each retry happened

    @property
    def sha256(self) -> str | None:
        return self.certificate.fingerprint(hashes.SHA256()).hex() if self.certificate else None


class _Gaveup(Exception):
    pass


def _send(clients: list[httpx.Client], der: bytes, start: int, out: Outcome, deadline: float) -> CMPResponse:
    i = start
    while True:
        client = clients[i % len(clients)]
        out.tries += 1
        why = None
        try:
            r = client.post("/pkix/", content=der, headers={"content-type": CMP_TYPE})
        except httpx.TransportError as e:
            why = type(e).__name__
        else:
            if r.status_code not in RETRY_STATUSES:
                assert r.status_code == 200, (r.status_code, r.content[:200])
                resp = response_of(r.content)
                if resp.status is None or "systemUnavail" not in resp.status.failure_info:
                    return resp
                why = f"systemUnavail: {resp.status.text}"
            else:
                # uvicorn's own 503 (past limit_concurrency) is plain text; ours is CMP.
                cmp = r.headers.get("content-type") == CMP_TYPE
                said = response_of(r.content).status if cmp else None
                why = f"HTTP {r.status_code} " + (f"CMP {said.text}" if said else r.text[:60])
        out.retried_on.append(why)
        if time.monotonic() > deadline:
            raise _Gaveup(f"no answer after {out.tries} tries: {out.retried_on[-5:]}")
        i += 1
        time.sleep(0.2 if why in {"ConnectError", "RemoteProtocolError", "ReadError"} else 0.05)


def _run_one(urls: list[str], attempt: Attempt, patience: float) -> Outcome:
    out = Outcome(attempt)
    reg = attempt.reg
    # The deadline starts with the attempt, not with the run: a client that meets an outage late
    # in a long run gets as many retries as one that meets it early.
    deadline = time.monotonic() + patience
    # A replica works on one CMP message at a time, so a request may wait behind a hundred others
    # on a slow machine: a read timeout is a retry, so it must be longer than any honest queue.
    timeout = httpx.Timeout(30, read=patience)
    clients = [httpx.Client(base_url=u, timeout=timeout) for u in urls]
    try:
        ir = reg.protect(
            build_ir(reg.subject, None, attempt.key, header=MessageHeader(implicit_confirm=attempt.implicit_confirm, transaction_id=attempt.tid))
        )
        resp = _send(clients, ir, attempt.first_replica, out, deadline)
        if resp.body_type != "ip" or resp.certificate is None:
            assert resp.status is not None, resp
            out.failure = ",".join(resp.status.failure_info)
            out.text = resp.status.text
            return out
        if not attempt.implicit_confirm:
            conf = _send(clients, reg.protect(confirm(resp)), attempt.first_replica + 1, out, deadline)
            assert conf.body_type == "pkiconf", conf.status
        out.certificate = resp.certificate
        return out
    except _Gaveup as e:
        out.failure, out.text = "gave-up", str(e)
        return out
    finally:
        for c in clients:
            c.close()


def run_attempts(urls: list[str], attempts: Iterable[Attempt], *, workers: int = 32, patience: float = 180) -> list[Outcome]:
    """Run every attempt, ``workers`` at a time, each giving up ``patience`` seconds after it
    started; the outcomes in the attempts' order."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda a: _run_one(urls, a, patience), attempts))
