"""The Korean identity binding (KCAC.TS.SIVID) against values nobody here made: a published
test vector (idn, R, VID) and the subjectAltName of a real yessign test-CA certificate."""

from __future__ import annotations

import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtensionOID, NameOID

from tokenissue.errors import UsageError
from tokenissue.pkix.kr_vid import (
    IdentifyData,
    identify_data,
    identify_data_of,
    new_random,
    normalize_idn,
    vid_digest,
    vid_matches,
)

# Test vector quoted with KCAC.TS.SIVID §6.5 in Initech's CMP JavaScript (© 2012-2015 Initech).
IDN = "1234561234567"
R = bytes.fromhex("79ea7568a2d3776604e18bcd3a1b1b85b7da0872")
VID_SHA256 = bytes.fromhex("17692c8dd00ead33791de0a64a937c60799634c64ac56fa57570c0e05252ab35")

# subjectAltName of the yessignCA-Test Class 4 certificate in PyPinkSign's tests (MIT), serial
# 4562037: realName "HKD", a SHA-256 VID, hashAlg without parameters (openssl asn1parse).
REAL_SAN = bytes.fromhex(
    "3059a05706092a831a8c9a440a0101a04a30480c03484b443041303f060a2a831a8c9a440a010101"
    "3031300b0609608648016503040201a02204208ad4f673412f825da4d1fb4d4216946bbc7f8194a0af01f86622ee23c7ee0de7"
)
REAL_VID = bytes.fromhex("8ad4f673412f825da4d1fb4d4216946bbc7f8194a0af01f86622ee23c7ee0de7")


def _cert(extension: x509.ExtensionType) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "홍길동")])
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1)).add_extension(extension, critical=False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip


def test_the_published_vector() -> None:
    assert vid_digest(IDN, R) == VID_SHA256
    assert vid_digest("123456-1234567", R) == VID_SHA256  # separators are not part of the number


def test_the_hash_is_the_one_named() -> None:
    assert vid_digest(IDN, R, "sha1") != VID_SHA256[:20]
    assert len(vid_digest(IDN, R, "sha1")) == 20
    with pytest.raises(UsageError):
        vid_digest(IDN, R, "md5")


def test_written_exactly_as_a_korean_ca_writes_it() -> None:
    ours = x509.SubjectAlternativeName([identify_data("HKD", REAL_VID)])
    assert ours.public_bytes() == REAL_SAN


def test_a_real_certificates_identify_data_is_read() -> None:
    cert = _cert(x509.UnrecognizedExtension(ExtensionOID.SUBJECT_ALTERNATIVE_NAME, REAL_SAN))
    data = identify_data_of(cert)
    assert data == IdentifyData("HKD", "sha256", REAL_VID)
    assert REAL_VID.hex() not in repr(data)


def test_a_relying_party_checks_number_and_r() -> None:
    cert = _cert(x509.SubjectAlternativeName([x509.RFC822Name("hong@example.kr"), identify_data("홍길동", VID_SHA256)]))
    assert vid_matches(cert, IDN, R)
    assert vid_matches(cert, "123456-1234567", R)
    assert not vid_matches(cert, "1234561234568", R)
    assert not vid_matches(cert, IDN, bytes(20))


def test_no_vid_is_no_answer() -> None:
    cert = _cert(x509.SubjectAlternativeName([x509.DNSName("example.kr")]))
    assert identify_data_of(cert) is None
    with pytest.raises(UsageError, match="no VID"):
        vid_matches(cert, IDN, R)


def _tlv(tag: int, content: bytes) -> bytes:
    assert len(content) < 128
    return bytes([tag, len(content)]) + content


def _raw_san(value: bytes) -> x509.UnrecognizedExtension:
    """A subjectAltName with one identifyData otherName whose value is ``value``, as is."""
    oid = bytes.fromhex("06092a831a8c9a440a0101")
    return x509.UnrecognizedExtension(
        ExtensionOID.SUBJECT_ALTERNATIVE_NAME, _tlv(0x30, _tlv(0xA0, oid + _tlv(0xA0, value)))
    )


def test_malformed_identify_data_is_refused() -> None:
    good = identify_data("HKD", REAL_VID).value
    vid_sha1_with_params = bytes.fromhex("3016300906052b0e03021a0501a0090407") + b"\x00" * 7  # NULL is 05 00, not 05 01
    for bad in (
        good + b"\x00",  # trailing data
        b"\x30\x00",  # no realName
        _tlv(0x30, _tlv(0x0C, b"HKD") + _tlv(0x30, _tlv(0x30, bytes.fromhex("060a2a831a8c9a440a010101") + vid_sha1_with_params))),
        bytes.fromhex("3080") + good[2:] + b"\x00\x00",  # BER indefinite length, not DER
    ):
        cert = _cert(_raw_san(bad))
        with pytest.raises(UsageError, match="malformed"):
            identify_data_of(cert)


@pytest.mark.parametrize("text", ["123456123456", "12345612345678", "12345a1234567", "１２３４５６１２３４５６７", ""])
def test_a_bad_number_is_refused_without_repeating_it(text: str) -> None:
    with pytest.raises(UsageError) as err:
        normalize_idn(text)
    assert not text or text not in str(err.value)


def test_r_is_fresh_and_long_enough() -> None:
    a, b = new_random(), new_random()
    assert len(a) == 20 and a != b
    with pytest.raises(UsageError):
        vid_digest(IDN, bytes(19))
