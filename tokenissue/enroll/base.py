"""The interface every enrollment client implements."""

from __future__ import annotations

import math
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ..credentials import IdentityProof, Secret
from ..errors import UsageError
from ..models import CertStatus, RevocationReason

__all__ = ["EnrollResult", "Enroller", "KeyUpdater", "canonical_auth_code", "retry_after_seconds", "tls_verify"]


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
        identity: IdentityProof | None = None,
    ) -> EnrollResult:
        """Certify the CSR. Asking again with the same ``request_id`` returns the same answer.

        ``identity`` (the registration number and R) is for a profile that binds the holder's
        identity (a Korean VID); it reaches the CA only confidentially, or not at all."""
        ...

    def identity_required(self, profile: str) -> bool:
        """Whether ``profile`` binds the holder's registration number (so the holder must be
        asked for it), as far as this client can know before asking the CA."""
        ...

    def check_profile(self, profile: str) -> None:
        """Raise when the CA is known not to offer ``profile`` (checked before a key is made)."""
        ...

    def sign_only_required(self, profile: str) -> bool:
        """Whether ``profile`` refuses keys that can decrypt as well as sign. Only a CA in this
        process can say; a remote CA cannot see a key's attributes, so it answers False."""
        ...

    def revoke(
        self, serial: int, reason: RevocationReason, *, cert: x509.Certificate | None = None, key: Any = None
    ) -> None:
        """Revoke certificate ``serial``. ``cert`` and ``key`` (a token key: only ``sign()`` and
        ``public_key()`` are called) are the certificate itself and its private key, when the
        holder has them; a protocol that authenticates revocation by that key (CMP, RFC 9483
        §4.2) needs them, a local CA ignores them."""
        ...

    def status(self, serial: int) -> CertStatus | None:
        """What the CA says of the certificate, or None when it cannot be asked."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class KeyUpdater(Protocol):
    """An enroller that renews a certificate by proving possession of the current one (CMP kur).

    The lifecycle uses :meth:`renew` instead of :meth:`Enroller.request` when it renews a
    certificate that is still valid and whose key is on the token; otherwise it asks with
    ``request`` as for a first enrollment.
    """

    def renew(
        self,
        csr: x509.CertificateSigningRequest,
        *,
        new_key: Any,
        current_cert: x509.Certificate,
        current_key: Any,
        profile: str,
        request_id: str,
        token_serial: str | None,
        key_id: bytes | None,
        label: str | None,
        replaces: int | None = None,
    ) -> EnrollResult:
        """Certify ``new_key`` (the CSR's key; it may be the current key) for the CSR's subject and
        extensions, authenticated by ``current_key``, the key of ``current_cert``. Asking again
        with the same ``request_id`` returns the same answer."""
        ...


def retry_after_seconds(value: str | None, default: float, *, now: datetime | None = None) -> float:
    """Seconds to wait as an HTTP Retry-After header says (RFC 9110 §10.2.3): delta-seconds or
    an HTTP-date, never negative; ``default`` when the header is missing, unreadable, or not a
    finite number ("nan", "inf"). Callers cap the wait for the user in front of them.

    Not certbot's ``ClientV2.retry_after``: it answers with a naive local time, and compares an
    HTTP-date (which is UTC) with the local clock, hours off outside UTC.
    """
    if value is None or not value.strip():
        return default
    try:
        seconds = float(value)
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return default
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if not math.isfinite(seconds):
        return default
    return max(0.0, seconds)


def tls_verify(trust: Sequence[x509.Certificate]) -> ssl.SSLContext | bool:
    """How a client checks a CA server's TLS certificate: against ``trust`` (--ca-trust) when
    given, else the system's trust store (httpx's ``verify=True``)."""
    if not trust:
        return True
    pem = "".join(c.public_bytes(serialization.Encoding.PEM).decode("ascii") for c in trust)
    context = ssl.create_default_context(cadata=pem)
    # A certificate given is trusted as it is, even if it is not a self-signed root (the
    # server's own certificate, say), as curl --cacert trusts it.
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    return context


if TYPE_CHECKING:  # SharedSecret's package loads the ASN.1 modules: types only, not at run time
    from ..protocols.cmp import SharedSecret

    #: The secret a registration's reference goes with: a tokenissue RA code, or another CA's.
    AuthCode = Secret | SharedSecret
    AuthCodeSource = AuthCode | Callable[[], AuthCode]


def canonical_auth_code(code: AuthCode) -> AuthCode:
    """The PBM secret for a typed code: a tokenissue RA code (``XXXXX-XXXXX-XXXXX-XXXXX``, typed in
    any case, with or without dashes and spaces) in the canonical form the CA's MAC uses; any
    other secret (another CA's) exactly as given."""
    if not isinstance(code, Secret):
        return code
    from ..ca.registration import parse_code

    try:
        return parse_code(code)
    except UsageError:
        return code
