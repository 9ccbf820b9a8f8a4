"""``tokenissue enroll / renew / revoke`` at Pebble, Debian's ACME test server, with the key on SoftHSM.

Pebble and pebble-challtestsrv run on 127.0.0.1 (tests/support/acme.py, stopped by PID; the
fixtures are in tests/interop/conftest.py). challtestsrv answers every A query with 127.0.0.1,
so Pebble validates http-01 for any domain by connecting to 127.0.0.1:HTTP_PORT, where
``tokenissue`` runs its own responder (``--http-01-address``); dns-01 goes through a
``--dns-hook`` that sets the TXT record in challtestsrv. The issued chain is checked against the root Pebble serves on its management port.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from support.acme import CHALLTESTSRV, EAB_EXAMPLE, PEBBLE, Pebble
from support.cli import USER_PIN
from support.openssl import openssl
from support.servers import free_port
from support.softhsm import SoftHSM

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(not PEBBLE.exists() or not CHALLTESTSRV.exists(), reason="pebble is not installed (make deps)"),
]

DOMAIN = "test.example"


def _root_file(p: Pebble, d: Path) -> Path:
    f = d / "pebble-root.pem"
    f.write_bytes(p.root().public_bytes(serialization.Encoding.PEM))
    return f


def acme_args(p: Pebble, d: Path, *extra: str, http01: str | None = None) -> list[str]:
    return [
        "--ca", p.location, "--acme-trust", str(p.trust), "--ca-trust", str(_root_file(p, d)),
        "--http-01-address", http01 or p.http01_address, *extra,
    ]  # fmt: skip


def enroll(hsm: SoftHSM, p: Pebble, *extra: str, http01: str | None = None) -> Any:
    return hsm.run("enroll", "-t", "test", "--domain", DOMAIN, *acme_args(p, hsm.root, *extra, http01=http01), "--json")


def keys(hsm: SoftHSM) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads(hsm.run("keys", "list", "-t", "test", "--json", check=True).stdout)
    return rows


def certs(hsm: SoftHSM) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads(hsm.run("cert", "list", "-t", "test", "--json", check=True).stdout)
    return rows


def test_enroll_http01_renew_revoke(softhsm: SoftHSM, pebble: Pebble) -> None:
    proc = enroll(softhsm, pebble)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["subject"] == f"CN={DOMAIN}" and out["profile"] == "acme"
    assert "validating test.example (http-01)" in proc.stderr

    # The key never left the token: generated there, sensitive, never extractable.
    (key,) = [k for k in keys(softhsm) if k["id"] == out["key_id"]]
    assert key["local"] and key["sensitive"] and key["always_sensitive"] and key["never_extractable"]
    assert not key["extractable"]
    # The certificate is on the token under the key's ID, and its chain verifies to Pebble's root.
    leaf = softhsm.root / "leaf.pem"
    softhsm.run("cert", "export", "-t", "test", "-k", out["label"], "-o", str(leaf), "--chain", check=True)
    chain = x509.load_pem_x509_certificates(leaf.read_bytes())
    assert chain[0].serial_number == int(out["serial"], 16)
    san = chain[0].extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [DOMAIN]
    (softhsm.root / "only-leaf.pem").write_bytes(chain[0].public_bytes(serialization.Encoding.PEM))
    inter = softhsm.root / "inter.pem"
    inter.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain[1:]))
    root = _root_file(pebble, softhsm.root)
    v = openssl("verify", "-CAfile", str(root), "-untrusted", str(inter), str(softhsm.root / "only-leaf.pem"))
    assert v.returncode == 0, v.stdout + v.stderr

    # The account key is a 0600 file in the holder's state directory, and in no output.
    (account,) = (Path(softhsm.env["TOKENISSUE_STATE_DIR"]) / "acme").glob("*.key")
    assert stat.S_IMODE(account.stat().st_mode) == 0o600
    assert b"PRIVATE KEY" not in (proc.stdout + proc.stderr).encode()

    # Renew now (same key): the new certificate replaces the old one under the same key ID.
    proc = softhsm.run("renew", "-t", "test", "--key", out["label"], *acme_args(pebble, softhsm.root)[2:], "--json")
    assert proc.returncode == 0, proc.stderr
    (renewed,) = json.loads(proc.stdout)
    assert renewed["key_id"] == out["key_id"] and renewed["replaces"] == out["serial"]
    assert renewed["serial"] != out["serial"]
    leaves = [c for c in certs(softhsm) if not c["ca"] and c["id"] == out["key_id"]]
    assert [c["serial"] for c in leaves] == [renewed["serial"]]

    # Revoke with the account key; the holder's record says so.
    proc = softhsm.run("revoke", "-t", "test", "--key", out["label"], "--acme-trust", str(pebble.trust), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)[0]["status"] == "revoked"
    status = json.loads(softhsm.run("status", "-t", "test", "--json", check=True).stdout)
    assert [s["state"] for s in status] == ["revoked"]


def test_dns01_through_the_hook(softhsm: SoftHSM, pebble: Pebble) -> None:
    """The hook publishes the TXT record; its configuration comes by argument (its log file) and
    its environment holds no secret: not the holder's PIN, not PGPASSWORD (it used to get the
    whole environment)."""
    hook = softhsm.root / "hook.py"
    hook.write_text(
        "import json, os, sys, urllib.request\n"
        "name = os.environ['TOKENISSUE_ACME_TXT_NAME']\n"
        "action = os.environ['TOKENISSUE_ACME_ACTION']\n"
        "body = {'host': name + '.', 'value': os.environ['TOKENISSUE_ACME_TXT_VALUE']}\n"
        "path = '/set-txt' if action == 'present' else '/clear-txt'\n"
        f"url = 'http://127.0.0.1:{pebble.challtestsrv_port}' + path\n"
        "urllib.request.urlopen(urllib.request.Request(url, json.dumps(body).encode(), method='POST'))\n"
        "open(sys.argv[1], 'a').write(action + ' ' + os.environ['TOKENISSUE_ACME_DOMAIN'] + ' '\n"
        "                             + json.dumps(sorted(os.environ)) + '\\n')\n"
    )
    log = softhsm.root / "hook.log"
    softhsm.env["PGPASSWORD"] = "secret-db-password"
    proc = enroll(softhsm, pebble, "--challenge", "dns-01", "--dns-hook", f"{sys.executable} {hook} {log}")
    assert proc.returncode == 0, proc.stderr
    lines = log.read_text().splitlines()[:2]
    assert [" ".join(ln.split(" ")[:2]) for ln in lines] == [f"present {DOMAIN}", f"cleanup {DOMAIN}"]
    for ln in lines:
        names = set(json.loads(ln.split(" ", 2)[2]))
        assert "PATH" in names and "TOKENISSUE_ACME_TXT_VALUE" in names
        assert not names & {"TOKENISSUE_PIN", "PGPASSWORD", "SOFTHSM2_CONF", "TOKENISSUE_STATE_DIR"}, names


def test_wildcard_dns01_publishes_the_base_name(softhsm: SoftHSM, pebble: Pebble) -> None:
    """RFC 8555 §8.4: the TXT record for *.example is _acme-challenge.example (it was
    _acme-challenge.*.example, which no CA looks up); Pebble validates it and issues."""
    hook = softhsm.root / "hook.py"
    hook.write_text(
        "import json, os, sys, urllib.request\n"
        "name = os.environ['TOKENISSUE_ACME_TXT_NAME']\n"
        "open(sys.argv[1], 'a').write(os.environ['TOKENISSUE_ACME_ACTION'] + ' ' + name + '\\n')\n"
        "body = {'host': name + '.', 'value': os.environ['TOKENISSUE_ACME_TXT_VALUE']}\n"
        "path = '/set-txt' if os.environ['TOKENISSUE_ACME_ACTION'] == 'present' else '/clear-txt'\n"
        f"url = 'http://127.0.0.1:{pebble.challtestsrv_port}' + path\n"
        "urllib.request.urlopen(urllib.request.Request(url, json.dumps(body).encode(), method='POST'))\n"
    )
    log = softhsm.root / "hook.log"
    proc = softhsm.run("enroll", "-t", "test", "--domain", f"*.{DOMAIN}",
                       *acme_args(pebble, softhsm.root, "--challenge", "dns-01", "--dns-hook", f"{sys.executable} {hook} {log}"),
                       "--json")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert log.read_text().splitlines() == [f"present _acme-challenge.{DOMAIN}", f"cleanup _acme-challenge.{DOMAIN}"]
    cert = x509.load_pem_x509_certificate(
        softhsm.run("cert", "export", "-t", "test", "--key", json.loads(proc.stdout)["label"], check=True).stdout.encode()
    )
    assert cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName) == [f"*.{DOMAIN}"]


def test_invalid_challenge_leaves_no_key(softhsm: SoftHSM, pebble: Pebble) -> None:
    # The responder listens where Pebble does not look: validation fails, the key is removed.
    proc = enroll(softhsm, pebble, http01=f"127.0.0.1:{free_port()}")
    assert proc.returncode == 6, proc.stdout + proc.stderr
    assert "could not validate test.example by http-01" in proc.stderr
    assert len(proc.stderr.strip().splitlines()[-1]) < 400
    assert keys(softhsm) == []
    assert softhsm.run("enroll", "--resume").stdout.startswith("No unfinished enrollment")


def test_server_down_before_issuance(softhsm: SoftHSM, tmp_path: Path) -> None:
    proc = softhsm.run("enroll", "-t", "test", "--domain", DOMAIN, "--ca", f"acme+https://127.0.0.1:{free_port()}/dir",
                       "--http-01-address", f"127.0.0.1:{free_port()}")  # fmt: skip
    assert proc.returncode == 6, proc.stderr
    assert "Cannot reach the ACME server" in proc.stderr
    assert keys(softhsm) == []


def test_untrusted_tls(softhsm: SoftHSM, pebble: Pebble) -> None:
    proc = softhsm.run("enroll", "-t", "test", "--domain", DOMAIN, "--ca", pebble.location,
                       "--http-01-address", pebble.http01_address)  # fmt: skip
    assert proc.returncode == 6
    assert "--acme-trust" in proc.stderr
    assert keys(softhsm) == []


def test_external_account_binding(softhsm: SoftHSM, pebble_eab: Pebble) -> None:
    proc = enroll(softhsm, pebble_eab)
    assert proc.returncode == 6, proc.stderr
    assert "requires an external account binding" in proc.stderr and "--eab-kid" in proc.stderr
    assert keys(softhsm) == []

    kid, hmac = next(iter(json.loads(EAB_EXAMPLE.read_text())["pebble"]["externalAccountMACKeys"].items()))
    hmac_file = softhsm.root / "eab.hmac"
    hmac_file.write_text(hmac + "\n")
    os.chmod(hmac_file, 0o644)
    proc = enroll(softhsm, pebble_eab, "--eab-kid", kid, "--eab-hmac-file", str(hmac_file))
    assert proc.returncode == 5 and "chmod 600" in proc.stderr
    os.chmod(hmac_file, 0o600)
    proc = enroll(softhsm, pebble_eab, "--eab-kid", kid, "--eab-hmac-file", str(hmac_file))
    assert proc.returncode == 0, proc.stderr
    # The HMAC key and the PIN appear nowhere: not in output, not in the holder's state.
    assert hmac not in proc.stdout + proc.stderr
    for f in Path(softhsm.env["TOKENISSUE_STATE_DIR"]).rglob("*"):
        if f.is_file():
            data = f.read_bytes()
            assert hmac.encode() not in data and USER_PIN.encode() not in data, f
