"""Names that are safe to certify (issue 11, item 2): the one rule set in pkix/names.py, as the
parser applies it to what users type and as the CA's profile check applies it to every request.

Each hostile input is refused with one sentence that never echoes the hostile character itself;
ordinary international names (a Korean CN, an O with spaces, IDNA host names) still pass.
"""

from __future__ import annotations

import unicodedata

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenissue.ca.profiles import check_request, load_profiles
from tokenissue.errors import RequestRejected, UsageError
from tokenissue.pkix import names
from tokenissue.pkix.csr import build_csr, load_csr, verify_csr
from tokenissue.pkix.names import parse_san, parse_subject

from support.safe_names import HOSTILE_SANS, HOSTILE_SUBJECTS, ORDINARY_SANS, ORDINARY_SUBJECT, hostile_csr, sha1_csr

PROFILES = load_profiles()
EC_KEY = ec.generate_private_key(ec.SECP256R1())


def _one_sentence(message: str) -> None:
    assert message.endswith((".", "?")), message
    assert "\n" not in message and "\r" not in message and "\x00" not in message
    assert all(unicodedata.category(ch) not in ("Cc", "Cf") for ch in message), ascii(message)


# -- the CA's check, for names from CSRs and CMP (never through our parser) -------------------
# tls-client allows every attribute and SAN kind used here, so the names are the only reason
# for a refusal.


@pytest.mark.filterwarnings("ignore:Attribute's length:UserWarning")
@pytest.mark.parametrize("attrs", [a for _, a in HOSTILE_SUBJECTS], ids=[i for i, _ in HOSTILE_SUBJECTS])
def test_hostile_subject_in_a_csr_is_refused_by_the_profile_check(attrs: list[tuple[object, ...]]) -> None:
    csr = hostile_csr(EC_KEY, attrs)
    verify_csr(csr)  # the CSR itself is well signed: what is refused is its names
    with pytest.raises(RequestRejected) as e:
        check_request(PROFILES["tls-client"], subject=csr.subject, san=[], public_key=csr.public_key())
    _one_sentence(e.value.message)


@pytest.mark.parametrize("san", [s for _, s in HOSTILE_SANS], ids=[i for i, _ in HOSTILE_SANS])
def test_hostile_san_in_a_csr_is_refused(san: x509.GeneralName) -> None:
    csr = hostile_csr(EC_KEY, san=[san])
    sans = list(csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    with pytest.raises(RequestRejected) as e:
        check_request(PROFILES["tls-client"], subject=csr.subject, san=sans, public_key=csr.public_key())
    _one_sentence(e.value.message)


@pytest.mark.filterwarnings("ignore:Attribute's length:UserWarning")
def test_upper_bounds_are_inclusive() -> None:
    # RFC 5280 bounds count characters; cryptography's own check counts UTF-8 octets and would
    # refuse 64 Hangul syllables (192 octets), hence _validate=False here, as in a parsed CSR.
    ok = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "가" * 64, _validate=False),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "O" * 64),
            x509.NameAttribute(NameOID.LOCALITY_NAME, "L" * 128),
            x509.NameAttribute(NameOID.SERIAL_NUMBER, "1" * 64),
        ]
    )
    names.check_names(
        ok, [x509.DNSName("a" * 63 + ".example.org"), x509.DNSName(".".join(["a" * 63] * 3) + ".example")]
    )
    over = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "가" * 65, _validate=False)])
    with pytest.raises(RequestRejected, match="has 65 characters; at most 64"):
        names.check_names(over, [])


def test_wildcard_only_in_a_tls_server_profile() -> None:
    wildcard = [x509.DNSName("*.example.org")]
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "www")])
    check_request(PROFILES["tls-server"], subject=subject, san=wildcard, public_key=EC_KEY.public_key())
    with pytest.raises(RequestRejected, match="wildcard"):
        check_request(PROFILES["tls-client"], subject=subject, san=wildcard, public_key=EC_KEY.public_key())


@pytest.mark.parametrize("exponent", [3, 17, 65535, (1 << 256) + 1])
def test_rsa_public_exponent_rule(exponent: int) -> None:
    n = rsa.generate_private_key(65537, 2048).public_key().public_numbers().n
    key = rsa.RSAPublicNumbers(exponent, n).public_key()
    subject = x509.Name.from_rfc4514_string("CN=Hong")
    check_request(PROFILES["personal"], subject=subject, san=[], public_key=rsa.RSAPublicNumbers(65537, n).public_key())
    with pytest.raises(RequestRejected, match=r"public exponent .* must be odd, at least 65537"):
        check_request(PROFILES["personal"], subject=x509.Name.from_rfc4514_string("CN=Hong"), san=[], public_key=key)


# -- what users type --------------------------------------------------------------------------

HOSTILE_TYPED_SUBJECTS = [
    "CN=Hong\\00Gildong",
    "CN=Hong\\0D\\0AO=Forged",
    "CN=Hong\tGildong",
    "CN=Hong \u202egpj.exe",
    "CN=Hong \u2066Gildong\u2069",
    "CN=" + "A" * 5000,
    "CN=Hong,C=kr",
    "CN=Hong,O=" + "O" * 65,
    "CN=Hong,serialNumber=12_34",
    "CN=Hong,emailAddress=홍@example.kr",
]


@pytest.mark.parametrize("text", HOSTILE_TYPED_SUBJECTS, ids=range(len(HOSTILE_TYPED_SUBJECTS)))
def test_parse_subject_refuses(text: str) -> None:
    with pytest.raises(UsageError) as e:
        parse_subject(text)
    _one_sentence(e.value.message)
    assert len(e.value.message) < 400


HOSTILE_TYPED_SANS = [
    "dns:www example.org",
    "dns:www.example.org\x00.evil.test",
    "dns:a_b.example.org",
    "dns:" + "a" * 64 + ".example.org",
    "dns:www.*.example.org",
    "dns:*",
    "dns:example\u202e.org",
    "email:hong@example.kr\r\nBcc: x@example.kr",
    "email:홍길동@example.kr",
    "email:hong gildong@example.kr",
    "uri:https://example.org/a b",
    "uri:https://example.org/\x1b[31m",
    "uri:https://예시.kr/",
]


@pytest.mark.parametrize("item", HOSTILE_TYPED_SANS, ids=range(len(HOSTILE_TYPED_SANS)))
def test_parse_san_refuses(item: str) -> None:
    with pytest.raises(UsageError) as e:
        parse_san([item])
    _one_sentence(e.value.message)


def test_ordinary_names_still_work() -> None:
    name = parse_subject(ORDINARY_SUBJECT)
    assert name.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "홍길동"
    assert name.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "Example Bank Co Ltd"
    parse_subject("CN=Hong Gildong,serialNumber=KR-1234 5678,emailAddress=hong@example.kr,C=KR")
    # Persian needs the zero-width non-joiner; it is a format character, but not a dangerous one.
    parse_subject("CN=\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645")
    sans = parse_san([*ORDINARY_SANS, "dns:*.example.org", "ip:192.0.2.7", "email:hong@bücher.example"])
    assert x509.DNSName("xn--bcher-kva.example") in sans
    assert x509.RFC822Name("hong@xn--bcher-kva.example") in sans
    check_request(
        PROFILES["tls-client"],
        subject=name,
        san=[
            g
            for g in sans
            if not (isinstance(g, x509.DNSName) and g.value.startswith("*")) and not isinstance(g, x509.IPAddress)
        ],
        public_key=EC_KEY.public_key(),
    )


@settings(max_examples=200, deadline=None)
@given(
    st.text(min_size=1, max_size=20),
    st.sampled_from(
        sorted(
            {
                chr(c)
                for c in (
                    *range(0, 32),
                    0x7F,
                    0x85,
                    *range(0x202A, 0x202F),
                    *range(0x2066, 0x206A),
                    0x200E,
                    0x200F,
                    0x061C,
                    0xFEFF,
                )
            }
        )
    ),
)
def test_any_control_or_bidi_character_is_refused_anywhere(text: str, bad: str) -> None:
    value = text[: len(text) // 2] + bad + text[len(text) // 2 :]
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, value[:64], _validate=False)])
    if bad not in value[:64]:
        return
    with pytest.raises(RequestRejected):
        names.check_names(name, [])
    if bad.isascii():  # cryptography itself refuses non-ASCII in a DNSName
        with pytest.raises(RequestRejected):
            names.check_names(x509.Name([]), [x509.DNSName(f"a{bad}b.example.org")])
    with pytest.raises(UsageError):
        parse_san([f"dns:a{bad}b.example.org"])


@settings(max_examples=200, deadline=None)
@given(
    st.from_regex(
        r"[a-z0-9](?:[a-z0-9-]{0,20}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,20}[a-z0-9])?){1,4}", fullmatch=True
    )
)
def test_ldh_names_pass_and_any_space_in_them_is_refused(host: str) -> None:
    if any(label[2:4] == "--" for label in host.split(".")):
        return  # reserved for A-labels; covered separately
    assert parse_san([f"dns:{host}"]) == [x509.DNSName(host)]
    spaced = host[:1] + " " + host[1:]
    with pytest.raises(UsageError):
        parse_san([f"dns:{spaced}"])


# -- CSR files --------------------------------------------------------------------------------


def test_two_csrs_in_one_file_are_refused() -> None:
    from cryptography.hazmat.primitives import serialization

    one = build_csr(EC_KEY, parse_subject("CN=First")).public_bytes(serialization.Encoding.PEM)
    two = build_csr(ec.generate_private_key(ec.SECP256R1()), parse_subject("CN=Second")).public_bytes(
        serialization.Encoding.PEM
    )
    assert load_csr(one).subject == parse_subject("CN=First")
    with pytest.raises(UsageError, match="holds 2 certificate signing requests; give one request per file"):
        load_csr(one + two)
    with pytest.raises(UsageError, match="not a PEM or DER"):
        load_csr(build_csr(EC_KEY, parse_subject("CN=First")).public_bytes(serialization.Encoding.DER) * 2)


def test_sha1_signed_csr_gets_a_truthful_message() -> None:
    csr = load_csr(sha1_csr())
    with pytest.raises(RequestRejected) as e:
        verify_csr(csr)
    assert e.value.message == ("The CSR is signed with SHA-1, which is not accepted; sign it with SHA-256 or better.")
