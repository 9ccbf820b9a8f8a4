"""The CA's OCSP responder: a delegated signer whose key is on a token, answering from the inventory.

:func:`provision_signer` makes the responder's key on a token (the CA's, unless another is
named) and has the CA certify it for id-kp-OCSPSigning with id-pkix-ocsp-nocheck; run again,
it renews the certificate for the same key, or for a new one with ``new_key`` (the old key is
deleted once the new certificate is in place). The certificate is ``ocsp.pem`` in the CA
directory, recorded in the inventory under profile ``ocsp-signer``, written onto the token next
to its key, and named in ca.toml (``ocsp_key``, ``ocsp_token``).

:class:`OCSPResponder` answers one DER request with one DER response: good for a valid
certificate, revoked with time and reason for a revoked one, unknown for a serial this CA never
issued, ``unauthorized`` for a certificate of another issuer, ``malformedRequest`` for anything
it cannot read. It reads the inventory on every request, so replicas sharing one inventory
give the same answers and a revocation shows at once (no pre-signed answers). It never raises
for a client's bytes: every failure is an OCSP error response.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID

from ..config import CAConfig
from ..credentials import Pin, ProtectedAuth
from ..errors import CAUnavailable, Remedy, TokenError, TokenIssueError, UsageError
from ..inventory import InventoryUnavailable
from ..models import CertStatus, KeyType
from ..pkix.ocsp import OCSPQuery, OCSPRefused, build_response, error_response, issuer_hashes, parse_request
from ..publickeys import same_public_key
from . import delegated
from .authority import CertificateAuthority
from .delegated import Service

__all__ = ["OCSP_CERT_FILE", "SIGNER_PROFILE", "OCSPAnswer", "OCSPResponder", "open_signer_key", "provision_signer", "signer_certificate"]

OCSP_CERT_FILE = "ocsp.pem"
#: The profile name the inventory records the responder's certificates under.
SIGNER_PROFILE = "ocsp-signer"
SIGNER_LABEL = "tokenissue-ocsp"
#: How long an answer may be cached (nextUpdate - thisUpdate); answers are made fresh per request.
ANSWER_VALIDITY = timedelta(hours=1)
#: thisUpdate a minute in the past, so a client whose clock is a little behind accepts the answer.
_CLOCK_SKEW = timedelta(minutes=1)


#: The responder as one of the CA's own services (:mod:`.delegated`).
SERVICE = Service(
    name="ocsp", what="OCSP signer", common_name="OCSP Responder", cert_file=OCSP_CERT_FILE, profile=SIGNER_PROFILE,
    label=SIGNER_LABEL, usage=("digital_signature",), eku=ExtendedKeyUsageOID.OCSP_SIGNING, ocsp_nocheck=True,
    remedy=Remedy.NAME_OCSP_TOKEN,
)  # fmt: skip


def signer_certificate(ca_dir: Path) -> x509.Certificate | None:
    """The responder's certificate in ``ca_dir``, or None when no signer was made."""
    return delegated.certificate(ca_dir, SERVICE)


def provision_signer(
    ca: CertificateAuthority,
    pin: Pin | ProtectedAuth | None,
    *,
    days: int = 30,
    key_type: KeyType = KeyType.EC_P256,
    token: str | None = None,
    token_pin: Pin | ProtectedAuth | None = None,
    new_key: bool = False,
) -> x509.Certificate:
    """Make (or renew) the OCSP responder's certificate (:func:`.delegated.provision`); it
    cannot be revoked (ocsp-nocheck), so it lasts at most 366 days."""
    if not 1 <= days <= 366:
        raise UsageError(f"An OCSP signer's certificate lasts 1 to 366 days, not {days}: it cannot be revoked.")
    return delegated.provision(ca, SERVICE, pin, days=days, key_type=key_type, token=token, token_pin=token_pin,
                               new_key=new_key)  # fmt: skip


@dataclass(frozen=True)
class OCSPAnswer:
    """A DER OCSPResponse, and for a signed one the window in which it may be cached."""

    der: bytes
    this_update: datetime | None = None
    next_update: datetime | None = None
    nonce: bool = False


@dataclass(frozen=True)
class _Signer:
    cert: x509.Certificate
    key: Any


class OCSPResponder:
    """Answers OCSP requests for the certificates ``ca`` issued; see the module's description.

    The responder opens its signer's key itself (logged in once, with ``pin`` on the CA's token
    or ``token_pin`` on the token ca.toml names) and keeps it open until :meth:`close`. Before
    each answer it looks at ``ocsp.pem``: when ``ca ocsp-signer`` has renewed or replaced the
    signer, the new certificate (and, for a new key, the key ca.toml now names) is taken up at
    once, so a running server needs no restart. Without a signer, requests get ``unauthorized``
    until one is made.
    """

    def __init__(
        self, ca: CertificateAuthority, pin: Pin | ProtectedAuth | None, token_pin: Pin | ProtectedAuth | None = None
    ) -> None:
        self.ca = ca
        self._pins = (pin, token_pin)
        self._lock = threading.Lock()
        self._stack = ExitStack()
        self._seen: tuple[int, int] | None = None
        self._signer: _Signer | None = None
        self._hashes: dict[str, tuple[bytes, bytes]] = {}
        self._reload()

    def close(self) -> None:
        self._stack.close()

    def _stamp(self) -> tuple[int, int] | None:
        try:
            st = (self.ca.dir / OCSP_CERT_FILE).stat()
        except FileNotFoundError:
            return None
        return st.st_mtime_ns, st.st_size

    def _reload(self) -> None:
        """Take up the signer ocsp.pem and ca.toml name now (see the class's description)."""
        stamp = self._stamp()
        if stamp == self._seen and (self._signer is not None or stamp is None):
            return
        cert = signer_certificate(self.ca.dir)
        if cert is None:
            self._seen, self._signer = stamp, None
            return
        if self._signer is not None and same_public_key(self._signer.key.public_key(), cert.public_key()):
            self._seen, self._signer = stamp, _Signer(cert, self._signer.key)  # renewed for the same key
            return
        config = CAConfig.load(self.ca.dir)  # a new key: ca.toml names it
        stack = ExitStack()
        key = stack.enter_context(open_signer_key(self.ca, *self._pins, config=config))
        if key is None or not same_public_key(key.public_key(), cert.public_key()):
            stack.close()
            raise CAUnavailable(f"{self.ca.dir / OCSP_CERT_FILE} is not the certificate of the OCSP signer key ca.toml names.")
        self._stack.close()
        self._stack, self._seen, self._signer = stack, stamp, _Signer(cert, key)

    @property
    def ready(self) -> bool:
        return self._signer is not None

    def respond(self, der: bytes, fields: dict[str, Any] | None = None) -> OCSPAnswer:
        """The DER OCSPResponse to the DER request ``der``; ``fields`` gets what the access log shows."""
        fields = fields if fields is not None else {}
        with self._lock:
            try:
                self._reload()
            except TokenIssueError as e:  # a new signer that cannot be used yet: keep answering with the old
                fields["ocsp_reload"] = e.message
        if self._signer is None:
            fields["ocsp"] = "no-signer"
            return OCSPAnswer(error_response(ocsp.OCSPResponseStatus.UNAUTHORIZED))
        try:
            query = parse_request(der)
        except OCSPRefused as e:
            fields["ocsp"] = "malformed"
            fields["ocsp_error"] = str(e)
            return OCSPAnswer(error_response(e.status))
        fields["serial"] = format(query.serial, "x")
        if (query.issuer_name_hash, query.issuer_key_hash) != self._issuer_hashes(query.algorithm):
            # RFC 5019 §2.2.3: a responder asked about another CA's certificate is not authorised.
            fields["ocsp"] = "other-issuer"
            return OCSPAnswer(error_response(ocsp.OCSPResponseStatus.UNAUTHORIZED))
        now = datetime.now(UTC)
        if now > self._signer.cert.not_valid_after_utc:
            fields["ocsp"] = "signer-expired"
            return OCSPAnswer(error_response(ocsp.OCSPResponseStatus.TRY_LATER))
        if not 0 < query.serial < 1 << 159:
            # No certificate has such a serial (RFC 5280: positive, at most 20 octets), and
            # cryptography cannot write it back in an answer's CertID.
            fields["ocsp"] = "malformed"
            fields["ocsp_error"] = "serial out of range"
            return OCSPAnswer(error_response(ocsp.OCSPResponseStatus.MALFORMED_REQUEST))
        try:
            rec = self.ca.inventory.get_certificate(query.serial)
        except InventoryUnavailable:
            # RFC 6960 §2.3: tryLater, "unable to respond now"; the database may be back soon.
            fields["ocsp"] = "database-unavailable"
            return OCSPAnswer(error_response(ocsp.OCSPResponseStatus.TRY_LATER))
        kwargs: dict[str, Any] = {}
        if rec is None:
            status = ocsp.OCSPCertStatus.UNKNOWN
        elif rec.status is CertStatus.VALID:
            status = ocsp.OCSPCertStatus.GOOD
        else:
            status = ocsp.OCSPCertStatus.REVOKED
            kwargs = {"revoked_at": rec.revoked_at or now, "reason": rec.revocation_reason}
        fields["ocsp"] = status.name.lower()
        try:
            return self._answer(query, status, now, **kwargs)
        except TokenError as e:
            # The signer's token failed (pulled out, session lost): an OCSP error, not a 500.
            fields["ocsp"] = "signing-failed"
            fields["ocsp_error"] = str(e)
            return OCSPAnswer(error_response(ocsp.OCSPResponseStatus.INTERNAL_ERROR))

    def _answer(self, query: OCSPQuery, status: ocsp.OCSPCertStatus, now: datetime, **kwargs: Any) -> OCSPAnswer:
        assert self._signer is not None
        next_update = min(now + ANSWER_VALIDITY, self._signer.cert.not_valid_after_utc)
        # A minute back for slow clocks, but never before a revocation the answer reports.
        this_update = now - _CLOCK_SKEW
        revoked_at = kwargs.get("revoked_at")
        if revoked_at is not None:
            this_update = min(now, max(this_update, revoked_at if revoked_at.tzinfo else revoked_at.replace(tzinfo=UTC)))
        der = build_response(
            query, status, signer_key=self._signer.key, signer_cert=self._signer.cert,
            this_update=this_update, next_update=next_update, **kwargs,
        )  # fmt: skip
        return OCSPAnswer(der, now, next_update, nonce=query.nonce is not None)

    def _issuer_hashes(self, algorithm: hashes.HashAlgorithm) -> tuple[bytes, bytes]:
        if algorithm.name not in self._hashes:
            self._hashes[algorithm.name] = issuer_hashes(self.ca.certificate, algorithm)
        return self._hashes[algorithm.name]


@contextmanager
def open_signer_key(
    ca: CertificateAuthority, pin: Pin | ProtectedAuth | None, token_pin: Pin | ProtectedAuth | None = None,
    *, config: CAConfig | None = None,
) -> Iterator[Any]:
    """The responder's key, logged in, for the life of the block; None when no signer was made.
    ``config`` is ca.toml as read now (default: as the CA was opened)."""
    with delegated.open_key(ca, SERVICE, pin, token_pin, config=config) as opened:
        yield None if opened is None else opened[0].private_key(opened[1])
