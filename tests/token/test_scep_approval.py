"""SCEP requests for a profile with approval (issue 14): PENDING until an officer approves with
`ca approve`, then the client's poll gets the certificate; `ca reject` refuses the next poll and
releases the registration. CMP, EST and local enrollments cannot wait and are refused. The
requests are built by tests/support/scep.py (the CertPoll that micromdm's scepclient does not
send: it repeats its PKCSReq, which test_scep_client.py drives through the real client)."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest
from cryptography import x509
from starlette.testclient import TestClient

from support.cmp_server import in_process_app, register
from support.lifecycle import TokenCA, make_token_ca
from support.scep import cert_rep_attributes, csr_with_challenge, pki_message, requester
from support.softhsm import SoftHSM

SUBJECT = "CN=Approved device,O=Example"
PROFILE = '[profiles.device]\ndescription = "needs an officer"\napproval = true\n' \
          'days = 30\nkey_usage = ["digital_signature"]\nallowed_key_types = ["rsa-2048"]\n'  # fmt: skip


@pytest.fixture
def approval_app(session_softhsm: SoftHSM) -> Iterator[tuple[TestClient, TokenCA, x509.Certificate]]:
    ca = make_token_ca(session_softhsm, profiles=PROFILE)
    assert ca.run("ca", "scep-ra", "--ca-dir", str(ca.dir)).returncode == 0
    ra = x509.load_pem_x509_certificate((ca.dir / "scep-ra.pem").read_bytes())
    app, _ = in_process_app(session_softhsm, ca)
    with TestClient(app) as client:
        yield client, ca, ra


def _send(client: TestClient, body: bytes) -> dict[str, object]:
    r = client.post("/scep", params={"operation": "PKIOperation"}, content=body)
    assert r.status_code == 200, r.text
    return cert_rep_attributes(r.content)


def _pending(ca: TokenCA) -> list[dict[str, object]]:
    return ca.json("ca", "pending", "--ca-dir", str(ca.dir), "--all")


def test_pending_until_approved_then_the_poll_gets_the_certificate(
    approval_app: tuple[TestClient, TokenCA, x509.Certificate],
) -> None:
    client, ca, ra = approval_app
    reg = register(ca.dir, SUBJECT, "device")
    key, cert = requester(SUBJECT)
    request = pki_message(csr_with_challenge(key, SUBJECT, f"{reg.ref}:{reg.code.reveal()}"), key, cert, ra, tid="t-approve")
    poll_body = cert.subject.public_bytes()  # IssuerAndSubject's content does not matter: the transactionID finds it
    poll = pki_message(poll_body, key, cert, ra, message_type=20, tid="t-approve")
    assert _send(client, request)["pkiStatus"] == "3"
    assert _send(client, poll)["pkiStatus"] == "3"
    assert _send(client, request)["pkiStatus"] == "3"  # the PKCSReq again is a poll, not a second request
    (queued,) = _pending(ca)
    assert queued["status"] == "pending" and queued["ref"] == reg.ref and queued["subject"] == SUBJECT

    # Another requester cannot poll this transaction to itself.
    other_key, other_cert = requester("CN=intruder")
    stolen = _send(client, pki_message(poll_body, other_key, other_cert, ra, message_type=20, tid="t-approve"))
    assert stolen["pkiStatus"] == "2" and stolen["failInfo"] == "4"  # badCertId: nothing of its key waits

    proc = ca.run("ca", "approve", "--ca-dir", str(ca.dir), str(queued["id"]), "--by", "officer kim")
    assert proc.returncode == 0, proc.stderr
    assert "approved by officer kim" in proc.stdout
    assert _send(client, poll)["pkiStatus"] == "0"
    assert _send(client, poll)["pkiStatus"] == "0"  # a repeated poll: the same certificate, not a second one
    (done,) = _pending(ca)
    assert done["status"] == "issued" and done["decided_by"] == "officer kim"
    listed = ca.json("ca", "list", "--ca-dir", str(ca.dir))
    assert [r["serial"] for r in listed if r["profile"] == "device"] == [done["serial"]]
    regs = ca.json("ra", "list", "--ca-dir", str(ca.dir))
    assert [r["status"] for r in regs if r["ref"] == reg.ref] == ["used"]
    actions = [e["action"] for e in ca.json("ca", "audit", "list", "--ca-dir", str(ca.dir))]
    assert "request-pending" in actions and "request-approved" in actions
    again = ca.run("ca", "approve", "--ca-dir", str(ca.dir), str(queued["id"]))
    assert again.returncode != 0 and "already" in again.stderr


def test_rejected_then_the_code_serves_a_new_request(approval_app: tuple[TestClient, TokenCA, x509.Certificate]) -> None:
    client, ca, ra = approval_app
    reg = register(ca.dir, SUBJECT, "device")
    key, cert = requester(SUBJECT)
    request = pki_message(csr_with_challenge(key, SUBJECT, f"{reg.ref}:{reg.code.reveal()}"), key, cert, ra, tid="t-reject")
    assert _send(client, request)["pkiStatus"] == "3"
    (queued,) = _pending(ca)
    assert ca.run("ca", "reject", "--ca-dir", str(ca.dir), str(queued["id"])).returncode == 0
    refused = _send(client, pki_message(b"\x30\x00", key, cert, ra, message_type=20, tid="t-reject"))
    assert refused["pkiStatus"] == "2" and "refused" in str(refused.get("failInfoText"))
    again = _send(client, request)  # the rejected request itself, sent again (scepclient's poll)
    assert again["pkiStatus"] == "2" and "refused" in str(again.get("failInfoText"))
    # The registration was released: a corrected request (another CSR) with the same code is
    # queued anew, even from the same key in the same transaction (scepclient derives it from the key).
    fresh = pki_message(csr_with_challenge(key, SUBJECT, f"{reg.ref}:{reg.code.reveal()}", sha="sha384"), key, cert,
                        ra, tid="t-reject")  # fmt: skip
    assert _send(client, fresh)["pkiStatus"] == "3"
    assert [p["status"] for p in _pending(ca)] == ["rejected", "pending"]


def test_a_lost_answer_is_collected_by_sending_the_request_again(
    approval_app: tuple[TestClient, TokenCA, x509.Certificate],
) -> None:
    """Without approval: the PKCSReq sent again after it was issued gets the same certificate."""
    client, ca, ra = approval_app
    reg = register(ca.dir, SUBJECT, "tls-client")
    key, cert = requester(SUBJECT)
    request = pki_message(csr_with_challenge(key, SUBJECT, f"{reg.ref}:{reg.code.reveal()}"), key, cert, ra, tid="t-lost")
    assert _send(client, request)["pkiStatus"] == "0"
    assert _send(client, request)["pkiStatus"] == "0"
    assert len([r for r in ca.json("ca", "list", "--ca-dir", str(ca.dir)) if r["profile"] == "tls-client"]) == 1
    # Another key with the same code is still refused: the code served one request.
    other_key, other_cert = requester(SUBJECT)
    other = pki_message(csr_with_challenge(other_key, SUBJECT, f"{reg.ref}:{reg.code.reveal()}"), other_key, other_cert,
                        ra, tid="t-other")  # fmt: skip
    assert _send(client, other)["pkiStatus"] == "2"


def test_a_transaction_id_that_is_not_printable_is_malformed(
    approval_app: tuple[TestClient, TokenCA, x509.Certificate],
) -> None:
    client, _, ra = approval_app
    key, cert = requester(SUBJECT)
    body = pki_message(b"\x30\x00", key, cert, ra, tid="t-\u00e9")
    r = client.post("/scep", params={"operation": "PKIOperation"}, content=body)
    assert r.status_code == 400 and "PrintableString" in r.text
    # GET with an unencoded '+' in the base64 (read as a space) is still the same message.
    plus = base64.b64encode(pki_message(b"\x30\x00", key, cert, ra, tid="t-plus")).decode()
    r = client.get(f"/scep?operation=PKIOperation&message={plus}")
    assert r.status_code == 200 and cert_rep_attributes(r.content)["transactionID"] == "t-plus"


def test_protocols_that_cannot_wait_are_refused(approval_app: tuple[TestClient, TokenCA, x509.Certificate]) -> None:
    _, ca, _ = approval_app
    reg = register(ca.dir, SUBJECT, "device")
    code_file = ca.hsm.root / "code"
    code_file.write_text(reg.code.reveal())
    code_file.chmod(0o600)
    proc = ca.run("enroll", "--token", "test", "--type", "rsa-2048", "--ca", str(ca.dir), "--subject", SUBJECT, "--ref", reg.ref,
                  "--auth-code-file", str(code_file))  # fmt: skip
    assert proc.returncode != 0
    assert "needs an officer's approval" in proc.stderr, proc.stderr
    regs = ca.json("ra", "list", "--ca-dir", str(ca.dir))
    assert [r["status"] for r in regs if r["ref"] == reg.ref] == ["open"]
