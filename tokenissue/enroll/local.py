"""Enrollment against a CA directory on this machine (the embedded default)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from cryptography import x509

from ..ca.authority import CertificateAuthority
from ..credentials import IdentityProof, Pin, ProtectedAuth
from ..errors import TokenIssueError
from ..models import CertStatus, RevocationReason
from .base import EnrollResult

__all__ = ["LocalCA"]


PinProvider = Callable[[], Pin | ProtectedAuth | None]


class LocalCA:
    """A :class:`CertificateAuthority` used in-process.

    The CA PIN is needed only to sign. Give it as ``ca_pin``, or as ``ca_pin_provider``, which
    is called the first time a signature is needed (revoking, for one, signs nothing, and a
    resumed enrollment past issuance needs no CA at all).

    Once opened, the CA key stays open (one logged-in session on the CA token) until
    :meth:`close`, as it does for ``ca serve``: a batch of rows logs in to the CA token once,
    not once per row. A token error while signing drops it, so the next request opens the
    token afresh (it may have been re-inserted).
    """

    def __init__(
        self,
        ca_dir: Path,
        *,
        ca_pin: Pin | ProtectedAuth | None,
        module: str | None = None,
        ca_pin_provider: PinProvider | None = None,
    ) -> None:
        self.location = str(ca_dir.resolve())
        self._ca = CertificateAuthority.open(ca_dir, module=module)
        self.ca_pin = ca_pin
        self.ca_pin_provider = ca_pin_provider
        self.needs_ca_pin = self._ca.needs_pin
        self._held = ExitStack()
        self._ca_key: Any = None

    def get_ca_pin(self) -> Pin | ProtectedAuth | None:
        """The CA PIN, asking ``ca_pin_provider`` for it the first time."""
        if self.ca_pin is None and self.needs_ca_pin and self.ca_pin_provider is not None:
            self.ca_pin = self.ca_pin_provider()
        return self.ca_pin

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
        try:
            issued = self._ca.sign(
                csr,
                profile,
                pin=None,
                request_id=request_id,
                token_serial=token_serial,
                key_id=key_id,
                label=label,
                replaces=replaces,
                ca_key=self._key,
                identity=identity,
            )
        except TokenIssueError:
            self._release()
            raise
        return EnrollResult(issued.certificate, issued.chain)

    def unlock(self) -> None:
        """Log in to the CA token now and keep the key open: the CA PIN is checked once, here
        (PinIncorrect if refused), before work is handed to processes that would each try it."""
        self._key()

    def _key(self) -> Any:
        """The CA signing key, opened (logging in to the CA token) on first use and kept."""
        if self._ca_key is None:
            self._ca_key = self._held.enter_context(self._ca.signing_key(self.get_ca_pin()))
        return self._ca_key

    def _release(self) -> None:
        self._ca_key = None
        self._held.close()

    def check_profile(self, profile: str) -> None:
        self._ca.profile(profile)

    def identity_required(self, profile: str) -> bool:
        return self._ca.profile(profile).identify_data

    def sign_only_required(self, profile: str) -> bool:
        return self._ca.profile(profile).require_sign_only

    def revoke(
        self, serial: int, reason: RevocationReason, *, cert: x509.Certificate | None = None, key: Any = None
    ) -> None:
        del cert, key  # The CA is in this process: it needs no proof from the holder.
        self._ca.revoke(serial, reason)

    def status(self, serial: int) -> CertStatus | None:
        rec = self._ca.inventory.get_certificate(serial)
        return rec.status if rec else None

    def close(self) -> None:
        self._release()
        self._ca.close()
