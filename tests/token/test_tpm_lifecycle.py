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
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID, SignatureAlgorithmOID

from tokenissue.inventory import Inventory
from tokenissue.models import CertRecord

from support.cli import USER_PIN
from support.lifecycle import add_token_fast
from support.openssl import openssl
from support.softhsm import SOFTHSM_MODULE, SoftHSM
from support.software_ca import SoftwareCA
from support.tpm import TPM2_MODULE, TPMTokens

NO_SERIAL = "0000000000000000"  # every tpm2-pkcs11 token's serial
#: For commands of the CA on SoftHSM: its module, and its PIN (the fixtures' user PIN).
CA_ENV = {"TOKENISSUE_MODULE": SOFTHSM_MODULE, "TOKENISSUE_CA_PIN": USER_PIN}
#: A CA profile that refuses keys that can decrypt (tokenissue/ca/profiles.toml format).
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
FORCED = "this key can decrypt as well as sign"
#: CKA_ALLOWED_MECHANISMS of every RSA key tokenissue makes on this TPM (by default or with
#: --require-sign-only): the combined hash-and-sign mechanisms the token offers, without
#: CKM_RSA_PKCS (which also decrypts).
STRICT_RSA = ["SHA256_RSA_PKCS", "SHA384_RSA_PKCS", "SHA512_RSA_PKCS"]
#: ... and of the key _DECRYPTING_KEY makes outside tokenissue (as tokenissue once did): CKM_RSA_PKCS too.
DEFAULT_RSA = ["RSA_PKCS", *STRICT_RSA]

# What an RSA key on the token really does when asked to decrypt, asked with python-pkcs11 alone
# in a process of its own (not through tokenissue; a refused operation can upset a tpm2-pkcs11
# process): its CKA_DECRYPT, its CKA_ALLOWED_MECHANISMS as read back, for each decryption
# mechanism the token offers "decrypted" or the exception the token's answer is; and last (after
# a refused C_SignInit tpm2-pkcs11 will not let the process delete the key) whether it signs a
# host-made SHA-256 DigestInfo with CKM_RSA_PKCS, as tools that hash on the host do.
_DECRYPT_TEST = r"""
import array, json, os, sys
import pkcs11
from pkcs11 import Attribute, Mechanism, ObjectClass
from pkcs11.attributes import AttributeMapper
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
mapper = AttributeMapper()  # python-pkcs11 0.10 cannot decode CKA_ALLOWED_MECHANISMS by itself
mapper.register_handler(Attribute.ALLOWED_MECHANISMS, lambda v: array.array("L", [int(m) for m in v]).tobytes(),
                        lambda b: list(array.array("L", b)))
lib = pkcs11.lib(os.environ["TOKENISSUE_MODULE"])
out = {}
with lib.get_token(token_label=sys.argv[1]).open(user_pin=os.environ["TOKENISSUE_PIN"], attribute_mapper=mapper) as s:
    for label in sys.argv[2:]:
        [priv] = s.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.LABEL: label})
        [pub] = s.get_objects({Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.LABEL: label})
        key = rsa.RSAPublicNumbers(int.from_bytes(pub[Attribute.PUBLIC_EXPONENT], "big"),
                                   int.from_bytes(pub[Attribute.MODULUS], "big")).public_key()
        row = {"DECRYPT": priv[Attribute.DECRYPT], "allowed": [Mechanism(int(m)).name for m in priv[Attribute.ALLOWED_MECHANISMS]]}
        oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None)
        for mech, pad in ((Mechanism.RSA_PKCS, padding.PKCS1v15()), (Mechanism.RSA_PKCS_OAEP, oaep),
                          (Mechanism.RSA_X_509, padding.PKCS1v15())):
            secret = os.urandom(16)
            try:
                plain = bytes(priv.decrypt(key.encrypt(secret, pad), mechanism=mech))
                row[mech.name] = "decrypted" if plain.endswith(secret) else "wrong plaintext"
            except pkcs11.PKCS11Error as e:
                row[mech.name] = type(e).__name__
        out[label] = row
    digest_info = bytes.fromhex("3031300d060960864801650304020105000420") + os.urandom(32)
    for label in sys.argv[2:]:
        [priv] = s.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.LABEL: label})
        try:
            priv.sign(digest_info, mechanism=Mechanism.RSA_PKCS)
            out[label]["sign RSA_PKCS"] = "signed"
        except pkcs11.PKCS11Error as e:
            out[label]["sign RSA_PKCS"] = type(e).__name__
print(json.dumps(out))
"""

# An RSA key that can decrypt, on a TPM token, made with python-pkcs11 alone (tokenissue makes
# none there any more): the token-usage template (CKA_DECRYPT left to the token, which sets it),
# its CKA_ALLOWED_MECHANISMS holding CKM_RSA_PKCS with the hash-and-sign mechanisms.
_DECRYPTING_KEY = r"""
import array, os, sys
import pkcs11
from pkcs11 import Attribute, KeyType, Mechanism
from pkcs11.attributes import AttributeMapper
mapper = AttributeMapper()
mapper.register_handler(Attribute.ALLOWED_MECHANISMS, lambda v: array.array("L", [int(m) for m in v]).tobytes(),
                        lambda b: list(array.array("L", b)))
lib = pkcs11.lib(os.environ["TOKENISSUE_MODULE"])
with lib.get_token(token_label=sys.argv[1]).open(rw=True, user_pin=os.environ["TOKENISSUE_PIN"], attribute_mapper=mapper) as s:
    s.generate_keypair(KeyType.RSA, 2048, store=True, label=sys.argv[2], id=os.urandom(20),
                       public_template={Attribute.VERIFY: True, Attribute.ENCRYPT: True},
                       private_template={Attribute.SIGN: True, Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False,
                                         Attribute.PRIVATE: True,
                                         Attribute.ALLOWED_MECHANISMS: [Mechanism.RSA_PKCS, Mechanism.SHA256_RSA_PKCS,
                                                                        Mechanism.SHA384_RSA_PKCS, Mechanism.SHA512_RSA_PKCS]})
"""


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


def _decrypt_test(t: TPMTokens, *labels: str, on: str = "test") -> dict[str, dict[str, Any]]:
    """Per RSA key label on token ``on``: what the token really does when asked to decrypt (see _DECRYPT_TEST)."""
    proc = subprocess.run([sys.executable, "-c", _DECRYPT_TEST, on, *labels], capture_output=True, text=True,
                          env=t.env, timeout=120, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out: dict[str, dict[str, Any]] = json.loads(proc.stdout)
    return out


#: What _decrypt_test finds for the key _DECRYPTING_KEY makes (it decrypts PKCS#1 v1.5; its
#: CKA_ALLOWED_MECHANISMS keeps OAEP and raw RSA away) and for every RSA key tokenissue makes here
#: (REFUSES: CKA_DECRYPT set, every decryption refused). Neither signs with CKM_RSA_PKCS:
#: tpm2-pkcs11 1.9 makes that signature with raw RSA and checks CKM_RSA_X_509 against the list
#: (measured: a key whose list has both signs with CKM_RSA_PKCS), so leaving CKM_RSA_PKCS out of
#: the list costs tools that hash on the host nothing here.
DECRYPTS = {"DECRYPT": True, "allowed": DEFAULT_RSA, "RSA_PKCS": "decrypted", "RSA_PKCS_OAEP": "MechanismInvalid",
            "RSA_X_509": "MechanismInvalid", "sign RSA_PKCS": "MechanismInvalid"}  # fmt: skip
REFUSES = {**DECRYPTS, "allowed": STRICT_RSA, "RSA_PKCS": "MechanismInvalid"}


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
    """EC P-256, P-384, RSA-2048 and RSA-3072, and RSA-2048 again with --require-sign-only (the
    key size changes nothing there, and an RSA-3072 key costs seconds on this TPM): each key
    generated (never extractable, no module noise on stderr; the token-usage template is
    asserted by test_negotiation.py and test_token_check.py) and reported by 'keys generate' and
    'keys list' as what it can really do. The token sets CKA_DECRYPT on every key (decrypt_flag);
    none can use it (sign_only, no note): an EC key has no mechanism to, every RSA key, by
    default or with --require-sign-only (which changes nothing here), is pinned to the
    hash-and-sign mechanisms. Read back and tried with python-pkcs11 alone: every RSA key's
    CKA_ALLOWED_MECHANISMS has no CKM_RSA_PKCS and the token refuses it a PKCS#1 v1.5 (and OAEP,
    and raw RSA) decryption, and a host-made DigestInfo signed with CKM_RSA_PKCS (see REFUSES);
    'keys list' says "yes (CKA_DECRYPT unusable)" for them. For
    every key a CSR signed on the token that OpenSSL verifies, with the hash that goes with the
    key, for that very key (its CKA_ID is the SKI of the CSR's public key). RSA-4096 and Ed25519:
    exit 4, one sentence naming the limit, the token never asked (the module wrote nothing), and
    no key written."""
    subject = "CN=홍길동,O=Example Bank,C=KR"
    made: dict[str, tuple[str, int]] = {}  # label -> (type, bits)
    ski: dict[str, str] = {}  # label -> the SKI of its CSR's public key
    for key_type, hash_name, public_type, bits in [*MADE, ("rsa-2048-strict", *MADE[2][1:])]:
        kt = key_type.removesuffix("-strict")
        strict = key_type != kt
        # Text, not --json: the note is for people (--json says can_decrypt).
        gen = tpm.run("keys", "generate", "--token", "test", "--type", kt, "--label", key_type,
                      *(("--require-sign-only",) if strict else ()))  # fmt: skip
        assert gen.returncode == 0 and f"Generated {kt} key '{key_type}'" in gen.stdout, gen.stdout + gen.stderr
        assert "ERROR" not in gen.stderr, gen.stderr
        assert FORCED not in gen.stderr, gen.stderr  # no key here decrypts: nothing to tell
        made[key_type] = (kt, bits)

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
        ski[key_type] = x509.SubjectKeyIdentifier.from_public_key(public).digest.hex()

    listed = {k["label"]: k for k in _json(tpm.run("keys", "list", "--token", "test", "--json"))}
    assert set(listed) == set(made)
    for label, (kt, bits) in made.items():
        key = listed[label]
        assert (key["type"], key["size"], key["id"]) == (kt, bits, ski[label]), key  # CKA_ID: the CSR key's SKI
        assert (key["decrypt_flag"], key["can_decrypt"], key["sign_only"]) == (True, False, True), key
        assert key["born_on_token"] and key["sensitive"] and not key["extractable"]
    # What the report says is what the token does.
    tried = _decrypt_test(tpm, "rsa-2048", "rsa-3072", "rsa-2048-strict")
    assert tried == {"rsa-2048": REFUSES, "rsa-3072": REFUSES, "rsa-2048-strict": REFUSES}

    for key_type, limit in REFUSED:
        sentence, module_lines = _failure(
            tpm.run("keys", "generate", "--token", "test", "--type", key_type, "--label", key_type), 4
        )
        assert limit in sentence and key_type in sentence, sentence
        assert module_lines == 0, "refused from the token's mechanism list, before the token was asked"
    table = tpm.run("keys", "list", "--token", "test").stdout
    sign_only = {ln.split("│")[2].strip(): ln.split("│")[7].strip() for ln in table.splitlines() if ln.count("│") > 8}
    assert set(sign_only) == set(made), table  # nothing else written
    assert set(sign_only.values()) == {"yes (CKA_DECRYPT unusable)"}, table


# -- a certificate's life on the TPM, the CA on SoftHSM -----------------------------------------
def test_certificate_life_on_the_tpm_with_the_ca_on_softhsm_until_the_token_is_lost(
    holder: Holder, tpm_with_softhsm: tuple[SoftHSM, TPMTokens], tmp_path: Path
) -> None:
    """One holder token on the TPM, the CA on SoftHSM, both modules in each process, from the
    first enrollment to the lost token. (One test, not six: each CA and TPM store costs seconds.)

    1. Sign-only keys required, by 'enroll --require-sign-only' or by a CA profile with
       require_sign_only = true, for RSA keys (EC keys on the TPM are sign-only anyway): both
       enroll, with no note; the keys' CKA_ALLOWED_MECHANISMS leaves CKM_RSA_PKCS out, and asked
       with python-pkcs11 alone the token refuses them a PKCS#1 v1.5 decryption.
    2. enroll an RSA key by default (sign-only too: no note, and the token refuses it a
       decryption; the token is recorded by its identity URI, not by serial 0000000000000000),
       status, the chain on the token verified by OpenSSL.
    3. renew with the same key (--key forces it) and --require-sign-only: the same key, taken.
       A key that can decrypt, made outside tokenissue with python-pkcs11 (CKM_RSA_PKCS in its
       CKA_ALLOWED_MECHANISMS; it decrypts), certified by 'ca sign' and 'cert import':
       renew --require-sign-only refuses it (exit 4; no certificate, key or record changed,
       the journal entry ended); renew --rekey --require-sign-only (a new sign-only key, same
       label, the old key deleted); revoke --key; the CRL.
    4. The token is lost: its tpm2-pkcs11 store (the SQLite file that holds the token and its
       wrapped keys) is deleted, so the module cannot even start (C_Initialize fails), as on the
       holder's machine. 'journal list' still shows the enrollment a crash left open (token not
       present); 'revoke --token-serial' with the bare serial finds the one token recorded under
       it, revokes every certificate recorded under it, including the crashed enrollment's, and
       ends that entry ('ca sign' recorded no token for the outside key's first certificate).
    5. The strict profile takes SoftHSM's sign-only keys too (sign-only by CKA_DECRYPT false).
    """
    ca = str(holder.ca_dir)
    identity = _identity(holder.json("tokens")[0])

    # 1. sign-only keys required: RSA keys pinned to the mechanisms that do not decrypt
    strict = ("strict-flag", "strict-profile")
    for label, extra in zip(strict, (("--require-sign-only",), ("--profile", "strict")), strict=True):
        proc = holder.run("enroll", "--token", "test", "--ca", ca, "--subject", f"CN={label},C=KR", "--type", "rsa-2048",
                          "--label", label, *extra)  # fmt: skip
        assert proc.returncode == 0 and f"Enrolled: CN={label},C=KR" in proc.stdout, proc.stdout + proc.stderr
        assert FORCED not in proc.stderr, proc.stderr  # sign-only: nothing to tell
    signed = holder.records()
    assert sorted((r.subject, r.profile, r.token_serial) for r in signed.values()) == [
        ("CN=strict-flag,C=KR", "personal", identity), ("CN=strict-profile,C=KR", "strict", identity)]  # fmt: skip
    keys = holder.json("keys", "list", "--token", "test")
    assert sorted(k["label"] for k in keys) == list(strict)
    assert {(k["sign_only"], k["can_decrypt"], k["decrypt_flag"], k["has_certificate"]) for k in keys} == {
        (True, False, True, True)}  # fmt: skip
    assert _decrypt_test(holder.tpm, *strict) == dict.fromkeys(strict, REFUSES)
    assert holder.json("journal", "list") == []

    # 2. enroll an RSA key made by default (sign-only as well), status, chain
    told = holder.run("enroll", "--token", "test", "--ca", ca, "--subject", "CN=Kim Tpm,O=Example Bank,C=KR",
                      "--type", "rsa-2048", "--label", "tpm1")  # fmt: skip
    assert told.returncode == 0 and "Enrolled: CN=Kim Tpm" in told.stdout, told.stderr
    assert FORCED not in told.stderr, told.stderr
    assert _decrypt_test(holder.tpm, "tpm1") == {"tpm1": REFUSES}
    [first] = [c for c in holder.json("status", "--token", "test") if c["label"] == "tpm1"]
    assert (first["state"], first["renew_due"]) == ("valid", False)
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

    # 3. renew (same key, sign-only required: taken), then a decrypting key made outside
    # tokenissue (refused when sign-only is required; then re-keyed to a sign-only key), revoke
    [same] = holder.json("renew", "--token", "test", "--key", "tpm1", "--require-sign-only")
    assert (same["key_id"], same["label"], same["replaces"]) == (first["key_id"], "tpm1", first["serial"])
    assert same["serial"] != first["serial"] and (same["token_serial"], same["key_can_decrypt"]) == (identity, False)
    made = subprocess.run([sys.executable, "-c", _DECRYPTING_KEY, "test", "ext"], capture_output=True, text=True,
                          env=holder.tpm.env, timeout=120, check=False)  # fmt: skip
    assert made.returncode == 0, made.stdout + made.stderr
    assert _decrypt_test(holder.tpm, "ext") == {"ext": DECRYPTS}, "the key really decrypts"
    ext_csr, ext_pem = tmp_path / "ext.csr", tmp_path / "ext.pem"
    assert holder.run("csr", "--token", "test", "--key", "ext", "--subject", "CN=Ext,C=KR", "-o", str(ext_csr)).returncode == 0
    signed_ext = holder.tpm.run("ca", "sign", str(ext_csr), "--ca-dir", ca, "--profile", "personal", "-o", str(ext_pem),
                                env=holder.ca_env)  # fmt: skip
    assert signed_ext.returncode == 0, signed_ext.stderr
    imported = holder.run("cert", "import", "--token", "test", str(ext_pem))
    assert imported.returncode == 0, imported.stderr
    ext_serial = format(x509.load_pem_x509_certificate(ext_pem.read_bytes()).serial_number, "x")
    [ext] = [k for k in holder.json("keys", "list", "--token", "test") if k["label"] == "ext"]
    assert (ext["sign_only"], ext["can_decrypt"], ext["decrypt_flag"], ext["has_certificate"]) == (False, True, True, True)
    before = (holder.records(), holder.json("keys", "list", "--token", "test"), holder.json("cert", "list", "--token", "test"))
    sentence, _ = _failure(holder.run("renew", "--token", "test", "--key", "ext", "--ca", ca, "--profile", "personal",
                                      "--require-sign-only"), 4)  # fmt: skip
    assert "can decrypt as well as sign" in sentence and "'ext'" in sentence, sentence
    after = (holder.records(), holder.json("keys", "list", "--token", "test"), holder.json("cert", "list", "--token", "test"))
    assert after == before, "a refused renewal changes nothing: records, keys, certificates"
    assert holder.json("journal", "list") == [] and holder.journal_entries()[-1] == ("aborted", True)
    [rekeyed] = holder.json("renew", "--token", "test", "--key", "ext", "--ca", ca, "--profile", "personal", "--rekey",
                            "--require-sign-only")  # fmt: skip
    assert rekeyed["key_id"] != ext["id"] and rekeyed["label"] == "ext"
    assert rekeyed["replaces"] == ext_serial and rekeyed["key_can_decrypt"] is False
    [key] = [k for k in holder.json("keys", "list", "--token", "test") if k["label"] == "ext"]  # the old one is gone
    assert (key["id"], key["has_certificate"], key["sign_only"], key["decrypt_flag"]) == (rekeyed["key_id"], True, True, True)
    assert _decrypt_test(holder.tpm, "ext") == {"ext": REFUSES}
    leaves = [c for c in holder.json("cert", "list", "--token", "test") if c["label"] == "ext"]
    assert [(c["id"], c["serial"]) for c in leaves] == [(rekeyed["key_id"], rekeyed["serial"])]
    [revoked] = holder.json("revoke", "--token", "test", "--key", "ext")
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
    assert set(lost) == {first["serial"], same["serial"], entry["serial"], *signed}
    assert {(r["reason"], r["token_serial"]) for r in lost.values()} == {("key-compromise", identity)}
    assert entry["journal_id"] in proc.stderr, proc.stderr
    assert holder.json("journal", "list") == []
    listed = holder.ca("ca", "list", "--ca-dir", ca)
    # 'ca sign' tied the outside key's first certificate to no token: the lost token's revocation cannot find it.
    assert {r["serial"]: (r["status"], r["token_serial"]) for r in listed if r["status"] != "revoked"} == {
        ext_serial: ("valid", None)}  # fmt: skip
    assert {r["token_serial"] for r in listed if r["status"] == "revoked"} == {identity} and len(listed) == 7
    assert holder.crl_serials(tmp_path / "crl2.pem") == {int(r["serial"], 16) for r in listed if r["status"] == "revoked"}

    # 5. the strict profile and a key that SoftHSM made sign-only by its flags
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
    """'ca init' on the TPM token, three times: an EC key (sign-only as made: no note), an RSA
    key made by default and one with --require-sign-only (the same: both sign-only by their
    CKA_ALLOWED_MECHANISMS, no note, audited as not decrypting; asked with python-pkcs11 alone,
    the token refuses both a PKCS#1 v1.5 decryption, though CKA_DECRYPT is set). The strict RSA CA is the one that issues: ca.toml names
    the token by its identity URI (serial 0000000000000000 names no token) and the TPM module;
    from fresh processes it signs a CSR ('ca sign'), an enrollment onto a SoftHSM token
    (recorded there by its serial, which is unique) and a CRL, all verified by OpenSSL: a CA key
    pinned to the hash-and-sign mechanisms signs everything a CA signs."""
    softhsm, tpm = tpm_with_softhsm
    [tok] = _json(tpm.run("tokens", "--json"))
    tpm_env = {"TOKENISSUE_MODULE": TPM2_MODULE, "TOKENISSUE_CA_PIN": USER_PIN}

    def audited(ca_dir: Path) -> dict[str, Any]:
        [init] = [e for e in _json(tpm.run("ca", "audit", "list", "--ca-dir", str(ca_dir), "--json")) if e["action"] == "ca-init"]
        return dict(init["details"])

    ec_ca = tpm.root / "ec-ca"
    init = _make_ca(tpm, ec_ca, "test", tpm_env)
    assert init.returncode == 0 and FORCED not in init.stderr, init.stderr  # an EC key on the TPM is sign-only
    assert (audited(ec_ca)["key_type"], audited(ec_ca)["key_can_decrypt"]) == ("ec-p256", False)
    cas = {}
    for name, extra in (("loose-ca", ()), ("strict-ca", ("--require-sign-only",))):
        cas[name] = tpm.root / name
        init = tpm.run("ca", "init", "--ca-dir", str(cas[name]), "--token", "test", "--label", name, "--subject",
                       f"CN={name},O=tokenissue tests,C=KR", "--type", "rsa-2048", *extra, env=tpm_env)  # fmt: skip
        assert init.returncode == 0 and FORCED not in init.stderr, init.stderr
        assert (audited(cas[name])["key_type"], audited(cas[name])["key_can_decrypt"]) == ("rsa-2048", False)
    assert _decrypt_test(tpm, "loose-ca", "strict-ca") == {"loose-ca": REFUSES, "strict-ca": REFUSES}
    keys = {k["label"]: k for k in _json(tpm.run("keys", "list", "--token", "test", "--json"))}
    assert {k: (v["sign_only"], v["decrypt_flag"]) for k, v in keys.items()} == {
        "tokenissue-ca": (True, True), "loose-ca": (True, True), "strict-ca": (True, True)}  # fmt: skip

    ca_dir = cas["strict-ca"]
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
        algorithm = x509.load_pem_x509_certificate(leaf.read_bytes()).signature_algorithm_oid
        assert algorithm == SignatureAlgorithmOID.RSA_WITH_SHA256, algorithm
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
def test_module_stderr_is_hidden_on_success_and_announced_after_our_sentence(tpm: TPMTokens, tmp_path: Path) -> None:
    """tpm2-pkcs11 prints ERROR lines for every key template it refuses, also while tokenissue
    negotiates one it takes (--debug proves they are written). A successful 'keys generate'
    shows none of them; a command that fails after that negotiation (an enrollment whose key was
    made, then refused by the CA's profile for its SAN) ends with our sentence and then the note
    counting them, which --debug replaces with the lines themselves; the key it made is gone."""
    ok = tpm.run("keys", "generate", "--token", "test", "--type", "ec-p256", "--label", "quiet")
    assert ok.returncode == 0, ok.stderr
    assert "ERROR" not in ok.stderr and not NOTE.search(ok.stderr), ok.stderr
    raw = tpm.run("--debug", "keys", "generate", "--token", "test", "--type", "ec-p256", "--label", "loud")
    assert raw.returncode == 0, raw.stderr
    module_lines = [ln for ln in raw.stderr.splitlines() if ln.startswith("ERROR:")]
    assert any("attr mismatch" in ln for ln in module_lines), raw.stderr

    ca_dir = tmp_path / "file-ca"
    init = tpm.run("ca", "init", "--ca-dir", str(ca_dir), "--insecure-file-key", "--subject", "CN=File CA")
    assert init.returncode == 0, init.stderr
    # The 'personal' profile takes email SANs only; the CA's check comes once the key is made.
    args = ("enroll", "--token", "test", "--ca", str(ca_dir), "--subject", "CN=Refused", "--san", "dns:host.example",
            "--label", "refused")  # fmt: skip
    sentence, n = _failure(tpm.run(*args), 6)
    assert "Profile 'personal'" in sentence and "dns" in sentence, sentence
    shown = [ln for ln in tpm.run("--debug", *args).stderr.splitlines() if ln.startswith("ERROR:")]
    assert n == len(shown) == len(module_lines) > 0
    assert [k["label"] for k in _json(tpm.run("keys", "list", "--token", "test", "--json"))] == ["quiet", "loud"]
