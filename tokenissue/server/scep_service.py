"""The CA's SCEP policy (RFC 8894): which request is answered how.

===================  ==========================================================================
GetCACaps            POSTPKIOperation, SHA-256, SHA-512, AES, Renewal, SCEPStandard (§3.5.2).
GetCACert            The RA certificate and the CA's chain, a certs-only SignedData,
                     application/x-x509-ca-ra-cert (§4.2.1.2).
PKCSReq              Authorized by a registration: the CSR's challengePassword is
                     ``REFERENCE:CODE``. The certificate gets the **registered** subject, SANs
                     and profile, as over EST; the registration is used once, and a wrong code
                     counts toward its lock. The request must be signed by a self-signed
                     certificate for the CSR's own key (§2.3).
RenewalReq           Signed with the certificate being renewed and its key (§3.3.1.2): one this
                     CA issued, valid and unexpired; same subject and SANs, key new or the same.
                     A PKCSReq signed so is a renewal too (certmonger renews that way).
                     A profile with ``approval`` answers PENDING and queues the request for an
                     officer (``ca approve`` / ``ca reject``); the registration stays reserved.
CertPoll             The queued request of this transactionID, signed by the same certificate:
                     PENDING, the certificate once approved (issued at that poll), or FAILURE
                     once rejected. A PKCSReq sent again is the same as a poll.
GetCert, GetCRL      FAILURE badRequest: certificates and CRLs are at /ca.pem and /crl.pem.
===================  ==========================================================================

Every CertRep is signed by the RA's key (on a token) and a SUCCESS is encrypted, with the
request's own content cipher, to the requester's certificate. A request this CA cannot answer
with a CertRep at all (unreadable, no transactionID) gets HTTP 400 and a sentence.

Single DES is accepted only when ca.toml says ``scep_single_des = true``.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from ..ca import delegated
from ..ca.approvals import TID_LABELS, reservation_id
from ..ca.authority import CertificateAuthority, Issued
from ..ca.registration import RegistrationAuthority
from ..ca.scep import RA_SERVICE, ra_certificate
from ..credentials import Pin, ProtectedAuth
from ..errors import CAError, TokenError
from ..inventory import InventoryUnavailable
from ..models import PendingRequest, PendingStatus, RegistrationStatus
from ..pkix.csr import verify_csr
from ..pkix.names import format_san, parse_san
from ..protocols import scep
from ..protocols.scep import FailInfo, MessageType, PKIStatus, SCEPFailure, SCEPMalformed, SCEPRequest
from ..publickeys import same_public_key, spki_der
from ._registered import (
    AwaitingApproval,
    Refusal,
    Requested,
    check_code,
    csr_subject,
    issue_registered,
    renewable,
    renewal_names,
    renewal_request_id,
)

__all__ = ["CA_CAPS", "SCEPReply", "SCEPService"]

log = logging.getLogger(__name__)

SCEPReply = tuple[int, bytes, dict[str, str]]
CA_CAPS = ("POSTPKIOperation", "SHA-256", "SHA-512", "AES", "Renewal", "SCEPStandard")
PKI_MESSAGE_TYPE = "application/x-pki-message"
_TEXT = {"Content-Type": "text/plain; charset=utf-8"}
_CHALLENGE_OID = x509.ObjectIdentifier("1.2.840.113549.1.9.7")


class SCEPService:
    """Answers SCEP requests for one CA; thread-safe (requests are serialised, as CMP's are).

    The RA's key is opened (logged in once) when the service is made and kept until
    :meth:`close`; without an RA certificate every operation but GetCACaps answers 503 with a
    sentence, and the server keeps serving its other protocols.
    """

    def __init__(
        self, ca: CertificateAuthority, ra: RegistrationAuthority, ca_pin: Pin | ProtectedAuth | None, *,
        ca_key: Any = None, ra_pin: Pin | ProtectedAuth | None = None,
    ) -> None:  # fmt: skip
        self.ca = ca
        self.ra = ra
        self._pin = ca_pin
        self._ca_key = ca_key
        self._lock = threading.Lock()
        self._stack = ExitStack()
        self.ra_cert = ra_certificate(ca.dir)
        self._ra_key: Any = None
        self._decryptor: Any = None
        opened = self._stack.enter_context(delegated.open_key(ca, RA_SERVICE, ca_pin, ra_pin))
        if opened is not None and self.ra_cert is not None:
            session, selector = opened
            self._ra_key = session.private_key(selector)
            self._decryptor = session.decryptor(selector)
        ciphers = {"aes128", "aes192", "aes256", "des3"}
        if ca.config.scep_single_des:
            ciphers.add("des")
        self._ciphers = frozenset(ciphers)

    def close(self) -> None:
        self._stack.close()

    @property
    def ready(self) -> bool:
        return self._ra_key is not None

    # -- GET operations ------------------------------------------------------------------------
    def get_ca_caps(self) -> SCEPReply:
        return 200, ("\n".join(CA_CAPS) + "\n").encode(), {"Content-Type": "text/plain"}

    def get_ca_cert(self) -> SCEPReply:
        if not self.ready or self.ra_cert is None:
            return self._not_ready()
        der = scep.degenerate_certificates([self.ra_cert, *self.ca.chain()])
        return 200, der, {"Content-Type": "application/x-x509-ca-ra-cert"}

    def _not_ready(self) -> SCEPReply:
        return 503, b"This CA has no SCEP RA certificate yet; its operator must make one first.\n", dict(_TEXT)

    # -- PKIOperation --------------------------------------------------------------------------
    def pki_operation(self, der: bytes, fields: dict[str, Any]) -> SCEPReply:
        if not self.ready or self.ra_cert is None:
            return self._not_ready()
        try:
            with self._lock:
                return self._operation(der, fields)
        except SCEPMalformed as e:
            fields["scep_error"] = "malformed"
            return 400, (str(e) + "\n").encode(), dict(_TEXT)
        except TokenError:
            log.warning("SCEP request deferred: a token is unavailable", exc_info=True)
            fields["scep_error"] = "token"
            return 503, b"The CA cannot use its keys right now; send the same request again later.\n", {
                **_TEXT, "Retry-After": "2"}  # fmt: skip
        except InventoryUnavailable:
            fields["scep_error"] = "database"
            return 503, b"The CA cannot reach its database; send the same request again later.\n", {
                **_TEXT, "Retry-After": "2"}  # fmt: skip
        except Exception:  # the catch-all that keeps details off the wire
            log.exception("SCEP request failed inside the CA")
            fields["scep_error"] = "internal"
            return 500, b"The CA failed to answer; the operator can see why in its log.\n", dict(_TEXT)

    def _operation(self, der: bytes, fields: dict[str, Any]) -> SCEPReply:
        assert self.ra_cert is not None
        try:
            request = scep.parse_request(der, ra_cert=self.ra_cert, decrypt=self._decryptor.decrypt, ciphers=self._ciphers)
        except SCEPFailure as e:
            partial = e.request  # type: ignore[attr-defined]
            fields.update(scep="?", scep_fail=e.fail_info.name.lower(), scep_text=e.text)
            return self._reply(self._failure(partial.transaction_id, partial.sender_nonce, partial.digest, e))
        fields["scep"] = request.message_type.name.lower()
        fields["tid"] = request.transaction_id[:64]
        try:
            issued = self._answer(request, fields)
        except _Pending:
            fields["scep_status"] = "pending"
            return self._reply(scep.cert_rep(
                self._ra_key, self.ra_cert, transaction_id=request.transaction_id, recipient_nonce=request.sender_nonce,
                status=PKIStatus.PENDING, digest=request.digest))  # fmt: skip
        except SCEPFailure as e:
            fields.update(scep_fail=e.fail_info.name.lower(), scep_text=e.text)
            return self._reply(self._failure(request.transaction_id, request.sender_nonce, request.digest, e))
        except CAError as e:
            failure = SCEPFailure(FailInfo.BAD_REQUEST, e.message)
            fields.update(scep_fail="bad_request", scep_text=e.message)
            return self._reply(self._failure(request.transaction_id, request.sender_nonce, request.digest, failure))
        fields["serial"] = format(issued.serial if isinstance(issued, _FromQueue) else issued.record.serial, "x")
        recipient, cipher = request.signer, request.cipher
        if isinstance(issued, _FromQueue):
            recipient, cipher = issued.requester, issued.cipher
        body = scep.cert_rep(
            self._ra_key, self.ra_cert, transaction_id=request.transaction_id, recipient_nonce=request.sender_nonce,
            status=PKIStatus.SUCCESS, issued=[issued.certificate], recipient=recipient, cipher=cipher,
            digest=request.digest,
        )  # fmt: skip
        return self._reply(body)

    @staticmethod
    def _reply(body: bytes) -> SCEPReply:
        return 200, body, {"Content-Type": PKI_MESSAGE_TYPE}

    def _failure(self, tid: str, nonce: bytes, digest: str, e: SCEPFailure) -> bytes:
        assert self.ra_cert is not None
        return scep.cert_rep(self._ra_key, self.ra_cert, transaction_id=tid, recipient_nonce=nonce,
                             status=PKIStatus.FAILURE, fail_info=e.fail_info, fail_text=e.text, digest=digest)  # fmt: skip

    def _answer(self, request: SCEPRequest, fields: dict[str, Any]) -> Issued | _FromQueue:
        if request.message_type in (MessageType.PKCS_REQ, MessageType.CERT_POLL):
            # A CertPoll, or the PKCSReq sent again (RFC 8894 §3.3.3: the same as polling), for a
            # request of this transaction that this requester's key made and that is not done.
            queued = self._queued(request)
            if queued is not None:
                return self._poll(request, queued, fields)
        if request.message_type is MessageType.CERT_POLL:
            raise SCEPFailure(FailInfo.BAD_CERT_ID, "No request of this transaction and key waits here.")
        if request.message_type not in (MessageType.PKCS_REQ, MessageType.RENEWAL_REQ):
            raise SCEPFailure(FailInfo.BAD_REQUEST, f"{request.message_type.name} is not answered here: certificates "
                                                    "and CRLs are at /ca.pem and /crl.pem.")  # fmt: skip
        if not isinstance(request.signer.public_key(), rsa.RSAPublicKey):
            raise SCEPFailure(FailInfo.BAD_ALG, "SCEP answers are encrypted to the requester's RSA key; sign with one.")
        try:
            csr = x509.load_der_x509_csr(request.content)
            verify_csr(csr)
        except ValueError:
            raise SCEPFailure(FailInfo.BAD_REQUEST, "The message data is not a DER PKCS#10 request.") from None
        except CAError as e:
            raise SCEPFailure(FailInfo.BAD_REQUEST, e.message) from None
        try:
            renewal = request.message_type is MessageType.RENEWAL_REQ or (
                self._issued_here(request.signer) and not self._names_open_registration(csr))
            if not renewal:
                return self._enroll(request, csr, fields)
            # A RenewalReq, or a PKCSReq signed with a certificate this CA issued: certmonger
            # renews that way (RFC 8894 §3.3.1.2 allows it for CAs without Renewal), and its CSR
            # still carries the challenge it enrolled with, used up and not looked at. A
            # challenge that names an open registration (a re-issue, say) takes that path instead.
            return self._renew(request, csr, fields)
        except Refusal as e:
            raise SCEPFailure(FailInfo.BAD_REQUEST, e.text) from None

    def _queued(self, request: SCEPRequest) -> PendingRequest | None:
        """The latest queued request of this transaction made with the signer's key, if this
        message is about it: a CertPoll always; a PKCSReq when that request is not done, or when
        it is the same request (same registration and CSR) sent again. A rejected request's
        transaction may thus bring a corrected request (another CSR) with the same code."""
        key = request.signer.public_key()
        mine = [q for q in self.ca.inventory.pending_of("scep", request.transaction_id)
                if same_public_key(x509.load_der_x509_certificate(q.requester).public_key(), key)]  # fmt: skip
        if not mine:
            return None
        latest = mine[-1]
        if request.message_type is MessageType.CERT_POLL or latest.status in (PendingStatus.PENDING, PendingStatus.APPROVED):
            return latest
        try:
            csr = x509.load_der_x509_csr(request.content)
        except ValueError:
            return None
        ref = (_reference_and_code(csr) or ("", ""))[0]
        same = reservation_id(TID_LABELS["scep"], ref, csr.public_bytes(serialization.Encoding.DER)).hex()
        return latest if same == latest.reservation else None

    def _issued_here(self, cert: x509.Certificate) -> bool:
        rec = self.ca.inventory.get_certificate(cert.serial_number)
        return rec is not None and rec.der == cert.public_bytes(serialization.Encoding.DER)

    def _names_open_registration(self, csr: x509.CertificateSigningRequest) -> bool:
        given = _reference_and_code(csr)
        reg = self.ca.inventory.get_registration(given[0]) if given else None
        return reg is not None and reg.status is RegistrationStatus.OPEN

    def _enroll(self, request: SCEPRequest, csr: x509.CertificateSigningRequest, fields: dict[str, Any]) -> Issued:
        # §2.3: a PKCSReq is signed by a certificate for the requested key (self-signed, or, for
        # a re-issue, the holder's current one for the same key).
        if not same_public_key(request.signer.public_key(), csr.public_key()):
            raise SCEPFailure(FailInfo.BAD_MESSAGE_CHECK, "A PKCSReq must be signed with the key it asks a certificate for.")
        given = _reference_and_code(csr)
        if given is None:
            raise Refusal("unauthenticated", "The challenge password must be the registration's REFERENCE:CODE.")
        ref, code = given
        fields["ref"] = ref
        check_code(self.ra, ref, code, fields)
        wanted = Requested.of_csr(csr)
        try:
            return issue_registered(self.ca, self.ra, ref, wanted, protocol="SCEP", tid_label=TID_LABELS["scep"],
                                    sign=self._sign_new, can_wait=True)  # fmt: skip
        except AwaitingApproval:
            queued = self.ca.inventory.pending_add(
                "scep", request.transaction_id, ref, public_key=spki_der(wanted.public_key), sans=_sans_text(wanted.sans),
                reservation=reservation_id(TID_LABELS["scep"], ref, wanted.identity).hex(),
                requester=request.signer.public_bytes(serialization.Encoding.DER), cipher=request.cipher,
            )  # fmt: skip
            fields["pending"] = queued.id
            raise _Pending() from None

    def _poll(self, request: SCEPRequest, queued: PendingRequest, fields: dict[str, Any]) -> Issued | _FromQueue:
        fields["pending"] = queued.id
        # Answered to the requester's key as it signs now: a client that made a new self-signed
        # certificate for the same key (after a restart) can collect its certificate.
        requester = request.signer
        if queued.status is PendingStatus.PENDING:
            raise _Pending()
        if queued.status is PendingStatus.REJECTED:
            raise SCEPFailure(FailInfo.BAD_REQUEST, "An officer refused the request.")
        if queued.status is PendingStatus.ISSUED:
            assert queued.serial is not None
            rec = self.ca.inventory.get_certificate(queued.serial)
            assert rec is not None
            return _FromQueue(x509.load_der_x509_certificate(rec.der), requester, request.cipher, rec.serial)
        wanted = Requested(serialization.load_der_public_key(queued.public_key), None, _sans_from_text(queued.sans),
                           b"")  # fmt: skip
        try:
            issued = issue_registered(self.ca, self.ra, queued.ref, wanted, protocol="SCEP",
                                      tid_label=TID_LABELS["scep"], sign=self._sign_new, can_wait=True, approved=True,
                                      reservation=bytes.fromhex(queued.reservation))  # fmt: skip
        except Refusal as e:
            raise SCEPFailure(FailInfo.BAD_REQUEST, e.text) from None
        self.ca.inventory.pending_issued(queued.id, issued.record.serial)
        return _FromQueue(issued.certificate, requester, request.cipher, issued.record.serial)

    def _sign_new(self, public_key: Any, profile: str, subject: x509.Name, san: list[x509.GeneralName],
                  **kwargs: Any) -> Issued:  # fmt: skip
        return self.ca.issue(public_key, profile, subject=subject, san=san, pin=self._pin, ca_key=self._ca_key,
                             replaces=None, **kwargs)  # fmt: skip

    def _renew(self, request: SCEPRequest, csr: x509.CertificateSigningRequest, fields: dict[str, Any]) -> Issued:
        cert_der = request.signer.public_bytes(serialization.Encoding.DER)
        rec = renewable(self.ca, cert_der, fields)
        subject, san = renewal_names(request.signer, csr, csr_subject(csr))
        # Per renewed certificate and CSR: the same RenewalReq sent again gets the same certificate.
        request_id = renewal_request_id("scep", "renewalreq", rec.serial, csr)
        return self.ca.issue(csr.public_key(), rec.profile, subject=subject, san=san, pin=self._pin,
                             request_id=request_id, replaces=rec.serial, ca_key=self._ca_key)  # fmt: skip


class _Pending(Exception):
    """Answer PENDING: the request waits for an officer."""


@dataclass(frozen=True)
class _FromQueue:
    """A certificate for a queued request: encrypted to the requester of the original request."""

    certificate: x509.Certificate
    requester: x509.Certificate
    cipher: str
    serial: int


#: A registration's reference as the RA makes them (10 digits; allow some room).
_REFERENCE = re.compile(r"[0-9]{1,32}")


def _sans_text(sans: tuple[x509.GeneralName, ...]) -> bytes:
    """The SANs a queued request asked for, as the registrations keep theirs (dns:, ip:, ...)."""
    return json.dumps([format_san(n) for n in sans]).encode()


def _sans_from_text(data: bytes) -> tuple[x509.GeneralName, ...]:
    return tuple(parse_san(json.loads(data.decode()))) if data else ()


def _reference_and_code(csr: x509.CertificateSigningRequest) -> tuple[str, str] | None:
    """The challengePassword's REFERENCE and CODE, or None when it is not of that form."""
    ref, sep, code = _challenge(csr).partition(":")
    ref = ref.strip()
    return (ref, code) if sep and _REFERENCE.fullmatch(ref) else None


def _challenge(csr: x509.CertificateSigningRequest) -> str:
    try:
        value = csr.attributes.get_attribute_for_oid(_CHALLENGE_OID).value
    except x509.AttributeNotFound:
        return ""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
