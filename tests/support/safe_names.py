"""Hostile names and hand-made CSRs for the safe-names tests (issue 11, item 2).

cryptography's builders refuse some of these names (a CN over 64 characters, a C of three
letters), but a CSR made elsewhere carries whatever its maker wrote, and cryptography reads it
back without complaint (it does refuse to write or read a PrintableString holding characters
outside that type, so those cases are written as UTF8String, the way other tools write them). ``hostile_csr`` therefore builds attributes with ``_validate=False``,
which is what a parsed CSR holds; ``sha1_csr`` re-signs a CSR's body with SHA-1 and assembles
the DER by hand, since cryptography no longer signs with SHA-1.
"""

from __future__ import annotations

import warnings
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import NameOID

__all__ = ["HOSTILE_SANS", "HOSTILE_SUBJECTS", "ORDINARY_SANS", "ORDINARY_SUBJECT", "hostile_csr", "sha1_csr"]

#: (id, attributes as (oid, value[, ASN.1 type])) of subjects the CA must never certify.
HOSTILE_SUBJECTS: list[tuple[str, list[tuple[Any, ...]]]] = [
    ("nul", [(NameOID.COMMON_NAME, "Hong\x00Gildong")]),
    ("cr-lf", [(NameOID.COMMON_NAME, "Hong\r\nO=Forged")]),
    ("tab", [(NameOID.COMMON_NAME, "Hong\tGildong")]),
    ("del", [(NameOID.COMMON_NAME, "Hong\x7fGildong")]),
    ("c1-control", [(NameOID.COMMON_NAME, "Hong\x85Gildong")]),
    ("bidi-rlo", [(NameOID.COMMON_NAME, "Hong \u202egpj.exe")]),
    ("bidi-lre", [(NameOID.COMMON_NAME, "Hong"), (NameOID.ORGANIZATION_NAME, "Example\u202a Bank")]),
    ("bidi-isolate", [(NameOID.COMMON_NAME, "Hong \u2067Gildong\u2069")]),
    ("rlm-mark", [(NameOID.COMMON_NAME, "Hong"), (NameOID.ORGANIZATIONAL_UNIT_NAME, "Sales\u200f")]),
    ("bom", [(NameOID.COMMON_NAME, "\ufeffHong")]),
    ("line-separator", [(NameOID.COMMON_NAME, "Hong"), (NameOID.LOCALITY_NAME, "Seoul\u2028Busan")]),
    ("cn-5000", [(NameOID.COMMON_NAME, "A" * 5000)]),
    ("cn-65", [(NameOID.COMMON_NAME, "가" * 65)]),
    ("o-65", [(NameOID.COMMON_NAME, "Hong"), (NameOID.ORGANIZATION_NAME, "O" * 65)]),
    ("l-129", [(NameOID.COMMON_NAME, "Hong"), (NameOID.LOCALITY_NAME, "L" * 129)]),
    ("c-three-letters", [(NameOID.COMMON_NAME, "Hong"), (NameOID.COUNTRY_NAME, "KOR")]),
    ("c-lowercase", [(NameOID.COMMON_NAME, "Hong"), (NameOID.COUNTRY_NAME, "kr")]),
    ("c-digits", [(NameOID.COMMON_NAME, "Hong"), (NameOID.COUNTRY_NAME, "41")]),
    ("c-utf8", [(NameOID.COMMON_NAME, "Hong"), (NameOID.COUNTRY_NAME, "KR", _ASN1Type.UTF8String)]),
    ("c-hangul", [(NameOID.COMMON_NAME, "Hong"), (NameOID.COUNTRY_NAME, "한국", _ASN1Type.UTF8String)]),
    ("serial-not-printable", [(NameOID.COMMON_NAME, "Hong"), (NameOID.SERIAL_NUMBER, "12_34@5", _ASN1Type.UTF8String)]),
    ("serial-65", [(NameOID.COMMON_NAME, "Hong"), (NameOID.SERIAL_NUMBER, "1" * 65)]),
    ("empty-cn", [(NameOID.COMMON_NAME, "")]),
    ("email-attr-non-ascii", [(NameOID.COMMON_NAME, "Hong"), (NameOID.EMAIL_ADDRESS, "홍@example.kr")]),
    ("bmpstring-cn", [(NameOID.COMMON_NAME, "Hong", _ASN1Type.BMPString)]),
]

#: (id, SAN) pairs the CA must never certify.
HOSTILE_SANS: list[tuple[str, x509.GeneralName]] = [
    ("dns-space", x509.DNSName("www example.org")),
    ("dns-nul", x509.DNSName("www.example.org\x00.evil.test")),
    ("dns-newline", x509.DNSName("www.example.org\n")),
    ("dns-label-64", x509.DNSName("a" * 64 + ".example.org")),
    ("dns-name-254", x509.DNSName(".".join(["a" * 62] * 4) + ".org")),
    ("dns-underscore", x509.DNSName("a_b.example.org")),
    ("dns-leading-hyphen", x509.DNSName("-a.example.org")),
    ("dns-empty-label", x509.DNSName("a..example.org")),
    ("dns-inner-wildcard", x509.DNSName("www.*.example.org")),
    ("dns-partial-wildcard", x509.DNSName("w*.example.org")),
    ("dns-bare-wildcard", x509.DNSName("*.org")),
    ("dns-bad-a-label", x509.DNSName("xn--zz.example.org")),
    ("dns-escape", x509.DNSName("example\x1b.org")),
    ("email-crlf", x509.RFC822Name("hong@example.kr\r\nBcc: all@example.kr")),
    ("email-space", x509.RFC822Name("hong gildong@example.kr")),
    ("email-no-at", x509.RFC822Name("hong.example.kr")),
    ("email-bad-domain", x509.RFC822Name("hong@exa mple.kr")),
    ("uri-space", x509.UniformResourceIdentifier("https://example.org/a b")),
    ("uri-control", x509.UniformResourceIdentifier("https://example.org/\x1b[31m")),
    ("uri-no-scheme", x509.UniformResourceIdentifier("//example.org/")),
]

#: Names that must keep working, as the user types them.
ORDINARY_SUBJECT = "CN=홍길동,O=Example Bank Co Ltd,OU=Retail Banking,C=KR"
ORDINARY_SANS = [
    "email:hong.gildong@example.kr",
    "dns:www.example.org",
    "dns:bücher.example",
    "uri:https://example.org/id/7",
]


def _name(attrs: list[tuple[Any, ...]]) -> x509.Name:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # cryptography warns about the bounds
        return x509.Name(
            [x509.NameAttribute(a[0], a[1], *a[2:], _validate=False) for a in attrs]  # type: ignore[misc]
        )


def hostile_csr(
    key: Any = None,
    attrs: list[tuple[Any, ...]] | None = None,
    san: list[x509.GeneralName] | None = None,
) -> x509.CertificateSigningRequest:
    """A correctly self-signed CSR carrying exactly ``attrs`` and ``san``, whatever they hold."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    builder = x509.CertificateSigningRequestBuilder().subject_name(_name(attrs or [(NameOID.COMMON_NAME, "Hong")]))
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return builder.sign(key, hashes.SHA256())


def _der(tag: int, body: bytes) -> bytes:
    n = len(body)
    if n < 0x80:
        return bytes([tag, n]) + body
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + body


def sha1_csr(subject: str = "CN=Old Tool User,O=Example Bank,C=KR") -> bytes:
    """The PEM of a CSR signed with ecdsa-with-SHA1 (OID 1.2.840.10045.4.1), as old tools make."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name.from_rfc4514_string(subject))
        .sign(key, hashes.SHA256())
    )
    tbs = csr.tbs_certrequest_bytes
    signature = key.sign(tbs, ec.ECDSA(hashes.SHA1()))  # noqa: S303 - the weak hash is the point
    ecdsa_with_sha1 = _der(0x30, bytes.fromhex("06072a8648ce3d0401"))
    der = _der(0x30, tbs + ecdsa_with_sha1 + _der(0x03, b"\x00" + signature))
    loaded = x509.load_der_x509_csr(der)
    return loaded.public_bytes(serialization.Encoding.PEM)
