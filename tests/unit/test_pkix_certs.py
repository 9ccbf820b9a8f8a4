"""Certificates built by tokenissue.pkix.certs, checked with cryptography and the openssl binary.

Software keys stand in for token keys: these functions only call ``sign()`` and
``public_key()``, which the token adapters provide the same way.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tokenissue.errors import CAUnavailable, RequestRejected, UsageError
from tokenissue.pkix.certs import (
    dump_certificates,
    fingerprint_sha256,
    issue_certificate,
    load_certificates,
    random_serial,
    self_signed_ca,
    verify_chain,
)
from tokenissue.pkix.names import parse_san, parse_subject

needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")

KEY_TYPES = ["rsa-2048", "ec-p256", "ec-p384", "ed25519"]


@functools.cache
def key(kind: str, n: int = 0) -> Any:
    """A software key of ``kind``; ``n`` gives distinct keys of the same kind."""
    del n  # Only part of the cache key.
    if kind == "rsa-2048":
        return rsa.generate_private_key(65537, 2048)
    if kind == "ec-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "ec-p384":
        return ec.generate_private_key(ec.SECP384R1())
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    raise AssertionError(kind)


def ku(**bits: bool) -> x509.KeyUsage:
    names = [
        "digital_signature",
        "content_commitment",
        "key_encipherment",
        "data_encipherment",
        "key_agreement",
        "key_cert_sign",
        "crl_sign",
        "encipher_only",
        "decipher_only",
    ]
    return x509.KeyUsage(**{n: bits.get(n, False) for n in names})


def make_ca(kind: str = "ec-p256", name: str = "CN=Test Root,O=tokenissue,C=KR", **kw: Any) -> Any:
    k = key(kind, kw.pop("n", 0))
    return k, self_signed_ca(k, parse_subject(name), 365, **kw)


def issue(
    ca_key: Any,
    ca_cert: x509.Certificate,
    leaf_key: Any,
    subject: str = "CN=leaf",
    *,
    san: list[str] | None = None,
    not_before: datetime | None = None,
    days: int = 30,
    **kw: Any,
) -> x509.Certificate:
    nb = not_before or datetime.now(UTC) - timedelta(minutes=1)
    args: dict[str, Any] = {
        "public_key": leaf_key.public_key(),
        "subject": parse_subject(subject),
        "san": parse_san(san or []),
        "serial": random_serial(),
        "not_before": nb,
        "not_after": nb + timedelta(days=days),
        "key_usage": ku(digital_signature=True),
        "extended_key_usage": [ExtendedKeyUsageOID.CLIENT_AUTH],
        "policies": [],
        "crl_url": None,
    }
    args.update(kw)
    return issue_certificate(ca_key, ca_cert, **args)


def ext(cert: x509.Certificate, cls: type[Any]) -> x509.Extension[Any]:
    return cert.extensions.get_extension_for_class(cls)


def der_len(n: int) -> int:
    """Octets of n's DER INTEGER content (a leading zero when the top bit is set)."""
    return n.bit_length() // 8 + 1


# --- serials and fingerprints ------------------------------------------------------------------


def test_random_serial_is_positive_long_and_fits_20_octets() -> None:
    serials = {random_serial() for _ in range(2000)}
    assert len(serials) == 2000
    for s in serials:
        assert 2**64 <= s < 2**159
        assert der_len(s) <= 20


def test_fingerprint_is_sha256_of_der() -> None:
    _, ca = make_ca()
    assert fingerprint_sha256(ca) == ca.fingerprint(hashes.SHA256()).hex()
    assert len(fingerprint_sha256(ca)) == 64


# --- self-signed CA ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KEY_TYPES)
def test_self_signed_ca_extensions(kind: str) -> None:
    before = datetime.now(UTC)
    k, ca = make_ca(kind, path_length=1)
    bc = ext(ca, x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 1
    usage = ext(ca, x509.KeyUsage)
    assert usage.critical
    assert usage.value.key_cert_sign and usage.value.crl_sign and usage.value.digital_signature
    ski = ext(ca, x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(k.public_key())
    assert ext(ca, x509.AuthorityKeyIdentifier).value.key_identifier == ski.digest
    assert 0 < ca.serial_number < 2**159
    skew = before - ca.not_valid_before_utc
    assert timedelta(minutes=4) < skew < timedelta(minutes=6)
    assert ca.not_valid_after_utc - before >= timedelta(days=365) - timedelta(seconds=5)
    ca.verify_directly_issued_by(ca)


def test_self_signed_ca_refuses_zero_days() -> None:
    with pytest.raises(UsageError):
        self_signed_ca(key("ec-p256"), parse_subject("CN=x"), 0)


# --- issuing -----------------------------------------------------------------------------------


def test_issue_certificate_extensions() -> None:
    ca_key, ca = make_ca()
    leaf_key = key("ec-p256", 1)
    cert = issue(
        ca_key,
        ca,
        leaf_key,
        "CN=Alice,O=Example,C=KR",
        san=["email:alice@example.com", "dns:alice.example.com"],
        policies=["1.3.6.1.4.1.32473.1.1"],
        crl_url="http://ca.example/crl.der",
        extended_key_usage=[ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.EMAIL_PROTECTION],
        key_usage=ku(digital_signature=True, content_commitment=True),
    )
    cert.verify_directly_issued_by(ca)
    assert cert.issuer == ca.subject
    bc = ext(cert, x509.BasicConstraints)
    assert bc.critical and not bc.value.ca and bc.value.path_length is None
    assert ext(cert, x509.KeyUsage).critical
    assert ext(cert, x509.KeyUsage).value.content_commitment
    assert ext(cert, x509.SubjectKeyIdentifier).value == (
        x509.SubjectKeyIdentifier.from_public_key(leaf_key.public_key())
    )
    assert ext(cert, x509.AuthorityKeyIdentifier).value.key_identifier == (
        ext(ca, x509.SubjectKeyIdentifier).value.digest
    )
    assert list(ext(cert, x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH,
        ExtendedKeyUsageOID.EMAIL_PROTECTION,
    ]
    san = ext(cert, x509.SubjectAlternativeName)
    assert not san.critical
    assert san.value.get_values_for_type(x509.RFC822Name) == ["alice@example.com"]
    policies = ext(cert, x509.CertificatePolicies).value
    assert [p.policy_identifier.dotted_string for p in policies] == ["1.3.6.1.4.1.32473.1.1"]
    dp = ext(cert, x509.CRLDistributionPoints).value
    assert dp[0].full_name == [x509.UniformResourceIdentifier("http://ca.example/crl.der")]


def test_issue_certificate_omits_optional_extensions() -> None:
    ca_key, ca = make_ca()
    cert = issue(ca_key, ca, key("ec-p256", 1), extended_key_usage=[])
    classes = {type(e.value) for e in cert.extensions}
    assert x509.SubjectAlternativeName not in classes
    assert x509.CertificatePolicies not in classes
    assert x509.CRLDistributionPoints not in classes
    assert x509.ExtendedKeyUsage not in classes


@pytest.mark.parametrize(
    ("ca_kind", "expected"),
    [("rsa-2048", "sha256"), ("ec-p256", "sha256"), ("ec-p384", "sha384"), ("ed25519", None)],
)
def test_signature_hash_follows_ca_key(ca_kind: str, expected: str | None) -> None:
    ca_key, ca = make_ca(ca_kind)
    cert = issue(ca_key, ca, key("ec-p256", 1))
    got = cert.signature_hash_algorithm
    assert (got.name if got else None) == expected


def test_subordinate_ca() -> None:
    root_key, root = make_ca("ec-p384")
    sub_key = key("ec-p256", 2)
    sub = issue(
        root_key,
        root,
        sub_key,
        "CN=Sub CA",
        is_ca=True,
        path_length=0,
        key_usage=ku(key_cert_sign=True, crl_sign=True),
        extended_key_usage=[],
    )
    bc = ext(sub, x509.BasicConstraints).value
    assert bc.ca and bc.path_length == 0


def test_issue_refuses_a_ca_key_that_is_not_the_certificates() -> None:
    _, ca = make_ca()
    with pytest.raises(CAUnavailable, match="does not match the CA certificate"):
        issue(key("ec-p256", 9), ca, key("ec-p256", 1))


def test_issue_refuses_bad_values() -> None:
    ca_key, ca = make_ca()
    now = datetime.now(UTC)
    with pytest.raises(UsageError, match="notAfter"):
        issue(ca_key, ca, key("ec-p256", 1), not_before=now, not_after=now)
    with pytest.raises(UsageError, match="serial"):
        issue(ca_key, ca, key("ec-p256", 1), serial=2**159)
    with pytest.raises(UsageError, match="serial"):
        issue(ca_key, ca, key("ec-p256", 1), serial=0)
    with pytest.raises(UsageError, match="policy"):
        issue(ca_key, ca, key("ec-p256", 1), policies=["not-an-oid"])


def test_korean_utf8_subject_survives_der_round_trip() -> None:
    ca_key, ca = make_ca("ec-p256", "CN=테스트 루트,O=우리은행,C=KR")
    subject = parse_subject("CN=홍길동,O=우리은행,C=KR")
    cert = issue(ca_key, ca, key("ec-p256", 1), "CN=홍길동,O=우리은행,C=KR")
    der = dump_certificates([cert], "der")
    (again,) = load_certificates(der)
    assert again == cert
    assert again.subject == subject
    assert again.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "홍길동"
    assert again.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "우리은행"
    assert again.issuer.rfc4514_string() == "CN=테스트 루트,O=우리은행,C=KR"
    # The UTF-8 bytes themselves are in the DER (UTF8String), not a transliteration.
    assert "홍길동".encode() in der


@needs_openssl
def test_openssl_prints_the_korean_subject(tmp_path: Path) -> None:
    ca_key, ca = make_ca()
    cert = issue(ca_key, ca, key("ec-p256", 1), "CN=홍길동,O=우리은행,C=KR")
    path = tmp_path / "leaf.pem"
    path.write_bytes(dump_certificates([cert], "pem"))
    out = subprocess.run(
        ["openssl", "x509", "-in", str(path), "-noout", "-subject", "-nameopt", "utf8,sep_comma_plus"],
        capture_output=True,
        check=True,
    ).stdout.decode("utf-8")
    assert "CN=홍길동" in out and "O=우리은행" in out and "C=KR" in out


# --- openssl accepts what we issue -------------------------------------------------------------

COMBOS = [
    ("rsa-2048", "rsa-2048"),
    ("rsa-2048", "ec-p256"),
    ("ec-p256", "rsa-2048"),
    ("ec-p256", "ec-p256"),
    ("ec-p384", "ec-p256"),
    ("ec-p384", "ed25519"),
    ("ed25519", "ed25519"),
    ("ed25519", "ec-p384"),
    ("rsa-2048", "ed25519"),
]


def openssl_verify(tmp_path: Path, ca: x509.Certificate, leaf: x509.Certificate,
                   untrusted: list[x509.Certificate] | None = None) -> subprocess.CompletedProcess[str]:
    (tmp_path / "ca.pem").write_bytes(dump_certificates([ca], "pem"))
    (tmp_path / "leaf.pem").write_bytes(dump_certificates([leaf], "pem"))
    cmd = ["openssl", "verify", "-CAfile", str(tmp_path / "ca.pem")]
    if untrusted:
        (tmp_path / "untrusted.pem").write_bytes(dump_certificates(untrusted, "pem"))
        cmd += ["-untrusted", str(tmp_path / "untrusted.pem")]
    return subprocess.run([*cmd, str(tmp_path / "leaf.pem")], capture_output=True, text=True)


@needs_openssl
@pytest.mark.parametrize(("ca_kind", "leaf_kind"), COMBOS)
def test_openssl_verifies_issued_leaf(tmp_path: Path, ca_kind: str, leaf_kind: str) -> None:
    ca_key, ca = make_ca(ca_kind)
    leaf = issue(ca_key, ca, key(leaf_kind, 1), san=["dns:leaf.example"],
                 crl_url="http://ca.example/crl")
    result = openssl_verify(tmp_path, ca, leaf)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout


@needs_openssl
def test_openssl_verifies_through_an_intermediate(tmp_path: Path) -> None:
    root_key, root = make_ca("rsa-2048", path_length=1)
    sub_key = key("ec-p384", 3)
    sub = issue(root_key, root, sub_key, "CN=Sub CA", is_ca=True, path_length=0,
                key_usage=ku(key_cert_sign=True, crl_sign=True), extended_key_usage=[])
    leaf = issue(sub_key, sub, key("ec-p256", 1))
    result = openssl_verify(tmp_path, root, leaf, [sub])
    assert result.returncode == 0, result.stdout + result.stderr
    assert verify_chain(leaf, [sub, root]) == [leaf, sub, root]


@needs_openssl
def test_openssl_and_verify_chain_agree_on_path_length(tmp_path: Path) -> None:
    root_key, root = make_ca("rsa-2048", path_length=0)
    sub_key = key("ec-p384", 3)
    sub = issue(root_key, root, sub_key, "CN=Sub CA", is_ca=True,
                key_usage=ku(key_cert_sign=True, crl_sign=True), extended_key_usage=[])
    leaf = issue(sub_key, sub, key("ec-p256", 1))
    result = openssl_verify(tmp_path, root, leaf, [sub])
    assert result.returncode != 0 and "path length" in result.stdout + result.stderr
    with pytest.raises(RequestRejected, match="allows 0 subordinate"):
        verify_chain(leaf, [sub, root])


# --- load and dump -----------------------------------------------------------------------------


def _three() -> list[x509.Certificate]:
    ca_key, ca = make_ca()
    return [issue(ca_key, ca, key("ec-p256", 1), "CN=a"), issue(ca_key, ca, key("ed25519"), "CN=b"), ca]


def test_pem_bundle_round_trip() -> None:
    certs = _three()
    assert load_certificates(dump_certificates(certs, "pem")) == certs


def test_p7b_round_trip_der_and_pem() -> None:
    certs = _three()
    p7b = dump_certificates(certs, "p7b")
    assert set(load_certificates(p7b)) == set(certs)
    pem = pkcs7.serialize_certificates(certs, serialization.Encoding.PEM)
    assert set(load_certificates(pem)) == set(certs)


def test_p7b_chain_comes_back_leaf_first(pki: dict[str, Any]) -> None:
    chain = [pki["leaf"], pki["sub"], pki["root"]]
    for rotation in range(3):
        shuffled = chain[rotation:] + chain[:rotation]
        assert load_certificates(dump_certificates(shuffled, "p7b")) == chain


def test_der_round_trip_and_single_certificate_rule() -> None:
    certs = _three()
    assert load_certificates(dump_certificates(certs[:1], "der")) == certs[:1]
    with pytest.raises(UsageError, match="exactly one"):
        dump_certificates(certs, "der")
    with pytest.raises(UsageError):
        dump_certificates([], "pem")
    with pytest.raises(UsageError, match="format"):
        dump_certificates(certs, "txt")  # type: ignore[arg-type]


def test_pem_with_other_blocks_keeps_only_certificates() -> None:
    certs = _three()
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(parse_subject("CN=x"))
        .sign(key("ec-p256"), hashes.SHA256())
    )
    data = csr.public_bytes(serialization.Encoding.PEM) + dump_certificates(certs, "pem")
    assert load_certificates(data) == certs


@pytest.mark.parametrize(
    "junk",
    [b"", b"hello", b"\x30\x03\x02\x01\x01", b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
     b"-----BEGIN PKCS7-----\nAAAA\n-----END PKCS7-----\n"],
)
def test_load_certificates_rejects_junk(junk: bytes) -> None:
    with pytest.raises(UsageError, match="not a PEM bundle"):
        load_certificates(junk)


def test_load_certificates_rejects_pem_without_certificates() -> None:
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(parse_subject("CN=x"))
        .sign(key("ec-p256"), hashes.SHA256())
    )
    with pytest.raises(UsageError):
        load_certificates(csr.public_bytes(serialization.Encoding.PEM))


# --- chains ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki() -> dict[str, Any]:
    root_key, root = make_ca("ec-p384", "CN=Root", path_length=1)
    sub_key = key("ec-p256", 4)
    sub = issue(root_key, root, sub_key, "CN=Sub", is_ca=True, path_length=0,
                key_usage=ku(key_cert_sign=True, crl_sign=True), extended_key_usage=[])
    leaf = issue(sub_key, sub, key("ed25519", 1), "CN=Leaf")
    return {"root": root, "root_key": root_key, "sub": sub, "sub_key": sub_key, "leaf": leaf}


def test_verify_chain_returns_leaf_to_root(pki: dict[str, Any]) -> None:
    chain = verify_chain(pki["leaf"], [pki["root"], pki["sub"]])
    assert chain == [pki["leaf"], pki["sub"], pki["root"]]


def test_verify_chain_direct_and_root_alone(pki: dict[str, Any]) -> None:
    assert verify_chain(pki["sub"], [pki["root"]]) == [pki["sub"], pki["root"]]
    assert verify_chain(pki["root"], [pki["root"]]) == [pki["root"]]


def test_verify_chain_missing_intermediate(pki: dict[str, Any]) -> None:
    with pytest.raises(RequestRejected, match="issuer 'CN=Sub' of 'CN=Leaf' is not among"):
        verify_chain(pki["leaf"], [pki["root"]])


def test_verify_chain_needs_a_trusted_root(pki: dict[str, Any]) -> None:
    with pytest.raises(RequestRejected, match="issuer 'CN=Root'"):
        verify_chain(pki["leaf"], [pki["sub"]])
    _other_key, other_root = make_ca("ec-p256", "CN=Other", n=5)
    with pytest.raises(RequestRejected):
        verify_chain(other_root, [])


def test_verify_chain_expired_and_not_yet_valid(pki: dict[str, Any]) -> None:
    with pytest.raises(RequestRejected, match="expired"):
        verify_chain(pki["leaf"], [pki["root"], pki["sub"]], at=datetime.now(UTC) + timedelta(days=60))
    with pytest.raises(RequestRejected, match="not valid before"):
        verify_chain(pki["leaf"], [pki["root"], pki["sub"]], at=datetime.now(UTC) - timedelta(days=1))


def test_verify_chain_rejects_a_same_name_impostor(pki: dict[str, Any]) -> None:
    # Same subject as the real root but another key: name matching alone would accept it.
    _fake_key, fake_root = make_ca("ec-p384", "CN=Root", n=6)
    with pytest.raises(RequestRejected):
        verify_chain(pki["leaf"], [fake_root, pki["sub"]])
    # With both roots present the right one is found.
    chain = verify_chain(pki["leaf"], [fake_root, pki["sub"], pki["root"]])
    assert chain[-1] == pki["root"]


def test_verify_chain_rejects_non_ca_issuer(pki: dict[str, Any]) -> None:
    ee_key = key("ec-p256", 7)
    ee = issue(pki["root_key"], pki["root"], ee_key, "CN=Not a CA")
    victim = issue(ee_key, ee, key("ec-p256", 8), "CN=Victim")
    with pytest.raises(RequestRejected, match="not a CA"):
        verify_chain(victim, [ee, pki["root"]])


def test_verify_chain_enforces_path_length() -> None:
    root_key, root = make_ca("ec-p256", "CN=Strict Root", path_length=0)
    sub_key = key("ec-p256", 10)
    sub = issue(root_key, root, sub_key, "CN=Sub", is_ca=True,
                key_usage=ku(key_cert_sign=True, crl_sign=True), extended_key_usage=[])
    leaf = issue(sub_key, sub, key("ec-p256", 11))
    assert verify_chain(sub, [root]) == [sub, root]
    with pytest.raises(RequestRejected, match="allows 0 subordinate"):
        verify_chain(leaf, [root, sub])


def test_verify_chain_rejects_issuer_without_key_cert_sign(pki: dict[str, Any]) -> None:
    sub_key = key("ec-p256", 12)
    sub = issue(pki["root_key"], pki["root"], sub_key, "CN=CRL only", is_ca=True,
                key_usage=ku(crl_sign=True), extended_key_usage=[])
    leaf = issue(sub_key, sub, key("ec-p256", 13))
    with pytest.raises(RequestRejected, match="keyCertSign"):
        verify_chain(leaf, [pki["root"], sub])
