"""Helpers shared by the enroll / renew / revoke / CA tests: a CA whose key is on a SoftHSM token.

Everything runs through the real CLI (``SoftHSM.run``) against real tokens; nothing is cached
across tests. The CA token is a second token ('ca') in the same SoftHSM as the user's token
'test', with the same user PIN, passed to the CLI as TOKENISSUE_CA_PIN. With ``ca_hsm`` the
user's token is on another implementation (support.token_impls.TokenImpl, e.g. a TPM) and the
CA token on that SoftHSM, both modules reachable from one CLI environment.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tokenissue.inventory import Inventory
from tokenissue.models import CertRecord

from support.cli import SO_PIN, USER_PIN
from support.openssl import openssl
from support.softhsm import SOFTHSM_MODULE, SoftHSM

USER_TOKEN = "test"  # the token the softhsm fixtures make
CA_TOKEN = "ca"  # the token make_token_ca adds for the CA key

__all__ = ["CA_TOKEN", "USER_TOKEN", "TokenCA", "add_token_fast", "make_token_ca", "token_dir"]


@dataclass
class TokenCA:
    """A CA directory made by ``tokenissue ca init`` with its key on the token 'ca'."""

    #: Runs the CLI for the holder: a SoftHSM, or a support.token_impls.TokenImpl (same interface).
    hsm: Any
    dir: Path
    #: Token directories of SoftHSM that existed before the CA token was made (the user's).
    user_token_dirs: list[Path] = field(default_factory=list)
    #: The inventory URL given to 'ca init --db'; None: SQLite ca.db in the CA directory.
    database: str | None = None

    @property
    def env(self) -> dict[str, str]:
        return {"TOKENISSUE_CA_PIN": USER_PIN}

    @property
    def pem(self) -> Path:
        return self.dir / "ca.pem"

    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.pem.read_bytes())

    def run(self, *args: str, env: dict[str, str] | None = None, check: bool = False) -> subprocess.CompletedProcess[str]:
        """The CLI with the CA PIN in the environment."""
        return self.hsm.run(*args, env={**self.env, **(env or {})}, check=check)

    def json(self, *args: str, env: dict[str, str] | None = None) -> Any:
        proc = self.run(*args, "--json", env=env, check=True)
        return json.loads(proc.stdout)

    def enroll_args(self, subject: str, *extra: str, token: str = USER_TOKEN) -> list[str]:
        return ["enroll", "--token", token, "--ca", str(self.dir), "--subject", subject, *extra]

    def enroll(self, subject: str, *extra: str, token: str = USER_TOKEN) -> dict[str, Any]:
        out: dict[str, Any] = self.json(*self.enroll_args(subject, *extra, token=token))
        return out

    def issued(self) -> list[dict[str, Any]]:
        """``ca list --json``: every certificate the CA recorded."""
        rows: list[dict[str, Any]] = self.json("ca", "list", "--ca-dir", str(self.dir))
        return rows

    def audit(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self.json("ca", "audit", "list", "--ca-dir", str(self.dir))
        return rows

    def private_keys(self, token: str = USER_TOKEN) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self.json("keys", "list", "-t", token)
        return rows

    def token_certs(self, token: str = USER_TOKEN) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self.json("cert", "list", "-t", token)
        return rows

    def status(self, token: str = USER_TOKEN, *extra: str) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self.json("status", "-t", token, *extra)
        return rows

    def export(self, key: str, out: Path, token: str = USER_TOKEN, *, chain: bool = False) -> list[x509.Certificate]:
        """``cert export`` of the key's certificate (and with ``chain`` its CA certificates found on
        the token) into a PEM file; the leaf alone is written to ``out``, for ``openssl verify``."""
        full = out.with_suffix(".chain.pem")
        self.run("cert", "export", "-t", token, "-k", key, "-o", str(full), *(["--chain"] if chain else []),
                 check=True)
        certs = x509.load_pem_x509_certificates(full.read_bytes())
        out.write_bytes(certs[0].public_bytes(serialization.Encoding.PEM))
        return certs

    def records(self) -> list[CertRecord]:
        """The CA's inventory read in-process (cheaper than 'ca list' where the CLI is not the point)."""
        with Inventory.open(self.database or self.dir / "ca.db") as inv:
            return inv.list_certificates()

    def verify(self, leaf: Path, *extra: str) -> subprocess.CompletedProcess[str]:
        """``openssl verify`` of ``leaf`` against this CA."""
        return openssl("verify", "-CAfile", str(self.pem), *extra, str(leaf))


def token_dir(hsm: SoftHSM, label: str) -> Path:
    """The SoftHSM directory of the token ``label`` (to pull it out, or delete it)."""
    for obj in (hsm.root / "tokens").glob("*/token.object"):
        if label.encode() in obj.read_bytes():
            return obj.parent
    raise AssertionError(f"no token directory for {label}")


def add_token_fast(hsm: SoftHSM, label: str) -> None:
    """Initialise a token with softhsm2-util (25 ms, against ~0.5 s through 'token init', which
    the token tests cover). softhsm2-util takes PINs only from argv or a TTY; these are test PINs."""
    proc = subprocess.run(
        ["softhsm2-util", "--init-token", "--free", "--label", label, "--so-pin", SO_PIN, "--pin", USER_PIN],
        env=hsm.env, capture_output=True, text=True, timeout=60, check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    hsm.labels.append(label)


def make_token_ca(
    hsm: Any, *, token: str = CA_TOKEN, subject: str = "CN=Test Token CA,O=tokenissue tests,C=KR",
    profiles: str | None = None, database: str | None = None, ca_hsm: SoftHSM | None = None,
) -> TokenCA:
    """A fresh CA (EC P-256 key generated on a new token ``token``) in ``hsm.root / 'ca'``,
    its inventory in ``database`` (a URL for 'ca init --db') or the default SQLite file.

    ``hsm`` holds the user's token (a SoftHSM, or a support.token_impls.TokenImpl); the CA token is made on
    ``ca_hsm`` when given (whose SOFTHSM2_CONF ``hsm.env`` must carry: 'ca init' then runs with
    SoftHSM as the module, which ca.toml records), else on ``hsm`` itself."""
    tokens_dir = hsm.root / "tokens"
    before = sorted(p for p in tokens_dir.iterdir() if p.is_dir()) if tokens_dir.is_dir() else []
    init_env: dict[str, str] | None = None
    if ca_hsm is not None:
        assert hsm.env.get("SOFTHSM2_CONF") == str(ca_hsm.conf), "the holder's environment must reach the CA's SoftHSM"
        init_env = {"TOKENISSUE_MODULE": SOFTHSM_MODULE}
    add_token_fast(ca_hsm or hsm, token)
    ca_dir = hsm.root / "ca"
    ca = TokenCA(hsm=hsm, dir=ca_dir, user_token_dirs=before, database=database)
    db = ["--db", database] if database else []
    ca.run("ca", "init", "--ca-dir", str(ca_dir), "--token", token, "--subject", subject, "--type", "ec-p256",
           *db, env=init_env, check=True)
    if profiles is not None:
        (ca_dir / "profiles.toml").write_text(profiles, encoding="utf-8")
    return ca
