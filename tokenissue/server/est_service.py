"""The CA's EST policy (RFC 7030): which request is answered how.

:class:`ESTService` is synchronous, like :class:`~.cmp_service.CMPService`; the ASGI app runs it
in a worker thread and passes it what TLS and HTTP said (the client certificate, the
Authorization header). Every answer is ``(HTTP status, body, headers)``; a refusal is an HTTP
error status with one sentence as text/plain, which is EST's error form (§4.2.3).

===================  ==========================================================================
cacerts              The CA certificate and its issuers, a certs-only CMS SignedData (§4.1.3).
simpleenroll         A PKCS#10 request authorized by a registration: HTTP Basic with the
                     reference as user and the authorization code as password (§3.2.3). The
                     certificate gets the **registered** subject, SANs and profile; a CSR
                     subject must be empty or the same. The registration is reserved, then
                     consumed, as over CMP; a wrong code counts toward the lock, and an unknown
                     reference and a wrong code get the same 401, so references cannot be probed.
                     A re-issue registration (``ra register --reissue-of``) supersedes the old
                     certificate as over CMP.
simplereenroll       Authorized by the TLS client certificate being renewed (§3.3.2): one this CA
                     issued, valid and unrevoked. The CSR's subject and SANs must be the
                     certificate's (§4.2.2); the key may be the same or new. The new certificate
                     keeps the profile and records ``replaces``.
csrattrs             204: nothing is asked of the CSR beyond what the profile checks (§4.5.2).
===================  ==========================================================================

Idempotency: the request ID of an issuance is the SHA-256 of the CSR, so a client that lost
the answer and sends the same CSR again gets the same certificate (a re-enrollment), or, while
the registration is still reserved for that CSR, finishes it. Profiles that bind the holder's
registration number (Korean VID) are refused for simpleenroll: EST has no confidential place
for it; CMP does.
"""

from __future__ import annotations

import base64
import binascii
import logging
import threading
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs7

from ..ca.authority import CertificateAuthority, Issued
from ..ca.registration import RegistrationAuthority
from ..credentials import Pin, ProtectedAuth
from ..errors import CAError, RequestRejected, TokenError
from ..inventory import InventoryUnavailable
from ..pkix.csr import verify_csr
from ._registered import (
    WRONG_CODE,
    Refusal,
    Requested,
    check_code,
    csr_subject,
    issue_registered,
    renewable,
    renewal_names,
    renewal_request_id,
)

__all__ = ["ESTReply", "ESTService"]

log = logging.getLogger(__name__)

ESTReply = tuple[int, bytes, dict[str, str]]
PKCS7_TYPE = "application/pkcs7-mime"
REALM = 'Basic realm="tokenissue EST", charset="UTF-8"'
_CERTS_ONLY = {"Content-Type": f"{PKCS7_TYPE}; smime-type=certs-only", "Content-Transfer-Encoding": "base64"}


class _Refused(Exception):
    def __init__(self, status: int, text: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(text)
        self.status, self.text, self.headers = status, text, headers or {}


def _unauthenticated() -> _Refused:
    return _Refused(401, WRONG_CODE, {"WWW-Authenticate": REALM})


def _base64_body(body: bytes) -> bytes:
    """The DER inside an EST body: base64 (§4.2.1), whitespace and line breaks allowed."""
    try:
        return base64.b64decode(b"".join(body.split()), validate=True)
    except (binascii.Error, ValueError):
        raise _Refused(400, "The body is not base64; send the DER PKCS#10 request base64-encoded.") from None


def _certs_only(certs: list[x509.Certificate]) -> bytes:
    der = pkcs7.serialize_certificates(certs, serialization.Encoding.DER)
    return base64.encodebytes(der)


class ESTService:
    """Answers EST requests for one CA; thread-safe (requests are serialised, as CMP's are)."""

    def __init__(
        self, ca: CertificateAuthority, ra: RegistrationAuthority, ca_pin: Pin | ProtectedAuth | None, *, ca_key: Any = None
    ) -> None:
        self.ca = ca
        self.ra = ra
        self._pin = ca_pin
        self._ca_key = ca_key
        self._lock = threading.Lock()

    # -- entry points (never raise) ------------------------------------------------------------
    def cacerts(self) -> ESTReply:
        return 200, _certs_only(self.ca.chain()), dict(_CERTS_ONLY)

    def simpleenroll(self, body: bytes, authorization: str | None, fields: dict[str, Any]) -> ESTReply:
        return self._guarded(fields, lambda: self._enroll(body, authorization, fields))

    def simplereenroll(self, body: bytes, client_cert: bytes | None, fields: dict[str, Any]) -> ESTReply:
        return self._guarded(fields, lambda: self._reenroll(body, client_cert, fields))

    def _guarded(self, fields: dict[str, Any], work: Any) -> ESTReply:
        try:
            with self._lock:
                issued: Issued = work()
        except _Refused as e:
            fields["est_error"] = e.status
            return e.status, (e.text + "\n").encode(), {"Content-Type": "text/plain; charset=utf-8", **e.headers}
        except CAError as e:
            fields["est_error"] = 400
            return 400, (e.message + "\n").encode(), {"Content-Type": "text/plain; charset=utf-8"}
        except TokenError:
            # The CA's token is out of reach (pulled out, session lost); a reservation made stays,
            # so the same request sent again finishes.
            log.warning("EST request deferred: the CA token is unavailable", exc_info=True)
            fields["est_error"] = 503
            return 503, b"The CA cannot use its key right now; send the same request again later.\n", {
                "Content-Type": "text/plain; charset=utf-8", "Retry-After": "2"}  # fmt: skip
        except InventoryUnavailable:
            fields["est_error"] = 503
            return 503, b"The CA cannot reach its database; send the same request again later.\n", {
                "Content-Type": "text/plain; charset=utf-8", "Retry-After": "2"}  # fmt: skip
        except Exception:  # the catch-all that keeps details off the wire
            log.exception("EST request failed inside the CA")
            fields["est_error"] = 500
            return 500, b"The CA failed to answer; the operator can see why in its log.\n", {
                "Content-Type": "text/plain; charset=utf-8"}  # fmt: skip
        fields["serial"] = format(issued.record.serial, "x")
        return 200, _certs_only([issued.certificate]), dict(_CERTS_ONLY)

    # -- simpleenroll ------------------------------------------------------------------------
    def _enroll(self, body: bytes, authorization: str | None, fields: dict[str, Any]) -> Issued:
        ref, typed = self._basic(authorization)
        fields["ref"] = ref
        csr = self._csr(body)
        try:
            check_code(self.ra, ref, typed, fields)
            return issue_registered(self.ca, self.ra, ref, Requested.of_csr(csr), protocol="EST",
                                    tid_label="simpleenroll", sign=self._sign_new)  # fmt: skip
        except Refusal as e:
            if e.kind == "unauthenticated":
                raise _unauthenticated() from None
            raise _Refused(403 if e.kind == "forbidden" else 400, e.text) from None

    def _sign_new(self, public_key: Any, profile: str, subject: x509.Name, san: list[x509.GeneralName],
                  **kwargs: Any) -> Issued:  # fmt: skip
        return self._sign(public_key, profile, subject, san, replaces=None, **kwargs)

    @staticmethod
    def _basic(authorization: str | None) -> tuple[str, str]:
        if not authorization or not authorization.lower().startswith("basic "):
            raise _Refused(401, "Give the registration's reference and authorization code (HTTP Basic).",
                           {"WWW-Authenticate": REALM})  # fmt: skip
        try:
            user, sep, password = base64.b64decode(authorization[6:].strip(), validate=True).decode().partition(":")
        except (binascii.Error, ValueError, UnicodeDecodeError):
            raise _unauthenticated() from None
        if not sep or not user:
            raise _unauthenticated()
        return user.strip(), password

    # -- simplereenroll ------------------------------------------------------------------------
    def _reenroll(self, body: bytes, client_cert: bytes | None, fields: dict[str, Any]) -> Issued:
        if client_cert is None:
            raise _Refused(403, "Re-enrollment is authorized by the certificate being renewed: present it as the "
                                "TLS client certificate.")  # fmt: skip
        csr_body = body
        try:
            rec = renewable(self.ca, client_cert, fields)
            csr = self._csr(csr_body)
            subject, san = renewal_names(x509.load_der_x509_certificate(client_cert), csr, csr_subject(csr))
        except Refusal as e:
            raise _Refused(403 if e.kind == "forbidden" else 400, e.text) from None
        # Per renewed certificate and CSR: renewing the next certificate with the same CSR is a new request.
        request_id = renewal_request_id("est", "simplereenroll", rec.serial, csr)
        return self._sign(csr.public_key(), rec.profile, subject, san, request_id=request_id, replaces=rec.serial)

    # -- shared ------------------------------------------------------------------------------
    @staticmethod
    def _csr(body: bytes) -> x509.CertificateSigningRequest:
        der = _base64_body(body)
        try:
            csr = x509.load_der_x509_csr(der)
        except ValueError:
            raise _Refused(400, "The body is not a DER PKCS#10 certificate request.") from None
        try:
            verify_csr(csr)
        except CAError as e:
            raise _Refused(400, e.message) from None
        return csr

    @staticmethod
    def _checked(check: Any) -> Any:
        try:
            return check()
        except RequestRejected as e:
            raise _Refused(400, e.message) from None
        except (ValueError, x509.DuplicateExtension):
            raise _Refused(400, "The request's extensions cannot be read; make a new request.") from None

    def _sign(
        self, public_key: Any, profile: str, subject: x509.Name, san: list[x509.GeneralName], *,
        request_id: str, replaces: int | None, real_name: str | None = None, reissue_of: int | None = None,
    ) -> Issued:  # fmt: skip
        return self.ca.issue(
            public_key, profile, subject=subject, san=san, pin=self._pin, request_id=request_id,
            replaces=replaces, ca_key=self._ca_key, real_name=real_name, reissue_of=reissue_of,
        )  # fmt: skip
