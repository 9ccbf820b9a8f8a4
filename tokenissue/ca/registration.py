"""The registration authority: reference numbers and authorization codes for enrollment.

An RA officer checks a holder's identity out of band and registers it: the subject and
profile the certificate will have, a **reference** (10 random digits, like a bank reference;
CMP's senderKID) and an **authorization code** (20 characters, shown ``XXXXX-XXXXX-XXXXX-XXXXX``).
The holder later enrolls over CMP with password-based MAC protection keyed by the code.

The code is stored nowhere, not even hashed: PBM needs the server to know the code, so a hash
could not serve. It is derived instead::

    code = format(HMAC-SHA256(K_ra, b"tokenissue-ra-v1\\0" + ref + b"\\0" + nonce))

where ``K_ra`` is 32 random bytes in ``ra.key`` in the CA directory (mode 0600, created on
first use; refused when group or world can read it) and ``nonce`` is random per registration
and kept in the inventory. The database alone therefore reveals no code; the key file alone
reveals none either without the nonces.

The code's canonical form, which is also the PBM shared secret on the wire, is the grouped
upper-case form exactly as shown to the officer (:func:`format_code`); :func:`parse_code`
turns what a person typed (any case, dashes or spaces anywhere, ``O``/``I``/``L`` read as
``0``/``1``, as in Crockford's base32) into it.

A registration is usable while it is open and unexpired. Each wrong code counts; the fifth
locks it. The CMP server first reserves it for one transactionID
(:meth:`RegistrationAuthority.reserve`, one conditional UPDATE), then issues, then consumes
it (:meth:`RegistrationAuthority.consume`, requiring that reservation). The database
guarantees each step for one transaction at most, even with several server replicas, so a
server that dies between issuing and consuming leaves the code reserved for the transaction
that got the certificate: its retry finishes, every other request is refused.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, NoReturn

from cryptography import x509
from cryptography.x509.oid import NameOID

from .. import hooks
from ..config import write_private_file
from ..credentials import IdNumber, Secret
from ..errors import (
    CodeNotDelivered,
    ConfigError,
    NotFound,
    PinIncorrect,
    PinLocked,
    Remedy,
    RequestRejected,
    UsageError,
)
from ..inventory import DuplicateRegistration
from ..models import CertRecord, CertStatus, Registration, RegistrationStatus
from ..pkix.kr_vid import normalize_idn, without_identify_data
from ..pkix.names import format_san, parse_san, parse_subject, sans_of
from .profiles import _check_san, _check_subject

if TYPE_CHECKING:
    from .authority import CertificateAuthority

__all__ = [
    "CODE_ALPHABET",
    "CODE_LENGTH",
    "DELIVERY_TIMEOUT_S",
    "RA_KEY_FILE",
    "RegistrationAuthority",
    "derive_code",
    "format_code",
    "id_number_hash",
    "parse_code",
]

RA_KEY_FILE = "ra.key"
_KEY_ID_SETTING = "ra.key_id"
_KEY_BYTES = 32
_DOMAIN = b"tokenissue-ra-v1\0"
_ID_DOMAIN = b"tokenissue-ra-idn-v1\0"
#: Crockford's base32: digits and letters without I, L, O and U, so nothing reads as another.
CODE_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
CODE_LENGTH = 20  # 100 bits
_GROUP = 5
_READ_AS = str.maketrans({"O": "0", "I": "1", "L": "1"})
_REF_DIGITS = 10
_NONCE_BYTES = 16
_REF_TRIES = 20
# cryptography writes attributes it has no short name for as dotted OIDs (2.5.4.5=...); the
# stored subject is read by people (ra list) and parsed back by parse_subject, which knows these.
_SUBJECT_NAMES = {
    NameOID.SERIAL_NUMBER: "serialNumber",
    NameOID.GIVEN_NAME: "GN",
    NameOID.SURNAME: "SN",
    NameOID.TITLE: "title",
    NameOID.EMAIL_ADDRESS: "emailAddress",
    NameOID.ORGANIZATION_IDENTIFIER: "organizationIdentifier",
}
#: The nonce of no registration (real ones are random 16 bytes): keys the decoy code that an
#: unknown reference's MAC is checked against.
_DECOY_NONCE = b"tokenissue-ra-no-such-ref"
DEFAULT_VALIDITY = timedelta(days=7)
MAX_FAILURES = 5
#: How long a code delivery command may take by default.
DELIVERY_TIMEOUT_S = 60.0
#: The longest --verified-by and --terms-version the inventory keeps (terms_version is VARCHAR(64)).
_MAX_VERIFIED_BY = 500
_MAX_TERMS_VERSION = 64


def format_code(digest: bytes) -> Secret:
    """The first 100 bits of ``digest`` as a grouped code ``XXXXX-XXXXX-XXXXX-XXXXX``."""
    bits = CODE_LENGTH * 5
    value = int.from_bytes(digest[: (bits + 7) // 8], "big") >> (8 * ((bits + 7) // 8) - bits)
    chars = [CODE_ALPHABET[(value >> (5 * i)) & 31] for i in reversed(range(CODE_LENGTH))]
    return Secret("-".join("".join(chars[i : i + _GROUP]) for i in range(0, CODE_LENGTH, _GROUP)))


def parse_code(typed: str | Secret) -> Secret:
    """The canonical form of a code a person typed; UsageError if it cannot be one.

    Case, dashes and spaces do not matter, and O, I and L are read as 0, 1 and 1. The message
    never repeats what was typed.
    """
    text = typed.reveal() if isinstance(typed, Secret) else typed
    compact = "".join(text.split()).replace("-", "").upper().translate(_READ_AS)
    if len(compact) != CODE_LENGTH or any(c not in CODE_ALPHABET for c in compact):
        raise UsageError(
            f"An authorization code has {CODE_LENGTH} letters and digits (XXXXX-XXXXX-XXXXX-XXXXX); "
            "check what was typed."
        )
    return Secret("-".join(compact[i : i + _GROUP] for i in range(0, CODE_LENGTH, _GROUP)))


def derive_code(key: bytes, ref: str, nonce: bytes) -> Secret:
    """The authorization code of registration ``ref`` with ``nonce`` under the RA key."""
    mac = hmac.new(key, _DOMAIN + ref.encode("ascii") + b"\0" + nonce, hashlib.sha256).digest()
    return format_code(mac)


def id_number_hash(key: bytes, number: IdNumber) -> bytes:
    """The keyed hash the RA keeps of a registration number: HMAC-SHA256 under the RA key of
    the number's digits. Without ``ra.key`` the hash tells nothing (the numbers are few enough
    to try them all, so a plain hash would)."""
    digits = normalize_idn(number.reveal())
    return hmac.new(key, _ID_DOMAIN + digits.encode("ascii"), hashlib.sha256).digest()


def _text(value: str | None, what: str, limit: int) -> str | None:
    """A free-text field of a registration, stripped; None if not given. UsageError if empty or long."""
    if value is None:
        return None
    text = " ".join(value.split())
    if not text:
        raise UsageError(f"{what} must not be empty.")
    if len(text) > limit:
        raise UsageError(f"{what} is longer than {limit} characters.")
    return text


def _new_ref() -> str:
    return "".join(secrets.choice("0123456789") for _ in range(_REF_DIGITS))


class RegistrationAuthority:
    """Registrations of one CA: make, check, count failures, consume, cancel.

    Every method is one or a few inventory transactions; nothing is cached between calls, so
    several processes (server replicas, the officer's CLI) can share one CA at once.
    """

    def __init__(self, ca: CertificateAuthority) -> None:
        self.ca = ca
        self._inv = ca.inventory
        self._key: bytes | None = None

    # -- the RA key -------------------------------------------------------------------------
    def _ra_key(self) -> bytes:
        """K_ra from ``ra.key``, creating it (mode 0600) if there is none yet."""
        if self._key is None:
            path = self.ca.dir / RA_KEY_FILE
            if not path.exists():
                if self._inv.get_setting(_KEY_ID_SETTING) is not None or self._inv.registration_count():
                    # Registrations exist under a key this directory lacks (a CA server replica
                    # set up from a copy made before ra.key existed): a new key here would make
                    # every code "wrong", count the holders' tries and lock their registrations.
                    raise ConfigError(
                        f"The registrations in this CA's database were made with an RA key that is not in "
                        f"{self.ca.dir}; copy ra.key (mode 0600) from the CA directory where 'ra register' runs."
                    )
                self._create_key()
            try:
                st = path.stat()
                data = path.read_bytes()
            except OSError as e:
                raise ConfigError(f"Cannot read the RA key {path}: {e.strerror or e}.") from None
            if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise ConfigError(
                    f"The RA key {path} is readable by others; chmod 600 it, and cancel and "
                    "re-register the open registrations if others may have read it."
                )
            if len(data) != _KEY_BYTES:
                raise ConfigError(f"The RA key {path} is damaged (not {_KEY_BYTES} bytes); restore it from a backup.")
            self._check_key_id(data)
            self._key = data
        return self._key

    def check_key(self) -> None:
        """Raise ConfigError now if this directory's RA key cannot verify the database's codes
        (missing while registrations exist, or another key); a CA server calls it at start."""
        path = self.ca.dir / RA_KEY_FILE
        if path.exists() or self._inv.get_setting(_KEY_ID_SETTING) is not None or self._inv.registration_count():
            self._ra_key()

    def _check_key_id(self, key: bytes) -> None:
        """The database remembers which RA key its registrations belong to (a hash, not the key):
        every replica sharing it must hold the same ra.key, or its codes would not verify."""
        ident = hashlib.sha256(_DOMAIN + b"key-id\0" + key).hexdigest()[:32]
        recorded = self._inv.get_setting(_KEY_ID_SETTING)
        if recorded is None:
            # Insert-if-absent: of two replicas starting with different keys, one key is kept.
            recorded = self._inv.setting_default(_KEY_ID_SETTING, ident)
        if recorded != ident:
            raise ConfigError(
                f"The RA key {self.ca.dir / RA_KEY_FILE} is not the one this CA's database was set up with; "
                "every CA server sharing the database needs the same ra.key: copy it from the CA directory "
                "where 'ra register' runs."
            )

    def _create_key(self) -> None:
        path = self.ca.dir / RA_KEY_FILE
        # Written under a private name, then hard-linked into place: link() refuses to replace
        # an existing file, so two processes creating the key at once agree on one key instead
        # of the second silently invalidating the codes the first handed out.
        tmp = path.with_name(f".{RA_KEY_FILE}.new{os.getpid()}.{secrets.token_hex(4)}")
        write_private_file(tmp, secrets.token_bytes(_KEY_BYTES))
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        except OSError as e:
            raise ConfigError(f"Cannot create the RA key {path}: {e.strerror or e}.") from None
        finally:
            tmp.unlink(missing_ok=True)

    # -- registering ------------------------------------------------------------------------
    def register(
        self,
        subject: str | None,
        profile: str | None,
        *,
        valid: timedelta = DEFAULT_VALIDITY,
        san: Sequence[str] = (),
        id_number: IdNumber | None = None,
        real_name: str | None = None,
        verified_by: str | None = None,
        terms_version: str | None = None,
        reissue_of: int | None = None,
    ) -> tuple[Registration, Secret]:
        """Register a checked identity; return the registration and its code (show it once).

        For a profile that binds the holder's identity (``identify_data``) ``id_number`` is
        required: only its keyed hash (:func:`id_number_hash`) is kept, and the holder must
        give the same number to enroll. ``real_name`` is the identifyData realName (default:
        the subject's CN up to a "()"). ``verified_by`` (how the identity was verified; a
        profile with ``require_verified_by`` needs it) and ``terms_version`` (the terms the
        holder accepted) are kept with the registration and in the audit log.

        ``reissue_of``: the serial of a valid certificate of this CA that the certificate
        enrolled with this registration replaces (a re-issue): ``subject``, ``profile`` and
        ``san`` default to that certificate's, and issuing revokes it as superseded in the
        same transaction that records the new one (:meth:`CertificateAuthority.issue`).

        UsageError (exit 2) for a bad subject or SAN, an unknown profile, one the subject or
        SANs do not fit, a missing registration number or verification record, or a validity
        that is not positive; NotFound or RequestRejected (exit 6) for a ``reissue_of`` this CA
        did not issue, or that is revoked or expired.
        """
        if reissue_of is not None:
            old = self.reissuable(reissue_of)
            cert = x509.load_der_x509_certificate(old.der)
            if subject is None:
                subject = cert.subject.rfc4514_string(_SUBJECT_NAMES)
            if profile is None:
                profile = old.profile
            if not san:
                san = [format_san(g) for g in without_identify_data(sans_of(cert))]
        if subject is None or profile is None:
            raise UsageError("A registration needs the holder's subject and a profile.")
        name = parse_subject(subject)
        prof = self.ca.profile(profile)
        general_names = parse_san(list(san))
        try:
            # Checked now, at the officer's desk, rather than when the holder enrolls: the
            # certificate gets this subject and at most these SANs, so a profile that needs a
            # SAN needs it here.
            _check_subject(prof, name)
            _check_san(prof, general_names)
        except RequestRejected as e:
            raise UsageError(e.message) from None
        if valid <= timedelta(0):
            raise UsageError("The registration's validity must be positive, e.g. 7d.")
        if prof.identify_data and id_number is None:
            raise UsageError(
                f"Profile '{prof.name}' binds the holder's registration number into the certificate; "
                "give the number the identity was checked with.",
                remedy=Remedy.GIVE_ID_NUMBER,
            )
        if id_number is not None and not prof.identify_data:
            raise UsageError(f"Profile '{prof.name}' does not bind a registration number; give none.")
        if real_name is not None and not real_name.strip():
            raise UsageError("The real name must not be empty.")
        verified_by = _text(verified_by, "How the identity was verified", _MAX_VERIFIED_BY)
        terms_version = _text(terms_version, "The terms version", _MAX_TERMS_VERSION)
        if prof.require_verified_by and verified_by is None:
            raise UsageError(
                f"Profile '{prof.name}' requires a record of how the holder's identity was verified.",
                remedy=Remedy.GIVE_VERIFIED_BY,
            )
        key = self._ra_key()
        id_hash = None if id_number is None else id_number_hash(key, id_number)
        now = datetime.now(UTC)
        for _ in range(_REF_TRIES):
            reg = Registration(
                ref=_new_ref(),
                subject=name.rfc4514_string(_SUBJECT_NAMES),
                profile=prof.name,
                nonce=secrets.token_bytes(_NONCE_BYTES),
                created_at=now,
                expires_at=now + valid,
                max_failures=MAX_FAILURES,
                san=tuple(format_san(g) for g in general_names),
                id_hash=id_hash,
                real_name=real_name.strip() if real_name else None,
                verified_by=verified_by,
                terms_version=terms_version,
                reissue_of=reissue_of,
            )
            try:
                reg = self._inv.add_registration(reg)
            except DuplicateRegistration:
                continue
            break
        else:  # pragma: no cover - 10**10 references; only a nearly full table gets here
            raise RequestRejected("No free reference number was found; try again.")
        self._inv.audit_append(
            "ra-register",
            {
                "ref": reg.ref,
                "subject": reg.subject,
                "profile": reg.profile,
                "san": list(reg.san),
                "expires_at": reg.expires_at.isoformat(),
                "identity_bound": reg.id_hash is not None,
                "verified_by": reg.verified_by,
                "terms_version": reg.terms_version,
                "reissue_of": None if reg.reissue_of is None else format(reg.reissue_of, "x"),
            },
        )
        return reg, derive_code(key, reg.ref, reg.nonce)

    def reissuable(self, serial: int, *, now: datetime | None = None) -> CertRecord:
        """The certificate ``serial`` if it can be re-issued: this CA's, valid or suspended (a lost
        token on hold), not expired. NotFound or RequestRejected with one sentence otherwise."""
        rec = self._inv.get_certificate(serial)
        if rec is None:
            raise NotFound(
                f"This CA issued no certificate with serial {serial:x}, so it cannot be re-issued.",
                remedy=Remedy.LIST_CA_CERTIFICATES,
            )
        now = now or datetime.now(UTC)
        if rec.status is CertStatus.REVOKED:
            reason = "" if rec.revocation_reason is None else f" ({rec.revocation_reason.value})"
            raise RequestRejected(
                f"Certificate {serial:x} was revoked{reason}, so it cannot be re-issued; register the holder "
                "for a new certificate instead."
            )
        if rec.status not in (CertStatus.VALID, CertStatus.SUSPENDED):  # a lost token on hold is re-issued too
            raise RequestRejected(f"Certificate {serial:x} is {rec.status.value}, so it cannot be re-issued.")
        if now >= rec.not_after:
            raise RequestRejected(
                f"Certificate {serial:x} expired on {rec.not_after:%Y-%m-%d}, so it cannot be re-issued; register "
                "the holder for a new certificate instead."
            )
        return rec

    def deliver(
        self, reg: Registration, code: Secret, command: Sequence[str], *, timeout: float = DELIVERY_TIMEOUT_S
    ) -> None:
        """Hand ``code`` to ``command`` (an SMS or e-mail gateway) on its standard input.

        The command runs as every hook does (:mod:`tokenissue.hooks`: no shell, an allowlisted
        environment) with ``TOKENISSUE_REF``, ``TOKENISSUE_SUBJECT``, ``TOKENISSUE_PROFILE`` and
        ``TOKENISSUE_EXPIRES_AT`` set; the code is on its standard input only (one line), never
        in its arguments or environment. If it fails (not found, a non-zero exit, a timeout),
        nobody may have the code, so the registration is cancelled and CodeNotDelivered (exit
        10) raised; a registration is never left usable with a code nobody got.
        """
        extra = {
            "TOKENISSUE_REF": reg.ref,
            "TOKENISSUE_SUBJECT": reg.subject,
            "TOKENISSUE_PROFILE": reg.profile,
            "TOKENISSUE_EXPIRES_AT": reg.expires_at.isoformat(),
        }
        secret = code.reveal()
        why = hooks.run_checked(
            command, extra_env=extra, input=(secret + "\n").encode("ascii"), timeout=timeout,
            what="delivery", redact=[secret, secret.replace("-", "")],
        )  # fmt: skip
        if why is None:
            self._inv.audit_append("ra-code-delivered", {"ref": reg.ref, "command": os.path.basename(command[0])})
            return
        self._inv.audit_append("ra-code-not-delivered", {"ref": reg.ref, "why": why})
        try:
            self.cancel(reg.ref)
        except Exception:
            raise CodeNotDelivered(
                f"The authorization code of registration {reg.ref} was not delivered ({why}), and the registration "
                f"could not be cancelled; it expires unused on {reg.expires_at:%Y-%m-%d %H:%M} UTC.",
                ref=reg.ref,
                cancelled=False,
                remedy=Remedy.DELIVER_AGAIN,
            ) from None
        raise CodeNotDelivered(
            f"The authorization code of registration {reg.ref} was not delivered ({why}), so the registration "
            "was cancelled.",
            ref=reg.ref,
            cancelled=True,
            remedy=Remedy.DELIVER_AGAIN,
        )

    # -- what the CMP server calls ----------------------------------------------------------
    def code_for(self, ref: str) -> Secret:
        """The code of registration ``ref`` (canonical form: the PBM secret). NotFound if unknown.

        This does not check that the registration is usable; call :meth:`check_usable` too.
        """
        reg = self._get(ref)
        return derive_code(self._ra_key(), reg.ref, reg.nonce)

    def mac_secret(self, ref: str) -> tuple[Registration | None, Secret]:
        """The registration ``ref`` (None if there is none) and the secret to check a MAC with.

        For an unknown reference the secret is a decoy derived from the RA key, which no sender
        can know: checking a request against it costs what checking a real code costs and fails
        the same way, so neither the answer nor its timing tells an unknown reference from a
        wrong code. Nothing about the registration's state is checked here (see
        :meth:`check_usable`, to be called once the MAC verified).
        """
        reg = self._inv.get_registration(ref)
        key = self._ra_key()
        if reg is None:
            return None, derive_code(key, ref, _DECOY_NONCE)
        return reg, derive_code(key, reg.ref, reg.nonce)

    def check_usable(self, ref: str, *, now: datetime | None = None) -> Registration:
        """The registration, if a certificate may still be issued with it.

        NotFound for an unknown reference; RequestRejected with one sentence when it is
        cancelled, already used, locked or expired.
        """
        reg = self._get(ref)
        now = now or datetime.now(UTC)
        if reg.status is RegistrationStatus.CANCELLED:
            raise RequestRejected(f"Registration {ref} was cancelled; ask the RA officer for a new one.")
        if reg.status is RegistrationStatus.USED:
            raise RequestRejected(
                f"Registration {ref} was already used; a code is good for one certificate, so ask for a new one."
            )
        if reg.status is RegistrationStatus.LOCKED:
            raise RequestRejected(
                f"Registration {ref} is locked after {reg.max_failures} wrong codes; ask the RA officer for a new one."
            )
        if reg.is_expired(now):
            raise RequestRejected(
                f"Registration {ref} expired on {reg.expires_at:%Y-%m-%d %H:%M} UTC; ask the RA officer for a new one."
            )
        return reg

    def record_failure(self, ref: str) -> Registration:
        """Count one wrong code (a PBM that did not verify); the registration afterwards.

        The registration locks on the ``max_failures``-th failure, atomically in the database.
        """
        reg = self._inv.registration_failed(ref)
        self._inv.audit_append("ra-code-failure", {"ref": ref, "failures": reg.failures})
        if reg.status is RegistrationStatus.LOCKED and reg.failures == reg.max_failures:
            self._inv.audit_append("ra-locked", {"ref": ref, "failures": reg.failures})
        return reg

    def reserve(self, ref: str, tid: bytes) -> Registration:
        """Hold the registration for CMP transaction ``tid`` before a certificate is issued.

        One conditional UPDATE decides (see :meth:`Inventory.registration_reserve`): the same
        ``tid`` may reserve again (a retry), any other transaction is refused until the holder
        is released or the registration used. RequestRejected with the reason otherwise.
        """
        now = datetime.now(UTC)
        if self._inv.registration_reserve(ref, tid, now):
            reg = self._get(ref)
            return reg
        reg = self.check_usable(ref, now=now)  # raises when cancelled, used, locked or expired
        if reg.reserved_tid is not None and reg.reserved_tid != tid:
            raise RequestRejected(
                f"Registration {ref} is in use by another request; finish that enrollment (run the "
                "same command again) or ask the RA officer to cancel it and register again."
            )
        raise RequestRejected(f"Registration {ref} could not be reserved; try again.")  # pragma: no cover - a race

    def release(self, ref: str, tid: bytes) -> None:
        """Give up ``tid``'s reservation after a definite refusal, so another request may try."""
        self._inv.registration_release(ref, tid)

    def consume(self, ref: str, serial: int, *, tid: bytes | None = None) -> None:
        """Mark the registration used by certificate ``serial``; at most one certificate ever.

        With ``tid`` the registration must be reserved by that transaction (:meth:`reserve`);
        without, open, unexpired and unreserved. Consuming again for the same ``serial`` is a
        no-op, so a retried transaction can finish. RequestRejected when it was not usable at
        that instant (used for another certificate, cancelled or locked meanwhile, ...).
        """
        now = datetime.now(UTC)
        if not self._inv.registration_consume(ref, serial, now, tid):
            reg = self._get(ref)
            if reg.status is RegistrationStatus.USED and reg.serial == serial:
                return  # this certificate consumed it already (a retry)
            if reg.status is RegistrationStatus.OPEN and reg.reserved_tid not in (None, tid):
                raise RequestRejected(f"Registration {ref} is in use by another request; ask the RA officer for a new one.")
            if tid is None or reg.status is not RegistrationStatus.OPEN:
                self.check_usable(ref, now=now)  # raises with the reason
            raise RequestRejected(f"Registration {ref} could not be used; ask the RA officer for a new one.")
        details: dict[str, object] = {"ref": ref, "serial": format(serial, "x")}
        if tid is not None:
            details["transaction_id"] = tid.hex()
        self._inv.audit_append("ra-used", details)

    def require_no_approval(self, reg: Registration, protocol: str) -> None:
        """Refuse ``reg`` for a protocol that cannot wait when its profile needs an officer's
        approval (only SCEP waits: it answers PENDING and the client polls)."""
        if self.ca.profile(reg.profile).approval:
            raise RequestRejected(
                f"Profile '{reg.profile}' needs an officer's approval, which {protocol} cannot wait for; "
                "enroll over SCEP, which polls until the request is approved."
            )

    def verify_code(self, ref: str, typed: str | Secret) -> Registration:
        """Check a typed code (for uses without PBM); return the registration if it is right.

        A wrong or malformed code counts as a failure: PinIncorrect (exit 5) while tries
        remain, PinLocked on the one that locks it. The comparison is constant-time.
        """
        reg = self.check_usable(ref)
        expected = derive_code(self._ra_key(), reg.ref, reg.nonce)
        try:
            given = parse_code(typed)
        except UsageError:
            given = Secret("")
        if hmac.compare_digest(given.reveal().encode(), expected.reveal().encode()):
            self.require_no_approval(reg, "a local enrollment")
            return reg
        self._refuse_counted(
            ref,
            locked=f"Wrong authorization code; registration {ref} is now locked after {{n}} wrong codes",
            wrong=f"Wrong authorization code for registration {ref}",
        )

    def check_id_number(self, reg: Registration, number: IdNumber | None) -> None:
        """Check the registration number a holder gave against the one registered.

        A registration made without one needs none (and ignores one given). None given where
        one was registered: RequestRejected, not counted (the holder's client left it out). A
        wrong or malformed number counts like a wrong code: PinIncorrect (exit 5) while tries
        remain, PinLocked on the one that locks the registration. The comparison is
        constant-time; the messages never repeat the number.
        """
        if reg.id_hash is None:
            return
        if number is None:
            raise RequestRejected(
                f"Registration {reg.ref} binds the holder's registration number, and none was given.",
                remedy=Remedy.GIVE_ID_NUMBER,
            )
        try:
            given = id_number_hash(self._ra_key(), number)
        except UsageError:
            given = b""
        if given and hmac.compare_digest(given, reg.id_hash):
            return
        self._refuse_counted(
            reg.ref,
            locked=f"Wrong registration number for registration {reg.ref}; it is now locked after {{n}} failures",
            wrong=f"Wrong registration number for registration {reg.ref}",
        )

    def _refuse_counted(self, ref: str, *, locked: str, wrong: str) -> NoReturn:
        """Count one failure and raise: PinLocked (``locked``, with ``{n}`` the limit) on the one
        that locks the registration, else PinIncorrect (``wrong``) with the tries left."""
        after = self.record_failure(ref)
        if after.status is RegistrationStatus.LOCKED:
            raise PinLocked(locked.format(n=after.max_failures) + ", so ask the RA officer for a new one.")
        left = after.max_failures - after.failures
        raise PinIncorrect(
            f"{wrong}; {left} {'try' if left == 1 else 'tries'} left before it locks.",
            count_low=left <= 2,
            final_try=left == 1,
        )

    # -- officer's housekeeping -------------------------------------------------------------
    def cancel(self, ref: str) -> Registration:
        """Withdraw a registration so its code can no longer be used; return it.

        Cancelling a cancelled one is a no-op; a used one cannot be cancelled (RequestRejected):
        revoke its certificate instead.
        """
        before = self._get(ref)
        reg = self._inv.registration_cancel(ref)
        if reg.status is RegistrationStatus.USED:
            serial = "" if reg.serial is None else f" for certificate {reg.serial:x}"
            raise RequestRejected(f"Registration {ref} was already used{serial}; revoke that certificate instead.")
        if before.status is not RegistrationStatus.CANCELLED:
            self._inv.audit_append("ra-cancel", {"ref": ref})
        return reg

    def get(self, ref: str) -> Registration:
        """The registration ``ref`` in whatever state it is; NotFound if there is none."""
        return self._get(ref)

    def _get(self, ref: str) -> Registration:
        reg = self._inv.get_registration(ref)
        if reg is None:
            raise NotFound(f"There is no registration {ref}.", remedy=Remedy.LIST_REGISTRATIONS)
        return reg

    # Last, so that the name ``list`` means the builtin everywhere above.
    def list(self, status: RegistrationStatus | None = None) -> list[Registration]:
        """Registrations, oldest first (never their codes)."""
        return self._inv.list_registrations(status)
