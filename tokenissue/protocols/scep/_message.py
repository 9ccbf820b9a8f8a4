"""SCEP pkiMessages (RFC 8894 §3): the signed, enveloped requests and the CA's CertRep.

A request is a CMS SignedData (RFC 5652) signed by the requester (its self-signed certificate
for PKCSReq, the certificate being renewed for RenewalReq), with the SCEP attributes among its
signed attributes, over an EnvelopedData encrypted to the RA certificate::

    ContentInfo { signedData { encapContent = DER of ContentInfo { envelopedData {
        KeyTransRecipientInfo (rsaEncryption, to the RA), aes/3des-CBC { message data } } } },
      signerInfo { signedAttrs { contentType, messageDigest, transactionID, messageType,
                                 senderNonce, ... }, signature } }

:func:`parse_request` checks the signature (before anything is decrypted) and then opens the
envelope with a ``decrypt`` callable for the RA's RSA key, which is on a token. A block the
key refuses is not told apart from a good one whose content does not decrypt: both are
``badMessageCheck`` (a random key stands in, as TLS does against Bleichenbacher's attack).

:func:`cert_rep` makes the answer: SUCCESS with the certificate in a degenerate SignedData
encrypted to the requester's certificate, FAILURE with a failInfo, or PENDING. Nothing here
knows about tokens or the CA; keys arrive as cryptography key objects.
"""

from __future__ import annotations

import enum
import hashlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives import padding as sym_padding
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.serialization import pkcs7
from pyasn1.codec.ber import decoder as ber_decoder
from pyasn1.codec.der import decoder as der_decoder
from pyasn1.codec.der import encoder
from pyasn1.error import PyAsn1Error
from pyasn1.type import char, univ, useful
from pyasn1_alt_modules import rfc5280, rfc5652, rfc8894

__all__ = [
    "MAX_MESSAGE_SIZE",
    "FailInfo",
    "MessageType",
    "PKIStatus",
    "SCEPFailure",
    "SCEPMalformed",
    "SCEPRequest",
    "cert_rep",
    "degenerate_certificates",
    "parse_request",
]

MAX_MESSAGE_SIZE: Final = 64 * 1024
#: X.680 PrintableString's characters: a transactionID is echoed in one (RFC 8894 §3.2.1.1).
_PRINTABLE: Final = re.compile(r"[A-Za-z0-9 '()+,\-./:=?]+")


class MessageType(enum.IntEnum):
    CERT_REP = 3
    RENEWAL_REQ = 17
    PKCS_REQ = 19
    CERT_POLL = 20
    GET_CERT = 21
    GET_CRL = 22


class PKIStatus(enum.IntEnum):
    SUCCESS = 0
    FAILURE = 2
    PENDING = 3


class FailInfo(enum.IntEnum):
    BAD_ALG = 0
    BAD_MESSAGE_CHECK = 1
    BAD_REQUEST = 2
    BAD_TIME = 3
    BAD_CERT_ID = 4


class SCEPMalformed(Exception):
    """Not a pkiMessage this CA can answer with a CertRep (no readable signer, transactionID or
    nonce): the HTTP answer is 400 with this sentence."""


class SCEPFailure(Exception):
    """A request to answer with pkiStatus FAILURE and ``fail_info``; ``text`` is for the log and
    for failInfoText (RFC 8894 §3.2.1.4.5)."""

    def __init__(self, fail_info: FailInfo, text: str) -> None:
        super().__init__(text)
        self.fail_info = fail_info
        self.text = text


@dataclass(frozen=True)
class SCEPRequest:
    """A request whose signature checked; ``content`` is the decrypted message data (a DER
    PKCS#10 request, IssuerAndSubject or IssuerAndSerialNumber, by ``message_type``)."""

    message_type: MessageType
    transaction_id: str
    sender_nonce: bytes
    signer: x509.Certificate
    digest: str
    cipher: str
    content: bytes


# -- algorithms ----------------------------------------------------------------------------
_DIGESTS: Final = {
    "1.3.14.3.2.26": "sha1",
    "2.16.840.1.101.3.4.2.1": "sha256",
    "2.16.840.1.101.3.4.2.2": "sha384",
    "2.16.840.1.101.3.4.2.3": "sha512",
}
_DIGEST_OIDS: Final = {v: k for k, v in _DIGESTS.items()}
_HASHES: Final[dict[str, Callable[[], hashes.HashAlgorithm]]] = {
    "sha1": hashes.SHA1, "sha256": hashes.SHA256, "sha384": hashes.SHA384, "sha512": hashes.SHA512,
}  # fmt: skip
_RSA_ENCRYPTION: Final = "1.2.840.113549.1.1.1"
#: signatureAlgorithm values a signerInfo may carry: rsaEncryption (the hash is the
#: digestAlgorithm's), shaNWithRSAEncryption and ecdsa-with-SHAN (a renewal with an EC key).
_SIGNATURES: Final = {
    _RSA_ENCRYPTION: ("rsa", None),
    "1.2.840.113549.1.1.5": ("rsa", "sha1"),
    "1.2.840.113549.1.1.11": ("rsa", "sha256"),
    "1.2.840.113549.1.1.12": ("rsa", "sha384"),
    "1.2.840.113549.1.1.13": ("rsa", "sha512"),
    "1.2.840.10045.4.3.2": ("ec", "sha256"),
    "1.2.840.10045.4.3.3": ("ec", "sha384"),
    "1.2.840.10045.4.3.4": ("ec", "sha512"),
}
#: Content encryption: name -> (OID, key length, block size). Single DES only when allowed.
CIPHERS: Final = {
    "aes128": ("2.16.840.1.101.3.4.1.2", 16, 16),
    "aes192": ("2.16.840.1.101.3.4.1.22", 24, 16),
    "aes256": ("2.16.840.1.101.3.4.1.42", 32, 16),
    "des3": ("1.2.840.113549.3.7", 24, 8),
    "des": ("1.3.14.3.2.7", 8, 8),
}
_CIPHER_BY_OID: Final = {oid: name for name, (oid, _, _) in CIPHERS.items()}
_ID_DATA: Final = rfc5652.id_data
_ID_CONTENT_TYPE: Final = rfc5652.id_contentType
_ID_MESSAGE_DIGEST: Final = rfc5652.id_messageDigest
_ID_SIGNING_TIME: Final = rfc5652.id_signingTime


def _algorithm(name: str, key: bytes) -> Any:
    if name.startswith("aes"):
        return algorithms.AES(key)
    return TripleDES(key * 3 if len(key) == 8 else key)


def _cbc(name: str, key: bytes, iv: bytes, data: bytes, *, encrypt: bool) -> bytes:
    cipher = Cipher(_algorithm(name, key), modes.CBC(iv))
    ctx = cipher.encryptor() if encrypt else cipher.decryptor()
    return ctx.update(data) + ctx.finalize()


# -- DER helpers ---------------------------------------------------------------------------
def _decode(der: bytes, spec: Any, what: str, error: Callable[[str], Exception]) -> Any:
    try:
        value, rest = ber_decoder.decode(der, asn1Spec=spec)
    except (PyAsn1Error, ValueError, TypeError):
        raise error(f"The {what} cannot be read.") from None
    if rest:
        raise error(f"The {what} has bytes after its end.")
    return value


def _present(value: Any) -> bool:
    return value is not None and value.isValue


def _oid(value: Any) -> str:
    return ".".join(str(x) for x in value.asTuple())


def _attributes(signed_attrs: Any) -> dict[str, bytes]:
    """Each signed attribute's single value (DER); an attribute twice, or with other than one
    value, is refused (RFC 5652 §5.3 and RFC 8894 §3.2.1)."""
    out: dict[str, bytes] = {}
    for attr in signed_attrs:
        oid = _oid(attr["attrType"])
        if oid in out or len(attr["attrValues"]) != 1:
            raise SCEPMalformed("A signed attribute of the request is repeated or has other than one value.")
        out[oid] = bytes(attr["attrValues"][0])
    return out


def _string(der: bytes, what: str) -> str:
    for spec in (char.PrintableString(), char.UTF8String(), char.IA5String()):
        try:
            value, rest = der_decoder.decode(der, asn1Spec=spec)
        except PyAsn1Error:
            continue
        if not rest:
            return str(value)
    raise SCEPMalformed(f"The request's {what} is not a string.")


def _octets(der: bytes, what: str) -> bytes:
    try:
        value, rest = ber_decoder.decode(der, asn1Spec=univ.OctetString())
    except PyAsn1Error:
        raise SCEPMalformed(f"The request's {what} is not an OCTET STRING.") from None
    if rest:
        raise SCEPMalformed(f"The request's {what} is not an OCTET STRING.")
    return bytes(value)


def _issuer_and_serial(cert: x509.Certificate) -> Any:
    ias = rfc5652.IssuerAndSerialNumber()
    name, _ = der_decoder.decode(cert.issuer.public_bytes(), asn1Spec=rfc5280.Name())
    ias["issuer"] = name
    ias["serialNumber"] = cert.serial_number
    return ias


def _matches(rid_or_sid: Any, cert: x509.Certificate) -> bool:
    kind = rid_or_sid.getName()
    if kind == "issuerAndSerialNumber":
        ias = rid_or_sid["issuerAndSerialNumber"]
        return int(ias["serialNumber"]) == cert.serial_number and encoder.encode(ias["issuer"]) == cert.issuer.public_bytes()
    if kind == "subjectKeyIdentifier":
        try:
            ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
        except x509.ExtensionNotFound:
            return False
        return bytes(rid_or_sid["subjectKeyIdentifier"]) == ski
    return False


def _certificates(signed: Any) -> list[x509.Certificate]:
    out = []
    if _present(signed["certificates"]):
        for choice in signed["certificates"]:
            if choice.getName() != "certificate":
                continue
            try:
                out.append(x509.load_der_x509_certificate(encoder.encode(choice["certificate"])))
            except (ValueError, PyAsn1Error):
                continue
    return out


# -- requests ------------------------------------------------------------------------------
def parse_request(
    der: bytes,
    *,
    ra_cert: x509.Certificate,
    decrypt: Callable[[bytes], bytes | None],
    ciphers: frozenset[str] = frozenset({"aes128", "aes192", "aes256", "des3"}),
) -> SCEPRequest:
    """Check and open one pkiMessage; see the module's description.

    Raises :class:`SCEPMalformed` when no CertRep can be made (the answer is HTTP 400), and
    :class:`SCEPFailure` (with the transaction's fields in ``.request``) when the CertRep is a
    FAILURE.
    """
    if len(der) > MAX_MESSAGE_SIZE:
        raise SCEPMalformed(f"The pkiMessage is larger than {MAX_MESSAGE_SIZE} bytes.")
    info = _decode(der, rfc5652.ContentInfo(), "pkiMessage", SCEPMalformed)
    if info["contentType"] != rfc5652.id_signedData:
        raise SCEPMalformed("The pkiMessage is not a CMS SignedData.")
    signed = _decode(bytes(info["content"]), rfc5652.SignedData(), "pkiMessage's SignedData", SCEPMalformed)
    if len(signed["signerInfos"]) != 1:
        raise SCEPMalformed("The pkiMessage must have exactly one signer.")
    signer_info = signed["signerInfos"][0]
    if not _present(signer_info["signedAttrs"]):
        raise SCEPMalformed("The pkiMessage has no signed attributes.")
    attrs = _attributes(signer_info["signedAttrs"])
    for oid, what in ((rfc8894.id_transactionID, "transactionID"), (rfc8894.id_messageType, "messageType"),
                      (rfc8894.id_senderNonce, "senderNonce")):  # fmt: skip
        if str(oid) not in attrs:
            raise SCEPMalformed(f"The pkiMessage has no {what}.")
    tid = _string(attrs[str(rfc8894.id_transactionID)], "transactionID")
    if not 1 <= len(tid) <= 128 or not _PRINTABLE.fullmatch(tid):
        raise SCEPMalformed("The request's transactionID must be 1 to 128 PrintableString characters.")
    nonce = _octets(attrs[str(rfc8894.id_senderNonce)], "senderNonce")
    if not 8 <= len(nonce) <= 64:
        raise SCEPMalformed("The request's senderNonce must be 8 to 64 octets (RFC 8894: 16).")
    type_text = _string(attrs[str(rfc8894.id_messageType)], "messageType")
    signer = next((c for c in _certificates(signed) if _matches(signer_info["sid"], c)), None)
    if signer is None:
        raise SCEPMalformed("The pkiMessage does not carry its signer's certificate.")
    partial = _Partial(tid, nonce, signer, _DIGESTS.get(_oid(signer_info["digestAlgorithm"]["algorithm"]), "sha256"))
    try:
        message_type = MessageType(int(type_text)) if type_text.isdigit() else None
    except ValueError:
        message_type = None
    if message_type is None or message_type is MessageType.CERT_REP:
        raise partial.failure(FailInfo.BAD_REQUEST, f"messageType {type_text!r} is not a request this CA answers.")
    encap = signed["encapContentInfo"]
    if encap["eContentType"] != _ID_DATA or not _present(encap["eContent"]):
        raise partial.failure(FailInfo.BAD_REQUEST, "The pkiMessage carries no data.")
    content = bytes(encap["eContent"])
    digest = _verify_signer(signer_info, attrs, signer, content, partial)
    plain, cipher = _open_envelope(content, ra_cert, decrypt, ciphers, partial)
    return SCEPRequest(message_type, tid, nonce, signer, digest, cipher, plain)


@dataclass(frozen=True)
class _Partial:
    """What a FAILURE answer needs, known once the signer and nonce are read."""

    transaction_id: str
    sender_nonce: bytes
    signer: x509.Certificate
    digest: str

    def failure(self, fail_info: FailInfo, text: str) -> SCEPFailure:
        e = SCEPFailure(fail_info, text)
        e.request = self  # type: ignore[attr-defined]
        return e


def _verify_signer(signer_info: Any, attrs: dict[str, bytes], signer: x509.Certificate, content: bytes, partial: _Partial) -> str:
    digest = _DIGESTS.get(_oid(signer_info["digestAlgorithm"]["algorithm"]))
    if digest is None:
        raise partial.failure(FailInfo.BAD_ALG, "The request's digest algorithm is not SHA-1 or SHA-2.")
    sig_alg = _SIGNATURES.get(_oid(signer_info["signatureAlgorithm"]["algorithm"]))
    if sig_alg is None:
        raise partial.failure(FailInfo.BAD_ALG, "The request's signature algorithm is not RSA or ECDSA.")
    kind, sig_hash = sig_alg
    if str(_ID_MESSAGE_DIGEST) not in attrs:
        raise partial.failure(FailInfo.BAD_MESSAGE_CHECK, "The request has no messageDigest.")
    if _octets(attrs[str(_ID_MESSAGE_DIGEST)], "messageDigest") != hashlib.new(digest, content).digest():
        raise partial.failure(FailInfo.BAD_MESSAGE_CHECK, "The request's messageDigest does not match its content.")
    # RFC 5652 §5.4: the signature is over the DER of the attributes as a SET OF (tag 0x31).
    signed_der = b"\x31" + encoder.encode(signer_info["signedAttrs"])[1:]
    try:
        public = signer.public_key()
    except (ValueError, UnsupportedAlgorithm):
        raise partial.failure(FailInfo.BAD_ALG, "The request's signer has a key of a kind this CA does not know.") from None
    chosen = _HASHES[sig_hash or digest]()
    try:
        if kind == "rsa" and isinstance(public, rsa.RSAPublicKey):
            public.verify(bytes(signer_info["signature"]), signed_der, padding.PKCS1v15(), chosen)
        elif kind == "ec" and isinstance(public, ec.EllipticCurvePublicKey):
            public.verify(bytes(signer_info["signature"]), signed_der, ec.ECDSA(chosen))
        else:
            raise partial.failure(FailInfo.BAD_ALG, "The request's signature algorithm does not fit its signer's key.")
    except InvalidSignature:
        raise partial.failure(FailInfo.BAD_MESSAGE_CHECK, "The request's signature does not verify.") from None
    return digest


def _open_envelope(
    content: bytes, ra_cert: x509.Certificate, decrypt: Callable[[bytes], bytes | None], ciphers: frozenset[str],
    partial: _Partial,
) -> tuple[bytes, str]:  # fmt: skip
    def bad(text: str) -> SCEPFailure:
        return partial.failure(FailInfo.BAD_MESSAGE_CHECK, text)

    info = _decode(content, rfc5652.ContentInfo(), "pkcsPKIEnvelope", lambda t: bad(t))
    if info["contentType"] != rfc5652.id_envelopedData:
        raise bad("The pkcsPKIEnvelope is not a CMS EnvelopedData.")
    enveloped = _decode(bytes(info["content"]), rfc5652.EnvelopedData(), "pkcsPKIEnvelope", lambda t: bad(t))
    ktri = None
    for ri in enveloped["recipientInfos"]:
        if ri.getName() == "ktri" and _matches(ri["ktri"]["rid"], ra_cert):
            ktri = ri["ktri"]
            break
    if ktri is None:
        raise bad("The request is not encrypted to this CA's RA certificate; fetch it again with GetCACert.")
    if _oid(ktri["keyEncryptionAlgorithm"]["algorithm"]) != _RSA_ENCRYPTION:
        raise partial.failure(FailInfo.BAD_ALG, "The content key must be encrypted with rsaEncryption (PKCS#1 v1.5).")
    eci = enveloped["encryptedContentInfo"]
    name = _CIPHER_BY_OID.get(_oid(eci["contentEncryptionAlgorithm"]["algorithm"]))
    if name is None or name not in ciphers:
        offered = ", ".join(sorted(ciphers))
        raise partial.failure(FailInfo.BAD_ALG, f"The request's content cipher is not one this CA accepts ({offered}).")
    _, key_len, block = CIPHERS[name]
    params = eci["contentEncryptionAlgorithm"]["parameters"]
    iv = _octets(bytes(params), "IV") if _present(params) else b""
    if len(iv) != block or not _present(eci["encryptedContent"]):
        raise bad("The request's encrypted content or its IV is malformed.")
    data = bytes(eci["encryptedContent"])
    if not data or len(data) % block:
        raise bad("The request's encrypted content is not whole blocks.")
    cek = decrypt(bytes(ktri["encryptedKey"]))
    if cek is None or len(cek) != key_len:
        cek = os.urandom(key_len)  # implicit rejection: the same path as a good key (see above)
    padded = _cbc(name, cek, iv, data, encrypt=False)
    unpadder = sym_padding.PKCS7(block * 8).unpadder()
    try:
        plain = unpadder.update(padded) + unpadder.finalize()
    except ValueError:
        raise bad("The request could not be decrypted.") from None
    return plain, name


# -- answers -------------------------------------------------------------------------------
def degenerate_certificates(certs: list[x509.Certificate]) -> bytes:
    """A certs-only SignedData (DER), the form of GetCACert and of a CertRep's certificate."""
    return pkcs7.serialize_certificates(certs, serialization.Encoding.DER)


def _attribute(oid: Any, value: Any) -> Any:
    attr = rfc5652.Attribute()
    attr["attrType"] = oid
    attr["attrValues"].append(univ.Any(encoder.encode(value)))
    return attr


def _envelope(data: bytes, recipient: x509.Certificate, cipher: str) -> bytes:
    public = recipient.public_key()
    if not isinstance(public, rsa.RSAPublicKey):
        raise ValueError("SCEP encrypts to RSA keys only")
    oid, key_len, block = CIPHERS[cipher]
    cek, iv = os.urandom(key_len), os.urandom(block)
    padder = sym_padding.PKCS7(block * 8).padder()
    encrypted = _cbc(cipher, cek, iv, padder.update(data) + padder.finalize(), encrypt=True)
    ktri = rfc5652.KeyTransRecipientInfo()
    ktri["version"] = 0
    ktri["rid"]["issuerAndSerialNumber"] = _issuer_and_serial(recipient)
    ktri["keyEncryptionAlgorithm"]["algorithm"] = univ.ObjectIdentifier(_RSA_ENCRYPTION)
    ktri["keyEncryptionAlgorithm"]["parameters"] = univ.Any(encoder.encode(univ.Null("")))
    ktri["encryptedKey"] = public.encrypt(cek, padding.PKCS1v15())
    enveloped = rfc5652.EnvelopedData()
    enveloped["version"] = 0
    ri = rfc5652.RecipientInfo()
    ri["ktri"] = ktri
    enveloped["recipientInfos"].append(ri)
    eci = enveloped["encryptedContentInfo"]
    eci["contentType"] = _ID_DATA
    eci["contentEncryptionAlgorithm"]["algorithm"] = univ.ObjectIdentifier(oid)
    eci["contentEncryptionAlgorithm"]["parameters"] = univ.Any(encoder.encode(univ.OctetString(iv)))
    eci["encryptedContent"] = eci["encryptedContent"].clone(encrypted)
    info = rfc5652.ContentInfo()
    info["contentType"] = rfc5652.id_envelopedData
    info["content"] = univ.Any(encoder.encode(enveloped))
    der: bytes = encoder.encode(info)
    return der


def cert_rep(
    signer_key: Any,
    signer_cert: x509.Certificate,
    *,
    transaction_id: str,
    recipient_nonce: bytes,
    status: PKIStatus,
    fail_info: FailInfo | None = None,
    fail_text: str | None = None,
    issued: list[x509.Certificate] | None = None,
    recipient: x509.Certificate | None = None,
    cipher: str = "aes256",
    digest: str = "sha256",
) -> bytes:
    """The CertRep pkiMessage (DER), signed with ``signer_key`` (the RA's key on the token).

    For SUCCESS, ``issued`` (the new certificate first) goes in a degenerate SignedData
    encrypted with ``cipher`` to ``recipient``, the request's signer. FAILURE carries
    ``fail_info`` and, when given, failInfoText; PENDING nothing more. ``digest`` is the
    request's digest algorithm, answered with SHA-256 when it is SHA-1.
    """
    if digest not in ("sha256", "sha384", "sha512"):
        digest = "sha256"  # the request's own unless it is SHA-1, which answers are never signed with
    content = b""
    if status is PKIStatus.SUCCESS:
        assert issued and recipient is not None
        content = _envelope(degenerate_certificates(issued), recipient, cipher)
    attrs = [
        _attribute(_ID_CONTENT_TYPE, _ID_DATA),
        _attribute(_ID_SIGNING_TIME, rfc5280.Time().setComponentByName(
            "utcTime", useful.UTCTime(datetime.now(UTC).strftime("%y%m%d%H%M%SZ")))),
        _attribute(_ID_MESSAGE_DIGEST, univ.OctetString(hashlib.new(digest, content).digest())),
        _attribute(rfc8894.id_transactionID, char.PrintableString(transaction_id)),
        _attribute(rfc8894.id_messageType, char.PrintableString(str(int(MessageType.CERT_REP)))),
        _attribute(rfc8894.id_pkiStatus, char.PrintableString(str(int(status)))),
        _attribute(rfc8894.id_senderNonce, univ.OctetString(os.urandom(16))),
        _attribute(rfc8894.id_recipientNonce, univ.OctetString(recipient_nonce)),
    ]  # fmt: skip
    if status is PKIStatus.FAILURE:
        assert fail_info is not None
        attrs.append(_attribute(rfc8894.id_failInfo, char.PrintableString(str(int(fail_info)))))
        if fail_text:
            attrs.append(_attribute(rfc8894.id_scep_failInfoText, char.UTF8String(fail_text)))
    signer_info = rfc5652.SignerInfo()
    signer_info["version"] = 1
    signer_info["sid"]["issuerAndSerialNumber"] = _issuer_and_serial(signer_cert)
    signer_info["digestAlgorithm"]["algorithm"] = univ.ObjectIdentifier(_DIGEST_OIDS[digest])
    signed_attrs = signer_info["signedAttrs"]
    for a in attrs:
        signed_attrs.append(a)
    signed_der = b"\x31" + encoder.encode(signed_attrs)[1:]
    public = signer_cert.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        signer_info["signatureAlgorithm"]["algorithm"] = univ.ObjectIdentifier(_RSA_ENCRYPTION)
        signer_info["signatureAlgorithm"]["parameters"] = univ.Any(encoder.encode(univ.Null("")))
        signature = signer_key.sign(signed_der, padding.PKCS1v15(), _HASHES[digest]())
    else:
        ec_oid = {"sha256": "1.2.840.10045.4.3.2", "sha384": "1.2.840.10045.4.3.3", "sha512": "1.2.840.10045.4.3.4"}
        signer_info["signatureAlgorithm"]["algorithm"] = univ.ObjectIdentifier(ec_oid.get(digest, ec_oid["sha256"]))
        signature = signer_key.sign(signed_der, ec.ECDSA(_HASHES[digest if digest in ec_oid else "sha256"]()))
    signer_info["signature"] = signature
    signed = rfc5652.SignedData()
    signed["version"] = 1
    alg = signed["digestAlgorithms"].componentType.clone()
    alg["algorithm"] = univ.ObjectIdentifier(_DIGEST_OIDS[digest])
    signed["digestAlgorithms"].append(alg)
    signed["encapContentInfo"]["eContentType"] = _ID_DATA
    signed["encapContentInfo"]["eContent"] = signed["encapContentInfo"]["eContent"].clone(content)
    choice = rfc5652.CertificateChoices()
    cert_asn1, _ = der_decoder.decode(signer_cert.public_bytes(serialization.Encoding.DER), asn1Spec=rfc5280.Certificate())
    choice["certificate"] = cert_asn1
    signed["certificates"].append(choice)
    signed["signerInfos"].append(signer_info)
    info = rfc5652.ContentInfo()
    info["contentType"] = rfc5652.id_signedData
    info["content"] = univ.Any(encoder.encode(signed))
    der: bytes = encoder.encode(info)
    return der
