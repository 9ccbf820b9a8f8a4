"""tokenissue's own EST client (issue 14, item 3): `enroll --ca est+https://...` with the key on
the holder's token (SoftHSM and tpm2-pkcs11), the code from the environment, the server's TLS
certificate and the CA root from --ca-trust; and the one sentence for what EST cannot do here.
"""

from __future__ import annotations

import json
from pathlib import Path

from cryptography import x509

from support.cmp_server import register, served
from support.lifecycle import USER_TOKEN, TokenCA
from support.tls import server_tls_files
from support.token_impls import TokenImpl, on_impls

CODE_ENV = "TOKENISSUE_AUTH_CODE"


@on_impls("softhsm", "tpm2")
def test_enroll_over_est_with_the_key_on_the_token(token_impl_with_ca: TokenCA, token_impl: TokenImpl, tmp_path: Path) -> None:
    ca = token_impl_with_ca
    cert, key = server_tls_files(tmp_path)
    trust = tmp_path / "trust.pem"
    # The server's TLS certificate itself (trusted as given, as curl --cacert does) and the CA root.
    trust.write_bytes(cert.read_bytes() + ca.pem.read_bytes())
    reg = register(ca.dir, "CN=EST Token Holder,O=tokenissue tests", "tls-client")
    with served(ca, "--tls-cert", str(cert), "--tls-key", str(key)) as server:
        location = "est+" + server.url
        args = ["enroll", "--token", USER_TOKEN, "--ca", location, "--ref", reg.ref, "--ca-trust", str(trust),
                "--label", "est", "--subject", reg.subject.rfc4514_string(), "--profile", "tls-client", "--json"]  # fmt: skip
        untrusted = ca.run(*[a if a != str(trust) else str(ca.pem) for a in args], env={CODE_ENV: reg.code.reveal()})
        assert untrusted.returncode != 0 and "not trusted" in untrusted.stderr, untrusted.stderr
        assert ca.private_keys() == []  # refused before the CA answered: no key left behind
        proc = ca.run(*args, env={CODE_ENV: reg.code.reveal()})
        assert proc.returncode == 0, proc.stdout + proc.stderr
        out = json.loads(proc.stdout)
        assert out["subject"] == reg.subject.rfc4514_string() and out["profile"] == "tls-client"
        on_token = ca.token_certs()
        assert any(c.get("label") == "est" for c in on_token), on_token
        leaf = tmp_path / "leaf.pem"
        ca.export("est", leaf)
        assert x509.load_pem_x509_certificate(leaf.read_bytes()).subject == reg.subject
        assert ca.verify(leaf).returncode == 0
        assert [line["est"] for line in server.access_log() if "est" in line] == ["simpleenroll"]
        # Renewal over EST needs TLS client auth with the token key: one sentence, nothing changed.
        renew = ca.run("renew", "--token", USER_TOKEN, "--key", "est", "--within", "400d")
        assert renew.returncode != 0 and "over EST needs TLS client authentication" in renew.stderr, renew.stderr
        assert ca.token_certs() == on_token
    assert reg.code.reveal() not in server.stderr()
