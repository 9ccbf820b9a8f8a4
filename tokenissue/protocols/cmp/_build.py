"""Building CMP messages: the server's responses and the client's requests.

Every builder returns a new, *unprotected* pyasn1 PKIMessage; protect it with
:func:`~tokenissue.protocols.cmp.protect_pbm`, :func:`protect_pbmac1` or
:func:`protect_signature` (which also set protectionAlg, senderKID and, for signatures,
sender and extraCerts), then :func:`encode_message`. The package exports what is public here.

Response headers follow RFC 9483 §3.1: pvno 2 unless the request used 3, the transactionID
echoed, recipNonce = the request's senderNonce, a fresh 16-octet senderNonce, messageTime now.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import partial
from typing import Any, Final, Literal, get_args

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from pyasn1.codec.der import encoder
from pyasn1.type import univ
from pyasn1_alt_modules import rfc4211, rfc5280, rfc9480

from ._crypto import HASH_OIDS, cert_hash, sign
from ._der import cert_to_asn1, decode_as, name_to_general_name, same_public_key, spki_der, tlv
from ._errors import FAILURE_INFO_NAMES, FailureInfo
from ._parse import (
    CRL_REASON_OID,
    ID_IT_CA_CERTS,
    ID_IT_IMPLICIT_CONFIRM,
    ID_IT_ROOT_CA_CERT,
    ID_IT_ROOT_CA_KEY_UPDATE,
    ID_REGCTRL_OLD_CERT_ID,
    CMPHeader,
    CMPRequest,
    PKIStatus,
    RootCaUpdate,
    StatusInfo,
)

_NONCE_BYTES: Final = 16
_STATUS_CODES: Final[dict[str, int]] = {name: code for code, name in enumerate(get_args(PKIStatus))}

RequestContext = CMPRequest | CMPHeader


@dataclass(frozen=True)
class MessageHeader:
    """What a request's PKIHeader says (RFC 9483 §3.1): one value that every request builder takes.

    ``transaction_id`` and ``sender_nonce`` left ``None`` become 16 random octets each time a
    message is built; ``sender`` left ``None`` becomes the request's subject where it has one.
    ``recip_nonce`` is the peer's last senderNonce (a certConf needs it); ``implicit_confirm``
    asks the server to skip certConf; ``sender_kid`` is what protect_* replace with theirs.
    Response builders derive theirs from the request they answer.
    """

    sender: x509.Name | None = None
    recipient: x509.Name | None = None
    transaction_id: bytes | None = None
    sender_nonce: bytes | None = None
    recip_nonce: bytes | None = None
    sender_kid: bytes | None = None
    implicit_confirm: bool = False
    #: 2 (cmp2000) or 3 (cmp2021).
    pvno: int = 2


def _cert_der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def _header(msg: Any, fields: MessageHeader) -> None:
    """Write ``fields`` into ``msg``'s header as they are (no defaults filled in) and messageTime now."""
    header = msg["header"]
    spec = header.componentType
    header["pvno"] = fields.pvno
    header["sender"] = name_to_general_name(spec["sender"].asn1Object, fields.sender)
    header["recipient"] = name_to_general_name(spec["recipient"].asn1Object, fields.recipient)
    # DER GeneralizedTime: UTC, seconds, no fraction (X.690 §11.7).
    header["messageTime"] = spec["messageTime"].asn1Object.clone(datetime.now(UTC).strftime("%Y%m%d%H%M%SZ"))
    for name, value in (
        ("senderKID", fields.sender_kid),
        ("transactionID", fields.transaction_id),
        ("senderNonce", fields.sender_nonce),
        ("recipNonce", fields.recip_nonce),
    ):
        if value is not None:
            header[name] = spec[name].asn1Object.clone(value)
    if fields.implicit_confirm:
        info = spec["generalInfo"].asn1Object.clone()
        itav = rfc9480.InfoTypeAndValue()
        itav["infoType"] = univ.ObjectIdentifier(ID_IT_IMPLICIT_CONFIRM)
        itav["infoValue"] = univ.Any(b"\x05\x00")  # ImplicitConfirmValue ::= NULL
        info.append(itav)
        header["generalInfo"] = info


def _request_message(
    body_type: str, header: MessageHeader | None, *, subject: x509.Name | None = None
) -> tuple[Any, Any]:
    """A message with a client header and an empty body of ``body_type``: (message, body spec)."""
    header = header or MessageHeader()
    msg = rfc9480.PKIMessage()
    _header(
        msg,
        replace(
            header,
            sender=header.sender if header.sender is not None else subject,
            transaction_id=header.transaction_id if header.transaction_id is not None else os.urandom(_NONCE_BYTES),
            sender_nonce=header.sender_nonce if header.sender_nonce is not None else os.urandom(_NONCE_BYTES),
        ),
    )
    return msg, msg["body"].componentType[body_type].asn1Object


def _response_message(
    request: RequestContext | None, *, sender: x509.Name | None, implicit_confirm: bool = False
) -> Any:
    header = request.header if isinstance(request, CMPRequest) else request
    reply = MessageHeader(sender=sender, sender_nonce=os.urandom(_NONCE_BYTES), implicit_confirm=implicit_confirm)
    if header is not None:
        reply = replace(
            reply,
            pvno=3 if header.pvno == 3 else 2,
            recipient=header.sender,
            transaction_id=header.transaction_id,
            recip_nonce=header.sender_nonce,
        )
    msg = rfc9480.PKIMessage()
    _header(msg, reply)
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
    body_type: Literal["ip", "cp", "kup"],
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
    """An ip, cp or kup (:func:`build_ip`, :func:`build_cp`, :func:`build_kup`): ``cert``
    when accepted, else ``failure_info``/``text``.

    An ip answers an ir, a cp a cr or p10cr (use ``cert_req_id=-1`` for p10cr, RFC 9483
    §4.1.4), a kup a kur. ``ca_pubs`` are the CA certificates the new end entity should trust
    (RFC 9483 §4.1.1: the root, for an ir). ``implicit_confirm`` grants the client's request to
    skip certConf; the server must only grant what the request asked for. ``sender`` is the
    server's name.
    """
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


#: ``build_ip(request, cert, ca_pubs=(), cert_req_id=0, status="accepted", *, failure_info,
#: text, sender, implicit_confirm)``, and the same for cp and kup: see :func:`_cert_rep`.
build_ip = partial(_cert_rep, "ip")
build_cp = partial(_cert_rep, "cp")
build_kup = partial(_cert_rep, "kup")


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
        control["type"] = univ.ObjectIdentifier(ID_REGCTRL_OLD_CERT_ID)
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
    body_type: Literal["ir", "cr", "kur"],
    subject: x509.Name | None,
    public_key: Any,
    signing_key: Any,
    *,
    header: MessageHeader | None = None,
    old_cert: x509.Certificate | None = None,
    sans: Sequence[x509.GeneralName] = (),
    extensions: Sequence[x509.Extension[x509.ExtensionType]] = (),
    cert_req_id: int = 0,
) -> Any:
    """An ir, cr or kur (:func:`build_ir`, :func:`build_cr`, :func:`build_kur`) for
    ``public_key`` (``None``: the signing key's), with a signature POP.

    ``signing_key`` is the private key being certified, typically a token key: it signs the
    proof of possession and is never read otherwise. The header's sender defaults to
    ``subject``. A cr is for an entity that already holds a certificate. For a kur,
    ``old_cert`` adds the oldCertID control naming the certificate being updated; the message
    must then be signature-protected with that certificate's key (RFC 9483 §4.1.3), which
    :func:`protect_signature` does. Protect the result before sending.
    """
    msg, spec = _request_message(body_type, header, subject=subject)
    body = spec.clone()
    body.append(_cert_req_msg(subject, public_key, signing_key, sans, extensions, cert_req_id, old_cert))
    msg["body"][body_type] = body
    return msg


#: ``build_ir(subject, public_key, signing_key, *, header, old_cert, sans, extensions,
#: cert_req_id)``, and the same for cr and kur: see :func:`_build_crmf`.
build_ir = partial(_build_crmf, "ir")
build_cr = partial(_build_crmf, "cr")
build_kur = partial(_build_crmf, "kur")


def build_p10cr(csr: x509.CertificateSigningRequest | bytes, *, header: MessageHeader | None = None) -> Any:
    """A p10cr carrying a PKCS#10 CSR (an object or its DER); the header's sender defaults to its subject."""
    if isinstance(csr, bytes | bytearray):
        csr = x509.load_der_x509_csr(bytes(csr))
    msg, spec = _request_message("p10cr", header, subject=csr.subject)
    msg["body"]["p10cr"] = decode_as(spec, csr.public_bytes(serialization.Encoding.DER))
    return msg


def build_rr(
    issuer: x509.Name, serial: int, reason: x509.ReasonFlags | None = None, *, header: MessageHeader | None = None
) -> Any:
    """An rr for the certificate ``serial`` of ``issuer``; the reason goes into crlEntryDetails."""
    msg, spec = _request_message("rr", header)
    details = rfc9480.RevDetails()
    template = details["certDetails"]
    template["issuer"] = decode_as(template.componentType["issuer"].asn1Object, issuer.public_bytes())
    template["serialNumber"] = template.componentType["serialNumber"].asn1Object.clone(serial)
    if reason is not None:
        crl_reason = x509.CRLReason(reason)
        ext = rfc5280.Extension()
        ext["extnID"] = univ.ObjectIdentifier(CRL_REASON_OID)
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
    header: MessageHeader,
    accepted: bool = True,
    failure_info: FailureInfo | None = None,
    text: str | None = None,
    hash_alg: hashes.HashAlgorithm | None = None,
) -> Any:
    """A certConf confirming (or rejecting) ``cert``, in the transaction of the ip/cp/kup.

    The header's ``transaction_id`` and ``recip_nonce`` come from that response (its
    senderNonce). The certHash uses the hash of the certificate's own signature (RFC 9480
    §2.10); a different ``hash_alg`` is written into hashAlg, which only cmp2021 has, so pvno
    becomes 3.
    """
    if header.transaction_id is None or header.recip_nonce is None:
        raise ValueError("a certConf continues a transaction: its header needs transaction_id and recip_nonce")
    hash_oid = None
    if hash_alg is not None:
        hash_oid = HASH_OIDS.get(hash_alg.name)
        if hash_oid is None:
            raise ValueError(f"hash {hash_alg.name} has no certConf OID here")
        header = replace(header, pvno=3)
    msg, spec = _request_message("certConf", header)
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
    info_types: Sequence[str], *, root_ca_cert: x509.Certificate | None = None, header: MessageHeader | None = None
) -> Any:
    """A genm asking for ``info_types`` (OIDs, e.g. :data:`ID_IT_CA_CERTS`) without values.

    ``root_ca_cert`` adds id-it-rootCaCert with the root the client trusts now, which is how a
    client asks for a root CA update (RFC 9483 §4.3.2).
    """
    msg, spec = _request_message("genm", header)
    body = spec.clone()
    for oid in info_types:
        body.append(_itav(oid, None))
    if root_ca_cert is not None:
        body.append(_itav(ID_IT_ROOT_CA_CERT, _cert_der(root_ca_cert)))
    msg["body"]["genm"] = body
    return msg


def add_general_info(msg: Any, info_type: str, value_der: bytes) -> Any:
    """Add an InfoTypeAndValue to ``msg``'s header generalInfo (before it is protected, so the
    protection covers it); returns ``msg``."""
    header = msg["header"]
    info = header.componentType["generalInfo"].asn1Object.clone()
    if header["generalInfo"].isValue:
        for itav in header["generalInfo"]:
            info.append(itav)
    info.append(_itav(info_type, value_der))
    header["generalInfo"] = info
    return msg
