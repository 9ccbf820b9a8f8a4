"""Shared fixtures: real SoftHSM tokens in per-test directories on tmpfs.

Nothing here mocks the PKCS#11 layer. In-process tests switch SoftHSM to the test's own token
directory by pointing SOFTHSM2_CONF at it and re-initialising the module (SoftHSM reads its
config at C_Initialize); CLI tests run ``tokenissue`` as a real subprocess with that environment.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

SOFTHSM_MODULE = "/usr/lib/softhsm/libsofthsm2.so"
USER_PIN = "246810"
SO_PIN = "13579135"
TMPFS = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
RAW_MECHANISMS = (
    "CKM_RSA_PKCS,CKM_RSA_PKCS_KEY_PAIR_GEN,CKM_ECDSA,CKM_EC_KEY_PAIR_GEN,"
    "CKM_EDDSA,CKM_EC_EDWARDS_KEY_PAIR_GEN,CKM_SHA256,CKM_SHA384,CKM_SHA512"
)

requires_softhsm = pytest.mark.skipif(not Path(SOFTHSM_MODULE).exists(), reason="SoftHSM2 is not installed (make deps)")


@dataclass
class SoftHSM:
    """A private SoftHSM installation: config, token directory, and an environment to run with."""

    root: Path
    conf: Path
    env: dict[str, str] = field(default_factory=dict)
    labels: list[str] = field(default_factory=list)

    def run(
        self, *args: str, input: str | None = None, env: dict[str, str] | None = None, check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """Run the real CLI in a subprocess with this SoftHSM."""
        full_env = {**self.env, **(env or {})}
        proc = subprocess.run(
            [sys.executable, "-m", "tokenissue.cli", *args],
            input=input,
            capture_output=True,
            text=True,
            env=full_env,
            timeout=300,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"tokenissue {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
        return proc

    def add_token(self, label: str) -> None:
        proc = self.run(
            "token", "init", "--label", label, env={"TOKENISSUE_SO_PIN": SO_PIN, "TOKENISSUE_PIN": USER_PIN}
        )
        assert proc.returncode == 0, proc.stderr
        self.labels.append(label)


def make_softhsm(root: Path, *, mechanisms: str | None = None) -> SoftHSM:
    (root / "tokens").mkdir(parents=True, exist_ok=True)
    conf = root / "softhsm2.conf"
    lines = [
        f"directories.tokendir = {root / 'tokens'}",
        "objectstore.backend = file",
        "log.level = ERROR",
        "slots.removable = false",
    ]
    if mechanisms:
        lines.append(f"slots.mechanisms = {mechanisms}")
    conf.write_text("\n".join(lines) + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENISSUE_") and k not in ("SOFTHSM2_CONF",)}
    env.update(
        {
            "SOFTHSM2_CONF": str(conf),
            "TOKENISSUE_MODULE": SOFTHSM_MODULE,
            "TOKENISSUE_PIN": USER_PIN,
            "TOKENISSUE_STATE_DIR": str(root / "state"),
            "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
            "COLUMNS": "200",
        }
    )
    return SoftHSM(root=root, conf=conf, env=env)


@pytest.fixture
def hsm_root() -> Iterator[Path]:
    base = TMPFS or Path(os.environ.get("TMPDIR", "/tmp"))
    root = base / f"tokenissue-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    root.mkdir(mode=0o700)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def softhsm(hsm_root: Path) -> SoftHSM:
    """A SoftHSM with one initialised token labelled 'test' (user PIN in TOKENISSUE_PIN)."""
    if not Path(SOFTHSM_MODULE).exists():
        pytest.skip("SoftHSM2 is not installed (make deps)")
    hsm = make_softhsm(hsm_root)
    hsm.add_token("test")
    return hsm


@pytest.fixture
def raw_softhsm(hsm_root: Path) -> SoftHSM:
    """A SoftHSM whose slot offers only raw mechanisms (CKM_RSA_PKCS, CKM_ECDSA, CKM_EDDSA),
    like many smart cards: the host must hash."""
    if not Path(SOFTHSM_MODULE).exists():
        pytest.skip("SoftHSM2 is not installed (make deps)")
    hsm = make_softhsm(hsm_root, mechanisms=RAW_MECHANISMS)
    hsm.add_token("test")
    return hsm


@pytest.fixture
def session_softhsm(softhsm: SoftHSM, monkeypatch: pytest.MonkeyPatch) -> Iterator[SoftHSM]:
    """The 'softhsm' fixture, with this process's python-pkcs11 switched to it."""
    from tokenissue import p11

    monkeypatch.setenv("SOFTHSM2_CONF", str(softhsm.conf))
    mod = p11.load_module(SOFTHSM_MODULE)
    mod.refresh()
    yield softhsm
    mod.refresh()


@dataclass
class SoftwareCA:
    """A CA whose key is an ordinary cryptography key: issues certificates for token keys in tests."""

    key: Any
    cert: Any
    root: Path

    @property
    def pem(self) -> bytes:
        from cryptography.hazmat.primitives import serialization

        return bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, public_key: Any, cn: str, *, days: int = 30, ca: bool = False,
              not_before: Any = None, not_after: Any = None, serial: int | None = None) -> Any:
        """A certificate for ``public_key`` signed by this CA (valid ``days`` from now by default)."""
        from datetime import UTC, datetime, timedelta

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes
        from cryptography.x509.oid import NameOID

        now = datetime.now(UTC).replace(microsecond=0)
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(self.cert.subject)
            .public_key(public_key)
            .serial_number(serial or x509.random_serial_number())
            .not_valid_before(not_before or now - timedelta(minutes=1))
            .not_valid_after(not_after or now + timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.cert.public_key()), critical=False
            )
            .sign(self.key, hashes.SHA256())
        )

    def issue_pem_file(self, public_key: Any, cn: str, name: str, *, with_ca: bool = False) -> Path:
        """Issue a certificate and write it (optionally followed by the CA's) to a PEM file."""
        from cryptography.hazmat.primitives import serialization

        cert = self.issue(public_key, cn)
        path = self.root / name
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM) + (self.pem if with_ca else b""))
        return path


def make_software_ca(root: Path, cn: str = "Test Software CA") -> SoftwareCA:
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.now(UTC).replace(microsecond=0)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    root.mkdir(parents=True, exist_ok=True)
    ca = SoftwareCA(key=key, cert=cert, root=root)
    (root / "ca.pem").write_bytes(ca.pem)
    return ca


@pytest.fixture
def software_ca(hsm_root: Path) -> SoftwareCA:
    """A software CA (EC P-256) living in the test's directory; its key never touches a token."""
    return make_software_ca(hsm_root / "ca")
