"""Revocation reasons as X.509 writes them: the one mapping for CRLs, CMP and ACME.

:class:`~tokenissue.models.RevocationReason` is how tokenissue names a reason (the CLI's
spelling); a CRL entry and a CMP revocation request carry cryptography's ``ReasonFlags``, and
ACME's revokeCert the RFC 5280 CRLReason code (§5.3.1).
"""

from __future__ import annotations

from typing import Final

from cryptography import x509

from ..models import RevocationReason

__all__ = ["REASON_FLAGS", "reason_code", "reason_from_flag"]

#: How each reason is written in a CRL entry's reasonCode extension or a CMP rr.
REASON_FLAGS: Final[dict[RevocationReason, x509.ReasonFlags]] = {
    RevocationReason.UNSPECIFIED: x509.ReasonFlags.unspecified,
    RevocationReason.KEY_COMPROMISE: x509.ReasonFlags.key_compromise,
    RevocationReason.CA_COMPROMISE: x509.ReasonFlags.ca_compromise,
    RevocationReason.AFFILIATION_CHANGED: x509.ReasonFlags.affiliation_changed,
    RevocationReason.SUPERSEDED: x509.ReasonFlags.superseded,
    RevocationReason.CESSATION_OF_OPERATION: x509.ReasonFlags.cessation_of_operation,
    RevocationReason.CERTIFICATE_HOLD: x509.ReasonFlags.certificate_hold,
    RevocationReason.PRIVILEGE_WITHDRAWN: x509.ReasonFlags.privilege_withdrawn,
}

# RFC 5280 §5.3.1 CRLReason: 7 is unused; removeFromCRL (8) and aACompromise (10) name no
# reason tokenissue records.
_CODES: Final[dict[RevocationReason, int]] = {
    RevocationReason.UNSPECIFIED: 0,
    RevocationReason.KEY_COMPROMISE: 1,
    RevocationReason.CA_COMPROMISE: 2,
    RevocationReason.AFFILIATION_CHANGED: 3,
    RevocationReason.SUPERSEDED: 4,
    RevocationReason.CESSATION_OF_OPERATION: 5,
    RevocationReason.CERTIFICATE_HOLD: 6,
    RevocationReason.PRIVILEGE_WITHDRAWN: 9,
}

_BY_FLAG: Final = {flag: reason for reason, flag in REASON_FLAGS.items()}


def reason_code(reason: RevocationReason) -> int:
    """The RFC 5280 CRLReason code of ``reason``."""
    return _CODES[reason]


def reason_from_flag(flag: x509.ReasonFlags) -> RevocationReason | None:
    """The reason a ``ReasonFlags`` names; None for removeFromCRL and aACompromise."""
    return _BY_FLAG.get(flag)
