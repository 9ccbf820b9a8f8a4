"""The whole CLI on tpm2-pkcs11 (a software TPM), the second PKCS#11 implementation.

Real tokens only, through the real CLI in subprocesses: the holder's token on the TPM and the CA
on SoftHSM, two modules in one process (``tpm_with_softhsm``); a CA whose key is on the TPM;
wrong PINs against the TPM's dictionary-attack lockout (``locking_tpm``, a TPM of its own); and
what the module prints on stderr. What each test proves is in its docstring; the facts about
the token are in /work/shared/TOKENS.md.

Nothing here uses the TPM module in the test process: a test that stops a TPM of its own
(``locking_tpm``) leaves the in-process module unable to reach any other TPM afterwards, so
in-process TPM tests belong in files that run before such tests.
"""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from conftest import SOFTHSM_MODULE, USER_PIN, SoftHSM, SoftwareCA
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from lifecycle_support import add_token_fast, openssl
from tpm_support import TPM2_MODULE, TPMTokens

from tokenissue.inventory import Inventory
from tokenissue.models import CertRecord

NO_SERIAL = "0000000000000000"  # every tpm2-pkcs11 token's serial
#: For commands of the CA on SoftHSM: its module, and its PIN (the fixtures' user PIN).
CA_ENV = {"TOKENISSUE_MODULE": SOFTHSM_MODULE, "TOKENISSUE_CA_PIN": USER_PIN}
#: A CA profile that refuses keys the token made able to decrypt (tokenissue/ca/profiles.toml format).
STRICT_PROFILES = """\
[profiles.strict]
description = "Personal certificates for sign-only keys."
days = 365
key_usage = ["digital_signature"]
extended_key_usage = ["client_auth"]
allowed_key_types = ["ec-p256", "ec-p384", "rsa-2048", "rsa-3072"]
subject_fields = ["CN", "O", "C"]
require_sign_only = true
"""
NOTE = re.compile(r"\(The PKCS#11 module also wrote (\d+) line\(s\) of its own to stderr; --debug shows them\.\)")
FORCED = "the token made this key able to decrypt as well as sign"


# -- helpers ----------------------------------------------------------------------------------
def _json(proc: subprocess.CompletedProcess[str]) -> Any:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return json.loads(proc.stdout)


def _failure(proc: subprocess.CompletedProcess[str], code: int) -> tuple[str, int]:
    """(our error sentence, lines the module wrote as the note counts them; 0 without a note) of a
    command that must have failed with ``code``: one 'Error:' sentence, no traceback, and none
    of the module's own lines."""
    assert proc.returncode == code, f"exit {proc.returncode}, not {code}\n{proc.stdout}\n{proc.stderr}"
    text = proc.stderr.strip()
    assert "Traceback" not in text and "ERROR:" not in text, text
    n = 0
    note = NOTE.search(text)
    if note is not None:
        assert text.endswith(note.group(0)), f"the module's note must come last:\n{text}"
        n, text = int(note.group(1)), text[: note.start()].strip()
    sentence = " ".join(text.split())  # rich wraps long sentences at $COLUMNS
    assert sentence.startswith("Error: ") and sentence.count("Error:") == 1, text
    return sentence, n


def _identity(t: dict[str, Any]) -> str:
    """The RFC 7512 identity a tpm2-pkcs11 token must be recorded under, from its 'tokens' entry."""
    return (f"pkcs11:token={quote(t['label'], safe='')};manufacturer={quote(t['manufacturer'], safe='')};"
            f"model={quote(t['model'], safe='')};serial={t['serial']}")  # fmt: skip


@dataclass
class Holder:
    """The holder's tokens on the TPM, and a CA on SoftHSM (or wherever ``ca_env`` points)."""

    tpm: TPMTokens
    ca_dir: Path
    ca_env: dict[str, str]

    def run(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return self.tpm.run(*args, env={"TOKENISSUE_CA_PIN": USER_PIN, **(env or {})})

    def json(self, *args: str, env: dict[str, str] | None = None) -> Any:
        return _json(self.run(*args, "--json", env=env))

    def ca(self, *args: str) -> Any:
        """A CA command (JSON) with the CA's own module."""
        return _json(self.tpm.run(*args, "--json", env=self.ca_env))

    def records(self) -> dict[str, CertRecord]:
        """The CA's inventory by serial (hex), read in-process (SQLite; no token involved)."""
        with Inventory.open(self.ca_dir / "ca.db") as inv:
            return {format(r.serial, "x"): r for r in inv.list_certificates()}

    def crl_serials(self, out: Path) -> set[int]:
        proc = self.tpm.run("ca", "crl", "--ca-dir", str(self.ca_dir), "-o", str(out), env=self.ca_env)
        assert proc.returncode == 0, proc.stderr
        checked = openssl("crl", "-in", str(out), "-noout", "-verify", "-CAfile", str(self.ca_dir / "ca.pem"))
        assert checked.returncode == 0 and "verify OK" in checked.stdout + checked.stderr, checked.stderr
        return {r.serial_number for r in x509.load_pem_x509_crl(out.read_bytes())}

    def journal_entries(self) -> list[tuple[str, bool]]:
        """(state, finished) of every journal entry of the holder, finished or not."""
        db = sqlite3.connect(self.tpm.root / "state" / "state.db")
        try:
            return [
                (str(st), bool(done))
                for st, done in db.execute("SELECT state, finished FROM journal ORDER BY created_at")
            ]
        finally:
            db.close()


def _make_ca(tpm: TPMTokens, ca_dir: Path, token: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return tpm.run("ca", "init", "--ca-dir", str(ca_dir), "--token", token, "--subject",
                   "CN=Test CA,O=tokenissue tests,C=KR", "--type", "ec-p256", env=env)  # fmt: skip


@pytest.fixture
def holder(tpm_with_softhsm: tuple[SoftHSM, TPMTokens]) -> Holder:
    """Token 'test' on the TPM; a CA (key on SoftHSM token 'ca') with the 'strict' profile."""
    _softhsm, tpm = tpm_with_softhsm
    ca_dir = tpm.root / "ca"
    proc = _make_ca(tpm, ca_dir, "ca", CA_ENV)
    assert proc.returncode == 0, proc.stderr
    (ca_dir / "profiles.toml").write_text(STRICT_PROFILES, encoding="utf-8")
    return Holder(tpm=tpm, ca_dir=ca_dir, ca_env=CA_ENV)


# -- keys and CSRs ----------------------------------------------------------------------------
#: (key type, CSR signature hash, public key class, bits): every type the TPM can make.
MADE = [
    ("ec-p256", "sha256", ec.EllipticCurvePublicKey, 256),
    ("ec-p384", "sha384", ec.EllipticCurvePublicKey, 384),
    ("rsa-2048", "sha256", rsa.RSAPublicKey, 2048),
    ("rsa-3072", "sha256", rsa.RSAPublicKey, 3072),
]
#: (key type, the limit the refusal names): types the TPM cannot make.
REFUSED = [("rsa-4096", "RSA keys of 1024-3072 bits only"), ("ed25519", "cannot generate Ed25519 keys")]


def test_keys_generate_and_csr_for_every_key_type(tpm: TPMTokens, tmp_path: Path) -> None:
    """EC P-256, P-384, RSA-2048 and RSA-3072: each key generated (negotiated down to the
    token-usage template, reported as able to decrypt, never extractable, no module noise on
    stderr), then a CSR signed on the token that OpenSSL verifies, with the hash that goes with
    the key, for that very key (its CKA_ID is the SKI of the CSR's public key). RSA-4096 and
    Ed25519: exit 4, one sentence naming the limit, the token never asked (the module wrote
    nothing), and no key written."""
    subject = "CN=홍길동,O=Example Bank,C=KR"
    made = {}
    for key_type, hash_name, public_type, bits in MADE:
        gen = tpm.run("keys", "generate", "--token", "test", "--type", key_type, "--label", key_type, "--json")
        key = _json(gen)
        assert (key["type"], key["size"], key["template"]) == (key_type, bits, "token-usage")
        assert (key["can_decrypt"], key["sign_only"]) == (True, False)
        assert key["born_on_token"] and key["sensitive"] and not key["extractable"]
        assert "ERROR" not in gen.stderr, gen.stderr
        made[key["id"]] = key_type

        out = tmp_path / f"{key_type}.csr"
        csr_run = tpm.run("csr", "--token", "test", "--key", key_type, "--subject", subject,
                          "--san", "email:hong@example.kr", "-o", str(out))  # fmt: skip
        assert csr_run.returncode == 0, csr_run.stderr
        checked = openssl("req", "-in", str(out), "-verify", "-noout")
        assert checked.returncode == 0 and "verify OK" in checked.stdout + checked.stderr, (key_type, checked.stderr)
        csr = x509.load_pem_x509_csr(out.read_bytes())
        assert csr.subject.rfc4514_string() == subject
        assert csr.signature_hash_algorithm is not None and csr.signature_hash_algorithm.name == hash_name
        public = csr.public_key()
        assert isinstance(public, (ec.EllipticCurvePublicKey, rsa.RSAPublicKey)) and isinstance(public, public_type)
        assert public.key_size == bits
        assert x509.SubjectKeyIdentifier.from_public_key(public).digest.hex() == key["id"]

    for key_type, limit in REFUSED:
        sentence, module_lines = _failure(
            tpm.run("keys", "generate", "--token", "test", "--type", key_type, "--label", key_type), 4
        )
        assert limit in sentence and key_type in sentence, sentence
        assert module_lines == 0, "refused from the token's mechanism list, before the token was asked"
    listed = _json(tpm.run("keys", "list", "--token", "test", "--json"))
    assert {k["id"]: k["type"] for k in listed} == made
    assert {k["sign_only"] for k in listed} == {False}


# -- a certificate's life on the TPM, the CA on SoftHSM -----------------------------------------
def test_certificate_life_on_the_tpm_with_the_ca_on_softhsm_until_the_token_is_lost(
    holder: Holder, tpm_with_softhsm: tuple[SoftHSM, TPMTokens], tmp_path: Path
) -> None:
    """One holder token on the TPM, the CA on SoftHSM, both modules in each process, from the
    first enrollment to the lost token. (One test, not six: each CA and TPM store costs seconds.)

    1. Sign-only keys required, by 'enroll --require-sign-only' or by a CA profile with
       require_sign_only = true: refused with exit 4 and one sentence; no key left on the
       token, the journal entries ended (aborted), nothing issued.
    2. enroll (the holder is told the key can decrypt; the token is recorded by its identity
       URI, not by serial 0000000000000000), status, the chain on the token verified by OpenSSL.
    3. renew with the same key (--key forces it); --require-sign-only refuses that key too;
       renew --rekey (new key, same label, old key deleted); revoke --key; status; the CRL.
    4. The token is lost: its tpm2-pkcs11 store (the SQLite file that holds the token and its
       wrapped keys) is deleted, so the module cannot even start (C_Initialize fails), as on the
       holder's machine. 'journal list' still shows the enrollment a crash left open (token not
       present); 'revoke --token-serial' with the bare serial finds the one token recorded under
       it, revokes every certificate, including the crashed enrollment's, and ends that entry.
    5. The strict profile does take SoftHSM's sign-only keys: it refuses keys, not requests.
    """
    ca = str(holder.ca_dir)
    identity = _identity(holder.json("tokens")[0])

    # 1. sign-only keys required
    for extra in (("--require-sign-only",), ("--profile", "strict")):
        proc = holder.run("enroll", "--token", "test", "--ca", ca, "--subject", "CN=Strict,C=KR", *extra)
        sentence, _ = _failure(proc, 4)
        assert "decrypt as well as sign" in sentence and "sign-only keys were required" in sentence, sentence
    assert holder.json("keys", "list", "--token", "test") == []
    assert holder.json("journal", "list") == []
    assert holder.journal_entries() == [("aborted", True)] * 2
    assert holder.records() == {}

    # 2. enroll, status, chain
    told = holder.run("enroll", "--token", "test", "--ca", ca, "--subject", "CN=Kim Tpm,O=Example Bank,C=KR",
                      "--label", "tpm1")  # fmt: skip
    assert told.returncode == 0 and "Enrolled: CN=Kim Tpm" in told.stdout, told.stderr
    assert FORCED in told.stderr, "enroll tells that the token made the key able to decrypt"
    [first] = holder.json("status", "--token", "test")
    assert (first["state"], first["renew_due"], first["label"]) == ("valid", False, "tpm1")
    assert first["days_left"] in (364, 365), first
    assert holder.records()[first["serial"]].token_serial == identity
    chain = tmp_path / "chain.pem"
    assert holder.run("cert", "export", "--token", "test", "--key", "tpm1", "--chain", "-o", str(chain)).returncode == 0
    leaf, ca_cert = x509.load_pem_x509_certificates(chain.read_bytes())
    assert ca_cert == x509.load_pem_x509_certificate((holder.ca_dir / "ca.pem").read_bytes())
    leaf_file, ca_file = tmp_path / "leaf.pem", tmp_path / "ca-from-token.pem"
    leaf_file.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    ok = openssl("verify", "-CAfile", str(ca_file), str(leaf_file))
    assert ok.returncode == 0 and ": OK" in ok.stdout, ok.stdout + ok.stderr

    # 3. renew (same key, then refused when sign-only is required, then re-keyed), revoke
    [same] = holder.json("renew", "--token", "test", "--key", "tpm1")
    assert (same["key_id"], same["label"], same["replaces"]) == (first["key_id"], "tpm1", first["serial"])
    assert same["serial"] != first["serial"] and (same["token_serial"], same["key_can_decrypt"]) == (identity, True)
    sentence, _ = _failure(holder.run("renew", "--token", "test", "--key", "tpm1", "--require-sign-only"), 4)
    assert "decrypt" in sentence and "tpm1" in sentence, sentence
    assert set(holder.records()) == {first["serial"], same["serial"]}
    [rekeyed] = holder.json("renew", "--token", "test", "--key", "tpm1", "--rekey")
    assert rekeyed["key_id"] != first["key_id"] and rekeyed["label"] == "tpm1"
    assert rekeyed["replaces"] == same["serial"] and rekeyed["key_can_decrypt"] is True
    keys = holder.json("keys", "list", "--token", "test")
    assert [(k["id"], k["label"], k["has_certificate"]) for k in keys] == [(rekeyed["key_id"], "tpm1", True)]
    leaves = [c for c in holder.json("cert", "list", "--token", "test") if not c["ca"]]
    assert [(c["id"], c["serial"]) for c in leaves] == [(rekeyed["key_id"], rekeyed["serial"])]
    [revoked] = holder.json("revoke", "--token", "test", "--key", "tpm1")
    assert (revoked["serial"], revoked["status"], revoked["token_serial"]) == (rekeyed["serial"], "revoked", identity)
    assert holder.crl_serials(tmp_path / "crl1.pem") == {int(rekeyed["serial"], 16)}

    # 4. the token lost, with an enrollment a crash left open
    crashed = holder.run("enroll", "--token", "test", "--ca", ca, "--subject", "CN=Crashed,C=KR",
                         env={"TOKENISSUE_FAILPOINT": "issued-recorded"})  # fmt: skip
    assert crashed.returncode == -9, crashed.stderr
    shutil.rmtree(holder.tpm.store)
    assert holder.run("tokens").returncode != 0, "the module must not start without its store"
    [entry] = holder.json("journal", "list")
    assert (entry["token_serial"], entry["token_present"], entry["step"]) == (identity, False, "issued")
    proc = holder.run("revoke", "--token-serial", NO_SERIAL, "--ca", ca, "--json")
    lost = {r["serial"]: r for r in _json(proc)}
    assert set(lost) == {first["serial"], same["serial"], entry["serial"]}
    assert {(r["reason"], r["token_serial"]) for r in lost.values()} == {("key-compromise", identity)}
    assert entry["journal_id"] in proc.stderr, proc.stderr
    assert holder.json("journal", "list") == []
    listed = holder.ca("ca", "list", "--ca-dir", ca)
    assert {(r["status"], r["token_serial"]) for r in listed} == {("revoked", identity)} and len(listed) == 4
    assert holder.crl_serials(tmp_path / "crl2.pem") == {int(r["serial"], 16) for r in listed}

    # 5. the strict profile and a sign-only key
    softhsm, _tpm = tpm_with_softhsm
    add_token_fast(softhsm, "soft")
    out = holder.json("enroll", "--token", "soft", "--ca", ca, "--subject", "CN=Soft,C=KR", "--profile", "strict",
                      env={"TOKENISSUE_MODULE": SOFTHSM_MODULE})  # fmt: skip
    assert (out["sign_only"], out["profile"]) == (True, "strict")


def test_cert_import_of_an_externally_signed_certificate(
    tpm: TPMTokens, software_ca: SoftwareCA, tmp_path: Path
) -> None:
    """A certificate from another CA for a key made on the TPM: imported next to the key (proved
    by a signature on the token), its CA certificate too; one for a key not on the token is
    refused and nothing is written; the exported chain verifies with OpenSSL."""
    assert tpm.run("keys", "generate", "--token", "test", "--type", "ec-p256", "--label", "ext").returncode == 0
    csr_file = tmp_path / "ext.csr"
    assert (
        tpm.run("csr", "--token", "test", "--key", "ext", "--subject", "CN=External", "-o", str(csr_file)).returncode
        == 0
    )
    public = x509.load_pem_x509_csr(csr_file.read_bytes()).public_key()

    foreign = software_ca.issue_pem_file(ec.generate_private_key(ec.SECP256R1()).public_key(), "Foreign", "foreign.pem")
    sentence, _ = _failure(tpm.run("cert", "import", "--token", "test", str(foreign)), 4)
    assert "no key" in sentence.lower() or "matches no" in sentence.lower(), sentence

    pem = software_ca.issue_pem_file(public, "External", "ext.pem", with_ca=True)
    assert tpm.run("cert", "import", "--token", "test", str(pem)).returncode == 0
    [key] = _json(tpm.run("keys", "list", "--token", "test", "--json"))
    assert key["has_certificate"] is True
    listed = _json(tpm.run("cert", "list", "--token", "test", "--json"))
    assert len(listed) == 2, "the refused certificate was not written"
    certs = {c["ca"]: c for c in listed}
    assert (certs[False]["id"], certs[False]["label"], certs[False]["has_key"]) == (key["id"], "ext", True)
    assert certs[True]["subject"] == "CN=Test Software CA"
    chain = tmp_path / "chain.pem"
    assert tpm.run("cert", "export", "--token", "test", "--key", "ext", "--chain", "-o", str(chain)).returncode == 0
    leaf = tmp_path / "leaf.pem"
    leaf.write_bytes(x509.load_pem_x509_certificates(chain.read_bytes())[0].public_bytes(serialization.Encoding.PEM))
    ok = openssl("verify", "-CAfile", str(software_ca.root / "ca.pem"), "-untrusted", str(chain), str(leaf))
    assert ok.returncode == 0 and ": OK" in ok.stdout, ok.stdout + ok.stderr


# -- a CA whose key is on the TPM -------------------------------------------------------------
def test_ca_key_on_the_tpm_issues_to_a_softhsm_token(
    tpm_with_softhsm: tuple[SoftHSM, TPMTokens], tmp_path: Path
) -> None:
    """'ca init' on the TPM token: ca.toml names the token by its identity URI (serial
    0000000000000000 names no token) and the TPM module; from fresh processes the CA signs a CSR
    ('ca sign'), an enrollment onto a SoftHSM token (recorded there by its serial, which is
    unique) and a CRL, all verified by OpenSSL. With --require-sign-only the same 'ca init' is
    refused and leaves no key and no CA."""
    softhsm, tpm = tpm_with_softhsm
    [tok] = _json(tpm.run("tokens", "--json"))
    tpm_env = {"TOKENISSUE_MODULE": TPM2_MODULE, "TOKENISSUE_CA_PIN": USER_PIN}
    refused = tpm.run("ca", "init", "--ca-dir", str(tmp_path / "strict-ca"), "--token", "test", "--subject", "CN=No",
                      "--require-sign-only", env=tpm_env)  # fmt: skip
    sentence, _ = _failure(refused, 4)
    assert "sign-only keys were required" in sentence, sentence
    assert not (tmp_path / "strict-ca" / "ca.toml").exists()
    assert _json(tpm.run("keys", "list", "--token", "test", "--json")) == []

    ca_dir = tpm.root / "tpm-ca"
    init = _make_ca(tpm, ca_dir, "test", tpm_env)
    assert init.returncode == 0, init.stderr
    assert FORCED in init.stderr, "the CA key can decrypt too, and 'ca init' says so"
    config = tomllib.loads((ca_dir / "ca.toml").read_text())["ca"]
    assert config["token"] == _identity(tok)
    assert config["module"] == TPM2_MODULE

    # The holder's token is on SoftHSM; TOKENISSUE_MODULE names the holder's module only.
    add_token_fast(softhsm, "holder")
    soft = {"TOKENISSUE_MODULE": SOFTHSM_MODULE, "TOKENISSUE_CA_PIN": USER_PIN}
    # 'ca sign' judges a CSR, wherever its key is: a software one will do.
    csr_key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Signed")]))
        .sign(csr_key, hashes.SHA256())
    )
    csr_file = tmp_path / "signed.csr"
    csr_file.write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    signed = tmp_path / "signed.pem"
    proc = tpm.run(
        "ca", "sign", str(csr_file), "--ca-dir", str(ca_dir), "--profile", "personal", "-o", str(signed), env=soft
    )
    assert proc.returncode == 0, proc.stderr
    out = _json(tpm.run("enroll", "--token", "holder", "--ca", str(ca_dir), "--subject", "CN=Enrolled,C=KR",
                        "--label", "enrolled", "--json", env=soft))  # fmt: skip
    [holder_tok] = [t for t in _json(tpm.run("tokens", "--json", env=soft)) if t["label"] == "holder"]
    assert out["sign_only"] is True and out["token_serial"] == holder_tok["serial"] == holder_tok["identity"]
    enrolled = tmp_path / "enrolled.pem"
    assert (
        tpm.run("cert", "export", "--token", "holder", "--key", "enrolled", "-o", str(enrolled), env=soft).returncode
        == 0
    )
    for leaf in (signed, enrolled):
        ok = openssl("verify", "-CAfile", str(ca_dir / "ca.pem"), str(leaf))
        assert ok.returncode == 0 and ": OK" in ok.stdout, ok.stdout + ok.stderr
    crl = tmp_path / "crl.pem"
    assert tpm.run("ca", "crl", "--ca-dir", str(ca_dir), "-o", str(crl), env=soft).returncode == 0
    checked = openssl("crl", "-in", str(crl), "-noout", "-verify", "-CAfile", str(ca_dir / "ca.pem"))
    assert checked.returncode == 0 and "verify OK" in checked.stdout + checked.stderr, checked.stderr


# -- PINs: the TPM's dictionary-attack lockout ---------------------------------------------------
def _lockout_counter(t: TPMTokens) -> int:
    out = t.tpm.tool("tpm2_getcap", "properties-variable").stdout
    m = re.search(r"TPM2_PT_LOCKOUT_COUNTER:\s*(0x[0-9a-fA-F]+|\d+)", out)
    assert m is not None, out
    return int(m.group(1), 0)


def _no_tries_claim(sentence: str) -> None:
    assert "does not report how many tries are left" in sentence, sentence
    for claim in ("no low-tries warning", "few tries are left", "final try", "last try", "tries left:"):
        assert claim not in sentence, sentence


def test_wrong_pins_count_once_each_and_lock_the_tpm(locking_tpm: TPMTokens, tmp_path: Path) -> None:
    """A wrong PIN: exit 5, a sentence that claims nothing about the tries left (the TPM reports
    none), and exactly one try spent per command, counted by the TPM itself (keys list, enroll,
    and a two-row batch, which stops at the refusal). After 3, the right PIN is refused as
    locked (CKR_PIN_LOCKED), with the TPM's way out rather than the SO PIN; clearing the
    lockout lets it in again. The module's lines are hidden behind the note, --debug shows them."""
    t = locking_tpm
    # A long recovery time: the counter must not drop by itself while the test counts.
    t.tpm.tool("tpm2_dictionarylockout", "--setup-parameters", "--max-tries=3", "--recovery-time=600",
               "--lockout-recovery-time=10")  # fmt: skip
    t.tpm.clear_lockout()
    ca_dir = tmp_path / "file-ca"
    init = t.run("ca", "init", "--ca-dir", str(ca_dir), "--insecure-file-key", "--subject", "CN=File CA")
    assert init.returncode == 0, init.stderr
    wrong = {"TOKENISSUE_PIN": "000000"}
    assert _lockout_counter(t) == 0

    sentence, module_lines = _failure(t.run("keys", "list", "--token", "test", env=wrong), 5)
    _no_tries_claim(sentence)
    assert "was not retried" in sentence
    assert module_lines >= 1, "tpm2-pkcs11 prints its unseal failure; the note must say so"
    assert _lockout_counter(t) == 1

    debug = t.run("--debug", "enroll", "--token", "test", "--ca", str(ca_dir), "--subject", "CN=Wrong", env=wrong)
    assert debug.returncode == 5
    assert "Esys_Unseal" in debug.stderr and not NOTE.search(debug.stderr), debug.stderr
    assert _lockout_counter(t) == 2
    assert _json(t.run("journal", "list", "--json")) == [], "a refused PIN leaves no journal entry"

    tray = tmp_path / "tray.csv"
    tray.write_text("token,subject\ntest,CN=Row One\ntest,CN=Row Two\n", encoding="utf-8")
    batch = t.run("batch", "enroll", str(tray), "--ca", str(ca_dir), "--json", env=wrong)
    assert batch.returncode == 8, batch.stderr
    assert [(r["status"], r["exit_code"]) for r in json.loads(batch.stdout)] == [("failed", 5), ("skipped", 5)]
    assert _lockout_counter(t) == 3

    sentence, _ = _failure(t.run("keys", "list", "--token", "test"), 5)  # the right PIN
    assert "locked (CKR_PIN_LOCKED)" in sentence and "tpm2_dictionarylockout --clear-lockout" in sentence, sentence
    assert "pin unblock" not in sentence, "the SO PIN cannot lift a TPM's dictionary-attack lockout"
    assert _lockout_counter(t) == 3
    t.tpm.clear_lockout()
    assert _json(t.run("keys", "list", "--token", "test", "--json")) == []


# -- what the module writes on stderr ----------------------------------------------------------
def test_module_stderr_is_hidden_on_success_and_announced_after_our_sentence(tpm: TPMTokens) -> None:
    """tpm2-pkcs11 prints ERROR lines for every key template it refuses, also while tokenissue
    negotiates one it takes (--debug proves they are written). A successful 'keys generate'
    shows none of them; a failing one ('--require-sign-only') ends with our sentence and then
    the note counting them, which --debug replaces with the lines themselves."""
    ok = tpm.run("keys", "generate", "--token", "test", "--type", "ec-p256", "--label", "quiet")
    assert ok.returncode == 0, ok.stderr
    assert "ERROR" not in ok.stderr and not NOTE.search(ok.stderr), ok.stderr
    raw = tpm.run("--debug", "keys", "generate", "--token", "test", "--type", "ec-p256", "--label", "loud")
    assert raw.returncode == 0, raw.stderr
    module_lines = [ln for ln in raw.stderr.splitlines() if ln.startswith("ERROR:")]
    assert any("attr mismatch" in ln for ln in module_lines), raw.stderr

    args = ("keys", "generate", "--token", "test", "--type", "ec-p256", "--label", "strict", "--require-sign-only")
    sentence, n = _failure(tpm.run(*args), 4)
    assert "sign-only keys were required" in sentence, sentence
    shown = [ln for ln in tpm.run("--debug", *args).stderr.splitlines() if ln.startswith("ERROR:")]
    assert n == len(shown) == len(module_lines) > 0
    assert [k["label"] for k in _json(tpm.run("keys", "list", "--token", "test", "--json"))] == ["quiet", "loud"]
