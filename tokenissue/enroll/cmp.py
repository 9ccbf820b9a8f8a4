"""Enrollment over CMP (RFC 4210, Lightweight CMP profile RFC 9483) with HTTP transport (RFC 6712).

``--ca cmp+http://HOST:PORT/PATH`` or ``cmp+https://...``. What goes over the wire:

* **request** — a p10cr carrying the CSR the token signed (its self-signature is the proof of
  possession, so the enroller never needs the new key), protected by a password-based MAC
  with the reference (senderKID) and authorization code the CA handed out; then certConf.
* **renew** — a kur for the new key (its POP signed by the new key) signature-protected by the
  current certificate's key (RFC 9483 §4.1.3); then certConf.
* **revoke** — an rr signature-protected by the key of the certificate being revoked (§4.2).

The transactionID of ``request``/``renew`` is derived from the request ID (the journal ID), so
a resumed enrollment repeats it and a CA can answer a replay with the certificate it already
issued; the senderNonce is fresh for every message.

Answers must carry our transactionID and our senderNonce as recipNonce, and be protected: by
the same MAC, or by a signature from a certificate that chains to a trust anchor. Anchors are
the ``trust`` certificates (``--ca-trust``) and, for renew/revoke, the CA certificates the
current certificate verifiably chains to. The new certificate must certify the requested key
and chain to a root from ``trust``, from a protected caPubs, or from those anchors; otherwise
it is rejected in the certConf and the request fails.

Exceptions (all :class:`tokenissue.errors.CAError`, exit status 6)::

    RequestRejected        the server refused (failInfo and its text in the message), or its
                           answer does not verify / its certificate is unacceptable
    └── CMPError           refusals carry .failure_info (a PKIFailureInfo bit name); this
                           module's, not tokenissue.protocols.cmp's, which is no CAError
    CAUnavailable          cannot connect, TLS not trusted, HTTP 4xx, not a CMP answer,
                           the server reports systemUnavail/systemFailure
    └── CAOutcomeUnknown   the request may have been processed (timeout, lost connection,
                           HTTP 5xx, "waiting"): the lifecycle keeps the enrollment to resume

httpx and CMP message errors are translated at this boundary with the cause chained. The
authorization code is a :class:`~tokenissue.credentials.Secret` (or a callable returning one,
so the CLI asks only when a MAC is needed), the MAC's shared secret by its UTF-8 octets; it
never appears in a message or a log.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import ssl
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Final

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pyasn1.codec.der import encoder
from pyasn1.type import char, univ

from ..ca.profiles import load_profiles
from ..credentials import IdentityProof
from ..errors import CANotReached, CAOutcomeUnknown, CAUnavailable, ConfigError, Remedy, RequestRejected, UsageError
from ..models import CertStatus, RevocationReason
from ..pkix.certs import verify_chain
from ..pkix.kr_vid import ID_IT_IDENTITY, identity_content
from ..pkix.reasons import REASON_FLAGS
from ..protocols.cmp import (
    DEFAULT_MAX_MESSAGE_SIZE,
    CMPResponse,
    FailureInfo,
    MessageHeader,
    SharedSecret,
    add_general_info,
    build_cert_conf,
    build_kur,
    build_p10cr,
    build_rr,
    decode_message,
    encode_message,
    parse_response,
    protect_pbm,
    protect_signature,
    seal_with_password,
    verify_protection,
)
from ..protocols.cmp import CMPError as CMPMessageError
from ..publickeys import same_public_key
from .base import EnrollResult, canonical_auth_code, retry_after_seconds, tls_verify

if TYPE_CHECKING:
    from .base import AuthCode, AuthCodeSource

__all__ = ["CMPEnroller", "CMPError", "canonical_auth_code", "transaction_id_for"]

CONTENT_TYPE: Final = "application/pkixcmp"
CONNECT_TIMEOUT: Final = 10.0
READ_TIMEOUT: Final = 60.0
#: id-it-certProfile (RFC 9483 §3.1): which certificate profile the request is for.
ID_IT_CERT_PROFILE: Final = "1.3.6.1.5.5.7.4.21"


# Refusals that say the server, not the request, is the problem.
_UNAVAILABLE: Final = frozenset({"systemUnavail", "systemFailure", "timeNotAvailable", "transactionIdInUse"})
_AUTH_FAILURES: Final = frozenset(
    {"badMessageCheck", "wrongIntegrity", "notAuthorized", "signerNotTrusted", "badRecipientNonce", "badSenderNonce"}
)


class CMPError(RequestRejected):
    """The CMP server refused, or its answer cannot be accepted; ``failure_info`` says why.

    What a :class:`tokenissue.protocols.cmp.CMPError` becomes when it reaches the holder: the
    same message and PKIFailureInfo bit name, as a :class:`~tokenissue.errors.RequestRejected`
    (exit status 6).
    """

    def __init__(self, failure_info: FailureInfo, message: str, *, remedy: Remedy | None = None) -> None:
        super().__init__(message, remedy=remedy)
        self.failure_info: FailureInfo = failure_info


@contextlib.contextmanager
def _refusals() -> Iterator[None]:
    """The boundary: a CMP message error that reaches the holder is a refusal (exit status 6)."""
    try:
        yield
    except CMPMessageError as e:
        raise CMPError(e.failure_info, e.message) from e


def _shared(code: AuthCode) -> SharedSecret:
    """The MAC's shared secret: a text code by its UTF-8 octets, as OpenSSL's ``-secret pass:``."""
    return code if isinstance(code, SharedSecret) else SharedSecret.from_text(code.reveal())


def transaction_id_for(request_id: str) -> bytes:
    """The CMP transactionID for ``request_id``: the first 16 octets of its SHA-256.

    Deterministic, so a resumed request repeats it and the CA can recognise the replay; 128
    bits, the size RFC 9483 §3.1 asks for; and not the journal ID itself, which stays local.
    """
    return hashlib.sha256(request_id.encode("utf-8")).digest()[:16]


def _nonce() -> bytes:
    return os.urandom(16)




def _self_signed(cert: x509.Certificate) -> bool:
    if cert.issuer != cert.subject:
        return False
    try:
        cert.verify_directly_issued_by(cert)
    except Exception:  # Any failure (bad signature, unsupported key) means: not a usable root.
        return False
    return True


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def _unique(certs: Sequence[x509.Certificate]) -> list[x509.Certificate]:
    seen: set[bytes] = set()
    out = []
    for c in certs:
        if _der(c) not in seen:
            seen.add(_der(c))
            out.append(c)
    return out


def _with_profile(msg: Any, profile: str) -> Any:
    """Add id-it-certProfile to the header's generalInfo (before the message is protected)."""
    names = univ.SequenceOf(componentType=char.UTF8String())
    names.append(char.UTF8String(profile))
    return add_general_info(msg, ID_IT_CERT_PROFILE, encoder.encode(names))


class _Protection:
    """How our messages are protected and how the answers must be: a MAC or a signature."""

    def __init__(
        self,
        *,
        ref: bytes | None = None,
        secret: SharedSecret | None = None,
        key: Any = None,
        cert: x509.Certificate | None = None,
        anchors: Sequence[x509.Certificate] = (),
    ) -> None:
        self.ref, self.secret, self.key, self.cert = ref, secret, key, cert
        #: Trust anchors for signed answers and roots for the issued chain; grows by the CA
        #: certificates ``cert`` verifiably chains to, once an answer brings them.
        self.anchors = list(anchors)

    def learn_anchors(self, offered: Sequence[x509.Certificate]) -> None:
        """Trust the CA certificates our own certificate chains to through ``offered``.

        The path is checked signature by signature from a certificate the CA issued to us, so
        each of its CA certificates holds a key the CA really used; nobody else could have made
        them. This is how renew/revoke trust the CA's signed answers without --ca-trust.
        """
        if self.cert is None:
            return
        try:
            path = verify_chain(self.cert, _unique([*offered, *self.anchors]))
        except RequestRejected:
            return
        self.anchors = _unique([*self.anchors, *path[1:]])

    def protect(self, msg: Any) -> Any:
        if self.key is not None and self.cert is not None:
            try:
                return protect_signature(msg, self.key, self.cert)
            except ValueError as e:  # the key is not the certificate's: the caller chose them
                raise ConfigError(str(e)) from e
        assert self.secret is not None and self.ref is not None
        return protect_pbm(msg, self.secret, sender_kid=self.ref)


class CMPEnroller:
    """A CMP server as the holder sees it. See the module docstring for what is sent and checked.

    ``location`` is ``cmp+http(s)://...`` as the user gave it (it is journaled and reopened on
    resume). ``ref`` is the reference (senderKID) the CA gave with ``auth_code``, the shared
    secret for the MAC; both are only needed for :meth:`request`. ``trust`` are CA certificates
    to trust: roots for the issued chain, anchors for signed answers and, for https, the
    server's TLS certificate (otherwise the system's trust store). Timeouts are in seconds;
    a read timeout leaves the outcome unknown (:class:`CAOutcomeUnknown`).
    """

    needs_ca_pin = False

    def __init__(
        self,
        location: str,
        *,
        ref: str | None = None,
        auth_code: AuthCodeSource | None = None,
        trust: Sequence[x509.Certificate] = (),
        connect_timeout: float = CONNECT_TIMEOUT,
        read_timeout: float = READ_TIMEOUT,
    ) -> None:
        url = location[4:] if location.startswith("cmp+") else location
        parsed = httpx.URL(url)
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise UsageError(f"'{location}' is not a CMP URL like cmp+http://HOST:PORT/PATH or cmp+https://...")
        self.location = location
        self.url = url
        self._ref = ref
        self._auth_code = auth_code
        self._trust = list(trust)
        verify = tls_verify(self._trust) if parsed.scheme == "https" else True
        self._connect_timeout = connect_timeout
        timeout = httpx.Timeout(connect=connect_timeout, read=read_timeout, write=read_timeout, pool=connect_timeout)
        self._client = httpx.Client(timeout=timeout, verify=verify, follow_redirects=False)

    # -- the Enroller interface -------------------------------------------------------------
    def request(
        self,
        csr: x509.CertificateSigningRequest,
        *,
        profile: str,
        request_id: str,
        token_serial: str | None,
        key_id: bytes | None,
        label: str | None,
        replaces: int | None = None,
        identity: IdentityProof | None = None,
    ) -> EnrollResult:
        """p10cr protected by the MAC; the CSR's key must be what the certificate certifies.

        ``identity`` goes in the header's generalInfo (:data:`ID_IT_IDENTITY`), encrypted for
        the authorization code (CMS EnvelopedData with a password recipient, as RFC 9483
        §4.1.6.3 encrypts for a MAC's shared secret), under the MAC like the rest."""
        del token_serial, key_id, label, replaces  # the CA learns these from the CSR or not at all
        secret = _shared(self._secret())
        protection = _Protection(ref=self._ref_bytes(), secret=secret, anchors=self._trust)
        nonce = _nonce()
        with _refusals():
            header = MessageHeader(
                transaction_id=transaction_id_for(request_id), sender_nonce=nonce, sender_kid=protection.ref
            )
            msg = build_p10cr(csr, header=header)
            if identity is not None:
                sealed = seal_with_password(identity_content(identity.number.reveal(), identity.random), secret)
                add_general_info(msg, ID_IT_IDENTITY, sealed)
            return self._certify(
                _with_profile(msg, profile), "cp", protection, nonce, csr.public_key(), sender=csr.subject
            )

    def renew(
        self,
        csr: x509.CertificateSigningRequest,
        *,
        new_key: Any,
        current_cert: x509.Certificate,
        current_key: Any,
        profile: str,
        request_id: str,
        token_serial: str | None,
        key_id: bytes | None,
        label: str | None,
        replaces: int | None = None,
    ) -> EnrollResult:
        """kur signed by the current certificate's key, POP by ``new_key`` (RFC 9483 §4.1.3)."""
        del token_serial, key_id, label, replaces
        if not same_public_key(new_key.public_key(), csr.public_key()):
            raise UsageError("The renewal CSR was not made with the key to be certified.")
        nonce = _nonce()
        protection = _Protection(key=current_key, cert=current_cert, anchors=self._trust)
        with _refusals():
            header = MessageHeader(
                sender=current_cert.subject, transaction_id=transaction_id_for(request_id), sender_nonce=nonce
            )
            msg = build_kur(
                csr.subject, None, new_key, header=header, old_cert=current_cert, extensions=list(csr.extensions)
            )
            return self._certify(
                _with_profile(msg, profile), "kup", protection, nonce, new_key.public_key(), sender=current_cert.subject
            )

    def revoke(
        self, serial: int, reason: RevocationReason, *, cert: x509.Certificate | None = None, key: Any = None
    ) -> None:
        """rr signed by the certificate's own key; a certificate already revoked counts as done."""
        if cert is None or key is None:
            raise UsageError(
                f"Revoking certificate {serial:x} over CMP needs the certificate and its key on the token "
                "(RFC 9483 §4.2); ask the CA's operator to revoke it."
            )
        if cert.serial_number != serial:
            raise UsageError(f"The certificate given has serial {cert.serial_number:x}, not {serial:x}.")
        nonce = _nonce()
        protection = _Protection(key=key, cert=cert, anchors=self._trust)
        with _refusals():
            msg = build_rr(cert.issuer, serial, REASON_FLAGS[reason], header=MessageHeader(sender=cert.subject, sender_nonce=nonce))
            rsp = self._exchange(protection.protect(msg), "rp", protection, msg, nonce)
        # An authenticated certRevoked (in the rp, or as the error refusing a request signed by
        # this very certificate) means revoked before, perhaps by a run that died before
        # recording it: done. (_exchange has raised already if the answer does not verify.)
        for status in (*rsp.revocation_statuses, rsp.status):
            if status is not None and status.status == "rejection" and "certRevoked" in status.failure_info:
                return
        self._raise_for_status(rsp, protection, authenticated=True)

    def identity_required(self, profile: str) -> bool:
        """Whether the built-in profile of that name binds an identity: the server's own
        profiles cannot be seen from here, and the registration decides there."""
        built_in = load_profiles().get(profile)
        return built_in is not None and built_in.identify_data

    def sign_only_required(self, profile: str) -> bool:
        """A CMP server cannot see the key's attributes; the holder's --require-sign-only applies."""
        del profile
        return False

    def check_profile(self, profile: str) -> None:
        """Nothing to check up front: the server judges the profile named in the request."""
        del profile

    def status(self, serial: int) -> CertStatus | None:
        """CMP has no status query; the holder's own record has to do."""
        del serial
        return None

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> CMPEnroller:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the exchanges --------------------------------------------------------------------
    def _ref_bytes(self) -> bytes:
        if not self._ref:
            raise UsageError(
                f"Enrolling at the CMP server {self.url} needs the reference the CA gave with the authorization code.",
                remedy=Remedy.GIVE_REF,
            )
        return self._ref.encode("utf-8")

    def _secret(self) -> AuthCode:
        code = self._auth_code() if callable(self._auth_code) else self._auth_code
        if code is None:
            raise UsageError(
                f"Enrolling at the CMP server {self.url} needs the authorization code.", remedy=Remedy.GIVE_AUTH_CODE
            )
        return canonical_auth_code(code)

    def _certify(
        self,
        msg: Any,
        expect: str,
        protection: _Protection,
        nonce: bytes,
        public_key: Any,
        *,
        sender: x509.Name,
    ) -> EnrollResult:
        rsp = self._exchange(protection.protect(msg), expect, protection, msg, nonce)
        self._raise_for_status(rsp, protection, authenticated=True)
        if rsp.status is not None and rsp.status.status == "waiting":
            raise CAOutcomeUnknown(
                f"The CMP server at {self.url} is still processing the request; run the same command "
                "again later to collect the certificate.",
                remedy=Remedy.OR_RESUME,
            )
        cert = rsp.certificate
        if cert is None:
            raise CAUnavailable(f"The CMP server at {self.url} accepted the request but sent no certificate.")
        try:
            if not same_public_key(cert.public_key(), public_key):
                raise CMPError(
                    "badCertTemplate",
                    f"The CMP server at {self.url} issued a certificate for another key than the one requested; "
                    "it was refused",
                )
            chain = self._chain(cert, rsp, protection)
        except CMPError as e:
            self._confirm(rsp, cert, protection, sender, rejected=e)
            raise CMPError(e.failure_info, f"{e.message}.", remedy=e.remedy) from None
        except RequestRejected as e:
            # verify_chain's sentence says which link failed; the server hears it in certConf.
            self._confirm(rsp, cert, protection, sender, rejected=CMPError("incorrectData", str(e).rstrip(".")))
            raise RequestRejected(
                f"The certificate from the CMP server at {self.url} was refused: {str(e).rstrip('.')}.",
                remedy=e.remedy, details=e.details,
            ) from e
        if not rsp.header.implicit_confirm:
            self._confirm(rsp, cert, protection, sender)
        return EnrollResult(cert, chain)

    def _chain(self, cert: x509.Certificate, rsp: CMPResponse, protection: _Protection) -> list[x509.Certificate]:
        """The issuing CA first, root last. Roots come only from protected places: ``trust``,
        the anchors, and caPubs (in the body, under the MAC or signature; extraCerts are not)."""
        roots = [c for c in (*self._trust, *protection.anchors, *rsp.ca_pubs) if _self_signed(c)]
        intermediates = [c for c in (*rsp.extra_certs, *rsp.ca_pubs, *protection.anchors) if not _self_signed(c)]
        pool = _unique([*intermediates, *roots])
        if not roots:
            raise RequestRejected(
                f"no root CA certificate for '{cert.issuer.rfc4514_string()}' came with it", remedy=Remedy.GIVE_ROOT
            )
        path = verify_chain(cert, pool)
        return path[1:]

    def _confirm(
        self,
        rsp: CMPResponse,
        cert: x509.Certificate,
        protection: _Protection,
        sender: x509.Name,
        *,
        rejected: CMPError | None = None,
    ) -> None:
        """certConf for ``cert`` (or its rejection), and the pkiConf that must answer it."""
        nonce = _nonce()
        if rsp.transaction_id is None or rsp.sender_nonce is None:
            raise CAUnavailable(f"The CMP server at {self.url} answered without a transactionID or senderNonce.")
        header = MessageHeader(
            sender=sender,
            transaction_id=rsp.transaction_id,
            sender_nonce=nonce,
            recip_nonce=rsp.sender_nonce,
            sender_kid=protection.ref,
        )
        msg = build_cert_conf(
            cert,
            rsp.cert_req_id if rsp.cert_req_id is not None else 0,
            header=header,
            accepted=rejected is None,
            failure_info=rejected.failure_info if rejected else None,
            text=rejected.message if rejected else None,
        )
        if rejected is not None:
            # Best effort: the request fails with our reason whatever the server says now.
            with contextlib.suppress(RequestRejected, CAUnavailable):
                self._exchange(protection.protect(msg), "pkiconf", protection, msg, nonce)
            return
        try:
            reply = self._exchange(protection.protect(msg), "pkiconf", protection, msg, nonce)
            self._raise_for_status(reply, protection, authenticated=True)
        except CAOutcomeUnknown:
            raise
        except CAUnavailable as e:
            # The certificate exists but is not confirmed: the CA may revoke it. Resuming repeats
            # the request (same transactionID) and confirms the certificate the CA returns.
            raise CAOutcomeUnknown(f"{e} The enrollment is kept: run the same command again to finish it.") from e

    def _exchange(self, protected: Any, expect: str, protection: _Protection, sent: Any, nonce: bytes) -> CMPResponse:
        """POST one message; decode, match and authenticate the answer. A refusal is returned
        (``_raise_for_status`` turns it into an exception) unless its protection is bad, in
        which case it is raised at once, marked as unauthenticated."""
        body = self._post(encode_message(protected))
        try:
            rsp = parse_response(decode_message(body))
        except CMPMessageError as e:
            raise CAUnavailable(f"The CMP server at {self.url} sent an answer that is not a valid CMP message ({e.message.rstrip('.')}).") from e
        refused = rsp.body_type == "error" or (rsp.status is not None and rsp.status.status == "rejection")
        protection.learn_anchors([*rsp.extra_certs, *rsp.ca_pubs])
        try:
            verify_protection(
                rsp.message,
                secret=protection.secret,
                trusted_signers=protection.anchors or None,
                extra_certs=protection.anchors,
            )
        except CMPMessageError as e:
            if refused:
                self._raise_for_status(rsp, protection, authenticated=False)
            raise self._protection_error(e, protection) from e
        tid = sent["header"]["transactionID"]
        want_tid = bytes(tid.asOctets()) if tid.isValue else None
        if rsp.transaction_id != want_tid:
            if refused and rsp.transaction_id is None:
                self._raise_for_status(rsp, protection, authenticated=True)
            raise CAUnavailable(f"The CMP server at {self.url} answered with another transactionID; try again later.")
        if rsp.recip_nonce != nonce:
            raise CAUnavailable(f"The CMP server at {self.url} answered without our nonce (a replayed answer?); try again later.")
        if rsp.body_type != expect and not refused:
            raise CAUnavailable(f"The CMP server at {self.url} answered {rsp.body_type} to our request, not {expect}.")
        return rsp

    def _protection_error(self, e: CMPMessageError, protection: _Protection) -> CMPError:
        if e.failure_info == "signerNotTrusted":
            remedy = Remedy.GIVE_SIGNER_TRUST
        elif protection.secret is not None:
            remedy = Remedy.CHECK_REF_AND_CODE
        else:
            remedy = Remedy.CHECK_CA_TRUST
        return CMPError(
            e.failure_info,
            f"The answer of the CMP server at {self.url} does not verify ({e.message.rstrip('.')}).",
            remedy=remedy,
        )

    def _raise_for_status(self, rsp: CMPResponse, protection: _Protection, *, authenticated: bool) -> None:
        statuses = [s for s in (rsp.status, *rsp.revocation_statuses) if s is not None]
        refusal = next((s for s in statuses if s.status == "rejection"), None)
        if refusal is None and rsp.body_type != "error":
            return
        failure = refusal.failure_info[0] if refusal is not None and refusal.failure_info else "systemFailure"
        text = refusal.text if refusal is not None and refusal.text else None
        if text is None and rsp.error_details:
            text = " ".join(rsp.error_details)
        detail = f" ({text.rstrip('.')})" if text else ""
        flag = "" if authenticated else " in an unauthenticated answer"
        where = f"The CMP server at {self.url} refused the request{flag}: {failure}{detail}"
        if failure in _UNAVAILABLE:
            raise CAUnavailable(f"{where}; try again later.")
        if failure in _AUTH_FAILURES or (not authenticated and protection.secret is not None):
            # An answer that does not verify with our secret mostly means the secret is wrong.
            if protection.secret is not None:
                raise CMPError(failure, f"{where}.", remedy=Remedy.CHECK_REF_AND_CODE)
            raise CMPError(failure, f"{where}; the CA does not accept this certificate's signature.")
        raise CMPError(failure, f"{where}.")

    # -- HTTP (RFC 6712) ----------------------------------------------------------------------
    @contextlib.contextmanager
    def _translate(self) -> Iterator[None]:
        try:
            yield
        except httpx.ConnectTimeout as e:
            raise CANotReached(f"Cannot reach the CMP server at {self.url}: no connection within {self._connect_timeout:g} s.") from e
        except httpx.TimeoutException as e:
            raise CAOutcomeUnknown(
                f"The CMP server at {self.url} did not answer in time; run the same command again "
                "(the request is repeated with the same transaction ID)."
            ) from e
        except httpx.ConnectError as e:
            # No connection, or TLS refused before a byte of the request went out: not reached.
            if _is_tls_trust_error(e):
                raise CANotReached(
                    f"The TLS certificate of the CMP server at {self.url} is not trusted.", remedy=Remedy.GIVE_CA_TRUST
                ) from e
            raise CANotReached(f"Cannot reach the CMP server at {self.url}; check the URL and that the server runs.") from e
        except httpx.TransportError as e:
            # Sent, maybe processed, no answer: the outcome is unknown.
            raise CAOutcomeUnknown(
                f"The connection to the CMP server at {self.url} broke before it answered; run the same "
                "command again (the request is repeated with the same transaction ID)."
            ) from e

    def _post(self, der: bytes) -> bytes:
        # One connection per message, as OpenSSL's client does (HTTP/1.0): OpenSSL 3.0's server
        # answers the certConf that follows on a kept-alive connection with "unexpected pkibody".
        headers = {"Content-Type": CONTENT_TYPE, "Accept": CONTENT_TYPE, "Connection": "close"}
        for attempt in range(_UNAVAILABLE_TRIES):
            with self._translate(), self._client.stream("POST", self.url, content=der, headers=headers) as response:
                body = b""
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > DEFAULT_MAX_MESSAGE_SIZE:
                        raise CAUnavailable(f"The CMP server at {self.url} sent an answer larger than {DEFAULT_MAX_MESSAGE_SIZE} bytes.")
            if response.status_code != 503 or attempt == _UNAVAILABLE_TRIES - 1:
                break
            # 503: the server (its database, say) is briefly unavailable and did nothing with the
            # request. The same message (same transactionID) is sent again after Retry-After.
            # Repeat soon: the user is waiting (1 s without a Retry-After, a few seconds at most).
            time.sleep(min(retry_after_seconds(response.headers.get("retry-after"), 1.0), _RETRY_AFTER_MAX_S))
        ctype = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if response.status_code != 200:
            if ctype == CONTENT_TYPE and body:
                # RFC 6712 §3.3 lets an error PKIMessage come with another status; it says more.
                return body
            if response.status_code >= 500:
                raise CAOutcomeUnknown(f"The CMP server at {self.url} answered HTTP {response.status_code}; try again later.")
            # A 4xx with no CMP message (a wrong path: 404, 405): no CA processed the request.
            raise CANotReached(
                f"The CMP server at {self.url} answered HTTP {response.status_code}.", remedy=Remedy.CHECK_URL
            )
        if ctype != CONTENT_TYPE:
            shown = ctype or "no content type"
            raise CAUnavailable(
                f"The server at {self.url} is not a CMP server: it answered {shown[:60]}, not {CONTENT_TYPE}.",
                remedy=Remedy.CHECK_URL,
            )
        return body


_UNAVAILABLE_TRIES: Final = 3
_RETRY_AFTER_MAX_S = 5.0


def _is_tls_trust_error(e: BaseException) -> bool:
    seen: BaseException | None = e
    for _ in range(8):
        if seen is None:
            return False
        if isinstance(seen, ssl.SSLCertVerificationError):
            return True
        seen = seen.__cause__ or seen.__context__
    return "CERTIFICATE_VERIFY_FAILED" in str(e)
