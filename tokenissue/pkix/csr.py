"""Certificate signing requests."""

from __future__ import annotations

import re
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from ..errors import RequestRejected, UsageError

__all__ = ["build_csr", "hash_for", "load_csr", "verify_csr"]


def hash_for(public_key: Any) -> hashes.SHA256 | hashes.SHA384 | None:
    """The signature hash that goes with a key: SHA-384 for P-384, none for Ed25519, else SHA-256.

    The return type names the concrete classes because cryptography's builders accept only
    those, and mypy rejects the base ``HashAlgorithm``.
    """
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return None
    if isinstance(public_key, ec.EllipticCurvePublicKey) and public_key.key_size >= 384:
        return hashes.SHA384()
    return hashes.SHA256()


def build_csr(
    private_key: Any, subject: x509.Name, san: list[x509.GeneralName] | None = None
) -> x509.CertificateSigningRequest:
    """A CSR signed with ``private_key`` (on a token: the signature is made inside it)."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject)
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    csr = builder.sign(private_key, hash_for(private_key.public_key()))
    verify_csr(csr)
    return csr


# The PEM labels of a CSR (RFC 7468 §7, and the "NEW" one older tools still write).
_PEM_CSR_RE = re.compile(rb"-----BEGIN (?:NEW )?CERTIFICATE REQUEST-----")
# Hashes too weak to sign a request with (SHA-1: SHAttered, 2017; CA/Browser Forum BR 7.1.3
# accepts nothing below SHA-256), by the name the refusal gives.
_WEAK_HASHES = {hashes.SHA1: "SHA-1", hashes.MD5: "MD5", hashes.SHA224: "SHA-224"}


def load_csr(data: bytes) -> x509.CertificateSigningRequest:
    """Load a PEM or DER CSR; a file holding more than one request is refused, not half-read."""
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            count = len(_PEM_CSR_RE.findall(data))
            if count > 1:
                raise UsageError(
                    f"The file holds {count} certificate signing requests; give one request per file."
                )
            return x509.load_pem_x509_csr(data)
        return x509.load_der_x509_csr(data)
    except ValueError:
        raise UsageError("The file is not a PEM or DER certificate signing request.") from None


def verify_csr(csr: x509.CertificateSigningRequest) -> None:
    """Raise :class:`RequestRejected` unless the CSR's self-signature is valid and made with
    a hash that is still accepted (SHA-256 or better; none for Ed25519)."""
    try:
        algorithm = csr.signature_hash_algorithm
    except UnsupportedAlgorithm:
        algorithm = None  # An unknown algorithm cannot verify: refused just below.
    shown = _WEAK_HASHES.get(type(algorithm)) if algorithm is not None else None
    if shown is not None:
        raise RequestRejected(
            f"The CSR is signed with {shown}, which is not accepted; sign it with SHA-256 or better."
        )
    try:
        ok = csr.is_signature_valid
    except Exception:  # Unsupported algorithms count as invalid.
        ok = False
    if not ok:
        raise RequestRejected("The CSR's signature does not verify; it was altered or made with another key.")
    pub = csr.public_key()
    if not isinstance(pub, rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey):
        raise RequestRejected("The CSR's key type is not supported (RSA, EC P-256/P-384, Ed25519).")
