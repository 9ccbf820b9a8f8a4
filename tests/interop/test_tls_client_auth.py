"""A certificate enrolled by tokenissue works for TLS client authentication with OpenSSL: the
client's private key stays on the SoftHSM token and signs the handshake through libp11's engine,
and ``openssl s_server -Verify 1`` accepts the client's certificate chain up to our CA.

The server runs on 127.0.0.1 only, is started by the test and stopped by its PID. No Ed25519 key
is ever put on the token here: libp11 0.4.12 crashes once one is present.
"""

from __future__ import annotations

import os
import selectors
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import SOFTHSM_MODULE, USER_PIN, SoftHSM
from cryptography import x509
from lifecycle_support import ENGINE_SO, TokenCA, make_token_ca

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed"),
]

REQUEST = "GET / HTTP/1.0\r\n\r\n"


@pytest.fixture
def token_ca(softhsm: SoftHSM) -> TokenCA:
    return make_token_ca(softhsm)


def _env(hsm: SoftHSM, **extra: str) -> dict[str, str]:
    # OPENSSL_CONF only for the command that uses the token key: with the engine loaded,
    # OpenSSL cannot use file keys in the same command.
    env = {k: v for k, v in os.environ.items() if k != "OPENSSL_CONF"}
    env.update({"SOFTHSM2_CONF": str(hsm.conf), "LC_ALL": "C", **extra})
    return env


def _engine_conf(path: Path) -> Path:
    assert ENGINE_SO is not None
    path.write_text(
        "openssl_conf = openssl_init\n"
        "[openssl_init]\nengines = engine_section\n"
        "[engine_section]\npkcs11 = pkcs11_section\n"
        "[pkcs11_section]\nengine_id = pkcs11\n"
        f"dynamic_path = {ENGINE_SO}\nMODULE_PATH = {SOFTHSM_MODULE}\ninit = 0\n"
    )
    return path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _server_cert(ca: TokenCA, tmp: Path) -> tuple[Path, Path]:
    """A server key made by openssl, its CSR (SAN dns:localhost) issued by our CA as tls-server."""
    key, csr, cert = tmp / "server.key", tmp / "server.csr", tmp / "server.pem"
    made = subprocess.run(
        ["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", str(key), "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost", "-out", str(csr)],
        capture_output=True, text=True, env=_env(ca.hsm), timeout=60, check=False,
    )
    assert made.returncode == 0, made.stderr
    ca.run("ca", "sign", "--ca-dir", str(ca.dir), str(csr), "--profile", "tls-server", "-o", str(cert), check=True)
    return cert, key


@pytest.fixture
def tls_server(token_ca: TokenCA, tmp_path: Path) -> Iterator[tuple[int, subprocess.Popen[str]]]:
    """``openssl s_server -www`` on 127.0.0.1 that demands a client certificate from our CA."""
    cert, key = _server_cert(token_ca, tmp_path)
    port = _free_port()
    server = subprocess.Popen(
        ["openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-Verify", "1", "-CAfile", str(token_ca.pem),
         "-cert", str(cert), "-key", str(key), "-www", "-naccept", "1"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(token_ca.hsm),
    )
    try:
        # Wait until it listens: s_server prints ACCEPT once the socket is bound. Read the raw
        # pipe (not the buffered text wrapper, which would swallow lines the selector then misses).
        assert server.stdout is not None
        fd = server.stdout.fileno()
        seen = b""
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while b"ACCEPT\n" not in seen:
                if not sel.select(timeout=60):
                    pytest.fail(f"openssl s_server did not start: {seen.decode(errors='replace')}")
                chunk = os.read(fd, 4096)
                if not chunk:
                    pytest.fail(f"openssl s_server exited {server.wait()}: {seen.decode(errors='replace')}")
                seen += chunk
        yield port, server
    finally:
        if server.poll() is None:
            os.kill(server.pid, 9)
        server.wait(timeout=30)


def _pkcs11_id(hex_id: str) -> str:
    return "".join(f"%{hex_id[i:i + 2]}" for i in range(0, len(hex_id), 2))


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

    uri = f"pkcs11:token=test;id={_pkcs11_id(out['key_id'])};type=private"
    client = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-engine", "pkcs11", "-keyform", "engine",
         "-key", uri, "-cert", str(leaf), "-CAfile", str(token_ca.pem), "-pass", "env:PIN",
         "-verify_return_error", "-ign_eof"],
        input=REQUEST, capture_output=True, text=True, timeout=120, check=False,
        env=_env(token_ca.hsm, OPENSSL_CONF=str(_engine_conf(tmp_path / "engine.cnf")), PIN=USER_PIN),
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
        input=REQUEST, capture_output=True, text=True, timeout=120, check=False, env=_env(token_ca.hsm),
    )
    server_out, _ = server.communicate(timeout=60)
    assert "Client certificate" not in client.stdout
    assert "HTTP/1.0 200 ok" not in client.stdout
    assert "peer did not return a certificate" in server_out
