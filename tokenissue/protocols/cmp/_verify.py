"""Verification: the checks that a received CMP message is genuine and proves what it claims.

:func:`verify_protection` checks a message's MAC or signature (and that the signer chains to a
trust anchor, :func:`check_signer_trusted`); :func:`verify_pop` the proof of possession of a
certificate request; :func:`verify_cert_hash` that a certConf confirms the certificate issued.
Each raises :class:`CMPError` with the PKIFailureInfo the peer should get. Building protection
is :mod:`._protection`'s, parsing :mod:`._parse`'s.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC
from pyasn1_alt_modules import rfc4210, rfc8018

from ._crypto import HASHES, HMACS, cert_hash, verify_signature
from ._der import (
    DECODE_ERRORS,
    bit_octets,
    cert_from_asn1,
    decode_strict,
    general_name_to_name,
    is_present,
    octets,
    oid_str,
    subject_key_id,
    to_der,
)
from ._errors import CMPError, SharedSecret, secret_bytes
from ._protection import (
    MAX_ITERATIONS,
    PBKDF2_OID,
    PBM_OID,
    PBMAC1_OID,
    check_iterations,
    hmac_digest,
    pbm_key,
    protected_part_der,
)

if TYPE_CHECKING:
    from ._parse import CertConfirmation, CMPRequest

__all__ = ["check_signer_trusted", "verify_cert_hash", "verify_pop", "verify_protection"]

_MAX_SALT: Final = 128


def verify_protection(
    msg: Any,
    *,
    secret: SharedSecret | bytes | None = None,
    trusted_signers: Sequence[x509.Certificate] | None = None,
    extra_certs: Sequence[x509.Certificate] = (),
    at: datetime | None = None,
    max_iterations: int = MAX_ITERATIONS,
) -> x509.Certificate | None:
    """Raise :class:`CMPError` unless ``msg``'s protection verifies; return the signer, if any.

    MAC protection (PasswordBasedMac, PBMAC1) needs ``secret``: the caller looks it up by the
    header's senderKID (the reference). Signature protection needs ``trusted_signers``: the
    protection certificate (first in extraCerts, else found in ``extra_certs`` by senderKID or
    sender) must be one of them or chain to one through the other certificates; the
    certificate is returned so the caller can apply its own policy (for kur: it must be the
    certificate being updated). Failures are ``badMessageCheck`` (wrong MAC or signature,
    header inconsistent with the certificate), ``badAlg`` and ``signerNotTrusted``.
    """
    header = msg["header"]
    if not is_present(msg["protection"]) or not is_present(header["protectionAlg"]):
        raise CMPError("badMessageCheck", "The CMP message is not protected.")
    alg = header["protectionAlg"]
    oid = oid_str(alg["algorithm"])
    try:
        if oid in (PBM_OID, PBMAC1_OID):
            if secret is None:
                raise CMPError(
                    "badMessageCheck",
                    "The CMP message is MAC-protected, but no shared secret is configured for its sender.",
                )
            verify = _verify_pbm if oid == PBM_OID else _verify_pbmac1
            verify(msg, alg["parameters"], secret_bytes(secret), max_iterations)
            return None
        signer, others = _signer(msg, extra_certs)
        signature = bit_octets(msg["protection"], "protection", "badMessageCheck")
        verify_signature(
            signer.public_key(),
            alg,
            signature,
            protected_part_der(msg),
            failure="badMessageCheck",
            what="CMP message signature",
        )
        if trusted_signers is None:
            raise CMPError(
                "signerNotTrusted", "The CMP message is signed, but no trusted signer certificates are configured."
            )
        check_signer_trusted(signer, others, trusted_signers, at=at)
        return signer
    except CMPError:
        raise
    except DECODE_ERRORS as e:
        raise CMPError("badMessageCheck", "The CMP message's protection cannot be checked.") from e


def _verify_pbm(msg: Any, params: Any, secret: bytes, max_iterations: int) -> None:
    if not is_present(params):
        raise CMPError("badAlg", "PasswordBasedMac protection without parameters.")
    p = decode_strict(bytes(params), rfc4210.PBMParameter(), "PasswordBasedMac parameters", "badAlg")
    owf = HASHES.get(oid_str(p["owf"]["algorithm"]))
    mac = HMACS.get(oid_str(p["mac"]["algorithm"]))
    if owf is None or owf is hashes.SHA1:
        raise CMPError("badAlg", "The PasswordBasedMac one-way function must be SHA-224, SHA-256, SHA-384 or SHA-512.")
    if mac is None:
        raise CMPError("badAlg", "The PasswordBasedMac MAC algorithm is not an HMAC this server supports.")
    check_iterations(int(p["iterationCount"]), max_iterations)
    key = pbm_key(secret, octets(p["salt"]), owf, int(p["iterationCount"]))
    _compare(hmac_digest(key, mac, protected_part_der(msg)), msg)


def _verify_pbmac1(msg: Any, params: Any, secret: bytes, max_iterations: int) -> None:
    if not is_present(params):
        raise CMPError("badAlg", "PBMAC1 protection without parameters.")
    p = decode_strict(bytes(params), rfc8018.PBMAC1_params(), "PBMAC1 parameters", "badAlg")
    if oid_str(p["keyDerivationFunc"]["algorithm"]) != PBKDF2_OID or not is_present(
        p["keyDerivationFunc"]["parameters"]
    ):
        raise CMPError("badAlg", "PBMAC1 must derive its key with PBKDF2.")
    kdf = decode_strict(
        bytes(p["keyDerivationFunc"]["parameters"]), rfc8018.PBKDF2_params(), "PBKDF2 parameters", "badAlg"
    )
    if kdf["salt"].getName() != "specified":
        raise CMPError("badAlg", "The PBKDF2 salt must be given in the parameters.")
    salt = octets(kdf["salt"]["specified"])
    prf = HMACS.get(oid_str(kdf["prf"]["algorithm"]))
    mac = HMACS.get(oid_str(p["messageAuthScheme"]["algorithm"]))
    if prf is None or mac is None:
        raise CMPError("badAlg", "PBMAC1 must use HMAC with SHA-1 or SHA-2 for PBKDF2 and the MAC.")
    iterations = int(kdf["iterationCount"])
    check_iterations(iterations, max_iterations)
    length = int(kdf["keyLength"]) if is_present(kdf["keyLength"]) else mac().digest_size
    if not 16 <= length <= 64 or len(salt) > _MAX_SALT:
        raise CMPError("badAlg", "The PBKDF2 key length or salt length is out of range.")
    key = PBKDF2HMAC(algorithm=prf(), length=length, salt=salt, iterations=iterations).derive(secret)
    _compare(hmac_digest(key, mac, protected_part_der(msg)), msg)


def _compare(expected: bytes, msg: Any) -> None:
    got = bit_octets(msg["protection"], "protection", "badMessageCheck")
    if not hmac.compare_digest(expected, got):
        raise CMPError(
            "badMessageCheck", "The CMP message's MAC does not verify: wrong shared secret or altered message."
        )


def _signer(msg: Any, known: Sequence[x509.Certificate]) -> tuple[x509.Certificate, list[x509.Certificate]]:
    """The protection certificate and the other certificates the message or caller supplied."""
    header = msg["header"]
    sent = [cert_from_asn1(c) for c in msg["extraCerts"]] if is_present(msg["extraCerts"]) else []
    kid = octets(header["senderKID"]) if is_present(header["senderKID"]) else None
    sender = general_name_to_name(header["sender"])
    if sent:
        # RFC 9483 §3.3: the protection certificate comes first in extraCerts.
        signer = sent[0]
    else:
        candidates = [
            c for c in known if (kid is not None and subject_key_id(c) == kid) or (sender is not None and c.subject == sender)
        ]
        if not candidates:
            raise CMPError("signerNotTrusted", "The signed CMP message carries no protection certificate (extraCerts).")
        signer = candidates[0]
    ski = subject_key_id(signer)
    if kid is not None and ski is not None and kid != ski:
        raise CMPError("badMessageCheck", "The senderKID does not match the protection certificate's key identifier.")
    if sender is not None and sender != signer.subject:
        raise CMPError("badMessageCheck", "The header's sender is not the subject of the protection certificate.")
    return signer, [*sent[1:], *known]


def _verify_crmf_pop(cert_req_msg: Any, public_key: Any) -> None:
    popo = cert_req_msg["popo"]
    if not is_present(popo):
        raise CMPError("badPOP", "The certificate request has no proof of possession.")
    if popo.getName() != "signature":
        raise CMPError("badPOP", f"Proof of possession by {popo.getName()} is not supported; sign the request.")
    signing_key = popo["signature"]
    if is_present(signing_key["poposkInput"]):
        # RFC 9483 §4.1.1: poposkInput MUST be omitted; the subject and key are in the template.
        raise CMPError("badPOP", "POPOSigningKey with poposkInput is not supported (RFC 9483 §4.1.1).")
    if public_key is None:
        raise CMPError("badCertTemplate", "The certificate template has no public key.")
    signature = bit_octets(signing_key["signature"], "proof-of-possession signature", "badPOP")
    # RFC 4211 §4.1: without poposkInput the signature is over the DER of certReq.
    verify_signature(
        public_key,
        signing_key["algorithmIdentifier"],
        signature,
        to_der(cert_req_msg["certReq"]),
        failure="badPOP",
        what="proof-of-possession signature",
    )


def verify_pop(request: CMPRequest) -> None:
    """Raise ``CMPError("badPOP")`` unless the request proves possession of the private key.

    ir/cr/kur: a POPOSigningKey signature over the DER of certReq (RFC 4211 §4.1), made with
    the key in the template. p10cr: the CSR's self-signature. raVerified is not accepted here:
    whether an RA may vouch is the server's policy, visible in ``request.pop_kind``.
    """
    if request.body_type in ("ir", "cr", "kur"):
        _verify_crmf_pop(request.message["body"][request.body_type][0], request.public_key)
    elif request.body_type == "p10cr" and request.csr is not None:
        try:
            valid = request.csr.is_signature_valid
        except (UnsupportedAlgorithm, ValueError) as e:  # An unsupported algorithm is no proof.
            raise CMPError("badPOP", "The PKCS#10 request's signature algorithm is not supported.") from e
        if not valid:
            raise CMPError("badPOP", "The PKCS#10 request's signature does not verify.")
    else:
        raise CMPError("badRequest", f"A {request.body_type} message carries no proof of possession.")


def verify_cert_hash(confirmation: CertConfirmation, cert: x509.Certificate) -> None:
    """Raise ``CMPError("badCertId")`` unless the certConf entry confirms exactly ``cert``."""
    if not hmac.compare_digest(confirmation.cert_hash, cert_hash(cert, confirmation.hash_alg)):
        raise CMPError("badCertId", "The certConf certHash does not match the issued certificate.")


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except (x509.ExtensionNotFound, ValueError, x509.DuplicateExtension):
        return False
    return bc.ca


def _in_validity(cert: x509.Certificate, at: datetime) -> bool:
    return cert.not_valid_before_utc <= at <= cert.not_valid_after_utc


def check_signer_trusted(
    signer: x509.Certificate,
    untrusted: Sequence[x509.Certificate],
    anchors: Sequence[x509.Certificate],
    *,
    at: datetime | None = None,
    max_depth: int = 8,
) -> None:
    """Raise ``signerNotTrusted`` unless ``signer`` is an anchor or chains to one.

    The chain may use ``untrusted`` certificates (extraCerts) as intermediates. Each link's
    signature, validity at ``at`` and CA flag are checked. This is our own small path builder
    because cryptography's verifier applies the Web PKI policy, which forbids Ed25519 keys
    that tokens and Lightweight CMP (RFC 9481 §3.3) use. It does not evaluate name
    constraints, policies or revocation; pin the exact RA or CA certificates as anchors when
    those matter.
    """
    when = datetime.now(UTC) if at is None else at
    anchor_der = {_der(a) for a in anchors}
    if not _in_validity(signer, when):
        raise CMPError("signerNotTrusted", "The CMP protection certificate is expired or not yet valid.")
    current = signer
    used = {_der(signer)}
    for _ in range(max_depth):
        if _der(current) in anchor_der:
            return
        trusted_issuer = next((a for a in anchors if a.subject == current.issuer and _issued_by(current, a)), None)
        if trusted_issuer is not None and _is_ca(trusted_issuer) and _in_validity(trusted_issuer, when):
            return
        issuer = next(
            (
                c
                for c in untrusted
                if _der(c) not in used and c.subject == current.issuer and _is_ca(c) and _issued_by(current, c)
            ),
            None,
        )
        if issuer is None or not _in_validity(issuer, when):
            break
        used.add(_der(issuer))
        current = issuer
    raise CMPError(
        "signerNotTrusted",
        f"The CMP protection certificate '{signer.subject.rfc4514_string()}' does not chain to a trusted certificate.",
    )
