"""``GET /metrics`` of `ca serve`: what a fleet's monitoring scrapes from each replica.

The text is parsed with prometheus_client's own parser (a reader nobody here wrote), and every
counter is checked against the requests this test made: an issuance, the same message repeated
(answered with the same certificate, not counted as a second issuance), a certConf, a refused
code, a message that is not CMP, a wrong content type, a health check.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from tokenissue.credentials import Secret
from tokenissue.protocols.cmp import MessageHeader, build_ir

from support.cmp_server import CMP_TYPE, confirm, in_process_app, new_key, register, response_of
from support.lifecycle import TokenCA, make_token_ca
from support.softhsm import SoftHSM


@pytest.fixture
def ca_and_client(session_softhsm: SoftHSM) -> Iterator[tuple[TokenCA, TestClient]]:
    ca = make_token_ca(session_softhsm)
    app, _log = in_process_app(session_softhsm, ca)
    with TestClient(app) as client:
        yield ca, client


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_count_what_the_server_did(ca_and_client: tuple[TokenCA, TestClient]) -> None:
    ca, client = ca_and_client
    headers = {"content-type": CMP_TYPE}
    reg = register(ca.dir, "CN=Metrics,O=tokenissue tests")
    ir = reg.protect(build_ir(reg.subject, None, new_key(), header=MessageHeader(implicit_confirm=False)))
    first = response_of(client.post("/pkix/", content=ir, headers=headers).content)
    assert first.certificate is not None
    again = response_of(client.post("/pkix/", content=ir, headers=headers).content)  # a lost answer, asked again
    assert again.certificate == first.certificate
    assert response_of(client.post("/pkix/", content=reg.protect(confirm(again)), headers=headers).content).body_type == "pkiconf"
    stranger = register(ca.dir, "CN=Metrics Wrong Code,O=tokenissue tests")
    stranger.code = Secret("not-the-code-at-all")
    refused = response_of(client.post("/pkix/", content=stranger.protect(build_ir(stranger.subject, None, new_key())), headers=headers).content)
    assert refused.status is not None and refused.status.failure_info == ("badMessageCheck",), refused.status
    assert client.post("/pkix/", content=b"\x30\x03\x02\x01\x05", headers=headers).status_code == 400
    assert client.post("/pkix/", content=b"{}", headers={"content-type": "application/json"}).status_code == 415
    assert client.get("/health").status_code == 200
    assert client.get("/pkix/").status_code == 405  # on the CMP path, but not a CMP message

    r = client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    got = _samples(r.text)

    def value(name: str, **labels: str) -> float:
        return got.get((name, frozenset(labels.items())), 0.0)

    assert value("tokenissue_certificates_issued_total") == 1  # the repeat handed back the same one
    assert value("tokenissue_cmp_messages_total", body="ir", outcome="ok") == 2
    assert value("tokenissue_cmp_messages_total", body="certConf", outcome="ok") == 1
    assert value("tokenissue_cmp_messages_total", body="ir", outcome="badMessageCheck") == 1
    assert value("tokenissue_cmp_messages_total", body="unparsed", outcome="badDataFormat") == 2
    assert value("tokenissue_cmp_shed_total") == 0
    # A refusal is a CMP error message in a 200 (RFC 6712); what is not CMP at all is 400 or 415.
    assert value("tokenissue_http_requests_total", route="cmp", status="200") == 4
    assert value("tokenissue_http_requests_total", route="cmp", status="400") == 1
    assert value("tokenissue_http_requests_total", route="cmp", status="415") == 1
    assert value("tokenissue_http_requests_total", route="cmp", status="405") == 1
    assert value("tokenissue_http_requests_total", route="health", status="200") == 1
    cmp_answered = sum(v for (n, _), v in got.items() if n == "tokenissue_cmp_messages_total")
    assert value("tokenissue_cmp_request_seconds_count") == cmp_answered == 6
    assert value("tokenissue_cmp_request_seconds_bucket", le="+Inf") == cmp_answered
    assert value("tokenissue_cmp_request_seconds_sum") > 0
    assert value("tokenissue_cmp_in_progress") == 0
    assert value("tokenissue_ca_not_after_timestamp_seconds") == ca.certificate.not_valid_after_utc.timestamp()
    # Nothing a client sent or is becomes a label: no subject, reference or serial anywhere.
    for needle in ("Metrics", reg.ref, format(first.certificate.serial_number, "x")):
        assert needle not in r.text
