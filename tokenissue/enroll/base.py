"""The interface every enrollment client implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from cryptography import x509

from ..models import CertStatus, RevocationReason

__all__ = ["EnrollResult", "Enroller"]


@dataclass(frozen=True)
class EnrollResult:
    certificate: x509.Certificate
    chain: list[x509.Certificate]  # issuing CA first, root last


class Enroller(Protocol):
    """A CA as the holder sees it."""

    location: str  #: what the holder records to find this CA again (a directory or a URL)
    needs_ca_pin: bool  #: whether signing needs a CA PIN in this process (local CA on a token)

    def request(
        self,
        csr: x509.CertificateSigningRequest,
        *,
        profile: str,
        request_id: str,
        token_serial: str | None,
        key_id: bytes | None,
        label: str | None,
        replaces: int | None = None,
    ) -> EnrollResult:
        """Certify the CSR. Asking again with the same ``request_id`` returns the same answer."""
        ...

    def check_profile(self, profile: str) -> None:
        """Raise when the CA is known not to offer ``profile`` (checked before a key is made)."""
        ...

    def revoke(self, serial: int, reason: RevocationReason) -> None: ...

    def status(self, serial: int) -> CertStatus | None:
        """What the CA says of the certificate, or None when it cannot be asked."""
        ...

    def close(self) -> None: ...
