"""A certificate's life after enrollment, through the real CLI on real tokens: renew (same key and
--rekey), revoke (token present, and a lost token by serial), CRLs checked by OpenSSL, re-issue
after revocation, an externally signed certificate imported, and the CA's hash-chained audit log
against tampering.

What touches the holder's token runs on every implementation (conftest's token_impl: SoftHSM,
SoftHSM with raw mechanisms only, CA token included, and tpm2-pkcs11 with the CA on SoftHSM);
what is the CA's and the inventory's business alone (when renewal is due, the audit log, the
CA PIN) runs on SoftHSM.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from support.lifecycle import TokenCA, make_token_ca
from support.openssl import openssl
from support.softhsm import SoftHSM
from support.token_impls import TokenImpl, on_impls

# A CA-local profile whose certificates are due for renewal at once (10 days < the 30-day window).
SHORT_PROFILE = """\
[profiles.short]
description = "Ten-day personal certificates, for renewal tests."
days = 10
key_usage = ["digital_signature", "content_commitment"]
extended_key_usage = ["client_auth", "email_protection"]
allowed_key_types = ["ec-p256", "ec-p384", "rsa-2048"]
subject_fields = ["CN", "O", "C"]
"""


@pytest.fixture
def token_ca(softhsm: SoftHSM) -> TokenCA:
    return make_token_ca(softhsm, profiles=SHORT_PROFILE)


@pytest.fixture
def impl_ca(token_impl: TokenImpl) -> TokenCA:
    """token_ca with the holder's token on each implementation (the CA key on SoftHSM)."""
    return token_impl.make_ca(profiles=SHORT_PROFILE)


def _leaves(ca: TokenCA) -> list[dict[str, Any]]:
    """End-entity certificate objects on the user's token."""
    return [c for c in ca.token_certs() if not c["ca"]]


def _by_serial(ca: TokenCA) -> dict[str, dict[str, Any]]:
    return {r["serial"]: r for r in ca.issued()}


# -- renew ------------------------------------------------------------------------------------
@on_impls("softhsm", "tpm2")  # CSRs on raw mechanisms: test_enroll.py; CRLs: test_revoke_crl_and_reissue
def test_renew_same_key(impl_ca: TokenCA, tmp_path: Path) -> None:
    token_ca = impl_ca
    old = token_ca.enroll("CN=Short Lived,O=tokenissue tests", "--profile", "short", "--label", "short1")
    # A 10-day certificate is not due by default (a third of its lifetime is left)...
    [st] = token_ca.status()
    assert (st["state"], st["renew_due"]) == ("valid", False)
    assert st["days_left"] in (9, 10)
    # ...but is within an explicit 30-day window.
    [st] = token_ca.status("test", "--within", "30d")
    assert (st["state"], st["renew_due"]) == ("expiring", True)

    renewed = token_ca.json("renew", "--token", "test", "--within", "30d")
    assert len(renewed) == 1
    new = renewed[0]
    assert new["serial"] != old["serial"]
    assert new["replaces"] == old["serial"]
    assert new["key_id"] == old["key_id"]
    assert new["label"] == "short1"
    assert new["profile"] == "short"
    assert new["subject"] == old["subject"]

    keys = token_ca.private_keys()
    assert [(k["id"], k["label"], k["has_certificate"]) for k in keys] == [(old["key_id"], "short1", True)]
    # Exactly one end-entity certificate for the key: the new one; the old one is gone.
    assert [(c["id"], c["serial"]) for c in _leaves(token_ca)] == [(old["key_id"], new["serial"])]
    issued = _by_serial(token_ca)
    assert set(issued) == {old["serial"], new["serial"]}
    assert issued[new["serial"]]["key_id"] == old["key_id"]
    leaf = tmp_path / "renewed.pem"
    assert token_ca.export("short1", leaf)[0].serial_number == int(new["serial"], 16)
    assert token_ca.verify(leaf).returncode == 0


@on_impls("softhsm", "tpm2")  # re-keying on raw mechanisms: test_revoke_crl_and_reissue[softhsm-raw]
def test_renew_rekey_replaces_key_and_certificate(impl_ca: TokenCA) -> None:
    token_ca = impl_ca
    old = token_ca.enroll("CN=Rekey Me", "--profile", "short", "--label", "rekey1")
    renewed = token_ca.json("renew", "--token", "test", "--rekey", "--within", "30d")
    assert len(renewed) == 1
    new = renewed[0]
    assert new["replaces"] == old["serial"]
    assert new["key_id"] != old["key_id"]
    assert new["serial"] != old["serial"]
    assert new["label"] == "rekey1", "re-keying keeps the label users refer to"

    keys = token_ca.private_keys()
    assert [k["id"] for k in keys] == [new["key_id"]], "the old key must be deleted after re-keying"
    assert keys[0]["label"] == new["label"]
    assert keys[0]["has_certificate"] is True
    assert [(c["id"], c["serial"]) for c in _leaves(token_ca)] == [(new["key_id"], new["serial"])]
    assert _by_serial(token_ca)[new["serial"]]["key_id"] == new["key_id"]


def test_renew_when_nothing_is_due(token_ca: TokenCA) -> None:
    token_ca.enroll("CN=Year Long", "--profile", "personal", "--label", "year")
    proc = token_ca.run("renew", "--token", "test")
    assert proc.returncode == 0, proc.stderr
    assert "Nothing due" in proc.stdout
    assert token_ca.json("renew", "--token", "test") == []
    assert len(token_ca.issued()) == 1


def test_renewed_short_lived_certificate_is_not_due_again(token_ca: TokenCA) -> None:
    """A daily cron 'renew' must not re-issue a 10-day certificate every day: by default
    renewal is due in the last third of the lifetime (or the last 30 days, if shorter)."""
    token_ca.enroll("CN=Cron Job", "--profile", "short", "--label", "cron")
    assert token_ca.json("renew", "--token", "test") == []
    assert len(token_ca.json("renew", "--token", "test", "--key", "cron")) == 1
    assert token_ca.json("renew", "--token", "test") == []
    assert len(token_ca.issued()) == 2


# -- revoke -----------------------------------------------------------------------------------
def test_revoke_crl_and_reissue(impl_ca: TokenCA, tmp_path: Path) -> None:
    token_ca = impl_ca
    out = token_ca.enroll("CN=Revoke Me,O=tokenissue tests", "--label", "rv")
    leaf = tmp_path / "leaf.pem"
    token_ca.export("rv", leaf)

    revoked = token_ca.json("revoke", "--token", "test", "--key", "rv")
    assert [(r["serial"], r["status"]) for r in revoked] == [(out["serial"], "revoked")]
    rec = _by_serial(token_ca)[out["serial"]]
    assert rec["status"] == "revoked"
    assert rec["revoked_at"] is not None
    assert rec["reason"] == "unspecified"

    crl = tmp_path / "crl.pem"
    token_ca.run("ca", "crl", "--ca-dir", str(token_ca.dir), "-o", str(crl), check=True)
    checked = openssl("crl", "-in", str(crl), "-noout", "-verify", "-CAfile", str(token_ca.pem))
    assert checked.returncode == 0, checked.stderr
    assert "verify OK" in checked.stdout + checked.stderr
    assert [r.serial_number for r in x509.load_pem_x509_crl(crl.read_bytes())] == [int(out["serial"], 16)]
    refused = token_ca.verify(leaf, "-crl_check", "-CRLfile", str(crl))
    assert refused.returncode != 0
    assert "certificate revoked" in refused.stdout + refused.stderr

    [st] = token_ca.status()
    assert (st["serial"], st["state"], st["renew_due"]) == (out["serial"], "revoked", True)

    # A revoked key is not reused: renewing without --rekey is refused, with --rekey re-issues.
    same_key = token_ca.run("renew", "--token", "test", "--key", "rv")
    assert same_key.returncode == 2
    assert "--rekey" in same_key.stderr
    reissued = token_ca.json("renew", "--token", "test", "--rekey", "--key", "rv")
    assert len(reissued) == 1
    new = reissued[0]
    assert new["replaces"] == out["serial"]
    assert new["key_id"] != out["key_id"]
    [st] = token_ca.status()
    assert (st["serial"], st["state"], st["key_id"]) == (new["serial"], "valid", new["key_id"])
    issued = _by_serial(token_ca)
    assert (issued[out["serial"]]["status"], issued[new["serial"]]["status"]) == ("revoked", "valid")
    assert [k["id"] for k in token_ca.private_keys()] == [new["key_id"]]
    new_leaf = tmp_path / "new.pem"
    token_ca.export(new["label"], new_leaf)
    ok = token_ca.verify(new_leaf, "-crl_check", "-CRLfile", str(crl))
    assert ok.returncode == 0, ok.stdout + ok.stderr


@on_impls("softhsm", "tpm2")  # the mechanism list plays no part once the token is gone
def test_lost_token_is_revoked_by_serial_without_the_token(
    token_impl: TokenImpl, impl_ca: TokenCA, tmp_path: Path
) -> None:
    token_ca = impl_ca
    a = token_ca.enroll("CN=Lost A", "--label", "lost-a")
    b = token_ca.enroll("CN=Lost B", "--label", "lost-b", "--type", "rsa-2048")
    serial = a["token_serial"]
    assert b["token_serial"] == serial
    # What the holder reads off the token: its serial. Where serials repeat (tpm2-pkcs11:
    # 0000000000000000) tokenissue recorded a pkcs11: URI, and the serial must still find it.
    [printed] = [t["serial"] for t in token_impl.tokens_json() if t["label"] == "test"]
    assert (printed == serial) is token_impl.serials_unique

    # The token is gone: its SoftHSM directory removed, or its TPM token (the CA token stays).
    token_impl.remove_token("test")
    assert "test" not in [t["label"] for t in token_ca.json("tokens")]

    revoked = token_ca.json("revoke", "--token-serial", printed, "--ca", str(token_ca.dir))
    assert sorted(r["serial"] for r in revoked) == sorted([a["serial"], b["serial"]])
    assert {r["reason"] for r in revoked} == {"key-compromise"}
    issued = _by_serial(token_ca)
    assert {s: r["status"] for s, r in issued.items()} == {a["serial"]: "revoked", b["serial"]: "revoked"}

    # Revoking the same token again has nothing left to do.
    again = token_ca.run("revoke", "--token-serial", serial, "--ca", str(token_ca.dir))
    assert again.returncode == 0, again.stderr
    assert "Nothing was revoked" in again.stdout

    crl = tmp_path / "crl.pem"
    token_ca.run("ca", "crl", "--ca-dir", str(token_ca.dir), "-o", str(crl), check=True)
    listed = {r.serial_number for r in x509.load_pem_x509_crl(crl.read_bytes())}
    assert listed == {int(a["serial"], 16), int(b["serial"], 16)}


# -- audit ------------------------------------------------------------------------------------
def test_audit_log_detects_tampering(token_ca: TokenCA) -> None:
    out = token_ca.enroll("CN=Audited", "--label", "aud")
    ok = token_ca.run("ca", "audit", "verify", "--ca-dir", str(token_ca.dir))
    assert ok.returncode == 0, ok.stderr
    assert "intact: 2 entries" in ok.stdout

    # Rewrite the issue entry's subject, as someone hiding what was issued would.
    db = sqlite3.connect(token_ca.dir / "ca.db")
    try:
        (details,) = db.execute("SELECT details FROM audit WHERE seq = 2").fetchone()
        changed = json.loads(details)
        assert changed["serial"] == out["serial"]
        changed["subject"] = "CN=Somebody Else"
        with db:
            db.execute("UPDATE audit SET details = ? WHERE seq = 2", (json.dumps(changed),))
    finally:
        db.close()

    bad = token_ca.run("ca", "audit", "verify", "--ca-dir", str(token_ca.dir))
    assert bad.returncode == 7, bad.stdout + bad.stderr
    assert "audit log entry 2 was altered" in bad.stderr
    assert "Traceback" not in bad.stderr


@on_impls("softhsm", "tpm2")  # cert import and object handling do not depend on the mechanism list
def test_rekey_never_touches_another_cas_certificate_with_the_same_serial(impl_ca: TokenCA, tmp_path: Path) -> None:
    """Serials are unique per CA only. Found by review: re-keying retired "the old certificate"
    by serial alone and destroyed an unrelated key whose certificate, from another CA, shared it."""
    token_ca = impl_ca
    from cryptography.hazmat.primitives import serialization

    from support.software_ca import make_software_ca

    software_ca = make_software_ca(tmp_path / "other-ca")
    work = token_ca.enroll("CN=Work", "--label", "work")
    token_ca.run("keys", "generate", "--token", "test", "--label", "bank", check=True)
    csr = token_ca.run("csr", "--token", "test", "--key", "bank", "--subject", "CN=Bank", check=True).stdout
    bank_cert = software_ca.issue(x509.load_pem_x509_csr(csr.encode()).public_key(), "Bank", serial=int(work["serial"], 16))
    pem = tmp_path / "bank.pem"
    pem.write_bytes(bank_cert.public_bytes(serialization.Encoding.PEM))
    token_ca.run("cert", "import", "--token", "test", str(pem), check=True)

    [renewed] = token_ca.json("renew", "--token", "test", "--key", "work", "--rekey")
    assert renewed["replaces"] == work["serial"]

    keys = {k["label"]: k for k in token_ca.private_keys()}
    assert set(keys) == {"work", "bank"}
    assert keys["bank"]["has_certificate"] is True
    assert keys["work"]["id"] == renewed["key_id"] != work["key_id"]
    leaves = {(c["label"], c["serial"]) for c in _leaves(token_ca)}
    assert leaves == {("work", renewed["serial"]), ("bank", work["serial"])}


def test_revoke_does_not_need_the_ca_pin(token_ca: TokenCA) -> None:
    """Revocation signs nothing, so the CA PIN is never asked for (review finding): a wrong one
    in the environment is simply not used."""
    token_ca.enroll("CN=No PIN Needed", "--label", "nopin")
    proc = token_ca.run("revoke", "--token", "test", "--key", "nopin", "--json", env={"TOKENISSUE_CA_PIN": "wrong-0000"})
    assert proc.returncode == 0, proc.stderr
    assert [r["status"] for r in json.loads(proc.stdout)] == ["revoked"]
