"""Which PKCS#11 mechanism plan_signature picks from a token's mechanism list (pure: no token)."""

from __future__ import annotations

import pytest
from pkcs11 import MGF, Mechanism

from tokenissue.errors import MechanismUnsupported
from tokenissue.models import KeyAlgorithm
from tokenissue.p11.signing import plan_signature

SOFTHSM_LIKE = {
    Mechanism.RSA_PKCS, Mechanism.SHA256_RSA_PKCS, Mechanism.SHA384_RSA_PKCS, Mechanism.SHA512_RSA_PKCS,
    Mechanism.RSA_PKCS_PSS, Mechanism.SHA256_RSA_PKCS_PSS, Mechanism.ECDSA, Mechanism.EDDSA,
}
RAW_ONLY = {Mechanism.RSA_PKCS, Mechanism.ECDSA, Mechanism.EDDSA, Mechanism.SHA256}
FULL = SOFTHSM_LIKE | {Mechanism.ECDSA_SHA256, Mechanism.ECDSA_SHA384, Mechanism.ECDSA_SHA512,
                       Mechanism.SHA384_RSA_PKCS_PSS, Mechanism.SHA512_RSA_PKCS_PSS}


@pytest.mark.parametrize(
    ("hash_name", "combined"),
    [("sha256", Mechanism.ECDSA_SHA256), ("sha384", Mechanism.ECDSA_SHA384), ("sha512", Mechanism.ECDSA_SHA512)],
)
def test_ecdsa_uses_the_combined_mechanism_when_offered(hash_name: str, combined: Mechanism) -> None:
    plan = plan_signature(KeyAlgorithm.EC, hash_name, FULL)
    assert plan.mechanism == combined
    assert plan.host_hash is None
    assert plan.der_ecdsa is True
    assert plan.digest_info is False


@pytest.mark.parametrize("hash_name", ["sha256", "sha384", "sha512"])
def test_ecdsa_falls_back_to_raw_and_host_hash(hash_name: str) -> None:
    # SoftHSM 2.6.1 has no CKM_ECDSA_SHA*; neither do many USB tokens.
    plan = plan_signature(KeyAlgorithm.EC, hash_name, SOFTHSM_LIKE)
    assert plan.mechanism == Mechanism.ECDSA
    assert plan.host_hash == hash_name
    assert plan.der_ecdsa is True


@pytest.mark.parametrize(
    ("hash_name", "combined"),
    [("sha256", Mechanism.SHA256_RSA_PKCS), ("sha384", Mechanism.SHA384_RSA_PKCS),
     ("sha512", Mechanism.SHA512_RSA_PKCS)],
)
def test_rsa_pkcs1_uses_the_combined_mechanism_when_offered(hash_name: str, combined: Mechanism) -> None:
    plan = plan_signature(KeyAlgorithm.RSA, hash_name, SOFTHSM_LIKE)
    assert plan.mechanism == combined
    assert plan.host_hash is None
    assert plan.digest_info is False
    assert plan.der_ecdsa is False


@pytest.mark.parametrize("hash_name", ["sha256", "sha384", "sha512"])
def test_rsa_pkcs1_falls_back_to_raw_with_digest_info(hash_name: str) -> None:
    plan = plan_signature(KeyAlgorithm.RSA, hash_name, RAW_ONLY)
    assert plan.mechanism == Mechanism.RSA_PKCS
    assert plan.host_hash == hash_name
    assert plan.digest_info is True
    assert plan.der_ecdsa is False


def test_rsa_pss_combined_and_raw() -> None:
    combined = plan_signature(KeyAlgorithm.RSA, "sha256", SOFTHSM_LIKE, pss_salt=32)
    assert combined.mechanism == Mechanism.SHA256_RSA_PKCS_PSS
    assert combined.host_hash is None
    assert combined.mechanism_param == (Mechanism.SHA256, MGF.SHA256, 32)
    # SHA384_RSA_PKCS_PSS is missing from SOFTHSM_LIKE: the host hashes, the token does raw PSS.
    raw = plan_signature(KeyAlgorithm.RSA, "sha384", SOFTHSM_LIKE, pss_salt=48)
    assert raw.mechanism == Mechanism.RSA_PKCS_PSS
    assert raw.host_hash == "sha384"
    assert raw.digest_info is False
    assert raw.mechanism_param == (Mechanism.SHA384, MGF.SHA384, 48)


def test_rsa_pss_without_any_pss_mechanism_is_refused() -> None:
    with pytest.raises(MechanismUnsupported):
        plan_signature(KeyAlgorithm.RSA, "sha256", RAW_ONLY, pss_salt=32)


def test_ed25519_uses_eddsa_without_host_hash() -> None:
    plan = plan_signature(KeyAlgorithm.ED25519, None, RAW_ONLY)
    assert plan.mechanism == Mechanism.EDDSA
    assert plan.host_hash is None
    assert plan.der_ecdsa is False


@pytest.mark.parametrize(
    ("algorithm", "hash_name", "mechanisms"),
    [
        (KeyAlgorithm.EC, "sha256", {Mechanism.RSA_PKCS, Mechanism.SHA256_RSA_PKCS, Mechanism.EDDSA}),
        (KeyAlgorithm.RSA, "sha256", {Mechanism.ECDSA, Mechanism.ECDSA_SHA256, Mechanism.EDDSA}),
        (KeyAlgorithm.ED25519, None, {Mechanism.ECDSA, Mechanism.RSA_PKCS}),
        (KeyAlgorithm.EC, "sha256", set()),
    ],
    ids=["ec-without-ecdsa", "rsa-without-rsa", "ed25519-without-eddsa", "empty-list"],
)
def test_neither_combined_nor_raw_raises(algorithm: KeyAlgorithm, hash_name: str | None, mechanisms: set) -> None:
    with pytest.raises(MechanismUnsupported) as exc:
        plan_signature(algorithm, hash_name, mechanisms)
    assert exc.value.exit_code == 4


@pytest.mark.parametrize("hash_name", ["md5", "sha1", "sha224", None])
def test_unsupported_hashes_are_refused(hash_name: str | None) -> None:
    with pytest.raises(MechanismUnsupported):
        plan_signature(KeyAlgorithm.EC, hash_name, FULL)
    with pytest.raises(MechanismUnsupported):
        plan_signature(KeyAlgorithm.RSA, hash_name, FULL)
