"""An enrollment authorized by a registration's reference and code, as EST's simpleenroll and
SCEP's PKCSReq both make it (CMP has its own, inside the MAC-protected message).

:func:`check_code` compares the code of ``ref`` (a decoy for an unknown one) in constant time;
a wrong code counts toward the lock while the registration is open, and an unknown reference
and a wrong code get one answer, so references cannot be probed. :func:`issue_registered`
reserves the registration for this request, has the CA sign with the **registered** subject,
SANs and profile, and consumes the registration; a re-issue registration supersedes the old
certificate. The request ID is per registration and CSR: the same CSR sent again gets the same
certificate, or finishes a reservation it made.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ..ca.approvals import reservation_id
from ..ca.authority import CertificateAuthority, Issued
from ..ca.registration import RegistrationAuthority, parse_code
from ..ca.requests import allowed_sans, registered_request, same_subject
from ..credentials import Secret
from ..errors import CAError, RequestRejected, UsageError
from ..models import CertRecord, CertStatus, RegistrationStatus, RevocationReason
from ..pkix.kr_vid import without_identify_data
from ..pkix.names import sans_of

__all__ = ["AwaitingApproval", "Refusal", "Requested", "check_code", "csr_subject", "issue_registered", "renewable", "renewal_names", "renewal_request_id"]


class Refusal(Exception):
    """A refusal in one sentence; ``kind`` is "unauthenticated", "forbidden" or "bad-request"."""

    def __init__(self, kind: str, text: str) -> None:
        super().__init__(text)
        self.kind, self.text = kind, text


class AwaitingApproval(Exception):
    """The request is authorized and its registration reserved; an officer must approve it."""


WRONG_CODE = "The reference or the authorization code is wrong."

#: Signs one request: (public key, profile, subject, sans, request_id=, real_name=, reissue_of=) -> Issued.
Signer = Callable[..., Issued]


def check_code(ra: RegistrationAuthority, ref: str, typed: str, fields: dict[str, Any]) -> Any:
    reg, expected = ra.mac_secret(ref)
    try:
        given = parse_code(typed)
    except UsageError:
        given = Secret("")
    if reg is not None and hmac.compare_digest(given.reveal().encode(), expected.reveal().encode()):
        return reg
    if reg is not None and reg.status is RegistrationStatus.OPEN:
        fields["ref_failures"] = ra.record_failure(ref).failures
    fields["auth"] = "unknown-ref" if reg is None else "wrong-code"
    raise Refusal("unauthenticated", WRONG_CODE)


@dataclass(frozen=True)
class Requested:
    """What a request asks for: the key, the subject and SANs it names, and the DER its
    reservation ID is derived from (the CSR's). Nothing secret: a queued request keeps this,
    never the CSR with its challenge password."""

    public_key: Any
    subject: x509.Name | None
    sans: tuple[x509.GeneralName, ...]
    identity: bytes

    @classmethod
    def of_csr(cls, csr: x509.CertificateSigningRequest) -> Requested:
        try:
            sans = tuple(sans_of(csr))
        except (ValueError, x509.DuplicateExtension):
            raise Refusal("bad-request", "The request's extensions cannot be read; make a new request.") from None
        return cls(csr.public_key(), csr_subject(csr), sans, csr.public_bytes(serialization.Encoding.DER))


def issue_registered(
    ca: CertificateAuthority, ra: RegistrationAuthority, ref: str, req: Requested, *, protocol: str, tid_label: str,
    sign: Signer, can_wait: bool = False, approved: bool = False, reservation: bytes | None = None,
) -> Issued:  # fmt: skip
    """``protocol`` names the protocol in sentences ("EST", "SCEP") and, in lower case, begins
    the request ID; ``tid_label`` begins the hashed reservation ID ("simpleenroll", "pkcsreq").

    The same request sent again after it was issued (its answer lost) gets the same
    certificate. For a profile with ``approval``: a protocol that ``can_wait`` gets
    :class:`AwaitingApproval` once the registration is reserved for the request (the caller
    queues it), until it comes back ``approved`` (with the ``reservation`` it was queued under);
    any other protocol is refused."""
    tid = reservation if reservation is not None else reservation_id(tid_label, ref, req.identity)
    done = ca.inventory.get_registration(ref)
    if done is not None and done.status is RegistrationStatus.USED and done.reserved_tid == tid and done.serial:
        rec = ca.inventory.get_certificate(done.serial)
        if rec is not None:
            return Issued(x509.load_der_x509_certificate(rec.der), rec, ca.chain())
    try:
        reg = ra.check_usable(ref)
        if not can_wait:
            ra.require_no_approval(reg, protocol)
    except RequestRejected as e:
        raise Refusal("forbidden", e.message) from None
    profile = ca.profile(reg.profile)
    if profile.identify_data:
        raise Refusal("forbidden", f"Profile '{reg.profile}' binds the holder's registration number, which "
                                   f"{protocol} cannot carry confidentially; enroll over CMP.")  # fmt: skip
    try:
        subject, san = registered_request(reg, req.subject, req.sans)
    except RequestRejected as e:
        raise Refusal("bad-request", e.message) from None
    except (ValueError, x509.DuplicateExtension):
        raise Refusal("bad-request", "The request's extensions cannot be read; make a new request.") from None
    try:
        ra.reserve(ref, tid)
    except RequestRejected as e:
        raise Refusal("forbidden", e.message) from None
    if profile.approval and not approved:
        raise AwaitingApproval(reg.profile)
    try:
        issued = sign(req.public_key, reg.profile, subject, san, request_id=f"{protocol.lower()}-{tid.hex()}",
                      real_name=reg.real_name, reissue_of=reg.reissue_of)  # fmt: skip
    except CAError:
        ra.release(ref, tid)  # a definite refusal: another request may try
        raise
    try:
        ra.consume(ref, issued.record.serial, tid=tid)
    except RequestRejected as e:
        # Cancelled or locked after it was reserved: the certificate must not stand.
        ca.revoke(issued.record.serial, RevocationReason.PRIVILEGE_WITHDRAWN)
        raise Refusal("forbidden", e.message) from None
    return issued


def renewable(ca: CertificateAuthority, cert_der: bytes, fields: dict[str, Any]) -> CertRecord:
    """The record of ``cert_der`` if it may authorize its own renewal (EST simplereenroll, SCEP
    RenewalReq): issued by this CA, valid and unexpired."""
    try:
        cert = x509.load_der_x509_certificate(cert_der)
    except ValueError:
        raise Refusal("forbidden", "The certificate being renewed cannot be read.") from None
    rec = ca.inventory.get_certificate(cert.serial_number)
    if rec is None or rec.der != cert_der:
        raise Refusal("forbidden", "The certificate being renewed was not issued by this CA.")
    fields["replaces"] = format(rec.serial, "x")
    if rec.status is not CertStatus.VALID:
        raise Refusal("forbidden", f"Certificate {rec.serial:x} is {rec.status.value}; it cannot be renewed.")
    if datetime.now(UTC) > rec.not_after:
        raise Refusal("forbidden", f"Certificate {rec.serial:x} has expired; enroll anew with a registration.")
    return rec


def renewal_names(
    cert: x509.Certificate, csr: x509.CertificateSigningRequest, subject_of_csr: x509.Name | None
) -> tuple[x509.Name, list[x509.GeneralName]]:
    """The subject and SANs of the renewal: those of ``cert``; the CSR may repeat them or leave
    them out, not change them (RFC 7030 §4.2.2, RFC 8894 §3.3.1.2)."""
    kept = without_identify_data(sans_of(cert))
    try:
        subject = same_subject(cert.subject, subject_of_csr, "the certificate being renewed")
        san = allowed_sans(kept, tuple(sans_of(csr)), "the certificate being renewed")
    except RequestRejected as e:
        raise Refusal("bad-request", e.message) from None
    except (ValueError, x509.DuplicateExtension):
        raise Refusal("bad-request", "The request's extensions cannot be read; make a new request.") from None
    if list(san) != kept:
        raise Refusal("bad-request", "The request's subjectAltNames must be those of the certificate being renewed.")
    return subject, san


def csr_subject(csr: x509.CertificateSigningRequest) -> x509.Name | None:
    """The CSR's subject, without cryptography's warning about a malformed one."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return csr.subject


def renewal_request_id(prefix: str, label: str, serial: int, csr: x509.CertificateSigningRequest) -> str:
    """The request ID of a renewal: per renewed certificate and CSR, so the same request sent
    again gets the same certificate and renewing the next certificate is a new request."""
    seed = f"{label}|{serial:x}|".encode() + csr.public_bytes(serialization.Encoding.DER)
    return f"{prefix}-" + hashlib.sha256(seed).hexdigest()[:32]
