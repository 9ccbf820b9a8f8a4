"""Suspension and restoration (issue 13 item 7, 효력정지 / 효력회복), on real tokens.

Done when suspend and restore show in CRLs that ``openssl verify -crl_check`` reads: a
suspended certificate is on the next CRL with reason certificateHold, dated from its
suspension, and ``openssl verify -crl_check`` says "certificate revoked"; restored, it is valid
again, gone from the next CRL, and verifies. The holder asks for a hold with ``revoke --reason
certificate-hold`` (an rr with certificateHold over CMP); only the CA restores.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from support.cmp_server import served
from support.lifecycle import USER_TOKEN, TokenCA, make_token_ca
from support.openssl import openssl
from support.softhsm import SoftHSM
from support.token_impls import TokenImpl, on_impls

CODE_ENV = "TOKENISSUE_AUTH_CODE"


@pytest.fixture
def impl_ca(token_impl: TokenImpl) -> TokenCA:
    """A CA (key on SoftHSM) and the holder's token 'test' on each implementation."""
    return token_impl.make_ca()


@pytest.fixture
def token_ca(softhsm: SoftHSM) -> TokenCA:
    return make_token_ca(softhsm)


def _ca(ca: TokenCA, *args: str) -> Any:
    return ca.run("ca", args[0], "--ca-dir", str(ca.dir), *args[1:])


def _crl(ca: TokenCA, path: Path) -> x509.CertificateRevocationList:
    ca.run("ca", "crl", "--ca-dir", str(ca.dir), "-o", str(path), check=True)
    return x509.load_pem_x509_crl(path.read_bytes())


def _record(ca: TokenCA, serial: str) -> dict[str, Any]:
    [row] = [r for r in ca.issued() if r["serial"] == serial]
    return row


def _state(ca: TokenCA, serial: str) -> str:
    [st] = [s["state"] for s in ca.status() if s["serial"] == serial]
    return str(st)


@on_impls("softhsm", "tpm2")
def test_suspend_and_restore_show_in_crls_openssl_reads(impl_ca: TokenCA, tmp_path: Path) -> None:
    ca = impl_ca
    out = ca.enroll("CN=정지 홍길동,O=tokenissue tests,C=KR", "--label", "held")
    serial = out["serial"]
    leaf = tmp_path / "leaf.pem"
    ca.export("held", leaf)
    bystander = ca.enroll("CN=Bystander,O=tokenissue tests", "--label", "other")["serial"]

    # Suspend: the CA's record, the audit log, the holder's status.
    before = datetime.now(UTC).replace(microsecond=0)
    proc = _ca(ca, "suspend", serial)
    assert proc.returncode == 0, proc.stderr
    assert f"Suspended {serial} (CN=정지 홍길동,O=tokenissue tests,C=KR) since " in proc.stdout
    assert "reason certificate-hold" in proc.stdout
    row = _record(ca, serial)
    assert (row["status"], row["reason"]) == ("suspended", "certificate-hold")
    assert [r["serial"] for r in ca.json("ca", "list", "--ca-dir", str(ca.dir), "--status", "suspended")] == [serial]
    assert _state(ca, serial) == "suspended"
    [st] = [s for s in ca.status() if s["serial"] == serial]
    assert st["renew_due"] is False  # on hold: never renewed by a sweep or 'renew'
    table = ca.run("status", "-t", USER_TOKEN, check=True).stdout
    assert "suspended" in table and "A certificate is suspended" in table

    # The CRL lists it with reason certificateHold, dated from the suspension.
    crl = _crl(ca, tmp_path / "held.crl")
    [entry] = list(crl)
    assert entry.serial_number == int(serial, 16)
    reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    assert reason is x509.ReasonFlags.certificate_hold
    suspended_at = datetime.fromisoformat(row["revoked_at"])
    assert entry.revocation_date_utc == suspended_at.replace(microsecond=0)
    assert before - timedelta(seconds=1) <= entry.revocation_date_utc <= datetime.now(UTC)
    text = openssl("crl", "-in", str(tmp_path / "held.crl"), "-noout", "-text")
    assert text.returncode == 0 and "Certificate Hold" in text.stdout, text.stdout
    refused = ca.verify(leaf, "-crl_check", "-CRLfile", str(tmp_path / "held.crl"))
    assert refused.returncode != 0
    assert "certificate revoked" in refused.stdout + refused.stderr

    # Restore: valid again, gone from the next CRL, and openssl verifies it.
    back = _ca(ca, "restore", serial)
    assert back.returncode == 0, back.stderr
    assert f"Restored {serial} (CN=정지 홍길동,O=tokenissue tests,C=KR): valid again." in back.stdout
    row = _record(ca, serial)
    assert (row["status"], row["reason"], row["revoked_at"]) == ("valid", None, None)
    assert _state(ca, serial) == "valid"
    assert list(_crl(ca, tmp_path / "restored.crl")) == []
    ok = ca.verify(leaf, "-crl_check", "-CRLfile", str(tmp_path / "restored.crl"))
    assert ok.returncode == 0, ok.stdout + ok.stderr

    # Both are in the hash-chained audit log, which still verifies.
    audit = [(e["action"], e["details"].get("serial")) for e in ca.audit() if e["action"] in ("suspend", "restore")]
    assert audit == [("suspend", serial), ("restore", serial)]
    assert ca.run("ca", "audit", "verify", "--ca-dir", str(ca.dir)).returncode == 0
    assert _record(ca, bystander)["status"] == "valid"


def test_refusals_are_one_sentence_and_exit_6(token_ca: TokenCA) -> None:
    ca = token_ca
    a = ca.enroll("CN=Refusals A,O=tokenissue tests", "--label", "a")["serial"]
    b = ca.enroll("CN=Refusals B,O=tokenissue tests", "--label", "b")["serial"]

    # Restoring a certificate that is not suspended.
    valid = _ca(ca, "restore", a)
    assert valid.returncode == 6, valid.stderr
    assert f"Certificate {a} is valid, not suspended; there is nothing to restore;" in valid.stderr
    assert "'tokenissue ca list --status suspended'" in valid.stderr
    assert "Traceback" not in valid.stderr

    # Suspending, or restoring, a certificate revoked for good.
    ca.run("ca", "revoke", "--ca-dir", str(ca.dir), b, "--reason", "superseded", check=True)
    for command in ("suspend", "restore"):
        final = _ca(ca, command, b)
        assert final.returncode == 6, final.stderr
        assert f"Certificate {b} is revoked (superseded), which is final" in final.stderr
    assert _record(ca, b)["status"] == "revoked"

    # An unknown serial.
    unknown = _ca(ca, "suspend", "abcdef0123456789")
    assert unknown.returncode == 6 and "no certificate with serial abcdef0123456789" in unknown.stderr

    # --status belongs to the listing, not to the expiry sweep.
    mixed = ca.run("ca", "list", "--ca-dir", str(ca.dir), "--status", "suspended", "--within", "30d")
    assert mixed.returncode == 2 and "--status lists the inventory" in mixed.stderr

    # Suspending twice: the second changes nothing and logs nothing.
    _ca(ca, "suspend", a)
    again = _ca(ca, "suspend", a)
    assert again.returncode == 0 and f"Already suspended: {a} " in again.stdout
    assert sum(1 for e in ca.audit() if e["action"] == "suspend") == 1

    # A suspended certificate is not renewed on the token: its CA must restore it first.
    renew = ca.run("renew", "--token", USER_TOKEN, "--key", "a")
    assert renew.returncode == 6, renew.stdout + renew.stderr
    assert f"Certificate {a} is suspended (on hold) at its CA, so it is not renewed or re-issued;" in renew.stderr
    assert f"'tokenissue ca restore {a}'" in renew.stderr

    # Revoking it for good (key compromise) keeps the suspension's date on the CRL.
    held_since = _record(ca, a)["revoked_at"]
    ca.run("ca", "revoke", "--ca-dir", str(ca.dir), a, "--reason", "key-compromise", check=True)
    row = _record(ca, a)
    assert (row["status"], row["reason"], row["revoked_at"]) == ("revoked", "key-compromise", held_since)
    assert _ca(ca, "restore", a).returncode == 6


def test_ca_revoke_with_certificate_hold_suspends(token_ca: TokenCA, tmp_path: Path) -> None:
    serial = token_ca.enroll("CN=Hold By Reason,O=tokenissue tests", "--label", "h")["serial"]
    proc = token_ca.run("ca", "revoke", "--ca-dir", str(token_ca.dir), serial, "--reason", "certificateHold", check=True)
    assert f"Suspended {serial} (CN=Hold By Reason,O=tokenissue tests), reason certificate-hold" in proc.stdout
    assert _record(token_ca, serial)["status"] == "suspended"
    assert _ca(token_ca, "restore", serial).returncode == 0
    assert list(_crl(token_ca, tmp_path / "c.crl")) == []


def test_a_missing_token_is_put_on_hold_by_its_serial_and_restored(
    token_ca: TokenCA, softhsm: SoftHSM, tmp_path: Path
) -> None:
    """A lost-token flow that expects the token back: certificate-hold suspends every certificate
    of the token and keeps its enrollments; once it turns up, the CA restores them."""
    a = token_ca.enroll("CN=Missing A,O=tokenissue tests", "--label", "ma")
    b = token_ca.enroll("CN=Missing B,O=tokenissue tests", "--label", "mb")
    token_serial = a["token_serial"]
    held = token_ca.json("revoke", "--token-serial", token_serial, "--ca", str(token_ca.dir), "--reason", "certificate-hold")
    assert sorted(r["serial"] for r in held) == sorted([a["serial"], b["serial"]])
    assert {r["status"] for r in held} == {"suspended"}
    assert {_state(token_ca, s) for s in (a["serial"], b["serial"])} == {"suspended"}
    assert {x.serial_number for x in _crl(token_ca, tmp_path / "h.crl")} == {int(a["serial"], 16), int(b["serial"], 16)}
    for s in (a["serial"], b["serial"]):
        _ca(token_ca, "restore", s)
    assert {_state(token_ca, s) for s in (a["serial"], b["serial"])} == {"valid"}


@pytest.mark.parametrize("ca_database", ["sqlite"], indirect=True)
def test_holder_asks_for_a_hold_over_cmp_and_only_the_ca_restores(
    softhsm: SoftHSM, ca_database: str | None, tmp_path: Path
) -> None:
    ca = make_token_ca(softhsm, database=ca_database)
    subject = "CN=CMP Hold,O=tokenissue tests,C=KR"
    reg = ca.json("ra", "register", "--ca-dir", str(ca.dir), "--subject", subject, "--profile", "personal")
    ca.run("ca", "ocsp-signer", "--ca", str(ca.dir), check=True)  # OCSP tells a hold as it happens
    with served(ca) as server:
        location = f"cmp+{server.url}/pkix/"
        enrolled = ca.run("enroll", "--token", USER_TOKEN, "--ca", location, "--ref", reg["ref"], "--subject", subject,
                          "--label", "cmp", "--json", env={CODE_ENV: reg["code"]})  # fmt: skip
        assert enrolled.returncode == 0, enrolled.stderr + server.stderr()
        serial = json.loads(enrolled.stdout)["serial"]
        leaf = tmp_path / "cmp.pem"
        ca.export("cmp", leaf)

        # The holder asks for a hold: an rr with certificateHold, signed by the key on the token.
        hold = ca.run("revoke", "--token", USER_TOKEN, "--key", "cmp", "--reason", "certificate-hold", "--json")
        assert hold.returncode == 0, hold.stderr + server.stderr()
        assert [(r["serial"], r["status"]) for r in json.loads(hold.stdout)] == [(serial, "suspended")]
        assert _record(ca, serial)["status"] == "suspended"
        assert _state(ca, serial) == "suspended"
        [rr] = [line for line in server.access_log() if line.get("cmp_body") == "rr"]
        assert rr.get("suspended") is True
        assert any(e["action"] == "suspend" for e in ca.audit())
        refused = ca.verify(leaf, "-crl_check", "-CRLfile", str(_crl_path(ca, tmp_path / "held.crl")))
        assert "certificate revoked" in refused.stdout + refused.stderr
        held = _ocsp(ca, server.url, leaf)
        assert "cmp.pem: revoked" in held and "Reason: certificateHold" in held, held

        # While on hold the certificate vouches for nothing: a key update it signs is refused.
        renew = ca.run("renew", "--token", USER_TOKEN, "--key", "cmp", env={CODE_ENV: ""})
        assert renew.returncode == 6, renew.stdout + renew.stderr
        assert "suspended" in renew.stderr and "only the CA can restore it" in renew.stderr

        # The CA restores it; then the same key update goes through.
        ca.run("ca", "restore", "--ca-dir", str(ca.dir), serial, check=True)
        assert _record(ca, serial)["status"] == "valid"
        ok = ca.verify(leaf, "-crl_check", "-CRLfile", str(_crl_path(ca, tmp_path / "restored.crl")))
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert "cmp.pem: good" in _ocsp(ca, server.url, leaf)
        renewed = ca.run("renew", "--token", USER_TOKEN, "--key", "cmp", "--json", env={CODE_ENV: ""})
        assert renewed.returncode == 0, renewed.stderr + server.stderr()
        assert json.loads(renewed.stdout)[0]["replaces"] == serial


def _ocsp(ca: TokenCA, url: str, leaf: Path) -> str:
    """openssl ocsp's verdict on ``leaf`` from the server's responder (answer verified)."""
    proc = openssl("ocsp", "-issuer", str(ca.pem), "-cert", str(leaf), "-url", f"{url}/ocsp", "-CAfile", str(ca.pem))
    assert proc.returncode == 0 and "Response verify OK" in proc.stderr, proc.stdout + proc.stderr
    return proc.stdout


def _crl_path(ca: TokenCA, path: Path) -> Path:
    _crl(ca, path)
    return path


def test_the_holder_cannot_restore_over_cmp(session_softhsm: SoftHSM) -> None:
    """An rr with removeFromCRL (what 'restore' would be in CMP) is refused: only the CA
    restores. Signed by the suspended certificate's own key, so the refusal is about the
    reason, not the signer; nothing changes."""
    from starlette.testclient import TestClient

    from tokenissue.protocols.cmp import MessageHeader, build_ir, build_rr

    from support.cmp_server import CMP_TYPE, confirm, in_process_app, new_key, register, response_of, signed, snapshot

    ca = make_token_ca(session_softhsm)
    app, _log = in_process_app(session_softhsm, ca)
    with TestClient(app) as client:

        def post(body: bytes) -> Any:
            r = client.post("/pkix/", content=body, headers={"content-type": CMP_TYPE})
            assert r.status_code == 200, r.content
            return response_of(r.content)

        reg = register(ca.dir, "CN=No Self Restore,O=tokenissue tests")
        key = new_key()
        ip = post(reg.protect(build_ir(reg.subject, None, key, header=MessageHeader(sender=reg.subject))))
        cert = ip.certificate
        assert cert is not None
        assert post(reg.protect(confirm(ip))).body_type == "pkiconf"
        held = post(signed(build_rr(cert.issuer, cert.serial_number, x509.ReasonFlags.certificate_hold), key, cert))
        assert held.body_type == "rp", held.status
        assert _held(ca, cert.serial_number) == ("suspended", "certificate-hold")

        restore = post(signed(build_rr(cert.issuer, cert.serial_number, x509.ReasonFlags.remove_from_crl), key, cert))
        assert restore.body_type == "error"
        assert restore.status.failure_info == ("notAuthorized",)
        assert "Only the CA can restore" in (restore.status.text or "")
        assert _held(ca, cert.serial_number) == ("suspended", "certificate-hold")
        # A hold asked again is done already; a permanent revocation of a held certificate is allowed.
        again = post(signed(build_rr(cert.issuer, cert.serial_number, x509.ReasonFlags.certificate_hold), key, cert))
        assert again.body_type == "rp"
        assert [e[0] for e in snapshot(ca.dir)["audit"]].count("suspend") == 1
        final = post(signed(build_rr(cert.issuer, cert.serial_number, x509.ReasonFlags.key_compromise), key, cert))
        assert final.body_type == "rp", final.status
        print("DBG", final.status, final.revocation_statuses, _log.getvalue()[-3000:], ca.audit())
        assert _held(ca, cert.serial_number) == ("revoked", "key-compromise")


def _held(ca: TokenCA, serial: int) -> tuple[str, str | None]:
    """Status and reason, read in this process: the in-process server holds the SQLite file
    open, and a CLI subprocess reading it meanwhile is what the server tests avoid."""
    [rec] = [r for r in ca.records() if r.serial == serial]
    return rec.status.value, rec.revocation_reason.value if rec.revocation_reason else None
