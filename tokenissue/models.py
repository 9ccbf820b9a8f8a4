"""Plain data shared by every layer: key types and frozen records.

Nothing here talks to a token, a database or the user.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

__all__ = [
    "AuditEntry",
    "CMPTransaction",
    "CertObject",
    "CertRecord",
    "CertState",
    "CertStatus",
    "JournalEntry",
    "JournalStep",
    "KeyAlgorithm",
    "KeyInfo",
    "KeyType",
    "Registration",
    "RegistrationStatus",
    "RevocationReason",
    "StepHook",
    "TokenInfo",
    "TransactionKind",
    "TransactionState",
    "no_step",
]

#: Called with the name of each step of a journaled operation as it is done (an enrollment's
#: "csr", "issued", ...; a CMP request's "after-reserve", ...): progress, and the point where
#: the crash tests' TOKENISSUE_FAILPOINT / TOKENISSUE_SERVER_FAILPOINT kill the process.
StepHook = Callable[[str], None]


def no_step(_: str) -> None:
    """The :data:`StepHook` that does nothing."""
    return None



class KeyAlgorithm(enum.Enum):
    RSA = "rsa"
    EC = "ec"
    ED25519 = "ed25519"


class KeyType(enum.Enum):
    """Key pair types tokenissue generates; the value is the CLI spelling."""

    EC_P256 = "ec-p256"
    EC_P384 = "ec-p384"
    RSA_2048 = "rsa-2048"
    RSA_3072 = "rsa-3072"
    RSA_4096 = "rsa-4096"
    ED25519 = "ed25519"

    @property
    def algorithm(self) -> KeyAlgorithm:
        if self.value.startswith("rsa"):
            return KeyAlgorithm.RSA
        if self.value.startswith("ec"):
            return KeyAlgorithm.EC
        return KeyAlgorithm.ED25519

    @property
    def bits(self) -> int:
        return {"ec-p256": 256, "ec-p384": 384, "ed25519": 255}.get(self.value) or int(self.value.split("-")[1])

    @property
    def curve(self) -> str | None:
        """The SEC 2 curve name for EC types, ``None`` otherwise."""
        return {"ec-p256": "secp256r1", "ec-p384": "secp384r1"}.get(self.value)

    @classmethod
    def from_parts(cls, algorithm: KeyAlgorithm, bits: int) -> KeyType:
        for kt in cls:
            if kt.algorithm is algorithm and (algorithm is KeyAlgorithm.ED25519 or kt.bits == bits):
                return kt
        raise ValueError(f"unsupported key: {algorithm.value} {bits}")


@dataclass(frozen=True)
class TokenInfo:
    """What a token says about itself (CK_TOKEN_INFO), plus where it sits."""

    label: str
    serial: str
    manufacturer: str
    model: str
    initialized: bool
    user_pin_initialized: bool
    login_required: bool
    protected_auth_path: bool
    user_pin_count_low: bool
    user_pin_final_try: bool
    user_pin_locked: bool
    so_pin_count_low: bool
    so_pin_final_try: bool
    so_pin_locked: bool
    slot_description: str = ""
    module: str = ""
    identity: str = ""
    """What tokenissue records for this token: its serial when that tells it apart, else an
    RFC 7512 URI with label, manufacturer, model and serial (see p11.token_identity)."""

    @property
    def name(self) -> str:
        """The identity, or the serial for records made by hand."""
        return self.identity or self.serial

    @property
    def pin_state(self) -> str:
        """A short word for the user PIN's state."""
        if self.user_pin_locked:
            return "locked"
        if self.user_pin_final_try:
            return "final-try"
        if self.user_pin_count_low:
            return "count-low"
        if not self.user_pin_initialized:
            return "not-set"
        return "ok"


@dataclass(frozen=True)
class KeyInfo:
    """A private key on a token, with the attributes that prove where it came from."""

    id: bytes
    label: str
    key_type: KeyType | None
    local: bool
    never_extractable: bool
    always_sensitive: bool
    sensitive: bool
    extractable: bool
    can_decrypt: bool = False
    """Whether the key can decrypt, unwrap or derive: its flags as limited by its
    CKA_ALLOWED_MECHANISMS (see p11 decrypting_mechanisms)."""
    decrypt_flag: bool = False
    """CKA_DECRYPT or CKA_UNWRAP as the token set them (a TPM sets them on every key)."""
    has_certificate: bool = False
    template: str = ""
    """The key template step the token accepted (p11 KEY_TEMPLATE_STEPS); empty when not made now."""

    @property
    def born_on_token(self) -> bool:
        """True when the token vouches that the key was made inside it and never left it."""
        return (
            self.local and self.never_extractable and self.always_sensitive and self.sensitive and not self.extractable
        )


@dataclass(frozen=True)
class CertObject:
    """A certificate object on a token (CKO_CERTIFICATE, X.509)."""

    id: bytes
    label: str
    der: bytes = field(repr=False)
    subject: str
    issuer: str
    serial: int
    not_before: datetime
    not_after: datetime
    is_ca: bool
    has_key: bool


class CertState(enum.StrEnum):
    """A certificate on a token as the holder sees it; the value is what status prints."""

    VALID = "valid"
    EXPIRING = "expiring"  #: within its renewal window: renewal is due
    EXPIRED = "expired"
    REVOKED = "revoked"
    SUSPENDED = "suspended"  #: on hold (certificateHold) at its CA: restorable, unusable meanwhile


class CertStatus(enum.Enum):
    """A certificate as its CA keeps it; the value is what the inventory stores.

    SUSPENDED is a revocation with reason certificateHold that the CA can take back
    (restore: VALID again, off the next CRL) or make final (REVOKED). REVOKED is final.
    """

    VALID = "valid"
    REVOKED = "revoked"
    SUSPENDED = "suspended"


class RevocationReason(enum.Enum):
    """RFC 5280 CRLReason names as the CLI spells them."""

    UNSPECIFIED = "unspecified"
    KEY_COMPROMISE = "key-compromise"
    CA_COMPROMISE = "ca-compromise"
    AFFILIATION_CHANGED = "affiliation-changed"
    SUPERSEDED = "superseded"
    CESSATION_OF_OPERATION = "cessation-of-operation"
    CERTIFICATE_HOLD = "certificate-hold"
    PRIVILEGE_WITHDRAWN = "privilege-withdrawn"


@dataclass(frozen=True)
class CertRecord:
    """One issued certificate as the inventory keeps it (CA side) or remembers it (holder side)."""

    serial: int
    subject: str
    issuer: str
    not_before: datetime
    not_after: datetime
    sha256: str  # hex fingerprint of the DER
    profile: str
    der: bytes = field(repr=False)
    status: CertStatus = CertStatus.VALID
    revoked_at: datetime | None = None  # revoked or suspended since (the CRL entry's revocationDate)
    revocation_reason: RevocationReason | None = None  # CERTIFICATE_HOLD while suspended
    token_serial: str | None = None  # the token holding the key, when known
    key_id: bytes | None = None  # the key's CKA_ID on that token
    label: str | None = None
    request_id: str | None = None  # the enrollment that asked for it: makes issuance idempotent
    replaces: int | None = None  # serial of the certificate this one renews or re-issues


class JournalStep(enum.StrEnum):
    """How far an enrollment's journal entry has come; the value is what the journal stores.

    Open: STARTED (label chosen), CSR (key made, CSR signed: the CA may now be asked), ISSUED
    (the CA's answer kept), WRITTEN (the certificate on the token; a renewal retires the old
    one after this). KEY is written by no current version: entries older versions left there
    (key made, no CSR yet) resume like STARTED ones. Ended: DONE (recorded), ABORTED (failed
    before the CA could have issued, the key removed), ABANDONED (ended by the holder).
    """

    STARTED = "started"
    KEY = "key"
    CSR = "csr"
    ISSUED = "issued"
    WRITTEN = "written"
    DONE = "done"
    ABORTED = "aborted"
    ABANDONED = "abandoned"


@dataclass(frozen=True)
class JournalEntry:
    """A resumable multi-step operation (an enrollment, a renewal)."""

    id: str
    kind: str  # "enroll", "renew"
    state: str  # the last step completed
    params: dict[str, object]
    data: dict[str, object]  # what the steps produced so far (key id, CSR, certificate, ...)
    created_at: datetime
    updated_at: datetime
    finished: bool = False


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    at: datetime
    action: str
    details: dict[str, object]
    prev_hash: str
    hash: str


class RegistrationStatus(enum.Enum):
    """Where a registration stands. Only an OPEN one (and not expired) can be enrolled with."""

    OPEN = "open"
    USED = "used"  # a certificate was issued with it; a code is good for one certificate
    CANCELLED = "cancelled"  # the RA officer withdrew it
    LOCKED = "locked"  # too many wrong codes


class PendingStatus(enum.Enum):
    """Where a request waiting for approval stands (a profile with ``approval``)."""

    PENDING = "pending"  # waits for an officer
    APPROVED = "approved"  # the client's next poll gets the certificate
    REJECTED = "rejected"  # the client's next poll gets a refusal
    ISSUED = "issued"  # done; a repeated poll gets the same certificate


@dataclass(frozen=True)
class PendingRequest:
    """A certificate request authorized by a registration's code, waiting for approval."""

    id: str
    """Short hex identifier the officer approves by."""
    protocol: str
    transaction_id: str
    ref: str
    public_key: bytes
    """SPKI DER of the key the certificate is for."""
    sans: bytes
    """DER of the GeneralNames the request asked for (empty: none)."""
    reservation: str
    """Hex ID the registration is reserved under for this request."""
    requester: bytes
    """DER of the certificate the request was signed with (the answer is encrypted to it)."""
    cipher: str
    status: PendingStatus
    created_at: datetime
    decided_at: datetime | None = None
    decided_by: str | None = None
    serial: int | None = None


@dataclass(frozen=True)
class Registration:
    """An identity an RA officer checked out of band, waiting for its holder to enroll.

    The authorization code is deliberately not a field: it is derived from the RA key, the
    reference and the nonce (see :mod:`tokenissue.ca.registration`) and stored nowhere.
    """

    ref: str  # the reference number handed to the holder (10 digits); CMP's senderKID
    subject: str  # RFC 4514; the certificate gets exactly this subject
    profile: str
    nonce: bytes = field(repr=False)  # random per registration, an input to the code
    created_at: datetime
    expires_at: datetime
    status: RegistrationStatus = RegistrationStatus.OPEN
    failures: int = 0  # wrong codes so far
    max_failures: int = 5  # the registration locks when failures reaches this
    used_at: datetime | None = None
    serial: int | None = None  # the certificate issued with it
    san: tuple[str, ...] = ()  # SAN entries ("dns:...", "email:...") the holder may have
    reserved_tid: bytes | None = None  # the CMP transaction issuing with it right now (or that died doing so)
    id_hash: bytes | None = field(default=None, repr=False)
    """A keyed hash of the holder's registration number (HMAC under the RA key), never the
    number: the CA checks the number given at enrollment against it."""
    real_name: str | None = None  # identifyData realName, for profiles that bind an identity (VID)
    verified_by: str | None = None  # how the officer verified the identity
    terms_version: str | None = None  # the terms the holder accepted
    reissue_of: int | None = None  # the certificate a re-issue replaces

    def is_expired(self, now: datetime) -> bool:
        return now >= self.expires_at


class TransactionKind(enum.Enum):
    """The CMP request body that opened a transaction (RFC 4210 PKIBody names)."""

    IR = "ir"
    CR = "cr"
    P10CR = "p10cr"
    KUR = "kur"
    RR = "rr"
    GENM = "genm"


class TransactionState(enum.Enum):
    WAITING_CONFIRM = "waiting-confirm"  # a certificate was sent; certConf is awaited
    DONE = "done"
    REJECTED = "rejected"


@dataclass(frozen=True)
class CMPTransaction:
    """The server's memory of one CMP transaction (RFC 4210 transactionID), across replicas."""

    transaction_id: bytes
    kind: TransactionKind
    state: TransactionState
    sender_nonce: bytes  # the client's last senderNonce
    our_nonce: bytes  # the senderNonce we last sent: the client must echo it as recipNonce
    pbm: bool  # protected by a password-based MAC (a registration code) rather than a signature
    created_at: datetime
    updated_at: datetime
    ref: str | None = None  # the registration, for PBM-protected transactions
    serial: int | None = None  # the certificate issued in it
    signer: int | None = None  # serial of the certificate that signed a signature-protected request
