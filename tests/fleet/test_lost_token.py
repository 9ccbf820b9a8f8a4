"""A token gone for good in the middle of an enrollment: its SoftHSM directory deleted after the
CA issued and before the certificate reached it (a token lost, broken or re-initialised).

What must hold, checked from the CA's inventory, the holder's records and the journal:

* ``enroll --resume`` finishes the other unfinished enrollments and reports the missing token
  with what to do (exit 8), instead of stopping at it;
* ``journal list`` shows the entry, that its token is absent, and the certificate issued for it;
* ``journal abandon`` refuses while a token is present (that would leave a key without its
  certificate), and ends the entry otherwise, keeping the issued certificate in the holder's
  records so it is never lost;
* ``revoke --token-serial`` revokes the certificate at the CA and ends the entry in one go;
* after either, nothing is left for ``enroll --resume``.
"""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path
from typing import Any

import pytest

from tokenissue.inventory import Inventory

from support.lifecycle import TokenCA, add_token_fast, make_token_ca, token_dir
from support.softhsm import SoftHSM

pytestmark = pytest.mark.slow


def _crash(ca: TokenCA, token: str, subject: str, step: str) -> None:
    proc = ca.run(*ca.enroll_args(subject, token=token), env={"TOKENISSUE_FAILPOINT": step})
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stderr)


def _serial_of(ca: TokenCA, token: str) -> str:
    tokens: list[dict[str, Any]] = ca.json("tokens")
    return next(str(t["serial"]) for t in tokens if t["label"] == token)


def _holder_records(ca: TokenCA) -> list[Any]:
    with Inventory.open(Path(ca.hsm.env["TOKENISSUE_STATE_DIR"]) / "state.db") as db:
        return db.list_certificates()


@pytest.fixture
def lost(softhsm: SoftHSM) -> tuple[TokenCA, str, str]:
    """Two enrollments cut short: on 'gone' after the certificate was journaled, on 'here' after
    the CSR; then 'gone' is deleted. Returns (ca, serial of gone, journal ID of gone's entry)."""
    ca = make_token_ca(softhsm)
    for label in ("gone", "here"):
        add_token_fast(softhsm, label)
    gone_serial = _serial_of(ca, "gone")
    _crash(ca, "gone", "CN=Lost Holder,O=Example Bank,C=KR", "issued-recorded")
    _crash(ca, "here", "CN=Present Holder,O=Example Bank,C=KR", "csr")
    shutil.rmtree(token_dir(softhsm, "gone"))
    entries = ca.json("journal", "list")
    [gone] = [e for e in entries if e["token_serial"] == gone_serial]
    return ca, gone_serial, gone["journal_id"]


def test_resume_finishes_the_others_and_lists_the_lost_one(lost: tuple[TokenCA, str, str]) -> None:
    ca, gone_serial, gone_id = lost
    entries = ca.json("journal", "list")
    assert {(e["token_serial"] == gone_serial, e["token_present"], e["step"]) for e in entries} == {
        (True, False, "issued"),
        (False, True, "csr"),
    }
    [here] = [e for e in entries if e["token_serial"] != gone_serial]
    refused = ca.run("journal", "abandon", here["journal_id"])
    assert refused.returncode == 2 and "is present" in refused.stderr, refused.stderr

    resumed = ca.run("enroll", "--resume")
    assert resumed.returncode == 8, resumed.stdout + resumed.stderr
    assert "Resumed and finished: CN=Present Holder" in resumed.stdout
    assert gone_id in resumed.stderr and f"tokenissue revoke --token-serial {gone_serial} --ca {ca.dir}" in resumed.stderr
    [left] = ca.json("journal", "list")
    assert (left["journal_id"], left["token_present"]) == (gone_id, False)
    issued = {r.subject: r for r in ca.records()}
    assert format(issued["CN=Lost Holder,O=Example Bank,C=KR"].serial, "x") == left["serial"]


def test_abandon_ends_the_entry_and_keeps_the_certificate_on_record(lost: tuple[TokenCA, str, str]) -> None:
    ca, gone_serial, gone_id = lost
    proc = ca.run("journal", "abandon", gone_id)
    assert proc.returncode == 0, proc.stderr
    lost_cert = next(r for r in ca.records() if r.subject.startswith("CN=Lost Holder"))
    assert f"certificate {lost_cert.serial:x}" in proc.stdout
    assert f"tokenissue revoke --token-serial {gone_serial} --ca {ca.dir}" in proc.stdout
    [kept] = [r for r in _holder_records(ca) if r.serial == lost_cert.serial]
    assert (kept.token_serial, kept.status.value, kept.request_id) == (gone_serial, "valid", gone_id)
    again = ca.run("journal", "abandon", gone_id, "--json")  # a repeat changes nothing
    assert again.returncode == 0 and json.loads(again.stdout)["state"] == "abandoned", again.stderr
    assert [e["token_serial"] for e in ca.json("journal", "list")] != [gone_serial]
    assert ca.run("journal", "abandon", "no-such-id").returncode == 2


def test_revoke_by_token_serial_revokes_and_ends_the_entry(lost: tuple[TokenCA, str, str]) -> None:
    ca, gone_serial, gone_id = lost
    proc = ca.run("revoke", "--token-serial", gone_serial, "--ca", str(ca.dir), "--json")
    assert proc.returncode == 0, proc.stderr
    [revoked] = json.loads(proc.stdout)
    at_ca = {r.serial: r for r in ca.records()}[int(revoked["serial"], 16)]
    assert (at_ca.subject, at_ca.status.value) == ("CN=Lost Holder,O=Example Bank,C=KR", "revoked")
    assert at_ca.revocation_reason is not None and at_ca.revocation_reason.value == "key-compromise"
    assert gone_id in proc.stderr
    [held] = [r for r in _holder_records(ca) if r.serial == at_ca.serial]
    assert held.status.value == "revoked"
    assert all(e["token_serial"] != gone_serial for e in ca.json("journal", "list"))
    # The other entry (token present) is untouched and still finishes.
    resumed = ca.run("enroll", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert ca.run("enroll", "--resume").stdout.startswith("No unfinished enrollment")


def test_a_lost_token_named_by_label_or_a_wrong_serial_is_refused_with_a_hint(lost: tuple[TokenCA, str, str]) -> None:
    """'revoke --token-serial' (holder) and 'ca revoke --token-serial' (CA) with a label or a
    serial nothing was recorded for: exit 6 and a sentence saying what the option takes, not
    exit 0 with 'Nothing was revoked'. Nothing is revoked, the journal entry stays open."""
    ca, _, gone_id = lost
    for args in (("revoke", "--token-serial", "gone", "--ca", str(ca.dir)),
                 ("revoke", "--token-serial", "deadbeefdeadbeef", "--ca", str(ca.dir)),
                 ("ca", "revoke", "--ca-dir", str(ca.dir), "--token-serial", "gone")):  # fmt: skip
        proc = ca.run(*args)
        assert proc.returncode == 6, (args, proc.returncode, proc.stdout, proc.stderr)
        said = " ".join(proc.stderr.split())
        assert "No certificate is recorded for token" in said and "not its label" in said, said
    assert all(r["status"] == "valid" for r in ca.json("ca", "list", "--ca-dir", str(ca.dir)))
    assert gone_id in {e["journal_id"] for e in ca.json("journal", "list")}


def test_ca_revoke_of_a_lost_token_is_key_compromise_and_takes_rfc_reason_names(lost: tuple[TokenCA, str, str]) -> None:
    """A lost token is key-compromise on the CA's side too (was 'unspecified'); --reason takes
    RFC 5280's and openssl's spelling (cessationOfOperation) as well as the CLI's."""
    ca, gone_serial, _ = lost
    revoked = ca.json("ca", "revoke", "--ca-dir", str(ca.dir), "--token-serial", gone_serial)
    assert revoked and {r["reason"] for r in revoked} == {"key-compromise"}
    others = [r for r in ca.json("ca", "list", "--ca-dir", str(ca.dir)) if r["status"] == "valid"]
    if others:
        one = ca.json("ca", "revoke", "--ca-dir", str(ca.dir), others[0]["serial"], "--reason", "cessationOfOperation")
        assert [r["reason"] for r in one] == ["cessation-of-operation"]
    bad = ca.run("ca", "revoke", "--ca-dir", str(ca.dir), "00", "--reason", "stolen")
    assert bad.returncode == 2 and "is not a revocation reason" in bad.stderr, bad.stderr


def test_ca_revoke_takes_serials_as_users_paste_them(lost: tuple[TokenCA, str, str]) -> None:
    """openssl's form (upper case, a leading zero, colons), 0x..., and a unique prefix all name
    the certificate 'ca list' shows; a prefix of several is refused (exit 2)."""
    ca, _, _ = lost
    [rec] = [r for r in ca.json("ca", "list", "--ca-dir", str(ca.dir)) if r["status"] == "valid"][:1]
    serial = rec["serial"]
    pasted = ":".join(f"{int(serial, 16):X}".rjust(len(serial) + len(serial) % 2, "0")[i : i + 2]
                      for i in range(0, len(serial) + len(serial) % 2, 2))  # fmt: skip
    for form in (f"0{serial.upper()}", pasted, f"0x{serial}"):
        proc = ca.run("ca", "revoke", "--ca-dir", str(ca.dir), form, "--reason", "superseded", "--json")
        assert proc.returncode == 0, (form, proc.stderr)
    others = [r for r in ca.json("ca", "list", "--ca-dir", str(ca.dir)) if r["status"] == "valid"]
    if others:
        one = ca.json("ca", "revoke", "--ca-dir", str(ca.dir), others[0]["serial"][:10], "--reason", "superseded")
        assert one[0]["serial"] == others[0]["serial"]
    assert {r["status"] for r in ca.json("ca", "list", "--ca-dir", str(ca.dir)) if r["serial"] == serial} == {"revoked"}


def test_a_token_reinitialised_in_place_leaves_an_entry_that_can_be_ended(softhsm: SoftHSM) -> None:
    """The token was re-initialised (same serial, same label) after the CA issued: it is
    present, but the enrollment's key is gone. 'enroll --resume' says so and names 'journal
    abandon', which accepts it (it used to refuse while the token was present, and the resume
    failed on every run: an entry nothing could finish or end)."""
    from support.cli import SO_PIN, USER_PIN

    ca = make_token_ca(softhsm)
    add_token_fast(softhsm, "again")
    serial = _serial_of(ca, "again")
    _crash(ca, "again", "CN=Reinitialised Holder,O=Example Bank,C=KR", "issued-recorded")
    ca.run("token", "init", "--label", "again", "--token", "again", "--yes",
           env={"TOKENISSUE_SO_PIN": SO_PIN, "TOKENISSUE_PIN": USER_PIN}, check=True)  # fmt: skip
    [entry] = ca.json("journal", "list")
    assert entry["token_present"] is True and entry["token_serial"] == _serial_of(ca, "again") == serial
    resumed = ca.run("enroll", "--resume")
    said = " ".join(resumed.stderr.split())
    assert resumed.returncode == 8 and "no longer on the token" in said and f"journal abandon {entry['journal_id']}" in said, said
    ended = ca.run("journal", "abandon", entry["journal_id"])
    assert ended.returncode == 0, ended.stderr
    assert ca.json("journal", "list") == []
    assert ca.run("enroll", "--resume").returncode == 0
