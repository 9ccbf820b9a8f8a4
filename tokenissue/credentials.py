"""Secrets in memory: PINs, authorization codes and registration numbers.

A :class:`Pin` never shows its value through ``repr``/``str``/formatting, so it cannot leak
through a log line, an exception message or a rich traceback's locals. Only the PKCS#11
layer calls :meth:`Pin.reveal`. :data:`PROTECTED_AUTH` asks the token for its PIN pad
(CKF_PROTECTED_AUTHENTICATION_PATH) instead of a value.

This module never reads the environment, files or prompts: the CLI does that.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from typing import Final

__all__ = ["PROTECTED_AUTH", "IdNumber", "IdentityProof", "Pin", "ProtectedAuth", "Secret"]


class Secret:
    """A string that refuses to be printed."""

    __slots__ = ("_value",)
    _kind = "secret"

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError(f"{self._kind} must be str")
        self._value = value

    def reveal(self) -> str:
        """The value itself; call only where it is handed to the token or a KDF."""
        return self._value

    def __repr__(self) -> str:
        return f"<{type(self).__name__} ***>"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash(type(self))

    def __len__(self) -> int:
        return len(self._value)

    def __reduce__(self) -> str | tuple[object, ...]:
        raise TypeError(f"a {self._kind} cannot be pickled")


class Pin(Secret):
    """A token PIN (user or SO)."""

    __slots__ = ()
    _kind = "PIN"


class ProtectedAuth:
    """Marker: authenticate on the token's own PIN pad."""

    _instance: ProtectedAuth | None = None

    def __new__(cls) -> ProtectedAuth:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "PROTECTED_AUTH"


PROTECTED_AUTH: Final = ProtectedAuth()


class IdNumber(Secret):
    """A resident or business registration number (주민등록번호, 사업자등록번호).

    It is a secret of the holder's: it is handed to the VID hash and the RA's keyed hash only,
    and is never stored, logged or sent except encrypted to the CA."""

    __slots__ = ()
    _kind = "registration number"


@dataclass(frozen=True)
class IdentityProof:
    """What a holder gives the CA so that it binds the holder's identity (a Korean VID): the
    registration number, and R, the random value kept on the token next to the key. The CA
    computes the VID from both and forgets them."""

    number: IdNumber
    random: bytes = field(repr=False)
