"""CRLs from tokenissue.pkix.crl, checked with cryptography and with the real openssl binary."""

from __future__ import annotations

import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from tokenissue.errors import CAUnavailable, UsageError
from tokenissue.models import RevocationReason
from tokenissue.pkix.certs import dump_certificates, issue_certificate, random_serial, self_signed_ca
from tokenissue.pkix.crl import build_crl
from tokenissue.pkix.names import parse_subject
from tokenissue.pkix.reasons import REASON_FLAGS

needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")

_KEYS: dict[str, Any] = {}


def key(kind: str) -> Any:
    """One software key per kind for the whole module (RSA generation is slow)."""
    if kind not in _KEYS:
        _KEYS[kind] = {
            "rsa-2048": lambda: rsa.generate_private_key(65537, 2048),
            "ec-p256": lambda: ec.generate_private_key(ec.SECP256R1()),
            "ec-p384": lambda: ec.generate_private_key(ec.SECP384R1()),
            "ed25519": ed25519.Ed25519PrivateKey.generate,
        }[kind]()
    return _KEYS[kind]


def usage(**bits: bool) -> x509.KeyUsage:
    names = ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
             "key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only")
    return x509.KeyUsage(**{n: bits.get(n, False) for n in names})


def leaf_for(ca_key: Any, ca: x509.Certificate, name: str, **kw: Any) -> x509.Certificate:
    now = datetime.now(UTC) - timedelta(minutes=1)
    args: dict[str, Any] = {
        "public_key": ec.generate_private_key(ec.SECP256R1()).public_key(),
        "subject": parse_subject(f"CN={name}"),
        "san": [],
        "serial": random_serial(),
        "not_before": now,
        "not_after": now + timedelta(days=30),
        "key_usage": usage(digital_signature=True),
        "extended_key_usage": [ExtendedKeyUsageOID.CLIENT_AUTH],
        "policies": [],
        "crl_url": "http://ca.example/crl.der",
    }
    args.update(kw)
    return issue_certificate(ca_key, ca, **args)


NOW = datetime.now(UTC).replace(microsecond=0)


def crl_for(ca_key: Any, ca: x509.Certificate, revoked: list[Any], **kw: Any) -> Any:
    args: dict[str, Any] = {
        "number": 7,
        "this_update": NOW - timedelta(minutes=1),
        "next_update": NOW + timedelta(days=7),
    }
    args.update(kw)
    return build_crl(ca_key, ca, revoked, **args)


def test_every_reason_maps_to_a_flag() -> None:
    assert set(REASON_FLAGS) == set(RevocationReason)


def test_crl_contents() -> None:
    ca_key = key("ec-p256")
    ca = self_signed_ca(ca_key, parse_subject("CN=CRL Root,C=KR"), 365)
    revoked = [
        (1001, NOW - timedelta(days=1), RevocationReason.KEY_COMPROMISE),
        (1002, NOW - timedelta(hours=1), RevocationReason.UNSPECIFIED),
        (1003, NOW, RevocationReason.SUPERSEDED),
    ]
    crl = crl_for(ca_key, ca, revoked, number=42)
    assert crl.is_signature_valid(ca.public_key())
    assert crl.issuer == ca.subject
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 42
    aki = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    assert crl.last_update_utc == NOW - timedelta(minutes=1)
    assert crl.next_update_utc == NOW + timedelta(days=7)

    entries = {r.serial_number: r for r in crl}
    assert set(entries) == {1001, 1002, 1003}
    assert entries[1001].revocation_date_utc == NOW - timedelta(days=1)
    reason = entries[1001].extensions.get_extension_for_class(x509.CRLReason).value.reason
    assert reason is x509.ReasonFlags.key_compromise
    # RFC 5280 §5.3.1: no reasonCode extension for "unspecified".
    with pytest.raises(x509.ExtensionNotFound):
        entries[1002].extensions.get_extension_for_class(x509.CRLReason)
    reason = entries[1003].extensions.get_extension_for_class(x509.CRLReason).value.reason
    assert reason is x509.ReasonFlags.superseded


def test_empty_crl() -> None:
    ca_key = key("ec-p256")
    ca = self_signed_ca(ca_key, parse_subject("CN=Empty"), 365)
    crl = crl_for(ca_key, ca, [])
    assert len(crl) == 0
    assert crl.is_signature_valid(ca.public_key())


def test_crl_refusals() -> None:
    ca_key = key("ec-p256")
    ca = self_signed_ca(ca_key, parse_subject("CN=Refusals"), 365)
    with pytest.raises(UsageError, match="nextUpdate"):
        crl_for(ca_key, ca, [], next_update=NOW - timedelta(minutes=1))
    with pytest.raises(UsageError, match="CRL number"):
        crl_for(ca_key, ca, [], number=-1)
    with pytest.raises(UsageError, match="CRL number"):
        crl_for(ca_key, ca, [], number=2**159)
    twice = [(5, NOW, RevocationReason.UNSPECIFIED), (5, NOW, RevocationReason.SUPERSEDED)]
    with pytest.raises(UsageError, match="appears twice"):
        crl_for(ca_key, ca, twice)
    with pytest.raises(CAUnavailable, match="does not match"):
        crl_for(key("ec-p384"), ca, [])


def test_crl_refused_for_ca_without_crl_sign() -> None:
    root_key = key("ec-p256")
    root = self_signed_ca(root_key, parse_subject("CN=Root"), 365)
    sub_key = key("ec-p384")
    sub = leaf_for(root_key, root, "No CRL CA", public_key=sub_key.public_key(), is_ca=True,
                   key_usage=usage(key_cert_sign=True), extended_key_usage=[])
    with pytest.raises(CAUnavailable, match="cRLSign"):
        crl_for(sub_key, sub, [])


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["openssl", *args], capture_output=True, text=True)


@needs_openssl
@pytest.mark.parametrize("kind", ["rsa-2048", "ec-p256", "ec-p384", "ed25519"])
def test_openssl_accepts_crl_and_sees_revocation(tmp_path: Path, kind: str) -> None:
    ca_key = key(kind)
    ca = self_signed_ca(ca_key, parse_subject(f"CN=CRL Root {kind},O=우리은행,C=KR"), 365)
    good = leaf_for(ca_key, ca, "good")
    bad = leaf_for(ca_key, ca, "bad")
    crl = crl_for(
        ca_key, ca, [(bad.serial_number, NOW - timedelta(minutes=1),
                      RevocationReason.KEY_COMPROMISE)]
    )
    (tmp_path / "ca.pem").write_bytes(dump_certificates([ca], "pem"))
    (tmp_path / "crl.pem").write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "crl.der").write_bytes(crl.public_bytes(serialization.Encoding.DER))
    (tmp_path / "good.pem").write_bytes(dump_certificates([good], "pem"))
    (tmp_path / "bad.pem").write_bytes(dump_certificates([bad], "pem"))

    result = run("crl", "-in", str(tmp_path / "crl.pem"), "-CAfile", str(tmp_path / "ca.pem"),
                 "-verify", "-noout")
    assert result.returncode == 0, result.stderr
    assert "verify OK" in result.stdout + result.stderr
    result = run("crl", "-inform", "DER", "-in", str(tmp_path / "crl.der"), "-noout", "-text")
    assert result.returncode == 0, result.stderr
    assert "Key Compromise" in result.stdout
    assert "X509v3 CRL Number" in result.stdout

    ok = run("verify", "-crl_check", "-CAfile", str(tmp_path / "ca.pem"),
             "-CRLfile", str(tmp_path / "crl.pem"), str(tmp_path / "good.pem"))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    revoked = run("verify", "-crl_check", "-CAfile", str(tmp_path / "ca.pem"),
                  "-CRLfile", str(tmp_path / "crl.pem"), str(tmp_path / "bad.pem"))
    assert revoked.returncode != 0
    assert "certificate revoked" in revoked.stdout + revoked.stderr
