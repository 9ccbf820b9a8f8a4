"""Friendly, immutable views of received CMP messages (verification is in :mod:`._verify`).

:func:`parse_request` is what a server calls on a decoded message, :func:`parse_response`
what a client calls. Both raise :class:`CMPError` with the PKIFailureInfo the peer should get
(badRequest, badDataFormat, badCertTemplate, ...). Neither checks the protection: call
:func:`~tokenissue.protocols.cmp.verify_protection` first, with the secret or trust anchors
the header's senderKID and sender select. The pyasn1 message stays available as ``.message``.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Final, Generic, Literal, TypeVar, cast, get_args

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa, x448, x25519
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from pyasn1_alt_modules import rfc4211, rfc5280, rfc9480

from ._der import (
    DECODE_ERRORS,
    cert_from_asn1,
    decode_strict,
    extensions_from_asn1,
    general_name_to_name,
    is_present,
    name_from_asn1,
    octets,
    oid_str,
    plain_der,
    public_key_from_spki,
)
from ._errors import FAILURE_INFO_NAMES, CMPError, FailureInfo
from ._verify import verify_pop

__all__ = [
    "ID_IT_CA_CERTS",
    "ID_IT_IMPLICIT_CONFIRM",
    "ID_IT_ROOT_CA_CERT",
    "ID_IT_ROOT_CA_KEY_UPDATE",
    "CMPHeader",
    "CMPRequest",
    "CMPResponse",
    "CertConfirmation",
    "PKIStatus",
    "RequestType",
    "ResponseType",
    "RevocationRequest",
    "RootCaUpdate",
    "StatusInfo",
    "parse_header",
    "parse_request",
    "parse_response",
    "sanitize_text",
]

_T = TypeVar("_T")

ID_IT_IMPLICIT_CONFIRM: Final = "1.3.6.1.5.5.7.4.13"
ID_IT_CA_CERTS: Final = "1.3.6.1.5.5.7.4.17"
ID_IT_ROOT_CA_KEY_UPDATE: Final = "1.3.6.1.5.5.7.4.18"
ID_IT_ROOT_CA_CERT: Final = "1.3.6.1.5.5.7.4.20"
ID_REGCTRL_OLD_CERT_ID: Final = "1.3.6.1.5.5.7.5.1.5"
CRL_REASON_OID: Final = "2.5.29.21"

RequestType = Literal["ir", "cr", "p10cr", "kur", "rr", "certConf", "genm", "pollReq"]
ResponseType = Literal["ip", "cp", "kup", "rp", "pkiconf", "genp", "error", "pollRep"]
PKIStatus = Literal[
    "accepted",
    "grantedWithMods",
    "rejection",
    "waiting",
    "revocationWarning",
    "revocationNotification",
    "keyUpdateWarning",
]
# The key types a certificate can carry (CertificatePublicKeyTypes, which isinstance cannot take).
_CERTIFIABLE: Final = (
    rsa.RSAPublicKey,
    ec.EllipticCurvePublicKey,
    ed25519.Ed25519PublicKey,
    ed448.Ed448PublicKey,
    x25519.X25519PublicKey,
    x448.X448PublicKey,
)
_STATUS_NAMES: Final[tuple[str, ...]] = get_args(PKIStatus)

# RFC 9483 §3.1: transactionID and senderNonce are 128 random bits. Shorter ones make replay
# and collisions likely; longer than 64 octets is not a nonce but a payload.
_MIN_NONCE: Final = 16
_MAX_NONCE: Final = 64
_MAX_PEER_TEXT: Final = 300

# CRLReason codes (RFC 5280 §5.3.1) as cryptography names them; 7 is unused.
_REASONS: Final[dict[int, x509.ReasonFlags]] = {
    0: x509.ReasonFlags.unspecified,
    1: x509.ReasonFlags.key_compromise,
    2: x509.ReasonFlags.ca_compromise,
    3: x509.ReasonFlags.affiliation_changed,
    4: x509.ReasonFlags.superseded,
    5: x509.ReasonFlags.cessation_of_operation,
    6: x509.ReasonFlags.certificate_hold,
    8: x509.ReasonFlags.remove_from_crl,
    9: x509.ReasonFlags.privilege_withdrawn,
    10: x509.ReasonFlags.aa_compromise,
}


def _sans(extensions: x509.Extensions) -> tuple[x509.GeneralName, ...]:
    try:
        return tuple(extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        return ()


def sanitize_text(text: str) -> str:
    """Peer-supplied text made safe to print: no control characters, bounded length."""
    clean = "".join(" " if unicodedata.category(ch).startswith("C") else ch for ch in text)
    return clean[:_MAX_PEER_TEXT] + ("…" if len(clean) > _MAX_PEER_TEXT else "")


@dataclass(frozen=True)
class CMPHeader:
    """The PKIHeader fields a server or client decides on."""

    #: 2 (cmp2000) or 3 (cmp2021); a response uses 3 only when the request did.
    pvno: int
    #: The sender's directoryName; ``None`` for NULL-DN (unknown) or another GeneralName kind.
    sender: x509.Name | None
    #: The intended recipient, ``None`` for NULL-DN.
    recipient: x509.Name | None
    #: Identifies the transaction; the server echoes it.
    transaction_id: bytes | None
    #: Fresh for each message; the peer returns it as recipNonce.
    sender_nonce: bytes | None
    #: The peer's previous senderNonce; absent in the first message of a transaction.
    recip_nonce: bytes | None
    #: For MAC protection the reference that selects the shared secret; for signatures the
    #: protection certificate's subject key identifier.
    sender_kid: bytes | None
    recip_kid: bytes | None
    #: The protection algorithm OID as a dotted string, ``None`` when unprotected.
    protection_alg: str | None
    message_time: datetime | None
    #: generalInfo carries id-it-implicitConfirm: the client asks to skip certConf / the
    #: server grants it.
    implicit_confirm: bool
    free_text: tuple[str, ...]
    #: Every generalInfo entry with a value: (infoType dotted OID, DER of infoValue).
    general_info: tuple[tuple[str, bytes], ...] = ()


class _FromHeader(Generic[_T]):
    """A read-only attribute that reads the header field of the same name."""

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    def __get__(self, obj: Any, owner: type | None = None) -> _T:
        return cast(_T, getattr(obj.header, self._name))


class _HeaderFields:
    """The header fields of a parsed message, read through from its ``header``."""

    sender = _FromHeader[x509.Name | None]()
    recipient = _FromHeader[x509.Name | None]()
    transaction_id = _FromHeader[bytes | None]()
    sender_nonce = _FromHeader[bytes | None]()
    recip_nonce = _FromHeader[bytes | None]()
    sender_kid = _FromHeader[bytes | None]()
    protection_alg = _FromHeader[str | None]()
    implicit_confirm = _FromHeader[bool]()


@dataclass(frozen=True)
class StatusInfo:
    """A PKIStatusInfo: status, failure bits and text."""

    status: PKIStatus = "accepted"
    failure_info: tuple[FailureInfo, ...] = ()
    text: str | None = None

    @property
    def ok(self) -> bool:
        return self.status in ("accepted", "grantedWithMods")


@dataclass(frozen=True)
class RevocationRequest:
    """One RevDetails of an rr: which certificate, and why (``None``: no reason given)."""

    issuer: x509.Name
    serial: int
    reason: x509.ReasonFlags | None


@dataclass(frozen=True)
class CertConfirmation:
    """One CertStatus of a certConf."""

    cert_hash: bytes
    cert_req_id: int
    #: False when the client rejects the certificate (statusInfo rejection).
    accepted: bool
    #: hashAlg OID when the client named one (cmp2021 only), else the certificate's own.
    hash_alg: str | None
    status: StatusInfo | None


@dataclass(frozen=True)
class RootCaUpdate:
    """RootCaKeyUpdateContent (RFC 9480 §2.14): a new root and its link certificates."""

    new_with_new: x509.Certificate
    new_with_old: x509.Certificate | None = None
    old_with_new: x509.Certificate | None = None


@dataclass(frozen=True)
class CMPRequest(_HeaderFields):
    """A request as the server sees it. Fields that do not apply to ``body_type`` are empty."""

    body_type: RequestType
    header: CMPHeader
    #: ir/cr/kur: the certReqId (RFC 9483: 0); p10cr: -1, as its response uses; pollReq: the
    #: polled id.
    cert_req_id: int | None = None
    #: ir/cr/kur: the template's subject; p10cr: the CSR's.
    subject: x509.Name | None = None
    #: ir/cr/kur: the template's public key; p10cr: the CSR's.
    public_key: CertificatePublicKeyTypes | None = None
    extensions: x509.Extensions | None = None
    sans: tuple[x509.GeneralName, ...] = ()
    #: "signature", "raVerified", "keyEncipherment", "keyAgreement", or None without POP.
    pop_kind: str | None = None
    #: Whether the signature POP (or the CSR's self-signature) verifies; see verify_pop.
    pop_valid: bool = False
    #: kur: the oldCertID control (issuer, serial) naming the certificate being updated.
    old_cert_id: tuple[x509.Name, int] | None = None
    csr: x509.CertificateSigningRequest | None = None
    revocations: tuple[RevocationRequest, ...] = ()
    confirmations: tuple[CertConfirmation, ...] = ()
    #: genm: the infoType OIDs asked for.
    info_types: tuple[str, ...] = ()
    #: The decoded pyasn1 PKIMessage.
    message: Any = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class CMPResponse(_HeaderFields):
    """A response as the client sees it. Call :meth:`raise_for_status` to turn a refusal into
    an exception."""

    body_type: ResponseType
    header: CMPHeader
    #: ip/cp/kup: the CertResponse's status; error: the error's; rp: the first status.
    status: StatusInfo | None = None
    cert_req_id: int | None = None
    certificate: x509.Certificate | None = None
    ca_pubs: tuple[x509.Certificate, ...] = ()
    extra_certs: tuple[x509.Certificate, ...] = ()
    #: rp: one status per revocation request.
    revocation_statuses: tuple[StatusInfo, ...] = ()
    #: genp: id-it-caCerts (``None``: not in the response; empty: the CA has none to give).
    ca_certs: tuple[x509.Certificate, ...] | None = None
    root_ca_update: RootCaUpdate | None = None
    info_types: tuple[str, ...] = ()
    #: pollRep: seconds to wait before polling again.
    check_after: int | None = None
    error_code: int | None = None
    error_details: tuple[str, ...] = ()
    message: Any = field(default=None, repr=False, compare=False)

    def raise_for_status(self) -> None:
        """Raise :class:`CMPError` when the server refused (an error message or a rejection)."""
        statuses = (self.status, *self.revocation_statuses)
        for status in statuses:
            if status is not None and status.status == "rejection":
                failure = status.failure_info[0] if status.failure_info else "systemFailure"
                detail = f": {status.text}" if status.text else ""
                raise CMPError(failure, f"The CMP server refused the request ({failure}){detail}.")
        if self.body_type == "error":
            raise CMPError("systemFailure", "The CMP server answered with an error message.")


def _opt_octets(value: Any) -> bytes | None:
    return octets(value) if is_present(value) else None


def _free_text(value: Any) -> tuple[str, ...]:
    return tuple(sanitize_text(str(t)) for t in value) if is_present(value) else ()


def parse_header(header: Any) -> CMPHeader:
    """The friendly view of a PKIHeader (no policy checks)."""
    general_info = header["generalInfo"]
    implicit = is_present(general_info) and any(
        oid_str(itav["infoType"]) == ID_IT_IMPLICIT_CONFIRM for itav in general_info
    )
    message_time = None
    if is_present(header["messageTime"]):
        try:
            message_time = header["messageTime"].asDateTime
        except DECODE_ERRORS as e:
            raise CMPError("badDataFormat", "The header's messageTime is not a valid time.") from e
        message_time = message_time.replace(tzinfo=UTC) if message_time.tzinfo is None else message_time.astimezone(UTC)
    return CMPHeader(
        pvno=int(header["pvno"]),
        sender=general_name_to_name(header["sender"]),
        recipient=general_name_to_name(header["recipient"]),
        transaction_id=_opt_octets(header["transactionID"]),
        sender_nonce=_opt_octets(header["senderNonce"]),
        recip_nonce=_opt_octets(header["recipNonce"]),
        sender_kid=_opt_octets(header["senderKID"]),
        recip_kid=_opt_octets(header["recipKID"]),
        protection_alg=oid_str(header["protectionAlg"]["algorithm"]) if is_present(header["protectionAlg"]) else None,
        message_time=message_time,
        implicit_confirm=implicit,
        free_text=_free_text(header["freeText"]),
        general_info=tuple(
            (oid_str(itav["infoType"]), bytes(itav["infoValue"]))
            for itav in (general_info if is_present(general_info) else ())
            if is_present(itav["infoValue"])
        ),
    )


def _status_info(value: Any) -> StatusInfo:
    code = int(value["status"])
    if not 0 <= code < len(_STATUS_NAMES):
        raise CMPError("badDataFormat", f"PKIStatus {code} is not defined.")
    failures: tuple[FailureInfo, ...] = ()
    if is_present(value["failInfo"]):
        bits = tuple(value["failInfo"])
        names = list(FAILURE_INFO_NAMES)
        failures = tuple(cast(FailureInfo, names[i]) for i, bit in enumerate(bits) if bit and i < len(names))
    text = " ".join(_free_text(value["statusString"])) or None
    return StatusInfo(status=cast(PKIStatus, _STATUS_NAMES[code]), failure_info=failures, text=text)


def _check_ids(header: CMPHeader) -> None:
    for value, what, failure in (
        (header.transaction_id, "transactionID", "badRequest"),
        (header.sender_nonce, "senderNonce", "badSenderNonce"),
    ):
        if value is None:
            raise CMPError(cast(FailureInfo, failure), f"The request has no {what}.")
        if not _MIN_NONCE <= len(value) <= _MAX_NONCE:
            raise CMPError(
                cast(FailureInfo, failure), f"The request's {what} must be {_MIN_NONCE} to {_MAX_NONCE} octets long."
            )


def _crmf_request(body: Any) -> dict[str, Any]:
    if len(body) != 1:
        # RFC 9483 §4.1.1: exactly one CertReqMsg; batching would also need one POP check
        # and one answer per request.
        raise CMPError("badRequest", f"The request holds {len(body)} certificate requests; send exactly one.")
    msg = body[0]
    cert_req = msg["certReq"]
    template = cert_req["certTemplate"]
    subject = name_from_asn1(template["subject"]) if is_present(template["subject"]) else None
    public_key = _public_key(template["publicKey"]) if is_present(template["publicKey"]) else None
    extensions = extensions_from_asn1(template["extensions"]) if is_present(template["extensions"]) else None
    sans = _sans(extensions) if extensions is not None else ()
    old_cert_id = None
    if is_present(cert_req["controls"]):
        for control in cert_req["controls"]:
            if oid_str(control["type"]) == ID_REGCTRL_OLD_CERT_ID:
                cert_id = decode_strict(bytes(control["value"]), rfc4211.CertId(), "oldCertID control")
                issuer = general_name_to_name(cert_id["issuer"])
                if issuer is None:
                    raise CMPError("badCertId", "The oldCertID control must name its issuer as a directoryName.")
                old_cert_id = (issuer, int(cert_id["serialNumber"]))
    pop_kind = msg["popo"].getName() if is_present(msg["popo"]) else None
    return {
        "cert_req_id": int(cert_req["certReqId"]),
        "subject": subject,
        "public_key": public_key,
        "extensions": extensions,
        "sans": sans,
        "pop_kind": pop_kind,
        "old_cert_id": old_cert_id,
    }


def _public_key(spki: Any) -> CertificatePublicKeyTypes:
    key = public_key_from_spki(spki)
    if not isinstance(key, _CERTIFIABLE):
        raise CMPError("badAlg", "The requested public key's type cannot be certified.")
    return key


def _revocations(body: Any) -> tuple[RevocationRequest, ...]:
    out = []
    for details in body:
        template = details["certDetails"]
        if not is_present(template["issuer"]) or not is_present(template["serialNumber"]):
            raise CMPError("badCertTemplate", "A revocation request must name the issuer and serial number.")
        reason = None
        if is_present(details["crlEntryDetails"]):
            for ext in details["crlEntryDetails"]:
                if oid_str(ext["extnID"]) == CRL_REASON_OID:
                    code = decode_strict(octets(ext["extnValue"]), rfc5280.CRLReason(), "CRL reason")
                    reason = _REASONS.get(int(code))
                    if reason is None:
                        raise CMPError("badRequest", f"CRL reason code {int(code)} is not defined.")
        out.append(RevocationRequest(name_from_asn1(template["issuer"]), int(template["serialNumber"]), reason))
    if not out:
        raise CMPError("badRequest", "The revocation request is empty.")
    return tuple(out)


def _confirmations(body: Any) -> tuple[CertConfirmation, ...]:
    out = []
    for cert_status in body:
        status = _status_info(cert_status["statusInfo"]) if is_present(cert_status["statusInfo"]) else None
        out.append(
            CertConfirmation(
                cert_hash=octets(cert_status["certHash"]),
                cert_req_id=int(cert_status["certReqId"]),
                accepted=status is None or status.ok,
                hash_alg=oid_str(cert_status["hashAlg"]["algorithm"]) if is_present(cert_status["hashAlg"]) else None,
                status=status,
            )
        )
    return tuple(out)


def parse_request(msg: Any) -> CMPRequest:
    """The server's view of a decoded request; raises :class:`CMPError` on a malformed one.

    Checks what every request needs: a supported body type, a transactionID and senderNonce of
    16 to 64 octets, exactly one certificate request in ir/cr/kur, parseable names, keys,
    extensions and CSRs. ``pop_valid`` is the result of :func:`verify_pop`; the server decides
    what a missing or failed POP means.
    """
    return _decoding(_parse_request, msg, "request")


def _decoding(parse: Callable[[Any], _T], msg: Any, what: str) -> _T:
    """``parse(msg)``, with a pyasn1 or cryptography error from hostile input as badDataFormat."""
    try:
        return parse(msg)
    except CMPError:
        raise
    except DECODE_ERRORS as e:
        raise CMPError("badDataFormat", f"The CMP {what} cannot be parsed.") from e


def _parse_request(msg: Any) -> CMPRequest:
    header = parse_header(msg["header"])
    body_type = msg["body"].getName()
    if body_type not in get_args(RequestType):
        raise CMPError("badRequest", f"A CMP server does not accept {body_type} messages.")
    _check_ids(header)
    body = msg["body"][body_type]
    fields: dict[str, Any] = {}
    if body_type in ("ir", "cr", "kur"):
        fields = _crmf_request(body)
    elif body_type == "p10cr":
        try:
            csr = x509.load_der_x509_csr(plain_der(body))
            subject, public_key = csr.subject, csr.public_key()
            extensions = csr.extensions
        except DECODE_ERRORS as e:
            raise CMPError("badDataFormat", "The PKCS#10 request cannot be parsed.") from e
        except UnsupportedAlgorithm as e:
            raise CMPError("badAlg", "The PKCS#10 request's key type is not supported.") from e
        if not isinstance(public_key, _CERTIFIABLE):
            raise CMPError("badAlg", "The PKCS#10 request's key type cannot be certified.")
        sans = _sans(extensions)
        fields = {
            "cert_req_id": -1,
            "subject": subject,
            "public_key": public_key,
            "extensions": extensions,
            "sans": sans,
            "pop_kind": "signature",
            "csr": csr,
        }
    elif body_type == "rr":
        fields = {"revocations": _revocations(body)}
    elif body_type == "certConf":
        fields = {"confirmations": _confirmations(body)}
    elif body_type == "genm":
        fields = {"info_types": tuple(oid_str(itav["infoType"]) for itav in body)}
    elif body_type == "pollReq":
        if len(body) != 1:
            raise CMPError("badRequest", "A pollReq must poll exactly one certReqId.")
        fields = {"cert_req_id": int(body[0]["certReqId"])}
    request = CMPRequest(body_type=cast(RequestType, body_type), header=header, message=msg, **fields)
    if request.pop_kind is not None:
        try:
            verify_pop(request)
            pop_valid = True
        except CMPError:
            pop_valid = False
        request = replace(request, pop_valid=pop_valid)
    return request


def _certs(value: Any) -> tuple[x509.Certificate, ...]:
    return tuple(cert_from_asn1(c) for c in value) if is_present(value) else ()


def parse_response(msg: Any) -> CMPResponse:
    """The client's view of a decoded response; raises :class:`CMPError` on a malformed one.

    It does not raise for a refusal: see :meth:`CMPResponse.raise_for_status`. Matching the
    transactionID and recipNonce against the request is the client's job, which knows them.
    """
    return _decoding(_parse_response, msg, "response")


def _parse_response(msg: Any) -> CMPResponse:
    header = parse_header(msg["header"])
    body_type = msg["body"].getName()
    if body_type not in get_args(ResponseType):
        raise CMPError("badDataFormat", f"A CMP client does not expect {body_type} messages.")
    body = msg["body"][body_type]
    fields: dict[str, Any] = {"extra_certs": _certs(msg["extraCerts"])}
    if body_type in ("ip", "cp", "kup"):
        if len(body["response"]) != 1:
            raise CMPError(
                "badDataFormat", f"The response holds {len(body['response'])} certificate responses, not one."
            )
        response = body["response"][0]
        certificate = None
        if is_present(response["certifiedKeyPair"]):
            cert_or_enc = response["certifiedKeyPair"]["certOrEncCert"]
            if cert_or_enc.getName() != "certificate":
                raise CMPError(
                    "badDataFormat", "An encrypted certificate was returned; this client cannot decrypt one."
                )
            certificate = cert_from_asn1(cert_or_enc["certificate"])
        fields |= {
            "status": _status_info(response["status"]),
            "cert_req_id": int(response["certReqId"]),
            "certificate": certificate,
            "ca_pubs": _certs(body["caPubs"]),
        }
    elif body_type == "error":
        fields |= {
            "status": _status_info(body["pKIStatusInfo"]),
            "error_code": int(body["errorCode"]) if is_present(body["errorCode"]) else None,
            "error_details": _free_text(body["errorDetails"]),
        }
    elif body_type == "rp":
        statuses = tuple(_status_info(s) for s in body["status"])
        fields |= {"revocation_statuses": statuses, "status": statuses[0] if statuses else None}
    elif body_type == "genp":
        fields |= _genp(body)
    elif body_type == "pollRep":
        if len(body) != 1:
            raise CMPError("badDataFormat", "A pollRep must answer exactly one certReqId.")
        fields |= {"cert_req_id": int(body[0]["certReqId"]), "check_after": int(body[0]["checkAfter"])}
    return CMPResponse(body_type=cast(ResponseType, body_type), header=header, message=msg, **fields)


def _genp(body: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"info_types": tuple(oid_str(itav["infoType"]) for itav in body)}
    for itav in body:
        oid = oid_str(itav["infoType"])
        value = itav["infoValue"]
        if oid == ID_IT_CA_CERTS:
            certs = decode_strict(bytes(value), rfc9480.CaCertsValue(), "caCerts") if is_present(value) else []
            out["ca_certs"] = tuple(cert_from_asn1(c) for c in certs)
        elif oid == ID_IT_ROOT_CA_KEY_UPDATE and is_present(value):
            update = decode_strict(bytes(value), rfc9480.RootCaKeyUpdateValue(), "rootCaKeyUpdate")
            out["root_ca_update"] = RootCaUpdate(
                new_with_new=cert_from_asn1(update["newWithNew"]),
                new_with_old=cert_from_asn1(update["newWithOld"]) if is_present(update["newWithOld"]) else None,
                old_with_new=cert_from_asn1(update["oldWithNew"]) if is_present(update["oldWithNew"]) else None,
            )
    return out
