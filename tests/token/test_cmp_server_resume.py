"""The CMP server when a request is repeated or the server dies half-way, with its CA key on a
real SoftHSM token.

* A client that lost the answer (or died after it) repeats its request with the same
  transactionID, as our enroller does when it resumes: it gets the certificate already issued,
  and nothing is issued or consumed again, provided the repeat is authenticated like the
  original and asks for the same key.
* A server killed between issuing and consuming a registration (simulated here by a step hook
  that raises a BaseException out of the service, as SIGKILL would stop it there) leaves the
  registration reserved for that transaction: another transactionID is refused, the same one
  finishes with the certificate that was issued. Two services on one CA directory stand for
  two server replicas sharing the inventory.

The services are driven directly (``CMPService.handle``); the subprocess server with a real
SIGKILL is exercised by tests/token/test_cmp_end_to_end.py.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from cryptography import x509

from tokenissue.ca.authority import CertificateAuthority
from tokenissue.ca.registration import RegistrationAuthority
from tokenissue.credentials import Pin
from tokenissue.pkix.csr import build_csr
from tokenissue.protocols.cmp import CMPResponse, MessageHeader, build_ir, build_kur, build_p10cr
from tokenissue.server.cmp_service import CMPService

from support.cli import USER_PIN
from support.cmp_server import Registered, confirm, new_key, register, response_of, signed, snapshot
from support.lifecycle import TokenCA, make_token_ca
from support.softhsm import SOFTHSM_MODULE, SoftHSM


class Crash(BaseException):
    """Stands for SIGKILL at a step: nothing in the service catches it."""


@contextmanager
def service(ca: TokenCA, crash_at: str | None = None) -> Iterator[Callable[[bytes], tuple[int, CMPResponse, dict[str, Any]]]]:
    """One server replica: its own CA instance and inventory connection on the CA directory."""

    def step(name: str) -> None:
        if name == crash_at:
            raise Crash(name)

    with CertificateAuthority.open(ca.dir, module=SOFTHSM_MODULE) as authority:
        svc = CMPService(authority, RegistrationAuthority(authority), Pin(USER_PIN), on_step=step)

        def post(der: bytes) -> tuple[int, CMPResponse, dict[str, Any]]:
            status, body, fields = svc.handle(der)
            return status, response_of(body), fields

        yield post


@pytest.fixture
def ca(session_softhsm: SoftHSM, ca_database: str | None) -> TokenCA:
    from tokenissue import p11

    token_ca = make_token_ca(session_softhsm, database=ca_database)
    p11.load_module(SOFTHSM_MODULE).refresh()  # the CA token was made by a subprocess
    return token_ca


def _failure(resp: CMPResponse) -> tuple[str, ...]:
    assert resp.body_type == "error" and resp.status is not None, resp
    return tuple(resp.status.failure_info)


def _p10cr(reg: Registered, key: Any, tid: bytes, *, implicit_confirm: bool = False) -> bytes:
    header = MessageHeader(transaction_id=tid, implicit_confirm=implicit_confirm)
    return reg.protect(build_p10cr(build_csr(key, reg.subject), header=header))


def test_repeated_request_gets_the_same_certificate(ca: TokenCA) -> None:
    reg = register(ca.dir, "CN=Repeater,O=Example")
    key, tid = new_key(), os.urandom(16)
    with service(ca) as post:
        _, cp, _ = post(_p10cr(reg, key, tid))
        assert cp.body_type == "cp" and cp.certificate is not None
        _, conf, _ = post(reg.protect(confirm(cp)))
        assert conf.body_type == "pkiconf"
        before = snapshot(ca.dir)
        # The client died after the certificate was confirmed and asks again: same request,
        # fresh senderNonce. The answer carries the same certificate, our nonce as recipNonce.
        again = build_p10cr(build_csr(key, reg.subject), header=MessageHeader(transaction_id=tid))
        code, cp2, fields = post(reg.protect(again))
        assert (code, cp2.body_type) == (200, "cp"), cp2.status
        assert cp2.certificate == cp.certificate
        assert cp2.recip_nonce == again["header"]["senderNonce"].asOctets()
        assert cp2.sender_nonce != cp.sender_nonce
        assert fields["repeated"] is True
        # Waiting for certConf again, which confirms it again.
        _, conf2, _ = post(reg.protect(confirm(cp2)))
        assert conf2.body_type == "pkiconf", conf2.status
        # Nothing issued, nothing consumed, nothing audited.
        assert snapshot(ca.dir) == before
        assert before["registrations"] == [(reg.ref, "used", cp.certificate.serial_number)]


def test_repeats_that_are_not_the_same_request_change_nothing(ca: TokenCA) -> None:
    reg = register(ca.dir, "CN=Original")
    other = register(ca.dir, "CN=Other")
    key, tid = new_key(), os.urandom(16)
    with service(ca) as post:
        _, cp, _ = post(_p10cr(reg, key, tid, implicit_confirm=True))
        assert cp.body_type == "cp"
        before = snapshot(ca.dir)
        # Another key, another registration (even with its right code), another body type.
        assert _failure(post(_p10cr(reg, new_key(), tid))[1]) == ("transactionIdInUse",)
        assert _failure(post(_p10cr(other, key, tid))[1]) == ("transactionIdInUse",)
        assert _failure(post(reg.protect(build_ir(reg.subject, None, key, header=MessageHeader(transaction_id=tid))))[1]) == (
            "transactionIdInUse",
        )
        # A replay by someone without the code fails the MAC; the registration is used, so
        # there is nothing to count.
        thief = Registered(reg.ref, type(reg.code)("AAAAA-AAAAA-AAAAA-AAAAA"), reg.subject)
        assert _failure(post(_p10cr(thief, key, tid))[1]) == ("badMessageCheck",)
        assert snapshot(ca.dir) == before
        assert (other.ref, "open", None) in before["registrations"]


def test_repeated_kur_gets_the_same_certificate(ca: TokenCA) -> None:
    reg = register(ca.dir, "CN=Updater")
    key = new_key()
    with service(ca) as post:
        _, ip, _ = post(reg.protect(build_ir(reg.subject, None, key, header=MessageHeader(implicit_confirm=True))))
        cert = ip.certificate
        assert cert is not None
        new, tid = new_key(), os.urandom(16)
        _, kup, _ = post(signed(build_kur(cert.subject, None, new, old_cert=cert, header=MessageHeader(transaction_id=tid)), key, cert))
        assert kup.body_type == "kup" and kup.certificate is not None
        before = snapshot(ca.dir)
        _, kup2, _ = post(signed(build_kur(cert.subject, None, new, old_cert=cert, header=MessageHeader(transaction_id=tid)), key, cert))
        assert kup2.body_type == "kup", kup2.status
        assert kup2.certificate == kup.certificate
        # The same transactionID signed by another certificate (the new one) is not a repeat.
        assert kup.certificate is not None
        assert _failure(
            post(signed(build_kur(cert.subject, None, new, old_cert=kup.certificate, header=MessageHeader(transaction_id=tid)), new,
                        kup.certificate))[1]
        ) == ("transactionIdInUse",)  # fmt: skip
        assert snapshot(ca.dir) == before


def test_crash_between_issue_and_consume_only_the_same_transaction_finishes(ca: TokenCA) -> None:
    reg = register(ca.dir, "CN=Crash Window,O=Example")
    key, tid = new_key(), os.urandom(16)
    with service(ca, crash_at="after-issue") as dying, pytest.raises(Crash):
        dying(_p10cr(reg, key, tid))
    # The certificate exists; the registration is still open, but reserved for that transaction.
    [issued] = ca.records()
    assert issued.request_id == tid.hex()
    [(ref, status, serial)] = snapshot(ca.dir)["registrations"]
    assert (ref, status, serial) == (reg.ref, "open", None)
    # Another replica takes over. A request with another transactionID is refused: one code,
    # one certificate, even though the registration never got marked used.
    with service(ca) as replica:
        before = snapshot(ca.dir)
        _, refused, _ = replica(_p10cr(reg, new_key(), os.urandom(16)))
        assert _failure(refused) == ("notAuthorized",)
        assert refused.status is not None and "in use by another request" in (refused.status.text or "")
        assert snapshot(ca.dir) == before
        # The same transaction, repeated by its client, gets the certificate that was issued.
        code, cp, _ = replica(_p10cr(reg, key, tid))
        assert (code, cp.body_type) == (200, "cp"), cp.status
        assert cp.certificate is not None and cp.certificate.serial_number == issued.serial
        _, conf, _ = replica(reg.protect(confirm(cp)))
        assert conf.body_type == "pkiconf", conf.status
    after = snapshot(ca.dir)
    assert after["count"] == 1
    assert after["registrations"] == [(reg.ref, "used", issued.serial)]
    assert [a for a, _ in after["audit"]].count("ra-used") == 1


def test_crash_after_reserving_then_a_definite_refusal_releases_the_code(ca: TokenCA) -> None:
    reg = register(ca.dir, "CN=Released")
    tid = os.urandom(16)
    with service(ca, crash_at="after-reserve") as dying, pytest.raises(Crash):
        dying(_p10cr(reg, new_key(), tid))
    with service(ca) as post:
        # While reserved, no other transaction gets in.
        assert _failure(post(_p10cr(reg, new_key(), os.urandom(16)))[1]) == ("notAuthorized",)
        # The same transaction comes back asking for something the registration does not allow:
        # a definite refusal, which lets the code go.
        wrong = x509.Name.from_rfc4514_string("CN=Somebody Else")
        bad = reg.protect(build_p10cr(build_csr(new_key(), wrong), header=MessageHeader(transaction_id=tid)))
        assert _failure(post(bad)[1]) == ("badCertTemplate",)
        assert ca.records() == []
        # Now a new request can use the code, once.
        _, cp, _ = post(_p10cr(reg, new_key(), os.urandom(16), implicit_confirm=True))
        assert cp.body_type == "cp", cp.status
    assert snapshot(ca.dir)["count"] == 1


def test_crash_after_consuming_before_answering_repeats_the_answer(ca: TokenCA) -> None:
    reg = register(ca.dir, "CN=Continued")
    key, tid = new_key(), os.urandom(16)
    # Killed after issuing and consuming, before answering: the client saw nothing.
    with service(ca, crash_at="after-consume") as dying, pytest.raises(Crash):
        dying(_p10cr(reg, key, tid))
    [issued] = ca.records()
    with service(ca) as post:
        _, cp, _ = post(_p10cr(reg, key, tid, implicit_confirm=True))
        assert cp.body_type == "cp", cp.status
        assert cp.certificate is not None and cp.certificate.serial_number == issued.serial
    assert snapshot(ca.dir)["count"] == 1
