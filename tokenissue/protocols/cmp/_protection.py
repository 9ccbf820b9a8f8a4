"""Message protection (RFC 4210 §5.1.3, RFC 9481 §6): password-based MACs and signatures.

The protection covers the DER of ProtectedPart ``{header, body}``. Three schemes:

* PasswordBasedMac (RFC 4210 §5.1.3.1, what OpenSSL 3.0 uses with ``-secret``): the key is the
  one-way function applied ``iterationCount`` times to ``secret || salt``, then HMAC.
* PBMAC1 (RFC 8018, RFC 9481 §6.1.2): PBKDF2 then HMAC.
* Signatures with the key of a protection certificate sent first in extraCerts (RFC 9483 §3.3).

The MAC schemes let the *sender* choose the iteration count, which is CPU we spend before we
know the sender is genuine: counts are bounded on both sides (:data:`MIN_ITERATIONS`,
:data:`MAX_ITERATIONS`, the same ceiling as OpenSSL's OSSL_CRMF_PBM_MAX_ITERATION_COUNT).
Checking a received message's protection is :mod:`._verify`'s; the key derivations and the
bounds are shared from here.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Sequence
from typing import Any, Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC
from pyasn1.codec.der import decoder, encoder
from pyasn1.type import univ
from pyasn1_alt_modules import rfc4210, rfc8018, rfc9480

from ._crypto import HASH_OIDS, HASHES, HMAC_OIDS, HMACS, sign, signature_algorithm
from ._der import (
    cert_to_asn1,
    decode_as,
    decode_strict,
    is_present,
    name_to_general_name,
    oid_str,
    same_public_key,
    set_bits,
    subject_key_id,
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
]

PBM_OID: Final = "1.2.840.113533.7.66.13"
PBMAC1_OID: Final = "1.2.840.113549.1.5.14"
PBKDF2_OID: Final = "1.2.840.113549.1.5.12"

#: Fewer iterations make a dictionary attack on a captured message cheap.
MIN_ITERATIONS: Final = 100
#: More iterations let an unauthenticated sender make us hash for long (100,000 SHA-256
#: rounds take about 40 ms here).
MAX_ITERATIONS: Final = 100_000

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


def check_iterations(count: int, max_iterations: int) -> None:
    if not MIN_ITERATIONS <= count <= max_iterations:
        raise CMPError(
            "badAlg",
            f"The MAC iteration count {count} is outside the accepted range {MIN_ITERATIONS}..{max_iterations}.",
        )


def pbm_key(secret: bytes, salt: bytes, owf: type[hashes.HashAlgorithm], iterations: int) -> bytes:
    """RFC 4210 §5.1.3.1: BASEKEY = OWF^iterationCount(secret || salt)."""
    key = secret + salt
    name = owf().name
    for _ in range(iterations):
        key = hashlib.new(name, key).digest()
    return key


def hmac_digest(key: bytes, hash_cls: type[hashes.HashAlgorithm], data: bytes) -> bytes:
    return hmac.new(key, data, hash_cls().name).digest()


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
    check_iterations(iterations, MAX_ITERATIONS)
    salt = os.urandom(16) if salt is None else salt
    params = rfc4210.PBMParameter()
    params["salt"] = salt
    params["owf"]["algorithm"] = univ.ObjectIdentifier(HASH_OIDS[owf.name])
    params["iterationCount"] = iterations
    params["mac"]["algorithm"] = univ.ObjectIdentifier(HMAC_OIDS[mac.name])
    out = _copy(msg)
    _set_protection_alg(out["header"], PBM_OID, encoder.encode(params))
    _set_sender_kid(out["header"], sender_kid)
    key = pbm_key(secret_bytes(secret), salt, HASHES[HASH_OIDS[owf.name]], iterations)
    set_bits(out, "protection", hmac_digest(key, HMACS[HMAC_OIDS[mac.name]], protected_part_der(out)))
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
    check_iterations(iterations, MAX_ITERATIONS)
    salt = os.urandom(16) if salt is None else salt
    hmac_oid = HMAC_OIDS[hash_alg.name]
    kdf = rfc8018.PBKDF2_params()
    kdf["salt"]["specified"] = salt
    kdf["iterationCount"] = iterations
    kdf["keyLength"] = hash_alg.digest_size
    kdf["prf"]["algorithm"] = univ.ObjectIdentifier(hmac_oid)
    params = tlv(0x30, _alg_id_der(PBKDF2_OID, encoder.encode(kdf)) + _alg_id_der(hmac_oid, None))
    out = _copy(msg)
    _set_protection_alg(out["header"], PBMAC1_OID, params)
    _set_sender_kid(out["header"], sender_kid)
    key = PBKDF2HMAC(algorithm=type(hash_alg)(), length=hash_alg.digest_size, salt=salt, iterations=iterations).derive(
        secret_bytes(secret)
    )
    set_bits(out, "protection", hmac_digest(key, HMACS[hmac_oid], protected_part_der(out)))
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
    _set_sender_kid(header, subject_key_id(cert))
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
