"""Two `ca serve` replicas on one PostgreSQL inventory answer OCSP alike (issue 14, item 1): a
revocation made through either (here by `ca revoke`, through neither) is in the very next answer
of both, because every answer is read from the shared inventory. openssl ocsp asks."""

from __future__ import annotations

from pathlib import Path

from support.cmp_server import served
from support.lifecycle import make_token_ca
from support.openssl import openssl
from support.softhsm import SoftHSM


def _ask(ca_pem: Path, url: str, leaf: Path) -> str:
    proc = openssl("ocsp", "-issuer", str(ca_pem), "-cert", str(leaf), "-url", f"{url}/ocsp", "-CAfile", str(ca_pem))
    assert proc.returncode == 0 and "Response verify OK" in proc.stderr, proc.stdout + proc.stderr
    return proc.stdout


def test_replicas_answer_from_the_shared_inventory(softhsm: SoftHSM, pg_url: str, tmp_path: Path) -> None:
    ca = make_token_ca(softhsm, database=pg_url)
    ca.run("ca", "ocsp-signer", "--ca", str(ca.dir), check=True)
    out = ca.enroll("CN=Replicated,O=tokenissue tests", "--label", "r")
    leaf = tmp_path / "r.pem"
    ca.export("r", leaf)
    with served(ca) as one, served(ca) as two:
        assert all("r.pem: good" in _ask(ca.pem, s.url, leaf) for s in (one, two))
        ca.run("ca", "revoke", "--ca", str(ca.dir), out["serial"], "--reason", "key-compromise", check=True)
        for s in (one, two):
            answer = _ask(ca.pem, s.url, leaf)
            assert "r.pem: revoked" in answer and "Reason: keyCompromise" in answer, answer
        ca.run("ca", "suspend", "--ca", str(ca.dir), ca.enroll("CN=Held,O=tokenissue tests", "--label", "h")["serial"],
               check=True)  # fmt: skip
        held = tmp_path / "h.pem"
        ca.export("h", held)
        assert all("Reason: certificateHold" in _ask(ca.pem, s.url, held) for s in (one, two))
