"""The enrollment journal under SIGKILL: whatever step the process dies after, running the same
command again finishes the work, and the CA never issues twice for one enrollment.

TOKENISSUE_FAILPOINT=STEP makes the CLI SIGKILL itself right after STEP (tokenissue/cli/
lifecycle.py), exactly as a power cut would; the tokens are real SoftHSM tokens on tmpfs.
"""

from __future__ import annotations

import json
import signal
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from support.lifecycle import TokenCA, make_token_ca
from support.softhsm import SoftHSM

STEPS = ["started", "key-generated", "csr", "issued", "issued-recorded", "written", "done"]
SUBJECT = "CN=Crash Test,O=tokenissue tests,C=KR"


@pytest.fixture
def token_ca(softhsm: SoftHSM) -> TokenCA:
    return make_token_ca(softhsm)


def _crash(ca: TokenCA, args: list[str], step: str) -> None:
    proc = ca.run(*args, env={"TOKENISSUE_FAILPOINT": step})
    assert proc.returncode == -signal.SIGKILL, (step, proc.returncode, proc.stdout, proc.stderr)
    assert proc.stdout == "", "a killed enrollment must not have reported success"


def _assert_enrolled_once(ca: TokenCA, label: str | None) -> dict[str, Any]:
    """One certificate at the CA, one key on the token with its certificate, status valid."""
    issued = [r for r in ca.issued() if r["subject"] == SUBJECT]
    assert len(issued) == 1, f"the CA issued {len(issued)} certificates for one enrollment: {issued}"
    rec = issued[0]
    assert rec["status"] == "valid"

    keys = ca.private_keys()
    mine = [k for k in keys if label is None or k["label"] == label]
    assert len(keys) == 1, f"expected exactly one private key on the token, found {keys}"
    assert len(mine) == 1
    key = mine[0]
    assert key["has_certificate"] is True
    assert key["id"] == rec["key_id"]

    # The certificate is on the token under the key's CKA_ID, once (status lists every
    # end-entity certificate object whose key is on the token).
    st = ca.status()
    assert [(s["key_id"], s["serial"], s["state"]) for s in st] == [(key["id"], rec["serial"], "valid")]
    return {"key": key, "record": rec}


def _nothing_to_resume(ca: TokenCA) -> None:
    proc = ca.run("enroll", "--resume")
    assert proc.returncode == 0, proc.stderr
    assert "nothing to do" in proc.stdout


@pytest.mark.parametrize("step", STEPS)
def test_crash_then_same_command_finishes_once(token_ca: TokenCA, step: str) -> None:
    args = [*token_ca.enroll_args(SUBJECT, "--label", "crash"), "--json"]
    _crash(token_ca, args, step)

    again = token_ca.run(*args)
    assert again.returncode == 0, (step, again.stdout, again.stderr)
    out = json.loads(again.stdout)
    assert out["label"] == "crash"
    assert out["resumed"] is True
    # Killed after the entry was closed, the run had finished: the same command reports the
    # certificate it made instead of enrolling again.
    assert out["already_done"] is (step == "done")

    state = _assert_enrolled_once(token_ca, "crash")
    assert out["serial"] == state["record"]["serial"]
    assert out["key_id"] == state["key"]["id"]
    _nothing_to_resume(token_ca)


def test_rerun_after_crash_at_done_without_label_does_not_enroll_twice(token_ca: TokenCA) -> None:
    args = token_ca.enroll_args(SUBJECT)
    _crash(token_ca, args, "done")
    again = token_ca.run(*args)
    assert again.returncode == 0, again.stderr
    _assert_enrolled_once(token_ca, None)


@pytest.mark.parametrize("step", ["key-generated", "issued"])
def test_crash_then_resume_alone_finishes(token_ca: TokenCA, step: str) -> None:
    # No --label: the generated label is journaled before the key is made, so the key made
    # just before the crash is adopted, not orphaned next to a second one.
    args = token_ca.enroll_args(SUBJECT)
    _crash(token_ca, args, step)

    proc = token_ca.run("enroll", "--resume", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["resumed"] is True
    assert out["subject"] == SUBJECT
    state = _assert_enrolled_once(token_ca, out["label"])
    assert out["serial"] == state["record"]["serial"]
    _nothing_to_resume(token_ca)


def _rewrite_open_entry(ca: TokenCA, state: str, keep: tuple[str, ...]) -> None:
    """Turn the open journal entry into one an older version wrote: ``state``, with only the
    data keys in ``keep``."""
    db = sqlite3.connect(Path(ca.hsm.env["TOKENISSUE_STATE_DIR"]) / "state.db")
    try:
        [(jid, data)] = db.execute("SELECT id, data FROM journal WHERE finished = 0").fetchall()
        old = {k: v for k, v in json.loads(data).items() if k in keep}
        with db:
            db.execute("UPDATE journal SET state = ?, data = ? WHERE id = ?", (state, json.dumps(old), jid))
    finally:
        db.close()


@pytest.mark.parametrize(
    ("crash_at", "old_state", "old_keys"),
    [
        # Versions before 2026-12 journaled the key in a step of its own ("key") before the CSR...
        ("csr", "key", ("label", "generated", "key_id")),
        # ...and the label in a write after "started", so an entry could be cut short without it.
        ("started", "started", ()),
    ],
)
def test_entries_left_by_an_older_version_resume(token_ca: TokenCA, crash_at: str, old_state: str, old_keys: tuple[str, ...]) -> None:
    args = [*token_ca.enroll_args(SUBJECT, "--label", "legacy"), "--json"]
    _crash(token_ca, args, crash_at)
    _rewrite_open_entry(token_ca, old_state, old_keys)

    again = token_ca.run(*args)
    assert again.returncode == 0, (again.stdout, again.stderr)
    out = json.loads(again.stdout)
    assert out["resumed"] is True
    state = _assert_enrolled_once(token_ca, "legacy")
    assert out["key_id"] == state["key"]["id"]
    _nothing_to_resume(token_ca)


def test_refusal_before_issuance_leaves_nothing(token_ca: TokenCA) -> None:
    # tls-server needs a dns or ip SAN: the CA refuses after the key was generated and the CSR
    # signed, so the enrollment must delete that key and close its journal entry.
    proc = token_ca.run(*token_ca.enroll_args("CN=server.example", "--profile", "tls-server", "--label", "srv"))
    assert proc.returncode == 6, proc.stdout + proc.stderr
    assert "requires at least one SAN" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert token_ca.private_keys() == []
    assert token_ca.issued() == []
    assert [e["action"] for e in token_ca.audit()] == ["ca-init"]
    _nothing_to_resume(token_ca)


def test_wrong_ca_pin_keeps_the_enrollment_for_a_rerun(token_ca: TokenCA) -> None:
    """Found by review: a refused CA PIN used to finalise the PKCS#11 module under the holder's
    open session, which then failed with SessionHandleInvalid (exit 4). Now the CA token is
    logged in to before the holder's key is made: exit 5 naming the CA token, no key and no
    journal entry, and the same command with the right PIN enrolls once."""
    args = [*token_ca.enroll_args(SUBJECT, "--label", "capin"), "--json"]
    bad = token_ca.run(*args, env={"TOKENISSUE_CA_PIN": "000000"})
    assert bad.returncode == 5, (bad.stdout, bad.stderr)
    assert "token 'ca'" in bad.stderr
    assert "Traceback" not in bad.stderr and "Exception ignored" not in bad.stderr
    assert token_ca.private_keys() == []
    good = token_ca.run(*args)
    assert good.returncode == 0, good.stderr
    assert json.loads(good.stdout)["resumed"] is False
    _assert_enrolled_once(token_ca, "capin")



def test_a_relabel_cut_short_is_finished_by_the_resume(token_ca: TokenCA) -> None:
    """renew --rekey: the new key takes the old one's label once the old key is gone. A kill
    inside that relabel (here: after the private key was renamed, before its public key and
    certificate were, made with python-pkcs11 as the kill leaves it) used to be left so: the
    resume looked at the private key's label only. Now all three end with the label."""
    import subprocess
    import sys

    old = token_ca.enroll(SUBJECT, "--label", "mine")
    _crash(token_ca, ["renew", "--token", "test", "--key", "mine", "--rekey", "--ca", str(token_ca.dir)], "written")
    resumed = token_ca.run("enroll", "--resume")  # retires the old key, then relabels the new one
    assert resumed.returncode == 0, resumed.stderr
    [key] = token_ca.private_keys()
    assert key["label"] == "mine" and key["id"] != old["key_id"]
    # The state a kill inside the relabel leaves: public key and certificate still on the
    # interim label, private key renamed. Then the journal entry is re-opened at "written".
    code = (
        "import sys, os, pkcs11; from pkcs11 import Attribute, ObjectClass as C\n"
        "lib = pkcs11.lib(sys.argv[1]); tok = lib.get_token(token_label='test')\n"
        "with tok.open(rw=True, user_pin=sys.argv[2]) as s:\n"
        "    for cls in (C.PUBLIC_KEY, C.CERTIFICATE):\n"
        "        for o in s.get_objects({Attribute.CLASS: cls, Attribute.ID: bytes.fromhex(sys.argv[3])}):\n"
        "            o[Attribute.LABEL] = 'interim'\n"
    )
    from support.cli import USER_PIN
    from support.softhsm import SOFTHSM_MODULE

    subprocess.run([sys.executable, "-c", code, SOFTHSM_MODULE, USER_PIN, key["id"]], env=token_ca.hsm.env, check=True)
    db = Path(token_ca.hsm.env["TOKENISSUE_STATE_DIR"]) / "state.db"
    with sqlite3.connect(db) as conn:
        (jid,) = conn.execute("SELECT id FROM journal WHERE state = 'done' ORDER BY updated_at DESC LIMIT 1").fetchone()
        conn.execute("UPDATE journal SET state = 'written', finished = 0 WHERE id = ?", (jid,))
    token_ca.run("enroll", "--resume", check=True)
    labels = json.loads(token_ca.run("cert", "list", "--token", "test", "--json", check=True).stdout)
    assert {c["label"] for c in labels if not c.get("ca")} == {"mine"}
    out = subprocess.run(["pkcs11-tool", "--module", SOFTHSM_MODULE, "--token-label", "test", "--login", "--pin", USER_PIN, "-O"],
                         capture_output=True, text=True, env=token_ca.hsm.env, check=True).stdout  # fmt: skip
    assert "interim" not in out, out


def test_a_public_key_left_by_a_kill_inside_key_generation_is_removed_on_resume(token_ca: TokenCA) -> None:
    """Killed after the journal named the key, inside key generation: the public half stored,
    the private never (made here with python-pkcs11, as the kill leaves it). The resume removes
    that half before generating, instead of leaving a public key no private key goes with."""
    import subprocess
    import sys

    from support.cli import USER_PIN
    from support.softhsm import SOFTHSM_MODULE

    _crash(token_ca, [*token_ca.enroll_args(SUBJECT, "--label", "halfway")], "started")
    code = (
        "import sys, pkcs11; from pkcs11 import Attribute, KeyType\n"
        "tok = pkcs11.lib(sys.argv[1]).get_token(token_label='test')\n"
        "with tok.open(rw=True, user_pin=sys.argv[2]) as s:\n"
        "    pub, priv = s.generate_keypair(KeyType.EC, store=True, label='halfway', id=b'\\x99',\n"
        "        public_template={Attribute.EC_PARAMS: bytes.fromhex('06082a8648ce3d030107')})\n"
        "    priv.destroy()\n"
    )
    subprocess.run([sys.executable, "-c", code, SOFTHSM_MODULE, USER_PIN], env=token_ca.hsm.env, check=True)
    token_ca.run("enroll", "--resume", check=True)
    done = _assert_enrolled_once(token_ca, "halfway")
    out = subprocess.run(["pkcs11-tool", "--module", SOFTHSM_MODULE, "--token-label", "test", "--login", "--pin", USER_PIN,
                          "-O", "--type", "pubkey"], capture_output=True, text=True, env=token_ca.hsm.env, check=True).stdout  # fmt: skip
    assert out.count("Public Key Object") == 1 and done["key"]["id"] in out.replace(":", "").lower(), out
