"""SCEP (RFC 8894) at /scep on `ca serve`, driven by a client nobody here wrote: micromdm's
`scepclient` (Debian's scep package), with the RA's key on the CA's token.

scepclient 2.1 encrypts with single DES only and to every certificate GetCACert gives unless
-ca-fingerprint picks one: the CA here allows DES (ca.toml scep_single_des) and the client is
pointed at the RA certificate. It takes the challenge in argv (-challenge), visible to other
users of the machine: a limitation of that client, documented in docs/scep.md.

Covered: enrollment with REFERENCE:CODE (the registered subject, on the inventory, the
registration used), renewal (RenewalReq signed with the issued certificate and its key), a
wrong code (FAILURE, counted toward the lock, nothing issued), a used registration (FAILURE),
and a CA that does not allow DES refusing scepclient with badAlg.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs7

from support.cli import USER_PIN
from support.cmp_server import Served, register, served, snapshot
from support.lifecycle import TokenCA, make_token_ca
from support.scep import cert_rep_attributes, csr_with_challenge, pki_message, requester
from support.softhsm import SoftHSM
from support.tpm import TPM2_MODULE, TPMTokens

pytestmark = pytest.mark.skipif(shutil.which("scepclient") is None, reason="Debian's scep package is not installed")
SUBJECT = "CN=scep device,OU=MDM,O=tokenissue tests,C=KR"


def _allow_des(ca: TokenCA) -> None:
    conf = ca.dir / "ca.toml"
    conf.write_text(conf.read_text() + "scep_single_des = true\n")


def _scep_ra(ca: TokenCA) -> x509.Certificate:
    proc = ca.run("ca", "scep-ra", "--ca-dir", str(ca.dir))
    assert proc.returncode == 0, proc.stderr
    cert = x509.load_pem_x509_certificate((ca.dir / "scep-ra.pem").read_bytes())
    assert cert.fingerprint(hashes.SHA256()).hex() in proc.stdout
    return cert


@pytest.fixture
def scep(softhsm: SoftHSM) -> tuple[TokenCA, Served, x509.Certificate]:
    ca = make_token_ca(softhsm)
    ra = _scep_ra(ca)
    _allow_des(ca)
    with served(ca) as server:
        yield ca, server, ra


def _scepclient_args(server: Served, ra: x509.Certificate, d: Path, challenge: str | None) -> list[str]:
    fp = hashlib.sha256(ra.public_bytes(serialization.Encoding.DER)).hexdigest()
    args = ["scepclient", "-server-url", f"{server.url}/scep", "-private-key", str(d / "key.pem"),
            "-certificate", str(d / "cert.pem"), "-ca-fingerprint", fp,
            "-cn", "scep device", "-ou", "MDM", "-organization", "tokenissue tests", "-country", "KR"]  # fmt: skip
    return args + (["-challenge", challenge] if challenge is not None else [])


def _scepclient(server: Served, ra: x509.Certificate, d: Path, challenge: str | None, *, renew: bool = False) -> subprocess.CompletedProcess[str]:
    """scepclient once; with a certificate already at d/cert.pem it renews (RenewalReq)."""
    assert renew == (d / "cert.pem").exists()
    return subprocess.run(_scepclient_args(server, ra, d, challenge), cwd=d, capture_output=True, text=True, timeout=120,
                          check=False)  # fmt: skip


def test_scepclient_enrolls_with_the_code_and_renews(scep: tuple[TokenCA, Served, x509.Certificate], tmp_path: Path) -> None:
    ca, server, ra = scep
    # GetCACaps and GetCACert as any client sees them.
    caps = httpx.get(f"{server.url}/scep", params={"operation": "GetCACaps"}, timeout=10).text.split()
    assert {"POSTPKIOperation", "SHA-256", "AES", "Renewal", "SCEPStandard"} <= set(caps)
    got = httpx.get(f"{server.url}/scep", params={"operation": "GetCACert"}, timeout=10)
    assert got.headers["content-type"] == "application/x-x509-ca-ra-cert"
    assert set(pkcs7.load_der_pkcs7_certificates(got.content)) == {ra, ca.certificate}  # a SET OF: DER sorts it
    assert ra.extensions.get_extension_for_class(x509.KeyUsage).value.key_encipherment

    reg = register(ca.dir, SUBJECT, "tls-client")
    proc = _scepclient(server, ra, tmp_path, f"{reg.ref}:{reg.code.reveal()}")
    assert proc.returncode == 0, proc.stdout + proc.stderr + server.stderr()
    first = x509.load_pem_x509_certificate((tmp_path / "cert.pem").read_bytes())
    assert first.issuer == ca.certificate.subject
    assert first.subject == x509.Name.from_rfc4514_string(SUBJECT)
    verify = subprocess.run(["openssl", "verify", "-CAfile", str(ca.dir / "ca.pem"), str(tmp_path / "cert.pem")],
                            capture_output=True, text=True, check=False)  # fmt: skip
    assert verify.returncode == 0, verify.stderr
    records = ca.json("ca", "list", "--ca-dir", str(ca.dir))
    assert format(first.serial_number, "x") in {r["serial"] for r in records}
    regs = ca.json("ra", "list", "--ca-dir", str(ca.dir))
    assert [r["status"] for r in regs if r["ref"] == reg.ref] == ["used"]

    # Renewal: cert.pem exists, so scepclient sends a RenewalReq signed with it and its key.
    proc = _scepclient(server, ra, tmp_path, None, renew=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    second = x509.load_pem_x509_certificate((tmp_path / "cert.pem").read_bytes())
    assert second.serial_number != first.serial_number
    assert second.subject == first.subject and second.public_key() == first.public_key()
    log = [line for line in server.access_log() if line["path"] == "/scep" and line.get("scep") not in (None, "?")]
    assert [line["scep"] for line in log] == ["pkcs_req", "renewal_req"], log
    assert log[1]["replaces"] == format(first.serial_number, "x")


def test_a_wrong_or_used_challenge_is_refused(scep: tuple[TokenCA, Served, x509.Certificate], tmp_path: Path) -> None:
    ca, server, ra = scep
    reg = register(ca.dir, SUBJECT, "tls-client")
    before = snapshot(ca.dir)
    (tmp_path / "wrong").mkdir()
    proc = _scepclient(server, ra, tmp_path / "wrong", f"{reg.ref}:AAAA-BBBB-CCCC-DDDD")
    assert proc.returncode != 0 and "failInfo" in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    after = snapshot(ca.dir)
    assert after["certs"] == before["certs"]
    (line,) = [entry for entry in server.access_log() if entry.get("scep") == "pkcs_req"]
    assert line["auth"] == "wrong-code" and line["ref_failures"] == 1
    assert "AAAA" not in server.stderr()  # the typed code is never logged

    (tmp_path / "good").mkdir()
    assert _scepclient(server, ra, tmp_path / "good", f"{reg.ref}:{reg.code.reveal()}").returncode == 0
    (tmp_path / "again").mkdir()
    proc = _scepclient(server, ra, tmp_path / "again", f"{reg.ref}:{reg.code.reveal()}")
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert len(snapshot(ca.dir)["certs"]) == len(before["certs"]) + 1


def test_single_des_is_refused_unless_allowed(softhsm: SoftHSM, tmp_path: Path) -> None:
    ca = make_token_ca(softhsm)
    ra = _scep_ra(ca)
    reg = register(ca.dir, SUBJECT, "tls-client")
    with served(ca) as server:
        proc = _scepclient(server, ra, tmp_path, f"{reg.ref}:{reg.code.reveal()}")
        assert proc.returncode != 0
        assert "failInfo: badAlg" in proc.stdout + proc.stderr, proc.stdout + proc.stderr
        (line,) = [entry for entry in server.access_log() if entry.get("scep_fail")]
        assert line["scep_fail"] == "bad_alg" and "des" in line["scep_text"]


def test_the_ra_key_on_a_tpm(tpm_with_softhsm: tuple[SoftHSM, TPMTokens], tmp_path: Path) -> None:
    """The CA's key and the RA's on tpm2-pkcs11: the token decrypts the request's content key,
    signs the CertRep, and keeps working after a block it refuses (its failed C_Decrypt stays
    active in the session; the RA takes a new one)."""
    _, tpm = tpm_with_softhsm
    tpm_env = {"TOKENISSUE_MODULE": TPM2_MODULE, "TOKENISSUE_CA_PIN": USER_PIN}
    ca_dir = tpm.root / "ca"
    proc = tpm.run("ca", "init", "--ca-dir", str(ca_dir), "--token", "test", "--subject",
                   "CN=TPM CA,O=tokenissue tests,C=KR", "--type", "ec-p256", env=tpm_env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    ca = TokenCA(hsm=tpm, dir=ca_dir)
    proc = ca.run("ca", "scep-ra", "--ca-dir", str(ca_dir), env=tpm_env)
    assert proc.returncode == 0, proc.stderr
    ra = x509.load_pem_x509_certificate((ca_dir / "scep-ra.pem").read_bytes())
    _allow_des(ca)
    reg = register(ca_dir, SUBJECT, "tls-client")
    with served(ca, env=tpm_env) as server:
        garbage = _request_with_garbage_key(server, ra)
        assert garbage.status_code == 200  # a CertRep FAILURE, not an HTTP error
        proc = _scepclient(server, ra, tmp_path, f"{reg.ref}:{reg.code.reveal()}")
        assert proc.returncode == 0, proc.stdout + proc.stderr + server.stderr()
        cert = x509.load_pem_x509_certificate((tmp_path / "cert.pem").read_bytes())
        assert cert.issuer == ca.certificate.subject
        proc = _scepclient(server, ra, tmp_path, None, renew=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        fails = [line for line in server.access_log() if line.get("scep_fail")]
        assert [f["scep_fail"] for f in fails] == ["bad_message_check"], fails


def _request_with_garbage_key(server: Served, ra: x509.Certificate) -> httpx.Response:
    """A PKCSReq whose content key, encrypted to the RA, is random bytes under a good signature."""
    key, cert = requester()
    data = csr_with_challenge(key, "CN=scep test", "0000000000:AAAA")
    body = pki_message(data, key, cert, ra, garbage_key=True)
    r = httpx.post(f"{server.url}/scep", params={"operation": "PKIOperation"}, content=body,
                   headers={"Content-Type": "application/x-pki-message"}, timeout=30)  # fmt: skip
    assert cert_rep_attributes(r.content)["failInfo"] == "1"  # badMessageCheck
    return r


def test_scepclient_waits_for_an_officer(softhsm: SoftHSM, tmp_path: Path) -> None:
    """A profile with approval: scepclient gets PENDING, sleeps its 30 s and sends its PKCSReq
    again; once `ca approve` has run, that repeat gets the certificate."""
    profile = ('[profiles.mdm]\ndescription = "devices an officer approves"\napproval = true\ndays = 30\n'
               'key_usage = ["digital_signature", "key_encipherment"]\nallowed_key_types = ["rsa-2048"]\n')  # fmt: skip
    ca = make_token_ca(softhsm, profiles=profile)
    ra = _scep_ra(ca)
    _allow_des(ca)
    reg = register(ca.dir, SUBJECT, "mdm")
    with served(ca) as server:
        args = _scepclient_args(server, ra, tmp_path, f"{reg.ref}:{reg.code.reveal()}")
        with subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as client:
            try:
                for _ in range(200):
                    if any(line.get("pending") for line in server.access_log()):
                        break
                    time.sleep(0.1)
                (queued,) = ca.json("ca", "pending", "--ca-dir", str(ca.dir))
                assert ca.run("ca", "approve", "--ca-dir", str(ca.dir), queued["id"]).returncode == 0
                out, _ = client.communicate(timeout=90)
            finally:
                if client.poll() is None:
                    client.kill()
        assert client.returncode == 0, out + server.stderr()
        assert "PENDING" in out
    cert = x509.load_pem_x509_certificate((tmp_path / "cert.pem").read_bytes())
    assert format(cert.serial_number, "x") == ca.json("ca", "pending", "--ca-dir", str(ca.dir), "--all")[0]["serial"]
