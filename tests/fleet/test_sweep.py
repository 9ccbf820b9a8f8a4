"""The CA's expiry sweep, ``tokenissue ca list --expiring D [--hook CMD] [--renew]``, on real
SoftHSM tokens: a hook told about each certificate, renewal on the tokens that are present,
renewed certificates gone from the next sweep, and exit status 8 while something needs a person.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from cryptography import x509

from support.cli import USER_PIN
from support.lifecycle import TokenCA, add_token_fast, make_token_ca
from support.softhsm import SoftHSM

pytestmark = pytest.mark.slow

HOOK = """#!/bin/sh
# Writes its whole environment, and the certificate it got on stdin, to OUT/<serial>.
{ env | sort; cat; } > "@OUT@/$TOKENISSUE_SERIAL"
[ "$TOKENISSUE_SUBJECT" != "CN=Fails Hook,O=Example" ]
"""


@pytest.fixture
def fleet(softhsm: SoftHSM) -> TokenCA:
    ca = make_token_ca(softhsm)
    for label in ("sw-01", "sw-02"):
        add_token_fast(softhsm, label)
    ca.enroll("CN=Sweep One,O=Example", token="sw-01")
    ca.enroll("CN=Sweep Two,O=Example", token="sw-02")
    return ca


def _hook(tmp_path: Path) -> tuple[str, Path]:
    out = tmp_path / "told"
    out.mkdir()
    script = tmp_path / "hook.sh"
    script.write_text(HOOK.replace("@OUT@", str(out)))
    script.chmod(0o700)
    return str(script), out


def _sweep(ca: TokenCA, *extra: str, env: dict[str, str] | None = None) -> tuple[int, list[dict[str, object]], str]:
    proc = ca.run("ca", "list", "--ca-dir", str(ca.dir), "--expiring", "400d", "--json", *extra, env=env)
    return proc.returncode, json.loads(proc.stdout or "[]"), proc.stderr


def test_hook_is_told_each_expiring_certificate_and_never_a_pin(fleet: TokenCA, tmp_path: Path) -> None:
    hook, told = _hook(tmp_path)
    # The sweep's environment holds secrets: a PIN named by --pin-env, a database password.
    secrets = {"HSM_PIN": "secret-hsm-pin", "PGPASSWORD": "secret-db-password"}
    code, items, err = _sweep(fleet, "--hook", hook, env=secrets)
    assert code == 0, err
    assert sorted(i["subject"] for i in items) == ["CN=Sweep One,O=Example", "CN=Sweep Two,O=Example"]
    assert all(i["action"] == "due" and i["notified"] is True for i in items)
    for i in items:
        text = (told / str(i["serial"])).read_text()
        assert f"TOKENISSUE_SUBJECT={i['subject']}" in text
        assert "TOKENISSUE_DAYS_LEFT=36" in text  # 364 or 365 days: a one-year certificate
        assert "TOKENISSUE_TOKEN_SERIAL=" in text and "TOKENISSUE_SWEEP_ACTION=due" in text
        assert "PIN" not in text and "secret" not in text  # no PIN variable, nothing unlisted
        assert "PATH=" in text
        cert = x509.load_pem_x509_certificate(text[text.index("-----BEGIN") :].encode())
        assert format(cert.serial_number, "x") == i["serial"]
    # Nothing expires within 30 days: an empty sweep, and the hook is not run.
    proc = fleet.run("ca", "list", "--ca-dir", str(fleet.dir), "--expiring", "30d", "--hook", hook)
    assert proc.returncode == 0 and "Nothing expires" in proc.stderr


def test_a_failing_hook_is_exit_8_with_its_reason(fleet: TokenCA, tmp_path: Path) -> None:
    fleet.enroll("CN=Fails Hook,O=Example", token="sw-01")
    hook, _told = _hook(tmp_path)
    code, items, _err = _sweep(fleet, "--hook", hook)
    assert code == 8
    failed = [i for i in items if i["notified"] is False]
    assert [i["subject"] for i in failed] == ["CN=Fails Hook,O=Example"]
    assert "hook exited with status 1" in str(failed[0]["detail"])
    missing = fleet.run("ca", "list", "--ca-dir", str(fleet.dir), "--expiring", "400d", "--hook", "/nonexistent/notify")
    assert missing.returncode == 8 and "hook command not found" in missing.stderr


def test_renew_on_present_tokens_and_report_the_absent_one(fleet: TokenCA, tmp_path: Path) -> None:
    before = {r["serial"]: r for r in fleet.issued()}
    # sw-02 leaves the building: its SoftHSM directory moves away.
    tokens = fleet.hsm.root / "tokens"
    sw02 = next(p.parent for p in tokens.glob("*/token.object") if b"sw-02" in p.read_bytes())
    shutil.move(str(sw02), str(tmp_path / "sw-02"))
    code, items, err = _sweep(fleet, "--renew")
    assert code == 8, err  # sw-02's certificate still needs its holder
    by_subject = {i["subject"]: i for i in items}
    one, two = by_subject["CN=Sweep One,O=Example"], by_subject["CN=Sweep Two,O=Example"]
    assert one["action"] == "renewed" and one["new_serial"] not in before
    assert two["action"] == "token-absent" and "not present" in str(two["detail"])
    # The renewed certificate is on sw-01 with the same key, and openssl agrees it chains.
    certs = [c for c in fleet.token_certs("sw-01") if not c["ca"]]
    assert [c["serial"] for c in certs] == [one["new_serial"]]
    assert len(fleet.private_keys("sw-01")) == 1
    # The next sweep does not list the renewed certificate; with a hook, the absent token's
    # holder is told, and that is all a sweep can do: exit 0.
    shutil.move(str(tmp_path / "sw-02"), str(sw02))
    hook, told = _hook(tmp_path)
    code, items, err = _sweep(fleet, "--hook", hook)
    assert code == 0, err
    listed = {i["serial"] for i in items}
    assert one["serial"] not in listed and one["new_serial"] in listed and two["serial"] in listed
    assert sorted(os.listdir(told)) == sorted(str(s) for s in listed)


def test_sweep_options_need_expiring(fleet: TokenCA) -> None:
    for extra in (["--renew"], ["--hook", "true"], ["--expiring", "30d", "--rekey"]):
        proc = fleet.run("ca", "list", "--ca-dir", str(fleet.dir), *extra)
        assert proc.returncode == 2, (extra, proc.stderr)


def test_a_refused_pin_stops_the_renewals(fleet: TokenCA) -> None:
    """Every renewal would offer the same PIN to another token: after one refusal, none is tried."""
    code, items, _err = _sweep(fleet, "--renew", env={"TOKENISSUE_PIN": "000000"})
    assert code == 8
    assert [i["action"] for i in items] == ["failed", "failed"]
    assert "no other token was tried" in str(items[1]["detail"])
    assert len(fleet.issued()) == 2  # nothing was issued


def test_a_renewal_cut_short_is_finished_by_the_next_sweep(fleet: TokenCA) -> None:
    """Killed right after the CA issued the successor: the CA now counts the old certificate
    as replaced, so only the journal knows the new one never reached the token."""
    killed = fleet.run("ca", "list", "--ca-dir", str(fleet.dir), "--expiring", "400d", "--renew",
                       env={"TOKENISSUE_FAILPOINT": "issued-recorded"})  # fmt: skip
    assert killed.returncode == -9
    assert len(fleet.issued()) == 3  # one successor issued, not yet on its token
    code, items, _err = _sweep(fleet, "--renew")
    assert code == 0, [(i["action"], i["detail"]) for i in items]
    finished = [i for i in items if i["detail"] == "an interrupted renewal, finished now"]
    assert len(finished) == 1 and finished[0]["action"] == "renewed"
    assert len(fleet.issued()) == 4  # the interrupted one was not issued again; the other renewed once
    for token in ("sw-01", "sw-02"):
        certs = [c for c in fleet.token_certs(token) if not c["ca"]]
        assert len(certs) == 1 and certs[0]["serial"] not in {i["serial"] for i in items}


def test_a_pin_in_a_locale_like_variable_never_reaches_the_hook(fleet: TokenCA, tmp_path: Path) -> None:
    """--pin-env LC_PIN: the sweep renews with that PIN, and the hook (which dumps its whole
    environment) gets neither the variable nor its value; LC_ALL, an allowlisted name, it gets.
    The allowlist was 'LC_*' before, which handed such a PIN to every hook run."""
    hook, told = _hook(tmp_path)
    env = {"LC_PIN": USER_PIN, "LC_ALL": "C.UTF-8", "TOKENISSUE_PIN": "", "PGPASSWORD": "secret-db-password"}
    code, items, err = _sweep(fleet, "--renew", "--pin-env", "LC_PIN", "--hook", hook, env=env)
    assert code == 0, err
    assert {i["action"] for i in items} == {"renewed"}
    for i in items:
        text = (told / str(i["serial"])).read_text()
        assert "LC_PIN" not in text and USER_PIN not in text and "secret" not in text, text
        assert "LC_ALL=C.UTF-8" in text


def test_due_sweeps_by_each_profile_renew_before_days(softhsm: SoftHSM) -> None:
    ca = make_token_ca(softhsm)
    personal = ca.enroll("CN=By Profile,O=Example", "--label", "p")
    ca.enroll("CN=Default Window,O=Example", "--profile", "tls-client", "--label", "t")
    # The CA's administrator now asks for personal certificates to be renewed 399 days before
    # they expire (a 400-day profile): the one issued for 365 days is due, tls-client's is not.
    (ca.dir / "profiles.toml").write_text("[profiles.personal]\ndays = 400\nrenew_before_days = 399\n")
    proc = ca.run("ca", "list", "--ca", str(ca.dir), "--due", "--json")
    assert proc.returncode == 0, proc.stderr
    assert [i["serial"] for i in json.loads(proc.stdout)] == [personal["serial"]]
    both = ca.run("ca", "list", "--ca", str(ca.dir), "--due", "--within", "30d")
    assert both.returncode == 2 and "not both" in both.stderr


def test_profile_window_falls_back_for_a_profile_the_ca_no_longer_has() -> None:
    from datetime import UTC, datetime, timedelta

    from tokenissue.ca.profiles import load_profiles
    from tokenissue.fleet.sweep import profile_window
    from tokenissue.models import CertRecord

    start = datetime(2026, 1, 1, tzinfo=UTC)

    def record(profile: str, days: int) -> CertRecord:
        return CertRecord(1, "CN=x", "CN=ca", start, start + timedelta(days=days), "00", profile, b"")

    window = profile_window(load_profiles(None))
    assert window(record("personal", 365)) == timedelta(days=load_profiles(None)["personal"].renew_before_days)
    assert window(record("gone", 365)) == timedelta(days=30)
    assert window(record("gone", 9)) == timedelta(days=3)
