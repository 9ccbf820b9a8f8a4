"""OpenSSL's own CMP client (``openssl cmp``, 3.0) against ``tokenissue ca serve``.

Both ends keep their keys on SoftHSM tokens: the CA key on the token 'ca' (the server logs in
once at start-up), the holder's keys on the token 'test', used by OpenSSL through libp11's
engine (PIN from the environment). The server runs on 127.0.0.1 on a free port, is started by
the test and stopped by its PID. No Ed25519 key goes on a token here: libp11 0.4.12 crashes
once one is present.

The story: ir with a registration's reference and code (the registered subject is issued, the
code is spent), p10cr with a CSR signed in the token, kur with the current certificate's key,
rr with the certificate's own key, and then a kur signed by the revoked certificate, refused.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from support.cli import USER_PIN
from support.cmp_server import Served, served
from support.lifecycle import TokenCA, make_token_ca
from support.openssl import ENGINE_SO, engine_conf
from support.softhsm import SoftHSM

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed"),
]

SUBJECT = "CN=Interop Holder,O=tokenissue tests,C=KR"


@dataclass
class Setup:
    ca: TokenCA
    server: Served
    tmp: Path
    engine_conf: Path

    @property
    def port(self) -> str:
        return self.server.url.rsplit(":", 1)[1]

    def register(self, subject: str = SUBJECT, profile: str = "personal") -> dict[str, Any]:
        out: dict[str, Any] = self.ca.json("ra", "register", "--ca-dir", str(self.ca.dir), "--subject", subject,
                                           "--profile", profile)  # fmt: skip
        return out

    def key(self, label: str, key_id: str) -> str:
        self.ca.run("keys", "generate", "-t", "test", "--label", label, "--id", key_id, check=True)
        return f"pkcs11:token=test;id=%{key_id};type=private"

    def cmp(self, cmd: str, *args: str, engine: bool = False, **env: str) -> subprocess.CompletedProcess[str]:
        """``openssl cmp`` against our server; the engine (and OPENSSL_CONF) only when asked."""
        full_env = {k: v for k, v in os.environ.items() if k != "OPENSSL_CONF"}
        full_env.update({"SOFTHSM2_CONF": str(self.ca.hsm.conf), "LC_ALL": "C", "PIN": USER_PIN, **env})
        extra: list[str] = []
        if engine:
            full_env["OPENSSL_CONF"] = str(self.engine_conf)
            extra = ["-engine", "pkcs11"]
        return subprocess.run(
            ["openssl", "cmp", "-config", "", "-server", f"127.0.0.1:{self.port}", "-path", "pkix/", "-cmd", cmd,
             *extra, *args],
            capture_output=True, text=True, timeout=120, check=False, env=full_env,
        )  # fmt: skip

    def issued(self) -> dict[str, dict[str, Any]]:
        return {row["serial"]: row for row in self.ca.issued()}


@pytest.fixture
def setup(softhsm: SoftHSM, tmp_path: Path) -> Iterator[Setup]:
    if ENGINE_SO is None:
        pytest.skip("libengine-pkcs11-openssl is not installed")
    ca = make_token_ca(softhsm)
    with served(ca) as server:
        yield Setup(ca, server, tmp_path, engine_conf(tmp_path / "engine.cnf"))


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _explain(proc: subprocess.CompletedProcess[str], server: Served) -> str:
    return f"exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}\nserver:\n{server.stderr()[-3000:]}"


def test_openssl_cmp_client_full_lifecycle(setup: Setup) -> None:
    s, tmp = setup, setup.tmp
    ca_pem = str(s.ca.pem)

    # (a) ir: MAC-protected with the registration's code; the new key is on the token.
    reg = s.register()
    key1 = s.key("cmp-1", "01")
    cert1_pem = tmp / "cert1.pem"
    ir = s.cmp("ir", "-ref", reg["ref"], "-secret", "env:CODE", "-newkey", key1, "-keyform", "ENGINE",
               "-newkeypass", "env:PIN", "-subject", "/CN=Interop Holder/O=tokenissue tests/C=KR",
               "-certout", str(cert1_pem), "-cacertsout", str(tmp / "capubs.pem"), engine=True, CODE=reg["code"])  # fmt: skip
    assert ir.returncode == 0, _explain(ir, s.server)
    cert1 = _cert(cert1_pem)
    assert cert1.subject == x509.Name.from_rfc4514_string(SUBJECT)
    assert x509.load_pem_x509_certificates((tmp / "capubs.pem").read_bytes()) == [s.ca.certificate]
    assert s.ca.verify(cert1_pem).returncode == 0
    rows = s.issued()
    assert rows[format(cert1.serial_number, "x")]["status"] == "valid"
    # The code is spent: the same reference and code again is refused, and nothing is issued.
    again = s.cmp("ir", "-ref", reg["ref"], "-secret", "env:CODE", "-newkey", s.key("cmp-1b", "0b"),
                  "-keyform", "ENGINE", "-newkeypass", "env:PIN", "-certout", str(tmp / "no.pem"),
                  engine=True, CODE=reg["code"])  # fmt: skip
    assert again.returncode != 0, _explain(again, s.server)
    assert not (tmp / "no.pem").exists()
    assert len(s.issued()) == 1
    refused = [line for line in s.server.access_log() if line.get("failure_info")]
    assert refused[-1]["failure_info"] == "notAuthorized" and refused[-1]["ref"] == reg["ref"]

    # (b) p10cr: a CSR made (and signed) in the token by `tokenissue csr`.
    reg2 = s.register("CN=Interop P10,O=tokenissue tests")
    s.key("cmp-2", "02")
    csr = tmp / "req.pem"
    s.ca.run("csr", "-t", "test", "-k", "cmp-2", "--subject", "CN=Interop P10,O=tokenissue tests", "-o", str(csr),
             check=True)  # fmt: skip
    p10 = s.cmp("p10cr", "-ref", reg2["ref"], "-secret", "env:CODE", "-csr", str(csr),
                "-certout", str(tmp / "p10.pem"), CODE=reg2["code"])  # fmt: skip
    assert p10.returncode == 0, _explain(p10, s.server)
    assert _cert(tmp / "p10.pem").subject == x509.Name.from_rfc4514_string("CN=Interop P10,O=tokenissue tests")

    # (c) kur: signed with the current certificate's key (on the token), for a new token key.
    key3 = s.key("cmp-3", "03")
    cert2_pem = tmp / "cert2.pem"
    kur = s.cmp("kur", "-cert", str(cert1_pem), "-key", key1, "-keyform", "ENGINE", "-keypass", "env:PIN",
                "-newkey", key3, "-newkeypass", "env:PIN", "-trusted", ca_pem,
                "-certout", str(cert2_pem), engine=True)  # fmt: skip
    assert kur.returncode == 0, _explain(kur, s.server)
    cert2 = _cert(cert2_pem)
    assert cert2.subject == cert1.subject and cert2.serial_number != cert1.serial_number
    records = {r.serial: r for r in s.ca.records()}
    assert records[cert2.serial_number].replaces == cert1.serial_number

    # (d) rr: the new certificate revokes itself with its own key.
    rr = s.cmp("rr", "-oldcert", str(cert2_pem), "-cert", str(cert2_pem), "-key", key3, "-keyform", "ENGINE",
               "-keypass", "env:PIN", "-trusted", ca_pem, "-revreason", "4", engine=True)  # fmt: skip
    assert rr.returncode == 0, _explain(rr, s.server)
    row = s.issued()[format(cert2.serial_number, "x")]
    assert (row["status"], row["reason"]) == ("revoked", "superseded")

    # A kur signed by the revoked certificate is refused, and issues nothing.
    before = len(s.issued())
    key4 = s.key("cmp-4", "04")
    late = s.cmp("kur", "-cert", str(cert2_pem), "-key", key3, "-keyform", "ENGINE", "-keypass", "env:PIN",
                 "-newkey", key4, "-newkeypass", "env:PIN", "-trusted", ca_pem,
                 "-certout", str(tmp / "late.pem"), engine=True)  # fmt: skip
    assert late.returncode != 0, _explain(late, s.server)
    assert len(s.issued()) == before
    assert s.server.access_log()[-1]["failure_info"] == "certRevoked"

    # The access log: one JSON line per request, never a code or PIN.
    text = s.server.stderr()
    for secret in (reg["code"], reg2["code"], USER_PIN):
        assert secret not in text
    bodies = [line.get("cmp_body") for line in s.server.access_log()]
    for kind in ("ir", "certConf", "p10cr", "kur", "rr"):
        assert kind in bodies
    assert text.splitlines()[0].startswith("Serving CMP at http://127.0.0.1:")
    assert json.loads(text.splitlines()[-1])["path"] == "/pkix/"
