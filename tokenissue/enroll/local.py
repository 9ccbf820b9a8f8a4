"""Enrollment against a CA directory on this machine (the embedded default)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from cryptography import x509

from ..ca.authority import CertificateAuthority
from ..ca.registration import RegistrationAuthority
from ..credentials import IdentityProof, Pin, ProtectedAuth, Secret
from ..errors import RequestRejected, TokenIssueError
from ..models import CertStatus, Registration, RevocationReason
from ..pkix.names import format_san, parse_subject, sans_of
from .base import EnrollResult

__all__ = ["LocalCA"]


PinProvider = Callable[[], Pin | ProtectedAuth | None]


def _attributes(name: x509.Name) -> list[tuple[str, str]]:
    """A name's attributes, order aside, as a registration and a request are compared."""
    return sorted((a.oid.dotted_string, str(a.value)) for a in name)


class LocalCA:
    """A :class:`CertificateAuthority` used in-process.

    The CA PIN is needed only to sign. Give it as ``ca_pin``, or as ``ca_pin_provider``, which
    is called the first time a signature is needed (revoking, for one, signs nothing, and a
    resumed enrollment past issuance needs no CA at all).

    Once opened, the CA key stays open (one logged-in session on the CA token) until
    :meth:`close`, as it does for ``ca serve``: a batch of rows logs in to the CA token once,
    not once per row. A token error while signing drops it, so the next request opens the
    token afresh (it may have been re-inserted).

    With ``ref`` and ``auth_code`` the holder enrolls with a registration, as over CMP: the
    code is checked (a wrong one counts toward the registration's lock), the certificate gets
    the registration's subject and profile and at most its SANs, re-issues the certificate the
    registration names (if any), and uses the registration up. :meth:`check_profile` (called
    before a key is made) refuses a reference that is unknown or no longer usable.
    """

    def __init__(
        self,
        ca_dir: Path,
        *,
        ca_pin: Pin | ProtectedAuth | None,
        module: str | None = None,
        ca_pin_provider: PinProvider | None = None,
        ref: str | None = None,
        auth_code: Any = None,
    ) -> None:
        self.location = str(ca_dir.resolve())
        self.ref = ref
        self._auth_code = auth_code
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
        if self.ref is not None and replaces is None and self._ca.inventory.get_registration(self.ref) is not None:
            # A renewal needs no code (the CA is in this process), and an enrollment moved here
            # from a CMP server may carry a reference this CA never issued: both go on without.
            return self._request_registered(
                csr, request_id=request_id, token_serial=token_serial, key_id=key_id, label=label, identity=identity
            )
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

    def _registration(self) -> Registration:
        assert self.ref is not None
        return RegistrationAuthority(self._ca).check_usable(self.ref)

    def _code(self) -> Secret:
        code = self._auth_code() if callable(self._auth_code) else self._auth_code
        return code if isinstance(code, Secret) else Secret("")

    def _request_registered(
        self,
        csr: x509.CertificateSigningRequest,
        *,
        request_id: str,
        token_serial: str | None,
        key_id: bytes | None,
        label: str | None,
        identity: IdentityProof | None,
    ) -> EnrollResult:
        """Enroll with registration ``self.ref``: check the code (and the registration number
        of a registration that binds one), issue, use the registration up."""
        assert self.ref is not None
        ra = RegistrationAuthority(self._ca)
        earlier = self._ca.inventory.find_by_request(request_id)
        reg = ra.get(self.ref)
        fixed = parse_subject(reg.subject)
        if earlier is None or reg.serial != earlier.serial:
            # Not yet used by this request's certificate (a rerun after that needs no code).
            reg = ra.verify_code(self.ref, self._code())
            ra.check_id_number(reg, None if identity is None else identity.number)
            if list(csr.subject) and _attributes(csr.subject) != _attributes(fixed):
                raise RequestRejected(
                    f"The requested subject '{csr.subject.rfc4514_string()}' is not the subject of registration "
                    f"{reg.ref} ('{reg.subject}')."
                )
            if not {format_san(g) for g in sans_of(csr)} <= set(reg.san):
                raise RequestRejected(f"The request asks for subjectAltNames registration {reg.ref} does not allow.")
        try:
            issued = self._ca.sign(
                csr, reg.profile, pin=None, request_id=request_id, subject=fixed,
                token_serial=token_serial, key_id=key_id, label=label, ca_key=self._key, identity=identity,
                real_name=reg.real_name, reissue_of=reg.reissue_of,
            )  # fmt: skip
        except TokenIssueError:
            self._release()
            raise
        try:
            ra.consume(reg.ref, issued.record.serial)
        except RequestRejected:
            # Used, cancelled or locked meanwhile: the certificate must not stand.
            self._ca.revoke(issued.record.serial, RevocationReason.PRIVILEGE_WITHDRAWN)
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
        # With a registration, its profile is the one issued under (as over CMP).
        self._ca.profile(self._registration().profile if self.ref is not None else profile)

    def identity_required(self, profile: str) -> bool:
        if self.ref is not None:
            return self._registration().id_hash is not None
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
