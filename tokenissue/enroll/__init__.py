"""Clients that turn a CSR into a certificate. Today: a local CA directory. The interface is
what CMP, EST and ACME clients will implement too: they take a CSR (never a key), which is
exactly what a token can give them.
"""

from __future__ import annotations

from pathlib import Path

from ..credentials import Pin, ProtectedAuth
from ..errors import UsageError
from .base import Enroller, EnrollResult
from .local import LocalCA

__all__ = ["EnrollResult", "Enroller", "LocalCA", "open_enroller"]


def open_enroller(location: str, *, ca_pin: Pin | ProtectedAuth | None = None, module: str | None = None) -> Enroller:
    """The enroller for ``--ca LOCATION``: a CA directory now; cmp+http(s):// and acme+https:// later."""
    scheme = location.split("://", 1)[0] if "://" in location else ""
    if scheme:
        raise UsageError(
            f"CA URLs ({scheme}://) are not supported yet; give a local CA directory (tokenissue ca init)."
        )
    return LocalCA(Path(location), ca_pin=ca_pin, module=module)
