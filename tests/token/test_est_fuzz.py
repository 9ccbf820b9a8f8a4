"""Random and mutated EST requests to the in-process app (CA key on a real SoftHSM token), on
SQLite and PostgreSQL: simpleenroll bodies and Authorization headers, simplereenroll without a
client certificate. Whatever arrives, the answer is one of EST's error statuses with a text/plain
sentence (or, for the seed itself, a certificate): never a 500. And nothing is issued or
consumed by a request that was refused: the CA's state is as before apart from the counted
wrong codes, which are what the lockout is for."""

from __future__ import annotations

import base64
from collections import Counter
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import given
from hypothesis import strategies as st
from starlette.testclient import TestClient

from tokenissue.pkix.csr import build_csr

from support.cmp_server import Registered, in_process_app, new_key, register, snapshot
from support.fuzz import fuzz_settings
from support.lifecycle import TokenCA, make_token_ca
from support.softhsm import SoftHSM

EXAMPLES = 300
ALLOWED = {400, 401, 403, 413, 415}


@pytest.fixture
def est_app(session_softhsm: SoftHSM, ca_database: str | None) -> Iterator[tuple[TestClient, TokenCA, Registered, bytes]]:
    ca = make_token_ca(session_softhsm, database=ca_database)
    reg = register(ca.dir, "CN=Fuzz EST,O=Example", "tls-client")
    csr = build_csr(new_key(), reg.subject)
    seed = base64.encodebytes(csr.public_bytes(serialization.Encoding.DER))
    app, _ = in_process_app(session_softhsm, ca)
    with TestClient(app, base_url="https://testserver") as client:
        yield client, ca, reg, seed


def _mutate(seed: bytes, data: st.DataObject) -> bytes:
    kind = data.draw(st.sampled_from(["flip", "truncate", "insert", "random", "der"]))
    buf = bytearray(seed)
    if kind == "flip":
        for _ in range(data.draw(st.integers(1, 6))):
            i = data.draw(st.integers(0, len(buf) - 1))
            buf[i] = data.draw(st.sampled_from(list(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdef0123456789+/=\n%!")))
    elif kind == "truncate":
        del buf[data.draw(st.integers(0, len(buf) - 1)) :]
    elif kind == "insert":
        i = data.draw(st.integers(0, len(buf)))
        buf[i:i] = data.draw(st.binary(min_size=1, max_size=64))
    elif kind == "random":
        buf = bytearray(data.draw(st.binary(max_size=70000)))
    else:  # valid base64 of mutated DER: reaches the CSR parser and the profile checks
        der = bytearray(base64.b64decode(seed))
        i = data.draw(st.integers(0, len(der) - 1))
        der[i] ^= data.draw(st.integers(1, 255))
        buf = bytearray(base64.encodebytes(bytes(der)))
    return bytes(buf)


def _decodes_to(body: bytes, seed: bytes) -> bool:
    try:
        return base64.b64decode(b"".join(body.split()), validate=True) == base64.b64decode(seed)
    except ValueError:
        return False


def test_random_and_mutated_est_requests_never_cause_500(est_app: tuple[TestClient, TokenCA, Registered, bytes]) -> None:
    client, ca, reg, seed = est_app
    before = snapshot(ca.dir)
    statuses: Counter[int] = Counter()
    good_auth = "Basic " + base64.b64encode(f"{reg.ref}:{reg.code.reveal()}".encode()).decode()

    @fuzz_settings(EXAMPLES)
    @given(data=st.data())
    def one(data: st.DataObject) -> None:
        body = _mutate(seed, data)
        op = data.draw(st.sampled_from(["simpleenroll", "simpleenroll", "simplereenroll"]))
        auth = data.draw(st.sampled_from([
            None, "Basic !!!", "Bearer x", "Basic " + base64.b64encode(b"nocolon").decode(),
            "Basic " + base64.b64encode(f"{reg.ref}:WRONG".encode()).decode(), good_auth,
        ]))  # fmt: skip
        ctype = data.draw(st.sampled_from(["application/pkcs10", "application/pkcs10", "text/plain"]))
        if auth == good_auth and _decodes_to(body, seed):
            auth = None  # the seed itself with the right code would be issued: that is not fuzzing
        headers = {"content-type": ctype, **({"authorization": auth} if auth else {})}
        r = client.post(f"/.well-known/est/{op}", content=body, headers=headers)
        statuses[r.status_code] += 1
        assert r.status_code in ALLOWED, (r.status_code, r.text[:300])
        assert r.headers["content-type"].startswith("text/plain") and r.text.strip()

    one()
    print(f"\nEST fuzz: {sum(statuses.values())} examples, statuses {dict(sorted(statuses.items()))}")
    assert sum(statuses.values()) >= EXAMPLES and len(statuses) >= 3
    metrics = client.get("/metrics").text
    counted = sum(int(float(line.rsplit(" ", 1)[1])) for line in metrics.splitlines()
                  if line.startswith('tokenissue_http_requests_total{route="est"'))  # fmt: skip
    assert counted == sum(statuses.values()), metrics
    after = snapshot(ca.dir)
    assert after["certs"] == before["certs"] and after["count"] == before["count"]
    # Only wrong codes were recorded (and perhaps the lock they led to); nothing was issued or used.
    assert {a for a, _ in after["audit"][len(before["audit"]):]} <= {"ra-code-failure", "ra-locked"}
    assert [(r[0], r[2]) for r in after["registrations"]] == [(r[0], r[2]) for r in before["registrations"]]
