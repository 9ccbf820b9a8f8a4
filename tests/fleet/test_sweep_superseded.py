"""The expiry sweep does not list superseded certificates: one a newer certificate replaces
(recorded with ``replaces``, directly or through a revoked successor that was re-issued with
``renew --rekey``), or a newer valid certificate for the same key, holder and profile. Before,
each such certificate was listed as due until it expired, and ``--renew`` failed on it (its
certificate is no longer on the token): exit 8 on every run after a re-issue.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tokenissue.fleet.sweep import due
from tokenissue.models import CertRecord, CertStatus

from support.lifecycle import TokenCA, add_token_fast, make_token_ca
from support.softhsm import SoftHSM

NOW = datetime.now(UTC)
CA_KEY = ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def ca(softhsm: SoftHSM) -> TokenCA:
    ca = make_token_ca(softhsm)
    add_token_fast(softhsm, "sw-01")
    return ca


def _sweep(ca: TokenCA, *extra: str) -> tuple[int, list[dict[str, object]], str]:
    proc = ca.run("ca", "list", "--ca-dir", str(ca.dir), "--expiring", "400d", "--json", *extra)
    return proc.returncode, json.loads(proc.stdout or "[]"), proc.stderr


@pytest.mark.slow
def test_a_reissue_after_a_revoked_renewal_supersedes_the_first(ca: TokenCA) -> None:
    """A renewed into B, B revoked (not for key compromise) and re-issued with --rekey into C:
    C replaces B, and through B also A, which the holder no longer has."""
    a = ca.enroll("CN=Reissued,O=Example", "--label", "ri", token="sw-01")
    [b] = ca.json("renew", "--token", "sw-01", "--key", "ri", "--within", "400d")
    assert b["replaces"] == a["serial"]
    ca.run("ca", "revoke", "--ca-dir", str(ca.dir), b["serial"], "--reason", "superseded", check=True)
    [c] = ca.json("renew", "--token", "sw-01", "--key", "ri", "--rekey")
    assert c["replaces"] == b["serial"]

    code, items, err = _sweep(ca)
    assert code == 0, err
    assert [i["serial"] for i in items] == [c["serial"]]
    # Renewing what is due renews C alone, and a second run has the new one only: no exit 8.
    code, items, err = _sweep(ca, "--renew")
    assert code == 0, [(i["serial"], i["action"], i["detail"]) for i in items]
    assert [(i["serial"], i["action"]) for i in items] == [(c["serial"], "renewed")]
    code, items, err = _sweep(ca, "--renew")
    assert code == 0, [(i["serial"], i["action"], i["detail"]) for i in items]
    assert [i["serial"] for i in items] == [items[0]["serial"]] and items[0]["serial"] != c["serial"]


# -- the rule, on records (no token needed) -----------------------------------------------------
def _rec(
    serial: int, key: ec.EllipticCurvePrivateKey, *, age: int, subject: str = "CN=Holder", profile: str = "personal",
    status: CertStatus = CertStatus.VALID, replaces: int | None = None,
) -> CertRecord:
    """A record of a real certificate for ``key``, issued ``age`` days ago for a year."""
    name = x509.Name.from_rfc4514_string(subject)
    ca = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "CA")])
    nb = NOW - timedelta(days=age)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(ca).public_key(key.public_key())
        .serial_number(serial).not_valid_before(nb).not_valid_after(nb + timedelta(days=365))
        .sign(CA_KEY, hashes.SHA256())
    )  # fmt: skip
    der = cert.public_bytes(serialization.Encoding.DER)
    return CertRecord(
        serial=serial, subject=subject, issuer="CN=CA", not_before=nb, not_after=nb + timedelta(days=365),
        sha256=f"{serial:064x}", profile=profile, der=der, status=status, replaces=replaces,
    )  # fmt: skip


def _due(records: list[CertRecord]) -> list[int]:
    return [r.serial for r in due(records, timedelta(days=400), now=NOW)]


def test_a_revoked_link_in_a_chain_of_replacements_still_supersedes() -> None:
    k1, k2 = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    a = _rec(1, k1, age=100)
    b = _rec(2, k1, age=50, status=CertStatus.REVOKED, replaces=1)
    c = _rec(3, k2, age=10, replaces=2)
    assert _due([a, b, c]) == [3]
    # Without the re-issue, the revoked renewal replaces nothing: the holder still has A.
    assert _due([a, b]) == [1]


def test_a_newer_certificate_for_the_same_key_supersedes_without_replaces() -> None:
    """Issued again for the same key, subject and profile where no 'replaces' was recorded
    (e.g. 'ca sign' of the same CSR, or a CMP re-enrollment)."""
    k = ec.generate_private_key(ec.SECP256R1())
    old, new = _rec(1, k, age=100), _rec(2, k, age=10)
    assert _due([new, old]) == [2]
    # Another profile or subject for the same key is a certificate in its own right.
    assert sorted(_due([old, _rec(3, k, age=10, profile="tls-client")])) == [1, 3]
    assert sorted(_due([old, _rec(4, k, age=10, subject="CN=Other")])) == [1, 4]
    # Another key is another holder's (or device's) certificate, however alike.
    assert sorted(_due([old, _rec(5, ec.generate_private_key(ec.SECP256R1()), age=10)])) == [1, 5]
    # A revoked newer certificate for the key supersedes nothing.
    assert _due([old, _rec(6, k, age=10, status=CertStatus.REVOKED)]) == [1]
