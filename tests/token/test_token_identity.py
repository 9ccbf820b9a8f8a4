"""Token identity where serials do not tell tokens apart, on real tokens through the real CLI.

Every tpm2-pkcs11 token has serial 0000000000000000. Two tokens, 'alice' and 'bob', in ONE
tpm2-pkcs11 store on the software TPM (and its always-present uninitialised slot), with the CA
on SoftHSM:

* naming: a serial (or a URI that only gives the serial) is ambiguous, and the refusal says how
  to name one; the label or the identity URI selects exactly one; the uninitialised slot is
  neither listed nor counted nor chosen;
* records: the journal, the holder's and the CA's inventories hold two different identities
  (RFC 7512 URIs with label, manufacturer, model and serial);
* a lost token: 'revoke --token-serial 0000000000000000' is refused listing both URIs; the
  command the CLI prints for the lost one (quoted for the shell) revokes only its certificates
  and ends its unfinished enrollment; a shorter URI naming the other token finds it;
* batch: a CSV naming both tokens by label enrolls each once (--jobs runs one row at a time on
  this module), a rerun nothing again.

And SoftHSM, whose serials are unique, is unchanged: a token's identity is its serial.
"""

from __future__ import annotations

import csv
import json
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tokenissue.inventory import Inventory

from support.cli import USER_PIN
from support.lifecycle import add_token_fast, make_token_ca
from support.softhsm import SOFTHSM_MODULE, SoftHSM, make_softhsm
from support.tpm import SoftwareTPM, TPMTokens, make_tpm_tokens

NO_SERIAL = "0000000000000000"
CA_ENV = {"TOKENISSUE_MODULE": SOFTHSM_MODULE, "TOKENISSUE_CA_PIN": USER_PIN}


def _json(proc: subprocess.CompletedProcess[str]) -> Any:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return json.loads(proc.stdout)


def _sentence(proc: subprocess.CompletedProcess[str], code: int) -> str:
    """The one error sentence of a command that must have failed with ``code``."""
    assert proc.returncode == code, f"exit {proc.returncode}, not {code}\n{proc.stdout}\n{proc.stderr}"
    text = " ".join(proc.stderr.split())  # rich wraps long sentences at $COLUMNS
    assert text.startswith("Error: ") and text.count("Error:") == 1 and "Traceback" not in text, proc.stderr
    return text


def _identity(label: str, t: dict[str, Any]) -> str:
    """The identity URI a token with these 'tokens --json' fields must be recorded under."""
    return (f"pkcs11:token={quote(label, safe='')};manufacturer={quote(t['manufacturer'], safe='')};"
            f"model={quote(t['model'], safe='')};serial={t['serial']}")  # fmt: skip


@dataclass
class Store:
    """Tokens 'alice' and 'bob' in one tpm2-pkcs11 store; SoftHSM with token 'ca' for the CA."""

    tpm: TPMTokens
    softhsm: SoftHSM

    @property
    def ca_dir(self) -> Path:
        return self.tpm.root / "ca"

    def run(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return self.tpm.run(*args, env={"TOKENISSUE_CA_PIN": USER_PIN, **(env or {})})

    def json(self, *args: str) -> Any:
        return _json(self.run(*args, "--json"))

    def make_ca(self) -> None:
        proc = self.tpm.run("ca", "init", "--ca-dir", str(self.ca_dir), "--token", "ca", "--subject", "CN=Identity CA",
                            "--type", "ec-p256", env=CA_ENV)  # fmt: skip
        assert proc.returncode == 0, proc.stderr

    def enroll(self, token: str, subject: str, *extra: str) -> Any:
        return self.json("enroll", "--token", token, "--ca", str(self.ca_dir), "--subject", subject, *extra)

    def ca_records(self) -> dict[str, Any]:
        """The CA's inventory by serial (hex), read in-process: no token is involved."""
        with Inventory.open(self.ca_dir / "ca.db") as inv:
            return {format(r.serial, "x"): r for r in inv.list_certificates()}

    def holder_records(self) -> dict[str, Any]:
        with Inventory.open(self.tpm.root / "state" / "state.db") as inv:
            return {format(r.serial, "x"): r for r in inv.list_certificates()}

    def identities(self) -> dict[str, str]:
        """label -> identity of the tokens present, as 'tokens --json' gives them."""
        return {t["label"]: t["identity"] for t in self.json("tokens")}


@pytest.fixture
def store(software_tpm: SoftwareTPM, hsm_root: Path) -> Store:
    if not Path(SOFTHSM_MODULE).exists():
        pytest.skip("SoftHSM2 is not installed (make deps)")
    softhsm = make_softhsm(hsm_root / "softhsm")
    add_token_fast(softhsm, "ca")
    software_tpm.clear_lockout()
    tpm = make_tpm_tokens(hsm_root / "tpm", software_tpm, with_softhsm=softhsm)
    tpm.add_token("alice")
    tpm.add_token("bob")
    return Store(tpm=tpm, softhsm=softhsm)


def test_tokens_sharing_a_serial_are_listed_and_named_apart(store: Store) -> None:
    """Both tokens listed (not the uninitialised slot), serial 0000000000000000 each, with two
    different identity URIs. A selector that only gives the serial matches 2 tokens (not 3: the
    uninitialised slot is not counted) and is refused in one sentence saying how to name one;
    the label and the identity URI each select exactly one token."""
    listed = store.json("tokens")
    assert [(t["label"], t["serial"], t["initialized"]) for t in listed] == [
        ("alice", NO_SERIAL, True), ("bob", NO_SERIAL, True),
    ]  # fmt: skip
    ids = {t["label"]: t["identity"] for t in listed}
    assert ids == {label: _identity(label, t) for label, t in zip(("alice", "bob"), listed, strict=True)}
    assert ids["alice"] != ids["bob"] and {t["uri"] for t in listed} == set(ids.values())
    everything = store.json("tokens", "--all")
    assert sorted((t["label"], t["initialized"]) for t in everything) == [("", False), ("alice", True), ("bob", True)]

    for selector in (f"serial:{NO_SERIAL}", f"pkcs11:serial={NO_SERIAL}"):
        sentence = _sentence(store.run("keys", "generate", "--token", selector, "--type", "ec-p256", "--label", "x"), 4)
        assert "2 tokens match" in sentence and "serials do not tell them apart" in sentence, sentence
        assert "name one by label" in sentence and "pkcs11:token=alice" in sentence, sentence

    made = store.run("keys", "generate", "--token", ids["alice"], "--type", "ec-p256", "--label", "by-uri")
    assert made.returncode == 0, made.stderr
    assert [k["label"] for k in store.json("keys", "list", "--token", "alice")] == ["by-uri"]
    assert store.json("keys", "list", "--token", "bob") == []


def test_records_lost_token_revoke_and_batch_keep_the_two_tokens_apart(store: Store, tmp_path: Path) -> None:
    """Batch, enroll, journal, inventories and lost-token revocation with two tokens of one serial."""
    store.make_ca()
    ids = store.identities()
    ca = str(store.ca_dir)

    # A batch naming both by label enrolls each once; the same file again enrolls nothing.
    tray = tmp_path / "tray.csv"
    with tray.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["token", "subject", "profile", "key_type"])
        w.writerow(["alice", "CN=Alice,O=Example Bank,C=KR", "", ""])
        w.writerow(["bob", "CN=Bob,O=Example Bank,C=KR", "", "ec-p384"])
    # --jobs 2 is run one row at a time: tpm2-pkcs11 keeps both tokens in one SQLite store that
    # takes one writer at a time ("database is locked" otherwise, 1 run in ~17 measured).
    proc = store.run("batch", "enroll", str(tray), "--ca", ca, "--json", "--jobs", "2")
    assert "one after the other" in " ".join(proc.stderr.split()), proc.stderr
    first = _json(proc)
    assert [(r["token"], r["status"], r["token_serial"]) for r in first] == [
        ("alice", "enrolled", ids["alice"]), ("bob", "enrolled", ids["bob"]),
    ]  # fmt: skip
    again = _json(store.run("batch", "enroll", str(tray), "--ca", ca, "--json"))
    assert [(r["status"], r["serial"]) for r in again] == [("already-done", r["serial"]) for r in first]
    for label, row in zip(("alice", "bob"), first, strict=True):
        keys = store.json("keys", "list", "--token", label)
        assert [(k["id"], k["has_certificate"]) for k in keys] == [(row["key_id"], True)], label

    # One more certificate for alice, and an enrollment of hers a crash leaves open.
    second = store.enroll("alice", "CN=Alice Two,C=KR")
    crashed = store.run("enroll", "--token", "alice", "--ca", ca, "--subject", "CN=Alice Crashed,C=KR",
                        env={"TOKENISSUE_FAILPOINT": "issued-recorded"})  # fmt: skip
    assert crashed.returncode == -9, crashed.stderr
    [entry] = store.json("journal", "list")
    assert (entry["token_serial"], entry["token_present"]) == (ids["alice"], True)
    alice = {first[0]["serial"], second["serial"], entry["serial"]}
    bob = {first[1]["serial"]}
    at_ca = store.ca_records()
    assert {s: r.token_serial for s, r in at_ca.items()} == {
        **dict.fromkeys(alice, ids["alice"]),
        **dict.fromkeys(bob, ids["bob"]),
    }
    held = store.holder_records()
    assert {r.token_serial for r in held.values()} == {ids["alice"], ids["bob"]}

    # The bare serial names both: refused, with both URIs to choose from; nothing revoked.
    sentence = _sentence(store.run("revoke", "--token-serial", NO_SERIAL, "--ca", ca), 4)
    assert f"'{ids['alice']}'" in sentence and f"'{ids['bob']}'" in sentence, sentence
    assert {r.status.value for r in store.ca_records().values()} == {"valid"}

    # Alice's token is removed from the store (bob stays): the CLI prints the command for her.
    store.tpm.tpm.tool("tpm2_ptool", "rmtoken", "--label", "alice", "--path", str(store.tpm.store))
    assert list(store.identities()) == ["bob"]
    [entry] = store.json("journal", "list")
    assert (entry["token_serial"], entry["token_present"]) == (ids["alice"], False)
    resumed = store.run("enroll", "--resume")
    assert resumed.returncode == 8, resumed.stdout + resumed.stderr
    [line] = [ln for ln in resumed.stderr.splitlines() if "tokenissue revoke" in ln]
    command = line[line.index("tokenissue revoke") :]
    # Pasted into a shell as printed (a URI holds ';'), it must be this one command.
    shell = subprocess.run(["bash", "-c", "printf '%s\\n' " + command.removeprefix("tokenissue ")],
                           capture_output=True, text=True, timeout=10, check=False)  # fmt: skip
    argv = shell.stdout.splitlines()
    assert argv == ["revoke", "--token-serial", ids["alice"], "--ca", ca], (line, shell.stderr)
    proc = store.run(*argv, "--json")
    assert {r["serial"] for r in _json(proc)} == alice
    assert entry["journal_id"] in proc.stderr, "the lost token's unfinished enrollment is ended"
    with Inventory.open(store.tpm.root / "state" / "state.db") as db:
        assert db.journal_open("enroll") == []
    status = {s: r.status.value for s, r in store.ca_records().items()}
    assert status == {**dict.fromkeys(alice, "revoked"), **dict.fromkeys(bob, "valid")}

    # A shorter URI (label and serial only) names bob's recorded identity, not nothing.
    short = store.run("revoke", "--token-serial", f"pkcs11:token=bob;serial={NO_SERIAL}", "--ca", ca, "--json")
    assert [r["serial"] for r in _json(short)] == [first[1]["serial"]]


def test_softhsm_identity_is_the_serial(softhsm: SoftHSM) -> None:
    """SoftHSM serials are unique: the identity is the serial, the URI is label and serial as
    before, the CA records its token as serial:XXXX, enrollments under the bare serial, and a
    lost token is revoked by it."""
    ca = make_token_ca(softhsm)
    tokens = {t["label"]: t for t in _json(softhsm.run("tokens", "--json"))}
    for label, t in tokens.items():
        assert t["identity"] == t["serial"] and len(t["serial"]) == 16
        assert t["uri"] == f"pkcs11:token={label};serial={t['serial']}"
    assert tomllib.loads((ca.dir / "ca.toml").read_text())["ca"]["token"] == f"serial:{tokens['ca']['serial']}"
    out = ca.enroll("CN=Soft Serial,C=KR")
    assert out["token_serial"] == tokens["test"]["serial"]
    revoked = ca.json("revoke", "--token-serial", tokens["test"]["serial"], "--ca", str(ca.dir))
    assert [r["serial"] for r in revoked] == [out["serial"]]


def test_reinitialising_a_tpm_token_is_refused_cleanly_and_erases_nothing(store: Store) -> None:
    """'token init --token bob' where tokens share serial 0000000000000000: without a terminal
    the question is refused naming --yes; with --yes, tpm2-pkcs11 cannot re-initialise a token
    in place (CKR_ARGUMENTS_BAD), which is said in one sentence with the way out, and neither
    token lost anything. (The child now picks the token by serial AND label, and refuses when
    several match: it used to take the first token with the serial.)"""
    from support.cli import SO_PIN

    for label in ("alice", "bob"):
        assert store.run("keys", "generate", "--token", label, "--label", f"{label}-key").returncode == 0
    asked = store.run("token", "init", "--label", "bob2", "--token", "bob", env={"TOKENISSUE_SO_PIN": SO_PIN})
    assert asked.returncode == 2 and "--yes" in asked.stderr, asked.stderr
    refused = store.run("token", "init", "--label", "bob2", "--token", "bob", "--yes", env={"TOKENISSUE_SO_PIN": SO_PIN})
    said = " ".join(refused.stderr.split())
    assert refused.returncode == 4 and "cannot re-initialise a token in place" in said and "rmtoken" in said, said
    assert {t["label"] for t in store.json("tokens")} == {"alice", "bob"}
    for label in ("alice", "bob"):
        assert [k["label"] for k in store.json("keys", "list", "--token", label)] == [f"{label}-key"]
