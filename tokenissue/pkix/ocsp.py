"""OCSP (RFC 6960) as a responder speaks it, within the RFC 5019 profile: one certificate per
request, a nonce echoed when asked (RFC 8954), answers signed by a delegated responder.

Nothing here knows the inventory: :func:`parse_request` turns a request into an
:class:`OCSPQuery` or refuses it, the caller decides the certificate's state, and
:func:`build_response` signs the answer with any cryptography private key (a token key
plugs in as for certificates and CRLs). :func:`signer_certificate` makes the delegated
responder's certificate (id-kp-OCSPSigning, id-pkix-ocsp-nocheck).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID

from ..models import RevocationReason
from .certs import delegated_certificate
from .csr import hash_for
from .reasons import REASON_FLAGS

__all__ = [
    "NONCE_MAX",
    "OCSPQuery",
    "OCSPRefused",
    "build_response",
    "error_response",
    "issuer_hashes",
    "parse_request",
    "signer_certificate",
]

#: RFC 8954 §2.1: a nonce is 1 to 32 octets; a responder refuses a longer one.
NONCE_MAX = 32
#: CertID hash algorithms answered (RFC 5019 §2.1.1 asks for SHA-1; clients also send SHA-256).
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    h.name: h for h in (hashes.SHA1, hashes.SHA256, hashes.SHA384, hashes.SHA512)
}


class OCSPRefused(Exception):
    """The request gets an unsuccessful OCSPResponse with ``status`` (RFC 6960 §2.3), no answer."""

    def __init__(self, status: ocsp.OCSPResponseStatus, why: str) -> None:
        super().__init__(why)
        self.status = status


def _malformed(why: str) -> OCSPRefused:
    return OCSPRefused(ocsp.OCSPResponseStatus.MALFORMED_REQUEST, why)


@dataclass(frozen=True)
class OCSPQuery:
    """The one certificate an OCSP request asks about, and its nonce."""

    serial: int
    algorithm: hashes.HashAlgorithm
    issuer_name_hash: bytes
    issuer_key_hash: bytes
    nonce: bytes | None


def parse_request(der: bytes) -> OCSPQuery:
    """The query in a DER OCSPRequest; :class:`OCSPRefused` (malformedRequest) when it is not one
    this responder answers: not DER, several certificates, an unknown hash, a bad nonce."""
    try:
        req = ocsp.load_der_ocsp_request(der)
    except NotImplementedError:
        raise _malformed("The request asks about more than one certificate; ask about one at a time.") from None
    except ValueError:
        raise _malformed("The request is not a DER OCSPRequest.") from None
    try:
        algorithm = req.hash_algorithm
    except UnsupportedAlgorithm:
        raise _malformed("The request's CertID uses a hash algorithm this responder does not know.") from None
    if algorithm.name not in _HASHES:
        raise _malformed(f"The request's CertID uses {algorithm.name}; use SHA-1, SHA-256, SHA-384 or SHA-512.")
    try:
        extensions = req.extensions
    except ValueError:
        raise _malformed("The request's extensions cannot be read.") from None
    nonce: bytes | None = None
    for ext in extensions:
        if isinstance(ext.value, x509.OCSPNonce):
            nonce = ext.value.nonce
        elif ext.critical:
            raise _malformed(f"The request has a critical extension this responder does not know ({ext.oid.dotted_string}).")
    if nonce is not None and not 1 <= len(nonce) <= NONCE_MAX:
        raise _malformed(f"The request's nonce is {len(nonce)} octets; RFC 8954 allows 1 to {NONCE_MAX}.")
    return OCSPQuery(
        serial=req.serial_number,
        algorithm=algorithm,
        issuer_name_hash=req.issuer_name_hash,
        issuer_key_hash=req.issuer_key_hash,
        nonce=nonce,
    )


def issuer_hashes(issuer: x509.Certificate, algorithm: hashes.HashAlgorithm) -> tuple[bytes, bytes]:
    """(issuerNameHash, issuerKeyHash) of CertIDs for certificates ``issuer`` signed, as
    cryptography computes them for a request: the hash of the issuer's DER name and of its
    subjectPublicKey BIT STRING's value."""
    req = ocsp.OCSPRequestBuilder().add_certificate(issuer, issuer, algorithm).build()
    return req.issuer_name_hash, req.issuer_key_hash


def error_response(status: ocsp.OCSPResponseStatus) -> bytes:
    """An unsuccessful OCSPResponse (no responseBytes, so nothing is signed)."""
    return ocsp.OCSPResponseBuilder.build_unsuccessful(status).public_bytes(serialization.Encoding.DER)


def build_response(
    query: OCSPQuery,
    status: ocsp.OCSPCertStatus,
    *,
    signer_key: Any,
    signer_cert: x509.Certificate,
    this_update: datetime,
    next_update: datetime,
    revoked_at: datetime | None = None,
    reason: RevocationReason | None = None,
) -> bytes:
    """A signed BasicOCSPResponse answering ``query`` with ``status`` (and, for REVOKED, the
    time and reason: an unspecified reason is left out, as in a CRL entry). The responder is
    named by its key hash and its certificate goes along, so a client can check the delegation."""
    revoked = status is ocsp.OCSPCertStatus.REVOKED
    if revoked and revoked_at is None:
        raise ValueError("A revoked answer needs the revocation time.")
    flag = REASON_FLAGS[reason] if revoked and reason not in (None, RevocationReason.UNSPECIFIED) else None
    builder = (
        ocsp.OCSPResponseBuilder()
        .add_response_by_hash(
            issuer_name_hash=query.issuer_name_hash,
            issuer_key_hash=query.issuer_key_hash,
            serial_number=query.serial,
            algorithm=query.algorithm,
            cert_status=status,
            this_update=_utc(this_update),
            next_update=_utc(next_update),
            revocation_time=_utc(revoked_at) if revoked and revoked_at is not None else None,
            revocation_reason=flag,
        )
        .responder_id(ocsp.OCSPResponderEncoding.HASH, signer_cert)
        .certificates([signer_cert])
    )
    if query.nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(query.nonce), critical=False)
    return builder.sign(signer_key, hash_for(signer_key.public_key())).public_bytes(serialization.Encoding.DER)


def signer_certificate(
    ca_key: Any,
    ca_cert: x509.Certificate,
    *,
    public_key: Any,
    subject: x509.Name,
    serial: int,
    not_before: datetime,
    not_after: datetime,
) -> x509.Certificate:
    """A delegated OCSP responder's certificate (RFC 6960 §4.2.2.2): digitalSignature,
    id-kp-OCSPSigning, and id-pkix-ocsp-nocheck (§4.2.2.2.1), so clients do not ask about the
    responder itself; its lifetime should therefore be short."""
    return delegated_certificate(
        ca_key, ca_cert, public_key=public_key, subject=subject, serial=serial, not_before=not_before,
        not_after=not_after, usage=("digital_signature",), eku=ExtendedKeyUsageOID.OCSP_SIGNING, ocsp_nocheck=True,
    )  # fmt: skip


def _utc(when: datetime) -> datetime:
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
