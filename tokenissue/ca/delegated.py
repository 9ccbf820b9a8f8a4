"""Certificates for the CA's own services, with their keys on a token: the OCSP responder and
the SCEP RA.

:func:`provision` makes the service's key on a token (the CA's, unless another is named) and
has the CA certify it as the :class:`Service` says; run again, it renews the certificate for
the same key, or for a new one with ``new_key`` (the old key is deleted once the new
certificate is in place). The certificate is ``Service.cert_file`` in the CA directory,
recorded in the inventory under ``Service.profile``, written onto the token next to its key,
and named in ca.toml (``<name>_key``, ``<name>_token``). :func:`open_key` opens the key for a
server.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ObjectIdentifier

from ..config import CAConfig, write_private_file
from ..credentials import Pin, ProtectedAuth
from ..errors import CAUnavailable, Remedy, UsageError
from ..models import KeyType
from ..p11 import KeySelector, TokenSelector, open_token
from ..pkix.certs import cert_record, delegated_certificate, random_serial
from .authority import CertificateAuthority

__all__ = ["Service", "certificate", "open_key", "provision"]

_BACKDATE = timedelta(minutes=5)


@dataclass(frozen=True)
class Service:
    """One of the CA's own services whose key is on a token."""

    name: str
    """The ca.toml prefix: ``<name>_key`` and ``<name>_token``."""
    what: str
    """For sentences: "OCSP signer", "SCEP RA"."""
    common_name: str
    cert_file: str
    profile: str
    label: str
    usage: tuple[str, ...]
    eku: ObjectIdentifier | None = None
    ocsp_nocheck: bool = False
    decrypts: bool = False
    """The key is also for decryption (RSA, CKM_RSA_PKCS): clients encrypt to it."""
    max_days: int = 366
    remedy: Remedy | None = None
    """How to name a token, when the CA's key is in a file."""

    def key_of(self, config: CAConfig) -> str | None:
        value: str | None = getattr(config, f"{self.name}_key")
        return value

    def token_of(self, config: CAConfig) -> str | None:
        value: str | None = getattr(config, f"{self.name}_token")
        return value


def certificate(ca_dir: Path, service: Service) -> x509.Certificate | None:
    """The service's certificate in ``ca_dir``, or None when none was made."""
    try:
        return x509.load_pem_x509_certificate((ca_dir / service.cert_file).read_bytes())
    except FileNotFoundError:
        return None
    except ValueError:
        raise CAUnavailable(f"{ca_dir / service.cert_file} is not a PEM certificate.") from None


def provision(
    ca: CertificateAuthority,
    service: Service,
    pin: Pin | ProtectedAuth | None,
    *,
    days: int,
    key_type: KeyType,
    token: str | None = None,
    token_pin: Pin | ProtectedAuth | None = None,
    new_key: bool = False,
) -> x509.Certificate:
    """Make (or renew) the service's certificate; see the module's description.

    ``token`` names the token for the key and ``token_pin`` is its PIN; by default the key goes
    on the CA's own token, with ``pin``. A renewal keeps the token the key is on.
    """
    if not 1 <= days <= service.max_days:
        raise UsageError(f"A {service.what}'s certificate lasts 1 to {service.max_days} days, not {days}.")
    config = ca.config
    current_key = service.key_of(config)
    renewing = current_key is not None
    current = (service.token_of(config) or config.token) if renewing else None
    where = token or current or config.token
    moving = renewing and where != current
    if moving:
        new_key = True  # a key on another token is a new key; the old one stays where it is
    if where is None:
        raise UsageError(f"This CA's key is in a file, so the {service.what}'s key needs a token.", remedy=service.remedy)
    on_ca_token = where == config.token
    key_pin = pin if on_ca_token else token_pin
    # The CA's name with the service's CN in its place (most specific last, as in the CA's name).
    subject = x509.Name(
        [*_without_cn(ca.certificate.subject), x509.NameAttribute(x509.NameOID.COMMON_NAME, service.common_name)]
    )
    with open_token(TokenSelector.parse(where), key_pin, module=ca.module) as s:
        old = KeySelector.parse(current_key) if renewing and current_key and not moving else None
        made = None
        label = service.label
        if old is None or new_key:
            # A token refuses a second key under one label: the new key's label has its date.
            label = f"{service.label}-{datetime.now(UTC):%Y%m%d%H%M%S}" if s.find_keys(service.label) else service.label
            made = s.generate_decryption_key(key_type, label) if service.decrypts else s.generate_key(key_type, label)
            selector = KeySelector(id=made.id)
        else:
            selector = old
            label = s.key(old).label or service.label
        try:
            public_key = s.public_key(selector)
            now = datetime.now(UTC)
            ca_cert = ca.certificate
            not_after = min(now + timedelta(days=days), ca_cert.not_valid_after_utc)
            serial = random_serial()
            while ca.inventory.serial_exists(serial):
                serial = random_serial()
            with ca.signing_key(pin) as ca_key:
                cert = delegated_certificate(
                    ca_key, ca_cert, public_key=public_key, subject=subject, serial=serial,
                    not_before=now - _BACKDATE, not_after=not_after, usage=service.usage, eku=service.eku,
                    ocsp_nocheck=service.ocsp_nocheck,
                )  # fmt: skip
            key_id = selector.id if selector.id is not None else s.key(selector).id
            previous = certificate(ca.dir, service)
            record = cert_record(
                cert, profile=service.profile, token_serial=s.info.serial, key_id=key_id, label=label,
                request_id=None, replaces=previous.serial_number if previous is not None else None,
            )  # fmt: skip
            audit = (service.profile, {"serial": format(serial, "x"), "new_key": made is not None,
                                       "not_after": not_after.isoformat(), "token": where})  # fmt: skip
            ca.inventory.add_certificate(record, audit=audit)
        except BaseException:
            if made is not None:
                s.delete_key(KeySelector(id=made.id))
            raise
        s.write_certificate(cert, key_id=key_id, label=label)
        # ca.toml first, then the certificate file (atomic): a running server takes up the new
        # certificate when the file changes, and a crash in between is mended by running this again.
        token_name = None if on_ca_token else (f"serial:{s.info.serial}" if s.info.name == s.info.serial else s.info.name)
        changes: dict[str, Any] = {f"{service.name}_key": f"id:{key_id.hex()}", f"{service.name}_token": token_name}
        ca.config = replace(config, **changes)
        ca.config.save(ca.dir)
        write_private_file(ca.dir / service.cert_file, cert.public_bytes(serialization.Encoding.PEM))
        (ca.dir / service.cert_file).chmod(0o644)  # a certificate is public
        if made is not None and old is not None and old.id != made.id:
            s.delete_key(old)  # the new certificate is in place: the old key serves no more
    return cert


def _without_cn(name: x509.Name) -> list[x509.NameAttribute[Any]]:
    return [a for a in name if a.oid != x509.NameOID.COMMON_NAME]


@contextmanager
def open_key(
    ca: CertificateAuthority, service: Service, pin: Pin | ProtectedAuth | None,
    token_pin: Pin | ProtectedAuth | None = None, *, config: CAConfig | None = None,
) -> Iterator[tuple[Any, Any] | None]:  # fmt: skip
    """``(token session, key selector)`` of the service's key, logged in, for the life of the
    block; None when no certificate was made. ``config`` is ca.toml as read now (default: as the
    CA was opened)."""
    config = config or ca.config
    key = service.key_of(config)
    if key is None or certificate(ca.dir, service) is None:
        yield None
        return
    where = service.token_of(config) or config.token
    if where is None:
        raise CAUnavailable(f"{ca.dir / 'ca.toml'} names a {service.what} key but no token for it.")
    with open_token(TokenSelector.parse(where), pin if service.token_of(config) is None else token_pin, module=ca.module) as s:
        yield s, KeySelector.parse(key)
