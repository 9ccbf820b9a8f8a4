"""``tokenissue token check``: the report is true, on three real PKCS#11 implementations.

Each implementation runs the real CLI in a subprocess, and what the report says is held against
what the token really does:

* SoftHSM 2.6.1: every key type; sign-only keys with CKA_ALLOWED_MECHANISMS (the strict
  template); no CKM_ECDSA_SHA256, so ECDSA signs a host digest with raw CKM_ECDSA; PIN flags
  reported; a unique serial.
* SoftHSM with a smart-card-like mechanism list (``slots.mechanisms``: raw CKM_RSA_PKCS and
  CKM_ECDSA only): the host hashes for RSA too, and there is no RSA-PSS.
* tpm2-pkcs11 1.9 on swtpm: no rsa-4096, no Ed25519; the token hashes (CKM_ECDSA_SHA256/384);
  CKA_DECRYPT is set on every key, yet every key is sign-only as made: EC keys because PKCS#11
  has no EC decryption (CKA_DERIVE is false), RSA keys because tokenissue pins them to the
  hash-and-sign mechanisms (CKA_ALLOWED_MECHANISMS without CKM_RSA_PKCS) and the token enforces
  the list: a test decryption is refused (CKR_MECHANISM_INVALID), so --require-sign-only gets
  the same key and no second one is probed; CKA_ALLOWED_MECHANISMS
  and the certificate category are kept; no PIN counters, a device-wide lockout; serial
  0000000000000000 on every token.

``--probe`` must leave the token exactly as it found it (objects compared raw, below the CLI),
needs the user PIN (a wrong one exits 5) while the plain check needs none. A module tokenissue
has no record of (p11-kit's proxy in front of SoftHSM) gets "unknown", not SoftHSM's answers.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from support.softhsm import SOFTHSM_MODULE, SoftHSM
from support.software_ca import SoftwareCA

ALL_TYPES = ["ec-p256", "ec-p384", "rsa-2048", "rsa-3072", "rsa-4096", "ed25519"]
IMPLEMENTATIONS = ["softhsm", "raw_softhsm", "tpm"]
NO_PIN = ("TOKENISSUE_PIN",)
#: The sign_only_keys finding (less its source) of a token that makes every key sign-only by its flags.
SOFTHSM_SIGN_ONLY = {"value": True, "by_default": ALL_TYPES, "with_require_sign_only": [], "never": [],
                     "decrypt_flag": False}  # fmt: skip

# What each implementation really is (docs/tokens-and-keys.md#compatibility has the same facts).
EXPECT: dict[str, dict[str, Any]] = {
    "softhsm": {
        "library": "SoftHSM",
        "usable": ALL_TYPES,
        "signature": {
            "ec-p256": "CKM_ECDSA (host hashes SHA-256)",
            "ec-p384": "CKM_ECDSA (host hashes SHA-384)",
            "rsa-2048": "CKM_SHA256_RSA_PKCS (token hashes)",
            "rsa-3072": "CKM_SHA256_RSA_PKCS (token hashes)",
            "rsa-4096": "CKM_SHA256_RSA_PKCS (token hashes)",
            "ed25519": "CKM_EDDSA (pure)",
        },
        "pss": "CKM_SHA256_RSA_PKCS_PSS (token hashes)",
        "template": "strict",
        "refused_templates": [],
        "sign_only": SOFTHSM_SIGN_ONLY,
        "pin_counters": True,
        "lockout": "pin",
        "serials_unique": True,
    },
    "raw_softhsm": {
        "library": "SoftHSM",
        "usable": ALL_TYPES,
        "signature": {
            "ec-p256": "CKM_ECDSA (host hashes SHA-256)",
            "ec-p384": "CKM_ECDSA (host hashes SHA-384)",
            "rsa-2048": "CKM_RSA_PKCS (host hashes SHA-256)",
            "rsa-3072": "CKM_RSA_PKCS (host hashes SHA-256)",
            "rsa-4096": "CKM_RSA_PKCS (host hashes SHA-256)",
            "ed25519": "CKM_EDDSA (pure)",
        },
        "pss": "",
        "template": "strict",
        "refused_templates": [],
        "sign_only": SOFTHSM_SIGN_ONLY,
        "pin_counters": True,
        "lockout": "pin",
        "serials_unique": True,
    },
    "tpm": {
        "library": "tpm2-software.github.io",
        "usable": ["ec-p256", "ec-p384", "rsa-2048", "rsa-3072"],
        "refused": {"rsa-4096": "1024-3072 bits only", "ed25519": "cannot generate Ed25519 keys"},
        "signature": {
            "ec-p256": "CKM_ECDSA_SHA256 (token hashes)",
            "ec-p384": "CKM_ECDSA_SHA384 (token hashes)",
            "rsa-2048": "CKM_SHA256_RSA_PKCS (token hashes)",
            "rsa-3072": "CKM_SHA256_RSA_PKCS (token hashes)",
        },
        "pss": "",  # tpm2-pkcs11 1.9 here lists no RSA-PSS mechanism
        "template": "token-usage",
        # It ties CKA_SIGN to CKA_ENCRYPT and answers every sign-only template with GENERAL_ERROR.
        "refused_templates": [
            {"template": "strict", "refusal": "CKR_GENERAL_ERROR"},
            {"template": "no-allowed-mechanisms", "refusal": "CKR_GENERAL_ERROR"},
            {"template": "no-recover", "refusal": "CKR_GENERAL_ERROR"},
        ],
        # CKA_DECRYPT on every key; EC keys have no mechanism to use it, RSA keys are pinned to
        # the hash-and-sign mechanisms (no CKM_RSA_PKCS), which the token enforces.
        "sign_only": {"value": True, "by_default": ["ec-p256", "ec-p384", "rsa-2048", "rsa-3072"],
                      "with_require_sign_only": [], "never": [], "decrypt_flag": True},
        "pin_counters": False,
        "lockout": "device",
        "serials_unique": False,
    },
}


@pytest.fixture(params=IMPLEMENTATIONS)
def impl(request: pytest.FixtureRequest) -> tuple[str, Any]:
    """(name, tokens): a SoftHSM, a raw-mechanism SoftHSM or a TPM store, each with token 'test'."""
    return request.param, request.getfixturevalue(request.param)


def _run(t: Any, *args: str, unset: tuple[str, ...] = (), env: dict[str, str] | None = None,
         input: str | None = "") -> subprocess.CompletedProcess[str]:
    """The real CLI with ``t``'s environment, less ``unset``; stdin is a pipe, never a terminal."""
    full = {k: v for k, v in {**t.env, **(env or {})}.items() if k not in unset}
    return subprocess.run([sys.executable, "-m", "tokenissue.cli", *args], input=input, capture_output=True,
                          text=True, env=full, timeout=300, check=False)  # fmt: skip


def _check(t: Any, *extra: str, unset: tuple[str, ...] = ()) -> dict[str, Any]:
    proc = _run(t, "token", "check", "--token", "test", "--json", *extra, unset=unset)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return dict(json.loads(proc.stdout))


def _rows(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["type"]: r for r in report["key_types"]}


# Every object on the token, read with python-pkcs11 alone (logged in, so private objects too):
# what --probe must leave exactly as it was, below anything tokenissue itself reports.
_RAW_OBJECTS = r"""
import hashlib, json, os, sys
import pkcs11
from pkcs11 import Attribute
lib = pkcs11.lib(os.environ["TOKENISSUE_MODULE"])
with lib.get_token(token_label="test").open(user_pin=os.environ["TOKENISSUE_PIN"]) as s:
    out = []
    for o in list(s.get_objects()):
        row = [int(o[Attribute.CLASS])]
        for a in (Attribute.LABEL, Attribute.ID):
            try:
                v = o[a]
            except pkcs11.PKCS11Error:
                v = None
            row.append(v.hex() if isinstance(v, bytes) else v)
        try:
            row.append(hashlib.sha256(bytes(o[Attribute.VALUE])).hexdigest())
        except pkcs11.PKCS11Error:
            row.append(None)  # private keys: sensitive
        out.append(row)
print(json.dumps(sorted(out, key=str)))
"""


def _raw_objects(t: Any) -> list[list[Any]]:
    proc = subprocess.run([sys.executable, "-c", _RAW_OBJECTS], env=t.env, capture_output=True, text=True,
                          timeout=120, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return list(json.loads(proc.stdout))


def _snapshot(t: Any) -> dict[str, Any]:
    return {
        "keys": json.loads(_run(t, "keys", "list", "--token", "test", "--json").stdout),
        "certs": json.loads(_run(t, "cert", "list", "--token", "test", "--json").stdout),
        "journal": json.loads(_run(t, "journal", "list", "--json").stdout),
        "raw": _raw_objects(t),
    }


def _key_and_certificate(t: Any, ca: SoftwareCA) -> None:
    """A key with a certificate on the token, so the probe runs among real objects."""
    assert _run(t, "keys", "generate", "--token", "test", "--type", "ec-p256", "--label", "kept").returncode == 0
    csr = _run(t, "csr", "--token", "test", "--key", "kept", "--subject", "CN=kept")
    assert csr.returncode == 0, csr.stderr
    pem = ca.issue_pem_file(x509.load_pem_x509_csr(csr.stdout.encode()).public_key(), "kept", "kept.pem", with_ca=True)
    imported = _run(t, "cert", "import", "--token", "test", str(pem))
    assert imported.returncode == 0, imported.stderr


# -- without --probe --------------------------------------------------------------------------
def test_check_without_probe_needs_no_pin_and_tells_the_truth(impl: tuple[str, Any]) -> None:
    name, t = impl
    want = EXPECT[name]
    report = _check(t, unset=NO_PIN)  # no PIN anywhere, no terminal: still answers
    assert report["probed"] is False
    assert report["library"] == want["library"]
    rows = _rows(report)
    assert [r["type"] for r in report["key_types"]] == ALL_TYPES
    assert sorted(k for k, r in rows.items() if r["supported"]) == sorted(want["usable"])
    for kt, why in want.get("refused", {}).items():
        assert not rows[kt]["supported"] and why in rows[kt]["reason"], rows[kt]
        assert rows[kt]["signature"] == ""
    for kt, sig in want["signature"].items():
        assert rows[kt]["signature"] == sig, (kt, rows[kt])
    assert rows["ec-p384"]["hash"] == "sha384" and rows["ec-p256"]["hash"] == "sha256"
    assert rows["ed25519"]["hash"] is None
    for kt in ("rsa-2048", "rsa-3072"):
        assert rows[kt]["pss"] == want["pss"]
    # Nothing was made, so nothing is claimed as proven.
    assert all(r["template"] is None and r["verified"] is None and r["sign_only"] is None for r in rows.values())
    f = report["findings"]
    assert f["sign_only_keys"] == {**want["sign_only"], "source": "known module behaviour"}
    assert f["allowed_mechanisms"] == {"value": True, "source": "known module behaviour"}
    assert f["certificate_category"] == {"value": True, "source": "known module behaviour"}
    assert f["pin_counters"]["value"] is want["pin_counters"] and f["pin_counters"]["lockout"] == want["lockout"]
    assert f["serials_unique"]["value"] is want["serials_unique"]
    assert report["certificates_stored"] is None and report["leftovers"] == []


def test_check_text_without_probe(impl: tuple[str, Any]) -> None:
    name, t = impl
    want = EXPECT[name]
    proc = _run(t, "token", "check", "--token", "test", unset=NO_PIN)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    lines = out.splitlines()
    assert lines[0].startswith("Token 'test' (")
    assert f"module {want['library']})" in lines[0]
    for kt, sig in want["signature"].items():
        row = next(line for line in lines if line.startswith(f"│ {kt} "))
        assert sig in row and "yes" in row, row
    for kt, why in want.get("refused", {}).items():
        row = next(line for line in lines if line.startswith(f"│ {kt} "))
        assert "no: " in row and why in row, row
    assert "Template" not in out and "Can decrypt" not in out  # probe columns only with --probe
    sign_only = next(line for line in lines if line.startswith("Sign-only keys"))
    assert sign_only.split()[2] == "yes", sign_only  # every implementation here can make them
    counters = next(line for line in lines if line.startswith("PIN try counters"))
    assert counters.split()[3] == ("yes" if want["pin_counters"] else "no")
    serial = next(line for line in lines if line.startswith("Unique serial"))
    assert serial.split()[2] == ("yes" if want["serials_unique"] else "no")
    if name == "tpm":
        assert "0000000000000000' is a placeholder" in serial
        assert "on any machine enrolling with the same CA" in out
        assert "dictionary-attack lockout" in out and "does not report PIN tries left" in out
        assert sign_only.endswith("(known module behaviour) ec-p256, ec-p384, rsa-2048, rsa-3072 as made"), sign_only
        text = " ".join(out.split())
        assert "ec-p256 and ec-p384 keys are sign-only as made: the token sets CKA_DECRYPT on them, but PKCS#11 " \
               "has no EC decryption mechanism" in text  # fmt: skip
        assert "rsa-2048 and rsa-3072 keys are sign-only as made: the token sets CKA_DECRYPT on them, but tokenissue " \
               "pins them to signature mechanisms that cannot decrypt (CKA_ALLOWED_MECHANISMS without CKM_RSA_PKCS), " \
               "and the token enforces that list (--probe proves it with a test decryption)." in text  # fmt: skip
        assert "docs/tokens-and-keys.md#sign-only-keys" in text
        assert "decrypt too" not in text and "With --require-sign-only" not in text and "refuses" not in text
    else:
        assert sign_only.endswith("(known module behaviour)"), sign_only  # by their flags: nothing to add
        assert "decrypt" not in out and "tries left" not in out
        assert "(tokens present)" in serial


# -- with --probe -----------------------------------------------------------------------------
def test_probe_proves_each_finding_and_which_keys_decrypt(impl: tuple[str, Any]) -> None:
    name, t = impl
    want = EXPECT[name]
    report = _check(t, "--probe")
    assert report["probed"] is True
    rows = _rows(report)
    assert sorted(k for k, r in rows.items() if r["supported"]) == sorted(want["usable"])
    sign_only = want["sign_only"]
    for kt in want["usable"]:
        r = rows[kt]
        assert r["verified"] is True, r  # a token signature, verified on the host
        assert r["template"] == want["template"], r
        assert r["refused_templates"] == want["refused_templates"], r
        assert r["sign_only"] is (kt in sign_only["by_default"]), r
        assert r["decrypt_flag"] is sign_only["decrypt_flag"], r
        assert r["allowed_mechanisms"] is True, r
        # CKA_ALLOWED_MECHANISMS read back from the key: the signature mechanisms, and the one
        # tokenissue signs with among them.
        assert want["signature"][kt].split()[0] in r["allowed_mechanisms_read_back"], r
    for kt in want.get("refused", {}):
        assert rows[kt]["template"] is None and rows[kt]["verified"] is None  # never attempted
    f = report["findings"]
    assert f["sign_only_keys"] == {**sign_only, "source": "probe"}
    assert f["allowed_mechanisms"] == {"value": True, "source": "probe"}
    assert f["certificate_category"] == {"value": True, "source": "probe"}
    assert f["pin_counters"]["source"] == "known module behaviour"  # never probed: it takes wrong PINs
    assert report["certificates_stored"] is True
    assert report["refused_certificate_attributes"] == []  # tpm2-pkcs11 1.9 takes the category too
    assert report["leftovers"] == []
    if not sign_only["decrypt_flag"]:
        # SoftHSM: sign-only by CKA_DECRYPT/UNWRAP/DERIVE false; nothing to decrypt with, so no
        # test decryption (a key whose CKA_DECRYPT is false is never asked) and no second key.
        for kt in want["usable"]:
            r = rows[kt]
            assert (r["sign_only_by"], r["decrypts_with"], r["decrypt_test"]) == ("flags", [], None), r
            assert r["decrypt_proven"] is None and r["require_sign_only"] is None, r
        return
    # The TPM sets CKA_DECRYPT on every key, and what that means is not one thing.
    for kt in ("ec-p256", "ec-p384"):
        # An EC key carries the flag with nothing behind it: no EC decryption mechanism exists in
        # PKCS#11, CKA_DERIVE is false; so it is sign-only as made, and nothing is tried.
        r = rows[kt]
        assert (r["sign_only_by"], r["decrypts_with"], r["decrypt_test"]) == ("no-mechanism", [], None), r
        assert r["require_sign_only"] is None, r
        assert not any("ECDH" in m for m in r["allowed_mechanisms_read_back"]), r
    for kt in ("rsa-2048", "rsa-3072"):
        # Made by default, an RSA key is pinned to the hash-and-sign mechanisms: its
        # CKA_ALLOWED_MECHANISMS, read back, leaves out CKM_RSA_PKCS (and OAEP and raw RSA, both
        # offered by the token), and the token refuses it a PKCS#1 v1.5 test decryption, although
        # its CKA_DECRYPT is set. So --require-sign-only would get the same key: no second key.
        r = rows[kt]
        assert (r["sign_only_by"], r["decrypts_with"], r["decrypt_proven"]) == ("allowed-mechanisms", [], None), r
        assert r["decrypt_test"] == "refused: CKR_MECHANISM_INVALID", r
        assert r["allowed_mechanisms_read_back"] == ["CKM_SHA256_RSA_PKCS", "CKM_SHA384_RSA_PKCS",
                                                     "CKM_SHA512_RSA_PKCS"], r  # fmt: skip
        assert r["require_sign_only"] is None, r


def test_probe_text(impl: tuple[str, Any]) -> None:
    name, t = impl
    want = EXPECT[name]
    proc = _run(t, "token", "check", "--token", "test", "--probe")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    header = next(line for line in lines if "Key type" in line)
    assert all(col in header for col in ("Template", "Can decrypt", "With --require-sign-only", "Verified"))
    for kt in want["usable"]:
        row = next(line for line in lines if line.startswith(f"│ {kt} "))
        assert want["template"] in row and want["signature"][kt] in row, row
        cells = [c.strip() for c in row.strip("│").split("│")]
        if name != "tpm":
            assert cells[-3:] == ["no", "the same key", "yes"], row
        elif kt.startswith("rsa"):
            # COLUMNS=200 (the fixtures'): no cell wraps.
            assert cells[-3:] == ["no (allowed mechanisms), refused", "the same key", "yes"], row
        else:
            assert cells[-3:] == ["no (flag set, no mechanism)", "the same key", "yes"], row
    for line in ("Sign-only keys", "CKA_ALLOWED_MECHANISMS", "Certificate categories"):
        assert "(probe)" in next(x for x in lines if x.startswith(line))
    text = " ".join(proc.stdout.split())
    if name == "tpm":
        assert "Sign-only keys yes (probe) ec-p256, ec-p384, rsa-2048, rsa-3072 as made" in text
        assert "rsa-2048 and rsa-3072 keys are sign-only as made: the token sets CKA_DECRYPT on them, but tokenissue " \
               "pins them to signature mechanisms that cannot decrypt (CKA_ALLOWED_MECHANISMS without CKM_RSA_PKCS), " \
               "and the token enforces that list: CKM_SHA256_RSA_PKCS, CKM_SHA384_RSA_PKCS, CKM_SHA512_RSA_PKCS; a " \
               "test decryption was refused with CKR_MECHANISM_INVALID." in text  # fmt: skip
        assert "ec-p256 and ec-p384 keys are sign-only as made" in text
        assert "decrypt too" not in text and "With --require-sign-only (" not in text
    else:
        assert "decrypt" not in text.lower().replace("can decrypt", ""), text


def test_probe_leaves_the_token_exactly_as_it_was(impl: tuple[str, Any], software_ca: SoftwareCA) -> None:
    _name, t = impl
    _key_and_certificate(t, software_ca)
    before = _snapshot(t)
    assert len(before["keys"]) == 1 and len(before["certs"]) == 2  # the key's and the CA's
    state = Path(t.env["TOKENISSUE_STATE_DIR"])
    files_before = sorted(p.name for p in state.iterdir()) if state.exists() else []
    report = _check(t, "--probe")
    assert report["leftovers"] == []
    after = _snapshot(t)
    assert after == before
    assert not any("tokenissue-check" in str(o[1]) for o in after["raw"])
    # Nothing recorded either: a probe is not an enrollment.
    assert (sorted(p.name for p in state.iterdir()) if state.exists() else []) == files_before
    # And the token still works as before: the kept key signs.
    assert _run(t, "csr", "--token", "test", "--key", "kept", "--subject", "CN=after").returncode == 0


# -- PINs and exit codes ----------------------------------------------------------------------
def test_probe_needs_the_pin(softhsm: SoftHSM) -> None:
    raw = _raw_objects(softhsm)
    no_pin = _run(softhsm, "token", "check", "--token", "test", "--probe", unset=NO_PIN)
    assert no_pin.returncode == 5, no_pin.stderr
    assert no_pin.stdout == ""
    wrong = _run(softhsm, "token", "check", "--token", "test", "--probe", env={"TOKENISSUE_PIN": "999999"})
    assert wrong.returncode == 5, wrong.stderr
    assert "PIN" in wrong.stderr and "999999" not in wrong.stderr + wrong.stdout
    assert wrong.stdout == ""  # no half report
    assert _raw_objects(softhsm) == raw
    # Without --probe the same wrong PIN is not even used.
    assert _run(softhsm, "token", "check", "--token", "test", env={"TOKENISSUE_PIN": "999999"}).returncode == 0


def test_probe_with_a_wrong_pin_on_the_tpm_exits_5_and_claims_no_counter(locking_tpm: Any) -> None:
    wrong = _run(locking_tpm, "token", "check", "--token", "test", "--probe", env={"TOKENISSUE_PIN": "999999"})
    assert wrong.returncode == 5, wrong.stderr
    assert "few tries" not in wrong.stderr and "final try" not in wrong.stderr  # the TPM reports none
    assert wrong.stdout == ""
    locking_tpm.tpm.clear_lockout()


def test_exit_codes(softhsm: SoftHSM) -> None:
    assert _run(softhsm, "token", "check").returncode == 2  # --token missing
    assert _run(softhsm, "token", "check", "--token", "test", "--no-such").returncode == 2
    missing = _run(softhsm, "token", "check", "--token", "nope")
    assert missing.returncode == 4 and "nope" in missing.stderr
    assert _run(softhsm, "token", "check", "--token", "test").returncode == 0


def test_two_tpm_tokens_share_a_serial_and_are_named_by_label(tpm: Any) -> None:
    tpm.add_token("second")
    for label in ("test", "second"):
        proc = _run(tpm, "token", "check", "--token", label, "--json", unset=NO_PIN)
        assert proc.returncode == 0, proc.stderr
        report = json.loads(proc.stdout)
        assert report["token"]["label"] == label
        assert report["findings"]["serials_unique"]["value"] is False
        assert report["token"]["identity"].startswith(f"pkcs11:token={label};")
    by_serial = _run(tpm, "token", "check", "--token", "serial:0000000000000000", unset=NO_PIN)
    assert by_serial.returncode == 4 and "name one by label" in by_serial.stderr


def test_two_softhsm_tokens_have_unique_serials(softhsm: SoftHSM) -> None:
    softhsm.add_token("second")
    for label in ("test", "second"):
        report = json.loads(_run(softhsm, "token", "check", "--token", label, "--json").stdout)
        assert report["findings"]["serials_unique"] == {"value": True, "source": "tokens present"}
        assert report["token"]["identity"] == report["token"]["serial"]


# -- a module tokenissue has no record of -----------------------------------------------------
P11KIT_PROXY = Path("/usr/lib/x86_64-linux-gnu/p11-kit-proxy.so")


@pytest.mark.skipif(not P11KIT_PROXY.exists(), reason="p11-kit's proxy module is not installed")
def test_an_unknown_module_gets_unknown_not_softhsms_answers(softhsm: SoftHSM) -> None:
    """SoftHSM behind p11-kit's proxy: the module is 'PKCS#11 Kit', which tokenissue has no
    record of, so nothing is claimed without a probe, and PIN counters stay unknown even with one."""
    home = softhsm.root / "home"
    modules = home / ".config" / "pkcs11" / "modules"
    modules.mkdir(parents=True)
    # Only SoftHSM: the other system modules (OpenSC, the TPM's, p11-kit-trust) are switched off.
    (modules / "softhsm2.module").write_text(f"module: {SOFTHSM_MODULE}\n")
    for other in Path("/usr/share/p11-kit/modules").glob("*.module"):
        if other.name != "softhsm2.module":
            (modules / other.name).write_text("disable-in: p11-kit-proxy\n")
    env = {"HOME": str(home), "TOKENISSUE_MODULE": str(P11KIT_PROXY)}
    proc = _run(softhsm, "token", "check", "--token", "test", "--json", env=env, unset=NO_PIN)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["library"] == "PKCS#11 Kit"
    f = report["findings"]
    for k in ("sign_only_keys", "allowed_mechanisms", "certificate_category", "pin_counters"):
        assert f[k]["value"] is None and "not on record" in f[k]["source"], (k, f[k])
    assert f["pin_counters"]["lockout"] is None
    assert any("no record of this module's PIN behaviour" in n for n in report["notes"])
    probed = json.loads(_run(softhsm, "token", "check", "--token", "test", "--json", "--probe", env=env).stdout)
    assert probed["findings"]["sign_only_keys"] == {**SOFTHSM_SIGN_ONLY, "source": "probe"}
    assert probed["findings"]["pin_counters"]["value"] is None
    text = _run(softhsm, "token", "check", "--token", "test", env=env, unset=NO_PIN).stdout
    assert re.search(r"^PIN try counters\s+unknown\s+\(module not on record", text, re.M), text
