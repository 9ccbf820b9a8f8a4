"""Random and mutated SCEP pkiMessages to the in-process app (CA and RA keys on a real SoftHSM
token): whatever arrives, the answer is a CertRep signed by the RA, or HTTP 400/413 with a
sentence; never a 500. A mutation outside what the signature covers (the self-signed
certificate's own signature, the outer digestAlgorithms) is still the holder's request and may
be issued, once: the registration is single-use, so at most one certificate comes out, with the
registered subject. Then the seed itself is answered SUCCESS: the same request as one issued
gets that certificate again (its answer may have been lost), and the RA's key still works after
every refused block."""

from __future__ import annotations

import base64
from collections import Counter
from collections.abc import Iterator

import pytest
from cryptography import x509
from hypothesis import given
from hypothesis import strategies as st
from starlette.testclient import TestClient

from support.cmp_server import Registered, in_process_app, register, snapshot
from support.fuzz import fuzz_settings, mutate
from support.lifecycle import TokenCA, make_token_ca
from support.scep import cert_rep_attributes, csr_with_challenge, pki_message, requester
from support.softhsm import SoftHSM

EXAMPLES = 200
SUBJECT = "CN=Fuzz SCEP,O=Example"


@pytest.fixture
def scep_app(session_softhsm: SoftHSM) -> Iterator[tuple[TestClient, TokenCA, Registered, bytes]]:
    ca = make_token_ca(session_softhsm)
    proc = ca.run("ca", "scep-ra", "--ca-dir", str(ca.dir))
    assert proc.returncode == 0, proc.stderr
    ra = x509.load_pem_x509_certificate((ca.dir / "scep-ra.pem").read_bytes())
    reg = register(ca.dir, SUBJECT, "tls-client")
    key, cert = requester(SUBJECT)
    seed = pki_message(csr_with_challenge(key, SUBJECT, f"{reg.ref}:{reg.code.reveal()}"), key, cert, ra)
    app, _ = in_process_app(session_softhsm, ca)
    with TestClient(app) as client:
        yield client, ca, reg, seed


def test_random_and_mutated_scep_requests_never_cause_500(scep_app: tuple[TestClient, TokenCA, Registered, bytes]) -> None:
    client, ca, _reg, seed = scep_app
    before = snapshot(ca.dir)
    outcomes: Counter[str] = Counter()

    @fuzz_settings(EXAMPLES)
    @given(data=st.data())
    def one(data: st.DataObject) -> None:
        body = mutate(seed, data, max_body=64 * 1024)
        if body == seed:
            return  # the seed itself would be issued: that is not fuzzing
        if data.draw(st.booleans()):
            r = client.post("/scep", params={"operation": "PKIOperation"}, content=body)
        else:
            r = client.get("/scep", params={"operation": "PKIOperation", "message": base64.b64encode(body[:4096]).decode()})
        assert r.status_code in (200, 400, 413), (r.status_code, r.text[:300])
        if r.status_code == 200:
            attrs = cert_rep_attributes(r.content)
            assert attrs["pkiStatus"] in ("0", "2"), attrs
            outcomes["success" if attrs["pkiStatus"] == "0" else "failInfo " + attrs["failInfo"]] += 1
        else:
            assert r.headers["content-type"].startswith("text/plain") and r.text.strip()
            outcomes[str(r.status_code)] += 1

    one()
    print(f"\nSCEP fuzz: {dict(sorted(outcomes.items()))}")
    assert len(outcomes) >= 2
    after = snapshot(ca.dir)
    issued = outcomes["success"]
    assert issued <= 1 and len(after["certs"]) == len(before["certs"]) + issued
    assert [r[1] for r in after["registrations"]] == (["used"] if issued else ["open"])
    r = client.post("/scep", params={"operation": "PKIOperation"}, content=seed)
    assert cert_rep_attributes(r.content)["pkiStatus"] == "0"
    assert len(snapshot(ca.dir)["certs"]) == len(before["certs"]) + 1
