"""The settings of an ACME enrollment, importable without the ACME library (the CLI builds
them for every command; only ``acme+https://`` CAs then import :mod:`tokenissue.enroll.acme`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from cryptography import x509

from ..credentials import Secret

__all__ = ["ACME_SCHEME", "ACMEOptions", "Challenge", "ExternalAccount", "directory_url", "is_acme_location"]

ACME_SCHEME = "acme+https"


class Challenge(Enum):
    HTTP_01 = "http-01"
    DNS_01 = "dns-01"


@dataclass(frozen=True)
class ExternalAccount:
    """External account binding (RFC 8555 §7.3.4): the key ID and HMAC key a CA hands out."""

    kid: str  #: the key identifier, as the CA gave it
    hmac_key: Secret = field(repr=False)  #: base64url HMAC key; never printed, logged or journaled


def _no_progress(_: str) -> None:
    return None


@dataclass(frozen=True)
class ACMEOptions:
    """How to talk to one ACME server."""

    state_dir: Path  #: the holder's state directory; account keys live in its ``acme/`` (0600)
    email: str | None = None  #: account contact (mailto:)
    eab: ExternalAccount | None = None  #: needed when the server requires external account binding
    challenge: Challenge = Challenge.HTTP_01
    http01_address: tuple[str, int] = ("0.0.0.0", 80)  # noqa: S104  (the CA's validator must reach it)
    dns_hook: str | None = None  #: dns-01: command run with TOKENISSUE_ACME_* variables (docs/acme.md)
    tls_trust: Path | None = None  #: CA bundle for the server's TLS (default: the system's)
    roots: Sequence[x509.Certificate] = ()  #: roots the issued chain may end in (besides the system's)
    timeout: float = 300.0  #: overall deadline of one issuance, seconds
    progress: Callable[[str], None] = _no_progress  #: one line per step, for the CLI to show


def is_acme_location(location: str) -> bool:
    """Whether ``--ca LOCATION`` names an ACME server (acme+https://HOST/DIRECTORY-PATH)."""
    return "://" in location and location.split("://", 1)[0].lower() == ACME_SCHEME


def directory_url(location: str) -> str:
    """The directory URL of ``acme+https://host/dir``: https://host/dir."""
    return "https://" + location.split("://", 1)[1]
