"""Message protection (RFC 4210 §5.1.3, RFC 9481 §6): password-based MACs and signatures.

The protection covers the DER of ProtectedPart ``{header, body}``. Three schemes:

* PasswordBasedMac (RFC 4210 §5.1.3.1, what OpenSSL 3.0 uses with ``-secret``): the key is the
  one-way function applied ``iterationCount`` times to ``secret || salt``, then HMAC.
* PBMAC1 (RFC 8018, RFC 9481 §6.1.2): PBKDF2 then HMAC.
* Signatures with the key of a protection certificate sent first in extraCerts (RFC 9483 §3.3).

The MAC schemes let the *sender* choose the iteration count, which is CPU we spend before we
know the sender is genuine: counts are bounded on both sides (:data:`MIN_ITERATIONS`,
:data:`MAX_ITERATIONS`, the same ceiling as OpenSSL's OSSL_CRMF_PBM_MAX_ITERATION_COUNT).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC
from pyasn1.codec.der import decoder, encoder
from pyasn1.type import univ
from pyasn1_alt_modules import rfc4210, rfc8018, rfc9480

from ._crypto import (
    HASH_OIDS,
    HASHES,
    HMAC_OIDS,
    HMACS,
    check_signer_trusted,
    sign,
    signature_algorithm,
    verify_signature,
)
from ._der import (
    DECODE_ERRORS,
    bit_octets,
    cert_from_asn1,
    cert_to_asn1,
    decode_as,
    decode_strict,
    general_name_to_name,
    is_present,
    name_to_general_name,
    octets,
    oid_str,
    same_public_key,
    set_bits,
    tlv,
)
from ._errors import CMPError, SharedSecret, secret_bytes

__all__ = [
    "MAX_ITERATIONS",
    "MIN_ITERATIONS",
    "PBMAC1_OID",
    "PBM_OID",
    "mac_iterations",
    "protect_pbm",
    "protect_pbmac1",
    "protect_signature",
    "protected_part_der",
    "verify_protection",
]

PBM_OID: Final = "1.2.840.113533.7.66.13"
PBMAC1_OID: Final = "1.2.840.113549.1.5.14"
_PBKDF2_OID: Final = "1.2.840.113549.1.5.12"

#: Fewer iterations make a dictionary attack on a captured message cheap.
MIN_ITERATIONS: Final = 100
#: More iterations let an unauthenticated sender make us hash for long (100,000 SHA-256
#: rounds take about 40 ms here).
MAX_ITERATIONS: Final = 100_000
_MAX_SALT: Final = 128

SecretLike = SharedSecret | bytes


def protected_part_der(msg: Any) -> bytes:
    """DER of ProtectedPart ``{header, body}``: the bytes every protection covers."""
    part = rfc9480.ProtectedPart()
    part["header"] = msg["header"]
    part["body"] = msg["body"]
    der: bytes = encoder.encode(part)
    return der


def _copy(msg: Any) -> Any:
    """A message to protect, without changing the caller's (pyasn1 values are mutable).

    Protection changes only the header (protectionAlg, senderKID, sender) and sets protection
    and extraCerts, so only the header is copied; the body, with any certificate in it, is
    shared rather than encoded and decoded again (that was most of an answer's cost).
    """
    out = rfc9480.PKIMessage()
    header, _ = decoder.decode(encoder.encode(msg["header"]), asn1Spec=rfc9480.PKIHeader())
    out["header"] = header
    out["body"] = msg["body"]
    if msg["extraCerts"].isValue:
        out["extraCerts"] = msg["extraCerts"]
    return out


def _alg_id_der(oid: str, params_der: bytes | None) -> bytes:
    return tlv(0x30, encoder.encode(univ.ObjectIdentifier(oid)) + (params_der or b""))


def _set_protection_alg(header: Any, oid: str, params_der: bytes | None) -> None:
    spec = header.componentType["protectionAlg"].asn1Object
    header["protectionAlg"] = decode_as(spec, _alg_id_der(oid, params_der))


def _set_sender_kid(header: Any, kid: bytes | None) -> None:
    if kid is None:
        del header["senderKID"]
    else:
        header["senderKID"] = header.componentType["senderKID"].asn1Object.clone(kid)


def _check_iterations(count: int, max_iterations: int) -> None:
    if not MIN_ITERATIONS <= count <= max_iterations:
        raise CMPError(
            "badAlg",
            f"The MAC iteration count {count} is outside the accepted range {MIN_ITERATIONS}..{max_iterations}.",
        )


def _pbm_key(secret: bytes, salt: bytes, owf: type[hashes.HashAlgorithm], iterations: int) -> bytes:
    """RFC 4210 §5.1.3.1: BASEKEY = OWF^iterationCount(secret || salt)."""
    key = secret + salt
    name = owf().name
    for _ in range(iterations):
        key = hashlib.new(name, key).digest()
    return key


def _mac(key: bytes, hash_cls: type[hashes.HashAlgorithm], data: bytes) -> bytes:
    return hmac.new(key, data, hash_cls().name).digest()


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
    _check_iterations(int(p["iterationCount"]), max_iterations)
    key = _pbm_key(secret, octets(p["salt"]), owf, int(p["iterationCount"]))
    _compare(_mac(key, mac, protected_part_der(msg)), msg)


def _verify_pbmac1(msg: Any, params: Any, secret: bytes, max_iterations: int) -> None:
    if not is_present(params):
        raise CMPError("badAlg", "PBMAC1 protection without parameters.")
    p = decode_strict(bytes(params), rfc8018.PBMAC1_params(), "PBMAC1 parameters", "badAlg")
    if oid_str(p["keyDerivationFunc"]["algorithm"]) != _PBKDF2_OID or not is_present(
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
    _check_iterations(iterations, max_iterations)
    length = int(kdf["keyLength"]) if is_present(kdf["keyLength"]) else mac().digest_size
    if not 16 <= length <= 64 or len(salt) > _MAX_SALT:
        raise CMPError("badAlg", "The PBKDF2 key length or salt length is out of range.")
    key = PBKDF2HMAC(algorithm=prf(), length=length, salt=salt, iterations=iterations).derive(secret)
    _compare(_mac(key, mac, protected_part_der(msg)), msg)


def _compare(expected: bytes, msg: Any) -> None:
    got = bit_octets(msg["protection"], "protection", "badMessageCheck")
    if not hmac.compare_digest(expected, got):
        raise CMPError(
            "badMessageCheck", "The CMP message's MAC does not verify: wrong shared secret or altered message."
        )


def _ski(cert: x509.Certificate) -> bytes | None:
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except (x509.ExtensionNotFound, ValueError, x509.DuplicateExtension):
        return None


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
            c for c in known if (kid is not None and _ski(c) == kid) or (sender is not None and c.subject == sender)
        ]
        if not candidates:
            raise CMPError("signerNotTrusted", "The signed CMP message carries no protection certificate (extraCerts).")
        signer = candidates[0]
    ski = _ski(signer)
    if kid is not None and ski is not None and kid != ski:
        raise CMPError("badMessageCheck", "The senderKID does not match the protection certificate's key identifier.")
    if sender is not None and sender != signer.subject:
        raise CMPError("badMessageCheck", "The header's sender is not the subject of the protection certificate.")
    return signer, [*sent[1:], *known]


def mac_iterations(msg: Any) -> int | None:
    """The iteration count of ``msg``'s PasswordBasedMac or PBMAC1 (PBKDF2) protection; None
    when it is not MAC-protected or the parameters cannot be read. Call after it verified."""
    header = msg["header"]
    if not is_present(header["protectionAlg"]):
        return None
    alg = header["protectionAlg"]
    oid = oid_str(alg["algorithm"])
    try:
        if oid == PBM_OID:
            p = decode_strict(bytes(alg["parameters"]), rfc4210.PBMParameter(), "PasswordBasedMac parameters", "badAlg")
            return int(p["iterationCount"])
        if oid == PBMAC1_OID:
            p = decode_strict(bytes(alg["parameters"]), rfc8018.PBMAC1_params(), "PBMAC1 parameters", "badAlg")
            kdf = decode_strict(
                bytes(p["keyDerivationFunc"]["parameters"]), rfc8018.PBKDF2_params(), "PBKDF2 parameters", "badAlg"
            )
            return int(kdf["iterationCount"])
    except (CMPError, ValueError, TypeError):
        return None
    return None


def verify_protection(
    msg: Any,
    *,
    secret: SecretLike | None = None,
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


def protect_pbm(
    msg: Any,
    secret: SecretLike,
    *,
    sender_kid: bytes,
    iterations: int = 10_000,
    owf: hashes.HashAlgorithm | None = None,
    mac: hashes.HashAlgorithm | None = None,
    salt: bytes | None = None,
) -> Any:
    """A copy of ``msg`` protected with PasswordBasedMac; senderKID becomes ``sender_kid``.

    Defaults: 16 random octets of salt, SHA-256 as one-way function, HMAC-SHA256, 10,000
    iterations (OpenSSL uses 500; either side accepts up to 100,000).
    """
    owf = owf or hashes.SHA256()
    mac = mac or hashes.SHA256()
    if owf.name not in HASH_OIDS or mac.name not in HMAC_OIDS:
        raise ValueError("PBM supports SHA-224/256/384/512 as one-way function and HMAC-SHA256/384/512")
    _check_iterations(iterations, MAX_ITERATIONS)
    salt = os.urandom(16) if salt is None else salt
    params = rfc4210.PBMParameter()
    params["salt"] = salt
    params["owf"]["algorithm"] = univ.ObjectIdentifier(HASH_OIDS[owf.name])
    params["iterationCount"] = iterations
    params["mac"]["algorithm"] = univ.ObjectIdentifier(HMAC_OIDS[mac.name])
    out = _copy(msg)
    _set_protection_alg(out["header"], PBM_OID, encoder.encode(params))
    _set_sender_kid(out["header"], sender_kid)
    key = _pbm_key(secret_bytes(secret), salt, HASHES[HASH_OIDS[owf.name]], iterations)
    set_bits(out, "protection", _mac(key, HMACS[HMAC_OIDS[mac.name]], protected_part_der(out)))
    return out


def protect_pbmac1(
    msg: Any,
    secret: SecretLike,
    *,
    sender_kid: bytes,
    iterations: int = 10_000,
    hash_alg: hashes.HashAlgorithm | None = None,
    salt: bytes | None = None,
) -> Any:
    """A copy of ``msg`` protected with PBMAC1: PBKDF2-HMAC then HMAC, both with ``hash_alg``."""
    hash_alg = hash_alg or hashes.SHA256()
    if hash_alg.name not in HMAC_OIDS:
        raise ValueError("PBMAC1 supports SHA-256, SHA-384 and SHA-512")
    _check_iterations(iterations, MAX_ITERATIONS)
    salt = os.urandom(16) if salt is None else salt
    hmac_oid = HMAC_OIDS[hash_alg.name]
    kdf = rfc8018.PBKDF2_params()
    kdf["salt"]["specified"] = salt
    kdf["iterationCount"] = iterations
    kdf["keyLength"] = hash_alg.digest_size
    kdf["prf"]["algorithm"] = univ.ObjectIdentifier(hmac_oid)
    params = tlv(0x30, _alg_id_der(_PBKDF2_OID, encoder.encode(kdf)) + _alg_id_der(hmac_oid, None))
    out = _copy(msg)
    _set_protection_alg(out["header"], PBMAC1_OID, params)
    _set_sender_kid(out["header"], sender_kid)
    key = PBKDF2HMAC(algorithm=type(hash_alg)(), length=hash_alg.digest_size, salt=salt, iterations=iterations).derive(
        secret_bytes(secret)
    )
    set_bits(out, "protection", _mac(key, HMACS[hmac_oid], protected_part_der(out)))
    return out


def protect_signature(
    msg: Any, private_key: Any, cert: x509.Certificate, extra_certs: Sequence[x509.Certificate] = ()
) -> Any:
    """A copy of ``msg`` signed with ``private_key``, the key of the protection certificate ``cert``.

    As RFC 9483 §3.1 asks, sender becomes the certificate's subject, senderKID its subject key
    identifier, and extraCerts ``cert`` followed by ``extra_certs`` (its chain, for the peer
    to build a path). ``private_key`` may be a token key: only ``sign()`` and
    ``public_key()`` are called.
    """
    if not same_public_key(private_key.public_key(), cert.public_key()):
        raise ValueError(
            f"The signing key does not belong to the CMP protection certificate "
            f"'{cert.subject.rfc4514_string()}'; select the key that belongs to it."
        )
    out = _copy(msg)
    header = out["header"]
    header["sender"] = name_to_general_name(header.componentType["sender"].asn1Object, cert.subject)
    _set_sender_kid(header, _ski(cert))
    oid, params = signature_algorithm(private_key.public_key())
    _set_protection_alg(header, oid, params)
    _, _, signature = sign(private_key, protected_part_der(out))
    set_bits(out, "protection", signature)
    certs_spec = out.componentType["extraCerts"].asn1Object
    certs = certs_spec.clone()
    for c in (cert, *extra_certs):
        certs.append(cert_to_asn1(certs_spec.componentType, c))
    out["extraCerts"] = certs
    return out
