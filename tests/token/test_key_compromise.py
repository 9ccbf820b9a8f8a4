"""Key compromise revokes the key, not one certificate (issue 11, item 1).

A same-key ``renew`` leaves the predecessor valid until it expires; before this, revoking for
key compromise revoked only the certificate named, so the predecessor of that very key stayed
valid and off the CRL. Now every unexpired, unrevoked certificate of the public key goes, on
every path: the holder's ``revoke --key``, ``ca revoke SERIAL``, a lost token's
``--token-serial``, and a CMP rr with reason keyCompromise. Other reasons revoke one certificate.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from tokenissue.inventory import Inventory
from tokenissue.models import CertRecord, CertStatus, RevocationReason

from support.cmp_server import Served, served
from support.lifecycle import USER_TOKEN, TokenCA, make_token_ca, token_dir
from support.softhsm import SoftHSM

CODE_ENV = "TOKENISSUE_AUTH_CODE"


@pytest.fixture
def token_ca(softhsm: SoftHSM) -> TokenCA:
    return make_token_ca(softhsm)


def _renewed_twice(ca: TokenCA, label: str, subject: str = "CN=Compromised,O=tokenissue tests") -> list[str]:
    """Enroll, then renew twice with the same key: three valid certificates of one key."""
    first = ca.enroll(subject, "--label", label)
    serials = [first["serial"]]
    for _ in range(2):
        [new] = ca.json("renew", "--token", USER_TOKEN, "--key", label, "--within", "400d")
        assert new["key_id"] == first["key_id"] and new["replaces"] == serials[-1]
        serials.append(new["serial"])
    return serials


def _status(ca: TokenCA) -> dict[str, tuple[str, str | None]]:
    return {r["serial"]: (r["status"], r["reason"]) for r in ca.issued()}


def _crl_serials(ca: TokenCA, tmp_path: Path) -> set[str]:
    crl = tmp_path / "crl.pem"
    ca.run("ca", "crl", "--ca-dir", str(ca.dir), "-o", str(crl), check=True)
    return {format(r.serial_number, "x") for r in x509.load_pem_x509_crl(crl.read_bytes())}


def _revoke_audit(ca: TokenCA) -> list[dict[str, object]]:
    return [e["details"] for e in ca.audit() if e["action"] == "revoke"]


def test_holder_revoke_for_key_compromise_revokes_every_certificate_of_the_key(
    token_ca: TokenCA, tmp_path: Path
) -> None:
    serials = _renewed_twice(token_ca, "kc")
    bystander = token_ca.enroll("CN=Bystander,O=tokenissue tests", "--label", "other")["serial"]

    proc = token_ca.run("revoke", "--token", USER_TOKEN, "--key", "kc", "--reason", "key-compromise", check=True)
    status = _status(token_ca)
    assert {s: status[s] for s in serials} == {s: ("revoked", "key-compromise") for s in serials}
    assert status[bystander] == ("valid", None)
    assert f"Revoked 3 certificates of this key: {serials[2]} " in proc.stdout, proc.stdout
    assert all(s in proc.stdout for s in serials)
    assert _crl_serials(token_ca, tmp_path) == set(serials)
    # One audit entry each; the two the holder did not name say which revocation took them.
    audit = {str(d["serial"]): d for d in _revoke_audit(token_ca)}
    assert set(audit) == set(serials)
    assert audit[serials[2]].get("same_key_as") is None
    assert audit[serials[0]]["same_key_as"] == audit[serials[1]]["same_key_as"] == serials[2]
    # The holder's records agree: no certificate of the key is valid any more.
    [st] = [s for s in token_ca.status() if s["serial"] == serials[2]]
    assert st["state"] == "revoked"


def test_another_reason_revokes_only_the_one_certificate(token_ca: TokenCA) -> None:
    serials = _renewed_twice(token_ca, "one")
    revoked = token_ca.json("revoke", "--token", USER_TOKEN, "--key", "one", "--reason", "superseded")
    assert [r["serial"] for r in revoked] == [serials[2]]
    status = _status(token_ca)
    assert [status[s][0] for s in serials] == ["valid", "valid", "revoked"]


def test_ca_revoke_for_key_compromise_says_how_many(token_ca: TokenCA) -> None:
    serials = _renewed_twice(token_ca, "admin")
    # The operator names the oldest one; the key's newer certificates go with it.
    proc = token_ca.run("ca", "revoke", "--ca-dir", str(token_ca.dir), serials[0], "--reason", "keyCompromise", check=True)
    assert {s: _status(token_ca)[s] for s in serials} == {s: ("revoked", "key-compromise") for s in serials}
    assert f"Revoked 3 certificates of this key: {serials[0]} " in proc.stdout, proc.stdout
    # Asked again: nothing is left to revoke, and nothing is logged twice.
    again = token_ca.json("ca", "revoke", "--ca-dir", str(token_ca.dir), serials[1], "--reason", "key-compromise")
    assert [r["serial"] for r in again] == [serials[1]]
    assert len(_revoke_audit(token_ca)) == 3


def test_ca_revoke_of_a_predecessor_with_another_reason_leaves_its_successor(token_ca: TokenCA) -> None:
    serials = _renewed_twice(token_ca, "pred")
    token_ca.run("ca", "revoke", "--ca-dir", str(token_ca.dir), serials[0], "--reason", "superseded", check=True)
    assert [_status(token_ca)[s][0] for s in serials] == ["revoked", "valid", "valid"]


def test_a_lost_tokens_renewed_key_is_revoked_once_per_certificate(token_ca: TokenCA, softhsm: SoftHSM) -> None:
    serials = _renewed_twice(token_ca, "lost")
    token_serial = token_ca.issued()[0]["token_serial"]
    shutil.rmtree(token_dir(softhsm, USER_TOKEN))
    revoked = token_ca.json("revoke", "--token-serial", token_serial, "--ca", str(token_ca.dir))
    assert sorted(r["serial"] for r in revoked) == sorted(serials)
    assert {r["reason"] for r in revoked} == {"key-compromise"}
    assert len(_revoke_audit(token_ca)) == 3


# -- over CMP ------------------------------------------------------------------------------------
@pytest.fixture
def net(softhsm: SoftHSM) -> Iterator[tuple[TokenCA, Served]]:
    ca = make_token_ca(softhsm)
    with served(ca) as server:
        yield ca, server


def test_cmp_rr_for_key_compromise_revokes_the_renewed_keys_predecessor(net: tuple[TokenCA, Served]) -> None:
    ca, server = net
    location = f"cmp+{server.url}/pkix/"
    reg = ca.json("ra", "register", "--ca-dir", str(ca.dir), "--subject", "CN=Net Compromised,O=tokenissue tests",
                  "--profile", "personal")  # fmt: skip
    first = ca.json("enroll", "--token", USER_TOKEN, "--ca", location, "--ref", reg["ref"], "--subject", reg["subject"],
                    "--label", "net", env={CODE_ENV: reg["code"]})  # fmt: skip
    [renewed] = ca.json("renew", "--token", USER_TOKEN, "--key", "net", "--within", "400d", env={CODE_ENV: ""})
    assert renewed["replaces"] == first["serial"] and renewed["key_id"] == first["key_id"]

    proc = ca.run("revoke", "--token", USER_TOKEN, "--key", "net", "--reason", "key-compromise", "--json")
    assert proc.returncode == 0, proc.stderr + server.stderr()[-2000:]
    assert sorted(r["serial"] for r in json.loads(proc.stdout)) == sorted([first["serial"], renewed["serial"]])
    status = _status(ca)
    assert status[first["serial"]] == status[renewed["serial"]] == ("revoked", "key-compromise")
    [rr] = [line for line in server.access_log() if line.get("cmp_body") == "rr" and line.get("serial")]
    assert rr["same_key_revoked"] == [first["serial"]]


# -- the inventory's part, on each backend (SQLite, PostgreSQL) --------------------------------------
def _record(serial: int, key: Any, *, issuer: str = "CN=CA", age: int = 10, days: int = 365) -> CertRecord:
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    nb = datetime.now(UTC) - timedelta(days=age)
    cert = (
        x509.CertificateBuilder().subject_name(x509.Name.from_rfc4514_string("CN=Holder"))
        .issuer_name(x509.Name.from_rfc4514_string(issuer)).public_key(key.public_key()).serial_number(serial)
        .not_valid_before(nb).not_valid_after(nb + timedelta(days=days))
        .sign(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256())
    )  # fmt: skip
    der = cert.public_bytes(serialization.Encoding.DER)
    return CertRecord(
        serial=serial, subject="CN=Holder", issuer=issuer, not_before=nb, not_after=nb + timedelta(days=days),
        sha256=hashlib.sha256(der).hexdigest(), profile="personal", der=der,
    )  # fmt: skip


def test_inventory_revokes_the_keys_unexpired_certificates_from_its_issuer_in_one_go(inv: Inventory) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    key, other = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    records = [
        _record(1, key, age=100),  # the key's first certificate
        _record(2, key),  # its same-key renewal: the one named
        _record(3, other),  # another key
        _record(4, key, age=400),  # the key's, but expired
        _record(5, key, issuer="CN=Another CA"),  # the key's, from another issuer (a holder's records)
        _record(6, key, age=50),  # the key's, revoked before for another reason
    ]
    for r in records:
        inv.add_certificate(r)
    inv.revoke(6, RevocationReason.SUPERSEDED, datetime.now(UTC))
    assert [r.serial for r in inv.same_key(2, datetime.now(UTC))] == [1]

    def audit(r: CertRecord) -> tuple[str, dict[str, object]]:
        return "revoke", {"serial": format(r.serial, "x")}

    done = inv.revoke_key(2, RevocationReason.KEY_COMPROMISE, datetime.now(UTC), audit=audit)
    assert [(r.serial, r.status, r.revocation_reason) for r in done] == [
        (2, CertStatus.REVOKED, RevocationReason.KEY_COMPROMISE),
        (1, CertStatus.REVOKED, RevocationReason.KEY_COMPROMISE),
    ]
    status = {r.serial: (r.status, r.revocation_reason) for r in inv.list_certificates()}
    assert status[3] == status[4] == status[5] == (CertStatus.VALID, None)
    assert status[6] == (CertStatus.REVOKED, RevocationReason.SUPERSEDED)  # never rewritten
    assert [e.details["serial"] for e in inv.audit_entries()] == ["2", "1"]
    # Again, naming a certificate revoked before: nothing more to do, nothing logged.
    assert [r.serial for r in inv.revoke_key(1, RevocationReason.KEY_COMPROMISE, datetime.now(UTC), audit=audit)] == [1]
    assert len(inv.audit_entries()) == 2
