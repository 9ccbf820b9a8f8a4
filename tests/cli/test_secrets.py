"""A PIN never shows up: not in output, not in --debug tracebacks, not in files we write, not in argv."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
from cryptography import x509

from support.softhsm import SOFTHSM_MODULE, SoftHSM, make_softhsm
from support.software_ca import SoftwareCA

USER = "7391-secret-PIN"
SO = "so-8264-SECRET-x"
NEW = "8462-next-PIN-z"
WRONG = "5050-wrong-PIN-q"
SECRETS = (USER, SO, NEW, WRONG)


def _forms(secret: str) -> list[bytes]:
    raw = secret.encode()
    return [raw, raw.hex().encode(), raw.hex().upper().encode(), secret.encode("utf-16-le")]


def _leaks(data: bytes) -> list[str]:
    return [s for s in SECRETS if any(form in data for form in _forms(s))]


def _scan(root: Path, skip: Path) -> dict[str, list[str]]:
    """Files under ``root`` (except SoftHSM's own token store ``skip``) that contain a secret."""
    found = {}
    for path in root.rglob("*"):
        if path.is_file() and skip not in path.parents:
            hits = _leaks(path.read_bytes())
            if hits:
                found[str(path.relative_to(root))] = hits
    return found


def test_pin_never_appears_in_output_tracebacks_or_files(
    hsm_root: Path, software_ca: SoftwareCA, tmp_path: Path
) -> None:
    hsm = make_softhsm(hsm_root)
    outputs: list[tuple[str, subprocess.CompletedProcess[str]]] = []

    def run(*args: str, expect: int = 0, env: dict[str, str] | None = None, input: str | None = None) -> Any:
        proc = hsm.run(*args, env=env, input=input)
        outputs.append((" ".join(args), proc))
        assert proc.returncode == expect, (args, proc.returncode, proc.stderr)
        return proc

    run("--debug", "token", "init", "--label", "test", env={"TOKENISSUE_SO_PIN": SO, "TOKENISSUE_PIN": USER})
    hsm.env["TOKENISSUE_PIN"] = USER
    run("tokens", "--json")
    run("token", "info", "-t", "test")
    run("--debug", "keys", "generate", "-t", "test", "-l", "mine", "--json")
    pin_file = tmp_path / "pin"  # our own input file, outside the scanned tree
    pin_file.write_text(USER + "\n")
    pin_file.chmod(0o600)
    run("keys", "list", "-t", "test", "--pin-file", str(pin_file))
    run("keys", "list", "-t", "test", "--pin-file", "-", input=USER + "\n")
    run("keys", "list", "-t", "test", "--pin-env", "SOME_PIN", env={"SOME_PIN": USER})
    csr = run("--debug", "csr", "-t", "test", "-k", "mine", "-s", "CN=mine").stdout
    cert = software_ca.issue_pem_file(x509.load_pem_x509_csr(csr.encode()).public_key(), "mine", "mine.pem")
    run("--debug", "cert", "import", "-t", "test", str(cert))
    run("cert", "list", "-t", "test", "--json")
    run("cert", "export", "-t", "test", "-k", "mine", "-o", str(hsm_root / "state-export.pem"))

    # Failing commands, with tracebacks switched on.
    wrong = run("--debug", "keys", "list", "-t", "test", expect=5, env={"TOKENISSUE_PIN": WRONG})
    assert "Traceback" in wrong.stderr  # --debug really shows the traceback we are checking
    run("keys", "list", "-t", "test", expect=5, env={"TOKENISSUE_PIN": WRONG, "TOKENISSUE_DEBUG": "1"})
    run("--debug", "keys", "list", "-t", "test", "--pin-env", "X_PIN", expect=5, env={"X_PIN": WRONG})
    run("--debug", "csr", "-t", "test", "-k", "missing", "-s", "CN=x", expect=4)
    run("--debug", "keys", "generate", "-t", "test", "-l", "mine", expect=4)
    loose = tmp_path / "loose-pin"
    loose.write_text(USER)
    loose.chmod(0o644)
    run("--debug", "keys", "list", "-t", "test", "--pin-file", str(loose), expect=5)
    run("--debug", "token", "pin", "change", "-t", "test", expect=5,
        env={"TOKENISSUE_PIN": WRONG, "TOKENISSUE_NEW_PIN": NEW})
    run("--debug", "token", "pin", "unblock", "-t", "test", expect=5,
        env={"TOKENISSUE_SO_PIN": WRONG, "TOKENISSUE_NEW_PIN": NEW})
    run("--debug", "token", "init", "--label", "test", "--token", "test", "--yes", expect=5,
        env={"TOKENISSUE_SO_PIN": WRONG, "TOKENISSUE_PIN": NEW})
    run("--debug", "token", "pin", "change", "-t", "test", env={"TOKENISSUE_NEW_PIN": NEW})
    run("--debug", "keys", "list", "-t", "test", expect=5)  # the old PIN now fails
    run("--debug", "token", "pin", "unblock", "-t", "test", env={"TOKENISSUE_SO_PIN": SO, "TOKENISSUE_NEW_PIN": USER})
    run("keys", "list", "-t", "test")

    leaked = {cmd: _leaks((p.stdout + p.stderr).encode()) for cmd, p in outputs}
    assert {cmd: hits for cmd, hits in leaked.items() if hits} == {}

    tokens = hsm_root / "tokens"
    assert _scan(hsm_root, tokens) == {}
    # The scanner itself must be able to fail: a planted secret is found.
    canary = hsm_root / "state" / "canary"
    canary.parent.mkdir(parents=True, exist_ok=True)
    canary.write_text(f"x{USER}y")
    assert _scan(hsm_root, tokens) == {"state/canary": [USER]}


def test_pin_travels_to_the_init_helper_on_stdin_not_argv(
    session_softhsm: SoftHSM, monkeypatch: pytest.MonkeyPatch
) -> None:
    """token init runs a PyKCS11 child process; its argv (visible in ps) must not carry a PIN."""
    from tokenissue import p11
    from tokenissue.credentials import Pin
    from tokenissue.p11 import _init

    seen: list[dict[str, Any]] = []
    real_run = subprocess.run

    def recording_run(args: Any, **kwargs: Any) -> Any:
        seen.append({"args": list(args), "input": kwargs.get("input") or "", "env": kwargs.get("env")})
        return real_run(args, **kwargs)

    monkeypatch.setattr(_init.subprocess, "run", recording_run)
    serial = p11.init_token("argv-check", Pin(SO), Pin(USER), module=SOFTHSM_MODULE)
    assert len(seen) == 1
    assert not _leaks(" ".join(seen[0]["args"]).encode())
    assert seen[0]["env"] is None or not _leaks(json.dumps(seen[0]["env"]).encode())
    assert USER in seen[0]["input"]  # it went over the pipe instead
    assert SO in seen[0]["input"]
    labels = {t.label: t.serial for t in p11.load_module(SOFTHSM_MODULE).tokens()}
    assert labels["argv-check"] == serial


def _tree() -> list[tuple[str, Any]]:
    from tokenissue.cli._app import app

    out: list[tuple[str, Any]] = []

    def walk(cmd: Any, path: str) -> None:
        out.append((path, cmd))
        for name, sub in getattr(cmd, "commands", {}).items():
            walk(sub, f"{path} {name}")

    walk(typer.main.get_command(app), "tokenissue")
    return out


def test_no_option_takes_a_pin_value() -> None:
    forbidden = {"--pin", "--so-pin", "--user-pin", "--new-pin", "--puk", "--password", "--secret"}
    offenders = []
    pin_options = []
    for path, cmd in _tree():
        for param in cmd.params:
            if param.param_type_name != "option":
                continue
            names = [*param.opts, *param.secondary_opts]
            takes_value = not param.is_flag and not param.count
            if set(names) & forbidden:
                offenders.append(f"{path} {names}")
            for name in names:
                if "pin" in name.lower() and takes_value:
                    pin_options.append(name)
                    # A PIN option may only say where the PIN is: a file or a variable name.
                    if not name.endswith(("-file", "-env")):
                        offenders.append(f"{path} {name}")
    assert offenders == []
    # The walk did see the PIN-source options, so it was looking in the right place.
    assert {"--pin-file", "--pin-env", "--so-pin-file", "--new-pin-file"} <= set(pin_options)


def test_tracebacks_never_show_locals() -> None:
    from tokenissue.cli import _app

    assert _app.app.pretty_exceptions_show_locals is False


def test_a_pin_file_that_is_not_utf8_is_a_pin_error_without_its_bytes(softhsm: SoftHSM) -> None:
    """Latin-1 bytes in a PIN file (or on stdin): exit 5 with a sentence, not exit 1 with
    'Unexpected error: UnicodeDecodeError', and the bytes are never echoed."""
    pin_file = softhsm.root / "pin.latin1"
    pin_file.write_bytes(b"p\xe4ss\xff9\n")
    pin_file.chmod(0o600)
    env = {k: v for k, v in softhsm.env.items() if k != "TOKENISSUE_PIN"}
    for args, stdin in ((("--pin-file", str(pin_file)), None), (("--pin-file", "-"), b"p\xe4ss\xff9\n")):
        proc = subprocess.run(
            [sys.executable, "-m", "tokenissue.cli", "keys", "list", "-t", "test", *args],
            input=stdin, capture_output=True, env=env, timeout=120, check=False,
        )  # fmt: skip
        err = proc.stderr.decode("utf-8", "replace")
        assert proc.returncode == 5, err
        assert "not UTF-8" in err and "Unexpected" not in err, err
        assert b"\xe4" not in proc.stderr + proc.stdout and "äss" not in err
