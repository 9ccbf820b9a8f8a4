"""The token layer negotiates with each implementation, on real SoftHSM and tpm2-pkcs11.

* key templates: the strict sign-only one where the token takes it (SoftHSM), the documented
  fallback steps where it does not (tpm2-pkcs11 ties CKA_SIGN to CKA_ENCRYPT), and the
  never-relaxed attributes read back;
* certificate objects: an optional attribute the token refuses is left out, the rest kept;
* key sizes the token cannot make are refused before anything is written;
* the capability record is learnt once per token and consulted afterwards.
"""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pkcs11 import Attribute, CertificateType, ObjectClass
from pkcs11 import KeyType as P11KeyType

from tokenissue import p11
from tokenissue.credentials import Pin
from tokenissue.errors import MechanismUnsupported, ProvenanceError
from tokenissue.models import KeyType
from tokenissue.p11._capabilities import KEY_TEMPLATE_STEPS

from support.cli import USER_PIN
from support.softhsm import SOFTHSM_MODULE, SoftHSM

TOKEN = p11.TokenSelector(label="test")


def _cert(cn: str = "negotiation") -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip


# -- SoftHSM: the strict template, unchanged ----------------------------------------------------


@pytest.mark.parametrize("key_type", [KeyType.EC_P256, KeyType.RSA_2048, KeyType.ED25519], ids=lambda k: k.value)
def test_softhsm_takes_the_strict_sign_only_template(session_softhsm: SoftHSM, key_type: KeyType) -> None:
    with p11.open_token(TOKEN, Pin(USER_PIN), module=SOFTHSM_MODULE) as s:
        info = s.generate_key(key_type, "strict")
        assert info.template == "strict"
        assert not info.can_decrypt
        assert info.born_on_token
        priv = s._one_private(p11.KeySelector(id=info.id))
        a = priv.get_attributes([Attribute.DECRYPT, Attribute.UNWRAP, Attribute.SIGN_RECOVER, Attribute.ALLOWED_MECHANISMS])
        assert a[Attribute.DECRYPT] is False and a[Attribute.UNWRAP] is False and a[Attribute.SIGN_RECOVER] is False
        assert a[Attribute.ALLOWED_MECHANISMS], "the strict template pins the key to its signature mechanisms"
        assert s.capabilities.template_refusals[key_type.algorithm] == []


def test_a_key_the_token_made_extractable_is_destroyed_and_refused(session_softhsm: SoftHSM) -> None:
    """The read-back check on a real key whose attributes are weak (made here by hand, as a
    token that ignores the template would): refused, and generate_key's clean-up removes it."""
    with p11.open_token(TOKEN, Pin(USER_PIN), module=SOFTHSM_MODULE) as s:
        pub, priv = s._session.generate_keypair(
            P11KeyType.EC, store=True, label="weak", id=b"\x77",
            public_template={Attribute.EC_PARAMS: bytes.fromhex("06082a8648ce3d030107")},
            private_template={Attribute.SENSITIVE: False, Attribute.EXTRACTABLE: True},
        )  # fmt: skip
        with pytest.raises(ProvenanceError, match="extractable"):
            s._check_generated(priv, KeyType.EC_P256, False)
        s._destroy_pair(pub, priv)
        assert s.find_keys("weak") == []


def test_certificate_attribute_the_token_refuses_is_left_out(session_softhsm: SoftHSM) -> None:
    """SoftHSM refuses CKA_TRUSTED from a user session (CKR_ATTRIBUTE_READ_ONLY: only the SO may
    set it). The certificate is stored without it, the other optional attributes kept, nothing
    is left behind (SoftHSM keeps the object of a refused C_CreateObject), and the token's
    record remembers the refusal."""
    cert = _cert()
    from cryptography.hazmat.primitives import serialization

    der = cert.public_bytes(serialization.Encoding.DER)
    attrs = {
        Attribute.CLASS: ObjectClass.CERTIFICATE, Attribute.CERTIFICATE_TYPE: CertificateType.X_509,
        Attribute.TOKEN: True, Attribute.PRIVATE: False, Attribute.ID: b"\x42", Attribute.LABEL: "refused",
        Attribute.SUBJECT: cert.subject.public_bytes(), Attribute.VALUE: der,
        Attribute.ISSUER: cert.issuer.public_bytes(), Attribute.CERTIFICATE_CATEGORY: 2, Attribute.TRUSTED: True,
    }  # fmt: skip
    with p11.open_token(TOKEN, Pin(USER_PIN), module=SOFTHSM_MODULE) as s:
        s._create_certificate(dict(attrs))
        assert s.capabilities.cert_refused == {Attribute.TRUSTED}
        assert len(list(s._session.get_objects({Attribute.CLASS: ObjectClass.CERTIFICATE}))) == 1
        (obj,) = s._session.get_objects({Attribute.CLASS: ObjectClass.CERTIFICATE, Attribute.ID: b"\x42"})
        got = obj.get_attributes([Attribute.CERTIFICATE_CATEGORY, Attribute.ISSUER, Attribute.VALUE])
        assert got[Attribute.CERTIFICATE_CATEGORY] == 2
        assert bytes(got[Attribute.VALUE]) == der
        # Next time the refused attribute is left out from the start (one C_CreateObject).
        s._create_certificate({**attrs, Attribute.ID: b"\x43"})
        assert len(list(s._session.get_objects({Attribute.CLASS: ObjectClass.CERTIFICATE}))) == 2


def test_capability_record_is_learnt_once_per_token(session_softhsm: SoftHSM) -> None:
    with p11.open_token(TOKEN, Pin(USER_PIN), module=SOFTHSM_MODULE) as s:
        first = s.capabilities
        s.generate_key(KeyType.EC_P256, "one")
    with p11.open_token(TOKEN, Pin(USER_PIN), module=SOFTHSM_MODULE) as s:
        assert s.capabilities is first
        assert s.capabilities.template_step[KeyType.EC_P256.algorithm].name == "strict"


def test_template_steps_never_relax_the_protections() -> None:
    never = {Attribute.TOKEN, Attribute.PRIVATE, Attribute.SENSITIVE, Attribute.EXTRACTABLE, Attribute.SIGN}
    for step in KEY_TEMPLATE_STEPS:
        assert not never & set(step.omit_private), step.name
        assert Attribute.VERIFY not in step.omit_public
    assert KEY_TEMPLATE_STEPS[0].omit_private == () and KEY_TEMPLATE_STEPS[0].sign_only
    assert [s.name for s in KEY_TEMPLATE_STEPS].index("token-usage") > 2, "decrypt is given up last"


# -- tpm2-pkcs11 ----------------------------------------------------------------------------------


@pytest.mark.parametrize("key_type", [KeyType.EC_P256, KeyType.EC_P384, KeyType.RSA_2048], ids=lambda k: k.value)
def test_tpm_falls_back_to_token_usage_and_pins_the_key_to_signing(session_tpm: object, key_type: KeyType) -> None:
    """tpm2-pkcs11 sets CKA_DECRYPT on every key; tokenissue then pins the key, through
    CKA_ALLOWED_MECHANISMS (which the TPM enforces), to signature mechanisms that cannot decrypt
    (no raw CKM_RSA_PKCS). The key is reported sign-only, and the TPM really refuses to decrypt."""
    from pkcs11 import Mechanism
    from pkcs11.exceptions import MechanismInvalid

    from support.tpm import TPM2_MODULE

    with p11.open_token(TOKEN, Pin(USER_PIN), module=TPM2_MODULE) as s:
        info = s.generate_key(key_type, "tpm")
        assert info.template == "token-usage"
        assert info.decrypt_flag, "tpm2-pkcs11 sets CKA_DECRYPT on every signing key"
        assert not info.can_decrypt, "pinned to signature mechanisms: it cannot decrypt"
        assert info.born_on_token and info.sensitive and not info.extractable
        refused = s.capabilities.template_refusals[key_type.algorithm]
        assert [name for name, _ in refused] == ["strict", "no-allowed-mechanisms", "no-recover"]
        assert {rv for _, rv in refused} == {"CKR_GENERAL_ERROR"}
        priv = s._one_private(p11.KeySelector(id=info.id))
        allowed = {int(m) for m in priv.get_attributes([Attribute.ALLOWED_MECHANISMS])[Attribute.ALLOWED_MECHANISMS]}
        assert allowed
        if key_type.algorithm is KeyType.RSA_2048.algorithm:
            assert int(Mechanism.RSA_PKCS) not in allowed and int(Mechanism.SHA256_RSA_PKCS) in allowed
            secret = s._public_object(info.id).encrypt(b"secret", mechanism=Mechanism.RSA_PKCS)
            with pytest.raises(MechanismInvalid):
                priv.decrypt(secret, mechanism=Mechanism.RSA_PKCS)
        else:
            assert allowed <= {int(m) for m in (Mechanism.ECDSA, Mechanism.ECDSA_SHA256, Mechanism.ECDSA_SHA384,
                                                 Mechanism.ECDSA_SHA512)}  # fmt: skip
        # The second key of this type goes straight to the step that worked.
        s.generate_key(key_type, "tpm2")
        assert s.capabilities.template_refusals[key_type.algorithm] == refused
        # The refused attempts left no half key pairs: two private and two public keys.
        assert len(list(s._session.get_objects({}))) == 4


def test_tpm_require_sign_only_is_met_and_the_pinned_rsa_key_signs(session_tpm: object) -> None:
    """--require-sign-only on the TPM: the same pinned key, accepted; signatures go through the
    combined mechanisms (planned within the key's own list) and verify."""
    from cryptography.hazmat.primitives.asymmetric import padding

    from support.tpm import TPM2_MODULE

    with p11.open_token(TOKEN, Pin(USER_PIN), module=TPM2_MODULE) as s:
        info = s.generate_key(KeyType.RSA_2048, "strict", require_sign_only=True)
        assert info.decrypt_flag and not info.can_decrypt and info.template == "token-usage"
        key = s.private_key(p11.KeySelector(id=info.id))
        sig = key.sign(b"data", padding.PKCS1v15(), hashes.SHA256())
        key.public_key().verify(sig, b"data", padding.PKCS1v15(), hashes.SHA256())


def test_require_sign_only_on_a_smart_card_like_token_is_met_by_decrypt_false(raw_softhsm: SoftHSM) -> None:
    """A smart-card-like SoftHSM offers only raw CKM_RSA_PKCS: it makes sign-only keys by
    CKA_DECRYPT=False, so --require-sign-only is satisfied there (the control)."""
    proc = raw_softhsm.run("keys", "generate", "-t", "test", "-l", "k", "--type", "rsa-2048", "--require-sign-only", "--json")
    assert proc.returncode == 0, proc.stderr
    import json

    got = json.loads(proc.stdout)
    assert got["sign_only"] and not got["decrypt_flag"] and got["template"] == "strict"


@pytest.mark.parametrize(("key_type", "why"), [(KeyType.RSA_4096, "1024-3072 bits"), (KeyType.ED25519, "Ed25519")])
def test_tpm_refuses_key_types_it_cannot_make_before_writing(session_tpm: object, key_type: KeyType, why: str) -> None:
    from support.tpm import TPM2_MODULE

    with p11.open_token(TOKEN, Pin(USER_PIN), module=TPM2_MODULE) as s:
        with pytest.raises(MechanismUnsupported, match=why):
            s.generate_key(key_type, "big")
        assert s.capabilities.template_refusals.get(key_type.algorithm) is None, "the token was never asked"
        assert s.list_keys() == []
