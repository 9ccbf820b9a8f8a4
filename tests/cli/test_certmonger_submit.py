"""`tokenissue certmonger-submit` against certmonger's CA helper contract (doc/submit.txt):
operations in CERTMONGER_OPERATION, the request in CERTMONGER_CSR, the answer on stdout with
exit 0 issued, 2 rejected, 3 unreachable, 4 under-configured, 6 not supported. Run as certmonger
runs it: a fresh process with only the environment, on a real SoftHSM CA."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from tokenissue import __version__

from support.cli import USER_PIN
from support.lifecycle import TokenCA, make_token_ca, token_dir
from support.softhsm import SoftHSM


@pytest.fixture
def ca(softhsm: SoftHSM) -> TokenCA:
    return make_token_ca(softhsm)


def _csr(name: str = "host.example.kr", key: object = None) -> str:
    key = key or ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name.from_rfc4514_string(f"CN={name}"))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256())  # type: ignore[arg-type]
    )
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def _helper(ca: TokenCA, operation: str | None, *args: str, pin: bool = True, ca_dir: Path | None = None,
            **env: str) -> subprocess.CompletedProcess[str]:  # fmt: skip
    full = {k: v for k, v in ca.hsm.env.items() if not k.startswith("TOKENISSUE_CA_PIN")}
    if pin:
        full["TOKENISSUE_CA_PIN"] = USER_PIN
    if operation is not None:
        full["CERTMONGER_OPERATION"] = operation
    full.update(env)
    return subprocess.run(
        [sys.executable, "-m", "tokenissue.cli", "certmonger-submit", "--ca", str(ca_dir or ca.dir), *args],
        env=full, capture_output=True, text=True, timeout=120, check=False, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def test_the_informational_operations(ca: TokenCA) -> None:
    ident = _helper(ca, "IDENTIFY", pin=False)
    assert (ident.returncode, ident.stdout) == (0, f"tokenissue {__version__}\n")
    templates = _helper(ca, "GET-SUPPORTED-TEMPLATES", pin=False)
    assert templates.returncode == 0 and set(templates.stdout.split()) == {"tls-server", "tls-client"}
    assert _helper(ca, "GET-DEFAULT-TEMPLATE", pin=False).stdout == "tls-server\n"
    for op in ("GET-NEW-REQUEST-REQUIREMENTS", "GET-RENEW-REQUEST-REQUIREMENTS"):
        assert (_helper(ca, op, pin=False).returncode, _helper(ca, op, pin=False).stdout) == (0, "")
    roots = _helper(ca, "FETCH-ROOTS", pin=False)
    nickname, _, pem = roots.stdout.partition("\n")
    assert roots.returncode == 0 and nickname == "Test Token CA"
    assert x509.load_pem_x509_certificate(pem.encode()) == ca.certificate
    assert "sub-ca" not in templates.stdout.split()  # only what the helper may certify is offered
    for op in ("FETCH-SCEP-CA-CAPS", "SOMETHING-NEW"):
        assert _helper(ca, op, pin=False).returncode == 6


def test_submit_issues_once_per_request_and_records_a_renewal(ca: TokenCA, tmp_path: Path) -> None:
    csr = _csr()
    first = _helper(ca, "SUBMIT", CERTMONGER_CSR=csr)
    assert first.returncode == 0, first.stdout + first.stderr
    cert = x509.load_pem_x509_certificate(first.stdout.encode())
    assert cert.subject.rfc4514_string() == "CN=host.example.kr"
    leaf = tmp_path / "leaf.pem"
    leaf.write_text(first.stdout)
    assert ca.verify(leaf).returncode == 0
    [rec] = [r for r in ca.records() if r.serial == cert.serial_number]
    assert rec.profile == "tls-server"
    # certmonger may submit the same request again (after a crash, say): the same certificate.
    again = _helper(ca, "POLL", CERTMONGER_CSR=csr)
    assert again.returncode == 0 and again.stdout == first.stdout
    # A renewal: certmonger passes the certificate it holds; the new one is recorded as replacing it.
    renewed = _helper(ca, "SUBMIT", CERTMONGER_CSR=_csr(), CERTMONGER_CERTIFICATE=first.stdout,
                      CERTMONGER_CA_PROFILE="tls-server")  # fmt: skip
    assert renewed.returncode == 0, renewed.stdout + renewed.stderr
    new = x509.load_pem_x509_certificate(renewed.stdout.encode())
    [rec] = [r for r in ca.records() if r.serial == new.serial_number]
    assert rec.replaces == cert.serial_number
    # Renewing again with the very same CSR (an RSA key signs it the same way each time) is a new
    # request: the next certificate, not the one before.
    same_csr = _csr()
    second = _helper(ca, "SUBMIT", CERTMONGER_CSR=same_csr, CERTMONGER_CERTIFICATE=renewed.stdout)
    third = _helper(ca, "SUBMIT", CERTMONGER_CSR=same_csr, CERTMONGER_CERTIFICATE=second.stdout)
    assert second.returncode == third.returncode == 0 and len({renewed.stdout, second.stdout, third.stdout}) == 3
    assert USER_PIN not in first.stdout + first.stderr + renewed.stdout + renewed.stderr


def test_each_failure_has_its_status_and_one_sentence(ca: TokenCA, softhsm: SoftHSM) -> None:
    cases = [
        (_helper(ca, "SUBMIT"), 4, "gave no signing request"),
        (_helper(ca, "SUBMIT", CERTMONGER_CSR="-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----"),
         2, "not a PEM PKCS#10 request"),
        (_helper(ca, "SUBMIT", CERTMONGER_CSR=_csr(key=ed25519.Ed25519PrivateKey.generate()),
                 CERTMONGER_CA_PROFILE="code-signing"), 2, ""),
        (_helper(ca, "SUBMIT", CERTMONGER_CSR=_csr(), CERTMONGER_CA_PROFILE="sub-ca"), 2, "is not offered to certmonger"),
        (_helper(ca, "SUBMIT", "--allow-profile", "no-such-profile", CERTMONGER_CSR=_csr(),
                 CERTMONGER_CA_PROFILE="no-such-profile"), 4, "no-such-profile"),  # a wrong -T: configuration
        (_helper(ca, "SUBMIT", pin=False, CERTMONGER_CSR=_csr()), 4, "TOKENISSUE_CA_PIN"),
        (_helper(ca, "SUBMIT", ca_dir=ca.dir.parent / "nowhere", CERTMONGER_CSR=_csr()), 4, "not a CA directory"),
    ]  # fmt: skip
    for proc, status, words in cases:
        assert proc.returncode == status, (status, proc.returncode, proc.stdout, proc.stderr)
        assert proc.stdout.strip() and words in proc.stdout and len(proc.stdout.strip().splitlines()) == 1, proc.stdout
        assert "Traceback" not in proc.stderr
    before = len(ca.records())
    # The CA's token is gone (pulled out): unreachable, certmonger tries again later.
    shutil.rmtree(token_dir(softhsm, "ca"))
    gone = _helper(ca, "SUBMIT", CERTMONGER_CSR=_csr())
    assert gone.returncode == 3, gone.stdout + gone.stderr
    assert len(ca.records()) == before
