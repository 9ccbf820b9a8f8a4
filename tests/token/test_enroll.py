"""``tokenissue enroll`` end to end: key born on a real token, CSR signed in it, issued by a CA
whose key is on a SoftHSM token, certificate written back next to the key, checked by OpenSSL.

Every key type is enrolled on every implementation (conftest's token_impl_with_ca): SoftHSM;
SoftHSM offering only raw mechanisms, CA token included (the host hashes for holder and CA);
tpm2-pkcs11 on a software TPM with the CA on SoftHSM (two modules in one process).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tokenissue.models import KeyType

from support.lifecycle import TokenCA, make_token_ca
from support.openssl import openssl
from support.softhsm import SoftHSM
from support.token_impls import TokenImpl

HEX = re.compile(r"^[0-9a-f]+$")


@pytest.fixture
def token_ca(softhsm: SoftHSM) -> TokenCA:
    """A fresh EC P-256 CA with its key on a second token 'ca' of the same SoftHSM."""
    return make_token_ca(softhsm)


def _iso(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    assert value.tzinfo is not None, f"{text} has no time zone"
    return value


def _check_enrolled(ca: TokenCA, out: dict[str, object], key_type: KeyType, label: str, subject: str,
                    tmp: Path, impl: TokenImpl | None = None) -> x509.Certificate:
    """Everything one enrollment must leave behind, checked from the JSON, the token and OpenSSL.
    ``impl``: the holder token's implementation (its facts, and its own answers), when not SoftHSM."""
    assert set(out) >= {"token", "token_serial", "key_id", "label", "serial", "subject", "not_before",
                        "not_after", "sha256", "profile"}
    assert out["token"] == "test"
    assert out["label"] == label
    assert out["profile"] == "personal"
    assert out["subject"] == subject
    assert out["resumed"] is False
    for name in ("key_id", "serial", "sha256"):
        assert HEX.match(str(out[name])), (name, out[name])
    if impl is None or impl.serials_unique:
        assert HEX.match(str(out["token_serial"])), out["token_serial"]
    else:
        # Serials do not name tokens here (tpm2-pkcs11: 0000000000000000): a pkcs11: URI does.
        assert str(out["token_serial"]).startswith("pkcs11:token=test;"), out["token_serial"]
    if impl is not None:
        assert out["token_serial"] == impl.identity("test")
    assert len(str(out["sha256"])) == 64
    not_before, not_after = _iso(str(out["not_before"])), _iso(str(out["not_after"]))
    now = datetime.now(UTC)
    assert not_before <= now < not_after
    # The personal profile is 365 days (never longer than the CA, which lives 10 years).
    assert timedelta(days=364) < not_after - now <= timedelta(days=366)

    # The key: exactly one, born on the token, with its certificate next to it.
    keys = ca.private_keys()
    assert [k["label"] for k in keys] == [label]
    key = keys[0]
    assert key["id"] == out["key_id"]
    assert key["type"] == key_type.value
    assert key["has_certificate"] is True
    assert key["local"] is True
    assert key["never_extractable"] is True
    assert key["always_sensitive"] is True
    assert key["extractable"] is False
    if impl is not None:
        # Whether the key can decrypt: what it does when the token is asked to (and its flag),
        # reported alike by enroll and keys list.
        report = impl.key_attributes(label)
        decrypts = report["decrypts"]
        assert decrypts is (key_type in impl.decrypting)
        assert key["can_decrypt"] is out["key_can_decrypt"] is decrypts
        assert key["sign_only"] is out["sign_only"] is (not decrypts)
        assert key["decrypt_flag"] is (report["private.DECRYPT"] is True) is (not impl.sign_only)

    # The certificate on the token is the one the JSON describes, and OpenSSL accepts it. The
    # issuing CA's certificate was written to the token too (export --chain finds it there).
    leaf_pem = tmp / f"{label}.pem"
    exported = ca.export(label, leaf_pem, chain=True)
    assert [c.subject for c in exported] == [x509.Name.from_rfc4514_string(subject), ca.certificate.subject]
    assert exported[1] == ca.certificate
    cert = exported[0]
    assert format(cert.serial_number, "x") == out["serial"]
    assert cert.fingerprint(hashes.SHA256()).hex() == out["sha256"]
    assert cert.not_valid_before_utc == not_before
    assert cert.not_valid_after_utc == not_after
    assert cert.issuer == ca.certificate.subject
    ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    assert ski.hex() == out["key_id"], "CKA_ID is the certificate's Subject Key Identifier"
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.EMAIL_PROTECTION]
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature and ku.content_commitment and not ku.key_cert_sign
    verified = ca.verify(leaf_pem)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert f"{leaf_pem}: OK" in verified.stdout

    # The CA recorded exactly this certificate, for this token and key.
    assert [(format(r.serial, "x"), r.subject, r.status.value, (r.key_id or b"").hex(), r.token_serial)
            for r in ca.records()] == [(out["serial"], subject, "valid", out["key_id"], out["token_serial"])]
    return cert


@pytest.mark.parametrize("key_type", list(KeyType), ids=[k.value for k in KeyType])
def test_enroll_every_key_type(
    token_impl: TokenImpl, token_impl_with_ca: TokenCA, key_type: KeyType, tmp_path: Path
) -> None:
    token_impl.require(key_type)
    token_ca = token_impl_with_ca
    label = f"enr-{key_type.value}"
    subject = f"CN=Enroll {key_type.value},O=tokenissue tests,C=KR"
    out = token_ca.enroll(subject, "--profile", "personal", "--type", key_type.value, "--label", label)
    cert = _check_enrolled(token_ca, out, key_type, label, subject, tmp_path, token_impl)

    public = cert.public_key()
    if key_type.algorithm.value == "rsa":
        assert isinstance(public, rsa.RSAPublicKey)
        assert public.key_size == key_type.bits
    elif key_type.algorithm.value == "ec":
        assert isinstance(public, ec.EllipticCurvePublicKey)
        assert public.curve.name == key_type.curve
    else:
        assert isinstance(public, ed25519.Ed25519PublicKey)


# UTF-8 subjects are encoded and shown by the host: one implementation is enough.
def test_enroll_korean_subject_round_trip(token_ca: TokenCA, tmp_path: Path) -> None:
    subject = "CN=홍길동,O=우리은행,C=KR"
    out = token_ca.enroll(subject, "--label", "hong")
    cert = _check_enrolled(token_ca, out, KeyType.EC_P256, "hong", subject, tmp_path)
    assert out["token_serial"] == next(t["serial"] for t in token_ca.json("tokens") if t["label"] == "test")

    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "홍길동"
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "우리은행"
    assert cert.subject.rfc4514_string() == subject
    shown = openssl("x509", "-in", str(tmp_path / "hong.pem"), "-noout", "-subject", "-nameopt", "utf8,sep_comma_plus")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip() == "subject=C=KR,O=우리은행,CN=홍길동"
    # The CA's listing and the holder's status (read from the token) show the same UTF-8 subject.
    assert [r["subject"] for r in token_ca.issued()] == [subject]
    [st] = token_ca.status()
    assert st["subject"] == subject
    assert st["state"] == "valid"


# test_enroll_on_mechanism_restricted_token (ec-p256 and rsa-2048 on a SoftHSM offering only raw
# mechanisms, CA token included) is test_enroll_every_key_type[softhsm-raw-*] now.
