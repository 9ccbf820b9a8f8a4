"""Signature, hash and MAC algorithms by OID, and certConf's certificate hash.

Signing takes any cryptography private key and only calls ``sign()`` and ``public_key()`` on
it, so a token adapter works. The algorithm for a key follows RFC 9481 §3 and what tokens
offer everywhere: RSA PKCS#1 v1.5 with SHA-256 (CKM_RSA_PKCS is on every RSA token; PSS is
not), ECDSA with the hash that matches the curve, pure EdDSA.
"""

from __future__ import annotations

from typing import Any, Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from pyasn1.codec.der import decoder
from pyasn1_alt_modules import rfc4055

from ._der import DECODE_ERRORS, is_present, oid_str
from ._errors import CMPError, FailureInfo

__all__ = [
    "HASHES",
    "HMACS",
    "cert_hash",
    "cert_hash_algorithm",
    "sign",
    "signature_algorithm",
    "verify_signature",
]

#: Hash OIDs (RFC 5754, RFC 8017) accepted as PBM one-way functions and certConf hashAlg.
HASHES: Final[dict[str, type[hashes.HashAlgorithm]]] = {
    "1.3.14.3.2.26": hashes.SHA1,
    "2.16.840.1.101.3.4.2.4": hashes.SHA224,
    "2.16.840.1.101.3.4.2.1": hashes.SHA256,
    "2.16.840.1.101.3.4.2.2": hashes.SHA384,
    "2.16.840.1.101.3.4.2.3": hashes.SHA512,
}
HASH_OIDS: Final[dict[str, str]] = {cls().name: oid for oid, cls in HASHES.items()}

#: HMAC OIDs: hmac-sha1 from RFC 2104/IPsec (what OpenSSL writes into PBM parameters) and the
#: hmacWithSHA* family of RFC 8018 (RFC 9481 §6.1). HMAC-SHA1 is still a sound MAC; it stays
#: accepted because OpenSSL 3.0's CMP client uses it by default.
HMACS: Final[dict[str, type[hashes.HashAlgorithm]]] = {
    "1.3.6.1.5.5.8.1.2": hashes.SHA1,
    "1.2.840.113549.2.7": hashes.SHA1,
    "1.2.840.113549.2.8": hashes.SHA224,
    "1.2.840.113549.2.9": hashes.SHA256,
    "1.2.840.113549.2.10": hashes.SHA384,
    "1.2.840.113549.2.11": hashes.SHA512,
}
HMAC_OIDS: Final[dict[str, str]] = {
    "sha256": "1.2.840.113549.2.9",
    "sha384": "1.2.840.113549.2.10",
    "sha512": "1.2.840.113549.2.11",
}

_ECDSA: Final[dict[str, type[hashes.HashAlgorithm]]] = {
    "1.2.840.10045.4.3.2": hashes.SHA256,
    "1.2.840.10045.4.3.3": hashes.SHA384,
    "1.2.840.10045.4.3.4": hashes.SHA512,
}
_RSA_PKCS1: Final[dict[str, type[hashes.HashAlgorithm]]] = {
    "1.2.840.113549.1.1.11": hashes.SHA256,
    "1.2.840.113549.1.1.12": hashes.SHA384,
    "1.2.840.113549.1.1.13": hashes.SHA512,
}
_RSA_PSS: Final = "1.2.840.113549.1.1.10"
_MGF1: Final = "1.2.840.113549.1.1.8"
_ED25519: Final = "1.3.101.112"
_ED448: Final = "1.3.101.113"
_DER_NULL: Final = b"\x05\x00"


def signature_algorithm(public_key: Any) -> tuple[str, bytes | None]:
    """The (OID, DER parameters or None) a key of this type signs CMP messages and POPs with."""
    if isinstance(public_key, rsa.RSAPublicKey):
        return "1.2.840.113549.1.1.11", _DER_NULL  # RFC 4055 §5: parameters are NULL.
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        size = public_key.curve.key_size
        oid = "1.2.840.10045.4.3.2" if size <= 256 else "1.2.840.10045.4.3.3" if size <= 384 else "1.2.840.10045.4.3.4"
        return oid, None
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return _ED25519, None
    if isinstance(public_key, ed448.Ed448PublicKey):
        return _ED448, None
    raise TypeError(f"keys of type {type(public_key).__name__} cannot sign CMP messages")


def sign(private_key: Any, data: bytes) -> tuple[str, bytes | None, bytes]:
    """Sign ``data``; return the algorithm OID, its DER parameters and the signature."""
    oid, params = signature_algorithm(private_key.public_key())
    if oid in _RSA_PKCS1:
        signature = private_key.sign(data, padding.PKCS1v15(), _RSA_PKCS1[oid]())
    elif oid in _ECDSA:
        signature = private_key.sign(data, ec.ECDSA(_ECDSA[oid]()))
    else:
        signature = private_key.sign(data)
    return oid, params, bytes(signature)


def _pss_padding(params: Any) -> tuple[padding.PSS, hashes.HashAlgorithm]:
    """RSASSA-PSS parameters (RFC 4055 §3.1); the SHA-1 defaults are refused as too weak."""
    if not is_present(params):
        raise CMPError("badAlg", "RSASSA-PSS without parameters means SHA-1, which is not accepted.")
    try:
        value, rest = decoder.decode(bytes(params), asn1Spec=rfc4055.RSASSA_PSS_params())
    except DECODE_ERRORS as e:
        raise CMPError("badAlg", "The RSASSA-PSS parameters cannot be parsed.") from e
    if rest:
        raise CMPError("badAlg", "The RSASSA-PSS parameters are followed by unexpected bytes.")
    hash_cls = HASHES.get(oid_str(value["hashAlgorithm"]["algorithm"]))
    if hash_cls is None or hash_cls is hashes.SHA1 or not is_present(value["hashAlgorithm"]):
        raise CMPError("badAlg", "RSASSA-PSS must use SHA-224, SHA-256, SHA-384 or SHA-512.")
    mgf = value["maskGenAlgorithm"]
    if not is_present(mgf) or oid_str(mgf["algorithm"]) != _MGF1:
        raise CMPError("badAlg", "RSASSA-PSS must use MGF1 with the message hash.")
    try:
        mgf_hash, _ = decoder.decode(bytes(mgf["parameters"]), asn1Spec=rfc4055.AlgorithmIdentifier())
    except DECODE_ERRORS as e:
        raise CMPError("badAlg", "The MGF1 parameters cannot be parsed.") from e
    if HASHES.get(oid_str(mgf_hash["algorithm"])) is not hash_cls:
        raise CMPError("badAlg", "RSASSA-PSS must use MGF1 with the message hash.")
    if int(value["trailerField"]) != 1:
        raise CMPError("badAlg", "RSASSA-PSS trailerField must be 1.")
    salt = int(value["saltLength"])
    if not 0 <= salt <= 1024:
        raise CMPError("badAlg", "The RSASSA-PSS salt length is out of range.")
    return padding.PSS(mgf=padding.MGF1(hash_cls()), salt_length=salt), hash_cls()


def verify_signature(
    public_key: Any, algorithm: Any, signature: bytes, data: bytes, *, failure: FailureInfo, what: str
) -> None:
    """Raise :class:`CMPError` unless ``signature`` over ``data`` verifies.

    ``algorithm`` is a pyasn1 AlgorithmIdentifier. An unknown algorithm, or one that does not
    fit the key, is ``badAlg``; a wrong signature is ``failure`` (badPOP, badMessageCheck).
    """
    oid = oid_str(algorithm["algorithm"])
    try:
        if oid in _ECDSA and isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(signature, data, ec.ECDSA(_ECDSA[oid]()))
        elif oid in _RSA_PKCS1 and isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(signature, data, padding.PKCS1v15(), _RSA_PKCS1[oid]())
        elif oid == _RSA_PSS and isinstance(public_key, rsa.RSAPublicKey):
            pss, hash_alg = _pss_padding(algorithm["parameters"])
            public_key.verify(signature, data, pss, hash_alg)
        elif (oid == _ED25519 and isinstance(public_key, ed25519.Ed25519PublicKey)) or (
            oid == _ED448 and isinstance(public_key, ed448.Ed448PublicKey)
        ):
            public_key.verify(signature, data)
        else:
            raise CMPError(
                "badAlg", f"The {what} uses signature algorithm {oid}, which is unsupported or does not fit the key."
            )
    except (InvalidSignature, ValueError, UnsupportedAlgorithm) as e:
        raise CMPError(failure, f"The {what} does not verify.") from e


def cert_hash_algorithm(cert: x509.Certificate) -> hashes.HashAlgorithm:
    """The hash a certConf uses for ``cert`` when hashAlg is absent (RFC 9480 §2.10, RFC 9481 §2).

    It is the hash of the certificate's own signature; EdDSA has none inside, so RFC 9481 §2
    names SHA-512 for Ed25519 and SHAKE256 (512 bits) for Ed448.
    """
    oid = cert.signature_algorithm_oid.dotted_string
    if oid == _ED25519:
        return hashes.SHA512()
    if oid == _ED448:
        return hashes.SHAKE256(64)
    try:
        alg = cert.signature_hash_algorithm
    except UnsupportedAlgorithm as e:
        raise CMPError("badAlg", "The certificate's signature algorithm has no known hash for certConf.") from e
    if alg is None:
        raise CMPError("badAlg", "The certificate's signature algorithm has no known hash for certConf.")
    return alg


def cert_hash(cert: x509.Certificate, hash_alg: str | None = None) -> bytes:
    """certHash for a certConf: the certificate's DER hashed with ``hash_alg`` (an OID) or, by
    default, with the hash of its own signature algorithm (RFC 9480 §2.10)."""
    if hash_alg is None:
        algorithm = cert_hash_algorithm(cert)
    else:
        cls = HASHES.get(hash_alg)
        if cls is None or cls is hashes.SHA1:
            raise CMPError("badAlg", f"certConf hash algorithm {hash_alg} is not supported.")
        algorithm = cls()
    return cert.fingerprint(algorithm)
