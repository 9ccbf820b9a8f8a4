"""The CMP server against hostile and mistaken requests, with its CA key on a real SoftHSM token.

Every refusal must be a CMP error message the client can decode, with the PKIFailureInfo named
in the test, the right HTTP status and never 500, and must change nothing: the certificates and
their statuses, the audit log and the registrations are compared before and after (only a wrong
code is allowed to count, and to say so in the audit log).

The app runs in-process under Starlette's TestClient (real HTTP semantics, no sockets); the
subprocess server is exercised by tests/interop/test_cmp_server_openssl.py.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from starlette.testclient import TestClient

from tokenissue.pkix.csr import build_csr
from tokenissue.protocols.cmp import (
    ID_IT_CA_CERTS,
    CMPResponse,
    MessageHeader,
    SharedSecret,
    build_cert_conf,
    build_cr,
    build_genm,
    build_ir,
    build_kur,
    build_p10cr,
    build_rr,
    decode_message,
    encode_message,
    mac_iterations,
    verify_protection,
)

from support.cmp_server import (
    CMP_TYPE,
    Registered,
    confirm,
    in_process_app,
    new_key,
    register,
    response_of,
    signed,
    snapshot,
)
from support.lifecycle import TokenCA, make_token_ca
from support.softhsm import SoftHSM


@dataclass
class Env:
    ca: TokenCA
    client: TestClient
    log: Any

    def post(self, body: bytes, *, content_type: str = CMP_TYPE) -> tuple[int, CMPResponse]:
        r = self.client.post("/pkix/", content=body, headers={"content-type": content_type})
        assert r.status_code != 500, r.content
        assert r.headers["content-type"].startswith(CMP_TYPE)
        return r.status_code, response_of(r.content)

    def refused(self, body: bytes, failure: str, *, status: int = 200, **kw: Any) -> CMPResponse:
        code, resp = self.post(body, **kw)
        assert (code, resp.body_type) == (status, "error"), (code, resp)
        assert resp.status is not None and resp.status.status == "rejection"
        assert resp.status.failure_info == (failure,), resp.status
        return resp

    def enroll(self, reg: Registered, key: Any = None, *, confirm_it: bool = True, **kw: Any) -> CMPResponse:
        key = key or new_key()
        code, resp = self.post(reg.protect(build_ir(reg.subject, None, key, header=MessageHeader(**kw))))
        assert (code, resp.body_type) == (200, "ip"), resp.status
        if confirm_it:
            code, conf = self.post(reg.protect(confirm(resp)))
            assert (code, conf.body_type) == (200, "pkiconf"), conf.status
        return resp


@pytest.fixture
def env(session_softhsm: SoftHSM, ca_database: str | None) -> Iterator[Env]:
    ca = make_token_ca(session_softhsm, database=ca_database)
    app, log = in_process_app(session_softhsm, ca)
    with TestClient(app) as client:
        yield Env(ca, client, log)


def _no_secrets_in_log(env: Env, *secrets: str) -> None:
    text = env.log.getvalue()
    for s in secrets:
        assert s not in text


# -- the path that works, as a baseline for the refusals ---------------------------------------


def test_ir_with_registration_code_issues_registered_subject(env: Env) -> None:
    reg = register(env.ca.dir, "CN=Hong Gildong,O=Example,C=KR", san=("email:hong@example.kr",))
    key = new_key()
    # No subject in the template: the registration supplies it, and the SAN.
    code, ip = env.post(reg.protect(build_ir(None, None, key, header=MessageHeader(sender=reg.subject))))
    assert (code, ip.body_type) == (200, "ip"), ip.status
    # RFC 4210: a PBM-protected request gets a PBM-protected answer, with the same code.
    verify_protection(ip.message, secret=SharedSecret(reg.code.reveal().encode()))
    cert = ip.certificate
    assert cert is not None and cert.subject == reg.subject
    assert cert.public_key().public_numbers() == key.public_key().public_numbers()
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [g.value for g in san] == ["hong@example.kr"]
    assert ip.ca_pubs == (env.ca.certificate,)
    # The answer's MAC uses the request's iteration count (10,000 here, tokenissue's default).
    assert mac_iterations(ip.message) == 10_000
    code, conf = env.post(reg.protect(confirm(ip), iterations=500))
    assert (code, conf.body_type) == (200, "pkiconf")
    assert mac_iterations(conf.message) == 500  # ... and 500 for OpenSSL's count
    # The code was used up: the same reference and code are refused from now on.
    env.refused(reg.protect(build_ir(reg.subject, None, new_key())), "notAuthorized")
    records = env.ca.records()
    assert [r.serial for r in records] == [cert.serial_number]
    _no_secrets_in_log(env, reg.code.reveal(), "246810")
    lines = [line for line in env.log.getvalue().splitlines() if '"cmp_body": "ir"' in line]
    assert lines and f'"ref": "{reg.ref}"' in lines[0]


def test_p10cr_with_implicit_confirm_finishes_at_once(env: Env) -> None:
    reg = register(env.ca.dir, "CN=P10 Holder,O=Example")
    key = new_key()
    csr = build_csr(key, reg.subject)
    code, cp = env.post(reg.protect(build_p10cr(csr, header=MessageHeader(implicit_confirm=True))))
    assert (code, cp.body_type) == (200, "cp"), cp.status
    assert cp.header.implicit_confirm and cp.cert_req_id == -1
    # The transaction is finished: a certConf now has nothing left to confirm.
    env.refused(reg.protect(confirm(cp)), "certConfirmed")


def test_client_rejecting_its_certificate_gets_it_revoked(env: Env) -> None:
    reg = register(env.ca.dir, "CN=Changed Mind")
    ip = env.enroll(reg, confirm_it=False)
    code, conf = env.post(reg.protect(confirm(ip, accepted=False, failure_info="badCertTemplate")))
    assert (code, conf.body_type) == (200, "pkiconf")
    [rec] = env.ca.records()
    assert rec.status.value == "revoked"


def test_genm_ca_certs_unprotected(env: Env) -> None:
    code, genp = env.post(encode_message(build_genm([ID_IT_CA_CERTS])))
    assert (code, genp.body_type) == (200, "genp")
    assert genp.ca_certs == (env.ca.certificate,)
    # Signed by the CA key on the token.
    verify_protection(genp.message, trusted_signers=[env.ca.certificate])


def test_cr_kur_rr_signed_by_the_holder(env: Env) -> None:
    reg = register(env.ca.dir, "CN=Signer,O=Example")
    key = new_key()
    cert = env.enroll(reg, key).certificate
    assert cert is not None
    # cr: another certificate for the same subject, signed with the current certificate's key.
    key2 = new_key()
    code, cp = env.post(signed(build_cr(None, None, key2), key, cert))
    assert (code, cp.body_type) == (200, "cp"), cp.status
    verify_protection(cp.message, trusted_signers=[env.ca.certificate])
    code, _ = env.post(signed(confirm(cp), key, cert))
    assert code == 200
    # kur: a new key for the first certificate.
    key3 = new_key()
    code, kup = env.post(signed(build_kur(cert.subject, None, key3, old_cert=cert), key, cert))
    assert (code, kup.body_type) == (200, "kup"), kup.status
    new = kup.certificate
    assert new is not None and new.subject == cert.subject
    code, _ = env.post(signed(confirm(kup), key, cert))
    assert code == 200
    by_serial = {r.serial: r for r in env.ca.records()}
    assert by_serial[new.serial_number].replaces == cert.serial_number
    # rr: the new certificate revokes itself.
    code, rp = env.post(signed(build_rr(new.issuer, new.serial_number, x509.ReasonFlags.superseded), key3, new))
    assert (code, rp.body_type) == (200, "rp"), rp.status
    assert rp.revocation_statuses[0].status == "accepted"
    assert {r.serial: r for r in env.ca.records()}[new.serial_number].status.value == "revoked"
    # Anything signed by the revoked certificate is refused now, and changes nothing.
    before = snapshot(env.ca.dir)
    env.refused(signed(build_kur(new.subject, None, new_key(), old_cert=new), key3, new), "certRevoked")
    env.refused(signed(build_rr(new.issuer, new.serial_number), key3, new), "certRevoked")
    env.refused(signed(build_cr(None, None, new_key()), key3, new), "certRevoked")
    assert snapshot(env.ca.dir) == before


def test_rr_repeated_after_a_half_done_transaction_is_carried_out(env: Env) -> None:
    """The database failed after the rr's transaction was begun (the client got a 503 and
    repeats the same message): the repeat revokes, and a further repeat is certRevoked, which
    clients take as done; never transactionIdInUse, which would leave the holder guessing."""
    from tokenissue.models import TransactionKind

    reg = register(env.ca.dir, "CN=RR Repeat,O=Example")
    key = new_key()
    cert = env.enroll(reg, key).certificate
    assert cert is not None
    tid, nonce = os.urandom(16), os.urandom(16)
    rr = signed(build_rr(cert.issuer, cert.serial_number, header=MessageHeader(transaction_id=tid, sender_nonce=nonce)), key, cert)
    from tokenissue.inventory import Inventory

    with Inventory.open(env.ca.database or env.ca.dir / "ca.db") as inv:
        inv.transaction_begin(tid, TransactionKind.RR, None, nonce, os.urandom(16), False, signer=cert.serial_number)
    code, rp = env.post(rr)
    assert (code, rp.body_type) == (200, "rp") and rp.revocation_statuses[0].status == "accepted", rp.status
    assert {r.serial: r for r in env.ca.records()}[cert.serial_number].status.value == "revoked"
    env.refused(rr, "certRevoked")


# -- transport -----------------------------------------------------------------------------------


def test_transport_errors_are_cmp_errors(env: Env) -> None:
    reg = register(env.ca.dir, "CN=Transport")
    good = reg.protect(build_ir(reg.subject, None, new_key()))
    before = snapshot(env.ca.dir)
    env.refused(good, "badDataFormat", status=415, content_type="application/octet-stream")
    env.refused(good, "badDataFormat", status=415, content_type="text/plain")
    env.refused(b"\x30" + b"\x00" * (70 * 1024), "badRequest", status=413)
    # Content-Length is not trusted: a chunked upload is cut off at the limit too.
    r = env.client.post("/pkix/", content=iter([b"\x30\x84" + b"\x00" * 40_000] * 3), headers={"content-type": CMP_TYPE})
    assert r.status_code == 413
    for bad in (b"", b"\x00", b"\x30\x03abc", b"hello world", good[: len(good) // 2], good[:-1], good + b"\x00"):
        env.refused(bad, "badDataFormat", status=400)
    assert snapshot(env.ca.dir) == before
    # The path without the trailing slash and with a label work too (RFC 6712 / RFC 9483 §3.6).
    for path in ("/pkix", "/pkix/any-label"):
        r = env.client.post(path, content=encode_message(build_genm([ID_IT_CA_CERTS])), headers={"content-type": CMP_TYPE})
        assert r.status_code == 200 and response_of(r.content).body_type == "genp"
    assert env.client.get("/health").json()["status"] == "ok"
    assert x509.load_pem_x509_certificates(env.client.get("/ca.pem").content) == [env.ca.certificate]
    assert env.client.get("/crl.pem").status_code == 404


# -- the registration code -----------------------------------------------------------------------


def test_wrong_mac_counts_and_five_lock_the_reference(env: Env) -> None:
    reg = register(env.ca.dir, "CN=Brute Force")
    wrong = Registered(reg.ref, type(reg.code)("AAAAA-AAAAA-AAAAA-AAAAA"), reg.subject)
    before = snapshot(env.ca.dir)
    texts = set()
    for _ in range(1, 6):
        resp = env.refused(wrong.protect(build_ir(reg.subject, None, new_key())), "badMessageCheck")
        assert resp.status is not None and resp.status.text is not None
        texts.add(resp.status.text)
    # Until the MAC verifies, the answer tells nothing (tests/token/test_cmp_uniform_answers.py).
    assert len(texts) == 1 and "locked" not in texts.pop()
    after = snapshot(env.ca.dir)
    assert after["certs"] == before["certs"] == []
    assert [r for r in after["registrations"]] == [(reg.ref, "locked", None)]
    # Only the failure counter (and its audit trail) moved.
    added = [a for a, _ in after["audit"][len(before["audit"]):]]
    assert added == ["ra-code-failure"] * 5 + ["ra-locked"]
    # Now even the right code is refused.
    env.refused(reg.protect(build_ir(reg.subject, None, new_key())), "notAuthorized")
    assert snapshot(env.ca.dir) == after


def test_unknown_reference_expired_and_used_codes(env: Env) -> None:
    reg = register(env.ca.dir, "CN=Used Once")
    env.enroll(reg)
    short = register(env.ca.dir, "CN=Too Late", valid=timedelta(seconds=1))
    time.sleep(1.2)
    before = snapshot(env.ca.dir)
    ghost = Registered("0000000000", reg.code, reg.subject)
    env.refused(ghost.protect(build_ir(reg.subject, None, new_key())), "badMessageCheck")
    resp = env.refused(short.protect(build_ir(short.subject, None, new_key())), "notAuthorized")
    assert resp.status is not None and "expired" in (resp.status.text or "")
    resp = env.refused(reg.protect(build_ir(reg.subject, None, new_key())), "notAuthorized")
    assert resp.status is not None and "already used" in (resp.status.text or "")
    # A request with no senderKID cannot name its registration.
    env.refused(encode_message(_pbm_without_kid(reg)), "badMessageCheck")
    assert snapshot(env.ca.dir) == before


def _pbm_without_kid(reg: Registered) -> Any:
    from tokenissue.protocols.cmp import protect_pbm

    msg = protect_pbm(build_ir(reg.subject, None, new_key()), reg.secret, sender_kid=b"x")
    msg["header"]["senderKID"] = msg["header"]["senderKID"].clone(b"\xff\xfe")
    return msg


def test_replayed_transaction_id_issues_nothing(env: Env) -> None:
    first = register(env.ca.dir, "CN=First")
    second = register(env.ca.dir, "CN=Second")
    tid = os.urandom(16)
    env.enroll(first, transaction_id=tid)
    before = snapshot(env.ca.dir)
    # The same message again (a replay), and a fresh registration reusing the transactionID.
    env.refused(first.protect(build_ir(first.subject, None, new_key(), header=MessageHeader(transaction_id=tid))), "transactionIdInUse")
    env.refused(second.protect(build_ir(second.subject, None, new_key(), header=MessageHeader(transaction_id=tid))), "transactionIdInUse")
    assert snapshot(env.ca.dir) == before
    assert (second.ref, "open", None) in before["registrations"]


# -- certConf ------------------------------------------------------------------------------------


def test_cert_conf_wrong_hash_nonce_or_transaction(env: Env) -> None:
    reg = register(env.ca.dir, "CN=Confirmer")
    ip = env.enroll(reg, confirm_it=False)
    other = x509.load_pem_x509_certificate(env.ca.pem.read_bytes())
    before = snapshot(env.ca.dir)
    env.refused(reg.protect(confirm(ip, cert=other)), "badCertId")
    env.refused(reg.protect(confirm(ip, recip_nonce=os.urandom(16))), "badRecipientNonce")
    assert ip.certificate is not None
    stray = build_cert_conf(ip.certificate, header=MessageHeader(transaction_id=os.urandom(16), recip_nonce=os.urandom(16)))
    env.refused(reg.protect(stray), "badRequest")
    # A certConf protected with a wrong code does not verify.
    wrong = Registered(reg.ref, type(reg.code)("BBBBB-BBBBB-BBBBB-BBBBB"), reg.subject)
    env.refused(wrong.protect(confirm(ip)), "badMessageCheck")
    assert snapshot(env.ca.dir) == before
    # After all that, the right certConf still confirms.
    code, conf = env.post(reg.protect(confirm(ip)))
    assert (code, conf.body_type) == (200, "pkiconf")


# -- what the registration allows ----------------------------------------------------------------


def test_requests_outside_the_registration_are_refused(env: Env) -> None:
    reg = register(env.ca.dir, "CN=Narrow,O=Example", san=("email:narrow@example.kr",))
    code_signing = register(env.ca.dir, "CN=Signer Only", "code-signing")
    before = snapshot(env.ca.dir)
    # A different subject, a wider one, an extra SAN.
    env.refused(reg.protect(build_ir(x509.Name.from_rfc4514_string("CN=Someone Else,O=Example"), None, new_key())),
                "badCertTemplate")  # fmt: skip
    env.refused(reg.protect(build_ir(x509.Name.from_rfc4514_string("CN=Narrow,O=Example,C=KR"), None, new_key())),
                "badCertTemplate")  # fmt: skip
    env.refused(
        reg.protect(build_ir(reg.subject, None, new_key(), sans=[x509.RFC822Name("boss@example.kr")])), "badCertTemplate"
    )
    # p10cr: a CSR for another subject, and one whose signature (the POP) is broken.
    env.refused(reg.protect(build_p10cr(build_csr(new_key(), x509.Name.from_rfc4514_string("CN=Other")))),
                "badCertTemplate")  # fmt: skip
    env.refused(reg.protect(build_p10cr(_broken_csr(reg.subject))), "badPOP")
    # A key type the registered profile does not allow (code-signing: no Ed25519).
    env.refused(code_signing.protect(build_ir(code_signing.subject, None, ed25519.Ed25519PrivateKey.generate())),
                "badCertTemplate")  # fmt: skip
    # An unprotected ir, and an ir signed by a certificate: neither may enroll.
    env.refused(encode_message(build_ir(reg.subject, None, new_key())), "badMessageCheck")
    assert snapshot(env.ca.dir) == before
    # The registration is still good for the request it allows.
    env.enroll(reg)


def _broken_csr(subject: x509.Name) -> bytes:
    der = bytearray(build_csr(new_key(), subject).public_bytes(serialization.Encoding.DER))
    der[-3] ^= 0x01  # inside the signature BIT STRING
    return bytes(der)


def test_ir_signed_by_a_certificate_is_not_authorized(env: Env) -> None:
    reg = register(env.ca.dir, "CN=Has Cert")
    key = new_key()
    cert = env.enroll(reg, key).certificate
    assert cert is not None
    before = snapshot(env.ca.dir)
    env.refused(signed(build_ir(cert.subject, None, new_key()), key, cert), "notAuthorized")
    env.refused(signed(build_p10cr(build_csr(new_key(), cert.subject)), key, cert), "notAuthorized")
    # A kur whose oldCertID names another certificate, and an rr for someone else's certificate.
    other = register(env.ca.dir, "CN=Other Holder")
    other_cert = env.enroll(other).certificate
    assert other_cert is not None
    before = snapshot(env.ca.dir)
    env.refused(signed(build_kur(cert.subject, None, new_key(), old_cert=other_cert), key, cert), "badCertId")
    env.refused(signed(build_rr(other_cert.issuer, other_cert.serial_number), key, cert), "notAuthorized")
    # A certificate from another CA is not trusted at all.
    from support.software_ca import make_software_ca

    foreign = make_software_ca(env.ca.hsm.root / "foreign")
    fkey = new_key()
    fcert = foreign.issue(fkey.public_key(), "Has Cert")
    env.refused(signed(build_cr(None, None, new_key()), fkey, fcert), "signerNotTrusted")
    assert snapshot(env.ca.dir) == before


def test_decoded_garbage_never_reaches_the_ca(env: Env) -> None:
    # A body type a server never accepts (an ip sent to the CA).
    reg = register(env.ca.dir, "CN=Confused")
    ip = env.enroll(reg, confirm_it=False)
    env.refused(encode_message(ip.message), "badRequest", status=400)
    assert decode_message(encode_message(ip.message)) is not None
