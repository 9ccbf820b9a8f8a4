"""Certificates: a self-signed CA, issuing end-entity (or subordinate CA) certificates, bundles,
fingerprints and chain checks.

Every signing function takes any cryptography private key object. On a token that object is an
adapter whose ``sign()`` runs inside the token, so nothing here asks a key for its private
numbers or serialises it; the only thing read from it is ``public_key()``.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import AuthorityInformationAccessOID, ObjectIdentifier

from ..errors import CAUnavailable, RequestRejected, UsageError
from ..models import CertRecord
from ..publickeys import same_public_key
from .csr import hash_for

__all__ = [
    "CertFormat",
    "cert_record",
    "check_key_matches_certificate",
    "dump_certificates",
    "fingerprint_sha256",
    "issue_certificate",
    "load_certificates",
    "random_serial",
    "self_signed_ca",
    "ski_of",
    "verify_chain",
]

CertFormat = Literal["pem", "der", "p7b"]

# Clocks of relying parties drift; a certificate that becomes valid a few minutes in the past
# is accepted at once by a verifier whose clock is slightly behind ours.
_BACKDATE = timedelta(minutes=5)

# RFC 5280 §4.1.2.2 allows at most 20 DER octets for a serial, and DER integers are signed, so a
# positive serial may use at most 159 bits. cryptography refuses anything longer.
_SERIAL_BITS = 159

# CA/Browser Forum BR §7.1 asks for at least 64 bits from a CSPRNG; we insist that a serial
# from random_serial() is never shorter than this, so at least this many bits are random.
_MIN_SERIAL_BITS = 64


def random_serial() -> int:
    """A positive serial with 159 random bits that fits in 20 DER octets.

    Values below 2**64 are drawn again (probability 2**-95): that keeps the serial at least
    eight octets long, so a serial never looks like a small counter.
    """
    while True:
        serial = secrets.randbits(_SERIAL_BITS)
        if serial >= 1 << _MIN_SERIAL_BITS:
            return serial


def fingerprint_sha256(cert: x509.Certificate) -> str:
    """The lowercase hex SHA-256 of the certificate's DER, as the inventory stores it."""
    return cert.fingerprint(hashes.SHA256()).hex()


def cert_record(
    cert: x509.Certificate,
    *,
    profile: str,
    token_serial: str | None,
    key_id: bytes | None,
    label: str | None,
    request_id: str | None,
    replaces: int | None,
) -> CertRecord:
    """The inventory's record of ``cert`` (the CA's of what it issued, the holder's of what it enrolled)."""
    return CertRecord(
        serial=cert.serial_number,
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        sha256=fingerprint_sha256(cert),
        profile=profile,
        der=cert.public_bytes(serialization.Encoding.DER),
        token_serial=token_serial,
        key_id=key_id,
        label=label,
        request_id=request_id,
        replaces=replaces,
    )


def _utc(when: datetime) -> datetime:
    """Treat a naive datetime as UTC, the way cryptography does, and make it aware."""
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def check_key_matches_certificate(private_key: Any, cert: x509.Certificate) -> None:
    """Raise :class:`CAUnavailable` unless ``private_key`` belongs to ``cert``.

    Signing with the wrong key produces a certificate nobody can verify, and on a token the
    mistake (a wrong CKA_ID or label) is easy to make, so we compare public keys first.
    """
    if not same_public_key(private_key.public_key(), cert.public_key()):
        raise CAUnavailable(
            f"The CA key does not match the CA certificate for "
            f"'{cert.subject.rfc4514_string()}'; select the key that belongs to it."
        )


def ski_of(cert: x509.Certificate) -> x509.SubjectKeyIdentifier:
    """The certificate's SKI, or the RFC 5280 method 1 value when it has none."""
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.SubjectKeyIdentifier.from_public_key(cert.public_key())


def self_signed_ca(
    private_key: Any, subject: x509.Name, days: int, *, path_length: int | None = None
) -> x509.Certificate:
    """A self-signed root CA certificate for ``private_key``, valid for ``days`` days.

    ``path_length`` limits how many subordinate CAs may sit below it (``None``: no limit).
    Key usage includes digitalSignature besides keyCertSign and cRLSign because the CA key
    also signs protocol messages (CMP protection, OCSP responses) in some deployments.
    """
    if days <= 0:
        raise UsageError(f"A CA lifetime must be at least one day, not {days}.")
    public_key = private_key.public_key()
    ski = x509.SubjectKeyIdentifier.from_public_key(public_key)
    not_before = datetime.now(UTC) - _BACKDATE
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public_key)
        .serial_number(random_serial())
        .not_valid_before(not_before)
        .not_valid_after(not_before + _BACKDATE + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
    )
    return builder.sign(private_key, hash_for(public_key))


def issue_certificate(
    ca_key: Any,
    ca_cert: x509.Certificate,
    *,
    public_key: Any,
    subject: x509.Name,
    san: Sequence[x509.GeneralName],
    serial: int,
    not_before: datetime,
    not_after: datetime,
    key_usage: x509.KeyUsage,
    extended_key_usage: Sequence[ObjectIdentifier],
    policies: Sequence[str],
    crl_url: str | None,
    ocsp_url: str | None = None,
    is_ca: bool = False,
    path_length: int | None = None,
    cps_uri: str | None = None,
    user_notice: str | None = None,
) -> x509.Certificate:
    """Sign a certificate for ``public_key`` with the CA's key.

    The caller (the CA, with its profile) has already decided every value; this function only
    checks what would make the result unusable: a CA key that is not the CA certificate's,
    an empty validity period, a serial that does not fit RFC 5280. Policies are dotted OID
    strings, each qualified with ``cps_uri`` and ``user_notice`` (an explicitText) when
    given; ``ocsp_url`` goes into authorityInfoAccess. ``path_length`` only applies when ``is_ca``
    is true.
    """
    check_key_matches_certificate(ca_key, ca_cert)
    not_before, not_after = _utc(not_before), _utc(not_after)
    if not_after <= not_before:
        raise UsageError("The certificate's notAfter must be later than its notBefore.")
    if not 0 < serial < 1 << _SERIAL_BITS:
        raise UsageError("A serial number must be positive and fit in 20 octets (< 2**159).")
    try:
        policy_oids = [ObjectIdentifier(p) for p in policies]
    except ValueError:
        raise UsageError(f"A certificate policy in {list(policies)} is not a dotted OID.") from None

    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(
            x509.BasicConstraints(ca=is_ca, path_length=path_length if is_ca else None),
            critical=True,
        )
        .add_extension(key_usage, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski_of(ca_cert)),
            critical=False,
        )
    )
    if extended_key_usage:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage(list(extended_key_usage)), critical=False
        )
    if san:
        # RFC 5280 §4.2.1.6: with an empty subject the SAN carries the identity and must be
        # critical.
        builder = builder.add_extension(
            x509.SubjectAlternativeName(list(san)), critical=not list(subject)
        )
    if policy_oids:
        qualifiers: list[str | x509.UserNotice] = []
        if cps_uri:
            qualifiers.append(cps_uri)
        if user_notice:
            qualifiers.append(x509.UserNotice(notice_reference=None, explicit_text=user_notice))
        builder = builder.add_extension(
            x509.CertificatePolicies(
                [x509.PolicyInformation(oid, policy_qualifiers=qualifiers or None) for oid in policy_oids]
            ),
            critical=False,
        )
    if crl_url:
        builder = builder.add_extension(
            x509.CRLDistributionPoints(
                [
                    x509.DistributionPoint(
                        full_name=[x509.UniformResourceIdentifier(crl_url)],
                        relative_name=None,
                        reasons=None,
                        crl_issuer=None,
                    )
                ]
            ),
            critical=False,
        )
    if ocsp_url:
        # RFC 5280 §4.2.2.1: where a relying party asks this CA's OCSP responder.
        builder = builder.add_extension(
            x509.AuthorityInformationAccess(
                [x509.AccessDescription(AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(ocsp_url))]
            ),
            critical=False,
        )
    return builder.sign(ca_key, hash_for(ca_key.public_key()))


_JUNK = "The data is not a PEM bundle, a DER certificate or a PKCS#7 (p7b) certificate bundle."


def _chain_order(certs: list[x509.Certificate]) -> list[x509.Certificate]:
    """``certs`` leaf first, root last when they form one chain by name; else unchanged.

    PKCS#7 keeps certificates in a DER SET OF, which is sorted by encoding, so a p7b never
    says which certificate is the leaf. Callers expect the PEM convention (leaf first).
    """
    issuers = {c.issuer for c in certs if c.issuer != c.subject}
    leaves = [c for c in certs if c.subject not in issuers]
    if len(leaves) != 1:
        return certs
    ordered = [leaves[0]]
    while len(ordered) < len(certs):
        current = ordered[-1]
        nxt = [c for c in certs if c.subject == current.issuer and c not in ordered]
        if current.issuer == current.subject or len(nxt) != 1:
            return certs
        ordered.append(nxt[0])
    return ordered


def load_certificates(data: bytes) -> list[x509.Certificate]:
    """Read certificates from PEM (one or many), DER, or PKCS#7 in PEM or DER.

    PEM keeps the file's order. A PKCS#7 bundle has no order of its own, so when its
    certificates form one chain they are returned leaf first, root last.
    Raise :class:`UsageError` when nothing in ``data`` is a certificate.
    """
    certs: list[x509.Certificate]
    try:
        if b"-----BEGIN PKCS7-----" in data:
            certs = _chain_order(pkcs7.load_pem_pkcs7_certificates(data))
        elif b"-----BEGIN" in data:
            # Other PEM blocks (a key, a CSR) are skipped; only certificates count.
            certs = x509.load_pem_x509_certificates(data)
        else:
            try:
                certs = [x509.load_der_x509_certificate(data)]
            except ValueError:
                certs = _chain_order(pkcs7.load_der_pkcs7_certificates(data))
    except (ValueError, UnsupportedAlgorithm):
        raise UsageError(_JUNK) from None
    if not certs:
        raise UsageError(_JUNK)
    return certs


def dump_certificates(certs: Sequence[x509.Certificate], fmt: CertFormat) -> bytes:
    """Encode certificates: ``pem`` (concatenated), ``der`` (exactly one) or ``p7b`` (DER)."""
    if not certs:
        raise UsageError("There are no certificates to write.")
    if fmt == "pem":
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)
    if fmt == "der":
        if len(certs) != 1:
            raise UsageError(
                f"DER holds exactly one certificate, not {len(certs)}; use pem or p7b."
            )
        return certs[0].public_bytes(serialization.Encoding.DER)
    if fmt == "p7b":
        return pkcs7.serialize_certificates(list(certs), serialization.Encoding.DER)
    raise UsageError(f"Certificate format '{fmt}' is not one of pem, der, p7b.")


def _name(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string() or "(empty subject)"


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        # ValueError: names or algorithms differ; TypeError: a key type that cannot sign.
        return False
    return True


def _aki_matches(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """False only when both key identifiers exist and differ (a re-keyed CA of the same name)."""
    try:
        aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    except x509.ExtensionNotFound:
        return True
    if aki.key_identifier is None:
        return True
    try:
        ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return True
    return aki.key_identifier == ski.digest


def _check_time(cert: x509.Certificate, at: datetime) -> None:
    if at < cert.not_valid_before_utc:
        raise RequestRejected(
            f"The certificate '{_name(cert)}' is not valid before "
            f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M:%S} UTC."
        )
    if at > cert.not_valid_after_utc:
        raise RequestRejected(
            f"The certificate '{_name(cert)}' expired on "
            f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC."
        )


def _check_issuer_is_ca(issuer: x509.Certificate, cas_below: int) -> None:
    """``cas_below`` counts the non-self-issued CA certificates between it and the leaf."""
    try:
        bc = issuer.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        bc = None
    if bc is None or not bc.ca:
        raise RequestRejected(
            f"The certificate '{_name(issuer)}' signs others but is not a CA (basicConstraints)."
        )
    if bc.path_length is not None and cas_below > bc.path_length:
        raise RequestRejected(
            f"The CA '{_name(issuer)}' allows {bc.path_length} subordinate CA(s) below it, "
            f"the chain has {cas_below}."
        )
    try:
        ku = issuer.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return
    if not ku.key_cert_sign:
        raise RequestRejected(
            f"The CA '{_name(issuer)}' may not sign certificates (keyUsage lacks keyCertSign)."
        )


def verify_chain(
    leaf: x509.Certificate,
    intermediates_and_root: Sequence[x509.Certificate],
    *,
    at: datetime | None = None,
) -> list[x509.Certificate]:
    """Build and check the path from ``leaf`` to a self-signed root in the given certificates.

    Issuers are found by name and, when both sides carry them, by AKI/SKI; every signature,
    every validity period (at ``at``, default now) and the CA flag and path length of every
    issuer are checked. The root must be one of ``intermediates_and_root``: a self-signed
    leaf that is not among them is not trusted. Returns the chain leaf first, root last;
    raises :class:`RequestRejected` with one sentence on the first problem.

    This is a structural check for certificates the CA issues and users import; it does not
    evaluate name constraints, policies or revocation.
    """
    when = datetime.now(UTC) if at is None else _utc(at)
    pool = list(intermediates_and_root)
    pool_der = {c.public_bytes(serialization.Encoding.DER) for c in pool}
    chain = [leaf]
    _check_time(leaf, when)
    cas_below = 0
    current = leaf
    # A path can use each certificate once, so it is never longer than the pool plus the leaf.
    for _ in range(len(pool) + 1):
        if (
            current.issuer == current.subject
            and current.public_bytes(serialization.Encoding.DER) in pool_der
            and _signed_by(current, current)
        ):
            return chain
        candidates = [
            c
            for c in pool
            if c.subject == current.issuer and _aki_matches(current, c) and c not in chain
        ]
        issuer = next((c for c in candidates if _signed_by(current, c)), None)
        if issuer is None:
            if candidates:
                raise RequestRejected(
                    f"The signature on '{_name(current)}' does not verify with the key of "
                    f"'{current.issuer.rfc4514_string()}'."
                )
            raise RequestRejected(
                f"The issuer '{current.issuer.rfc4514_string()}' of '{_name(current)}' is not "
                "among the given CA certificates."
            )
        _check_issuer_is_ca(issuer, cas_below)
        _check_time(issuer, when)
        chain.append(issuer)
        current = issuer
        # RFC 5280 §6.1.4 (l): self-issued CA certificates do not count against a
        # pathLenConstraint higher up.
        if current.issuer != current.subject:
            cas_below += 1
    raise RequestRejected(f"No chain from '{_name(leaf)}' ends at a self-signed root.")


_KEY_USAGE_BITS = (
    "digital_signature", "content_commitment", "key_encipherment", "data_encipherment", "key_agreement",
    "key_cert_sign", "crl_sign", "encipher_only", "decipher_only",
)  # fmt: skip


def delegated_certificate(
    ca_key: Any,
    ca_cert: x509.Certificate,
    *,
    public_key: Any,
    subject: x509.Name,
    serial: int,
    not_before: datetime,
    not_after: datetime,
    usage: Sequence[str],
    eku: ObjectIdentifier | None = None,
    ocsp_nocheck: bool = False,
) -> x509.Certificate:
    """A certificate for one of the CA's own services (its OCSP responder, its SCEP RA): an
    end entity with the key usages named in ``usage`` (cryptography's KeyUsage argument names),
    ``eku`` when given, and id-pkix-ocsp-nocheck when asked."""
    check_key_matches_certificate(ca_key, ca_cert)
    unknown = set(usage) - set(_KEY_USAGE_BITS)
    if unknown:
        raise ValueError(f"unknown key usage {sorted(unknown)}")
    key_usage = x509.KeyUsage(**{bit: bit in usage for bit in _KEY_USAGE_BITS})
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(_as_utc(not_before))
        .not_valid_after(_as_utc(not_after))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(key_usage, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski_of(ca_cert)), critical=False)
    )
    if eku is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
    if ocsp_nocheck:
        builder = builder.add_extension(x509.OCSPNoCheck(), critical=False)
    return builder.sign(ca_key, hash_for(ca_key.public_key()))


def _as_utc(when: datetime) -> datetime:
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
