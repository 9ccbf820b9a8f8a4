"""NSS (Firefox, Thunderbird, Chromium on Linux, curl built on NSS) accepts tokenissue's TLS
server certificates, judged by NSS's own tools: ``certutil -V``, ``vfychain`` and a ``tstclnt``
handshake with a server whose RSA key stays on the SoftHSM token.

NSS, unlike OpenSSL and GnuTLS, refuses an RSA server certificate whose key usage lacks
keyEncipherment, in TLS 1.2 and TLS 1.3 alike. The built-in tls-server profile marks RSA keys
for it (never EC keys); the control test keeps a sign-only profile to show that NSS's refusal is
real and that the tests can tell the difference.

The server runs on 127.0.0.1 only, is started by the test and stopped by its PID.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography import x509

from support.cli import USER_PIN
from support.lifecycle import TokenCA, make_token_ca
from support.openssl import ENGINE_SO, engine_conf, openssl_env, pkcs11_id, s_server
from support.softhsm import SoftHSM

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(
        any(shutil.which(tool) is None for tool in ("certutil", "vfychain", "tstclnt", "openssl")),
        reason="NSS tools (libnss3-tools) or openssl are not installed",
    ),
]

SIGN_ONLY_SERVER = """
[profiles.server-sign-only]
description = "A TLS server certificate certifying digital_signature alone (NSS control)."
days = 30
key_usage = ["digital_signature"]
extended_key_usage = ["server_auth"]
allowed_key_types = ["ec-p256", "rsa-2048"]
subject_fields = ["CN"]
required_subject_fields = ["CN"]
san_types = ["dns", "ip"]
required_san_types = ["dns", "ip"]
"""


@pytest.fixture
def token_ca(softhsm: SoftHSM) -> TokenCA:
    return make_token_ca(softhsm, profiles=SIGN_ONLY_SERVER)


def _nss(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=120, check=False,
                          env={"PATH": "/usr/bin:/bin", "LC_ALL": "C"})


@pytest.fixture
def nss_db(token_ca: TokenCA, tmp_path: Path) -> str:
    """An NSS database that trusts our CA for TLS servers (``-t C``)."""
    db = tmp_path / "nssdb"
    db.mkdir()
    made = _nss("certutil", "-N", "-d", f"sql:{db}", "--empty-password")
    assert made.returncode == 0, made.stderr
    added = _nss("certutil", "-A", "-d", f"sql:{db}", "-n", "tokenissue-ca", "-t", "CT,C,C", "-a", "-i", str(token_ca.pem))
    assert added.returncode == 0, added.stderr
    return f"sql:{db}"


def _issue(ca: TokenCA, tmp: Path, profile: str, key_type: str, label: str) -> tuple[dict[str, str], Path]:
    out = ca.enroll("CN=localhost", "--profile", profile, "--type", key_type, "--san", "dns:localhost",
                    "--san", "ip:127.0.0.1", "--label", label)
    leaf = tmp / f"{label}.pem"
    ca.export(label, leaf)
    return out, leaf


def _nss_verdict(db: str, leaf: Path) -> tuple[subprocess.CompletedProcess[str], subprocess.CompletedProcess[str]]:
    """``certutil -V -u V`` (valid as an SSL server) and ``vfychain -u 1`` (usage: SSL server)."""
    added = _nss("certutil", "-A", "-d", db, "-n", leaf.stem, "-t", ",,", "-a", "-i", str(leaf))
    assert added.returncode == 0, added.stderr
    return (_nss("certutil", "-V", "-d", db, "-n", leaf.stem, "-u", "V"),
            _nss("vfychain", "-d", db, "-u", "1", "-a", str(leaf)))


def _said(proc: subprocess.CompletedProcess[str]) -> str:
    return proc.stdout + proc.stderr


@pytest.mark.parametrize("key_type", ["rsa-2048", "ec-p256"])
def test_nss_accepts_the_tls_server_profile(token_ca: TokenCA, nss_db: str, tmp_path: Path, key_type: str) -> None:
    _, leaf = _issue(token_ca, tmp_path, "tls-server", key_type, "server")
    usage = x509.load_pem_x509_certificate(leaf.read_bytes()).extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature
    assert usage.key_encipherment is key_type.startswith("rsa")

    certutil, vfychain = _nss_verdict(nss_db, leaf)
    assert certutil.returncode == 0 and "certificate is valid" in _said(certutil), _said(certutil)
    assert vfychain.returncode == 0 and "Chain is good!" in _said(vfychain), _said(vfychain)
    # ... and OpenSSL agrees.
    verified = token_ca.verify(leaf, "-purpose", "sslserver")
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_nss_refuses_a_sign_only_rsa_server_certificate(token_ca: TokenCA, nss_db: str, tmp_path: Path) -> None:
    """The control: the same RSA key with digital_signature alone, which OpenSSL accepts."""
    _, leaf = _issue(token_ca, tmp_path, "server-sign-only", "rsa-2048", "signonly")
    certutil, vfychain = _nss_verdict(nss_db, leaf)
    assert certutil.returncode != 0 and "key usage inadequate" in _said(certutil), _said(certutil)
    assert vfychain.returncode != 0 and "-8102" in _said(vfychain), _said(vfychain)
    assert token_ca.verify(leaf, "-purpose", "sslserver").returncode == 0


@pytest.mark.skipif(ENGINE_SO is None, reason="libengine-pkcs11-openssl is not installed")
@pytest.mark.parametrize("version", ["tls1.2", "tls1.3"])
def test_nss_client_handshakes_with_a_token_rsa_server_key(
    token_ca: TokenCA, nss_db: str, tmp_path: Path, version: str
) -> None:
    """``tstclnt`` (NSS's TLS client) completes a handshake with ``openssl s_server`` signing with
    the RSA key on the token. The server offers ECDHE suites only (TLS 1.2) or TLS 1.3, so the
    key that cannot decrypt is never asked to, although its certificate says keyEncipherment."""
    out, leaf = _issue(token_ca, tmp_path, "tls-server", "rsa-2048", "server")
    uri = f"pkcs11:token=test;id={pkcs11_id(out['key_id'])};type=private"
    suites = ["-tls1_2", "-cipher", "ECDHE+AESGCM"] if version == "tls1.2" else ["-tls1_3"]
    args = ["-engine", "pkcs11", "-keyform", "engine", "-key", uri, "-pass", "env:PIN", "-cert", str(leaf),
            *suites, "-www", "-naccept", "1"]
    env = openssl_env(token_ca.hsm, OPENSSL_CONF=str(engine_conf(tmp_path / "engine.cnf")), PIN=USER_PIN)
    request = tmp_path / "request.txt"
    request.write_text("GET / HTTP/1.0\r\n\r\n")
    with s_server(args, env) as (port, server):
        client = subprocess.run(
            ["tstclnt", "-h", "127.0.0.1", "-p", str(port), "-d", nss_db, "-V", f"{version}:{version}",
             "-A", str(request)],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120, check=False,
            env={"PATH": "/usr/bin:/bin", "LC_ALL": "C"},
        )
        server_out, _ = server.communicate(timeout=60)
    assert client.returncode == 0, client.stdout[-3000:] + client.stderr[-3000:]
    assert "HTTP/1.0 200 ok" in client.stdout, client.stdout[-3000:]
    assert server.returncode == 0, server_out
