"""Proof that a certificate belongs to a key: a fresh test signature that must verify."""

from __future__ import annotations

import os
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from ..errors import RequestRejected

__all__ = ["prove_possession"]


def prove_possession(private_key: Any, cert: x509.Certificate) -> None:
    """Sign 32 random bytes with ``private_key`` and verify with the certificate's public key.

    Comparing public keys alone would trust the token's public-key object; a signature proves
    that the private key on the token is the one certified. Raises RequestRejected otherwise.
    """
    pub = cert.public_key()
    challenge = os.urandom(32)
    try:
        if isinstance(pub, rsa.RSAPublicKey):
            sig = private_key.sign(challenge, padding.PKCS1v15(), hashes.SHA256())
            pub.verify(sig, challenge, padding.PKCS1v15(), hashes.SHA256())
        elif isinstance(pub, ec.EllipticCurvePublicKey):
            sig = private_key.sign(challenge, ec.ECDSA(hashes.SHA256()))
            pub.verify(sig, challenge, ec.ECDSA(hashes.SHA256()))
        elif isinstance(pub, ed25519.Ed25519PublicKey):
            pub.verify(private_key.sign(challenge), challenge)
        else:
            raise RequestRejected("The certificate's key type is not supported.")
    except (InvalidSignature, TypeError, ValueError):
        raise RequestRejected(
            "The certificate does not belong to the key on the token (test signature failed)."
        ) from None
