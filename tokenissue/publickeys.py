"""Public keys compared and encoded one way everywhere: as DER SubjectPublicKeyInfo.

Two keys are the same key when their SubjectPublicKeyInfo DER is the same. A certificate holds
those bytes verbatim, which lets the inventory search certificates for a key without a column
for it. Token keys (the custom private-key classes in p11) give their public half as a
cryptography public key, so the same functions serve them.
"""

from __future__ import annotations

from typing import Any

__all__ = ["certificate_spki", "same_public_key", "spki_der"]


def spki_der(public_key: Any) -> bytes:
    """The DER SubjectPublicKeyInfo of a cryptography public key."""
    from cryptography.hazmat.primitives import serialization

    der: bytes = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return der


def same_public_key(a: Any, b: Any) -> bool:
    """Whether two public keys (of any type) are the same key."""
    return spki_der(a) == spki_der(b)


def certificate_spki(der: bytes) -> bytes | None:
    """The DER SubjectPublicKeyInfo of a DER certificate; None if either does not parse."""
    from cryptography import x509
    from cryptography.exceptions import UnsupportedAlgorithm

    try:
        return spki_der(x509.load_der_x509_certificate(der).public_key())
    except (ValueError, UnsupportedAlgorithm):
        return None
