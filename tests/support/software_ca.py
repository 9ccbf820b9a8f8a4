"""A CA whose key is an ordinary cryptography key (EC P-256), for tests that need certificates
for token keys without a CA token: pre-issued certificates, chains to import, peers' trust.
The ``software_ca`` fixture (tests/conftest.py) makes one in the test's directory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


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
