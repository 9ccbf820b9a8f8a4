"""Requests that wait for an officer (profiles with ``approval``): list, approve, reject.

A protocol that can wait (SCEP) queues the request once its code checked and its registration
is reserved for it; the client polls. Approving lets the next poll issue the certificate (the
server signs it then, so approving needs no CA key); rejecting answers the next poll with a
refusal and releases the registration, so the holder can send a corrected request with the same
code. Each decision is in the audit log with who made it.
"""

from __future__ import annotations

import hashlib

from ..models import PendingRequest, PendingStatus
from .authority import CertificateAuthority

__all__ = ["TID_LABELS", "decide", "pending", "reservation_id"]

#: How each protocol names its reservations (the prefix of :func:`reservation_id`).
TID_LABELS = {"scep": "pkcsreq", "est": "simpleenroll"}


def reservation_id(label: str, ref: str, csr_der: bytes) -> bytes:
    """The ID a registration is reserved under for one request: per registration and CSR."""
    return hashlib.sha256(f"{label}|".encode() + ref.encode() + b"|" + csr_der).digest()[:16]


def pending(ca: CertificateAuthority, *, every: bool = False) -> list[PendingRequest]:
    """The requests waiting for a decision (``every``: also those decided)."""
    return ca.inventory.pending_list(None if every else PendingStatus.PENDING)


def decide(ca: CertificateAuthority, pending_id: str, *, approve: bool, by: str) -> PendingRequest:
    """Approve or reject request ``pending_id``; RequestRejected if it was decided already (a
    request approved but not yet collected may still be rejected), or, to approve, when its
    registration can no longer be used (cancelled, locked or expired meanwhile)."""
    if approve:
        from .registration import RegistrationAuthority

        RegistrationAuthority(ca).check_usable(ca.inventory.pending_get(pending_id).ref)
    decided = ca.inventory.pending_decide(pending_id, approve, by)
    if not approve:
        ca.inventory.registration_release(decided.ref, bytes.fromhex(decided.reservation))
    return decided
