"""A lost token: every certificate whose key it holds is revoked at its CA, without the token.

The holder (``revoke --token-serial``) and the CA operator (``ca revoke --token-serial``) name
the token by the identity tokenissue recorded for it (:func:`recorded_identity`), and a name
that no inventory ever recorded is refused (:func:`require_recorded`), since "nothing revoked"
would read as success. The holder's side (:func:`revoke_lost_token`) also ends the
enrollments the token took with it and brings the holder's records in line with the CA's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from ..ca.authority import CertificateAuthority
from ..errors import AmbiguousToken, NotFound
from ..inventory import Inventory
from ..lifecycle import Unfinished, abandon, unfinished
from ..models import CertRecord, CertStatus, RevocationReason
from ..p11 import TokenSelector

__all__ = [
    "AmbiguousLostToken",
    "LostTokenRevoked",
    "NothingRecorded",
    "recorded_identity",
    "require_recorded",
    "revoke_lost_token",
]


class AmbiguousLostToken(AmbiguousToken):
    """A lost token's name matches several recorded tokens; ``candidates`` are their recorded
    identities (pkcs11: URIs), one of which names it."""

    def __init__(self, message: str, *, candidates: Sequence[str]) -> None:
        super().__init__(message)
        self.candidates = tuple(candidates)


@dataclass(frozen=True)
class LostTokenRevoked:
    """What revoking a lost token did: the certificates revoked, the enrollments ended."""

    revoked: list[CertRecord]
    ended: list[Unfinished]


def recorded_identity(value: str, *inventories: Inventory) -> str:
    """The recorded identity a lost token's serial (or pkcs11: URI) names.

    A serial that tells tokens apart is its own identity. Where serials repeat (every
    tpm2-pkcs11 token has 0000000000000000) tokens are recorded under a pkcs11: URI: one such
    token with that serial is taken; several are refused (:class:`AmbiguousLostToken`, with the URIs to
    choose from).
    """
    if value.startswith("pkcs11:"):
        # Recorded URIs are compared as tokens, not as strings: the holder may write the one
        # 'journal list' showed with fewer attributes, another order or other percent-encoding.
        wanted = TokenSelector.parse(value)
        if wanted.serial is None:
            return value
        recorded = {i for inv in inventories for i in inv.token_identities(wanted.serial)}
        if value in recorded:
            return value
        found = sorted(i for i in recorded if i.startswith("pkcs11:") and _names(wanted, i))
        if len(found) > 1:
            raise AmbiguousLostToken(f"{len(found)} recorded tokens match '{value}'.", candidates=found)
        return found[0] if found else value
    found = sorted({i for inv in inventories for i in inv.token_identities(value)})
    if len(found) <= 1:
        return found[0] if found else value
    raise AmbiguousLostToken(
        f"{len(found)} tokens with serial {value} are recorded (their serials do not tell them apart).", candidates=found
    )


def _names(wanted: TokenSelector, identity: str) -> bool:
    """Whether the selector ``wanted`` names the token recorded as the URI ``identity``."""
    t = TokenSelector.parse(identity)
    return bool(wanted.matches(t.label or "", t.serial or "", t.manufacturer or "", t.model or ""))


class NothingRecorded(NotFound):
    """No inventory recorded a certificate for the token named (a label, a mistyped serial)."""

    def __init__(self, identity: str) -> None:
        super().__init__(f"No certificate is recorded for token '{identity}' at this CA, so nothing was revoked.")
        self.identity = identity


def require_recorded(identity: str, *inventories: Inventory) -> None:
    """Refuse a lost-token revocation that names no token these inventories ever recorded."""
    if not any(inv.list_certificates(token_serial=identity) for inv in inventories):
        raise NothingRecorded(identity)


def revoke_lost_token(
    authority: CertificateAuthority, holder: Inventory, name: str, reason: RevocationReason, *, present: set[str]
) -> LostTokenRevoked:
    """Revoke, at ``authority``, every valid certificate of the lost token ``name`` (its serial,
    or the pkcs11: URI where serials repeat), and bring the holder's records along. With
    reason certificateHold they are suspended instead (a token gone missing that may turn up),
    and its unfinished enrollments are kept.

    ``present`` are the identities of the tokens present now: a token said to be lost that is
    in fact here keeps its unfinished enrollments (they can still be finished or abandoned);
    otherwise they are ended, and a certificate the CA issued for one is among those revoked.
    An unfinished enrollment alone is reason enough to go on: its certificate may exist at the
    CA though no inventory recorded it yet.
    """
    identity = recorded_identity(name, authority.inventory, holder)
    if not unfinished(holder, token_serial=identity):
        require_recorded(identity, authority.inventory, holder)
    revoked = authority.revoke_token(identity, reason)
    # A hold (certificateHold) expects the token back: its unfinished enrollments stay open.
    hold = reason is RevocationReason.CERTIFICATE_HOLD
    ended = [] if identity in present or hold else [
        abandon(holder, u.journal_id, present=lambda _s: False) for u in unfinished(holder, token_serial=identity)
    ]  # fmt: skip
    # The holder's records follow the CA's, including what a run cut short left behind.
    for r in [*holder.list_certificates(status=CertStatus.VALID, token_serial=identity),
              *holder.list_certificates(status=CertStatus.SUSPENDED, token_serial=identity)]:  # fmt: skip
        at_ca = authority.inventory.get_certificate(r.serial)
        if at_ca is None or at_ca.status is r.status:
            continue
        if at_ca.status is CertStatus.REVOKED:
            holder.revoke(r.serial, at_ca.revocation_reason or reason, at_ca.revoked_at or datetime.now(UTC))
        elif at_ca.status is CertStatus.SUSPENDED:
            holder.suspend(r.serial, at_ca.revoked_at or datetime.now(UTC))
    return LostTokenRevoked(revoked, ended)
