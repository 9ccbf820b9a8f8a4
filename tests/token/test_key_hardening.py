"""A signing key made by tokenissue must not be usable to decrypt, by any route.

A raw RSA signature (CKM_RSA_X_509, or C_SignRecover) *is* RSA decryption, so CKA_DECRYPT=False
alone leaves a decryption oracle; CKA_ALLOWED_MECHANISMS and SIGN_RECOVER=False close it.
Found by review: before the fix, C_Sign(CKM_RSA_X_509) returned the plaintext.
"""

from __future__ import annotations

from typing import Any

import pkcs11
import pkcs11.exceptions as px
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding

from tokenissue import p11
from tokenissue.credentials import Pin
from tokenissue.errors import MechanismUnsupported, ObjectExists
from tokenissue.models import KeyType

from support.cli import USER_PIN
from support.softhsm import SOFTHSM_MODULE, SoftHSM


def _raw(session: p11.TokenSession, label: str) -> object:
    return next(iter(session._session.get_objects({pkcs11.Attribute.CLASS: pkcs11.ObjectClass.PRIVATE_KEY, pkcs11.Attribute.LABEL: label})))


def test_rsa_sign_only_key_cannot_decrypt_through_raw_signing(session_softhsm: SoftHSM) -> None:
    with p11.open_token(p11.TokenSelector(label="test"), Pin(USER_PIN), module=SOFTHSM_MODULE) as s:
        s.generate_key(KeyType.RSA_2048, "oracle")
        public = s.public_key(p11.KeySelector(label="oracle"))
        ciphertext = public.encrypt(b"top secret session key", padding.PKCS1v15())
        priv = _raw(s, "oracle")
        with pytest.raises(px.PKCS11Error):
            priv.sign(ciphertext, mechanism=pkcs11.Mechanism.RSA_X_509)  # type: ignore[attr-defined]
        # python-pkcs11 does not even offer decrypt() on a key whose CKA_DECRYPT is false.
        with pytest.raises((px.PKCS11Error, AttributeError)):
            priv.decrypt(ciphertext, mechanism=pkcs11.Mechanism.RSA_PKCS)  # type: ignore[attr-defined]
        # The restriction cannot be lifted afterwards.
        with pytest.raises(px.PKCS11Error):
            priv[pkcs11.Attribute.ALLOWED_MECHANISMS] = [pkcs11.Mechanism.RSA_X_509]  # type: ignore[index]
        # ...and ordinary signing still works.
        assert s.private_key(p11.KeySelector(label="oracle")).sign(b"x", padding.PKCS1v15(), hashes.SHA256())


@pytest.mark.parametrize("key_type", [KeyType.EC_P256, KeyType.ED25519, KeyType.RSA_2048])
def test_allowed_mechanisms_are_signature_mechanisms_only(session_softhsm: SoftHSM, key_type: KeyType) -> None:
    with p11.open_token(p11.TokenSelector(label="test"), Pin(USER_PIN), module=SOFTHSM_MODULE) as s:
        s.generate_key(key_type, "k")
        allowed = {pkcs11.Mechanism(m) for m in _raw(s, "k")[pkcs11.Attribute.ALLOWED_MECHANISMS]}  # type: ignore[index]
        assert allowed, "the key must carry CKA_ALLOWED_MECHANISMS"
        assert all("RSA_X_509" not in m.name and ("SHA" in m.name or m.name in ("RSA_PKCS", "RSA_PKCS_PSS", "ECDSA", "EDDSA")) for m in allowed), allowed
        assert _raw(s, "k")[pkcs11.Attribute.SIGN_RECOVER] is False  # type: ignore[index]


def test_pss_max_length_salt_signs_validly(session_softhsm: SoftHSM) -> None:
    """Found by review: PSS.MAX_LENGTH was treated as the digest length, so signatures failed."""
    with p11.open_token(p11.TokenSelector(label="test"), Pin(USER_PIN), module=SOFTHSM_MODULE) as s:
        s.generate_key(KeyType.RSA_2048, "pss")
        key = s.private_key(p11.KeySelector(label="pss"))
        for salt in (padding.PSS.MAX_LENGTH, padding.PSS.DIGEST_LENGTH, 20):
            pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=salt)
            sig = key.sign(b"message", pss, hashes.SHA256())
            key.public_key().verify(sig, b"message", pss, hashes.SHA256())
        with pytest.raises(MechanismUnsupported):
            key.sign(b"m", padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.AUTO), hashes.SHA256())


def test_explicit_id_of_an_orphan_certificate_is_refused(session_softhsm: SoftHSM, software_ca: Any) -> None:
    """Found by review: --id checked only keys, so a certificate left under that ID (keys delete
    --keep-certificate) was paired with the new, unrelated key."""
    other = ec.generate_private_key(ec.SECP256R1())
    cert = software_ca.issue(other.public_key(), "Dave")
    with p11.open_token(p11.TokenSelector(label="test"), Pin(USER_PIN), module=SOFTHSM_MODULE) as s:
        s.write_certificate(cert, key_id=b"\x0d\xa7\x0e", label="dave")
        with pytest.raises(ObjectExists):
            s.generate_key(KeyType.EC_P256, "eve", b"\x0d\xa7\x0e")
        assert s.find_keys("eve") == []


def test_an_unparsable_certificate_object_does_not_break_listing(session_softhsm: SoftHSM, software_ca: Any) -> None:
    """Found by review: one garbage CKO_CERTIFICATE made cert list / status exit 1."""
    with p11.open_token(p11.TokenSelector(label="test"), Pin(USER_PIN), module=SOFTHSM_MODULE) as s:
        s.generate_key(KeyType.EC_P256, "good")
        pub = s.public_key(p11.KeySelector(label="good"))
        s.write_certificate(software_ca.issue(pub, "Good"), key_id=s.key(p11.KeySelector(label="good")).id, label="good")
        s._session.create_object({
            pkcs11.Attribute.CLASS: pkcs11.ObjectClass.CERTIFICATE,
            pkcs11.Attribute.CERTIFICATE_TYPE: pkcs11.CertificateType.X_509,
            pkcs11.Attribute.TOKEN: True,
            pkcs11.Attribute.ID: b"\x01",
            pkcs11.Attribute.LABEL: "junk",
            pkcs11.Attribute.SUBJECT: b"\x30\x00",
            pkcs11.Attribute.VALUE: b"\x30\x03\x02\x01\x00 not a certificate",
        })
        assert [c.label for c in s.certificates()] == ["good"]
