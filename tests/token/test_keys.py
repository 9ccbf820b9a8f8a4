"""Keys born on a real token, and CSRs signed inside it (no mock of the PKCS#11 layer).

The tests of generic token behaviour run on every implementation (conftest's token_impl:
SoftHSM, SoftHSM with raw mechanisms only, tpm2-pkcs11 on a software TPM); where a token
legitimately differs (a TPM sets CKA_DECRYPT on every key and its RSA keys really decrypt, its
secret attributes do not exist) the test asks the token itself (its attributes, and a real
decryption) and checks what tokenissue reports against that. The subject and
SAN encoding, and SoftHSM's session bookkeeping, stay on SoftHSM.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
from pathlib import Path

import pkcs11.exceptions as px
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509.oid import NameOID
from pkcs11 import Attribute, ObjectClass

from tokenissue import p11
from tokenissue.credentials import Pin
from tokenissue.errors import ObjectExists, PinIncorrect
from tokenissue.models import KeyType

from support.cli import SO_PIN, USER_PIN
from support.key_report import key_report
from support.softhsm import SOFTHSM_MODULE, SoftHSM
from support.token_impls import DOCUMENTED_IMPLS, TokenImpl, on_impls

SEL = p11.TokenSelector(label="test")
ALL_TYPES = pytest.mark.parametrize("key_type", list(KeyType), ids=[k.value for k in KeyType])
# The attribute that holds the secret half of each key type; reading it must be refused.
_SECRET_ATTR = {"rsa": Attribute.PRIVATE_EXPONENT, "ec": Attribute.VALUE, "ed25519": Attribute.VALUE}


def _check_signature(private_key: object, public: object) -> None:
    """Sign with the token key and verify in software: the public key belongs to the private one."""
    msg = os.urandom(48)
    if isinstance(public, rsa.RSAPublicKey):
        sig = private_key.sign(msg, padding.PKCS1v15(), hashes.SHA256())  # type: ignore[attr-defined]
        public.verify(sig, msg, padding.PKCS1v15(), hashes.SHA256())
    elif isinstance(public, ec.EllipticCurvePublicKey):
        sig = private_key.sign(msg, ec.ECDSA(hashes.SHA256()))  # type: ignore[attr-defined]
        public.verify(sig, msg, ec.ECDSA(hashes.SHA256()))
    else:
        assert isinstance(public, ed25519.Ed25519PublicKey)
        public.verify(private_key.sign(msg), msg)  # type: ignore[attr-defined]


@ALL_TYPES
def test_generated_key_is_born_on_the_token(session_token_impl: TokenImpl, key_type: KeyType) -> None:
    impl = session_token_impl
    impl.require(key_type)
    label = f"k-{key_type.value}"
    with p11.open_token(SEL, Pin(USER_PIN), module=impl.module) as s:
        info = s.generate_key(key_type, label)
        public = s.public_key(p11.KeySelector(label=label))
        _check_signature(s.private_key(p11.KeySelector(label=label)), public)
        listed = s.list_keys()

    assert info.key_type is key_type
    assert info.born_on_token
    assert [(k.id, k.label) for k in listed] == [(info.id, label)]
    # CKA_ID is the SubjectKeyIdentifier (RFC 5280 method 1) of the public key.
    assert info.id == x509.SubjectKeyIdentifier.from_public_key(public).digest
    if key_type.algorithm.value == "rsa":
        assert isinstance(public, rsa.RSAPublicKey)
        assert public.key_size == key_type.bits
    elif key_type.algorithm.value == "ec":
        assert isinstance(public, ec.EllipticCurvePublicKey)
        assert public.curve.name == key_type.curve
    else:
        assert isinstance(public, ed25519.Ed25519PublicKey)

    # Read the attributes straight from the token, not through tokenissue's KeyInfo.
    mod = p11.load_module(impl.module)
    with mod.session(SEL, Pin(USER_PIN)) as raw:
        privs = list(raw.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.LABEL: label}))
        pubs = list(raw.get_objects({Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.LABEL: label}))
        assert len(privs) == 1
        assert len(pubs) == 1
        priv, pub = privs[0], pubs[0]
        for attr in (Attribute.LOCAL, Attribute.NEVER_EXTRACTABLE, Attribute.ALWAYS_SENSITIVE,
                     Attribute.SENSITIVE, Attribute.TOKEN, Attribute.PRIVATE, Attribute.SIGN):
            assert priv[attr] is True, attr
        for attr in (Attribute.EXTRACTABLE, Attribute.UNWRAP):
            assert priv[attr] is False, attr
        # CKA_DECRYPT off where the token can make such keys; tpm2-pkcs11 sets it on every key.
        assert priv[Attribute.DECRYPT] is (not impl.sign_only)
        assert info.decrypt_flag is priv[Attribute.DECRYPT]
        # Whether the key really decrypts when asked (a TPM's RSA key does, through CKM_RSA_PKCS
        # in its CKA_ALLOWED_MECHANISMS; its EC key cannot): what tokenissue reports.
        decrypts = key_report(raw, label)["decrypts"]
        assert decrypts is (key_type in impl.decrypting)
        assert info.can_decrypt is decrypts
        assert pub[Attribute.VERIFY] is True
        assert pub[Attribute.ENCRYPT] is (not impl.sign_only)
        assert pub[Attribute.WRAP] is False
        assert bytes(priv[Attribute.ID]) == info.id
        assert bytes(pub[Attribute.ID]) == info.id
        # The secret half is never shown (SoftHSM: sensitive; tpm2-pkcs11: no such attribute).
        with pytest.raises(getattr(px, impl.facts.secret_read_error)):
            priv[_SECRET_ATTR[key_type.algorithm.value]]
        if impl.facts.extractable_locked:
            # A sensitive, non-extractable key cannot be made extractable afterwards.
            with pytest.raises(px.PKCS11Error):
                priv[Attribute.EXTRACTABLE] = True
            assert priv[Attribute.EXTRACTABLE] is False
        else:
            # tpm2-pkcs11 1.9 lets CKA_EXTRACTABLE be turned back on (PKCS#11 forbids it); from
            # then on tokenissue must no longer vouch for the key.
            priv[Attribute.EXTRACTABLE] = True
            assert priv[Attribute.EXTRACTABLE] is True
    if not impl.facts.extractable_locked:
        with p11.open_token(SEL, Pin(USER_PIN), module=impl.module) as s:
            after = s.key(p11.KeySelector(label=label))
        assert after.extractable
        assert not after.born_on_token


@on_impls("softhsm", "tpm2")  # object IDs do not depend on the mechanism list
def test_explicit_id_is_honoured_in_process(session_token_impl: TokenImpl) -> None:
    with p11.open_token(SEL, Pin(USER_PIN), module=session_token_impl.module) as s:
        info = s.generate_key(KeyType.EC_P256, "with-id", key_id=b"\xc0\x01")
        assert info.id == b"\xc0\x01"
        assert s.key(p11.KeySelector(id=b"\xc0\x01")).label == "with-id"
        with pytest.raises(ObjectExists):
            s.generate_key(KeyType.EC_P256, "other-label", key_id=b"\xc0\x01")
        with pytest.raises(ObjectExists):
            s.generate_key(KeyType.EC_P256, "with-id")
        assert [k.label for k in s.list_keys()] == ["with-id"]


@on_impls("softhsm", "tpm2")  # object IDs do not depend on the mechanism list
def test_explicit_id_via_cli_and_duplicates_exit_4(token_impl: TokenImpl) -> None:
    softhsm = token_impl
    gen = softhsm.run("keys", "generate", "-t", "test", "-l", "card", "--id", "c0:01", "--json", check=True)
    assert json.loads(gen.stdout)["id"] == "c001"
    assert "%c0%01" in json.loads(gen.stdout)["uri"]

    dup_label = softhsm.run("keys", "generate", "-t", "test", "-l", "card")
    assert dup_label.returncode == 4, dup_label.stderr
    assert "card" in dup_label.stderr
    assert "Traceback" not in dup_label.stderr
    dup_id = softhsm.run("keys", "generate", "-t", "test", "-l", "card2", "--id", "C001")
    assert dup_id.returncode == 4, dup_id.stderr

    keys = json.loads(softhsm.run("keys", "list", "-t", "test", "--json", check=True).stdout)
    assert [(k["label"], k["id"]) for k in keys] == [("card", "c001")]

    bad = softhsm.run("keys", "generate", "-t", "test", "-l", "x", "--id", "zz")
    assert bad.returncode == 2


def _openssl_verify(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["openssl", "req", "-in", str(path), "-noout", "-verify"],
                          capture_output=True, text=True, check=False)


@ALL_TYPES
def test_csr_per_key_type_verifies(token_impl: TokenImpl, key_type: KeyType) -> None:
    token_impl.require(key_type)
    softhsm = token_impl
    gen = softhsm.run("keys", "generate", "-t", "test", "-l", "k", "--type", key_type.value, "--json", check=True)
    generated = json.loads(gen.stdout)
    kid = generated["id"]
    # What 'keys generate' and 'keys list' report about decryption is what the token's flags say
    # and what the key does when asked to decrypt, and what the implementation is known to do.
    report = token_impl.key_attributes("k")
    flag = report["private.DECRYPT"] is True or report["private.UNWRAP"] is True
    decrypts = report["decrypts"]
    assert flag is (not token_impl.sign_only)
    assert decrypts is (key_type in token_impl.decrypting)
    assert (generated["decrypt_flag"], generated["can_decrypt"], generated["sign_only"]) == (flag, decrypts, not decrypts)
    listed = json.loads(softhsm.run("keys", "list", "-t", "test", "--json", check=True).stdout)
    assert [(k["id"], k["decrypt_flag"], k["can_decrypt"], k["sign_only"]) for k in listed] == [
        (kid, flag, decrypts, not decrypts)
    ]
    out = softhsm.root / "req.pem"
    softhsm.run("csr", "-t", "test", "-k", "k", "-s", f"CN=csr {key_type.value}", "-o", str(out), check=True)

    proc = _openssl_verify(out)
    assert proc.returncode == 0, proc.stderr
    assert "verify OK" in proc.stdout + proc.stderr

    csr = x509.load_pem_x509_csr(out.read_bytes())
    assert csr.is_signature_valid
    public = csr.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        assert public.key_size == key_type.bits
    assert x509.SubjectKeyIdentifier.from_public_key(csr.public_key()).digest.hex() == kid
    assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == f"csr {key_type.value}"
    expected_hash = {KeyType.EC_P384: "sha384", KeyType.ED25519: None}.get(key_type, "sha256")
    got_hash = csr.signature_hash_algorithm.name if csr.signature_hash_algorithm else None
    assert got_hash == expected_hash

    # The same check must fail for a tampered CSR, or it proves nothing.
    der = bytearray(csr.public_bytes(serialization.Encoding.DER))
    der[-5] ^= 0x01
    bad = softhsm.root / "bad.der"
    bad.write_bytes(bytes(der))
    proc = subprocess.run(["openssl", "req", "-inform", "DER", "-in", str(bad), "-noout", "-verify"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode != 0 or "verify OK" not in proc.stdout + proc.stderr


# Subject and SAN encoding happen on the host: one implementation is enough.
def test_korean_subject_and_all_san_kinds(softhsm: SoftHSM) -> None:
    softhsm.run("keys", "generate", "-t", "test", "-l", "hong", check=True)
    proc = softhsm.run(
        "csr", "-t", "test", "-k", "hong", "-s", "CN=홍길동,O=우리은행,C=KR",
        "--san", "dns:www.example.kr", "--san", "email:hong@example.kr",
        "--san", "uri:https://example.kr/hong", "--san", "ip:192.0.2.7", "--san", "ip:2001:db8::7",
        check=True,
    )
    assert proc.stdout.startswith("-----BEGIN CERTIFICATE REQUEST-----")
    csr = x509.load_pem_x509_csr(proc.stdout.encode())
    assert csr.is_signature_valid

    # RFC 4514 lists the most significant RDN last: the DER order is C, O, CN.
    assert [(a.oid, a.value) for a in csr.subject] == [
        (NameOID.COUNTRY_NAME, "KR"),
        (NameOID.ORGANIZATION_NAME, "우리은행"),
        (NameOID.COMMON_NAME, "홍길동"),
    ]
    assert csr.subject.rfc4514_string() == "CN=홍길동,O=우리은행,C=KR"
    assert {a.value for a in csr.subject if a.oid != NameOID.COUNTRY_NAME} == {"우리은행", "홍길동"}
    # UTF8String, so the bytes of the name are exactly the UTF-8 of the Korean text.
    subject_der = csr.subject.public_bytes()
    assert "홍길동".encode() in subject_der
    assert "우리은행".encode() in subject_der

    san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["www.example.kr"]
    assert san.get_values_for_type(x509.RFC822Name) == ["hong@example.kr"]
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["https://example.kr/hong"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("192.0.2.7"), ipaddress.ip_address("2001:db8::7")
    ]

    path = softhsm.root / "hong.pem"
    path.write_text(proc.stdout)
    shown = subprocess.run(
        ["openssl", "req", "-in", str(path), "-noout", "-verify", "-subject", "-nameopt", "utf8"],
        capture_output=True, check=False, env={**os.environ, "LC_ALL": "C.UTF-8"},
    )
    assert shown.returncode == 0, shown.stderr
    subject_line = next(line for line in shown.stdout.decode("utf-8").splitlines() if line.startswith("subject="))
    assert subject_line == "subject=C=KR, O=우리은행, CN=홍길동"
    text = subprocess.run(["openssl", "req", "-in", str(path), "-noout", "-text"],
                          capture_output=True, text=True, check=True).stdout
    for needle in ("DNS:www.example.kr", "email:hong@example.kr", "URI:https://example.kr/hong",
                   "IP Address:192.0.2.7", "IP Address:2001:DB8:0:0:0:0:0:7"):
        assert needle in text


@on_impls("softhsm", "tpm2")  # key lookup does not depend on the mechanism list
def test_csr_der_output_and_unknown_key(token_impl: TokenImpl) -> None:
    softhsm = token_impl
    softhsm.run("keys", "generate", "-t", "test", "-l", "k", check=True)
    out = softhsm.root / "req.der"
    softhsm.run("csr", "-t", "test", "-k", "k", "-s", "CN=der", "--format", "der", "-o", str(out), check=True)
    assert x509.load_der_x509_csr(out.read_bytes()).is_signature_valid
    no_output = softhsm.run("csr", "-t", "test", "-k", "k", "-s", "CN=der", "--format", "der")
    assert no_output.returncode == 2
    missing = softhsm.run("csr", "-t", "test", "-k", "nope", "-s", "CN=x")
    assert missing.returncode == 4
    assert "nope" in missing.stderr
    bad_subject = softhsm.run("csr", "-t", "test", "-k", "k", "-s", "/CN=x/O=y")
    assert bad_subject.returncode == 2


def test_wrong_pin_does_not_leak_a_session_in_process(session_softhsm: SoftHSM) -> None:
    """FACTS: a failed C_Login used to leave its session open, so a later SO login failed with
    SessionReadOnlyExists. In one process: wrong PIN, then SO login (unblock), then the new PIN."""
    with pytest.raises(PinIncorrect) as exc, p11.open_token(SEL, Pin("000000-wrong"), module=SOFTHSM_MODULE):
        pass
    assert exc.value.exit_code == 5
    assert "000000-wrong" not in str(exc.value)
    with p11.open_token(SEL, Pin(SO_PIN), module=SOFTHSM_MODULE, so=True) as so:
        so.init_user_pin(Pin("135791"))
    with p11.open_token(SEL, Pin("135791"), module=SOFTHSM_MODULE) as s:
        assert s.list_keys() == []
    with pytest.raises(PinIncorrect), p11.open_token(SEL, Pin(USER_PIN), module=SOFTHSM_MODULE):
        pass


# Every key type some implementation cannot make (the cases token_impl.require skips).
_UNMAKEABLE = [(impl, kt) for impl, facts in DOCUMENTED_IMPLS.items() for kt in KeyType if kt not in facts.key_types]


@pytest.mark.parametrize(
    ("token_impl", "key_type"), _UNMAKEABLE, indirect=["token_impl"], ids=[f"{i}-{k.value}" for i, k in _UNMAKEABLE]
)
def test_key_type_the_token_cannot_make_is_refused_up_front(token_impl: TokenImpl, key_type: KeyType) -> None:
    """The skipped cases are not silently lost: such a key type is refused before anything is
    written, exit 4, saying why and where to look."""
    assert key_type not in token_impl.key_types
    proc = token_impl.run("keys", "generate", "-t", "test", "-l", "never", "--type", key_type.value)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert key_type.value in proc.stderr
    assert str(token_impl.unsupported_reason(key_type)) in proc.stderr
    assert "token check" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert json.loads(token_impl.run("keys", "list", "-t", "test", "--json", check=True).stdout) == []
