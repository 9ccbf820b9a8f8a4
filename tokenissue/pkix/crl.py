"""Certificate revocation lists (RFC 5280 §5), signed with any cryptography private key."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from cryptography import x509

from ..errors import CAUnavailable, UsageError
from ..models import RevocationReason
from .certs import check_key_matches_certificate
from .csr import hash_for
from .reasons import REASON_FLAGS

__all__ = ["build_crl"]

# RFC 5280 §5.2.3: a CRL number is at most 20 octets, so non-negative and below 2**159.
_MAX_CRL_NUMBER = 1 << 159


def _utc(when: datetime) -> datetime:
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def build_crl(
    ca_key: Any,
    ca_cert: x509.Certificate,
    revoked: Sequence[tuple[int, datetime, RevocationReason]],
    *,
    number: int,
    this_update: datetime,
    next_update: datetime,
) -> x509.CertificateRevocationList:
    """A CRL listing ``revoked`` (serial, revocation time, reason), signed by the CA key.

    The reasonCode extension is left out for ``UNSPECIFIED``, as RFC 5280 §5.3.1 asks. The
    CA certificate must allow cRLSign: OpenSSL (``verify -crl_check``) refuses a CRL whose
    issuer lacks it, so building one would only defer the failure to every relying party.
    """
    check_key_matches_certificate(ca_key, ca_cert)
    try:
        ku = ca_cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        ku = None
    if ku is not None and not ku.crl_sign:
        raise CAUnavailable(
            f"The CA certificate '{ca_cert.subject.rfc4514_string()}' does not allow "
            "signing CRLs (keyUsage lacks cRLSign)."
        )
    this_update, next_update = _utc(this_update), _utc(next_update)
    if next_update <= this_update:
        raise UsageError("A CRL's nextUpdate must be later than its thisUpdate.")
    if not 0 <= number < _MAX_CRL_NUMBER:
        raise UsageError("A CRL number must be non-negative and fit in 20 octets (< 2**159).")
    serials = [serial for serial, _, _ in revoked]
    if len(set(serials)) != len(serials):
        raise UsageError("A serial number appears twice in the list of revoked certificates.")

    try:
        aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
            ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        )
    except x509.ExtensionNotFound:
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key())  # type: ignore[arg-type]

    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(this_update)
        .next_update(next_update)
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(aki, critical=False)
    )
    for serial, revoked_at, reason in revoked:
        entry = (
            x509.RevokedCertificateBuilder()
            .serial_number(serial)
            .revocation_date(_utc(revoked_at))
        )
        if reason is not RevocationReason.UNSPECIFIED:
            entry = entry.add_extension(x509.CRLReason(REASON_FLAGS[reason]), critical=False)
        builder = builder.add_revoked_certificate(entry.build())
    return builder.sign(ca_key, hash_for(ca_key.public_key()))
