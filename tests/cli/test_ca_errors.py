"""Bad input to the CA and to ``enroll``: one clear sentence, the documented exit status
(STYLE.md: 2 usage, 3 config, 5 PIN, 6 CA refused), and nothing changed — the CA's list and
audit log, and the token, are the same before and after.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from support.lifecycle import TokenCA, make_token_ca
from support.softhsm import SoftHSM

BUILTIN_PROFILES = ["code-signing", "personal", "personal-banking", "smime", "tls-client", "tls-server"]


@pytest.fixture
def token_ca(softhsm: SoftHSM) -> TokenCA:
    return make_token_ca(softhsm)


def _csr(key: Any, subject: str, *, der: bool = False) -> bytes:
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    req = x509.CertificateSigningRequestBuilder().subject_name(x509.Name.from_rfc4514_string(subject, {"emailAddress": NameOID.EMAIL_ADDRESS})).sign(
        key, algorithm
    )
    return req.public_bytes(serialization.Encoding.DER if der else serialization.Encoding.PEM)


def _corrupt_signature(der: bytes) -> bytes:
    """Flip a bit in the last byte of a DER CSR: the end of the signature BIT STRING (for ECDSA the
    last byte of s), so the CSR still parses but its signature no longer verifies."""
    return der[:-1] + bytes([der[-1] ^ 0x01])


def _snapshot(ca: TokenCA) -> tuple[Any, Any]:
    return ca.issued(), ca.audit()


def _one_sentence_error(proc: Any) -> str:
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("Error: "), lines[0]
    assert lines[0].rstrip().endswith("."), lines[0]
    return lines[0]


# Each case: the CSR file contents, the profile, the expected exit status, and words the message has.
CASES: dict[str, tuple[Callable[[], bytes], str, int, list[str]]] = {
    "corrupted-signature": (
        lambda: _corrupt_signature(_csr(ec.generate_private_key(ec.SECP256R1()), "CN=Tampered", der=True)),
        "personal", 6, ["signature does not verify"],
    ),
    "rsa-2048-for-code-signing": (
        lambda: _csr(rsa.generate_private_key(65537, 2048), "CN=Signer"),
        "code-signing", 6, ["code-signing", "at least 3072 bits", "2048"],
    ),
    "ed25519-for-code-signing": (
        lambda: _csr(ed25519.Ed25519PrivateKey.generate(), "CN=Signer"),
        "code-signing", 6, ["code-signing", "does not accept Ed25519"],
    ),
    "subject-field-not-allowed": (
        lambda: _csr(ec.generate_private_key(ec.SECP256R1()), "CN=Someone,L=Seoul"),
        "personal", 6, ["does not allow the subject attribute 'L'"],
    ),
    "email-in-tls-server-subject": (
        lambda: _csr(ec.generate_private_key(ec.SECP256R1()), "CN=host,emailAddress=a@example.com"),
        "tls-server", 6, ["emailAddress"],
    ),
    "unknown-profile": (
        lambda: _csr(ec.generate_private_key(ec.SECP256R1()), "CN=Someone"),
        "no-such-profile", 2, ["no profile 'no-such-profile'", *BUILTIN_PROFILES],
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_ca_sign_refuses_and_changes_nothing(token_ca: TokenCA, case: str, tmp_path: Path) -> None:
    # One good certificate first, so that "nothing changed" compares something.
    good = tmp_path / "good.csr"
    good.write_bytes(_csr(ec.generate_private_key(ec.SECP256R1()), "CN=Good"))
    token_ca.run("ca", "sign", "--ca-dir", str(token_ca.dir), str(good), "--profile", "personal", check=True)
    before = _snapshot(token_ca)
    assert len(before[0]) == 1

    make, profile, code, words = CASES[case]
    csr = tmp_path / "bad.csr"
    csr.write_bytes(make())
    proc = token_ca.run("ca", "sign", "--ca-dir", str(token_ca.dir), str(csr), "--profile", profile)
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert proc.stdout == ""
    message = _one_sentence_error(proc)
    for word in words:
        assert word in message, (word, message)
    assert _snapshot(token_ca) == before


def _expired_self_signed(key: Any, subject: x509.Name) -> x509.Certificate:
    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=40))
        .not_valid_after(now - timedelta(days=10))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )


def test_expired_ca_refuses_to_sign(softhsm: SoftHSM, tmp_path: Path) -> None:
    ca_dir = softhsm.root / "file-ca"
    softhsm.run("ca", "init", "--ca-dir", str(ca_dir), "--subject", "CN=Short Lived CA", "--insecure-file-key",
                check=True)
    key = serialization.load_pem_private_key((ca_dir / "ca-key.pem").read_bytes(), password=None)
    old = x509.load_pem_x509_certificate((ca_dir / "ca.pem").read_bytes())
    expired = _expired_self_signed(key, old.subject)
    (ca_dir / "ca.pem").write_bytes(expired.public_bytes(serialization.Encoding.PEM))
    listing = ("ca", "list", "--ca-dir", str(ca_dir), "--json")
    audit = ("ca", "audit", "list", "--ca-dir", str(ca_dir), "--json")
    before = (softhsm.run(*listing, check=True).stdout, softhsm.run(*audit, check=True).stdout)

    csr = tmp_path / "req.csr"
    csr.write_bytes(_csr(ec.generate_private_key(ec.SECP256R1()), "CN=Too Late"))
    proc = softhsm.run("ca", "sign", "--ca-dir", str(ca_dir), str(csr), "--profile", "personal")
    assert proc.returncode == 6, proc.stdout + proc.stderr
    message = _one_sentence_error(proc)
    assert "expired" in message
    assert f"{expired.not_valid_after_utc:%Y-%m-%d}" in message
    assert (softhsm.run(*listing, check=True).stdout, softhsm.run(*audit, check=True).stdout) == before
    assert json.loads(before[0]) == []


def _keys(hsm: SoftHSM) -> list[Any]:
    keys: list[Any] = json.loads(hsm.run("keys", "list", "-t", "test", "--json", check=True).stdout)
    return keys


def _resume_has_nothing(hsm: SoftHSM, env: dict[str, str] | None = None) -> None:
    proc = hsm.run("enroll", "--resume", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "nothing to do" in proc.stdout


def test_enroll_with_missing_ca_directory(softhsm: SoftHSM) -> None:
    proc = softhsm.run("enroll", "--token", "test", "--ca", "/nonexistent", "--subject", "CN=Nobody")
    assert proc.returncode == 3, proc.stdout + proc.stderr
    message = _one_sentence_error(proc)
    assert "/nonexistent" in message
    assert "ca init" in message
    assert _keys(softhsm) == []
    _resume_has_nothing(softhsm)


def test_enroll_with_wrong_pin_generates_nothing(token_ca: TokenCA) -> None:
    proc = token_ca.run(*token_ca.enroll_args("CN=Wrong PIN"), env={"TOKENISSUE_PIN": "999999"})
    assert proc.returncode == 5, proc.stdout + proc.stderr
    message = _one_sentence_error(proc)
    assert "PIN" in message
    assert "999999" not in proc.stdout + proc.stderr
    assert token_ca.private_keys() == []
    assert token_ca.issued() == []
    # The refused enrollment must not stay in the journal, where a later 'enroll --resume'
    # would silently finish it.
    _resume_has_nothing(token_ca.hsm, token_ca.env)
