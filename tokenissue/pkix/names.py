"""Subjects and subject alternative names as the user types them.

Subjects are RFC 4514 strings, most significant RDN last as in ``openssl -subj`` reversed:
``"CN=홍길동,O=Example Bank,C=KR"``. Values are UTF-8; ``C`` must be two letters.
SANs are ``dns:NAME``, ``email:ADDR``, ``uri:URI``, ``ip:ADDR``.
"""

from __future__ import annotations

import ipaddress

from cryptography import x509
from cryptography.x509.oid import NameOID

from ..errors import UsageError

__all__ = ["format_san", "parse_san", "parse_subject"]

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


def parse_subject(text: str) -> x509.Name:
    """Parse an RFC 4514 subject; raise :class:`UsageError` with the reason when it is bad."""
    text = text.strip()
    if text.startswith("/"):
        raise UsageError(
            f"Subject '{text}' is in OpenSSL's /A=B/ form; write it as 'CN=...,O=...,C=KR'."
        )
    try:
        name = x509.Name.from_rfc4514_string(text, _EXTRA_ATTRS)
    except ValueError as e:
        # cryptography raises a bare ValueError for an unknown attribute name.
        reason = str(e) or "an unknown attribute name or a syntax error"
        raise UsageError(f"Subject '{text}' is not an RFC 4514 name ({reason}).") from None
    if not list(name):
        raise UsageError("The subject is empty; give at least CN=...")
    for attr in name:
        # isascii(): "한국".isalpha() is true too, but C is a PrintableString of two letters.
        value = str(attr.value)
        two_letters = len(value) == 2 and value.isascii() and value.isalpha()
        if attr.oid == NameOID.COUNTRY_NAME and not two_letters:
            raise UsageError(f"Country 'C={attr.value!s}' must be a two-letter code such as KR.")
    return name


def parse_san(items: list[str]) -> list[x509.GeneralName]:
    """Parse ``dns:``, ``email:``, ``uri:`` and ``ip:`` entries."""
    out: list[x509.GeneralName] = []
    for item in items:
        kind, sep, value = item.partition(":")
        kind = kind.strip().lower()
        value = value.strip()
        if not sep or not value:
            raise UsageError(f"SAN '{item}' must look like dns:NAME, email:ADDR, uri:URI or ip:ADDR.")
        if kind == "dns":
            try:
                value.encode("ascii")
            except UnicodeEncodeError:
                value = value.encode("idna").decode("ascii")
            out.append(x509.DNSName(value))
        elif kind == "email":
            if "@" not in value:
                raise UsageError(f"SAN email '{value}' has no @.")
            out.append(x509.RFC822Name(value))
        elif kind == "uri":
            out.append(x509.UniformResourceIdentifier(value))
        elif kind == "ip":
            try:
                out.append(x509.IPAddress(ipaddress.ip_address(value)))
            except ValueError:
                raise UsageError(f"SAN ip '{value}' is not an IP address.") from None
        else:
            raise UsageError(f"SAN type '{kind}' is not one of dns, email, uri, ip.")
    return out


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
