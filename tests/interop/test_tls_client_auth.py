"""A certificate enrolled by tokenissue works for TLS client authentication with OpenSSL: the
client's private key stays on the SoftHSM token and signs the handshake through libp11's engine,
and ``openssl s_server -Verify 1`` accepts the client's certificate chain up to our CA.

The server runs on 127.0.0.1 only, is started by the test and stopped by its PID. No Ed25519 key
is ever put on the token here: libp11 0.4.12 crashes once one is present.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from support.cli import USER_PIN
from support.lifecycle import TokenCA, make_token_ca
from support.openssl import ENGINE_SO, engine_conf, openssl_env, pkcs11_id, s_server
from support.softhsm import SoftHSM

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed"),
]

REQUEST = "GET / HTTP/1.0\r\n\r\n"


@pytest.fixture
def token_ca(softhsm: SoftHSM) -> TokenCA:
    return make_token_ca(softhsm)


def _server_cert(ca: TokenCA, tmp: Path) -> tuple[Path, Path]:
    """A server key made by openssl, its CSR (SAN dns:localhost) issued by our CA as tls-server."""
    key, csr, cert = tmp / "server.key", tmp / "server.csr", tmp / "server.pem"
    made = subprocess.run(
        ["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", str(key), "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost", "-out", str(csr)],
        capture_output=True, text=True, env=openssl_env(ca.hsm), timeout=60, check=False,
    )
    assert made.returncode == 0, made.stderr
    ca.run("ca", "sign", "--ca-dir", str(ca.dir), str(csr), "--profile", "tls-server", "-o", str(cert), check=True)
    return cert, key


@pytest.fixture
def tls_server(token_ca: TokenCA, tmp_path: Path) -> Iterator[tuple[int, subprocess.Popen[str]]]:
    """``openssl s_server -www`` on 127.0.0.1 that demands a client certificate from our CA."""
    cert, key = _server_cert(token_ca, tmp_path)
    args = ["-Verify", "1", "-CAfile", str(token_ca.pem), "-cert", str(cert), "-key", str(key), "-www", "-naccept", "1"]
    with s_server(args, openssl_env(token_ca.hsm)) as running:
        yield running


@pytest.mark.skipif(ENGINE_SO is None, reason="libengine-pkcs11-openssl is not installed")
@pytest.mark.parametrize("key_type", ["ec-p256", "rsa-2048"])
def test_tls_client_authentication_with_token_key(
    token_ca: TokenCA, tls_server: tuple[int, subprocess.Popen[str]], key_type: str, tmp_path: Path
) -> None:
    port, server = tls_server
    subject = f"CN=TLS Client {key_type},O=tokenissue tests"
    out = token_ca.enroll(subject, "--profile", "tls-client", "--type", key_type, "--label", "client")
    leaf = tmp_path / "client.pem"
    token_ca.export("client", leaf)

    uri = f"pkcs11:token=test;id={pkcs11_id(out['key_id'])};type=private"
    client = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-engine", "pkcs11", "-keyform", "engine",
         "-key", uri, "-cert", str(leaf), "-CAfile", str(token_ca.pem), "-pass", "env:PIN",
         "-verify_return_error", "-ign_eof"],
        input=REQUEST, capture_output=True, text=True, timeout=120, check=False,
        env=openssl_env(token_ca.hsm, OPENSSL_CONF=str(engine_conf(tmp_path / "engine.cnf")), PIN=USER_PIN),
    )
    server_out, _ = server.communicate(timeout=60)
    assert client.returncode == 0, client.stdout[-3000:] + client.stderr[-3000:]
    assert server.returncode == 0, server_out
    # The client verified the server (our CA issued it) ...
    assert "Verify return code: 0 (ok)" in client.stdout
    # ... and the server received, verified and echoed the client's certificate (s_server -www
    # answers with the session, including the peer certificate).
    assert "HTTP/1.0 200 ok" in client.stdout
    _, _, echoed = client.stdout.partition("Client certificate\n")
    assert echoed, "s_server saw no client certificate"
    pem = echoed[echoed.index("-----BEGIN CERTIFICATE-----"):echoed.index("-----END CERTIFICATE-----") + 25]
    assert x509.load_pem_x509_certificate(pem.encode()) == x509.load_pem_x509_certificate(leaf.read_bytes())
    # The server verified that chain itself (its verify callback prints each depth it accepted).
    assert f"depth=0 O = tokenissue tests, CN = TLS Client {key_type}\nverify return:1" in server_out
    assert "verify error" not in server_out


def test_server_refuses_a_client_without_certificate(
    token_ca: TokenCA, tls_server: tuple[int, subprocess.Popen[str]]
) -> None:
    # The control for the test above: -Verify 1 really makes a certificate mandatory.
    port, server = tls_server
    client = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-CAfile", str(token_ca.pem), "-ign_eof"],
        input=REQUEST, capture_output=True, text=True, timeout=120, check=False, env=openssl_env(token_ca.hsm),
    )
    server_out, _ = server.communicate(timeout=60)
    assert "Client certificate" not in client.stdout
    assert "HTTP/1.0 200 ok" not in client.stdout
    assert "peer did not return a certificate" in server_out
