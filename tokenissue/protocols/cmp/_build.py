"""Building CMP messages: the server's responses and the client's requests.

Every builder returns a new, *unprotected* pyasn1 PKIMessage; protect it with
:func:`~tokenissue.protocols.cmp.protect_pbm`, :func:`protect_pbmac1` or
:func:`protect_signature` (which also set protectionAlg, senderKID and, for signatures,
sender and extraCerts), then :func:`encode_message`.

Response headers follow RFC 9483 §3.1: pvno 2 unless the request used 3, the transactionID
echoed, recipNonce = the request's senderNonce, a fresh 16-octet senderNonce, messageTime now.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from pyasn1.codec.der import encoder
from pyasn1.type import univ
from pyasn1_alt_modules import rfc4211, rfc5280, rfc9480

from ._crypto import HASH_OIDS, cert_hash, sign
from ._der import cert_to_asn1, decode_as, name_to_general_name, same_public_key, spki_der, tlv
from ._errors import FAILURE_INFO_NAMES, FailureInfo
from ._parse import (
    ID_IT_CA_CERTS,
    ID_IT_IMPLICIT_CONFIRM,
    ID_IT_ROOT_CA_CERT,
    ID_IT_ROOT_CA_KEY_UPDATE,
    CMPHeader,
    CMPRequest,
    PKIStatus,
    RootCaUpdate,
    StatusInfo,
)

__all__ = [
    "build_cert_conf",
    "build_cp",
    "build_cr",
    "build_error",
    "build_genm",
    "build_genp",
    "build_ip",
    "build_ir",
    "build_kup",
    "build_kur",
    "build_p10cr",
    "build_pkiconf",
    "build_rp",
    "build_rr",
]

_NONCE_BYTES: Final = 16
_STATUS_CODES: Final[dict[str, int]] = {
    name: code
    for code, name in enumerate(
        (
            "accepted",
            "grantedWithMods",
            "rejection",
            "waiting",
            "revocationWarning",
            "revocationNotification",
            "keyUpdateWarning",
        )
    )
}
_OLD_CERT_ID: Final = "1.3.6.1.5.5.7.5.1.5"
_CRL_REASON: Final = "2.5.29.21"

RequestContext = CMPRequest | CMPHeader


def _cert_der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def _header(
    msg: Any,
    *,
    pvno: int,
    sender: x509.Name | None,
    recipient: x509.Name | None,
    transaction_id: bytes | None,
    sender_nonce: bytes | None,
    recip_nonce: bytes | None,
    sender_kid: bytes | None,
    implicit_confirm: bool,
) -> None:
    header = msg["header"]
    spec = header.componentType
    header["pvno"] = pvno
    header["sender"] = name_to_general_name(spec["sender"].asn1Object, sender)
    header["recipient"] = name_to_general_name(spec["recipient"].asn1Object, recipient)
    # DER GeneralizedTime: UTC, seconds, no fraction (X.690 §11.7).
    header["messageTime"] = spec["messageTime"].asn1Object.clone(datetime.now(UTC).strftime("%Y%m%d%H%M%SZ"))
    for name, value in (
        ("senderKID", sender_kid),
        ("transactionID", transaction_id),
        ("senderNonce", sender_nonce),
        ("recipNonce", recip_nonce),
    ):
        if value is not None:
            header[name] = spec[name].asn1Object.clone(value)
    if implicit_confirm:
        info = spec["generalInfo"].asn1Object.clone()
        itav = rfc9480.InfoTypeAndValue()
        itav["infoType"] = univ.ObjectIdentifier(ID_IT_IMPLICIT_CONFIRM)
        itav["infoValue"] = univ.Any(b"\x05\x00")  # ImplicitConfirmValue ::= NULL
        info.append(itav)
        header["generalInfo"] = info


def _request_message(
    body_type: str,
    *,
    pvno: int,
    sender: x509.Name | None,
    recipient: x509.Name | None,
    transaction_id: bytes | None,
    sender_nonce: bytes | None,
    recip_nonce: bytes | None,
    sender_kid: bytes | None,
    implicit_confirm: bool = False,
) -> tuple[Any, Any]:
    """A message with a client header and an empty body of ``body_type``: (message, body spec)."""
    msg = rfc9480.PKIMessage()
    _header(
        msg,
        pvno=pvno,
        sender=sender,
        recipient=recipient,
        transaction_id=transaction_id if transaction_id is not None else os.urandom(_NONCE_BYTES),
        sender_nonce=sender_nonce if sender_nonce is not None else os.urandom(_NONCE_BYTES),
        recip_nonce=recip_nonce,
        sender_kid=sender_kid,
        implicit_confirm=implicit_confirm,
    )
    return msg, msg["body"].componentType[body_type].asn1Object


def _response_message(
    request: RequestContext | None, *, sender: x509.Name | None, implicit_confirm: bool = False
) -> Any:
    header = request.header if isinstance(request, CMPRequest) else request
    msg = rfc9480.PKIMessage()
    _header(
        msg,
        pvno=3 if header is not None and header.pvno == 3 else 2,
        sender=sender,
        recipient=header.sender if header is not None else None,
        transaction_id=header.transaction_id if header is not None else None,
        sender_nonce=os.urandom(_NONCE_BYTES),
        recip_nonce=header.sender_nonce if header is not None else None,
        sender_kid=None,
        implicit_confirm=implicit_confirm,
    )
    return msg


def _fill_status(target: Any, info: StatusInfo) -> None:
    """Fill a PKIStatusInfo value (RFC 4210's or RFC 9480's class: both are in use)."""
    target["status"] = _STATUS_CODES[info.status]
    if info.text:
        target["statusString"].append(info.text)
    if info.failure_info:
        bits = {FAILURE_INFO_NAMES[name] for name in info.failure_info}
        binary = "".join("1" if i in bits else "0" for i in range(max(bits) + 1))
        target["failInfo"] = target.componentType["failInfo"].asn1Object.clone(binValue=binary)


def _status(status: PKIStatus, failure_info: FailureInfo | None, text: str | None) -> StatusInfo:
    return StatusInfo(status=status, failure_info=(failure_info,) if failure_info else (), text=text)


def _cert_rep(
    body_type: str,
    request: RequestContext,
    cert: x509.Certificate | None,
    ca_pubs: Sequence[x509.Certificate],
    cert_req_id: int,
    status: PKIStatus,
    failure_info: FailureInfo | None,
    text: str | None,
    sender: x509.Name | None,
    implicit_confirm: bool,
) -> Any:
    if (cert is not None) != (status in ("accepted", "grantedWithMods")):
        raise ValueError("a certificate goes with status accepted or grantedWithMods, and only with them")
    msg = _response_message(request, sender=sender, implicit_confirm=implicit_confirm)
    rep = msg["body"].componentType[body_type].asn1Object.clone()
    if ca_pubs:
        pubs = rep.componentType["caPubs"].asn1Object.clone()
        for c in ca_pubs:
            pubs.append(cert_to_asn1(pubs.componentType, c))
        rep["caPubs"] = pubs
    response = rfc9480.CertResponse()
    response["certReqId"] = cert_req_id
    _fill_status(response["status"], _status(status, failure_info, text))
    if cert is not None:
        cert_or_enc = response["certifiedKeyPair"]["certOrEncCert"]
        cert_or_enc["certificate"] = cert_to_asn1(cert_or_enc.componentType["certificate"].asn1Object, cert)
    rep["response"].append(response)
    msg["body"][body_type] = rep
    return msg


def build_ip(
    request: RequestContext,
    cert: x509.Certificate | None,
    ca_pubs: Sequence[x509.Certificate] = (),
    cert_req_id: int = 0,
    status: PKIStatus = "accepted",
    *,
    failure_info: FailureInfo | None = None,
    text: str | None = None,
    sender: x509.Name | None = None,
    implicit_confirm: bool = False,
) -> Any:
    """An ip answering an ir: ``cert`` when accepted, else ``failure_info``/``text``.

    ``ca_pubs`` are the CA certificates the new end entity should trust (RFC 9483 §4.1.1:
    the root, for an ir). ``implicit_confirm`` grants the client's request to skip certConf;
    the server must only grant what the request asked for. ``sender`` is the server's name.
    """
    return _cert_rep("ip", request, cert, ca_pubs, cert_req_id, status, failure_info, text, sender, implicit_confirm)


def build_cp(
    request: RequestContext,
    cert: x509.Certificate | None,
    ca_pubs: Sequence[x509.Certificate] = (),
    cert_req_id: int = 0,
    status: PKIStatus = "accepted",
    *,
    failure_info: FailureInfo | None = None,
    text: str | None = None,
    sender: x509.Name | None = None,
    implicit_confirm: bool = False,
) -> Any:
    """A cp answering a cr or p10cr (use ``cert_req_id=-1`` for p10cr, RFC 9483 §4.1.4)."""
    return _cert_rep("cp", request, cert, ca_pubs, cert_req_id, status, failure_info, text, sender, implicit_confirm)


def build_kup(
    request: RequestContext,
    cert: x509.Certificate | None,
    ca_pubs: Sequence[x509.Certificate] = (),
    cert_req_id: int = 0,
    status: PKIStatus = "accepted",
    *,
    failure_info: FailureInfo | None = None,
    text: str | None = None,
    sender: x509.Name | None = None,
    implicit_confirm: bool = False,
) -> Any:
    """A kup answering a kur."""
    return _cert_rep("kup", request, cert, ca_pubs, cert_req_id, status, failure_info, text, sender, implicit_confirm)


def build_error(
    request: RequestContext | None,
    failure_info: FailureInfo,
    text: str,
    *,
    sender: x509.Name | None = None,
    error_code: int | None = None,
) -> Any:
    """An error message (status rejection). ``request`` is ``None`` when the request could not
    even be decoded: the header then has no transactionID and no recipNonce to echo."""
    msg = _response_message(request, sender=sender)
    content = msg["body"].componentType["error"].asn1Object.clone()
    _fill_status(content["pKIStatusInfo"], _status("rejection", failure_info, text))
    if error_code is not None:
        content["errorCode"] = error_code
    msg["body"]["error"] = content
    return msg


def build_pkiconf(request: RequestContext, *, sender: x509.Name | None = None) -> Any:
    """The pkiConf that answers a certConf."""
    msg = _response_message(request, sender=sender)
    msg["body"]["pkiconf"] = msg["body"].componentType["pkiconf"].asn1Object.clone(b"")
    return msg


def build_rp(request: RequestContext, statuses: Sequence[StatusInfo], *, sender: x509.Name | None = None) -> Any:
    """An rp with one status per RevDetails of the rr, in the same order."""
    if not statuses:
        raise ValueError("an rp needs at least one status")
    msg = _response_message(request, sender=sender)
    rep = msg["body"].componentType["rp"].asn1Object.clone()
    for info in statuses:
        target = rep["status"].componentType.clone()
        _fill_status(target, info)
        rep["status"].append(target)
    msg["body"]["rp"] = rep
    return msg


def _itav(oid: str, value_der: bytes | None) -> Any:
    itav = rfc9480.InfoTypeAndValue()
    itav["infoType"] = univ.ObjectIdentifier(oid)
    if value_der is not None:
        itav["infoValue"] = univ.Any(value_der)
    return itav


def _cert_or_none(tag: int, cert: x509.Certificate | None) -> bytes:
    return tlv(tag, _cert_der(cert)) if cert is not None else b""


def build_genp(
    request: RequestContext,
    *,
    ca_certs: Sequence[x509.Certificate] | None = None,
    root_ca_update: RootCaUpdate | None = None,
    answer_root_ca_update: bool = False,
    sender: x509.Name | None = None,
) -> Any:
    """A genp for the Lightweight CMP information requests (RFC 9483 §4.3).

    ``ca_certs`` answers id-it-caCerts (an empty list: the infoValue is left out, meaning
    "none"). ``root_ca_update`` answers a genm with id-it-rootCaCert by id-it-rootCaKeyUpdate;
    with ``answer_root_ca_update`` and no update, that answer has no value ("no update").
    """
    msg = _response_message(request, sender=sender)
    content = msg["body"].componentType["genp"].asn1Object.clone()
    if ca_certs is not None:
        value = tlv(0x30, b"".join(_cert_der(c) for c in ca_certs)) if ca_certs else None
        content.append(_itav(ID_IT_CA_CERTS, value))
    if root_ca_update is not None:
        value = tlv(
            0x30,
            _cert_der(root_ca_update.new_with_new)
            + _cert_or_none(0xA0, root_ca_update.new_with_old)
            + _cert_or_none(0xA1, root_ca_update.old_with_new),
        )
        content.append(_itav(ID_IT_ROOT_CA_KEY_UPDATE, value))
    elif answer_root_ca_update:
        content.append(_itav(ID_IT_ROOT_CA_KEY_UPDATE, None))
    msg["body"]["genp"] = content
    return msg


# Client side.


def _extensions_der(extensions: Sequence[x509.Extension[x509.ExtensionType]]) -> bytes:
    items = b""
    for ext in extensions:
        critical = b"\x01\x01\xff" if ext.critical else b""
        value = ext.value.public_bytes()
        items += tlv(0x30, encoder.encode(univ.ObjectIdentifier(ext.oid.dotted_string)) + critical + tlv(0x04, value))
    return tlv(0x30, items)


def _cert_req_msg(
    subject: x509.Name | None,
    public_key: Any,
    signing_key: Any,
    sans: Sequence[x509.GeneralName],
    extensions: Sequence[x509.Extension[x509.ExtensionType]],
    cert_req_id: int,
    old_cert: x509.Certificate | None,
) -> Any:
    public_key = public_key if public_key is not None else signing_key.public_key()
    if not same_public_key(signing_key.public_key(), public_key):
        raise ValueError("the proof of possession must be signed with the key being certified")
    msg = rfc4211.CertReqMsg()
    request = msg["certReq"]
    request["certReqId"] = cert_req_id
    template = request["certTemplate"]
    spec = template.componentType
    if subject is not None:
        template["subject"] = decode_as(spec["subject"].asn1Object, subject.public_bytes())
    template["publicKey"] = decode_as(spec["publicKey"].asn1Object, spki_der(public_key))
    all_extensions = list(extensions)
    if sans:
        # RFC 5280 §4.2.1.6: with an empty subject the SAN is the identity and is critical.
        san = x509.SubjectAlternativeName(list(sans))
        all_extensions.append(x509.Extension(san.oid, not subject or not list(subject), san))
    if all_extensions:
        template["extensions"] = decode_as(spec["extensions"].asn1Object, _extensions_der(all_extensions))
    if old_cert is not None:
        issuer = tlv(0xA4, old_cert.issuer.public_bytes())  # GeneralName directoryName [4]
        cert_id = tlv(0x30, issuer + encoder.encode(univ.Integer(old_cert.serial_number)))
        control = rfc4211.AttributeTypeAndValue()
        control["type"] = univ.ObjectIdentifier(_OLD_CERT_ID)
        control["value"] = univ.Any(cert_id)
        request["controls"].append(control)
    # RFC 4211 §4.1: the signature covers the DER of certReq; no poposkInput (RFC 9483 §4.1.1).
    oid, params, signature = sign(signing_key, encoder.encode(request))
    algorithm = tlv(0x30, encoder.encode(univ.ObjectIdentifier(oid)) + (params or b""))
    poposk = tlv(0x30, algorithm + tlv(0x03, b"\x00" + signature))
    popo = msg["popo"]
    popo["signature"] = decode_as(popo.componentType["signature"].asn1Object, poposk)
    return msg


def _build_crmf(
    body_type: str,
    subject: x509.Name | None,
    public_key: Any,
    signing_key: Any,
    *,
    sans: Sequence[x509.GeneralName],
    extensions: Sequence[x509.Extension[x509.ExtensionType]],
    implicit_confirm: bool,
    sender: x509.Name | None,
    recipient: x509.Name | None,
    transaction_id: bytes | None,
    sender_nonce: bytes | None,
    sender_kid: bytes | None,
    cert_req_id: int,
    pvno: int,
    old_cert: x509.Certificate | None = None,
) -> Any:
    msg, spec = _request_message(
        body_type,
        pvno=pvno,
        sender=sender if sender is not None else subject,
        recipient=recipient,
        transaction_id=transaction_id,
        sender_nonce=sender_nonce,
        recip_nonce=None,
        sender_kid=sender_kid,
        implicit_confirm=implicit_confirm,
    )
    body = spec.clone()
    body.append(_cert_req_msg(subject, public_key, signing_key, sans, extensions, cert_req_id, old_cert))
    msg["body"][body_type] = body
    return msg


def build_ir(
    subject: x509.Name | None,
    public_key: Any,
    signing_key: Any,
    *,
    sans: Sequence[x509.GeneralName] = (),
    extensions: Sequence[x509.Extension[x509.ExtensionType]] = (),
    implicit_confirm: bool = False,
    sender: x509.Name | None = None,
    recipient: x509.Name | None = None,
    transaction_id: bytes | None = None,
    sender_nonce: bytes | None = None,
    sender_kid: bytes | None = None,
    cert_req_id: int = 0,
    pvno: int = 2,
) -> Any:
    """An ir for ``public_key`` (``None``: the signing key's), with a signature POP.

    ``signing_key`` is the private key being certified, typically a token key: it signs the
    proof of possession and is never read otherwise. ``sender`` defaults to ``subject``;
    transactionID and senderNonce default to 16 random octets. Protect the result before
    sending.
    """
    return _build_crmf(
        "ir", subject, public_key, signing_key, sans=sans, extensions=extensions, implicit_confirm=implicit_confirm,
        sender=sender, recipient=recipient, transaction_id=transaction_id, sender_nonce=sender_nonce,
        sender_kid=sender_kid, cert_req_id=cert_req_id, pvno=pvno,
    )  # fmt: skip


def build_cr(
    subject: x509.Name | None,
    public_key: Any,
    signing_key: Any,
    *,
    sans: Sequence[x509.GeneralName] = (),
    extensions: Sequence[x509.Extension[x509.ExtensionType]] = (),
    implicit_confirm: bool = False,
    sender: x509.Name | None = None,
    recipient: x509.Name | None = None,
    transaction_id: bytes | None = None,
    sender_nonce: bytes | None = None,
    sender_kid: bytes | None = None,
    cert_req_id: int = 0,
    pvno: int = 2,
) -> Any:
    """A cr: like :func:`build_ir`, for an entity that already holds a certificate."""
    return _build_crmf(
        "cr", subject, public_key, signing_key, sans=sans, extensions=extensions, implicit_confirm=implicit_confirm,
        sender=sender, recipient=recipient, transaction_id=transaction_id, sender_nonce=sender_nonce,
        sender_kid=sender_kid, cert_req_id=cert_req_id, pvno=pvno,
    )  # fmt: skip


def build_kur(
    subject: x509.Name | None,
    public_key: Any,
    signing_key: Any,
    *,
    old_cert: x509.Certificate | None = None,
    sans: Sequence[x509.GeneralName] = (),
    extensions: Sequence[x509.Extension[x509.ExtensionType]] = (),
    implicit_confirm: bool = False,
    sender: x509.Name | None = None,
    recipient: x509.Name | None = None,
    transaction_id: bytes | None = None,
    sender_nonce: bytes | None = None,
    sender_kid: bytes | None = None,
    cert_req_id: int = 0,
    pvno: int = 2,
) -> Any:
    """A kur for a new key. ``old_cert`` adds the oldCertID control naming the certificate
    being updated; the message must then be signature-protected with that certificate's key
    (RFC 9483 §4.1.3), which :func:`protect_signature` does."""
    return _build_crmf(
        "kur", subject, public_key, signing_key, sans=sans, extensions=extensions, implicit_confirm=implicit_confirm,
        sender=sender, recipient=recipient, transaction_id=transaction_id, sender_nonce=sender_nonce,
        sender_kid=sender_kid, cert_req_id=cert_req_id, pvno=pvno, old_cert=old_cert,
    )  # fmt: skip


def build_p10cr(
    csr: x509.CertificateSigningRequest | bytes,
    *,
    implicit_confirm: bool = False,
    sender: x509.Name | None = None,
    recipient: x509.Name | None = None,
    transaction_id: bytes | None = None,
    sender_nonce: bytes | None = None,
    sender_kid: bytes | None = None,
    pvno: int = 2,
) -> Any:
    """A p10cr carrying a PKCS#10 CSR (an object or its DER); ``sender`` defaults to its subject."""
    if isinstance(csr, bytes | bytearray):
        csr = x509.load_der_x509_csr(bytes(csr))
    msg, spec = _request_message(
        "p10cr",
        pvno=pvno,
        sender=sender if sender is not None else csr.subject,
        recipient=recipient,
        transaction_id=transaction_id,
        sender_nonce=sender_nonce,
        recip_nonce=None,
        sender_kid=sender_kid,
        implicit_confirm=implicit_confirm,
    )
    msg["body"]["p10cr"] = decode_as(spec, csr.public_bytes(serialization.Encoding.DER))
    return msg


def build_rr(
    issuer: x509.Name,
    serial: int,
    reason: x509.ReasonFlags | None = None,
    *,
    sender: x509.Name | None = None,
    recipient: x509.Name | None = None,
    transaction_id: bytes | None = None,
    sender_nonce: bytes | None = None,
    sender_kid: bytes | None = None,
    pvno: int = 2,
) -> Any:
    """An rr for the certificate ``serial`` of ``issuer``; the reason goes into crlEntryDetails."""
    msg, spec = _request_message(
        "rr",
        pvno=pvno,
        sender=sender,
        recipient=recipient,
        transaction_id=transaction_id,
        sender_nonce=sender_nonce,
        recip_nonce=None,
        sender_kid=sender_kid,
    )
    details = rfc9480.RevDetails()
    template = details["certDetails"]
    template["issuer"] = decode_as(template.componentType["issuer"].asn1Object, issuer.public_bytes())
    template["serialNumber"] = template.componentType["serialNumber"].asn1Object.clone(serial)
    if reason is not None:
        crl_reason = x509.CRLReason(reason)
        ext = rfc5280.Extension()
        ext["extnID"] = univ.ObjectIdentifier(_CRL_REASON)
        ext["extnValue"] = crl_reason.public_bytes()
        details["crlEntryDetails"].append(ext)
    body = spec.clone()
    body.append(details)
    msg["body"]["rr"] = body
    return msg


def build_cert_conf(
    cert: x509.Certificate,
    cert_req_id: int = 0,
    *,
    accepted: bool = True,
    failure_info: FailureInfo | None = None,
    text: str | None = None,
    hash_alg: hashes.HashAlgorithm | None = None,
    sender: x509.Name | None = None,
    recipient: x509.Name | None = None,
    transaction_id: bytes,
    sender_nonce: bytes | None = None,
    recip_nonce: bytes,
    sender_kid: bytes | None = None,
    pvno: int = 2,
) -> Any:
    """A certConf confirming (or rejecting) ``cert``, in the transaction of the ip/cp/kup.

    ``transaction_id`` and ``recip_nonce`` come from that response (its senderNonce). The
    certHash uses the hash of the certificate's own signature (RFC 9480 §2.10); a different
    ``hash_alg`` is written into hashAlg, which only cmp2021 has, so pvno becomes 3.
    """
    hash_oid = None
    if hash_alg is not None:
        hash_oid = HASH_OIDS.get(hash_alg.name)
        if hash_oid is None:
            raise ValueError(f"hash {hash_alg.name} has no certConf OID here")
        pvno = 3
    msg, spec = _request_message(
        "certConf",
        pvno=pvno,
        sender=sender,
        recipient=recipient,
        transaction_id=transaction_id,
        sender_nonce=sender_nonce,
        recip_nonce=recip_nonce,
        sender_kid=sender_kid,
    )
    status = rfc9480.CertStatus()
    status["certHash"] = cert_hash(cert, hash_oid)
    status["certReqId"] = cert_req_id
    if not accepted:
        _fill_status(status["statusInfo"], _status("rejection", failure_info, text))
    elif text:
        _fill_status(status["statusInfo"], _status("accepted", None, text))
    if hash_oid is not None:
        algorithm = tlv(0x30, encoder.encode(univ.ObjectIdentifier(hash_oid)))
        status["hashAlg"] = decode_as(status.componentType["hashAlg"].asn1Object, algorithm)
    body = spec.clone()
    body.append(status)
    msg["body"]["certConf"] = body
    return msg


def build_genm(
    info_types: Sequence[str],
    *,
    root_ca_cert: x509.Certificate | None = None,
    sender: x509.Name | None = None,
    recipient: x509.Name | None = None,
    transaction_id: bytes | None = None,
    sender_nonce: bytes | None = None,
    sender_kid: bytes | None = None,
    pvno: int = 2,
) -> Any:
    """A genm asking for ``info_types`` (OIDs, e.g. :data:`ID_IT_CA_CERTS`) without values.

    ``root_ca_cert`` adds id-it-rootCaCert with the root the client trusts now, which is how a
    client asks for a root CA update (RFC 9483 §4.3.2).
    """
    msg, spec = _request_message(
        "genm",
        pvno=pvno,
        sender=sender,
        recipient=recipient,
        transaction_id=transaction_id,
        sender_nonce=sender_nonce,
        recip_nonce=None,
        sender_kid=sender_kid,
    )
    body = spec.clone()
    for oid in info_types:
        body.append(_itav(oid, None))
    if root_ca_cert is not None:
        body.append(_itav(ID_IT_ROOT_CA_CERT, _cert_der(root_ca_cert)))
    msg["body"]["genm"] = body
    return msg
