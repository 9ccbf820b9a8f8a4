"""The token commands through the real CLI (subprocesses) against real SoftHSM tokens.

Exit statuses (STYLE.md): 0 ok, 2 usage, 4 token (not found, key not found, duplicate), 5 PIN.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import typer
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs7

from tokenissue import p11
from tokenissue.credentials import Pin

from support.cli import SO_PIN, USER_PIN
from support.softhsm import SOFTHSM_MODULE, SoftHSM
from support.software_ca import SoftwareCA

SPY = Path("/usr/lib/x86_64-linux-gnu/pkcs11-spy.so")


def _key_with_public(hsm: SoftHSM, label: str) -> tuple[str, Any]:
    """Generate an EC key on the token; return its id (hex) and public key, taken from a CSR."""
    kid = json.loads(hsm.run("keys", "generate", "-t", "test", "-l", label, "--json", check=True).stdout)["id"]
    csr = x509.load_pem_x509_csr(hsm.run("csr", "-t", "test", "-k", label, "-s", f"CN={label}", check=True).stdout.encode())
    return kid, csr.public_key()


def _run(hsm: SoftHSM, *args: str, unset: tuple[str, ...], env: dict[str, str] | None = None,
         input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Like SoftHSM.run, but with the variables in ``unset`` removed from the environment."""
    full_env = {k: v for k, v in {**hsm.env, **(env or {})}.items() if k not in unset}
    return subprocess.run([sys.executable, "-m", "tokenissue.cli", *args], input=input, capture_output=True,
                          text=True, env=full_env, timeout=300, check=False)


def _json(hsm: SoftHSM, *args: str) -> Any:
    return json.loads(hsm.run(*args, "--json", check=True).stdout)


def _stderr_lines(proc: Any) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.strip()]


# -- exit codes -------------------------------------------------------------------------------
def test_exit_codes(softhsm: SoftHSM) -> None:
    assert softhsm.run("tokens").returncode == 0
    assert softhsm.run("no-such-command").returncode == 2
    assert softhsm.run("keys", "generate", "-t", "test").returncode == 2  # --label missing
    assert softhsm.run("keys", "generate", "-t", "test", "-l", "k", "--type", "ec-p999").returncode == 2
    assert softhsm.run("keys", "list", "-t", "test", "--no-such-option").returncode == 2
    not_found = softhsm.run("keys", "list", "-t", "nope")
    assert not_found.returncode == 4
    assert "nope" in not_found.stderr
    assert softhsm.run("token", "info", "-t", "serial:0000000000000000").returncode == 4
    assert softhsm.run("keys", "delete", "-t", "test", "-k", "nope", "-y").returncode == 4
    assert softhsm.run("cert", "export", "-t", "test", "-k", "nope").returncode == 4
    assert softhsm.run("keys", "list", "-t", "test", env={"TOKENISSUE_PIN": "999999"}).returncode == 5
    for proc in (not_found,):
        assert "Traceback" not in proc.stderr


def test_wrong_pin_exits_5_once_then_so_unblock_works(softhsm: SoftHSM) -> None:
    env: dict[str, str] = {"TOKENISSUE_PIN": "999999"}
    spy_log = softhsm.root / "spy.log"
    if SPY.exists():
        # OpenSC's pkcs11-spy logs every call the CLI makes into the real SoftHSM.
        env.update({"TOKENISSUE_MODULE": str(SPY), "PKCS11SPY": SOFTHSM_MODULE, "PKCS11SPY_OUTPUT": str(spy_log)})
    proc = softhsm.run("keys", "list", "-t", "test", env=env)
    assert proc.returncode == 5, proc.stderr
    lines = _stderr_lines(proc)
    assert len(lines) == 1, proc.stderr
    assert "PIN" in lines[0]
    assert "not retried" in lines[0]
    assert "Traceback" not in proc.stderr
    if SPY.exists():
        log = spy_log.read_text(errors="replace")
        assert log.count("C_Login") == 1, "a refused PIN must never be tried again"
        assert log.count("CKR_PIN_INCORRECT") == 1

    state = _json(softhsm, "tokens")[0]
    assert state["user_pin_count_low"] is True  # SoftHSM flags every failure
    assert state["pin_state"] == "count-low"

    unblock = softhsm.run("token", "pin", "unblock", "-t", "test",
                          env={"TOKENISSUE_SO_PIN": SO_PIN, "TOKENISSUE_NEW_PIN": "112233"})
    assert unblock.returncode == 0, unblock.stderr
    assert softhsm.run("keys", "list", "-t", "test", env={"TOKENISSUE_PIN": "112233"}).returncode == 0
    assert _json(softhsm, "tokens")[0]["pin_state"] == "ok"  # a good login clears the warning
    assert softhsm.run("keys", "list", "-t", "test").returncode == 5  # the old user PIN is gone


def test_wrong_so_pin_on_unblock_exits_5(softhsm: SoftHSM) -> None:
    proc = softhsm.run("token", "pin", "unblock", "-t", "test",
                       env={"TOKENISSUE_SO_PIN": "00000000", "TOKENISSUE_NEW_PIN": "112233"})
    assert proc.returncode == 5
    assert "SO PIN" in proc.stderr
    assert softhsm.run("keys", "list", "-t", "test").returncode == 0  # the user PIN is unchanged


# -- PIN sources ------------------------------------------------------------------------------
def _pin_file(hsm: SoftHSM, content: str, mode: int) -> Path:
    path = hsm.root / f"pin-{mode:o}-{len(content)}"
    path.write_text(content)
    path.chmod(mode)
    return path


def test_pin_file_mode_0644_refused(softhsm: SoftHSM) -> None:
    path = _pin_file(softhsm, USER_PIN + "\n", 0o644)
    proc = _run(softhsm, "keys", "list", "-t", "test", "--pin-file", str(path), unset=("TOKENISSUE_PIN",))
    assert proc.returncode == 5
    assert "chmod 600" in proc.stderr
    group_only = _pin_file(softhsm, USER_PIN, 0o640)
    assert softhsm.run("keys", "list", "-t", "test", "--pin-file", str(group_only)).returncode == 5


@pytest.mark.parametrize("content", [USER_PIN + "\n", USER_PIN, USER_PIN + "\r\n"], ids=["lf", "bare", "crlf"])
def test_pin_file_0600_accepted_newline_stripped(softhsm: SoftHSM, content: str) -> None:
    path = _pin_file(softhsm, content, 0o600)
    # A wrong PIN in the environment proves the file wins.
    proc = softhsm.run("keys", "list", "-t", "test", "--pin-file", str(path), env={"TOKENISSUE_PIN": "999999"})
    assert proc.returncode == 0, proc.stderr


def test_pin_file_missing_or_empty(softhsm: SoftHSM) -> None:
    assert softhsm.run("keys", "list", "-t", "test", "--pin-file", str(softhsm.root / "nope")).returncode == 5
    empty = _pin_file(softhsm, "", 0o600)
    assert softhsm.run("keys", "list", "-t", "test", "--pin-file", str(empty)).returncode == 5


def test_pin_file_dash_reads_stdin(softhsm: SoftHSM) -> None:
    ok = _run(softhsm, "keys", "list", "-t", "test", "--pin-file", "-", input=USER_PIN + "\n", unset=("TOKENISSUE_PIN",))
    assert ok.returncode == 0, ok.stderr
    wrong = softhsm.run("keys", "list", "-t", "test", "--pin-file", "-", input="999999\n")
    assert wrong.returncode == 5
    empty = softhsm.run("keys", "list", "-t", "test", "--pin-file", "-", input="")
    assert empty.returncode == 5


def test_pin_env(softhsm: SoftHSM) -> None:
    ok = _run(softhsm, "keys", "list", "-t", "test", "--pin-env", "MY_TOKEN_PIN",
                     env={"MY_TOKEN_PIN": USER_PIN}, unset=("TOKENISSUE_PIN",))
    assert ok.returncode == 0, ok.stderr
    wrong = softhsm.run("keys", "list", "-t", "test", "--pin-env", "MY_TOKEN_PIN", env={"MY_TOKEN_PIN": "999999"})
    assert wrong.returncode == 5
    unset = softhsm.run("keys", "list", "-t", "test", "--pin-env", "NOT_SET_ANYWHERE")
    assert unset.returncode == 5
    assert "NOT_SET_ANYWHERE" in unset.stderr


def test_no_tty_and_no_pin_exits_5_naming_the_variable(softhsm: SoftHSM) -> None:
    proc = _run(softhsm, "keys", "list", "-t", "test", input="", unset=("TOKENISSUE_PIN",))
    assert proc.returncode == 5
    assert "TOKENISSUE_PIN" in proc.stderr
    assert len(_stderr_lines(proc)) == 1


# -- tokens, token init / info / pin ----------------------------------------------------------
def test_tokens_json_fields(softhsm: SoftHSM) -> None:
    tokens = _json(softhsm, "tokens")
    assert len(tokens) == 1
    t = tokens[0]
    assert t["label"] == "test"
    assert t["manufacturer"] == "SoftHSM project"
    assert t["model"] == "SoftHSM v2"
    assert t["pin_state"] == "ok"
    assert t["initialized"] is True
    assert t["user_pin_count_low"] is False
    assert t["user_pin_final_try"] is False
    assert t["user_pin_locked"] is False
    assert len(t["serial"]) == 16
    int(t["serial"], 16)
    info = _json(softhsm, "token", "info", "-t", f"serial:{t['serial']}")
    assert info["label"] == "test"
    assert info["serial"] == t["serial"]
    by_uri = _json(softhsm, "token", "info", "-t", t["uri"])
    assert by_uri["serial"] == t["serial"]
    table = softhsm.run("tokens", check=True).stdout
    assert t["serial"] in table


def test_token_init_creates_a_second_token(softhsm: SoftHSM) -> None:
    proc = softhsm.run("token", "init", "--label", "second", "--json",
                       env={"TOKENISSUE_SO_PIN": SO_PIN, "TOKENISSUE_PIN": "424242"})
    assert proc.returncode == 0, proc.stderr
    new_serial = json.loads(proc.stdout)["serial"]
    tokens = {t["label"]: t for t in _json(softhsm, "tokens")}
    assert set(tokens) == {"test", "second"}
    assert tokens["second"]["serial"] == new_serial
    assert tokens["test"]["serial"] != new_serial
    # The new token has its own user PIN.
    assert softhsm.run("keys", "list", "-t", "second", env={"TOKENISSUE_PIN": "424242"}).returncode == 0
    assert softhsm.run("keys", "list", "-t", "second").returncode == 5
    # SoftHSM always offers one more free, uninitialised slot; --all shows it.
    every = _json(softhsm, "tokens", "--all")
    assert len(every) == 3
    assert [t["initialized"] for t in every].count(False) == 1

    dup = softhsm.run("token", "init", "--label", "second", env={"TOKENISSUE_SO_PIN": SO_PIN})
    assert dup.returncode == 2
    assert len(_json(softhsm, "tokens")) == 2


def test_pin_change(softhsm: SoftHSM) -> None:
    proc = softhsm.run("token", "pin", "change", "-t", "test", env={"TOKENISSUE_NEW_PIN": "975310"})
    assert proc.returncode == 0, proc.stderr
    assert softhsm.run("keys", "list", "-t", "test").returncode == 5
    assert softhsm.run("keys", "list", "-t", "test", env={"TOKENISSUE_PIN": "975310"}).returncode == 0

    wrong_old = softhsm.run("token", "pin", "change", "-t", "test",
                            env={"TOKENISSUE_PIN": "000000", "TOKENISSUE_NEW_PIN": "111111"})
    assert wrong_old.returncode == 5
    assert softhsm.run("keys", "list", "-t", "test", env={"TOKENISSUE_PIN": "975310"}).returncode == 0


def test_pin_change_too_short_is_refused(softhsm: SoftHSM) -> None:
    proc = softhsm.run("token", "pin", "change", "-t", "test", env={"TOKENISSUE_NEW_PIN": "1"})
    assert proc.returncode == 5
    assert softhsm.run("keys", "list", "-t", "test").returncode == 0


# -- keys delete --------------------------------------------------------------------------------
def _objects_with_id(hsm: SoftHSM, kid: bytes) -> dict[str, int]:
    """Count objects of each class under ``kid``, read in this process straight from the token."""
    from pkcs11 import Attribute, ObjectClass

    mod = p11.load_module(SOFTHSM_MODULE)
    mod.refresh()
    with mod.session(p11.TokenSelector(label="test"), Pin(USER_PIN)) as raw:
        return {
            cls.name: len(list(raw.get_objects({Attribute.CLASS: cls, Attribute.ID: kid})))
            for cls in (ObjectClass.PRIVATE_KEY, ObjectClass.PUBLIC_KEY, ObjectClass.CERTIFICATE)
        }


def test_keys_delete_removes_key_pubkey_and_cert(session_softhsm: SoftHSM, software_ca: SoftwareCA) -> None:
    hsm = session_softhsm
    kid, pub = _key_with_public(hsm, "gone")
    keep_id, keep_pub = _key_with_public(hsm, "kept")
    for label, key in (("gone", pub), ("kept", keep_pub)):
        hsm.run("cert", "import", "-t", "test", str(software_ca.issue_pem_file(key, label, f"{label}.pem")), check=True)
    assert _objects_with_id(hsm, bytes.fromhex(kid)) == {"PRIVATE_KEY": 1, "PUBLIC_KEY": 1, "CERTIFICATE": 1}

    declined = hsm.run("keys", "delete", "-t", "test", "-k", "gone", input="n\n")
    assert declined.returncode != 0
    assert _objects_with_id(hsm, bytes.fromhex(kid))["PRIVATE_KEY"] == 1

    proc = hsm.run("keys", "delete", "-t", "test", "-k", "gone", "-y")
    assert proc.returncode == 0, proc.stderr
    assert _objects_with_id(hsm, bytes.fromhex(kid)) == {"PRIVATE_KEY": 0, "PUBLIC_KEY": 0, "CERTIFICATE": 0}
    assert _objects_with_id(hsm, bytes.fromhex(keep_id)) == {"PRIVATE_KEY": 1, "PUBLIC_KEY": 1, "CERTIFICATE": 1}
    assert [k["label"] for k in _json(hsm, "keys", "list", "-t", "test")] == ["kept"]

    proc = hsm.run("keys", "delete", "-t", "test", "-k", f"id:{keep_id}", "-y", "--keep-certificate")
    assert proc.returncode == 0, proc.stderr
    assert _objects_with_id(hsm, bytes.fromhex(keep_id)) == {"PRIVATE_KEY": 0, "PUBLIC_KEY": 0, "CERTIFICATE": 1}
    assert hsm.run("keys", "delete", "-t", "test", "-k", "gone", "-y").returncode == 4


# -- certificates -------------------------------------------------------------------------------
def test_cert_import_stores_under_key_id_and_label(softhsm: SoftHSM, software_ca: SoftwareCA) -> None:
    kid, pub = _key_with_public(softhsm, "alice")
    _key_with_public(softhsm, "bob")  # a second key, so the match is really searched for
    path = software_ca.issue_pem_file(pub, "alice", "alice.pem")
    stored = _json(softhsm, "cert", "import", "-t", "test", str(path))
    assert [(c["id"], c["label"], c["ca"], c["has_key"]) for c in stored] == [(kid, "alice", False, True)]

    listed = _json(softhsm, "cert", "list", "-t", "test")
    assert [(c["id"], c["label"], c["subject"]) for c in listed] == [(kid, "alice", "CN=alice")]
    keys = {k["label"]: k for k in _json(softhsm, "keys", "list", "-t", "test")}
    assert keys["alice"]["has_certificate"] is True
    assert keys["bob"]["has_certificate"] is False

    # Importing the same certificate again does not add a second object.
    softhsm.run("cert", "import", "-t", "test", str(path), check=True)
    assert len(_json(softhsm, "cert", "list", "-t", "test")) == 1
    # Certificates are public objects: listed without a PIN too.
    public = _run(softhsm, "cert", "list", "-t", "test", "--no-login", "--json", input="", unset=("TOKENISSUE_PIN",))
    assert public.returncode == 0, public.stderr
    assert [c["id"] for c in json.loads(public.stdout)] == [kid]


def test_cert_import_refuses_a_cert_matching_no_key(softhsm: SoftHSM, software_ca: SoftwareCA) -> None:
    _key_with_public(softhsm, "alice")
    before = _json(softhsm, "cert", "list", "-t", "test")
    stranger = ec.generate_private_key(ec.SECP256R1()).public_key()
    lone = software_ca.issue_pem_file(stranger, "stranger", "stranger.pem")
    bundle = software_ca.issue_pem_file(stranger, "stranger", "stranger-chain.pem", with_ca=True)
    for path in (lone, bundle):
        proc = softhsm.run("cert", "import", "-t", "test", str(path))
        assert proc.returncode == 4, proc.stderr
        assert "stranger" in proc.stderr
        assert len(_stderr_lines(proc)) == 1
    assert _json(softhsm, "cert", "list", "-t", "test") == before == []

    # Named key, wrong certificate: the test signature fails and nothing is stored either.
    mismatch = softhsm.run("cert", "import", "-t", "test", str(lone), "--key", "alice")
    assert mismatch.returncode != 0
    assert _json(softhsm, "cert", "list", "-t", "test") == []

    junk = softhsm.root / "junk.pem"
    junk.write_text("not a certificate\n")
    assert softhsm.run("cert", "import", "-t", "test", str(junk)).returncode == 2


def test_cert_import_ca_cert(softhsm: SoftHSM, software_ca: SoftwareCA) -> None:
    ca_file = software_ca.root / "ca.pem"
    assert softhsm.run("cert", "import", "-t", "test", str(ca_file)).returncode == 2  # needs --ca-cert
    stored = _json(softhsm, "cert", "import", "-t", "test", str(ca_file), "--ca-cert")
    ski = x509.SubjectKeyIdentifier.from_public_key(software_ca.cert.public_key()).digest.hex()
    assert [(c["id"], c["label"], c["ca"], c["has_key"]) for c in stored] == [(ski, "Test Software CA", True, False)]
    listed = _json(softhsm, "cert", "list", "-t", "test")
    assert [(c["id"], c["ca"]) for c in listed] == [(ski, True)]

    _, pub = _key_with_public(softhsm, "alice")
    leaf = software_ca.issue_pem_file(pub, "alice", "alice.pem")
    assert softhsm.run("cert", "import", "-t", "test", str(leaf), "--ca-cert").returncode == 2


def test_cert_list_shows_validity(softhsm: SoftHSM, software_ca: SoftwareCA) -> None:
    _, pub = _key_with_public(softhsm, "alice")
    _, old_pub = _key_with_public(softhsm, "old")
    cert = software_ca.issue(pub, "alice", days=30)
    now = datetime.now(UTC)
    expired = software_ca.issue(old_pub, "old", not_before=now - timedelta(days=40), not_after=now - timedelta(days=10))
    for name, c in (("alice", cert), ("old", expired)):
        (software_ca.root / f"{name}.pem").write_bytes(c.public_bytes(serialization.Encoding.PEM))
        softhsm.run("cert", "import", "-t", "test", str(software_ca.root / f"{name}.pem"), check=True)

    rows = {r["label"]: r for r in _json(softhsm, "cert", "list", "-t", "test")}
    alice, old = rows["alice"], rows["old"]
    assert datetime.fromisoformat(alice["not_before"]) == cert.not_valid_before_utc
    assert datetime.fromisoformat(alice["not_after"]) == cert.not_valid_after_utc
    assert alice["serial"] == format(cert.serial_number, "x")
    assert alice["issuer"] == "CN=Test Software CA"
    assert alice["valid_now"] is True
    assert alice["days_left"] in (29, 30)
    assert old["valid_now"] is False
    assert old["days_left"] < 0
    assert datetime.fromisoformat(old["not_after"]) == expired.not_valid_after_utc
    table = softhsm.run("cert", "list", "-t", "test", check=True).stdout
    assert cert.not_valid_after_utc.strftime("%Y-%m-%d") in table


def test_cert_export_round_trips(softhsm: SoftHSM, software_ca: SoftwareCA) -> None:
    kid, pub = _key_with_public(softhsm, "alice")
    bundle = software_ca.issue_pem_file(pub, "alice", "alice-chain.pem", with_ca=True)
    stored = _json(softhsm, "cert", "import", "-t", "test", str(bundle))
    assert sorted(c["ca"] for c in stored) == [False, True]
    leaf = x509.load_pem_x509_certificates(bundle.read_bytes())[0]

    def export(*args: str) -> bytes:
        out = softhsm.root / "out.bin"
        out.unlink(missing_ok=True)
        proc = softhsm.run("cert", "export", "-t", "test", *args, "-o", str(out))
        assert proc.returncode == 0, proc.stderr
        return out.read_bytes()

    assert x509.load_pem_x509_certificates(export("-k", "alice", "--chain", "--format", "pem")) == [
        leaf, software_ca.cert
    ]
    # PKCS#7 keeps certificates in a DER SET OF, which has no order.
    p7 = pkcs7.load_der_pkcs7_certificates(export("-k", f"id:{kid}", "--chain", "--format", "p7b"))
    assert sorted(p7, key=lambda c: c.serial_number) == sorted([leaf, software_ca.cert], key=lambda c: c.serial_number)
    assert len(p7) == 2
    assert x509.load_der_x509_certificate(export("-k", "alice", "--format", "der")) == leaf
    stdout = softhsm.run("cert", "export", "-t", "test", "-k", "alice", check=True).stdout
    assert x509.load_pem_x509_certificates(stdout.encode()) == [leaf]

    both = softhsm.run("cert", "export", "-t", "test", "-k", "alice", "--chain", "--format", "der",
                       "-o", str(softhsm.root / "x.der"))
    assert both.returncode == 2
    assert softhsm.run("cert", "export", "-t", "test", "-k", "alice", "--format", "p7b").returncode == 2


def test_cert_export_of_key_without_cert_exits_4(softhsm: SoftHSM) -> None:
    _key_with_public(softhsm, "bare")
    proc = softhsm.run("cert", "export", "-t", "test", "-k", "bare")
    assert proc.returncode == 4
    assert "bare" in proc.stderr


# -- help ---------------------------------------------------------------------------------------
# typer >= 0.2x builds its commands from its own copy of click (typer._click), so the tree is
# walked by duck typing rather than isinstance checks against click's classes.
def _walk(cmd: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    out = [(path, cmd)]
    for name, sub in getattr(cmd, "commands", {}).items():
        out.extend(_walk(sub, (*path, name)))
    return out


def _is_option(param: Any) -> bool:
    return bool(param.param_type_name == "option")


def _command_tree() -> list[tuple[tuple[str, ...], Any]]:
    from tokenissue.cli._app import app

    return _walk(typer.main.get_command(app))


def test_command_tree_covers_the_token_core() -> None:
    paths = {" ".join(p) for p, _ in _command_tree()}
    for needed in ("tokens", "token info", "token init", "token pin change", "token pin unblock",
                   "keys generate", "keys list", "keys delete", "csr", "cert import", "cert list", "cert export"):
        assert needed in paths


def test_every_option_has_help_text() -> None:
    missing = [
        f"{' '.join(path) or 'tokenissue'} {param.opts[0]}"
        for path, cmd in _command_tree()
        for param in cmd.params
        if _is_option(param) and not param.hidden and not (param.help or "").strip()
    ]
    assert missing == []
    no_doc = [" ".join(p) for p, cmd in _command_tree() if p and not (cmd.help or cmd.short_help or "").strip()]
    assert no_doc == []


def test_every_argument_shows_its_help_text(capsys: pytest.CaptureFixture[str]) -> None:
    """SERIAL, REF, FILE, ...: each says what it is in --help. (click 8.5 gave Argument a help of
    its own that overwrote typer's, so the text was declared but never shown.)"""
    from tokenissue.cli import main

    arguments = [(path, p) for path, cmd in _command_tree() for p in cmd.params if p.param_type_name == "argument"]
    assert len(arguments) >= 7
    unshown = []
    for path, param in arguments:
        assert main([*path, "--help"]) == 0
        shown = " ".join(capsys.readouterr().out.replace("│", " ").split())
        if not (param.help or "").strip() or " ".join(param.help.split()) not in shown:
            unshown.append(f"{' '.join(path)} {param.name}")
    assert unshown == []


# One name per concept: the CA is --ca and the renewal window --within in every command; the old
# names keep working for scripts but are not shown.
OLD_NAMES = {"--ca-dir": "--ca", "-d": "--ca", "--expiring": "--within"}


def test_old_option_names_are_hidden_and_never_taken_by_another_option(capsys: pytest.CaptureFixture[str]) -> None:
    from tokenissue.cli import main
    from tokenissue.cli._run import HIDDEN_ALIASES

    assert {old: new for new, olds in HIDDEN_ALIASES.items() for old in olds} == OLD_NAMES
    for path, cmd in _command_tree():
        declared = [o for p in cmd.params if _is_option(p) for o in (*p.opts, *p.secondary_opts)]
        assert not set(declared) & set(OLD_NAMES), path
        if path:
            assert main([*path, "--help"]) == 0
            out = capsys.readouterr().out
            assert "--ca-dir" not in out and "--expiring" not in out, path


def test_ca_and_ra_commands_take_ca_and_still_understand_ca_dir(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    from tokenissue.cli import main

    missing = str(tmp_path / "no-ca")
    for spelling in (["--ca", missing], ["--ca-dir", missing], ["-d", missing], [f"--ca-dir={missing}"]):
        for command in (["ca", "list"], ["ra", "list"]):
            assert main([*command, *spelling]) == 3, (command, spelling)
            assert "is not a CA directory" in " ".join(capfd.readouterr().err.split()), (command, spelling)


def test_ca_list_sweep_window_is_within_and_expiring_still_works(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    from tokenissue.cli import main

    assert main(["ca", "list", "--ca", str(tmp_path), "--hook", "true"]) == 2
    assert "give --within (e.g. 30d) or --due too" in capfd.readouterr().err
    for spelling in ("--within", "--expiring"):
        assert main(["ca", "list", "--ca", str(tmp_path), spelling, "soon"]) == 2, spelling
        assert "'soon' is not a duration like 30d, 12h, 30m or 2w." in capfd.readouterr().err


def test_a_ca_server_address_given_to_a_ca_command_gets_a_sentence(capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """A holder's TOKENISSUE_CA (a CMP URL) reaching 'ca list' is named as what it is."""
    from tokenissue.cli import main

    monkeypatch.delenv("TOKENISSUE_CA_DIR", raising=False)
    monkeypatch.setenv("TOKENISSUE_CA", "cmp+https://ca.example.org/pkix/")
    assert main(["ca", "list"]) == 3
    err = " ".join(capfd.readouterr().err.split())
    assert "looks like a CA server's address" in err and "CA's own directory" in err


def test_option_help_states_units_and_every_ca_kind(capsys: pytest.CaptureFixture[str]) -> None:
    from tokenissue.cli import main

    for command in (["status"], ["renew"], ["ca", "list"]):
        assert main([*command, "--help"]) == 0
        out = " ".join(capsys.readouterr().out.replace("│", " ").split())
        assert "30d (days), 12h (hours), 30m (minutes)" in out, command
    for command in (["enroll"], ["renew"], ["revoke"]):
        assert main([*command, "--help"]) == 0
        out = " ".join(capsys.readouterr().out.replace("│", " ").split())
        assert "cmp+https://" in out and "acme+https://" in out, command


def test_one_duration_syntax_everywhere() -> None:
    from datetime import timedelta

    from tokenissue.cli._common import parse_duration
    from tokenissue.errors import UsageError

    assert parse_duration("30m") == timedelta(minutes=30)  # minutes, as ra register --valid always read it
    assert parse_duration("2w") == parse_duration("14") == timedelta(days=14)
    assert parse_duration(" 12H ") == timedelta(hours=12)
    assert parse_duration("90s") == timedelta(seconds=90)
    for bad in ("", "soon", "-1d", "nan", "inf", "36501d", "1y"):
        with pytest.raises(UsageError):
            parse_duration(bad)


def test_help_exits_0_for_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    from tokenissue.cli import main

    for path, _ in _command_tree():
        assert main([*path, "--help"]) == 0, path
        out = capsys.readouterr().out
        assert "Usage" in out, path


def test_help_subprocess(softhsm: SoftHSM) -> None:
    proc = softhsm.run("--help")
    assert proc.returncode == 0
    assert "tokenissue" in proc.stdout
    assert softhsm.run("--version").returncode == 0


def test_a_confirmation_without_a_terminal_is_a_usage_error_naming_yes(softhsm: SoftHSM) -> None:
    """'keys delete' cannot ask without a terminal: exit 2 and the sentence names --yes (it was
    'Aborted.' and exit 130, the status of an interrupt); the key stays."""
    softhsm.run("keys", "generate", "-t", "test", "-l", "keep-me", check=True)
    proc = softhsm.run("keys", "delete", "-t", "test", "-k", "keep-me")
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "--yes" in proc.stderr and "Aborted" not in proc.stderr, proc.stderr
    keys = json.loads(softhsm.run("keys", "list", "-t", "test", "--json", check=True).stdout)
    assert [k["label"] for k in keys] == ["keep-me"]
