"""Random and mutated bodies posted to the in-process CMP app (CA key on a real SoftHSM token).

Whatever arrives, the answer is HTTP 200, 400, 413 or 415 with a decodable CMP message: never
500, never a traceback. Seeds are real requests of every kind the server accepts (MAC-protected
ir and p10cr, signed kur and rr, certConf, genm), so mutations reach deep into parsing,
protection checks and the CA's policy rather than dying at the first byte.

The number of examples is fixed (``EXAMPLES``) and the test asserts that many ran, with the
status mix printed (``pytest -s``); the last run here: 300 examples.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.testclient import TestClient

from tokenissue.pkix.csr import build_csr
from tokenissue.protocols.cmp import (
    ID_IT_CA_CERTS,
    build_genm,
    build_ir,
    build_kur,
    build_p10cr,
    build_rr,
    encode_message,
)

from support.cmp_server import CMP_TYPE, confirm, in_process_app, new_key, register, response_of, signed
from support.fuzz import fuzz_settings, mutate
from support.lifecycle import make_token_ca
from support.softhsm import SoftHSM

EXAMPLES = 300
MAX_BODY = 8 * 1024
ALLOWED = {200, 400, 413, 415}


@pytest.fixture
def client_and_seeds(session_softhsm: SoftHSM, ca_database: str | None) -> Iterator[tuple[TestClient, list[bytes]]]:
    ca = make_token_ca(session_softhsm, database=ca_database)
    app, _ = in_process_app(session_softhsm, ca, max_body=MAX_BODY)
    with TestClient(app) as client:
        reg = register(ca.dir, "CN=Fuzz Seed,O=Example")
        key = new_key()
        ir = reg.protect(build_ir(reg.subject, None, key))
        r = client.post("/pkix/", content=ir, headers={"content-type": CMP_TYPE})
        ip = response_of(r.content)
        cert = ip.certificate
        assert cert is not None
        seeds = [
            ir,
            reg.protect(confirm(ip)),
            reg.protect(build_p10cr(build_csr(new_key(), reg.subject))),
            signed(build_kur(cert.subject, None, new_key(), old_cert=cert), key, cert),
            signed(build_rr(cert.issuer, cert.serial_number), key, cert),
            encode_message(build_genm([ID_IT_CA_CERTS])),
        ]
        yield client, seeds


def test_random_and_mutated_bodies_never_cause_500(client_and_seeds: tuple[TestClient, list[bytes]]) -> None:
    client, seeds = client_and_seeds
    statuses: Counter[int] = Counter()

    @fuzz_settings(EXAMPLES)
    @given(data=st.data())
    def one(data: st.DataObject) -> None:
        body = mutate(data.draw(st.sampled_from(seeds)), data, max_body=MAX_BODY)
        ctype = data.draw(st.sampled_from([CMP_TYPE, CMP_TYPE, CMP_TYPE, "application/octet-stream", ""]))
        r = client.post("/pkix/", content=body, headers={"content-type": ctype} if ctype else {})
        statuses[r.status_code] += 1
        assert r.status_code in ALLOWED, (r.status_code, r.content[:200])
        # Every answer, even to garbage, is a CMP message a client can decode.
        assert response_of(r.content).body_type in ("error", "ip", "cp", "kup", "rp", "pkiconf", "genp")

    one()
    print(f"\nCMP server fuzz: {sum(statuses.values())} examples, statuses {dict(sorted(statuses.items()))}")
    assert sum(statuses.values()) >= EXAMPLES
