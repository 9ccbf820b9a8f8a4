"""The CMP exceptions and the shared-secret wrapper used for password-based MACs.

Nothing here knows tokenissue's own errors or credentials: the package stands alone, and its
callers translate at their boundary (a client turns a :class:`CMPError` that reaches its user
into its own refusal; a text secret becomes a :class:`SharedSecret` by its UTF-8 octets).
"""

from __future__ import annotations

import hmac
from typing import Final, Literal, get_args

__all__ = ["FAILURE_INFO_NAMES", "CMPError", "FailureInfo", "SharedSecret", "secret_bytes"]

#: The PKIFailureInfo bit names of RFC 4210 §5.2.3 (and RFC 9480), in bit order. A Literal
#: lets mypy catch a misspelt name in server code, where a typo would otherwise surface only
#: as an error message the client cannot interpret.
FailureInfo = Literal[
    "badAlg",
    "badMessageCheck",
    "badRequest",
    "badTime",
    "badCertId",
    "badDataFormat",
    "wrongAuthority",
    "incorrectData",
    "missingTimeStamp",
    "badPOP",
    "certRevoked",
    "certConfirmed",
    "wrongIntegrity",
    "badRecipientNonce",
    "timeNotAvailable",
    "unacceptedPolicy",
    "unacceptedExtension",
    "addInfoNotAvailable",
    "badSenderNonce",
    "badCertTemplate",
    "signerNotTrusted",
    "transactionIdInUse",
    "unsupportedVersion",
    "notAuthorized",
    "systemUnavail",
    "systemFailure",
    "duplicateCertReq",
]

#: Bit name → bit number, as PKIFailureInfo encodes it.
FAILURE_INFO_NAMES: Final[dict[str, int]] = {name: bit for bit, name in enumerate(get_args(FailureInfo))}


class CMPError(Exception):
    """A CMP message was refused; ``failure_info`` says why in PKIFailureInfo terms.

    The server turns it into an error message with :func:`~tokenissue.protocols.cmp.build_error`
    (``failure_info`` and ``str(err)`` become failInfo and statusString);
    :meth:`~tokenissue.protocols.cmp.CMPResponse.raise_for_status` raises it when the server
    refused. The message is ours and safe to print: it never quotes a secret,
    and text that came from the peer is sanitised first.
    """

    def __init__(self, failure_info: FailureInfo, message: str) -> None:
        if failure_info not in FAILURE_INFO_NAMES:
            # A programming error, not a peer's: fail loudly instead of sending a wrong bit.
            raise ValueError(f"{failure_info!r} is not a PKIFailureInfo bit name")
        super().__init__(message)
        self.message = message
        self.failure_info: FailureInfo = failure_info

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"CMPError({self.failure_info!r}, {self.message!r})"


class SharedSecret:
    """The shared secret behind a password-based MAC (PBM or PBMAC1), as bytes.

    It never shows its value through ``repr``/``str``/formatting and refuses to be pickled.
    CMP secrets are octet strings (OpenSSL's ``-secret`` takes them as bytes); a secret typed as
    text counts as its UTF-8 octets: see :meth:`from_text`.
    """

    __slots__ = ("_value",)

    def __init__(self, value: bytes) -> None:
        if not isinstance(value, bytes | bytearray):
            raise TypeError("a CMP shared secret must be bytes")
        self._value = bytes(value)

    @classmethod
    def from_text(cls, text: str) -> SharedSecret:
        """The secret a text password stands for: its UTF-8 octets, as OpenSSL's ``-secret pass:``."""
        return cls(text.encode("utf-8"))

    def reveal(self) -> bytes:
        """The value itself; only the MAC key derivation calls this."""
        return self._value

    def __repr__(self) -> str:
        return "<SharedSecret ***>"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SharedSecret):
            return NotImplemented
        return hmac.compare_digest(self._value, other._value)

    def __hash__(self) -> int:
        return hash(type(self))

    def __reduce__(self) -> str | tuple[object, ...]:
        raise TypeError("a shared secret cannot be pickled")


def secret_bytes(secret: SharedSecret | bytes) -> bytes:
    """The octets a MAC key is derived from."""
    if isinstance(secret, SharedSecret):
        return secret.reveal()
    if isinstance(secret, bytes | bytearray):
        return bytes(secret)
    raise TypeError("a CMP shared secret must be bytes or SharedSecret")
