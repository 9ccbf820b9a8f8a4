"""Re-issue that keeps the term (issue 13 item 8), with the code delivered apart (item 6).

An RA officer registers a re-issue of a holder's valid kr-personal certificate
(``ra register --reissue-of SERIAL``: subject and profile default to the old certificate's),
the code going to a stand-in SMS gateway on its standard input; the holder enrolls with the
reference and that code, on a CA directory in this process (SoftHSM and tpm2-pkcs11) and over
CMP to ``ca serve``. The new certificate keeps the old notAfter (the profile's
keep_term_on_reissue), and the old one is revoked as superseded in the transaction that
records the new one: the CRL says so, and the audit log has both entries.

To tell a kept term from a new one, the CA's profiles.toml shortens kr-personal to 100 days
after the old certificate was issued for 365: a new term would end some 265 days earlier.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from cryptography import x509

from support.cmp_server import served
from support.lifecycle import USER_TOKEN, TokenCA, make_token_ca
from support.softhsm import SoftHSM
from support.token_impls import TokenImpl, on_impls

NUMBER = "8501011234567"  # a made-up resident registration number
SUBJECT = "CN=홍길동()0012345678901234,OU=ExampleBank,OU=personal4IB,O=ExampleCA,C=KR"
ID_ENV = "TOKENISSUE_ID_NUMBER"
CODE_ENV = "TOKENISSUE_AUTH_CODE"
GATEWAY = 'umask 077\ncat > "$1"\n'


def _gateway(tmp: Path) -> tuple[str, Path]:
    """A --deliver-code command writing the code it reads on stdin to a 0600 file."""
    script, out = tmp / "sms-gateway.sh", tmp / "sms.txt"
    script.write_text(GATEWAY, encoding="utf-8")
    return f"/bin/sh {script} {out}", out


def _record(ca: TokenCA, serial: str) -> dict[str, Any]:
    [row] = [r for r in ca.issued() if r["serial"] == serial]
    return row


def _crl_reasons(ca: TokenCA, tmp: Path) -> dict[int, x509.ReasonFlags | None]:
    """The CA's new CRL, read with cryptography: serial → reason code."""
    out = tmp / "ca.crl"
    ca.run("ca", "crl", "--ca-dir", str(ca.dir), "-o", str(out), check=True)
    crl = x509.load_pem_x509_crl(out.read_bytes())
    reasons: dict[int, x509.ReasonFlags | None] = {}
    for entry in crl:
        try:
            reasons[entry.serial_number] = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
        except x509.ExtensionNotFound:
            reasons[entry.serial_number] = None
    return reasons


def _register_reissue(ca: TokenCA, serial: str, tmp: Path) -> tuple[dict[str, Any], str, subprocess.CompletedProcess[str]]:
    """``ra register --reissue-of`` with the code delivered apart; (its JSON, the code, the run)."""
    command, sms = _gateway(tmp)
    # The officer pastes the serial as openssl prints it (upper case, colons).
    pasted = ":".join(serial.upper().zfill(40)[i : i + 2] for i in range(0, 40, 2))
    proc = ca.run(
        "ra", "register", "--ca-dir", str(ca.dir), "--reissue-of", pasted, "--verified-by", "branch visit with ID card",
        "--terms-version", "2026-03", "--deliver-code", command, "--json", env={ID_ENV: NUMBER},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    reg: dict[str, Any] = json.loads(proc.stdout)
    code = sms.read_text().strip()
    assert (sms.stat().st_mode & 0o777) == 0o600
    assert "code" not in reg and code not in proc.stdout + proc.stderr
    assert (reg["subject"], reg["profile"], reg["reissue_of"]) == (SUBJECT, "kr-personal", serial)
    return reg, code, proc


def _shorten_the_profile(ca: TokenCA) -> None:
    (ca.dir / "profiles.toml").write_text("[profiles.kr-personal]\ndays = 100\n", encoding="utf-8")


def _check_superseded(ca: TokenCA, old: dict[str, Any], new_serial: str, tmp: Path) -> None:
    """The new certificate keeps the old term; the old one is revoked as superseded (CRL, audit)."""
    before, after = _record(ca, old["serial"]), _record(ca, new_serial)
    assert after["not_after"] == old["not_after"], (after, old)
    assert after["status"] == "valid"
    assert (before["status"], before["reason"]) == ("revoked", "superseded")
    reasons = _crl_reasons(ca, tmp)
    assert reasons == {int(old["serial"], 16): x509.ReasonFlags.superseded}
    audit = ca.audit()
    [issued] = [e for e in audit if e["action"] == "issue" and e["details"]["serial"] == new_serial]
    [revoked] = [e for e in audit if e["action"] == "revoke" and e["details"]["serial"] == old["serial"]]
    assert issued["details"]["reissue_of"] == old["serial"]
    assert revoked["details"] == {"serial": old["serial"], "reason": "superseded", "superseded_by": new_serial}
    assert revoked["seq"] == issued["seq"] + 1  # written in the one transaction, one after the other
    ca.run("ca", "audit", "verify", "--ca-dir", str(ca.dir), check=True)
    [reg] = [e for e in audit if e["action"] == "ra-register" and e["details"]["reissue_of"] == old["serial"]]
    assert reg["details"]["verified_by"] == "branch visit with ID card"
    assert reg["details"]["terms_version"] == "2026-03"


@on_impls("softhsm", "tpm2")
def test_reissue_on_a_local_ca_keeps_the_term_and_supersedes(
    token_impl_with_ca: TokenCA, session_token_impl: TokenImpl, tmp_path: Path
) -> None:
    ca = token_impl_with_ca
    first = ca.json(*ca.enroll_args(SUBJECT, "--profile", "kr-personal", "--label", "kr"), env={ID_ENV: NUMBER})
    old = _record(ca, first["serial"])
    _shorten_the_profile(ca)
    reg, code, _ = _register_reissue(ca, first["serial"], tmp_path)

    # A wrong code counts, and issues nothing; the old certificate stays valid meanwhile.
    args = ["enroll", "--token", USER_TOKEN, "--ca", str(ca.dir), "--ref", reg["ref"], "--subject", SUBJECT,
            "--profile", "kr-personal", "--label", "kr-new", "--json"]  # fmt: skip
    wrong = ca.run(*args, env={ID_ENV: NUMBER, CODE_ENV: "AAAAA-AAAAA-AAAAA-AAAAA"})
    assert wrong.returncode == 5 and "Wrong authorization code" in wrong.stderr, wrong.stdout + wrong.stderr
    assert _record(ca, first["serial"])["status"] == "valid"

    # The registration fixes the subject, as over CMP: another one is refused, with no key left.
    other = [*args[:8], "CN=Someone Else,O=ExampleCA,C=KR", *args[9:-3], "--label", "kr-other", "--json"]
    refused = ca.run(*other, env={ID_ENV: NUMBER, CODE_ENV: code})
    assert refused.returncode == 6 and "is not the subject of registration" in refused.stderr, refused.stderr
    assert [k for k in ca.private_keys() if k["label"] == "kr-other"] == []

    proc = ca.run(*args, env={ID_ENV: NUMBER, CODE_ENV: code})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    new = json.loads(proc.stdout)
    assert new["serial"] != first["serial"] and new["subject"] == SUBJECT
    _check_superseded(ca, old, new["serial"], tmp_path)
    [row] = [r for r in ca.json("ra", "list", "--ca-dir", str(ca.dir)) if r["ref"] == reg["ref"]]
    assert (row["status"], row["serial"], row["failures"]) == ("used", new["serial"], 1)

    # The code was good for one certificate, and the old one cannot be re-issued twice.
    again = ca.run(*args[:-3], "--label", "kr-again", "--json", env={ID_ENV: NUMBER, CODE_ENV: code})
    assert again.returncode == 6 and "already used" in again.stderr, again.stdout + again.stderr
    twice = ca.run("ra", "register", "--ca-dir", str(ca.dir), "--reissue-of", first["serial"], env={ID_ENV: NUMBER})
    assert twice.returncode == 6 and "was revoked (superseded), so it cannot be re-issued" in twice.stderr
    valid = [r for r in ca.issued() if r["subject"] == SUBJECT and r["status"] == "valid"]
    assert [r["serial"] for r in valid] == [new["serial"]]


def test_reissue_over_cmp_keeps_the_term_and_supersedes(session_softhsm: SoftHSM, tmp_path: Path) -> None:
    ca = make_token_ca(session_softhsm)
    first_reg = ca.json(
        "ra", "register", "--ca-dir", str(ca.dir), "--subject", SUBJECT, "--profile", "kr-personal",
        "--verified-by", "video call", env={ID_ENV: NUMBER},
    )  # fmt: skip

    def enroll(location: str, reg: dict[str, Any], code: str, label: str) -> subprocess.CompletedProcess[str]:
        return ca.run(
            "enroll", "--token", USER_TOKEN, "--ca", location, "--ref", reg["ref"], "--subject", reg["subject"],
            "--profile", "kr-personal", "--label", label, "--json", env={CODE_ENV: code, ID_ENV: NUMBER},
        )  # fmt: skip

    with served(ca) as server:
        proc = enroll(f"cmp+{server.url}/pkix/", first_reg, first_reg["code"], "kr")
        assert proc.returncode == 0, proc.stdout + proc.stderr + server.stderr()[-3000:]
    first = json.loads(proc.stdout)
    old = _record(ca, first["serial"])
    _shorten_the_profile(ca)  # read when the server starts
    reg, code, _ = _register_reissue(ca, first["serial"], tmp_path)
    with served(ca) as server:
        proc = enroll(f"cmp+{server.url}/pkix/", reg, code, "kr-new")
        assert proc.returncode == 0, proc.stdout + proc.stderr + server.stderr()[-3000:]
        log = server.stderr()
    new = json.loads(proc.stdout)
    _check_superseded(ca, old, new["serial"], tmp_path)
    assert code not in log and NUMBER not in log
    # The holder's token: the new certificate valid, the old one revoked (as the CA says).
    states = {s["label"]: s["state"] for s in ca.status()}
    assert states["kr-new"] == "valid"


def test_a_suspended_certificate_of_a_lost_token_is_reissued_and_revoked_as_of_its_hold(
    softhsm: SoftHSM, tmp_path: Path
) -> None:
    """The seed's order: the token goes missing, the CA stops the certificate at once (a hold),
    the holder is registered for a re-issue, and enrolling on a new token supersedes the held
    one, whose CRL entry keeps the hold's date; the term is kept."""
    ca = make_token_ca(softhsm)
    first = ca.json(*ca.enroll_args(SUBJECT, "--profile", "kr-personal", "--label", "kr"), env={ID_ENV: NUMBER})
    ca.run("ca", "suspend", "--ca-dir", str(ca.dir), first["serial"], check=True)
    held = _record(ca, first["serial"])
    assert held["status"] == "suspended"
    reg, code, _ = _register_reissue(ca, first["serial"], tmp_path)
    proc = ca.run("enroll", "--token", USER_TOKEN, "--ca", str(ca.dir), "--ref", reg["ref"], "--subject", SUBJECT,
                  "--profile", "kr-personal", "--label", "kr-new", "--json", env={ID_ENV: NUMBER, CODE_ENV: code})  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    new = json.loads(proc.stdout)
    after = _record(ca, first["serial"])
    assert (after["status"], after["reason"]) == ("revoked", "superseded")
    assert after["revoked_at"] == held["revoked_at"]  # revoked for good as of the hold
    assert _record(ca, new["serial"])["not_after"] == held["not_after"]
    assert _crl_reasons(ca, tmp_path) == {int(first["serial"], 16): x509.ReasonFlags.superseded}
