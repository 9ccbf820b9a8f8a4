"""A token that offers only raw mechanisms (CKM_RSA_PKCS, CKM_ECDSA, CKM_EDDSA), like many
smart cards: CSRs still verify, which proves the host hashing, the DigestInfo wrapping for RSA
and the raw r||s to DER conversion for ECDSA."""

from __future__ import annotations

import json
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, utils
from pkcs11 import Mechanism

from tokenissue import p11
from tokenissue.credentials import Pin
from tokenissue.models import KeyAlgorithm, KeyType

from support.cli import USER_PIN
from support.softhsm import SOFTHSM_MODULE, SoftHSM

COMBINED = {"ECDSA_SHA256", "ECDSA_SHA384", "SHA256_RSA_PKCS", "SHA384_RSA_PKCS", "SHA256_RSA_PKCS_PSS"}


def test_token_info_shows_no_combined_mechanisms(raw_softhsm: SoftHSM) -> None:
    info = json.loads(raw_softhsm.run("token", "info", "-t", "test", "--json", check=True).stdout)
    mechs = set(info["mechanisms"])
    assert {"RSA_PKCS", "ECDSA", "EDDSA"} <= mechs
    assert not mechs & COMBINED, mechs & COMBINED
    assert set(info["key_types"]) == {"rsa-2048/3072/4096", "ec-p256/p384", "ed25519"}


def test_unrestricted_token_does_show_combined_mechanisms(softhsm: SoftHSM) -> None:
    # The control for the test above: the same command on a normal SoftHSM slot lists them.
    info = json.loads(softhsm.run("token", "info", "-t", "test", "--json", check=True).stdout)
    assert {"SHA256_RSA_PKCS", "SHA384_RSA_PKCS"} <= set(info["mechanisms"])


@pytest.mark.parametrize("key_type", list(KeyType), ids=[k.value for k in KeyType])
def test_every_key_type_yields_a_valid_csr(raw_softhsm: SoftHSM, key_type: KeyType) -> None:
    raw_softhsm.run("keys", "generate", "-t", "test", "-l", "k", "--type", key_type.value, check=True)
    out = raw_softhsm.root / "req.pem"
    raw_softhsm.run("csr", "-t", "test", "-k", "k", "-s", "CN=raw,C=KR", "-o", str(out), check=True)
    csr = x509.load_pem_x509_csr(out.read_bytes())
    assert csr.is_signature_valid
    proc = subprocess.run(["openssl", "req", "-in", str(out), "-noout", "-verify"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "verify OK" in proc.stdout + proc.stderr
    if key_type.algorithm is KeyAlgorithm.EC:
        # A DER ECDSA-Sig-Value, not the token's raw r||s.
        r, s = utils.decode_dss_signature(csr.signature)
        assert r > 0
        assert s > 0


def test_raw_token_signs_through_the_raw_plan_in_process(raw_softhsm: SoftHSM, monkeypatch: pytest.MonkeyPatch) -> None:
    """In process: the mechanism list really lacks the combined ones, and a signature made via
    the raw plan (host hash + CKM_ECDSA) verifies as an ordinary ECDSA-SHA256 signature."""
    from cryptography.hazmat.primitives import hashes

    monkeypatch.setenv("SOFTHSM2_CONF", str(raw_softhsm.conf))
    mod = p11.load_module(SOFTHSM_MODULE)
    mod.refresh()
    try:
        with p11.open_token(p11.TokenSelector(label="test"), Pin(USER_PIN), module=SOFTHSM_MODULE) as s:
            assert Mechanism.ECDSA in s.mechanisms
            assert Mechanism.ECDSA_SHA256 not in s.mechanisms
            assert Mechanism.SHA256_RSA_PKCS not in s.mechanisms
            plan = p11.plan_signature(KeyAlgorithm.EC, "sha256", s.mechanisms)
            assert plan.mechanism == Mechanism.ECDSA
            assert plan.host_hash == "sha256"
            s.generate_key(KeyType.EC_P256, "k")
            key = s.private_key(p11.KeySelector(label="k"))
            sig = key.sign(b"hello", ec.ECDSA(hashes.SHA256()))
            key.public_key().verify(sig, b"hello", ec.ECDSA(hashes.SHA256()))
            pre = hashes.Hash(hashes.SHA256())
            pre.update(b"hello")
            sig2 = key.sign(pre.finalize(), ec.ECDSA(utils.Prehashed(hashes.SHA256())))
            key.public_key().verify(sig2, b"hello", ec.ECDSA(hashes.SHA256()))
    finally:
        mod.refresh()
