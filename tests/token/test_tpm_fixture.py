"""The software-TPM fixtures work: tpm2-pkcs11 stores on a session-wide swtpm behind tpm2-abrmd.

These test the test harness (tests/support/tpm.py, the TPM section of conftest.py), not the
product: the CLI lists the token the fixture made, python-pkcs11 signs with a key made on it,
two stores on one TPM do not see each other's tokens or keys, one CLI environment carries both
SoftHSM and the TPM, and wrong PINs lock only a TPM of the test's own.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pkcs11
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, encode_dss_signature
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11.util.ec import encode_ec_public_key, encode_named_curve_parameters

from tokenissue import p11

from support.cli import SO_PIN, USER_PIN
from support.softhsm import SOFTHSM_MODULE, SoftHSM
from support.tpm import TPM2_MODULE, SoftwareTPM, TPMTokens, make_tpm_tokens, tpm_in_process

NO_SERIAL = "0000000000000000"  # every tpm2-pkcs11 token's serial


def _tokens(t: TPMTokens, *extra: str, env: dict[str, str] | None = None) -> list[dict[str, Any]]:
    proc = t.run("tokens", "--json", *extra, env=env, check=True)
    return list(json.loads(proc.stdout))


def test_cli_lists_the_fixture_token(tpm: TPMTokens) -> None:
    assert tpm.labels == ["test"]
    assert tpm.init_failures == []  # 'tokenissue token init' made it, not the tpm2_ptool fallback
    listed = _tokens(tpm)
    assert [(t["label"], t["serial"], t["initialized"], t["pin_state"]) for t in listed] == [
        ("test", NO_SERIAL, True, "ok")
    ]
    # The module always offers one more, uninitialised slot (empty label, same serial).
    everything = _tokens(tpm, "--all")
    assert sorted((t["label"], t["initialized"]) for t in everything) == [("", False), ("test", True)]
    assert {t["serial"] for t in everything} == {NO_SERIAL}


def _ec_keypair(session: Any, label: str) -> tuple[Any, Any]:
    """An EC P-256 token key pair; ENCRYPT/DECRYPT left out of the templates (on this token
    SIGN is ENCRYPT and VERIFY is DECRYPT: python-pkcs11's defaults make keygen fail)."""
    params = session.create_domain_parameters(
        KeyType.EC, {Attribute.EC_PARAMS: encode_named_curve_parameters("secp256r1")}, local=True
    )
    return params.generate_keypair(
        store=True,
        label=label,
        public_template={Attribute.ENCRYPT: pkcs11.DEFAULT},
        private_template={Attribute.DECRYPT: pkcs11.DEFAULT},
    )


def test_python_pkcs11_signs_on_the_tpm(session_tpm: TPMTokens) -> None:
    lib = p11.load_module(TPM2_MODULE).lib
    token = lib.get_token(token_label="test")
    digest = os.urandom(32)
    with token.open(rw=True, user_pin=USER_PIN) as session:
        pub, priv = _ec_keypair(session, "fixture-key")
        assert priv[Attribute.TOKEN] is True and priv[Attribute.SIGN] is True
        signature = priv.sign(digest, mechanism=Mechanism.ECDSA)
        public = serialization.load_der_public_key(encode_ec_public_key(pub))
    assert isinstance(public, ec.EllipticCurvePublicKey) and public.curve.name == "secp256r1"
    assert len(signature) == 64
    der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
    public.verify(der, digest, ec.ECDSA(Prehashed(hashes.SHA256())))  # raises if it does not verify


def _labels(lib: Any) -> list[str]:
    return sorted(t.label for t in lib.get_tokens() if t.flags & pkcs11.TokenFlag.TOKEN_INITIALIZED)


def test_two_stores_on_one_tpm_are_independent(
    software_tpm: SoftwareTPM, hsm_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    software_tpm.clear_lockout()
    a = make_tpm_tokens(hsm_root / "a", software_tpm)
    b = make_tpm_tokens(hsm_root / "b", software_tpm)
    a.add_token("test")
    a.add_token("only-a")
    b.add_token("test", via="ptool")  # the same label in another store; and the tpm2_ptool path works
    assert (a.labels, b.labels) == (["test", "only-a"], ["test"])
    assert a.init_failures == []  # 'tokenissue token init' works for a second token in a store too

    with tpm_in_process(a, monkeypatch) as lib:
        assert _labels(lib) == ["only-a", "test"]
        with lib.get_token(token_label="test").open(rw=True, user_pin=USER_PIN) as s:
            _ec_keypair(s, "in-a")
            assert len(list(s.get_objects({Attribute.LABEL: "in-a"}))) == 2
    with tpm_in_process(b, monkeypatch) as lib:
        assert _labels(lib) == ["test"]
        token = lib.get_token(token_label="test")
        with token.open(rw=True, user_pin=USER_PIN) as s:
            assert list(s.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY})) == []
        with token.open(rw=True, so_pin=SO_PIN):
            pass  # b's SO PIN is the fixtures' too (set by tpm2_ptool, not tokenissue)


def test_tpm_with_softhsm_carries_both_modules(tpm_with_softhsm: tuple[SoftHSM, TPMTokens]) -> None:
    softhsm, tpm = tpm_with_softhsm
    assert tpm.env["SOFTHSM2_CONF"] == str(softhsm.conf)
    assert [t["label"] for t in _tokens(tpm)] == ["test"]
    on_softhsm = _tokens(tpm, env={"TOKENISSUE_MODULE": SOFTHSM_MODULE})
    assert [t["label"] for t in on_softhsm] == ["ca"]


# The lockout itself (3 wrong PINs, CKR_PIN_LOCKED, cleared) is proven through the CLI in
# test_tpm_lifecycle.py: in this process, a test on locking_tpm's own D-Bus would leave GLib's
# cached session-bus connection dead for every later in-process TPM test.
