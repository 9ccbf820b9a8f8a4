"""Subjects and subject alternative names as the user types them, and the rules every name the
CA certifies must meet.

Subjects are RFC 4514 strings, most significant RDN last as in ``openssl -subj`` reversed:
``"CN=홍길동,O=Example Bank,C=KR"``. Values are UTF-8; ``C`` must be two capital letters.
SANs are ``dns:NAME``, ``email:ADDR``, ``uri:URI``, ``ip:ADDR``.

:func:`check_names` holds the rules (docs/ca-admin.md, "Names the CA certifies"). It is the one
place they live: :func:`parse_subject` and :func:`parse_san` apply it to what a user types, and
the CA (``tokenissue.ca.profiles.check_request``) to every request it signs, whether its names
came from our parser, a CSR file or a CMP message.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from collections.abc import Sequence

from cryptography import x509
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import NameOID, ObjectIdentifier

from ..errors import RequestRejected, UsageError

__all__ = ["check_names", "format_san", "parse_san", "parse_subject", "sans_of"]

# Attribute names beyond cryptography's own (CN, L, ST, O, OU, C, STREET, DC, UID), in the
# spellings of RFC 4519 and OpenSSL. cryptography looks names up case-sensitively although
# RFC 4514 names are case-insensitive, so every spelling is offered as written, in upper and
# in lower case: "serialNumber", "SERIALNUMBER" and "serialnumber" all work, and so does "cn".
_NAMES = {
    "CN": NameOID.COMMON_NAME,
    "L": NameOID.LOCALITY_NAME,
    "ST": NameOID.STATE_OR_PROVINCE_NAME,
    "O": NameOID.ORGANIZATION_NAME,
    "OU": NameOID.ORGANIZATIONAL_UNIT_NAME,
    "C": NameOID.COUNTRY_NAME,
    "STREET": NameOID.STREET_ADDRESS,
    "DC": NameOID.DOMAIN_COMPONENT,
    "UID": NameOID.USER_ID,
    "serialNumber": NameOID.SERIAL_NUMBER,
    "GN": NameOID.GIVEN_NAME,
    "givenName": NameOID.GIVEN_NAME,
    "SN": NameOID.SURNAME,
    "surname": NameOID.SURNAME,
    "title": NameOID.TITLE,
    "email": NameOID.EMAIL_ADDRESS,
    "emailAddress": NameOID.EMAIL_ADDRESS,
    "organizationIdentifier": NameOID.ORGANIZATION_IDENTIFIER,
}
_EXTRA_ATTRS = {
    spelling: oid
    for name, oid in _NAMES.items()
    for spelling in (name, name.upper(), name.lower())
}
_SHORT = {oid: name for name, oid in _NAMES.items()} | {NameOID.DN_QUALIFIER: "dnQualifier"}

# -- the rules ---------------------------------------------------------------------------------

#: Most characters per attribute value. RFC 5280 Appendix A.1 (ub-common-name,
#: ub-organization-name, ub-organizational-unit-name, ub-locality-name, ub-state-name,
#: ub-serial-number, ub-title, ub-emailaddress-length) where it sets a bound; for the
#: attributes it leaves at ub-name (32768) or unbounded, tokenissue's own ceiling
#: (_DEFAULT_BOUND); DC is one DNS label (RFC 4519, RFC 1035).
_UPPER_BOUNDS: dict[ObjectIdentifier, int] = {
    NameOID.COMMON_NAME: 64,
    NameOID.ORGANIZATION_NAME: 64,
    NameOID.ORGANIZATIONAL_UNIT_NAME: 64,
    NameOID.LOCALITY_NAME: 128,
    NameOID.STATE_OR_PROVINCE_NAME: 128,
    NameOID.SERIAL_NUMBER: 64,
    NameOID.TITLE: 64,
    NameOID.EMAIL_ADDRESS: 255,
    NameOID.DOMAIN_COMPONENT: 63,
    NameOID.COUNTRY_NAME: 2,
}
_DEFAULT_BOUND = 128

#: Attributes that RFC 5280 (Appendix A.1) and X.520 make PrintableString.
_PRINTABLE_ATTRS = frozenset(
    {NameOID.COUNTRY_NAME, NameOID.SERIAL_NUMBER, NameOID.DN_QUALIFIER, NameOID.JURISDICTION_COUNTRY_NAME}
)
#: Attributes that are IA5String: emailAddress (PKCS#9, RFC 5280 A.1) and DC (RFC 4519).
_IA5_ATTRS = frozenset({NameOID.EMAIL_ADDRESS, NameOID.DOMAIN_COMPONENT})
#: The string types RFC 5280 §4.1.2.4 lets a new certificate use for a DirectoryString.
_DIRECTORY_TYPES = frozenset({_ASN1Type.UTF8String, _ASN1Type.PrintableString})

# X.680 PrintableString: letters, digits, space and ' ( ) + , - . / : = ?
_PRINTABLE_RE = re.compile(r"[A-Za-z0-9 '()+,\-./:=?]*")
_COUNTRY_RE = re.compile(r"[A-Z]{2}")
# An LDH label (RFC 1035 §2.3.1, RFC 5890 §2.3.1): letters, digits, hyphens, not at either end.
_LABEL_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:")
# Most characters in a URI SAN; RFC 5280 sets none, this keeps a certificate from carrying a page.
_MAX_URI = 2048
# Zero-width non-joiner and joiner are format characters that Persian and Indic names need.
_JOINERS = frozenset({"\u200c", "\u200d"})
# Categories never certified: controls, format characters (bidi embeddings, overrides,
# isolates and marks, BOM, tags, soft hyphen), surrogates, private use, unassigned code
# points, and the line and paragraph separators.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def _char_problem(text: str) -> str | None:
    """What is wrong with the first character of ``text`` that must not be certified, if any."""
    for ch in text:
        category = unicodedata.category(ch)
        if category not in _REFUSED_CATEGORIES or ch in _JOINERS:
            continue
        kind = {
            "Cc": "a control character",
            "Cf": "an invisible formatting or text-direction character",
            "Zl": "a line separator",
            "Zp": "a paragraph separator",
        }.get(category, "a character that is not assigned for text")
        return f"{kind} (U+{ord(ch):04X})"
    return None


def _shown(text: str, limit: int = 80) -> str:
    """``text`` safe to quote in a message: non-printable characters escaped, long text cut."""
    out = "".join(ch if _char_problem(ch) is None else f"\\u{ord(ch):04x}" for ch in text[:limit])
    return out + ("..." if len(text) > limit else "")


def _check_attribute(attr: x509.NameAttribute[str | bytes]) -> None:
    name = _SHORT.get(attr.oid, attr.oid.dotted_string)
    where = f"The subject attribute {name}"
    value = attr.value
    if not isinstance(value, str):
        raise RequestRejected(f"{where} is not text; only text attributes are certified.")
    if not value:
        raise RequestRejected(f"{where} is empty; RFC 5280 values hold at least one character.")
    problem = _char_problem(value)
    if problem:
        raise RequestRejected(f"{where} holds {problem}, which is never certified.")
    bound = _UPPER_BOUNDS.get(attr.oid, _DEFAULT_BOUND)
    if attr.oid == NameOID.COUNTRY_NAME or attr.oid == NameOID.JURISDICTION_COUNTRY_NAME:
        if not _COUNTRY_RE.fullmatch(value):
            raise RequestRejected(
                f"{where} '{_shown(value)}' must be an ISO 3166 two-letter code in capitals, such as KR."
            )
    elif len(value) > bound:
        raise RequestRejected(
            f"{where} has {len(value)} characters; at most {bound} are allowed (RFC 5280 upper bounds)."
        )
    string_type = attr._type  # cryptography keeps the ASN.1 type a CSR used, or its default.
    if attr.oid in _PRINTABLE_ATTRS:
        if string_type != _ASN1Type.PrintableString or not _PRINTABLE_RE.fullmatch(value):
            raise RequestRejected(
                f"{where} must be a PrintableString (letters A-Z, digits, space and ' ( ) + , - . / : = ?)."
            )
    elif attr.oid in _IA5_ATTRS:
        if string_type != _ASN1Type.IA5String or not value.isascii():
            raise RequestRejected(f"{where} must be ASCII (an IA5String).")
        if attr.oid == NameOID.EMAIL_ADDRESS:
            _check_email(value, f"The subject's emailAddress '{_shown(value)}'")
    elif string_type not in _DIRECTORY_TYPES:
        raise RequestRejected(
            f"{where} is a {string_type.name}; RFC 5280 asks for UTF8String or PrintableString."
        )
    elif string_type == _ASN1Type.PrintableString and not _PRINTABLE_RE.fullmatch(value):
        raise RequestRejected(f"{where} is a PrintableString with characters PrintableString cannot hold.")


def _check_dns(value: str, where: str, *, allow_wildcard: bool) -> None:
    if not value.isascii():
        raise RequestRejected(f"{where} is not ASCII; write it as IDNA A-labels (xn--...).")
    if len(value) > 253:
        raise RequestRejected(f"{where} has {len(value)} characters; a DNS name has at most 253.")
    labels = value.split(".")
    if labels[0] == "*" and len(labels) > 2:
        if not allow_wildcard:
            raise RequestRejected(f"{where} is a wildcard, which this certificate type does not allow.")
        labels = labels[1:]
    for label in labels:
        if not _LABEL_RE.fullmatch(label):
            raise RequestRejected(
                f"{where} is not a DNS name: each dot-separated label needs 1 to 63 letters, digits or "
                "inner hyphens (a wildcard only as a whole leading '*.')."
            )
        if label[2:4] == "--" and label[:4].lower() == "xn--":
            try:
                text = label[4:].encode("ascii").decode("punycode")
            except UnicodeError:
                raise RequestRejected(f"{where} holds '{label}', which is not a valid IDNA A-label.") from None
            if not text or text.isascii() or _char_problem(text):
                raise RequestRejected(f"{where} holds '{label}', which is not a valid IDNA A-label.")


def _check_email(value: str, where: str) -> None:
    if len(value) > 255:
        raise RequestRejected(f"{where} has {len(value)} characters; at most 255 are allowed.")
    local, at, domain = value.rpartition("@")
    if not at or not local:
        raise RequestRejected(f"{where} is not an address of the form name@domain.")
    if not local.isascii():
        raise RequestRejected(
            f"{where} has a non-ASCII local part; RFC 5280 rfc822Name is IA5String, so use an ASCII address."
        )
    if any(not "!" <= ch <= "~" for ch in local):
        raise RequestRejected(f"{where} has a space or control character before the @.")
    _check_dns(domain, f"{where}'s domain", allow_wildcard=False)


def _check_general_name(name: x509.GeneralName, *, allow_wildcard: bool) -> None:
    if isinstance(name, x509.DNSName):
        where = f"The DNS name '{_shown(name.value)}'"
        problem = _char_problem(name.value)
        if problem:
            raise RequestRejected(f"{where} holds {problem}, which is never certified.")
        _check_dns(name.value, where, allow_wildcard=allow_wildcard)
    elif isinstance(name, x509.RFC822Name):
        where = f"The e-mail address '{_shown(name.value)}'"
        problem = _char_problem(name.value)
        if problem:
            raise RequestRejected(f"{where} holds {problem}, which is never certified.")
        _check_email(name.value, where)
    elif isinstance(name, x509.UniformResourceIdentifier):
        value = name.value
        where = f"The URI '{_shown(value)}'"
        if not value.isascii() or any(not "!" <= ch <= "~" for ch in value):
            raise RequestRejected(
                f"{where} holds a space, a control character or non-ASCII text; RFC 5280 URIs are "
                "IA5String, so percent-encode them (RFC 3986)."
            )
        if len(value) > _MAX_URI:
            raise RequestRejected(f"{where} has {len(value)} characters; at most {_MAX_URI} are allowed.")
        if not _SCHEME_RE.match(value):
            raise RequestRejected(f"{where} has no scheme such as https:.")


def check_names(
    subject: x509.Name, san: Sequence[x509.GeneralName], *, allow_wildcard: bool = True
) -> None:
    """Raise :class:`RequestRejected` with one sentence unless every name is safe to certify.

    Subject attributes: no control, format (bidi), private-use or unassigned characters; at most
    RFC 5280's upper bound of characters; ``C`` two capitals A-Z; C, serialNumber and dnQualifier
    PrintableString; emailAddress and DC IA5String; the rest UTF8String or PrintableString.
    SANs: DNS names of LDH labels or IDNA A-labels (a label at most 63, the name at most 253
    characters), with a leading ``*.`` only when ``allow_wildcard``; e-mail addresses ASCII with a
    valid domain; URIs ASCII without spaces or controls, with a scheme. IP addresses always pass.
    """
    for attr in subject:
        _check_attribute(attr)
    for name in san:
        _check_general_name(name, allow_wildcard=allow_wildcard)


# -- what users type ---------------------------------------------------------------------------


def parse_subject(text: str) -> x509.Name:
    """Parse an RFC 4514 subject; raise :class:`UsageError` with the reason when it is bad."""
    text = text.strip()
    if text.startswith("/"):
        raise UsageError(
            f"Subject '{_shown(text)}' is in OpenSSL's /A=B/ form; write it as 'CN=...,O=...,C=KR'."
        )
    try:
        name = x509.Name.from_rfc4514_string(text, _EXTRA_ATTRS)
    except ValueError as e:
        # cryptography raises a bare ValueError for an unknown attribute name, and one naming
        # the bound for a value longer than it knows.
        reason = str(e) or "an unknown attribute name or a syntax error"
        if reason.startswith("Attribute's length"):
            raise UsageError(
                f"Subject '{_shown(text)}' has a value of the wrong length: {reason} (RFC 5280 upper bounds)."
            ) from None
        raise UsageError(f"Subject '{_shown(text)}' is not an RFC 4514 name ({_shown(reason)}).") from None
    if not list(name):
        raise UsageError("The subject is empty; give at least CN=...")
    try:
        check_names(name, [])
    except RequestRejected as e:
        raise UsageError(e.message) from None
    return name


def _idna(value: str, item: str) -> str:
    """``value`` as IDNA A-labels when it is not ASCII already."""
    if value.isascii():
        return value
    try:
        return value.encode("idna").decode("ascii")
    except UnicodeError:
        raise UsageError(f"SAN '{_shown(item)}' is not a name IDNA can encode.") from None


def parse_san(items: list[str]) -> list[x509.GeneralName]:
    """Parse ``dns:``, ``email:``, ``uri:`` and ``ip:`` entries; each must pass :func:`check_names`.

    A leading ``*.`` wildcard is accepted here: whether a certificate may carry one is the CA's
    profile's decision.
    """
    out: list[x509.GeneralName] = []
    for item in items:
        kind, sep, value = item.partition(":")
        kind = kind.strip().lower()
        value = value.strip()
        if not sep or not value:
            raise UsageError(f"SAN '{_shown(item)}' must look like dns:NAME, email:ADDR, uri:URI or ip:ADDR.")
        general: x509.GeneralName
        if _char_problem(value) and kind in ("dns", "email", "uri"):
            # Checked before IDNA, which would drop some of these silently.
            raise UsageError(f"SAN '{_shown(item)}' holds {_char_problem(value)}, which is never certified.")
        if kind == "dns":
            general = x509.DNSName(_idna(value, item))
        elif kind == "email":
            local, at, domain = value.rpartition("@")
            if not at:
                raise UsageError(f"SAN email '{_shown(value)}' has no @.")
            if not local.isascii():
                raise UsageError(
                    f"SAN email '{_shown(value)}' has a non-ASCII local part; RFC 5280 rfc822Name is "
                    "IA5String, so use an ASCII address."
                )
            general = x509.RFC822Name(f"{local}@{_idna(domain, item)}")
        elif kind == "uri":
            if not value.isascii():
                raise UsageError(
                    f"SAN URI '{_shown(value)}' is not ASCII; percent-encode it (RFC 3986), as RFC 5280 asks."
                )
            general = x509.UniformResourceIdentifier(value)
        elif kind == "ip":
            try:
                general = x509.IPAddress(ipaddress.ip_address(value))
            except ValueError:
                raise UsageError(f"SAN ip '{_shown(value)}' is not an IP address.") from None
        else:
            raise UsageError(f"SAN type '{_shown(kind)}' is not one of dns, email, uri, ip.")
        try:
            check_names(x509.Name([]), [general])
        except RequestRejected as e:
            raise UsageError(e.message) from None
        out.append(general)
    return out


def sans_of(item: x509.Certificate | x509.CertificateSigningRequest | x509.Extensions) -> list[x509.GeneralName]:
    """The subjectAltName entries of a certificate, a CSR or an extension list; none without one.

    A CSR whose extensions cryptography cannot read (a duplicated or malformed one) raises
    ValueError: the caller decides what to tell.
    """
    extensions = item if isinstance(item, x509.Extensions) else item.extensions
    try:
        return list(extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        return []


def format_san(name: x509.GeneralName) -> str:
    if isinstance(name, x509.DNSName):
        return f"dns:{name.value}"
    if isinstance(name, x509.RFC822Name):
        return f"email:{name.value}"
    if isinstance(name, x509.UniformResourceIdentifier):
        return f"uri:{name.value}"
    if isinstance(name, x509.IPAddress):
        return f"ip:{name.value}"
    return str(name)
