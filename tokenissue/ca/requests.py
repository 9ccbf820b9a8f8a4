"""What a request may ask for when something fixes its subject and SANs: a registration, or the
certificate being renewed. One place for the CMP and EST servers (and any protocol after them).

A requested subject must be empty or name the same attributes (in any order): anything else is
refused rather than silently replaced, so the requester learns the request was wrong. Requested
SANs must be among the allowed ones; none requested means all allowed ones.
"""

from __future__ import annotations

from collections import Counter

from cryptography import x509

from ..errors import CAUnavailable, RequestRejected, UsageError
from ..models import Registration
from ..pkix.names import parse_san, parse_subject

__all__ = ["allowed_sans", "registered_request", "same_subject"]


def _attributes(name: x509.Name) -> Counter[tuple[str, str]]:
    return Counter((a.oid.dotted_string, str(a.value)) for a in name)


def same_subject(fixed: x509.Name, requested: x509.Name | None, whose: str) -> x509.Name:
    """``fixed``, if the request names no subject or the same attributes (order aside)."""
    if requested is not None and list(requested) and _attributes(requested) != _attributes(fixed):
        raise RequestRejected(
            f"The requested subject '{requested.rfc4514_string()}' is not the subject of {whose} "
            f"('{fixed.rfc4514_string()}'); request that subject or leave it empty."
        )
    return fixed


def allowed_sans(
    allowed: list[x509.GeneralName], requested: tuple[x509.GeneralName, ...], whose: str
) -> list[x509.GeneralName]:
    """The requested SANs if each is allowed; all allowed ones when none are requested."""
    if not requested:
        return allowed
    extra = [g for g in requested if g not in allowed]
    if extra:
        raise RequestRejected(f"{len(extra)} requested subjectAltName entries are not allowed by {whose}.")
    return list(dict.fromkeys(requested))


def registered_request(
    reg: Registration, subject: x509.Name | None, sans: tuple[x509.GeneralName, ...]
) -> tuple[x509.Name, list[x509.GeneralName]]:
    """The subject and SANs a certificate for registration ``reg`` gets, given what was requested."""
    try:
        fixed = parse_subject(reg.subject)
    except UsageError as e:  # pragma: no cover - register() parsed it before storing
        raise CAUnavailable("The registration's subject is damaged.") from e
    return (
        same_subject(fixed, subject, f"registration {reg.ref}"),
        allowed_sans(list(parse_san(list(reg.san))), sans, "the registration"),
    )
