"""ACME enrollment at Pebble under SIGKILL, bad nonces and ``--debug``.

* Crash-resume: ``tokenissue enroll`` is killed (TOKENISSUE_FAILPOINT) after each step from the
  CSR on; the same command run again finishes with exactly one key, one certificate on the
  token, and — once the CA had issued — no second order. Pebble has no API that lists what it
  issued, but it logs "Issued certificate serial S for order O" for each one: that log is the
  CA's inventory here.
* Bad nonces: a Pebble that rejects 30 % of good nonces still issues.
* ``--debug`` (and TOKENISSUE_DEBUG=1) with EAB: neither the HMAC key, the PIN nor the account
  key appears in the output or in the state directory (except the account key's own file).
"""

from __future__ import annotations

import base64
import json
import re
import signal
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from support.acme import CHALLTESTSRV, EAB_EXAMPLE, PEBBLE, Pebble, run_pebble
from support.cli import USER_PIN
from support.servers import free_port
from support.softhsm import SoftHSM

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(not PEBBLE.exists() or not CHALLTESTSRV.exists(), reason="pebble is not installed (make deps)"),
]

DOMAIN = "resume.example"
LABEL = "acme-crash"
ISSUED = re.compile(r"Issued certificate serial ([0-9a-f]+) for order (\S+)")


@pytest.fixture(scope="module")
def pebble_badnonce(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pebble]:
    with run_pebble(tmp_path_factory.mktemp("pebble-badnonce"), nonce_reject=30) as p:
        yield p


def _args(hsm: SoftHSM, p: Pebble, *extra: str, domain: str = DOMAIN, http01: str | None = None) -> list[str]:
    root = hsm.root / "pebble-root.pem"
    root.write_bytes(p.root().public_bytes(serialization.Encoding.PEM))
    return [
        "enroll", "-t", "test", "--domain", domain, "--ca", p.location, "--acme-trust", str(p.trust),
        "--ca-trust", str(root), "--http-01-address", http01 or p.http01_address, *extra, "--json",
    ]  # fmt: skip


def _issued(p: Pebble) -> list[tuple[str, str]]:
    """(serial hex, order URL) of every certificate this Pebble issued, from its log."""
    return ISSUED.findall((p.dir / "pebble.log").read_text(errors="replace"))


def _json_list(hsm: SoftHSM, *args: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads(hsm.run(*args, "-t", "test", "--json", check=True).stdout)
    return rows


@pytest.mark.parametrize("step", ["csr", "issued", "issued-recorded", "written"])
def test_crash_then_same_command_finishes_once(softhsm: SoftHSM, pebble: Pebble, step: str) -> None:
    args = _args(softhsm, pebble, "--label", LABEL, domain=f"{step}.{DOMAIN}")
    before = len(_issued(pebble))

    crashed = softhsm.run(*args, env={"TOKENISSUE_FAILPOINT": step})
    assert crashed.returncode == -signal.SIGKILL, (step, crashed.returncode, crashed.stdout, crashed.stderr)
    assert crashed.stdout == ""
    issued_by_crash = _issued(pebble)[before:]
    assert len(issued_by_crash) == (0 if step == "csr" else 1), issued_by_crash

    again = softhsm.run(*args)
    assert again.returncode == 0, (step, again.stdout, again.stderr)
    out = json.loads(again.stdout)
    assert out["resumed"] is True and out["already_done"] is False and out["label"] == LABEL

    # The CA issued exactly once for this enrollment: after "issued" the rerun picked up the
    # same order (or did not ask at all) instead of ordering a second certificate.
    issued = _issued(pebble)[before:]
    assert [int(s, 16) for s, _ in issued] == [int(out["serial"], 16)], (step, issued, again.stderr)
    if step != "csr":
        assert "ACME: order placed for" not in again.stderr, again.stderr
    if step == "issued":  # issued, but not journaled: the same (valid) order is fetched again
        assert "resuming the order placed earlier (valid)" in again.stderr, again.stderr

    # Exactly one private key, labelled L, with its certificate under its ID, state valid.
    keys = _json_list(softhsm, "keys", "list")  # private keys
    assert [(k["label"], k["id"], k["has_certificate"]) for k in keys] == [(LABEL, out["key_id"], True)], keys
    leaves = [c for c in _json_list(softhsm, "cert", "list") if not c["ca"]]
    assert [(c["id"], int(c["serial"], 16)) for c in leaves] == [(out["key_id"], int(out["serial"], 16))], leaves
    status = _json_list(softhsm, "status")
    assert [(s["key_id"], s["serial"], s["state"]) for s in status] == [(out["key_id"], out["serial"], "valid")]

    resume = softhsm.run("enroll", "--resume")
    assert resume.returncode == 0, resume.stderr
    assert "nothing to do" in resume.stdout
    # One order remembered (kept so that a crash after issuance finds it again), not two.
    assert len(list((Path(softhsm.env["TOKENISSUE_STATE_DIR"]) / "acme" / "orders").glob("*.json"))) == 1


def test_bad_nonces_are_retried(softhsm: SoftHSM, pebble_badnonce: Pebble) -> None:
    # 30 % of good nonces are refused (badNonce); an enrollment makes ~10 signed requests, so
    # without retries nearly every run would fail. Three runs in a row must all succeed.
    for i in range(3):
        proc = softhsm.run(*_args(softhsm, pebble_badnonce, "--label", f"nonce{i}", domain=f"n{i}.{DOMAIN}"))
        assert proc.returncode == 0, (i, proc.stderr)
    assert len(_issued(pebble_badnonce)) == 3


def _b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def test_debug_leaks_no_secret(softhsm: SoftHSM, pebble_eab: Pebble) -> None:
    kid, hmac = next(iter(json.loads(EAB_EXAMPLE.read_text())["pebble"]["externalAccountMACKeys"].items()))
    hmac_file = softhsm.root / "eab.hmac"
    hmac_file.write_text(hmac + "\n")
    hmac_file.chmod(0o600)
    eab = ["--eab-kid", kid, "--eab-hmac-file", str(hmac_file)]
    debug = {"TOKENISSUE_DEBUG": "1"}

    ok = softhsm.run("--debug", *_args(softhsm, pebble_eab, *eab, "--label", "dbg"), env=debug)
    assert ok.returncode == 0, ok.stderr
    # A failing run under --debug prints a traceback (the challenge fails: nobody answers).
    bad = softhsm.run(
        "--debug", *_args(softhsm, pebble_eab, *eab, "--label", "dbg2", domain=f"fail.{DOMAIN}", http01=f"127.0.0.1:{free_port()}"), env=debug
    )
    assert bad.returncode == 6, bad.stderr
    assert "Traceback" in bad.stderr

    state_dir = Path(softhsm.env["TOKENISSUE_STATE_DIR"])
    (account,) = (state_dir / "acme").glob("*.key")
    assert stat.S_IMODE(account.stat().st_mode) == 0o600
    pem = account.read_bytes()
    key = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    d = key.private_numbers().private_value.to_bytes(32, "big")
    body = b"".join(pem.strip().splitlines()[1:-1])  # the PEM's base64, without line breaks
    secrets = {
        "EAB HMAC key": hmac.encode(),
        "PIN": USER_PIN.encode(),
        "account key PEM": body[:40],
        "account key (JWK d)": _b64u(d).encode(),
        "account key (hex)": d.hex().encode(),
    }
    for name, secret in secrets.items():
        for proc in (ok, bad):
            assert secret not in (proc.stdout + proc.stderr).encode(), name
        for f in state_dir.rglob("*"):
            if f.is_file() and f != account:
                assert secret not in f.read_bytes(), (name, f)
