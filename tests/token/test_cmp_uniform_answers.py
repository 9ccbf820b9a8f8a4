"""Before a MAC-protected request authenticates, the CMP server's answer tells nothing.

An unknown reference, a malformed senderKID, and a wrong code on a registration that is open,
used, expired, locked or cancelled all get the same answer: the same HTTP status, the same
PKIStatusInfo (byte for byte: status, failInfo and statusString) and the same protection (the
CA's signature, never the registration's MAC). Otherwise references could be probed: which
exist, which were used, which are locked. Only a request whose MAC verifies with the
reference's code may learn the registration's state. A wrong code still counts while the
registration is open, as before, and the fifth still locks it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from pyasn1.codec.der import encoder
from starlette.testclient import TestClient

from tokenissue.credentials import Secret
from tokenissue.protocols.cmp import build_ir, decode_message, encode_message, protect_pbm

from support.cmp_server import CMP_TYPE, Registered, confirm, in_process_app, new_key, register, response_of, snapshot
from support.lifecycle import TokenCA, make_token_ca
from support.softhsm import SoftHSM

WRONG = Secret("AAAAA-AAAAA-AAAAA-AAAAA")


@pytest.fixture
def served_app(session_softhsm: SoftHSM) -> Iterator[tuple[TokenCA, TestClient]]:
    ca = make_token_ca(session_softhsm)
    app, _log = in_process_app(session_softhsm, ca)
    with TestClient(app) as client:
        yield ca, client


def _post(client: TestClient, body: bytes) -> tuple[int, Any]:
    r = client.post("/pkix/", content=body, headers={"content-type": CMP_TYPE})
    assert r.headers["content-type"].startswith(CMP_TYPE)
    return r.status_code, r.content


def _answer(status: int, body: bytes) -> tuple[Any, ...]:
    """What a prober could compare: HTTP status, body type, the PKIStatusInfo's DER, protection."""
    msg = decode_message(body)
    resp = response_of(body)
    info = b""
    if resp.body_type == "error":
        info = encoder.encode(msg["body"]["error"]["pKIStatusInfo"])
    return status, resp.body_type, info, resp.header.protection_alg


def _ir(ref: str, code: Secret, subject: Any) -> bytes:
    return Registered(ref, code, subject).protect(build_ir(subject, None, new_key()))


def test_every_answer_before_authentication_is_the_same(served_app: tuple[TokenCA, TestClient]) -> None:
    ca, client = served_app
    open_reg = register(ca.dir, "CN=Uniform Open")
    used = register(ca.dir, "CN=Uniform Used")
    expired = register(ca.dir, "CN=Uniform Expired", valid=timedelta(seconds=1))
    locked = register(ca.dir, "CN=Uniform Locked")
    # Use one registration, lock another with five wrong codes.
    status, body = _post(client, used.protect(build_ir(used.subject, None, new_key())))
    ip = response_of(body)
    assert (status, ip.body_type) == (200, "ip")
    assert response_of(_post(client, used.protect(confirm(ip)))[1]).body_type == "pkiconf"
    for _ in range(5):
        _post(client, _ir(locked.ref, WRONG, locked.subject))
    time.sleep(1.2)  # the short registration runs out
    regs = {r: s for r, s, _ in snapshot(ca.dir)["registrations"]}
    assert (regs[used.ref], regs[locked.ref], regs[expired.ref]) == ("used", "locked", "open")

    probes = {
        "unknown reference": _ir("0000000000", WRONG, open_reg.subject),
        "unknown reference, a real code": _ir("0000000001", open_reg.code, open_reg.subject),
        "wrong code, open": _ir(open_reg.ref, WRONG, open_reg.subject),
        "wrong code, used": _ir(used.ref, WRONG, used.subject),
        "wrong code, expired": _ir(expired.ref, WRONG, expired.subject),
        "wrong code, locked": _ir(locked.ref, WRONG, locked.subject),
        "not a reference": encode_message(_with_kid(open_reg, b"\xff\xfe")),
    }
    answers = {name: _answer(*_post(client, body)) for name, body in probes.items()}
    first = next(iter(answers.values()))
    assert first[0] == 200 and first[1] == "error"
    different = {name: a for name, a in answers.items() if a != first}
    assert not different, (first, different)
    text = response_of(_post(client, probes["unknown reference"])[1]).status
    assert text is not None and text.failure_info == ("badMessageCheck",)
    for word in ("used", "expired", "locked", "tries", open_reg.ref):
        assert word not in (text.text or "")


def test_wrong_codes_still_count_and_lock_while_the_answer_stays_the_same(
    served_app: tuple[TokenCA, TestClient],
) -> None:
    ca, client = served_app
    reg = register(ca.dir, "CN=Uniform Counting")
    answers = {_answer(*_post(client, _ir(reg.ref, WRONG, reg.subject))) for _ in range(6)}
    assert len(answers) == 1  # the 1st wrong code, the locking 5th and one after it look alike
    after = snapshot(ca.dir)
    assert [(r, s) for r, s, _ in after["registrations"]] == [(reg.ref, "locked")]
    assert [a for a, _ in after["audit"]].count("ra-code-failure") == 5


def test_the_right_code_learns_the_state(served_app: tuple[TokenCA, TestClient]) -> None:
    ca, client = served_app
    used = register(ca.dir, "CN=Uniform Right Code")
    status, body = _post(client, used.protect(build_ir(used.subject, None, new_key())))
    ip = response_of(body)
    _post(client, used.protect(confirm(ip)))
    status, body = _post(client, used.protect(build_ir(used.subject, None, new_key())))
    resp = response_of(body)
    assert status == 200 and resp.status is not None
    assert resp.status.failure_info == ("notAuthorized",) and "already used" in (resp.status.text or "")
    # Authenticated: the answer is protected with the registration's code, like a success.
    assert resp.header.protection_alg != _answer(*_post(client, _ir(used.ref, WRONG, used.subject)))[3]


def _with_kid(reg: Registered, kid: bytes) -> Any:
    msg = protect_pbm(build_ir(reg.subject, None, new_key()), reg.secret, sender_kid=b"x")
    msg["header"]["senderKID"] = msg["header"]["senderKID"].clone(kid)
    return msg
