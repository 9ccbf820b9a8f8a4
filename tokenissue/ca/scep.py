"""The CA's SCEP registration authority (RFC 8894 §2.1): the certificate clients encrypt their
requests to and whose key signs the CA's answers.

SCEP encrypts with RSA key transport, and a CA key (often EC, and made sign-only) must not
decrypt what anyone sends: the RA has its own RSA key, made on a token able to decrypt
(CKM_RSA_PKCS), with keyUsage digitalSignature + keyEncipherment. :func:`provision_ra` makes
and renews it as :func:`.delegated.provision` does for every service of the CA; the certificate
is ``scep-ra.pem`` in the CA directory and ca.toml names its key (``scep_key``, ``scep_token``).
"""

from __future__ import annotations

from pathlib import Path

from cryptography import x509

from ..credentials import Pin, ProtectedAuth
from ..errors import Remedy, UsageError
from ..models import KeyAlgorithm, KeyType
from . import delegated
from .authority import CertificateAuthority
from .delegated import Service

__all__ = ["RA_CERT_FILE", "RA_PROFILE", "RA_SERVICE", "provision_ra", "ra_certificate"]

RA_CERT_FILE = "scep-ra.pem"
RA_PROFILE = "scep-ra"
RA_SERVICE = Service(
    name="scep", what="SCEP RA", common_name="SCEP RA", cert_file=RA_CERT_FILE, profile=RA_PROFILE,
    label="tokenissue-scep-ra", usage=("digital_signature", "key_encipherment"), decrypts=True, max_days=825,
    remedy=Remedy.NAME_OCSP_TOKEN,
)  # fmt: skip


def ra_certificate(ca_dir: Path) -> x509.Certificate | None:
    """The RA's certificate in ``ca_dir``, or None when none was made."""
    return delegated.certificate(ca_dir, RA_SERVICE)


def provision_ra(
    ca: CertificateAuthority,
    pin: Pin | ProtectedAuth | None,
    *,
    days: int = 365,
    key_type: KeyType = KeyType.RSA_2048,
    token: str | None = None,
    token_pin: Pin | ProtectedAuth | None = None,
    new_key: bool = False,
) -> x509.Certificate:
    """Make (or renew) the SCEP RA's certificate; the key is RSA (SCEP encrypts to it)."""
    if key_type.algorithm is not KeyAlgorithm.RSA:
        raise UsageError(f"SCEP clients encrypt to the RA with RSA, so its key must be RSA, not {key_type.value}.")
    return delegated.provision(ca, RA_SERVICE, pin, days=days, key_type=key_type, token=token, token_pin=token_pin,
                               new_key=new_key)  # fmt: skip
