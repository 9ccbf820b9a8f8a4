"""One exception tree for the whole package.

Every error the user can cause or fix is a :class:`TokenIssueError`. Each class carries the
process exit status the CLI uses and a message that is safe to print: it never contains a PIN,
an authorization code or key material, and it says what to do next.

Hierarchy (exit status in brackets)::

    TokenIssueError [1]
    ├── UsageError [2]            bad arguments or input files
    ├── ConfigError [3]           missing module, unreadable config, bad profile file
    ├── TokenError [4]
    │   ├── TokenBusy             another tokenissue process is enrolling on it: try again
    │   ├── TokenNotFound
    │   ├── AmbiguousToken
    │   ├── KeyNotFound
    │   ├── ObjectExists
    │   ├── MechanismUnsupported
    │   └── ProvenanceError       a key that could have been outside the token
    │       └── KeyUsageForced    sign-only keys required; this token (or key) cannot be one
    ├── PinError [5]
    │   ├── PinIncorrect          .tries_left_hint tells what the token reports
    │   ├── PinLocked
    │   └── PinPolicyError        a new PIN the token refuses (length)
    ├── CAError [6]
    │   ├── RequestRejected       CSR signature, profile, subject, key type, ...
    │   ├── CAUnavailable         CA expired, not initialised, unreachable
    │   │   ├── CANotReached      the request never reached the CA: nothing was issued
    │   │   └── CAOutcomeUnknown  the request may have reached the CA, no answer came back
    │   ├── NotFound              serial / enrollment unknown to the CA
    │   └── CertificateStateRefused  a suspension or restoration the certificate's state
    │                             does not allow (restore one not suspended, suspend a revoked one)
    ├── InventoryError [7]        the database cannot be opened, migrated or written
    │   └── InventoryUnavailable  (tokenissue.inventory) unreachable or busy: try again
    ├── Incomplete [8]            a batch or sweep ran, but some rows or items failed
    ├── IdentityMismatch [9]      a certificate's identity binding is not the one given
    └── CodeNotDelivered [10]     the RA's delivery command failed: the registration is cancelled

Lower-layer exceptions (python-pkcs11, SQLAlchemy, cryptography) are translated at the
boundary of the package that imports them, with the original chained as ``__cause__``.

Messages name no command-line option or command: the same error reaches a server, a batch
worker or another program. An error the user fixes with one of tokenissue's own commands
carries that as data, a :class:`Remedy` with its ``details`` (a journal ID, a URL); the CLI
says it in its own words (``tokenissue.cli._messages``), as yubikey-manager's CLI turns
``InvalidPinError.attempts_remaining`` into a sentence.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

__all__ = [
    "AmbiguousToken",
    "CAError",
    "CANotReached",
    "CAOutcomeUnknown",
    "CAUnavailable",
    "CertificateStateRefused",
    "CodeNotDelivered",
    "ConfigError",
    "IdentityMismatch",
    "Incomplete",
    "InventoryError",
    "KeyNotFound",
    "KeyUsageForced",
    "MechanismUnsupported",
    "NotFound",
    "ObjectExists",
    "PinError",
    "PinIncorrect",
    "PinLocked",
    "PinPolicyError",
    "ProvenanceError",
    "Remedy",
    "RequestRejected",
    "TokenBusy",
    "TokenError",
    "TokenIssueError",
    "TokenNotFound",
    "UsageError",
]


class Remedy(enum.Enum):
    """What the user can do about an error with tokenissue itself; ``details`` name what for."""

    GIVE_PIN = enum.auto()  #: give the PIN another way (environment, file, prompt)
    GIVE_PIN_NOT_PAD = enum.auto()  #: the token has no PIN pad: give the PIN
    NAME_TOKEN = enum.auto()  #: name the token to use
    LIST_TOKENS = enum.auto()  #: see which tokens are present
    RELABEL_TOKEN = enum.auto()  #: tokens alike in every way: re-label one (details: example)
    INIT_TOKEN = enum.auto()  #: make a new token
    INSPECT_TOKEN = enum.auto()  #: see what fills the token, remove what is unused, try again
    PROBE_TOKEN = enum.auto()
    LIST_KEY_TYPES = enum.auto()  #: see which key types the token can make  #: find out what the token accepts
    LIST_KEYS = enum.auto()  #: see the keys on the token
    FREE_TOKEN = enum.auto()  #: remove unused keys and certificates, then resume
    UNBLOCK_PIN = enum.auto()  #: unblock the user PIN with the SO PIN
    SET_USER_PIN = enum.auto()  #: the token has no user PIN yet
    CHECK_MODULE = enum.auto()  #: the module named is wrong
    NAME_MODULE = enum.auto()  #: no module found: name one
    OTHER_LABEL = enum.auto()  #: choose another key label
    SIGN_ONLY_HOW = enum.auto()  #: sign-only keys were required, by the holder or the profile
    NAME_CA = enum.auto()  #: name the CA the certificate came from
    LIST_JOURNAL = enum.auto()  #: see the open enrollments
    RESUME = enum.auto()  #: finish the enrollment
    RESUME_OR_ABANDON = enum.auto()  #: finish it, or give up on it (details: journal_id)
    LIST_REGISTRATIONS = enum.auto()  #: check the reference
    LIST_CERTIFICATES = enum.auto()  #: check the serial
    CREATE_CA = enum.auto()  #: no CA here yet
    CA_DIRECTORY = enum.auto()  #: a server address where the CA's directory was wanted
    INSTALL_CA_CERT = enum.auto()
    NAME_CA_TOKEN = enum.auto()  #: the CA key needs a token
    NAME_OCSP_TOKEN = enum.auto()  #: the OCSP signer's key needs a token
    GIVE_CHAIN = enum.auto()  #: give the parent CA's chain
    GIVE_DNS_HOOK = enum.auto()  #: ACME dns-01 needs the command that publishes the record
    GIVE_EAB = enum.auto()  #: the ACME server wants an external account binding
    CHECK_EAB_HMAC = enum.auto()  #: the binding's HMAC key file is wrong
    HTTP_01_ADDRESS = enum.auto()  #: where the http-01 responder listens
    GIVE_CA_TRUST = enum.auto()  #: name the CA certificate(s) to trust
    GIVE_CA_TRUST_AGAIN = enum.auto()  #: name the root the chain ends in, then run the command again
    GIVE_ACME_TRUST = enum.auto()  #: name the CA of the ACME server's TLS certificate
    GIVE_ROOT = enum.auto()  #: name the root CA certificate the chain ends in
    GIVE_SIGNER_TRUST = enum.auto()  #: name the CA certificate that signs the CMP server's answers
    CHECK_CA_TRUST = enum.auto()  #: the CA certificates given to trust are not the right ones
    GIVE_REF = enum.auto()  #: the CMP reference is missing
    GIVE_AUTH_CODE = enum.auto()  #: the authorization code is missing
    CHECK_REF_AND_CODE = enum.auto()  #: the reference or the code is wrong
    OR_RESUME = enum.auto()  #: the enrollment can also be finished by resuming
    CHECK_URL = enum.auto()  #: the CA server's address is wrong  #: the CA waits for its certificate
    GIVE_ID_NUMBER = enum.auto()  #: the profile binds the holder's registration number: give it
    GIVE_VERIFIED_BY = enum.auto()  #: the profile wants a record of how the identity was verified
    LIST_CA_CERTIFICATES = enum.auto()  #: check the serial among the CA's certificates
    DELIVER_AGAIN = enum.auto()  #: fix the delivery command and register again
    LIST_SUSPENDED = enum.auto()  #: see which certificates are suspended
    ASK_RESTORE = enum.auto()  #: a suspended certificate: its CA restores it, or revokes it for good (details: serial)


class TokenIssueError(Exception):
    """Base class. ``str(err)`` is one sentence that is safe to show to the user.

    ``remedy`` is what the user can do about it with tokenissue's own commands, if anything;
    ``details`` are the values that remedy needs (all safe to show).
    """

    exit_code: int = 1

    def __init__(self, message: str, *, remedy: Remedy | None = None, details: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.remedy = remedy
        self.details: Mapping[str, str] = dict(details or {})

    def __str__(self) -> str:
        return self.message


class UsageError(TokenIssueError):
    exit_code = 2


class ConfigError(TokenIssueError):
    exit_code = 3


class TokenError(TokenIssueError):
    exit_code = 4


class TokenBusy(TokenError):
    """Another tokenissue process is enrolling on this token right now; try again later."""


class TokenNotFound(TokenError):
    pass


class AmbiguousToken(TokenError):
    pass


class KeyNotFound(TokenError):
    pass


class ObjectExists(TokenError):
    pass


class MechanismUnsupported(TokenError):
    pass


class ProvenanceError(TokenError):
    """The key's attributes do not prove it was generated on the token and never left it."""


class KeyUsageForced(ProvenanceError):
    """Sign-only keys were required, and the token cannot make (or the key reused is) one."""


class PinError(TokenIssueError):
    exit_code = 5


class PinIncorrect(PinError):
    """A PIN was refused. It is never retried automatically: each try counts on real tokens."""

    def __init__(
        self, message: str, *, count_low: bool = False, final_try: bool = False, remedy: Remedy | None = None
    ) -> None:
        super().__init__(message, remedy=remedy)
        self.count_low = count_low
        self.final_try = final_try


class PinLocked(PinError):
    pass


class PinPolicyError(PinError):
    pass


class CAError(TokenIssueError):
    exit_code = 6


class RequestRejected(CAError):
    pass


class CAUnavailable(CAError):
    pass


class CANotReached(CAUnavailable):
    """The request definitely did not reach the CA (no connection, its TLS certificate refused,
    an HTTP 4xx answer without a CMP message): nothing was issued, so an enrollment can be
    ended and its key removed."""


class CAOutcomeUnknown(CAUnavailable):
    """The request may have reached the CA (a timeout, a lost connection, a 5xx, "waiting"), so
    a certificate may exist: an enrollment is kept open and resumed with the same request ID,
    which the CA recognises, instead of being aborted."""


class NotFound(CAError):
    pass


class CertificateStateRefused(CAError):
    """A change the certificate's state does not allow: restoring one that is not suspended,
    suspending (or restoring) one that is revoked for good or expired, renewing a suspended one.
    ``state`` is the certificate's status value as the inventory has it."""

    def __init__(
        self, message: str, *, state: str, remedy: Remedy | None = None, details: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message, remedy=remedy, details=details)
        self.state = state


class InventoryError(TokenIssueError):
    exit_code = 7


class Incomplete(TokenIssueError):
    """A batch or sweep went through every row or item, and some failed: each is reported on
    its own, and running the same command again retries them (the finished ones are kept)."""

    exit_code = 8


class IdentityMismatch(TokenIssueError):
    """A certificate's identity binding (a Korean VID) is not the one of the registration
    number and R given: the certificate is not this person's, or R is not its own."""

    exit_code = 9


class CodeNotDelivered(TokenIssueError):
    """The command that was to hand a new registration's authorization code to the holder
    (an SMS or e-mail gateway) failed, so nobody has the code: the registration was cancelled
    (``cancelled`` False only if even that failed; it then expires unused)."""

    exit_code = 10

    def __init__(self, message: str, *, ref: str, cancelled: bool, remedy: Remedy | None = None) -> None:
        super().__init__(message, remedy=remedy)
        self.ref = ref
        self.cancelled = cancelled


def stops_a_run(error: BaseException) -> bool:
    """Whether ``error``, met on one item of a run over many tokens (batch, sweep, resume),
    stops the run: a refused PIN, or one that cannot be had, would be the same for every further
    item, and each try of a refused one counts on its token. A locked PIN is its token's alone."""
    return isinstance(error, PinError) and not isinstance(error, PinLocked)
