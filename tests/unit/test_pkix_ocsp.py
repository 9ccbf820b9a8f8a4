"""tokenissue.pkix.ocsp without a server or token: what a request may hold, what an answer says.

Every byte string a client can send is either a query or an OCSPRefused (hypothesis tries
mutations of a real request), so the responder has no third outcome to turn into a 500.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenissue.models import RevocationReason
from tokenissue.pkix.certs import self_signed_ca
from tokenissue.pkix.ocsp import OCSPRefused, build_response, issuer_hashes, parse_request, signer_certificate

#: RFC 5019 §2.1.1: clients name certificates by SHA-1 CertIDs (not a signature hash).
CERTID_SHA1 = hashes.SHA1()  # noqa: S303
CA_KEY = ec.generate_private_key(ec.SECP256R1())
CA = self_signed_ca(CA_KEY, x509.Name.from_rfc4514_string("CN=Unit CA,C=KR"), 30)
NOW = datetime.now(UTC)
SIGNER_KEY = ec.generate_private_key(ec.SECP256R1())
SIGNER = signer_certificate(
    CA_KEY, CA, public_key=SIGNER_KEY.public_key(), subject=x509.Name.from_rfc4514_string("CN=OCSP,C=KR"),
    serial=7, not_before=NOW, not_after=NOW + timedelta(days=1),
)  # fmt: skip


def _request(algorithm: hashes.HashAlgorithm = CERTID_SHA1, nonce: bytes | None = None) -> bytes:
    builder = ocsp.OCSPRequestBuilder().add_certificate(SIGNER, CA, algorithm)
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(serialization.Encoding.DER)


@pytest.mark.parametrize("algorithm", [CERTID_SHA1, hashes.SHA256(), hashes.SHA512()])
def test_query_matches_the_issuer_hashes_for_each_certid_hash(algorithm: hashes.HashAlgorithm) -> None:
    query = parse_request(_request(algorithm, nonce=b"12345678"))
    assert query.serial == 7 and query.nonce == b"12345678"
    assert (query.issuer_name_hash, query.issuer_key_hash) == issuer_hashes(CA, algorithm)


@pytest.mark.parametrize("nonce", [b"", b"x" * 33])
def test_a_nonce_outside_rfc_8954s_bounds_is_malformed(nonce: bytes) -> None:
    with pytest.raises(OCSPRefused) as e:
        parse_request(_request(nonce=nonce))
    assert e.value.status is ocsp.OCSPResponseStatus.MALFORMED_REQUEST


def test_revoked_answer_carries_time_and_reason_and_echoes_the_nonce() -> None:
    query = parse_request(_request(nonce=b"abc"))
    when = NOW.replace(microsecond=0) - timedelta(hours=1)
    der = build_response(
        query, ocsp.OCSPCertStatus.REVOKED, signer_key=SIGNER_KEY, signer_cert=SIGNER, this_update=NOW,
        next_update=NOW + timedelta(hours=1), revoked_at=when, reason=RevocationReason.CERTIFICATE_HOLD,
    )  # fmt: skip
    resp = ocsp.load_der_ocsp_response(der)
    assert resp.certificate_status is ocsp.OCSPCertStatus.REVOKED
    assert resp.revocation_time_utc == when and resp.revocation_reason is x509.ReasonFlags.certificate_hold
    assert resp.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == b"abc"
    assert resp.responder_key_hash == x509.SubjectKeyIdentifier.from_public_key(SIGNER_KEY.public_key()).digest
    SIGNER_KEY.public_key().verify(resp.signature, resp.tbs_response_bytes, ec.ECDSA(hashes.SHA256()))
    unspecified = build_response(
        query, ocsp.OCSPCertStatus.REVOKED, signer_key=SIGNER_KEY, signer_cert=SIGNER, this_update=NOW,
        next_update=NOW + timedelta(hours=1), revoked_at=when, reason=RevocationReason.UNSPECIFIED,
    )  # fmt: skip
    assert ocsp.load_der_ocsp_response(unspecified).revocation_reason is None  # left out, as in a CRL entry


def test_signer_certificate_is_a_delegated_responder() -> None:
    eku = SIGNER.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [x509.oid.ExtendedKeyUsageOID.OCSP_SIGNING]
    assert SIGNER.extensions.get_extension_for_class(x509.OCSPNoCheck).critical is False
    ku = SIGNER.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature and not ku.key_cert_sign
    SIGNER.verify_directly_issued_by(CA)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_any_bytes_are_a_query_or_refused(data: st.DataObject) -> None:
    der = bytearray(_request(nonce=b"nonce"))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(der) - 1))
        der[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(der)))
    try:
        parse_request(bytes(der[:cut]))
    except OCSPRefused as e:
        assert e.status is ocsp.OCSPResponseStatus.MALFORMED_REQUEST


def test_a_serial_no_certificate_can_have_is_still_a_query() -> None:
    """parse_request does not judge serials; the responder refuses one out of range with
    malformedRequest (tests/token/test_ocsp.py asks the server)."""
    builder = ocsp.OCSPRequestBuilder().add_certificate_by_hash(
        *issuer_hashes(CA, CERTID_SHA1), serial_number=43, algorithm=CERTID_SHA1
    )
    der = builder.build().public_bytes(serialization.Encoding.DER)
    assert der.count(b"\x02\x01\x2b") == 1  # cryptography builds no negative serial: -43 by hand
    assert parse_request(der.replace(b"\x02\x01\x2b", b"\x02\x01\xd5")).serial == -43
