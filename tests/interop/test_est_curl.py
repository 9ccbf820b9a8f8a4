"""EST (RFC 7030) on `ca serve --tls-cert`, driven by clients nobody here wrote: curl, with
OpenSSL's libp11 engine for the token key, and `openssl req` / `openssl pkcs7` for the rest.

The holder's key is generated on a SoftHSM token; `openssl req -engine pkcs11` signs the CSR
with it; curl enrolls with the registration's reference and code (HTTP Basic, handed to curl in
a config on its standard input, never in argv) and then re-enrolls, authenticated by TLS with
the token key and the certificate it got. Refusals: a wrong code (401, counted), a used
registration with another request (403; the same request again gets the same certificate), a re-enrollment without a client certificate (403), EST over plain HTTP
(403), a body that is not base64 (400).
"""

from __future__ import annotations

import base64
import json
import ssl
import subprocess
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs7

from tokenissue.inventory import Inventory

from support.cli import USER_PIN
from support.cmp_server import Served, register, served, snapshot
from support.lifecycle import TokenCA, make_token_ca
from support.openssl import ENGINE_SO, openssl_env, pkcs11_id
from support.softhsm import SOFTHSM_MODULE, SoftHSM
from support.tls import server_tls_files

pytestmark = pytest.mark.skipif(ENGINE_SO is None, reason="libengine-pkcs11-openssl is not installed")
EST = "/.well-known/est"


def _engine_conf(path: Path) -> Path:
    assert ENGINE_SO is not None
    path.write_text(
        "openssl_conf = openssl_init\n[openssl_init]\nengines = engine_section\n"
        "[engine_section]\npkcs11 = pkcs11_section\n[pkcs11_section]\nengine_id = pkcs11\n"
        f"dynamic_path = {ENGINE_SO}\nMODULE_PATH = {SOFTHSM_MODULE}\ninit = 0\n"
        "[req]\ndistinguished_name = req_dn\n[req_dn]\n"
    )
    return path


def _token_csr(hsm: SoftHSM, key_id: str, subject: str, out: Path, conf: Path) -> Path:
    """A PKCS#10 request signed on the token by OpenSSL's engine, as base64 DER (EST's body)."""
    pem = out.with_suffix(".pem")
    proc = subprocess.run(
        ["openssl", "req", "-new", "-engine", "pkcs11", "-keyform", "engine", "-key",
         f"pkcs11:token=test;id={pkcs11_id(key_id)};type=private", "-passin", "env:PIN", "-subj", subject,
         "-sha256", "-out", str(pem)],
        env=openssl_env(hsm, OPENSSL_CONF=str(conf), PIN=USER_PIN), capture_output=True, text=True, timeout=120,
        check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    der = x509.load_pem_x509_csr(pem.read_bytes()).public_bytes(serialization.Encoding.DER)
    out.write_bytes(base64.encodebytes(der))
    return out


def _curl(hsm: SoftHSM, config: str, *, engine_conf: Path | None = None) -> subprocess.CompletedProcess[bytes]:
    """curl with its options in a config on stdin (-K -): the code and the PIN stay out of argv."""
    extra = {"OPENSSL_CONF": str(engine_conf), "PIN": USER_PIN} if engine_conf else {}
    return subprocess.run(["curl", "-K", "-"], input=config.encode(), capture_output=True, timeout=120, check=False,
                          env=openssl_env(hsm, **extra))  # fmt: skip


def _certs(body: bytes) -> list[x509.Certificate]:
    """A certs-only EST answer, read by OpenSSL (base64 -d | pkcs7 -print_certs)."""
    der = subprocess.run(["openssl", "base64", "-d"], input=body, capture_output=True, check=True).stdout
    pem = subprocess.run(["openssl", "pkcs7", "-inform", "DER", "-print_certs"], input=der, capture_output=True,
                         check=True).stdout  # fmt: skip
    return x509.load_pem_x509_certificates(pem)


def _post(server: Served, op: str, csr: Path, tls: Path, *lines: str) -> str:
    return "\n".join([
        f'url = "{server.url}{EST}/{op}"', f'cacert = "{tls}"', "silent", "show-error", "fail-with-body",
        'header = "Content-Type: application/pkcs10"', f'data-binary = "@{csr}"', *lines,
    ]) + "\n"  # fmt: skip


@pytest.fixture
def est(softhsm: SoftHSM, tmp_path: Path) -> tuple[TokenCA, Served, Path]:
    ca = make_token_ca(softhsm)
    cert, key = server_tls_files(tmp_path)
    with served(ca, "--tls-cert", str(cert), "--tls-key", str(key)) as server:
        yield ca, server, cert


def test_curl_enrolls_with_the_code_and_reenrolls_with_the_token_key(
    est: tuple[TokenCA, Served, Path], tmp_path: Path
) -> None:
    ca, server, tls = est
    hsm = ca.hsm
    conf = _engine_conf(tmp_path / "engine.cnf")
    reg = register(ca.dir, "CN=EST Holder,O=tokenissue tests", "tls-client")
    key_id = json.loads(hsm.run("keys", "generate", "-t", "test", "-l", "est", "--json", check=True).stdout)["id"]

    # cacerts: the CA certificate, read by OpenSSL.
    got = _curl(hsm, f'url = "{server.url}{EST}/cacerts"\ncacert = "{tls}"\nsilent\nfail\n')
    assert got.returncode == 0, got.stderr
    assert _certs(got.stdout) == [ca.certificate]

    csr = _token_csr(hsm, key_id, "/CN=EST Holder/O=tokenissue tests", tmp_path / "first.b64", conf)
    wrong = _curl(hsm, _post(server, "simpleenroll", csr, tls, f'user = "{reg.ref}:WRONG-CODE-0000"', "write-out = \"%{http_code}\""))
    assert wrong.stdout.decode().endswith("401"), wrong.stdout
    with Inventory.open(ca.dir / "ca.db") as inv:
        counted = inv.get_registration(reg.ref)
    assert counted is not None and counted.failures == 1 and counted.status.value == "open"

    first = _curl(hsm, _post(server, "simpleenroll", csr, tls, f'user = "{reg.ref}:{reg.code.reveal()}"'))
    assert first.returncode == 0, first.stdout + first.stderr
    [cert] = _certs(first.stdout)
    assert cert.subject == reg.subject
    assert x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest.hex() == key_id
    leaf = tmp_path / "leaf.pem"
    leaf.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    assert ca.verify(leaf).returncode == 0

    # The same request again (its answer lost) gets the same certificate; another request with
    # the used code is refused, with EST's error form.
    repeat = _curl(hsm, _post(server, "simpleenroll", csr, tls, f'user = "{reg.ref}:{reg.code.reveal()}"'))
    assert repeat.returncode == 0 and _certs(repeat.stdout) == [cert], repeat.stdout + repeat.stderr
    other = tmp_path / "other.b64"
    other_key = ec.generate_private_key(ec.SECP256R1())
    other_csr = x509.CertificateSigningRequestBuilder().subject_name(reg.subject).sign(other_key, hashes.SHA256())
    other.write_bytes(base64.encodebytes(other_csr.public_bytes(serialization.Encoding.DER)))
    again = _curl(hsm, _post(server, "simpleenroll", other, tls, f'user = "{reg.ref}:{reg.code.reveal()}"', 'write-out = "%{http_code}"'))
    assert again.stdout.decode().endswith("403") and b"already used" in again.stdout, again.stdout

    # Re-enroll: authorized by TLS with the token key and the certificate being renewed.
    renew_csr = _token_csr(hsm, key_id, "/CN=EST Holder/O=tokenissue tests", tmp_path / "renew.b64", conf)
    token_key = f"pkcs11:token=test;id={pkcs11_id(key_id)};type=private"
    anonymous = _curl(hsm, _post(server, "simplereenroll", renew_csr, tls, 'write-out = "%{http_code}"'))
    assert anonymous.stdout.decode().endswith("403"), anonymous.stdout
    renewed = _curl(hsm, _post(server, "simplereenroll", renew_csr, tls, "engine = pkcs11", "key-type = ENG",
                               f'key = "{token_key}"', f'cert = "{leaf}"', f'pass = "{USER_PIN}"'),
                    engine_conf=conf)  # fmt: skip
    assert renewed.returncode == 0, renewed.stdout + renewed.stderr
    [new] = _certs(renewed.stdout)
    assert new.subject == cert.subject and new.public_key() == cert.public_key()
    assert new.serial_number != cert.serial_number
    [rec] = [r for r in ca.records() if r.serial == new.serial_number]
    assert rec.replaces == cert.serial_number and rec.profile == "tls-client"
    log = [line for line in server.access_log() if line["path"].startswith(EST)]
    assert [line.get("est") for line in log] == [None, "simpleenroll", "simpleenroll", "simpleenroll", "simpleenroll", "simplereenroll",
                                                 "simplereenroll"]  # fmt: skip
    assert all(reg.code.reveal() not in json.dumps(line) for line in server.access_log())


def test_refusals_keep_est_s_error_form_and_change_nothing(est: tuple[TokenCA, Served, Path], tmp_path: Path) -> None:
    ca, server, tls = est
    reg = register(ca.dir, "CN=Refused,O=tokenissue tests", "tls-client")
    before = snapshot(ca.dir)
    auth = httpx.BasicAuth(reg.ref, reg.code.reveal())
    url = f"{server.url}{EST}/simpleenroll"
    with httpx.Client(verify=ssl.create_default_context(cafile=str(tls)), timeout=10) as client:
        cases = [
            (b"%%% not base64", "application/pkcs10", auth, 400),
            (base64.encodebytes(b"\x30\x03\x02\x01\x01"), "application/pkcs10", auth, 400),
            (b"MII", "text/plain", auth, 415),
            (b"MII", "application/pkcs10", None, 401),
        ]
        for body, ctype, creds, want in cases:
            r = client.post(url, content=body, headers={"content-type": ctype}, auth=creds)
            assert r.status_code == want, (body, r.status_code, r.text)
            assert r.headers["content-type"].startswith("text/plain") and r.text.strip(), r.text
        assert client.get(f"{server.url}{EST}/csrattrs").status_code == 204
    assert snapshot(ca.dir) == before
    with served(ca) as plain:  # a server without TLS does not take codes over plain HTTP
        r = httpx.post(f"{plain.url}{EST}/simpleenroll", content=b"MII", headers={"content-type": "application/pkcs10"},
                       auth=auth, timeout=10)  # fmt: skip
        assert r.status_code == 403 and "HTTPS" in r.text, r.text
        for op in ("cacerts", "csrattrs"):
            assert httpx.get(f"{plain.url}{EST}/{op}", timeout=10).status_code == 403
    assert snapshot(ca.dir) == before


def test_certs_only_answer_is_what_openssl_reads(est: tuple[TokenCA, Served, Path]) -> None:
    ca, server, tls = est
    r = httpx.get(f"{server.url}{EST}/cacerts", verify=ssl.create_default_context(cafile=str(tls)), timeout=10)
    assert r.headers["content-type"].startswith("application/pkcs7-mime")
    assert pkcs7.load_der_pkcs7_certificates(base64.b64decode(r.content)) == [ca.certificate]
