"""DER in and out: strict message decoding, and the bridge between pyasn1 and cryptography.

pyasn1 refuses to put an untagged value into a tagged field ("tag-incompatible") and cannot
deep-copy values between types whose constraints differ, so values cross between the two
libraries as DER: :func:`decode_as` decodes untagged DER *as* a tagged field's type by adding
or swapping the tag octets, and :func:`plain_der` does the reverse. cryptography has no public
parser for a bare Name or Extensions, so those are read through a throwaway CSR shell
(:func:`_csr_shell`) whose signature and key are never looked at.
"""

from __future__ import annotations

import threading
from typing import Any, ClassVar, Final

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from pyasn1.codec.der import decoder, encoder
from pyasn1.codec.der import encoder as der_encoder
from pyasn1.error import PyAsn1Error
from pyasn1.type import tag
from pyasn1_alt_modules import rfc9480

from ._errors import CMPError, FailureInfo

__all__ = [
    "DECODE_ERRORS",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "bit_octets",
    "cert_from_asn1",
    "cert_to_asn1",
    "decode_as",
    "decode_message",
    "decode_strict",
    "encode_message",
    "extensions_from_asn1",
    "general_name_to_name",
    "is_present",
    "name_from_asn1",
    "name_to_general_name",
    "octets",
    "oid_str",
    "plain_der",
    "public_key_from_spki",
    "same_public_key",
    "set_bits",
    "spki_der",
    "tlv",
    "to_der",
]

#: The default cap on a received message. A Lightweight CMP message with a handful of
#: certificates is a few KiB; pyasn1 decodes about 1 KB per millisecond, so the cap also bounds
#: the CPU time an unauthenticated peer can make the server spend before anything is checked.
DEFAULT_MAX_MESSAGE_SIZE: Final = 128 * 1024

# Everything pyasn1 and cryptography have been seen to raise on hostile input. pyasn1 does not
# document its exceptions and raises plain Python ones (IndexError, TypeError, ...) on some
# malformed encodings; deep nesting raises RecursionError. The fuzz test in
# tests/unit/test_cmp.py feeds random and mutated messages to check the list is complete.
DECODE_ERRORS: Final = (
    PyAsn1Error,
    ValueError,
    TypeError,
    IndexError,
    KeyError,
    AttributeError,
    OverflowError,
    RecursionError,
    UnicodeError,
    x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
    x509.InvalidVersion,  # found by the fuzz test: a certificate with version field 3
    UnsupportedAlgorithm,
)

_SUPPORTED_PVNO: Final = (2, 3)


def decode_message(der: bytes, *, max_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> Any:
    """Decode one DER PKIMessage (``rfc9480.PKIMessage``), strictly.

    Refused with :class:`CMPError`: more than ``max_size`` octets, anything but exactly one
    PKIMessage (trailing octets included), encodings that are BER but not DER (the protection
    is computed over DER, so a non-DER message could never verify and would only cost time),
    and a pvno other than 2 (cmp2000) or 3 (cmp2021).
    """
    if not isinstance(der, bytes | bytearray):
        raise TypeError("a CMP message is bytes")
    if len(der) > max_size:
        raise CMPError("badRequest", f"The CMP message is {len(der)} bytes long; at most {max_size} are accepted.")
    _check_outline(bytes(der))
    msg = decode_strict(bytes(der), rfc9480.PKIMessage(), "CMP message")
    pvno = int(msg["header"]["pvno"])
    if pvno not in _SUPPORTED_PVNO:
        raise CMPError("unsupportedVersion", f"CMP version {pvno} is not supported; use 2 (cmp2000) or 3 (cmp2021).")
    return msg


def _read_tlv(der: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """(identifier, contents start, contents end) of the TLV at ``pos``; definite lengths only."""
    if pos + 2 > end:
        raise CMPError("badDataFormat", "The CMP message is truncated.")
    identifier, first = der[pos], der[pos + 1]
    start = pos + 2
    if first & 0x80:
        n = first & 0x7F
        if n == 0 or n > 4 or start + n > end:
            raise CMPError("badDataFormat", "The CMP message has an invalid length field.")
        length = int.from_bytes(der[start : start + n], "big")
        start += n
    else:
        length = first
    if start + length > end:
        raise CMPError("badDataFormat", "The CMP message is truncated.")
    return identifier, start, start + length


# The universal type inside each explicitly tagged PKIBody alternative: SEQUENCE (OF), except
# pkiconf [19], which is NULL.
_BODY_INNER: Final = {0xA0 + n: 0x05 if n == 19 else 0x30 for n in range(27)}


def _check_outline(der: bytes) -> None:
    """Check the PKIMessage's outer layout before pyasn1 sees it.

    When a tag does not fit PKIMessage or PKIBody, pyasn1 raises an error whose message is the
    ``repr`` of the entire schema: 3.5 MB of text and 0.1-0.5 s of CPU per malformed message,
    measured. These few checks make those cases cheap; everything deeper is left to pyasn1,
    whose errors there are small.
    """
    identifier, start, end = _read_tlv(der, 0, len(der))
    if identifier != 0x30 or end != len(der):
        raise CMPError("badDataFormat", "The CMP message is not one DER SEQUENCE.")
    layout = []
    pos = start
    while pos < end:
        identifier, inner, pos = _read_tlv(der, pos, end)
        layout.append((identifier, inner, pos))
    if len(layout) < 2 or layout[0][0] != 0x30 or layout[1][0] not in _BODY_INNER:
        raise CMPError("badDataFormat", "The CMP message does not start with a PKIHeader and a PKIBody.")
    body, inner, body_end = layout[1]
    inner_identifier, _, inner_end = _read_tlv(der, inner, body_end)
    if inner_identifier != _BODY_INNER[body] or inner_end != body_end:
        raise CMPError("badDataFormat", "The PKIBody's contents do not match its type.")
    optional = [identifier for identifier, _, _ in layout[2:]]
    if optional not in ([], [0xA0], [0xA1], [0xA0, 0xA1]):
        raise CMPError("badDataFormat", "The CMP message has unexpected fields after its body.")


def decode_strict(der: bytes, spec: Any, what: str, failure: FailureInfo = "badDataFormat") -> Any:
    """Decode ``der`` as ``spec``; it must be exactly one value and canonical DER."""
    try:
        value, rest = decoder.decode(der, asn1Spec=spec)
        if rest:
            raise CMPError(failure, f"The {what} is followed by {len(rest)} unexpected bytes.")
        # pyasn1's decoder lets mandatory components be missing; its encoder then fails with an
        # error message that is the repr of the whole schema, which takes ~0.3 s to build: a
        # cheap way for a peer to burn our CPU. Ask first.
        if not value.isValue:
            raise CMPError(failure, f"The {what} lacks a mandatory field.")
        canonical = _canonical_encode(value) == der
    except CMPError:
        raise
    except _NotEncodable as e:
        raise CMPError(failure, f"The {what} is not valid DER (a value cannot be re-encoded).") from e
    except DECODE_ERRORS as e:
        raise CMPError(failure, f"The {what} is not valid DER ASN.1.") from e
    if not canonical:
        raise CMPError(failure, f"The {what} is BER but not DER (RFC 4210 requires DER).")
    return value


class _NotEncodable(Exception):
    """A decoded value the DER encoder refuses (a time without "Z", say)."""


def _cheap_errors(item_encoder: Any) -> Any:
    """``item_encoder`` raising :class:`_NotEncodable` instead of PyAsn1Error.

    pyasn1's encoder wraps a PyAsn1Error at every nesting level into a new one whose message
    is the ``repr`` of the value *and its whole schema*: 0.1 to 0.3 s for one malformed CMP
    message, measured. An exception that is not a PyAsn1Error passes through unwrapped.
    """

    class Cheap(type(item_encoder)):  # type: ignore[misc]
        def encodeValue(self, *args: Any, **kwargs: Any) -> Any:
            try:
                return super().encodeValue(*args, **kwargs)
            except PyAsn1Error:
                raise _NotEncodable from None

    return Cheap()


class _CanonicalItemEncoder(der_encoder.SingleItemEncoder):  # type: ignore[misc]
    TAG_MAP: ClassVar[dict[Any, Any]] = {tag_set: _cheap_errors(enc) for tag_set, enc in der_encoder.TAG_MAP.items()}
    TYPE_MAP: ClassVar[dict[Any, Any]] = {type_id: _cheap_errors(enc) for type_id, enc in der_encoder.TYPE_MAP.items()}


class _CanonicalEncoder(der_encoder.Encoder):  # type: ignore[misc]
    SINGLE_ITEM_ENCODER = _CanonicalItemEncoder


# The DER encoder used only to check that received bytes were canonical DER.
_canonical_encode: Final = _CanonicalEncoder()


def encode_message(msg: Any) -> bytes:
    """DER of a PKIMessage. A value that cannot be encoded is our bug: ``systemFailure``."""
    return to_der(msg, "systemFailure")


def to_der(value: Any, failure: FailureInfo = "badDataFormat") -> bytes:
    try:
        der: bytes = encoder.encode(value)
    except DECODE_ERRORS as e:
        raise CMPError(failure, "A CMP structure could not be DER-encoded; a required field is missing.") from e
    return der


def _der_len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    octets = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(octets)]) + octets


def tlv(identifier: int, content: bytes) -> bytes:
    """One DER TLV with a single-octet identifier (0x30: SEQUENCE, 0xA0: [0] constructed, ...)."""
    return bytes([identifier]) + _der_len(len(content)) + content


def _identifier(t: tag.Tag, constructed: bool) -> int:
    # Every tag in CMP/CRMF is below 31, so its identifier is one octet.
    if t.tagId >= 31:
        raise ValueError("multi-octet tags are not used in CMP")
    return int(t.tagClass) | (0x20 if constructed else 0) | int(t.tagId)


def _skip_header(der: bytes) -> bytes:
    """The contents octets of the TLV at the start of ``der`` (definite lengths, as in DER)."""
    first = der[1]
    if first < 0x80:
        return der[2 : 2 + first]
    n = first & 0x7F
    length = int.from_bytes(der[2 : 2 + n], "big")
    return der[2 + n : 2 + n + length]


def decode_as(spec: Any, der: bytes) -> Any:
    """Decode untagged DER as ``spec``, a possibly tagged field type (see the module docstring).

    Explicit tags wrap the encoding; an implicit tag replaces its first identifier octet. A
    CHOICE cannot be tagged implicitly, so pyasn1 tags it explicitly, which the first case covers.
    """
    base = type(spec)().tagSet.superTags
    want = spec.tagSet.superTags
    if want[: len(base)] == base:
        for t in want[len(base) :]:
            der = tlv(_identifier(t, True), der)
    elif len(want) == len(base) and want[:-1] == base[:-1]:
        der = bytes([_identifier(want[-1], bool(der[0] & 0x20))]) + der[1:]
    else:  # pragma: no cover - no such field in the CMP modules
        raise ValueError("unsupported tagging")
    value, rest = decoder.decode(der, asn1Spec=spec)
    if rest:  # pragma: no cover - der came from an encoder
        raise ValueError("trailing data")
    return value


def plain_der(value: Any) -> bytes:
    """The DER of ``value`` as its untagged base type: what another library expects to parse."""
    der = to_der(value)
    base = type(value)().tagSet.superTags
    have = value.tagSet.superTags
    if have[: len(base)] == base:
        for _ in have[len(base) :]:
            der = _skip_header(der)
        return der
    # Implicitly tagged: put the base type's identifier back.
    return bytes([_identifier(base[-1], bool(der[0] & 0x20))]) + der[1:]


# A CSR around a Name and Extensions lets cryptography parse both with its own, strict,
# parser. The Ed25519 key and signature are zeros and never used.
_SHELL_SPKI: Final = bytes.fromhex("302a300506032b6570032100") + bytes(32)
_SHELL_SIGNATURE: Final = bytes.fromhex("300506032b6570034100") + bytes(64)
_EXTENSION_REQUEST_OID: Final = bytes.fromhex("06092a864886f70d01090e")


def _csr_shell(name_der: bytes = b"\x30\x00", extensions_der: bytes | None = None) -> x509.CertificateSigningRequest:
    attributes = b""
    if extensions_der is not None:
        attributes = tlv(0x30, _EXTENSION_REQUEST_OID + tlv(0x31, extensions_der))
    info = tlv(0x30, b"\x02\x01\x00" + name_der + _SHELL_SPKI + tlv(0xA0, attributes))
    return x509.load_der_x509_csr(tlv(0x30, info + _SHELL_SIGNATURE))


def name_from_asn1(value: Any) -> x509.Name:
    """A pyasn1 Name (tagged or not) as an ``x509.Name``, string types preserved."""
    try:
        return _csr_shell(name_der=plain_der(value)).subject
    except DECODE_ERRORS as e:
        raise CMPError("badDataFormat", "A distinguished name in the CMP message cannot be parsed.") from e


def extensions_from_asn1(value: Any) -> x509.Extensions:
    try:
        return _csr_shell(extensions_der=plain_der(value)).extensions
    except DECODE_ERRORS as e:
        raise CMPError("badCertTemplate", "The extensions in the certificate template cannot be parsed.") from e


def general_name_to_name(value: Any) -> x509.Name | None:
    """The directoryName in a header's sender/recipient; ``None`` for NULL-DN or another kind.

    RFC 4210 §5.1.1 uses the empty DN ("NULL-DN") for "not known"; the Lightweight profile
    (RFC 9483 §3.1) always uses directoryName, so other GeneralName kinds carry no identity
    this package can use.
    """
    if value.getName() != "directoryName":
        return None
    name = name_from_asn1(value["directoryName"])
    return name if list(name) else None


def name_to_general_name(spec: Any, name: x509.Name | None) -> Any:
    """A GeneralName field value holding ``name`` as directoryName (NULL-DN for ``None``)."""
    gn = spec.clone()
    name_spec = gn.componentType["directoryName"].asn1Object
    gn["directoryName"] = decode_as(name_spec, (name or x509.Name([])).public_bytes())
    return gn


def cert_from_asn1(value: Any) -> x509.Certificate:
    try:
        return x509.load_der_x509_certificate(plain_der(value))
    except DECODE_ERRORS as e:
        raise CMPError("badDataFormat", "A certificate in the CMP message cannot be parsed.") from e


def cert_to_asn1(spec: Any, cert: x509.Certificate) -> Any:
    """``cert`` as a pyasn1 value of type ``spec``.

    Decoding a certificate with pyasn1 takes milliseconds, and a CA server puts its own
    certificate (and chain) into every answer, so the decoded values are kept (a small LRU,
    by spec type and DER). They are shared: nothing may modify a value returned here.
    """
    der = cert.public_bytes(serialization.Encoding.DER)
    key = (type(spec), spec.tagSet, der)
    with _CERT_CACHE_LOCK:
        value = _CERT_CACHE.pop(key, None)
    if value is None:
        value = decode_as(spec, der)
    with _CERT_CACHE_LOCK:
        _CERT_CACHE[key] = value  # most recently used last
        while len(_CERT_CACHE) > _CERT_CACHE_SIZE:
            del _CERT_CACHE[next(iter(_CERT_CACHE))]
    return value


_CERT_CACHE: dict[tuple[type, Any, bytes], Any] = {}
_CERT_CACHE_LOCK = threading.Lock()
_CERT_CACHE_SIZE: Final = 64


def public_key_from_spki(value: Any) -> Any:
    try:
        return serialization.load_der_public_key(plain_der(value))
    except DECODE_ERRORS as e:
        raise CMPError("badCertTemplate", "The public key in the certificate template cannot be parsed.") from e
    except UnsupportedAlgorithm as e:
        raise CMPError("badAlg", "The public key in the certificate template is of an unsupported type.") from e


def spki_der(public_key: Any) -> bytes:
    """The DER SubjectPublicKeyInfo of a cryptography public key."""
    der: bytes = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return der


def same_public_key(a: Any, b: Any) -> bool:
    """Whether two cryptography public keys are the same key (the same SubjectPublicKeyInfo)."""
    return spki_der(a) == spki_der(b)


def oid_str(value: Any) -> str:
    return ".".join(str(n) for n in value)


def is_present(value: Any) -> bool:
    """Whether an OPTIONAL component was in the message (pyasn1's ``isValue``)."""
    return bool(value.isValue)


def octets(value: Any) -> bytes:
    return bytes(value.asOctets())


def bit_octets(value: Any, what: str, failure: FailureInfo) -> bytes:
    """A BIT STRING that carries octets (a signature, a MAC); a partial final octet is refused."""
    if len(value) % 8:
        raise CMPError(failure, f"The {what} is not a whole number of octets.")
    return bytes(value.asOctets())


def set_bits(parent: Any, name: str, data: bytes) -> None:
    """Store ``data`` in the BIT STRING field ``name`` of ``parent``, with the field's tags."""
    parent[name] = parent.componentType[name].asn1Object.clone(hexValue=data.hex())


def subject_key_id(cert: x509.Certificate) -> bytes | None:
    """The certificate's subject key identifier; None without a (readable) one."""
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except (x509.ExtensionNotFound, ValueError, x509.DuplicateExtension):
        return None
