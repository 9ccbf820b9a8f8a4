"""The identity binding of a certificate (a Korean VID), checked as a relying party does.

Who holds what: the certificate carries the holder's real name and the VID
(``h(h(number, R))``, :mod:`tokenissue.pkix.kr_vid`); the token keeps R next to the key, as a
private data object only a logged-in session reads; the holder knows the registration number;
the CA kept neither. A bank (본인확인) is given the number by the customer and R by the
customer's client, and checks that together they make the certificate's VID.

:func:`verify_vid` is that check on a certificate and an R; :func:`verify_vid_on_token` reads the
key's certificate and R from a token first. Both raise, as cryptography's checks do:
:class:`~tokenissue.errors.IdentityMismatch` (exit 9) when the binding is not this number's,
UsageError when the certificate binds no identity.
"""

from __future__ import annotations

from cryptography import x509

from .credentials import IdNumber
from .errors import IdentityMismatch, KeyNotFound, Remedy
from .p11 import KeySelector, TokenSession
from .pkix.kr_vid import RANDOM_NUM_OBJECT_ID, identify_data_of, vid_matches

__all__ = ["verify_vid", "verify_vid_on_token"]


def verify_vid(cert: x509.Certificate, number: IdNumber, random: bytes) -> str:
    """Check that ``cert``'s VID is the one of ``number`` and ``random`` (R); return the
    certificate's realName. IdentityMismatch if it is not (the number is never repeated)."""
    if not vid_matches(cert, number.reveal(), random):
        raise IdentityMismatch(
            "The certificate's VID does not match this registration number and R: it is not this person's "
            "certificate, or R is not the one issued with it."
        )
    data = identify_data_of(cert)
    assert data is not None  # vid_matches refuses a certificate without one
    return data.real_name


def verify_vid_on_token(s: TokenSession, key: KeySelector, number: IdNumber) -> tuple[x509.Certificate, str]:
    """Check the VID of the certificate of ``key`` on the token against ``number`` and the R kept
    next to the key; return the certificate and its realName."""
    info = s.key(key)
    certs = [c for c in s.certificates(key_id=info.id) if not c.is_ca]
    if not certs:
        raise KeyNotFound(f"Key '{info.label}' on token '{s.info.label}' has no certificate.", remedy=Remedy.LIST_KEYS)
    random = s.key_data(info.id, RANDOM_NUM_OBJECT_ID)
    if random is None:
        raise KeyNotFound(
            f"Key '{info.label}' on token '{s.info.label}' has no R (id-randomNum) next to it: its certificate was "
            "not issued with a VID by tokenissue, or R was removed."
        )
    cert = x509.load_der_x509_certificate(max(certs, key=lambda c: c.not_after).der)
    return cert, verify_vid(cert, number, random)
