"""Clients that turn a CSR into a certificate: a local CA directory, a CMP or an ACME server. They take
a CSR (never a key), which is exactly what a token can give them; renewing and revoking over
CMP also use the current certificate's key, which the lifecycle passes in from the token.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509

from ..credentials import Pin, ProtectedAuth
from ..errors import UsageError
from .acme_options import ACMEOptions, is_acme_location
from .base import Enroller, EnrollResult, KeyUpdater
from .local import LocalCA

if TYPE_CHECKING:
    from .base import AuthCodeSource

__all__ = [
    "ACMEOptions",
    "EnrollResult",
    "Enroller",
    "KeyUpdater",
    "LocalCA",
    "is_acme_location",
    "is_cmp_location",
    "is_est_location",
    "open_enroller",
    "takes_registration",
]

_CMP_SCHEMES = ("cmp+http", "cmp+https")
_EST_SCHEMES = ("est+https",)


def is_cmp_location(location: str) -> bool:
    """Whether ``--ca LOCATION`` names a CMP server (cmp+http:// or cmp+https://)."""
    return location.split("://", 1)[0].lower() in _CMP_SCHEMES if "://" in location else False


def is_est_location(location: str) -> bool:
    """Whether ``--ca`` names an EST server (est+https://...)."""
    return location.split("://", 1)[0].lower() in _EST_SCHEMES if "://" in location else False


def takes_registration(location: str) -> bool:
    """Whether enrolling at ``location`` is authorized by a registration's reference and code
    (a CMP or an EST server), which the holder is then asked for."""
    return is_cmp_location(location) or is_est_location(location)


def open_enroller(
    location: str,
    *,
    ca_pin: Pin | ProtectedAuth | None = None,
    module: str | None = None,
    ref: str | None = None,
    auth_code: AuthCodeSource | None = None,
    trust: Sequence[x509.Certificate] = (),
    acme: ACMEOptions | None = None,
) -> Enroller:
    """The enroller for ``--ca LOCATION``: a CA directory, cmp+http(s)://HOST[:PORT]/PATH,
    est+https://HOST[:PORT] or acme+https://HOST/DIRECTORY-PATH.

    ``ref``, ``auth_code`` and ``trust`` are for CMP and EST (see :class:`CMPEnroller`,
    :class:`ESTEnroller`); ``acme`` for
    ACME (see :class:`ACMEEnroller`); ``ca_pin`` and ``module`` for a local CA whose key is on a token.
    """
    scheme = location.split("://", 1)[0] if "://" in location else ""
    if scheme.lower() in _CMP_SCHEMES:
        # Imported here: httpx and pyasn1 cost start-up time that local-CA commands need not pay.
        from .cmp import CMPEnroller

        return CMPEnroller(location, ref=ref, auth_code=auth_code, trust=trust)
    if scheme.lower() in _EST_SCHEMES:
        from .est import ESTEnroller

        return ESTEnroller(location, ref=ref, auth_code=auth_code, trust=trust)
    if is_acme_location(location):
        if acme is None:
            raise UsageError("This command does not talk to ACME servers.")
        # Imported here: acme, josepy and requests cost start-up time other commands need not pay.
        from .acme import ACMEEnroller

        return ACMEEnroller(location, acme)
    if scheme:
        raise UsageError(
            f"CA URLs with {scheme}:// are not supported; give cmp+http(s)://HOST:PORT/PATH, "
            "est+https://HOST:PORT, acme+https://HOST/DIRECTORY or a local CA directory."
        )
    return LocalCA(Path(location), ca_pin=ca_pin, module=module, ref=ref, auth_code=auth_code)
