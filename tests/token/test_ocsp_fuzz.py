"""Random and mutated OCSP requests, POSTed and in GET URLs, to the in-process app (CA and
responder keys on a real SoftHSM token), on SQLite and PostgreSQL.

Whatever arrives, the answer is HTTP 200, 413 or 415 with a decodable OCSPResponse: never a 500,
never a traceback; and nothing the CA keeps changes (OCSP only reads). Seeds are real requests
(SHA-1 and SHA-256 CertIDs, with and without a nonce) for a good, a revoked and an unknown
serial, so mutations reach the responder's checks rather than dying at the first byte.
"""

from __future__ import annotations

import base64
import os
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from hypothesis import given
from hypothesis import strategies as st
from starlette.testclient import TestClient

from support.cmp_server import in_process_app, snapshot
from support.fuzz import fuzz_settings, mutate
from support.lifecycle import TokenCA, make_token_ca
from support.softhsm import SoftHSM

EXAMPLES = 300
OCSP_TYPE = "application/ocsp-request"
SHA1 = hashes.SHA1()  # noqa: S303  (RFC 5019 CertIDs)


def _leaf(ca_cert: x509.Certificate, serial: int) -> x509.Certificate:
    """A certificate with this CA's name and ``serial`` (only issuer and serial go in a CertID)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder().subject_name(x509.Name.from_rfc4514_string("CN=seed")).issuer_name(ca_cert.subject)
        .public_key(key.public_key()).serial_number(serial).not_valid_before(now)
        .not_valid_after(now + timedelta(days=1)).sign(key, hashes.SHA256())
    )  # fmt: skip


@pytest.fixture
def client_and_seeds(session_softhsm: SoftHSM, ca_database: str | None) -> Iterator[tuple[TestClient, list[bytes], TokenCA]]:
    ca = make_token_ca(session_softhsm, database=ca_database)
    ca.run("ca", "ocsp-signer", "--ca", str(ca.dir), check=True)
    good = ca.enroll("CN=Good,O=Example", "--label", "good")["serial"]
    revoked = ca.enroll("CN=Revoked,O=Example", "--label", "revoked")["serial"]
    ca.run("ca", "revoke", "--ca", str(ca.dir), revoked, check=True)
    issuer = ca.certificate
    seeds = []
    for serial in (int(good, 16), int(revoked, 16), 0x7777):
        for algorithm in (SHA1, hashes.SHA256()):
            for nonce in (None, os.urandom(16)):
                builder = ocsp.OCSPRequestBuilder().add_certificate(_leaf(issuer, serial), issuer, algorithm)
                if nonce is not None:
                    builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
                seeds.append(builder.build().public_bytes(serialization.Encoding.DER))
    app, _ = in_process_app(session_softhsm, ca)
    with TestClient(app) as client:
        yield client, seeds, ca


def test_random_and_mutated_requests_never_cause_500_or_change_state(
    client_and_seeds: tuple[TestClient, list[bytes], TokenCA],
) -> None:
    client, seeds, ca = client_and_seeds
    before = snapshot(ca.dir)
    statuses: Counter[str] = Counter()

    @fuzz_settings(EXAMPLES)
    @given(data=st.data())
    def one(data: st.DataObject) -> None:
        body = mutate(data.draw(st.sampled_from(seeds)), data, max_body=20000,
                      kinds=("flip", "truncate", "insert", "random", "none"))
        if data.draw(st.booleans()) and len(body) < 2000:
            r = client.get("/ocsp/" + base64.b64encode(body).decode())
        else:
            ctype = data.draw(st.sampled_from([OCSP_TYPE, OCSP_TYPE, OCSP_TYPE, "application/octet-stream"]))
            r = client.post("/ocsp", content=body, headers={"content-type": ctype})
        assert r.status_code in (200, 413, 415), (r.status_code, r.content[:200])
        answer = ocsp.load_der_ocsp_response(r.content)
        status = answer.response_status
        outcome = status.name if status is not ocsp.OCSPResponseStatus.SUCCESSFUL else answer.certificate_status.name
        statuses[outcome] += 1

    one()
    print(f"\nOCSP fuzz: {sum(statuses.values())} examples, outcomes {dict(sorted(statuses.items()))}")
    assert sum(statuses.values()) >= EXAMPLES
    assert statuses["MALFORMED_REQUEST"] and statuses["GOOD"] + statuses["REVOKED"] + statuses["UNKNOWN"]
    assert snapshot(ca.dir) == before
