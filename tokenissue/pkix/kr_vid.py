"""The Korean identity binding (KCAC.TS.SIVID): a VID in subjectAltName, never the ID number.

A Korean certificate proves, later, that it belongs to the person with a given resident
registration number (or business registration number) without carrying that number: its
subjectAltName holds an otherName ``identifyData`` with the holder's real name and a virtual
ID, ``VID = h(h(DER(HashContent)))`` over the number and a random R that only the holder keeps
(next to the key). A relying party given the number and R recomputes the VID and compares.

The structures, as real certificates encode them (docs/korean-vid.md says what was checked
against what)::

    id-kisa-identifyData ::= 1.2.410.200004.10.1.1     otherName type-id
    id-VID               ::= 1.2.410.200004.10.1.1.1   the userInfo entry holding the VID
    id-randomNum         ::= 1.2.410.200004.10.1.1.3   R, next to the holder's key

    OtherName.value [0] EXPLICIT IdentifyData
    IdentifyData ::= SEQUENCE { realName UTF8String,
                                userInfo SEQUENCE SIZE (1..MAX) OF AttributeTypeAndValue OPTIONAL }
    VID          ::= SEQUENCE { hashAlg AlgorithmIdentifier, virtualID [0] EXPLICIT OCTET STRING }
    HashContent  ::= SEQUENCE { idn PrintableString, randomNum BIT STRING }

The hash is the one ``hashAlg`` names: SHA-256 in current certificates, SHA-1 in old ones. The
number (``idn``) is digits only; it is never logged, stored or put into a message here.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any, Final

from cryptography import x509
from pyasn1.codec.der import decoder as der_decoder
from pyasn1.codec.der import encoder as der_encoder
from pyasn1.error import PyAsn1Error
from pyasn1.type import char, namedtype, tag, univ
from pyasn1_alt_modules import rfc5280

from ..errors import UsageError

__all__ = [
    "ID_IDENTIFY_DATA",
    "ID_IT_IDENTITY",
    "ID_RANDOM_NUM",
    "ID_VID",
    "MIN_RANDOM_BYTES",
    "RANDOM_NUM_OBJECT_ID",
    "IdentifyData",
    "identify_data",
    "identify_data_of",
    "identity_content",
    "identity_from_content",
    "new_random",
    "normalize_idn",
    "vid_digest",
    "vid_matches",
    "without_identify_data",
]

ID_IDENTIFY_DATA: Final = x509.ObjectIdentifier("1.2.410.200004.10.1.1")
ID_VID: Final = x509.ObjectIdentifier("1.2.410.200004.10.1.1.1")
ID_RANDOM_NUM: Final = x509.ObjectIdentifier("1.2.410.200004.10.1.1.3")

#: tokenissue's CMP generalInfo infoType for the holder's identity (HashContent{number, R}),
#: sent encrypted for the registration's code. Under tokenissue's own UUID arc (X.667): the
#: KCAC way encrypts to a key-management certificate of the CA, whose key must decrypt, and a
#: tokenissue CA's token keys only sign (docs/korean-vid.md).
ID_IT_IDENTITY: Final = "2.25.288727268972931500906072155830127687279.10.1"

#: CKA_OBJECT_ID of the token data object that holds R: the DER of id-randomNum.
RANDOM_NUM_OBJECT_ID: Final = der_encoder.encode(univ.ObjectIdentifier(ID_RANDOM_NUM.dotted_string))

#: R has at least 160 bits (KCAC.TS.SIVID); real key files carry 20 bytes.
MIN_RANDOM_BYTES: Final = 20

#: The hashes a VID is made with, by AlgorithmIdentifier OID.
_HASHES: Final[dict[str, str]] = {"2.16.840.1.101.3.4.2.1": "sha256", "1.3.14.3.2.26": "sha1"}
_OID_OF: Final[dict[str, str]] = {name: oid for oid, name in _HASHES.items()}


class _VID(univ.Sequence):  # type: ignore[misc]
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("hashAlg", rfc5280.AlgorithmIdentifier()),
        namedtype.NamedType(
            "virtualID",
            univ.OctetString().subtype(explicitTag=tag.Tag(tag.tagClassContext, tag.tagFormatConstructed, 0)),
        ),
    )


class _AttributeTypeAndValue(univ.Sequence):  # type: ignore[misc]
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("type", univ.ObjectIdentifier()),
        namedtype.NamedType("value", univ.Any()),
    )


class _IdentifyData(univ.Sequence):  # type: ignore[misc]
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("realName", char.UTF8String()),
        namedtype.OptionalNamedType("userInfo", univ.SequenceOf(componentType=_AttributeTypeAndValue())),
    )


class _HashContent(univ.Sequence):  # type: ignore[misc]
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("idn", char.PrintableString()),
        namedtype.NamedType("randomNum", univ.BitString()),
    )


@dataclass(frozen=True)
class IdentifyData:
    """What a certificate's identifyData says: the real name, and the VID with its hash."""

    real_name: str
    hash_name: str | None  #: "sha256", "sha1"; None: no VID, or made with a hash not known here
    virtual_id: bytes | None

    def __repr__(self) -> str:  # the VID is no secret, but it is a person's: keep it out of logs
        return f"IdentifyData(real_name={self.real_name!r}, hash_name={self.hash_name!r})"


def normalize_idn(text: str) -> str:
    """The identification number as HashContent takes it: digits only, separators ('-',
    spaces) removed; 13 digits (resident registration number) or 10 (business registration
    number). The error never repeats the number."""
    digits = "".join(c for c in text if c not in "- \t\r\n")
    if not digits.isascii() or not digits.isdigit() or len(digits) not in (10, 13):
        raise UsageError(
            "The registration number must be 13 digits (resident registration number) or 10 (business "
            "registration number); '-' and spaces may separate them."
        )
    return digits


def new_random() -> bytes:
    """A fresh R: :data:`MIN_RANDOM_BYTES` bytes from the system's CSPRNG."""
    return secrets.token_bytes(MIN_RANDOM_BYTES)


def vid_digest(idn: str, random: bytes, hash_name: str = "sha256") -> bytes:
    """``h(h(DER(HashContent{idn, random})))``: the VID of number ``idn`` (normalised) and R."""
    if hash_name not in _OID_OF:
        raise UsageError(f"A VID is made with SHA-256 or SHA-1, not {hash_name}.")
    if len(random) < MIN_RANDOM_BYTES:
        raise UsageError(f"R must have at least {MIN_RANDOM_BYTES * 8} bits.")
    inner = hashlib.new(hash_name, _hash_content(idn, random)).digest()
    return hashlib.new(hash_name, inner).digest()


def _hash_content(idn: str, random: bytes) -> bytes:
    content = _HashContent()
    content["idn"] = normalize_idn(idn)
    content["randomNum"] = univ.BitString.fromOctetString(random)
    return bytes(der_encoder.encode(content))


def identity_content(idn: str, random: bytes) -> bytes:
    """The DER of HashContent{idn, R}: what a holder sends the CA (encrypted) to have a VID
    made, the same structure the VID hashes."""
    if len(random) < MIN_RANDOM_BYTES:
        raise UsageError(f"R must have at least {MIN_RANDOM_BYTES * 8} bits.")
    return _hash_content(idn, random)


def identity_from_content(der: bytes) -> tuple[str, bytes]:
    """The number and R of :func:`identity_content`'s DER; UsageError if it is not one (the
    message never repeats the number)."""
    try:
        content = _decode(der, _HashContent())
        idn = normalize_idn(str(content["idn"]))
        random = content["randomNum"].asOctets()
    except (PyAsn1Error, UnicodeError, ValueError) as e:
        raise UsageError("The identity sent is not a registration number and R.") from e
    if len(random) < MIN_RANDOM_BYTES:
        raise UsageError(f"R must have at least {MIN_RANDOM_BYTES * 8} bits.")
    return idn, random


def identify_data(real_name: str, virtual_id: bytes, hash_name: str = "sha256") -> x509.OtherName:
    """The subjectAltName entry: otherName identifyData with ``real_name`` and the VID.

    hashAlg is written without parameters, as the certificates of Korean CAs have it."""
    vid = _VID()
    vid["hashAlg"]["algorithm"] = univ.ObjectIdentifier(_OID_OF[hash_name])
    vid["virtualID"] = virtual_id
    atv = _AttributeTypeAndValue()
    atv["type"] = univ.ObjectIdentifier(ID_VID.dotted_string)
    atv["value"] = der_encoder.encode(vid)
    data = _IdentifyData()
    data["realName"] = real_name
    data["userInfo"].append(atv)
    # cryptography writes OtherName.value inside the [0] EXPLICIT tag itself.
    return x509.OtherName(ID_IDENTIFY_DATA, der_encoder.encode(data))


def _decode(der: bytes, spec: Any) -> Any:
    value, rest = der_decoder.decode(der, asn1Spec=spec)
    if rest:
        raise PyAsn1Error("trailing data")
    if der_encoder.encode(value) != der:
        raise PyAsn1Error("not DER")
    return value


def identify_data_of(cert: x509.Certificate) -> IdentifyData | None:
    """The certificate's identifyData, None when it has none; a malformed one is refused."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    except ValueError as e:  # cryptography refuses an otherName value that is not DER
        raise UsageError("The certificate's subjectAltName is malformed.") from e
    found = [n for n in san.get_values_for_type(x509.OtherName) if n.type_id == ID_IDENTIFY_DATA]
    if not found:
        return None
    if len(found) > 1:
        raise UsageError("The certificate has more than one identifyData entry.")
    try:
        data = _decode(found[0].value, _IdentifyData())
        hash_name, virtual_id = None, None
        if data["userInfo"].isValue:
            for atv in data["userInfo"]:
                if str(atv["type"]) != ID_VID.dotted_string:
                    continue
                vid = _decode(bytes(atv["value"]), _VID())
                params = vid["hashAlg"]["parameters"]
                if params.isValue and bytes(params) != b"\x05\x00":  # absent, or NULL: both are seen
                    raise PyAsn1Error("hash parameters")
                hash_name = _HASHES.get(str(vid["hashAlg"]["algorithm"]))
                virtual_id = bytes(vid["virtualID"])
        return IdentifyData(str(data["realName"]), hash_name, virtual_id)
    except (PyAsn1Error, UnicodeError, ValueError) as e:
        raise UsageError("The certificate's identifyData (1.2.410.200004.10.1.1) is malformed.") from e


def without_identify_data(names: list[x509.GeneralName]) -> list[x509.GeneralName]:
    """``names`` less identifyData: a certificate's SANs as a renewal asks for them again. The
    identity binding is the CA's to write (or carry over), never a name a requester asks for."""
    return [n for n in names if not (isinstance(n, x509.OtherName) and n.type_id == ID_IDENTIFY_DATA)]


def vid_matches(cert: x509.Certificate, idn: str, random: bytes) -> bool:
    """Whether ``cert``'s VID is the one of number ``idn`` and R ``random`` (constant time).

    Refused (UsageError) when the certificate carries no VID, or one made with a hash not known
    here: then the question has no answer, which is not the same as "no"."""
    data = identify_data_of(cert)
    if data is None or data.virtual_id is None:
        raise UsageError("The certificate carries no VID (subjectAltName identifyData).")
    if data.hash_name is None:
        raise UsageError("The certificate's VID is made with a hash tokenissue does not know.")
    return hmac.compare_digest(vid_digest(idn, random, data.hash_name), data.virtual_id)
