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
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from ..config import CAConfig, write_private_file
from ..credentials import Pin, ProtectedAuth
from ..errors import CAUnavailable, Remedy, TokenError, TokenIssueError, UsageError
from ..inventory import InventoryUnavailable
from ..models import CertStatus, KeyType
from ..p11 import KeySelector, TokenSelector, open_token
from ..pkix.certs import cert_record, random_serial
from ..pkix.ocsp import OCSPQuery, OCSPRefused, build_response, error_response, issuer_hashes, parse_request
from ..pkix.ocsp import signer_certificate as build_signer_certificate
from ..publickeys import same_public_key
from .authority import CertificateAuthority

__all__ = ["OCSP_CERT_FILE", "SIGNER_PROFILE", "OCSPAnswer", "OCSPResponder", "open_signer_key", "provision_signer", "signer_certificate"]

OCSP_CERT_FILE = "ocsp.pem"
#: The profile name the inventory records the responder's certificates under.
SIGNER_PROFILE = "ocsp-signer"
SIGNER_LABEL = "tokenissue-ocsp"
#: How long an answer may be cached (nextUpdate - thisUpdate); answers are made fresh per request.
ANSWER_VALIDITY = timedelta(hours=1)
_BACKDATE = timedelta(minutes=5)
#: thisUpdate a minute in the past, so a client whose clock is a little behind accepts the answer.
_CLOCK_SKEW = timedelta(minutes=1)


def signer_certificate(ca_dir: Path) -> x509.Certificate | None:
    """The responder's certificate in ``ca_dir``, or None when no signer was made."""
    try:
        return x509.load_pem_x509_certificate((ca_dir / OCSP_CERT_FILE).read_bytes())
    except FileNotFoundError:
        return None
    except ValueError:
        raise CAUnavailable(f"{ca_dir / OCSP_CERT_FILE} is not a PEM certificate.") from None


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
    """Make (or renew) the OCSP responder's certificate; see the module's description.

    ``token`` names the token for the responder's key and ``token_pin`` is its PIN; by default
    the key goes on the CA's own token, with ``pin``. A renewal keeps the token the key is on.
    """
    if not 1 <= days <= 366:
        raise UsageError(f"An OCSP signer's certificate lasts 1 to 366 days, not {days}: it cannot be revoked.")
    config = ca.config
    renewing = config.ocsp_key is not None
    current = (config.ocsp_token or config.token) if renewing else None
    where = token or current or config.token
    moving = renewing and where != current
    if moving:
        new_key = True  # a key on another token is a new key; the old one stays where it is
    if where is None:
        raise UsageError("This CA's key is in a file, so the OCSP signer's key needs a token.", remedy=Remedy.NAME_OCSP_TOKEN)
    on_ca_token = where == config.token
    key_pin = pin if on_ca_token else token_pin
    subject = x509.Name(
        [x509.NameAttribute(x509.NameOID.COMMON_NAME, "OCSP Responder"), *_without_cn(ca.certificate.subject)]
    )
    with open_token(TokenSelector.parse(where), key_pin, module=ca.module) as s:
        old = KeySelector.parse(config.ocsp_key) if renewing and config.ocsp_key and not moving else None
        made = None
        label = SIGNER_LABEL
        if old is None or new_key:
            # A token refuses a second key under one label: the new key's label has its date.
            label = f"{SIGNER_LABEL}-{datetime.now(UTC):%Y%m%d%H%M%S}" if s.find_keys(SIGNER_LABEL) else SIGNER_LABEL
            made = s.generate_key(key_type, label)
            selector = KeySelector(id=made.id)
        else:
            selector = old
            label = s.key(old).label or SIGNER_LABEL
        try:
            public_key = s.public_key(selector)
            now = datetime.now(UTC)
            ca_cert = ca.certificate
            not_after = min(now + timedelta(days=days), ca_cert.not_valid_after_utc)
            serial = random_serial()
            while ca.inventory.serial_exists(serial):
                serial = random_serial()
            with ca.signing_key(pin) as ca_key:
                cert = build_signer_certificate(
                    ca_key, ca_cert, public_key=public_key, subject=subject, serial=serial,
                    not_before=now - _BACKDATE, not_after=not_after,
                )  # fmt: skip
            key_id = selector.id if selector.id is not None else s.key(selector).id
            record = cert_record(
                cert, profile=SIGNER_PROFILE, token_serial=s.info.serial, key_id=key_id, label=label,
                request_id=None, replaces=_current_serial(ca),
            )  # fmt: skip
            audit = ("ocsp-signer", {"serial": format(serial, "x"), "new_key": made is not None,
                                     "not_after": not_after.isoformat(), "token": where})  # fmt: skip
            ca.inventory.add_certificate(record, audit=audit)
        except BaseException:
            if made is not None:
                s.delete_key(KeySelector(id=made.id))
            raise
        s.write_certificate(cert, key_id=key_id, label=label)
        # ca.toml first, then ocsp.pem (atomic): a running server takes up the new signer when
        # ocsp.pem changes, and a crash in between is mended by running this again.
        token_name = None if on_ca_token else (f"serial:{s.info.serial}" if s.info.name == s.info.serial else s.info.name)
        ca.config = replace(config, ocsp_key=f"id:{key_id.hex()}", ocsp_token=token_name)
        ca.config.save(ca.dir)
        write_private_file(ca.dir / OCSP_CERT_FILE, cert.public_bytes(serialization.Encoding.PEM))
        (ca.dir / OCSP_CERT_FILE).chmod(0o644)  # a certificate is public
        if made is not None and old is not None and old.id != made.id:
            s.delete_key(old)  # the new certificate is in place: the old key answers no more
    return cert


def _current_serial(ca: CertificateAuthority) -> int | None:
    current = signer_certificate(ca.dir)
    return current.serial_number if current is not None else None


def _without_cn(name: x509.Name) -> list[x509.NameAttribute[Any]]:
    return [a for a in name if a.oid != x509.NameOID.COMMON_NAME]


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
    config = config or ca.config
    if config.ocsp_key is None or signer_certificate(ca.dir) is None:
        yield None
        return
    where = config.ocsp_token or config.token
    if where is None:
        raise CAUnavailable(f"{ca.dir / 'ca.toml'} names an OCSP signer key but no token for it.")
    with open_token(TokenSelector.parse(where), pin if config.ocsp_token is None else token_pin, module=ca.module) as s:
        yield s.private_key(KeySelector.parse(config.ocsp_key))
