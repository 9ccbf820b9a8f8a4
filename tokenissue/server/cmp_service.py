"""The CA's CMP policy: which request is answered how (RFC 4210, Lightweight CMP RFC 9483).

:class:`CMPService` takes one DER request and returns the HTTP status, the DER response and
fields for the access log. It is synchronous; the ASGI app runs it in a worker thread.

What is accepted, and how it must be protected:

======================  =====================================================================
ir / cr / p10cr + MAC   PasswordBasedMac (or PBMAC1) keyed by a registration's authorization
                        code; senderKID is the reference. Wrong MAC: the failure counts, the
                        fifth locks the registration. The certificate gets the **registered**
                        subject and profile. A template or CSR subject must be empty or name
                        the same attributes (in any order); anything else is refused with
                        badCertTemplate rather than silently replaced, so the holder learns
                        the request was wrong. SANs must be among the registered ones; none
                        requested means all registered ones. The registration is consumed;
                        the answer is MAC-protected with the same code (RFC 4210 §5.1.3.1).
cr + signature          Re-enrollment by the holder of a valid certificate this CA issued:
                        same subject, SANs among the old ones, the old certificate's profile.
                        ir and p10cr signed by a certificate are refused (notAuthorized).
kur                     Signed with the key of the certificate being updated (valid, issued
                        here, not revoked, matching oldCertID when present); the new
                        certificate keeps subject, SANs and profile and records ``replaces``.
rr                      Signed with the key of the certificate being revoked. Reason
                        keyCompromise revokes every unexpired certificate of that key
                        (CertificateAuthority.revoke), not only the one named. Reason
                        certificateHold suspends it (a token gone missing); only the CA
                        restores, so removeFromCRL is refused. A suspended certificate may
                        still sign an rr (a hold made final), nothing else.
certConf                Must continue an open transaction (recipNonce = our senderNonce),
                        protected like its request; certHash must match. A rejection revokes
                        the certificate (RFC 4210 §5.3.18).
genm                    id-it-caCerts and id-it-rootCaCert, unprotected or protected.
======================  =====================================================================

A request signed by a revoked certificate is refused with certRevoked, and so is one signed
by a suspended certificate, unless it is an rr.

Before a MAC-protected request authenticates, the answer tells nothing: an unknown or malformed
reference and a wrong code, on a registration open, used, expired, locked or cancelled, all get
the same badMessageCheck, text and HTTP status, signed by the CA (an unknown reference is checked
against a decoy code, at the same cost). Only once the MAC verifies with the reference's code is
the registration's state told (notAuthorized, MAC-protected), so references cannot be probed.

Repeated transactionIDs. A client that lost an answer (or died after it) repeats its ir, cr,
p10cr or kur with the same transactionID. If the repeat is the same kind, authenticated the
same way (the MAC with the code of the registration recorded on the transaction, derivable
even once the code is used, or a signature by the same certificate) and asks for the public
key of the certificate issued in that transaction, it gets that certificate again (a fresh
senderNonce, the new request's as recipNonce, waiting for certConf again unless
implicitConfirm); nothing is issued or consumed again. If the transaction issued nothing yet
(the server died or failed first), it continues. Anything else with a known transactionID is
refused with transactionIdInUse and changes nothing; a repeat with a wrong code fails the MAC
and counts as a wrong code only while the registration is open.

Registration codes and crashes. Before issuing, the registration is reserved for the
transactionID with one conditional UPDATE; only then is the certificate issued (recorded
under request ID = transactionID in hex) and the registration consumed, which requires the
same reservation. Another transactionID is refused with notAuthorized ("in use by another
request") while it is held; a definite refusal after reserving releases it. A server dying
between issuing and consuming therefore leaves a code only the same transaction can finish,
with the certificate it already has. Responses are MAC-protected after a MAC-protected request that
authenticated, otherwise signed by the CA key (which stays logged in on its token for the
server's lifetime: see ``ca_key``). Requests that cannot be decoded get HTTP 400 and an
unprotected error; refusals are CMP error messages with HTTP 200, as RFC 6712 §3.3 has them;
an internal fault is logged and answered with systemFailure and HTTP 500, without details; a
database that cannot be reached (down, restarting, out of connections) gets systemUnavail and
HTTP 503 with Retry-After, which load balancers and clients take as "try again" (the same
transactionID then continues or repeats the transaction, so a retry never issues twice).

State lives in the CA's inventory (certificates, registrations, transactions), so replicas
can share one database; within one process a lock serialises the requests, because an
:class:`~tokenissue.inventory.Inventory` is not shared between threads and every token call
is serialised by the PKCS#11 module lock anyway.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any, Final

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ..ca.authority import CertificateAuthority, Issued
from ..ca.profiles import check_request
from ..ca.registration import RegistrationAuthority
from ..ca.requests import allowed_sans, registered_request, same_subject
from ..credentials import IdentityProof, IdNumber, Pin, ProtectedAuth, Secret
from ..errors import CAError, CertificateStateRefused, NotFound, PinError, RequestRejected, TokenIssueError, UsageError
from ..inventory import DuplicateTransaction, InventoryUnavailable
from ..models import (
    CertRecord,
    CertStatus,
    CMPTransaction,
    Registration,
    RegistrationStatus,
    RevocationReason,
    StepHook,
    TransactionKind,
    TransactionState,
    no_step,
)
from ..pkix.kr_vid import ID_IT_IDENTITY, identity_from_content, without_identify_data
from ..pkix.names import sans_of
from ..pkix.reasons import reason_from_flag
from ..protocols.cmp import (
    DEFAULT_MAX_MESSAGE_SIZE,
    ID_IT_CA_CERTS,
    ID_IT_ROOT_CA_CERT,
    PBM_OID,
    PBMAC1_OID,
    CMPError,
    CMPRequest,
    FailureInfo,
    SharedSecret,
    StatusInfo,
    build_cp,
    build_error,
    build_genp,
    build_ip,
    build_kup,
    build_pkiconf,
    build_rp,
    decode_message,
    encode_message,
    mac_iterations,
    open_with_password,
    parse_header,
    parse_request,
    protect_pbm,
    protect_signature,
    verify_cert_hash,
    verify_pop,
    verify_protection,
)
from ..publickeys import same_public_key

__all__ = ["CMPService", "Reply"]

log = logging.getLogger("tokenissue.server")

_MAC_OIDS: Final = (PBM_OID, PBMAC1_OID)
_NEW_TRANSACTION: Final = ("ir", "cr", "p10cr", "kur", "rr")
# Requests a client may repeat with the same transactionID to collect what it was issued.
_REPEATABLE: Final = ("ir", "cr", "p10cr", "kur")
# Reasons a holder cannot give for its own certificate (besides removeFromCRL and aACompromise,
# which name none): a compromise of the CA is for the CA operator to declare.
_NOT_FROM_HOLDER: Final = frozenset({RevocationReason.CA_COMPROMISE})
_PBM_ITERATIONS: Final = 10_000  #: for answers when the request's count cannot be read
_INTERNAL_TEXT: Final = "The CA could not process the request; try again later or ask the CA operator."
#: The one answer to a MAC-protected request that did not authenticate: unknown or malformed
#: reference, wrong code, on a registration in any state. It must not vary (see _authenticate_mac).
_UNAUTHENTICATED_TEXT: Final = (
    "The request's MAC does not verify with a registration: check the reference (senderKID) "
    "and the authorization code."
)
_UNAVAILABLE_TEXT: Final = "The CA's database is unavailable right now; send the same request again in a moment."

Reply = tuple[int, bytes, dict[str, Any]]


def _unauthenticated() -> CMPError:
    return CMPError("badMessageCheck", _UNAUTHENTICATED_TEXT)


@dataclass
class _Context:
    """How the current request authenticated: decides how its answer (or error) is protected."""

    request: CMPRequest
    fields: dict[str, Any]
    #: The registration code, once a MAC-protected request verified with it.
    secret: SharedSecret | None = None
    ref: str | None = None
    #: The serial of the certificate a signature-protected request verified with.
    signer: int | None = None


class CMPService:
    """Answers CMP requests for one CA. ``handle`` is thread-safe (requests are serialised)."""

    def __init__(
        self,
        ca: CertificateAuthority,
        ra: RegistrationAuthority,
        ca_pin: Pin | ProtectedAuth | None,
        *,
        ca_key: Any = None,
        max_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        on_step: StepHook | None = None,
    ) -> None:
        """``ca_key`` is the CA's signing key held open by the caller (``ca.signing_key``) for
        the server's lifetime; without it every signature opens the CA token with ``ca_pin``.
        ``on_step`` is the fault-injection point for crash tests (see :data:`tokenissue.models.StepHook`)."""
        self.ca = ca
        self.ra = ra
        self._pin = ca_pin
        self._ca_key = ca_key
        self.max_size = max_size
        self._on_step = on_step or no_step
        self._lock = threading.Lock()
        self._ca_cert = ca.certificate
        self._chain = ca.chain()

    # -- entry point -------------------------------------------------------------------------
    def handle(self, der: bytes) -> Reply:
        """(HTTP status, DER response, access-log fields) for one request. Never raises."""
        fields: dict[str, Any] = {}
        msg: Any = None
        try:
            msg = decode_message(der, max_size=self.max_size)
            request = parse_request(msg)
        except CMPError as e:
            fields["failure_info"] = e.failure_info
            return 400, self._bad_input(msg, e), fields
        except Exception:  # hostile input must never surface as a traceback
            log.exception("Undecodable CMP request")
            fields["failure_info"] = "badDataFormat"
            return 400, self._bad_input(msg, CMPError("badDataFormat", "The CMP request cannot be decoded.")), fields
        fields["cmp_body"] = request.body_type
        if request.transaction_id is not None:
            fields["transaction_id"] = request.transaction_id.hex()
        ctx = _Context(request, fields)
        try:
            with self._lock:
                return 200, self._dispatch(ctx), fields
        except CMPError as e:
            return self._refuse(ctx, e)
        except CAError as e:
            # The CA's own refusals (profile, validity, registration) carry safe sentences.
            return self._refuse(ctx, CMPError(_failure_for(e), e.message))
        except InventoryUnavailable as e:
            # The database is down, restarting or out of connections. Whatever this request got
            # on record (a transaction begun, a certificate issued) is found again by its
            # transactionID when the same request is sent again, so a repeat never doubles it.
            log.warning("CMP request deferred, database unavailable (transaction %s): %s", fields.get("transaction_id"), e)
            return self._fault(ctx, 503, "systemUnavail", _UNAVAILABLE_TEXT)
        except Exception:  # the catch-all that keeps details off the wire
            log.exception("CMP request failed inside the CA (transaction %s)", fields.get("transaction_id"))
            return self._fault(ctx, 500, "systemFailure", _INTERNAL_TEXT)

    def _fault(self, ctx: _Context, status: int, failure: FailureInfo, text: str) -> Reply:
        ctx.fields["failure_info"] = failure
        request = ctx.request
        try:
            body = self._protect(ctx, build_error(request, failure, text, sender=self._sender))
        except Exception:  # e.g. the token itself failed: answer unprotected
            body = encode_message(build_error(request, failure, text))
        return status, body, ctx.fields

    def _bad_input(self, msg: Any, error: CMPError) -> bytes:
        """An unprotected error, echoing transactionID and nonce when the header was readable."""
        header = None
        if msg is not None:
            with suppress(Exception):  # best effort: the error is sent either way
                header = parse_header(msg["header"])
        return encode_message(build_error(header, error.failure_info, str(error)))

    def _refuse(self, ctx: _Context, error: CMPError) -> Reply:
        ctx.fields["failure_info"] = error.failure_info
        msg = build_error(ctx.request, error.failure_info, str(error), sender=self._sender)
        return 200, self._protect(ctx, msg), ctx.fields

    # -- dispatch ----------------------------------------------------------------------------
    def _dispatch(self, ctx: _Context) -> bytes:
        req = ctx.request
        kind = req.body_type
        if kind in _NEW_TRANSACTION:
            tx = self.ca.inventory.transaction_get(_tid(req))
            if tx is not None:
                return self._repeat(ctx, tx)
        if kind == "certConf":
            return self._cert_conf(ctx)
        if kind == "genm":
            return self._genm(ctx)
        if kind == "pollReq":
            raise CMPError("badRequest", "This CA answers at once; there is nothing to poll for.")
        if _is_mac(req):
            if kind not in ("ir", "cr", "p10cr"):
                raise CMPError("notAuthorized", f"A {kind} must be signed with the key of the certificate concerned.")
            return self._enroll_registered(ctx)
        if req.protection_alg is None:
            raise CMPError("badMessageCheck", "The CMP request is not protected.")
        if kind == "rr":
            return self._revoke(ctx)
        if kind == "kur":
            return self._update(ctx, self._authenticate_signature(ctx))
        if kind == "cr":
            return self._reenroll(ctx, self._authenticate_signature(ctx))
        raise CMPError(
            "notAuthorized",
            f"A {kind} must be MAC-protected with a registration code; signed requests may only be cr or kur.",
        )

    # -- authentication ----------------------------------------------------------------------
    def _authenticate_mac(self, ctx: _Context) -> Registration:
        """The registration whose code the request's MAC verifies with, if it is usable.

        Nothing about the reference is told before the MAC verifies with its code: an unknown
        or malformed reference and a wrong code get the same answer (:data:`_UNAUTHENTICATED`).
        Only a sender who holds the code learns that the registration is used, expired, locked,
        cancelled or reserved by another request.
        """
        req = ctx.request
        ref = _ref(req)
        ctx.ref = ctx.fields["ref"] = ref
        self._verify_mac(ctx, ref)
        try:
            reg = self.ra.check_usable(ref)
            self.ra.require_no_approval(reg, "CMP")
            return reg
        except NotFound:  # pragma: no cover - deleted between the two reads
            raise _unauthenticated() from None
        except RequestRejected as e:
            raise CMPError("notAuthorized", e.message) from None

    def _verify_mac(self, ctx: _Context, ref: str) -> None:
        """Check the MAC with registration ``ref``'s code (derivable even once it is used).

        A wrong MAC counts towards the lock while the registration is open; a used, cancelled
        or locked one has nothing left to guess for. Every failure here gets the same answer,
        whatever the registration's state (see :meth:`_authenticate_mac`); the access log keeps
        what happened for the operator.
        """
        reg, code = self.ra.mac_secret(ref)
        secret = _shared(code)
        try:
            verify_protection(ctx.request.message, secret=secret)
        except CMPError as e:
            if e.failure_info == "badMessageCheck" and reg is not None and reg.status is RegistrationStatus.OPEN:
                after = self.ra.record_failure(ref)
                ctx.fields["ref_failures"] = after.failures
            ctx.fields["auth"] = "unknown-ref" if reg is None else "wrong-mac"
            raise _unauthenticated() from None
        if reg is None:  # pragma: no cover - nobody knows the decoy
            raise _unauthenticated()
        ctx.secret = secret

    def _authenticate_signature(
        self, ctx: _Context, *, suspended_ok: bool = False
    ) -> tuple[x509.Certificate, CertRecord]:
        """The protection certificate, which must be one this CA issued and has not revoked,
        nor suspended unless ``suspended_ok`` (an rr: a hold repeated or made final)."""
        signer = verify_protection(ctx.request.message, trusted_signers=[self._ca_cert], extra_certs=self._chain[1:])
        if signer is None:  # pragma: no cover - a MAC never reaches here
            raise CMPError("badMessageCheck", "The CMP request is not signed.")
        rec = self.ca.inventory.get_certificate(signer.serial_number)
        if rec is None or rec.der != signer.public_bytes(serialization.Encoding.DER):
            raise CMPError("signerNotTrusted", "The protection certificate is not one this CA issued.")
        ctx.fields["signer_serial"] = format(rec.serial, "x")
        if rec.status is CertStatus.REVOKED:
            raise CMPError("certRevoked", f"The protection certificate {rec.serial:x} is revoked.")
        if rec.status is CertStatus.SUSPENDED and not suspended_ok:
            # On hold it is revoked for every relying party (RFC 5280 certificateHold): it
            # vouches for nothing until the CA restores it.
            raise CMPError(
                "certRevoked", f"The protection certificate {rec.serial:x} is suspended; only the CA can restore it."
            )
        ctx.signer = rec.serial
        return signer, rec

    # -- a transactionID seen before -----------------------------------------------------------
    def _repeat(self, ctx: _Context, tx: CMPTransaction) -> bytes:
        """A request whose transactionID is known.

        A client that lost the answer, or died after it (our enroller derives the
        transactionID from its journal, so a resumed enrollment repeats it), sends the same
        request again. If it is the same kind, authenticated the same way (the MAC with the
        code of the transaction's registration, or a signature by the transaction's signer),
        and asks for the same public key, it gets the certificate already issued in the
        transaction: nothing is issued and no code is used a second time. If nothing was issued
        yet (the server died or failed before), the transaction continues where it stopped; the
        registration's reservation and the CA's request ID make that safe. Anything else with
        a known transactionID is refused with transactionIdInUse and changes nothing.
        """
        req = ctx.request
        in_use = CMPError("transactionIdInUse", "This transactionID was used before; start over with a new one.")
        if req.body_type == "rr" and tx.kind is TransactionKind.RR and tx.state is not TransactionState.REJECTED:
            # A revocation repeated (the answer was lost, or the database failed half-way):
            # revoke again if need be. Once revoked, the signer's certificate is, and the
            # repeat is refused with certRevoked, which the client takes as done.
            return self._revoke(ctx, repeat_of=tx)
        if (
            req.body_type not in _REPEATABLE
            or tx.kind.value != req.body_type
            or tx.state is TransactionState.REJECTED
            or tx.pbm != _is_mac(req)
        ):
            raise in_use
        auth: tuple[x509.Certificate, CertRecord] | None = None
        if tx.pbm:
            ref = _ref(req)
            if tx.ref is None or ref != tx.ref:
                raise in_use
            ctx.ref = ctx.fields["ref"] = ref
        else:
            auth = self._authenticate_signature(ctx)
            if tx.signer is None or auth[1].serial != tx.signer:
                raise in_use
        rec = self._issued_in(tx.transaction_id, tx.serial)
        if rec is None:
            ctx.fields["resumed"] = True
            if tx.pbm:
                return self._enroll_registered(ctx, resumed=True)
            assert auth is not None
            if req.body_type == "kur":
                return self._update(ctx, auth, resumed=True)
            return self._reenroll(ctx, auth, resumed=True)
        if tx.pbm:
            assert ctx.ref is not None
            self._verify_mac(ctx, ctx.ref)
        cert = x509.load_der_x509_certificate(rec.der)
        if req.public_key is None or not same_public_key(req.public_key, cert.public_key()):
            raise in_use
        _check_pop(req)
        ctx.fields["serial"] = format(rec.serial, "x")
        if rec.status is CertStatus.REVOKED:
            raise CMPError(
                "certRevoked",
                f"The certificate {rec.serial:x} issued in this transaction was revoked; start a new request.",
            )
        if tx.pbm:
            self._consume(ctx, rec)  # a no-op unless the server died between issuing and consuming
        ctx.fields["repeated"] = True
        return self._answer_issued(ctx, Issued(cert, rec, self._chain))

    def _issued_in(self, tid: bytes, serial: int | None) -> CertRecord | None:
        """The certificate issued in transaction ``tid``: by the serial recorded on it, else by the
        request ID the CA recorded it under (the server may have died before noting the serial)."""
        if serial is not None:
            return self.ca.inventory.get_certificate(serial)
        return self.ca.inventory.find_by_request(tid.hex())

    # -- enrollment --------------------------------------------------------------------------
    def _enroll_registered(self, ctx: _Context, *, resumed: bool = False) -> bytes:
        """ir/cr/p10cr with a registration code: check, reserve, issue, consume, answer.

        The registration is reserved for this transactionID before anything is issued, so a
        server dying between issuing and consuming leaves the code usable by this transaction's
        retry only; the certificate is then found by its request ID instead of made again.
        """
        req = ctx.request
        reg = self._authenticate_mac(ctx)
        assert ctx.ref is not None and ctx.secret is not None
        try:
            _check_pop(req)
            with _template_refusals():
                subject, san = registered_request(reg, req.subject, req.sans)
            public_key = self._checked_key(ctx, reg.profile, subject, san)
            identity = self._identity(ctx, reg)
        except CMPError:
            self._give_up(ctx)  # a definite refusal
            raise
        try:
            self.ra.reserve(ctx.ref, _tid(req))
        except RequestRejected as e:
            raise CMPError("notAuthorized", e.message) from None
        self._on_step("after-reserve")
        issued = self._issue(
            ctx, reg.profile, subject, san, public_key, replaces=None, kind=_kind(req), resumed=resumed,
            identity=identity, real_name=reg.real_name, reissue_of=reg.reissue_of,
        )  # fmt: skip
        self._on_step("after-issue")
        self._consume(ctx, issued.record)
        self._on_step("after-consume")
        return self._answer_issued(ctx, issued)

    def _identity(self, ctx: _Context, reg: Registration) -> IdentityProof | None:
        """The holder's registration number and R, if the request carries them (encrypted for
        the code in generalInfo), checked against the registration's keyed hash. A missing,
        wrong or unreadable number counts toward the registration's lock, as a wrong code does.
        Neither value outlives this request."""
        assert ctx.secret is not None
        sealed = [der for oid, der in ctx.request.header.general_info if oid == ID_IT_IDENTITY]
        if len(sealed) > 1:
            raise CMPError("badRequest", "The request carries more than one identity.")
        number: IdNumber | None = None
        random = b""
        if sealed:
            content = open_with_password(sealed[0], ctx.secret)  # CMPError if it does not open
            try:
                idn, random = identity_from_content(content)
            except UsageError:
                ctx.fields["identity"] = "malformed"
            else:
                number = IdNumber(idn)
        try:
            self.ra.check_id_number(reg, number if number is not None or not sealed else IdNumber(""))
        except (PinError, RequestRejected) as e:
            ctx.fields["identity"] = "wrong" if isinstance(e, PinError) else "missing"
            raise CMPError("notAuthorized", e.message) from None
        if number is None:
            return None
        ctx.fields["identity"] = "checked"
        return IdentityProof(number, random)

    def _consume(self, ctx: _Context, rec: CertRecord) -> None:
        """Mark the registration used by ``rec``; idempotent for the same certificate."""
        assert ctx.ref is not None
        tid = _tid(ctx.request)
        try:
            self.ra.consume(ctx.ref, rec.serial, tid=tid)
        except RequestRejected as e:
            # The registration was cancelled or locked after it was reserved (or, against every
            # constraint, used by someone else): the certificate must not stand.
            self.ca.revoke(rec.serial, RevocationReason.PRIVILEGE_WITHDRAWN)
            self.ca.inventory.transaction_update(tid, state=TransactionState.REJECTED)
            raise CMPError("notAuthorized", e.message) from None

    def _reenroll(
        self, ctx: _Context, auth: tuple[x509.Certificate, CertRecord], *, resumed: bool = False
    ) -> bytes:
        req = ctx.request
        signer, rec = auth
        try:
            _check_pop(req)
            with _template_refusals():
                subject = same_subject(signer.subject, req.subject, "the protection certificate")
                san = allowed_sans(without_identify_data(sans_of(signer)), req.sans, "the protection certificate")
            public_key = self._checked_key(ctx, rec.profile, subject, san)
        except CMPError:
            self._give_up(ctx)  # a definite refusal
            raise
        issued = self._issue(ctx, rec.profile, subject, san, public_key, replaces=None, kind=TransactionKind.CR, resumed=resumed)
        return self._answer_issued(ctx, issued)

    def _update(self, ctx: _Context, auth: tuple[x509.Certificate, CertRecord], *, resumed: bool = False) -> bytes:
        req = ctx.request
        signer, rec = auth
        try:
            if req.old_cert_id is not None:
                issuer, serial = req.old_cert_id
                if issuer != self._ca_cert.subject or serial != signer.serial_number:
                    raise CMPError("badCertId", "oldCertID does not name the certificate that signed the request.")
            _check_pop(req)
            with _template_refusals():
                subject = same_subject(signer.subject, req.subject, "the certificate being updated")
                san = allowed_sans(without_identify_data(sans_of(signer)), req.sans, "the certificate being updated")
            public_key = self._checked_key(ctx, rec.profile, subject, san)
        except CMPError:
            self._give_up(ctx)  # a definite refusal
            raise
        issued = self._issue(
            ctx, rec.profile, subject, san, public_key, replaces=rec.serial, kind=TransactionKind.KUR, resumed=resumed
        )
        return self._answer_issued(ctx, issued)

    def _checked_key(self, ctx: _Context, profile: str, subject: x509.Name, san: list[x509.GeneralName]) -> Any:
        """The requested public key, if the profile allows it with this subject and these SANs.

        Checked before the transaction starts (or the registration is reserved), so a refused
        request leaves no trace.
        """
        public_key = ctx.request.public_key
        if public_key is None:
            raise CMPError("badCertTemplate", "The certificate template has no public key.")
        try:
            check_request(self.ca.profile(profile), subject=subject, san=san, public_key=public_key)
        except RequestRejected as e:
            raise CMPError("badCertTemplate", e.message) from None
        return public_key

    def _issue(
        self,
        ctx: _Context,
        profile: str,
        subject: x509.Name,
        san: list[x509.GeneralName],
        public_key: Any,
        *,
        replaces: int | None,
        kind: TransactionKind,
        resumed: bool,
        identity: IdentityProof | None = None,
        real_name: str | None = None,
        reissue_of: int | None = None,
    ) -> Issued:
        req = ctx.request
        tid = _tid(req)
        if resumed:
            assert req.sender_nonce is not None  # parse_request checked it
            self.ca.inventory.transaction_update(tid, sender_nonce=req.sender_nonce)
        else:
            self._begin(req, kind, ctx)
        try:
            with self._signing_key() as key:
                issued = self.ca.issue(
                    public_key, profile, subject=subject, san=san, pin=self._pin, request_id=tid.hex(),
                    replaces=replaces, ca_key=key, identity=identity, real_name=real_name, reissue_of=reissue_of,
                )  # fmt: skip
        except RequestRejected:
            # A definite refusal: close the transaction and let the code go. Anything else (the
            # token or the database failing, the process dying) leaves both as they are, so the
            # same transactionID can try again and nothing can be issued twice.
            self._give_up(ctx)
            raise
        if not same_public_key(issued.certificate.public_key(), public_key):
            # Two requests with this transactionID for different keys raced; the other won.
            raise CMPError("transactionIdInUse", "This transactionID was used before; start over with a new one.")
        ctx.fields["serial"] = format(issued.record.serial, "x")
        return issued

    def _give_up(self, ctx: _Context) -> None:
        """After a definite refusal: the transaction (if it began) is rejected and the
        registration's reservation (if this transaction holds it) released, unless a
        certificate was issued in it after all (then both stay, for its retry)."""
        tid = _tid(ctx.request)
        if self.ca.inventory.find_by_request(tid.hex()) is not None:
            return
        if self.ca.inventory.transaction_get(tid) is not None:
            self.ca.inventory.transaction_update(tid, state=TransactionState.REJECTED)
        if ctx.ref is not None and ctx.secret is not None:
            self.ra.release(ctx.ref, tid)

    def _answer_issued(self, ctx: _Context, issued: Issued) -> bytes:
        req = ctx.request
        build = {"ir": build_ip, "cr": build_cp, "p10cr": build_cp, "kur": build_kup}[req.body_type]
        msg = build(
            req,
            issued.certificate,
            self._chain,
            cert_req_id=req.cert_req_id if req.cert_req_id is not None else 0,
            sender=self._sender,
            implicit_confirm=req.implicit_confirm,
        )
        der, nonce = self._protect_with_nonce(ctx, msg)
        done = req.implicit_confirm
        self.ca.inventory.transaction_update(
            _tid(req),
            state=TransactionState.DONE if done else TransactionState.WAITING_CONFIRM,
            sender_nonce=req.sender_nonce,
            our_nonce=nonce,
            serial=issued.record.serial,
        )
        return der

    def _begin(self, req: CMPRequest, kind: TransactionKind, ctx: _Context) -> None:
        assert req.sender_nonce is not None  # parse_request checked it
        try:
            self.ca.inventory.transaction_begin(
                _tid(req), kind, ctx.ref, req.sender_nonce, os.urandom(16), ctx.secret is not None, signer=ctx.signer
            )
        except DuplicateTransaction:
            raise CMPError(
                "transactionIdInUse", "This transactionID was used before; start over with a new one."
            ) from None

    # -- revocation --------------------------------------------------------------------------
    def _revoke(self, ctx: _Context, repeat_of: CMPTransaction | None = None) -> bytes:
        req = ctx.request
        signer, rec = self._authenticate_signature(ctx, suspended_ok=True)
        if repeat_of is not None and repeat_of.signer != rec.serial:
            raise CMPError("transactionIdInUse", "This transactionID was used before; start over with a new one.")
        if len(req.revocations) != 1:
            raise CMPError("badRequest", "Revoke exactly one certificate per request.")
        target = req.revocations[0]
        if target.issuer != self._ca_cert.subject or target.serial != signer.serial_number:
            raise CMPError("notAuthorized", "A certificate can only be revoked with a request signed by its own key.")
        if target.reason is x509.ReasonFlags.remove_from_crl:
            raise CMPError("notAuthorized", "Only the CA can restore a suspended certificate; ask the CA operator.")
        reason = reason_from_flag(target.reason or x509.ReasonFlags.unspecified)
        if reason is None or reason in _NOT_FROM_HOLDER:
            raise CMPError("badRequest", "That revocation reason cannot be requested by the certificate holder.")
        if repeat_of is None:
            self._begin(req, TransactionKind.RR, ctx)
        revoked = self.ca.revoke(rec.serial, reason)  # certificateHold: suspended, not revoked
        ctx.fields["serial"] = format(rec.serial, "x")
        if revoked[0].status is CertStatus.SUSPENDED:
            ctx.fields["suspended"] = True
        if len(revoked) > 1:
            # keyCompromise: the key's other certificates went too (each has its audit entry).
            ctx.fields["same_key_revoked"] = [format(r.serial, "x") for r in revoked[1:]]
        msg = build_rp(req, [StatusInfo("accepted")], sender=self._sender)
        der, nonce = self._protect_with_nonce(ctx, msg)
        self.ca.inventory.transaction_update(_tid(req), state=TransactionState.DONE, our_nonce=nonce)
        return der

    # -- confirmation ------------------------------------------------------------------------
    def _cert_conf(self, ctx: _Context) -> bytes:
        req = ctx.request
        tid = _tid(req)
        tx = self.ca.inventory.transaction_get(tid)
        if tx is None or tx.serial is None:
            raise CMPError(
                "badRequest", "No certificate was issued in this transaction; certConf has nothing to confirm."
            )
        if tx.ref is not None:
            ctx.fields["ref"] = tx.ref
        if tx.state is TransactionState.DONE:
            raise CMPError("certConfirmed", "The certificate of this transaction was already confirmed.")
        if tx.state is not TransactionState.WAITING_CONFIRM:
            raise CMPError("badRequest", "This transaction is closed.")
        if req.recip_nonce != tx.our_nonce:
            raise CMPError("badRecipientNonce", "recipNonce is not the senderNonce of the CA's last message.")
        rec = self.ca.inventory.get_certificate(tx.serial)
        if rec is None:  # pragma: no cover - recorded in the same transaction
            raise CMPError("systemFailure", "The issued certificate is missing from the inventory.")
        cert = x509.load_der_x509_certificate(rec.der)
        if tx.pbm:
            if not _is_mac(req) or tx.ref is None:
                raise CMPError("wrongIntegrity", "Protect certConf like the request: with the registration code.")
            ctx.ref = tx.ref
            secret = _shared(self.ra.code_for(tx.ref))
            try:
                verify_protection(req.message, secret=secret)
            except CMPError as e:
                if e.failure_info == "badMessageCheck":
                    raise _unauthenticated() from None
                raise
            ctx.secret = secret
        else:
            if _is_mac(req):
                raise CMPError("wrongIntegrity", "Sign certConf like the request.")
            signer, _ = self._authenticate_signature(ctx)
            if signer.subject != cert.subject:
                raise CMPError("notAuthorized", "certConf must be signed by the holder of the certificate.")
        if len(req.confirmations) != 1:
            raise CMPError("badRequest", "certConf must confirm exactly the one certificate issued.")
        confirmation = req.confirmations[0]
        verify_cert_hash(confirmation, cert)
        ctx.fields["serial"] = format(rec.serial, "x")
        msg = build_pkiconf(req, sender=self._sender)
        der, nonce = self._protect_with_nonce(ctx, msg)
        if confirmation.accepted:
            state = TransactionState.DONE
        else:
            # RFC 4210 §5.3.18: the CA may revoke a certificate its requester did not accept.
            self.ca.revoke(rec.serial, RevocationReason.CESSATION_OF_OPERATION)
            ctx.fields["rejected_by_client"] = True
            state = TransactionState.REJECTED
        self.ca.inventory.transaction_update(tid, state=state, sender_nonce=req.sender_nonce, our_nonce=nonce)
        return der

    # -- general messages --------------------------------------------------------------------
    def _genm(self, ctx: _Context) -> bytes:
        req = ctx.request
        if _is_mac(req):
            self._authenticate_mac(ctx)
        elif req.protection_alg is not None:
            self._authenticate_signature(ctx)
        wants_ca_certs = ID_IT_CA_CERTS in req.info_types
        wants_root_update = ID_IT_ROOT_CA_CERT in req.info_types
        if not (wants_ca_certs or wants_root_update):
            raise CMPError("badRequest", "This CA answers genm for id-it-caCerts and id-it-rootCaCert only.")
        msg = build_genp(
            req,
            ca_certs=self._chain if wants_ca_certs else None,
            answer_root_ca_update=wants_root_update,  # one root, never rolled over: "no update"
            sender=self._sender,
        )
        return self._protect(ctx, msg)

    # -- protection --------------------------------------------------------------------------
    @property
    def _sender(self) -> x509.Name:
        return self._ca_cert.subject

    @contextmanager
    def _signing_key(self) -> Iterator[Any]:
        if self._ca_key is not None:
            yield self._ca_key
            return
        with self.ca.signing_key(self._pin) as key:
            yield key

    def _protect(self, ctx: _Context, msg: Any) -> bytes:
        return self._protect_with_nonce(ctx, msg)[0]

    def _protect_with_nonce(self, ctx: _Context, msg: Any) -> tuple[bytes, bytes]:
        """The DER of ``msg`` protected like the request authenticated, and its senderNonce."""
        if ctx.secret is not None and ctx.ref is not None:
            # The answer's MAC uses the request's iteration count (500 from OpenSSL, 10,000 from
            # tokenissue): an eavesdropper guessing the code offline already has the request, so
            # more iterations in the answer protect nothing and cost ~5 ms per certificate.
            iterations = mac_iterations(ctx.request.message) or _PBM_ITERATIONS
            protected = protect_pbm(msg, ctx.secret, sender_kid=ctx.ref.encode("ascii"), iterations=iterations)
        else:
            with self._signing_key() as key:
                protected = protect_signature(msg, key, self._ca_cert, self._chain[1:])
        nonce = parse_header(protected["header"]).sender_nonce
        assert nonce is not None  # every response builder sets one
        return encode_message(protected), nonce


# -- helpers -----------------------------------------------------------------------------------


def _shared(code: Secret) -> SharedSecret:
    """A registration code as the MAC's shared secret: its UTF-8 octets, as OpenSSL's ``-secret pass:``."""
    return SharedSecret.from_text(code.reveal())


def _tid(req: CMPRequest) -> bytes:
    assert req.transaction_id is not None  # parse_request requires it
    return req.transaction_id


def _kind(req: CMPRequest) -> TransactionKind:
    return TransactionKind(req.body_type)


def _is_mac(req: CMPRequest) -> bool:
    return req.protection_alg in _MAC_OIDS


def _ref(req: CMPRequest) -> str:
    kid = req.sender_kid
    try:
        ref = kid.decode("ascii") if kid is not None else ""
    except UnicodeDecodeError:
        ref = ""
    if not ref.isprintable() or not 0 < len(ref) <= 32:
        raise _unauthenticated()  # the same answer as a wrong code: see _authenticate_mac
    return ref


def _check_pop(req: CMPRequest) -> None:
    if not req.pop_valid:
        verify_pop(req)  # raises badPOP with the reason


@contextmanager
def _template_refusals() -> Iterator[None]:
    """A subject or SANs the registration or old certificate does not allow: badCertTemplate."""
    try:
        yield
    except RequestRejected as e:
        raise CMPError("badCertTemplate", e.message) from None


def _failure_for(error: TokenIssueError) -> FailureInfo:
    if isinstance(error, NotFound):
        return "badCertId"
    if isinstance(error, (RequestRejected, CertificateStateRefused)):
        return "badRequest"
    return "systemUnavail"
