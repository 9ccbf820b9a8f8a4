"""Use-cases of a certificate's life on a token: enroll, resume, renew, status, revoke.

Enrollment is a journaled state machine, so that a process killed at any point leaves work
that the next run finishes, and nothing half-done::

    started ─ key generated, CSR signed in token ─► csr ─ CA issues ─► issued
            ─ certificate (and chain) written to the token ─ recorded ─► done

* The journal entry is written before each step's effect is relied on. The key's label is
  journaled *before* the key is generated (in the entry's first write), so a key made just
  before a crash is found again by label (and must still prove its provenance) instead of
  being orphaned; its ID and the CSR signed with it are journaled together.
* Four durable writes per enrollment, each one transaction: started, csr, issued, and done
  with the certificate's record (a renewal adds "written" before it retires the old
  certificate). Every entry says which journal format wrote it (:data:`JOURNAL_FORMAT`):
  entries of format 1, left by older versions, resume too; a format this version does not
  know is refused, not guessed at.
* One enrollment per token at a time, across processes: from the journal lookup to its last
  write an enrollment holds the lock ``enroll:SERIAL`` (:meth:`Inventory.exclusive`), so two
  runs of one batch, or a sweep overlapping the last, never pick up the same entry.
* The CA is asked with the journal ID as request ID; the CA records the certificate before it
  answers and answers a repeated request with the same certificate, so a crash after issuance
  never issues a second certificate.
* A failure before issuance (the CA refuses, the profile forbids the key) deletes the key this
  enrollment generated and closes the entry as "aborted". After issuance nothing is deleted:
  the work is finished on the next run. When the CA may have issued without the answer
  arriving (:class:`~tokenissue.errors.CAOutcomeUnknown`: a timeout, a lost connection), the
  entry stays open too, and the next run asks again with the same request ID.
* A renewal of a valid certificate whose key is on the token goes through the enroller's
  ``renew`` when it has one (CMP kur, authenticated by the current key); otherwise ``request``.
* Writing certificates to the token is idempotent (an identical object is not written twice).

Running the same ``enroll`` command again resumes an unfinished entry with the same
parameters; ``enroll --resume`` resumes every unfinished one.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from contextlib import suppress
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from .credentials import IdentityProof, IdNumber, Pin, ProtectedAuth
from .enroll import Enroller, EnrollResult, KeyUpdater
from .errors import (
    CANotReached,
    KeyNotFound,
    KeyUsageForced,
    ObjectExists,
    ProvenanceError,
    Remedy,
    RequestRejected,
    TokenBusy,
    TokenIssueError,
    UsageError,
    stops_a_run,
)
from .inventory import Inventory
from .models import (
    CertObject,
    CertRecord,
    CertState,
    CertStatus,
    JournalEntry,
    KeyInfo,
    KeyType,
    RevocationReason,
    StepHook,
    no_step,
)
from .models import JournalStep as Step
from .p11 import KeySelector, TokenSelector, TokenSession, open_token
from .pkix.certs import cert_record, fingerprint_sha256, load_certificates, verify_chain
from .pkix.csr import build_csr, load_csr
from .pkix.kr_vid import RANDOM_NUM_OBJECT_ID, new_random, without_identify_data
from .pkix.names import format_san, parse_san, parse_subject, sans_of
from .pkix.proof import prove_possession

__all__ = [
    "CertStatusReport",
    "EnrollOutcome",
    "EnrollParams",
    "certificate_status",
    "enroll",
    "find_due",
    "revoke_on_token",
]



#: The journal format this version writes, as ``"format"`` in each entry's data:
#:
#: 1. (no ``"format"``; versions before 2026-12) the key's label may be journaled in a write
#:    after "started", so an entry can lack it; a step "key" may come between "started" and
#:    "csr" (:attr:`Step.KEY`).
#: 2. the label is in the entry's first write (unless an existing key is reused), and the key
#:    is journaled together with the CSR: no step "key".
JOURNAL_FORMAT = 2


def journal_format(entry: JournalEntry) -> int:
    """The journal format ``entry`` was written in; one newer than this version's is refused,
    as its meaning is not known here."""
    fmt = entry.data.get("format", 1)
    if not isinstance(fmt, int) or isinstance(fmt, bool) or not 1 <= fmt <= JOURNAL_FORMAT:
        raise UsageError(
            f"Enrollment {entry.id} was journaled by another version of tokenissue (journal format {fmt!r}, "
            f"this version knows 1 to {JOURNAL_FORMAT}); finish it with that version."
        )
    return fmt


def _before_csr(step: str, fmt: int) -> bool:
    """Whether an entry at ``step`` has no CSR yet: "started", or format 1's "key"."""
    return step == Step.STARTED or (step == Step.KEY and fmt == 1)


def token_lock(token_identity: str) -> str:
    """The name of the lock (:meth:`Inventory.exclusive`) an enrollment on this token holds."""
    return f"enroll:{token_identity}"


@dataclass(frozen=True)
class EnrollParams:
    """What the user asked for; equal parameters identify the same unfinished enrollment."""

    token_serial: str  #: the token's identity (p11.token_identity): its serial, or a pkcs11: URI when serials repeat
    subject: str  #: RFC 4514
    profile: str
    key_type: str  #: KeyType value
    ca: str  #: CA location (directory or URL)
    label: str | None = None  #: requested key label; None: generated and journaled
    san: tuple[str, ...] = ()
    reuse_key_id: str | None = None  #: renew with this existing key (hex CKA_ID) instead of a new one
    replaces: str | None = None  #: hex serial of the certificate this renews
    replaces_sha256: str | None = None  #: its fingerprint: serials are unique per CA only
    old_key_id: str | None = None  #: hex CKA_ID of the key that certificate is under
    final_label: str | None = None  #: re-key: the label the new key takes once the old one is gone
    ref: str | None = None  #: CMP: the reference (senderKID) that goes with the authorization code
    require_sign_only: bool = False  #: refuse a key the token made able to decrypt too

    def as_json(self) -> dict[str, object]:
        d = asdict(self)
        d["san"] = list(self.san)
        if d["ref"] is None:
            # Journal entries written before CMP have no "ref"; equal parameters must still match.
            del d["ref"]
        if not d["require_sign_only"]:
            del d["require_sign_only"]  # likewise for entries written before it existed
        return d


@dataclass(frozen=True)
class EnrollOutcome:
    journal_id: str
    token_label: str
    token_serial: str
    key_id: bytes
    label: str
    certificate: x509.Certificate
    profile: str
    resumed: bool
    replaced: int | None = None
    already_done: bool = False  #: an identical enrollment had finished; nothing was done now
    key_can_decrypt: bool = False  #: the token made the key able to decrypt as well as sign

    def as_json(self) -> dict[str, object]:
        c = self.certificate
        return {
            "token": self.token_label,
            "token_serial": self.token_serial,
            "key_id": self.key_id.hex(),
            "label": self.label,
            "serial": format(c.serial_number, "x"),
            "subject": c.subject.rfc4514_string(),
            "issuer": c.issuer.rfc4514_string(),
            "not_before": c.not_valid_before_utc.isoformat(),
            "not_after": c.not_valid_after_utc.isoformat(),
            "sha256": fingerprint_sha256(c),
            "profile": self.profile,
            "journal_id": self.journal_id,
            "resumed": self.resumed,
            "already_done": self.already_done,
            "key_can_decrypt": self.key_can_decrypt,
            "sign_only": not self.key_can_decrypt,
            "replaces": format(self.replaced, "x") if self.replaced else None,
        }


def _default_label(profile: str) -> str:
    return f"{profile}-{datetime.now(UTC):%Y%m%d}-{os.urandom(3).hex()}"


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


def _find_done(s: TokenSession, entries: list[JournalEntry], holder: Inventory, params: EnrollParams) -> EnrollOutcome | None:
    """The outcome of a finished enrollment with the same parameters (``entries``, oldest
    first) whose certificate is still on the token, valid and not revoked.

    This makes ``enroll`` idempotent: a process killed after it finished (so the user never
    saw the result) and run again reports the certificate it made instead of enrolling a
    second key. Asking for another certificate means asking for something different
    (another ``--label``), or ``renew``.
    """
    now = datetime.now(UTC)
    for entry in reversed(entries):
        if not entry.finished or entry.state != Step.DONE or "cert" not in entry.data or "key_id" not in entry.data:
            continue
        cert = load_certificates(str(entry.data["cert"]).encode())[0]
        kid = bytes.fromhex(str(entry.data["key_id"]))
        der = cert.public_bytes(serialization.Encoding.DER)
        rec = holder.get_certificate(cert.serial_number)
        # A suspended one is still the one this enrollment made: on hold, not replaced.
        if rec is not None and rec.status is CertStatus.REVOKED:
            continue
        if cert.not_valid_after_utc <= now or not any(c.der == der for c in s.certificates(key_id=kid)):
            continue
        return EnrollOutcome(
            journal_id=entry.id,
            token_label=s.info.label,
            token_serial=s.info.name,
            key_id=kid,
            label=str(entry.data.get("label", "")),
            certificate=cert,
            profile=params.profile,
            resumed=True,
            replaced=int(params.replaces, 16) if params.replaces else None,
            already_done=True,
        )
    return None


def enroll(
    params: EnrollParams,
    *,
    token: TokenSelector,
    pin: Pin | ProtectedAuth | None,
    enroller: Enroller,
    holder: Inventory,
    module: str | None = None,
    journal_id: str | None = None,
    on_step: StepHook = no_step,
    id_number: IdNumber | None = None,
) -> EnrollOutcome:
    """Run (or resume) one enrollment. See the module docstring for the guarantees.

    ``id_number``: the holder's registration number, for a profile that binds it (a Korean
    VID). A new R is then made and kept on the token next to the new key (:func:`_random_for`)
    before the CA is asked, and the CA gets both; neither is journaled. Resuming before the CA
    answered needs the number again. A renewal without it keeps the old key's R, and the CA
    carries the old certificate's VID over."""
    name = parse_subject(params.subject)
    sans = parse_san(list(params.san))
    KeyType(params.key_type)  # validated early: a bad type must not leave a journal entry
    # Log in before journaling anything: a refused PIN must not leave an entry behind.
    with open_token(token, pin, module=module) as s:
        if s.info.name != params.token_serial:
            raise UsageError(f"This enrollment belongs to token {params.token_serial}, not {s.info.name}.")
        # One enrollment per token at a time, across processes: two runs of one batch, or a
        # sweep overlapping the last, would otherwise both pick up the same journal entry.
        busy = TokenBusy(
            f"Another tokenissue process is enrolling on token '{s.info.label}' ({s.info.name}); "
            "try again once it has finished."
        )
        with holder.exclusive(token_lock(s.info.name), busy=busy):
            resumed = True
            jid = journal_id
            if jid is None:
                earlier = holder.journal_by_params("enroll", params.as_json())
                jid = next((e.id for e in earlier if not e.finished), None)
                if jid is None:
                    done = _find_done(s, earlier, holder, params)
                    if done is not None:
                        return done
            if jid is None:
                resumed = False
                entry = holder.journal_start("enroll", params.as_json(), data=_first_data(s, params))
                jid = entry.id
                on_step(Step.STARTED)
            else:
                found = holder.journal_get(jid)
                if found is None or (found.finished and found.state != Step.DONE):
                    raise UsageError(f"Enrollment {jid} is no longer open (another process ended it); nothing to resume.")
                entry = found
            data: dict[str, Any] = dict(entry.data)
            st = entry.state
            fmt = journal_format(entry)
            # The profile's require_sign_only is known only to a CA in this process.
            strict = params.require_sign_only or (_before_csr(st, fmt) and enroller.sign_only_required(params.profile))
            try:
                if st == Step.STARTED:
                    key = _key_step(s, params, holder, jid, data, strict=strict)
                    on_step("key-generated")
                    kid = key.id
                else:
                    kid = bytes.fromhex(str(data["key_id"]))
                    key = s.key(KeySelector(id=kid))
                if not key.born_on_token:
                    raise ProvenanceError(
                        f"Key '{key.label}' does not prove it was generated on the token and never left it "
                        "(CKA_LOCAL, NEVER_EXTRACTABLE, ALWAYS_SENSITIVE); refusing to certify it."
                    )
                if strict and key.can_decrypt and _before_csr(st, fmt):
                    # A key reused for renewal (or adopted from an interrupted run) is checked too.
                    raise KeyUsageForced(
                        f"Key '{key.label}' on token '{s.info.label}' can decrypt as well as sign, and sign-only keys "
                        "were required; refusing to certify it.",
                        remedy=Remedy.SIGN_ONLY_HOW,
                    )
                private = s.private_key(KeySelector(id=kid))
                if _before_csr(st, fmt):
                    if _random_for(s, params, kid, fresh=id_number is not None):
                        data["vid"] = True
                    csr = build_csr(private, name, sans)
                    # Recorded with the request: whether the token forced the key to decrypt too.
                    entry = holder.journal_update(
                        jid, Step.CSR, key_id=kid.hex(), label=key.label, csr=csr.public_bytes(serialization.Encoding.PEM).decode(),
                        key_can_decrypt=key.can_decrypt, vid=bool(data.get("vid")),
                    )
                    data, st = dict(entry.data), entry.state
                    on_step(Step.CSR)
                if st == Step.CSR:
                    identity = _identity(s, params, kid, data, id_number)
                    result = _ask_ca(
                        s, holder, enroller, params, load_csr(str(data["csr"]).encode()), private, jid, kid, key.label,
                        identity,
                    )  # fmt: skip
                    on_step(Step.ISSUED)
                    entry = holder.journal_update(
                        jid, Step.ISSUED, cert=_pem(result.certificate), chain=[_pem(c) for c in result.chain]
                    )
                    data, st = dict(entry.data), entry.state
                    on_step("issued-recorded")
            except TokenIssueError as e:
                # Before the CA is asked ("started", "key") a failure is final: remove the key.
                # Once it has been asked ("csr"), only a definite refusal is; anything else (the
                # CA's database busy, its chain file unreadable, ...) may follow an issuance, so
                # the entry stays open and the next run asks again with the same request ID.
                # A request that never reached the CA (refused connection, unknown host, a 404
                # from a mistyped URL) is as definite as a refusal: nothing was issued.
                if _before_csr(st, fmt) or (st == Step.CSR and isinstance(e, RequestRejected | CANotReached)):
                    _abort(s, holder, jid, data, params)
                raise
            cert = load_certificates(str(data["cert"]).encode())[0]
            chain = [load_certificates(p.encode())[0] for p in data.get("chain", [])]
            if st == Step.ISSUED:
                prove_possession(private, cert)
                verify_chain(cert, chain)
                s.write_certificate(cert, key_id=kid, label=key.label)
                for ca in chain:
                    ski = x509.SubjectKeyIdentifier.from_public_key(ca.public_key()).digest
                    s.write_certificate(ca, key_id=ski, label=_cn(ca), trusted=True)
                on_step(Step.WRITTEN)
                if params.replaces_sha256 or params.final_label:
                    # A renewal removes the old certificate next: journal that this one is on the
                    # token first, so a crash in between never leaves the holder with neither.
                    st = holder.journal_update(jid, Step.WRITTEN).state
                else:
                    st = Step.WRITTEN  # writing again is idempotent: "done" below is the next write
            replaced = int(params.replaces, 16) if params.replaces else None
            if st == Step.WRITTEN:
                if params.replaces_sha256 and params.old_key_id:
                    _retire(s, params.replaces_sha256, bytes.fromhex(params.old_key_id), keep_key_id=kid)
                # The old key held this label until _retire removed it; a crash in between
                # resumes here, so the label is never lost nor doubled. All three objects are
                # checked, not the private key alone: a kill inside the relabel leaves the
                # private key renamed and its public key or certificate not.
                if params.final_label and s.relabel(kid, params.final_label):
                    key = s.key(KeySelector(id=kid))
                record = cert_record(
                    cert, profile=params.profile, token_serial=s.info.name, key_id=kid, label=key.label,
                    request_id=jid, replaces=replaced,
                )  # fmt: skip
                holder.journal_finish(jid, Step.DONE, record=record)
                on_step(Step.DONE)
            return EnrollOutcome(
                journal_id=jid,
                token_label=s.info.label,
                token_serial=s.info.name,
                key_id=kid,
                label=key.label,
                certificate=cert,
                profile=params.profile,
                resumed=resumed,
                replaced=replaced,
                key_can_decrypt=key.can_decrypt,
            )


def _ask_ca(
    s: TokenSession,
    holder: Inventory,
    enroller: Enroller,
    params: EnrollParams,
    csr: x509.CertificateSigningRequest,
    private: Any,
    jid: str,
    kid: bytes,
    label: str,
    identity: IdentityProof | None = None,
) -> EnrollResult:
    """The CA step: ``renew`` with the current key when the enroller offers it and the
    certificate being replaced can still authenticate (on the token with its key, valid, not
    revoked); else ``request``. A renewal that brings the registration number (a new VID) is
    a ``request``: ``renew`` carries the old VID over."""
    replaces = int(params.replaces, 16) if params.replaces else None
    if replaces is not None and params.replaces_sha256 and isinstance(enroller, KeyUpdater) and identity is None:
        current = _current_certificate(s, holder, replaces, params.replaces_sha256)
        if current is not None:
            cert, current_kid = current
            return enroller.renew(
                csr,
                new_key=private,
                current_cert=cert,
                current_key=s.private_key(KeySelector(id=current_kid)),
                profile=params.profile,
                request_id=jid,
                token_serial=s.info.name,
                key_id=kid,
                label=label,
                replaces=replaces,
            )
    return enroller.request(
        csr, profile=params.profile, request_id=jid, token_serial=s.info.name, key_id=kid, label=label,
        replaces=replaces, identity=identity,
    )  # fmt: skip


def _random_for(s: TokenSession, params: EnrollParams, kid: bytes, *, fresh: bool) -> bool:
    """Put R (the VID's random value) on the token next to the new key, if this enrollment
    binds an identity; True if the key has an R now.

    ``fresh`` (the holder gave the registration number): a new R, unless an interrupted run
    already left one with this key, which is kept (the CA may have seen it). Otherwise a
    re-key takes the R of the key it replaces, so the old VID still verifies with it."""
    if s.key_data(kid, RANDOM_NUM_OBJECT_ID) is not None:
        return True
    if fresh:
        s.put_key_data(kid, RANDOM_NUM_OBJECT_ID, new_random())
        return True
    if params.old_key_id:
        with suppress(KeyNotFound):
            old = s.key_data(bytes.fromhex(params.old_key_id), RANDOM_NUM_OBJECT_ID)
            if old is not None:
                s.put_key_data(kid, RANDOM_NUM_OBJECT_ID, old)
                return True
    return False


def _identity(
    s: TokenSession, params: EnrollParams, kid: bytes, data: dict[str, Any], id_number: IdNumber | None
) -> IdentityProof | None:
    """What the CA needs to compute the VID: the number and the R next to the key. A renewal
    without the number asks the CA to carry the old VID over; a first enrollment that binds
    an identity cannot go on without it."""
    if id_number is None:
        if data.get("vid") and not params.replaces:
            raise UsageError(
                "This enrollment binds the holder's registration number into the certificate; give it again "
                "to finish.",
                remedy=Remedy.GIVE_ID_NUMBER,
            )
        return None
    random = s.key_data(kid, RANDOM_NUM_OBJECT_ID)
    if random is None:
        # The key has no R: it was made by a run that was not given the number.
        random = new_random()
        s.put_key_data(kid, RANDOM_NUM_OBJECT_ID, random)
    return IdentityProof(id_number, random)


def _current_certificate(
    s: TokenSession, holder: Inventory, serial: int, sha256: str
) -> tuple[x509.Certificate, bytes] | None:
    """The certificate being replaced (by fingerprint) and its key's ID, if it is on the token
    with its key and can still vouch for its holder (within its validity, not known revoked).

    A certificate the holder's record has as suspended is offered too: only a CA that cannot be
    asked (CMP) gets this far with one, and it judges the signature itself, refusing it while
    the hold lasts and accepting it once the CA has restored the certificate."""
    rec = holder.get_certificate(serial)
    if rec is not None and rec.status is CertStatus.REVOKED:
        return None
    now = datetime.now(UTC)
    for c in s.certificates():
        if (
            c.serial == serial
            and hashlib.sha256(c.der).hexdigest() == sha256
            and not c.is_ca
            and c.has_key
            and c.not_before <= now < c.not_after
        ):
            return x509.load_der_x509_certificate(c.der), c.id
    return None


def _first_data(s: TokenSession, params: EnrollParams) -> dict[str, object]:
    """The new entry's data: the label of the key about to be generated, journaled in the
    entry's first write so that a key made just before a crash is found again."""
    if params.reuse_key_id:
        return {"format": JOURNAL_FORMAT}
    label = params.label or _default_label(params.profile)
    if s.find_keys(label):
        raise ObjectExists(f"Token '{s.info.label}' already has a key labelled '{label}'.", remedy=Remedy.OTHER_LABEL)
    return {"format": JOURNAL_FORMAT, "label": label, "generated": True}


def _key_step(
    s: TokenSession, params: EnrollParams, holder: Inventory, jid: str, data: dict[str, Any], *, strict: bool = False
) -> KeyInfo:
    if params.reuse_key_id:
        return s.key(KeySelector(id=bytes.fromhex(params.reuse_key_id)))
    if "label" not in data:
        # Journal format 1: an entry an older version started and left before journaling its
        # label. Journal it now, before generating, as that version would have.
        first = _first_data(s, params)
        holder.journal_update(jid, Step.STARTED, **first)
        data.update(first)
    label = str(data["label"])
    # A run killed inside key generation can leave the public half of a pair whose private key
    # was never stored (on SoftHSM also empty object files): remove such halves of this label,
    # which only this enrollment uses, before making the key again.
    s.remove_orphan_public_keys(label)
    try:
        return s.generate_key(KeyType(params.key_type), label, require_sign_only=strict)
    except ObjectExists:
        # An earlier run journaled this label and generated the key before it died: adopt
        # that key (its provenance is still checked) rather than orphan it.
        existing = s.find_keys(label)
        if not existing:
            raise
        return existing[0]


def _abort(s: TokenSession, holder: Inventory, jid: str, data: dict[str, Any], params: EnrollParams) -> None:
    """Undo an enrollment that failed before issuance: remove the key it generated."""
    if not params.reuse_key_id and data.get("generated"):
        remove_uncertified_keys(s, str(data.get("label")))
    holder.journal_finish(jid, Step.ABORTED)


def remove_uncertified_keys(s: TokenSession, label: str) -> int:
    """Remove the keys labelled ``label`` that no certificate on the token belongs to: the key
    an enrollment generated and never got a certificate onto. Returns how many."""
    removed = 0
    for k in s.find_keys(label):
        if not k.has_certificate:
            s.delete_key(KeySelector(id=k.id))
            removed += 1
    return removed


def _retire(s: TokenSession, old_sha256: str, old_key_id: bytes, *, keep_key_id: bytes) -> None:
    """After a renewal is on the token: remove the certificate it replaces, and after a re-key
    the old key too, but only once no other certificate needs it.

    The old certificate is identified by its fingerprint under its key's ID, never by serial
    alone (serials are unique per CA only: another CA's certificate may share one). Every step
    tolerates what an interrupted earlier run already removed, so a resume can repeat it.
    """
    for c in s.certificates(key_id=old_key_id):
        if not c.is_ca and hashlib.sha256(c.der).hexdigest() == old_sha256:
            s.delete_certificate(c.id, c.der)
    if old_key_id != keep_key_id and not [c for c in s.certificates(key_id=old_key_id) if not c.is_ca]:
        with suppress(KeyNotFound):
            s.delete_key(KeySelector(id=old_key_id), with_certificates=False)


def _cn(cert: x509.Certificate) -> str:
    from cryptography.x509.oid import NameOID

    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(cns[0].value) if cns else cert.subject.rfc4514_string()


# -- status ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class CertStatusReport:
    cert: CertObject
    state: CertState
    days_left: int
    renew_due: bool
    record: CertRecord | None
    ca: str | None

    def as_json(self) -> dict[str, object]:
        c = self.cert
        return {
            "key_id": c.id.hex(),
            "label": c.label,
            "subject": c.subject,
            "issuer": c.issuer,
            "serial": format(c.serial, "x"),
            "not_before": c.not_before.isoformat(),
            "not_after": c.not_after.isoformat(),
            "days_left": self.days_left,
            "state": self.state,
            "renew_due": self.renew_due,
            "profile": self.record.profile if self.record else None,
            "ca": self.ca,
        }


DEFAULT_RENEWAL_WINDOW = timedelta(days=30)


def default_renewal_window(cert: CertObject) -> timedelta:
    """30 days, or a third of the certificate's lifetime when that is shorter."""
    return min(DEFAULT_RENEWAL_WINDOW, (cert.not_after - cert.not_before) / 3)


def ca_of(holder: Inventory, record: CertRecord | None) -> str | None:
    """Where the holder enrolled a certificate (from the journal entry that asked for it)."""
    return _enrolled_with(holder, record, "ca")


def ref_of(holder: Inventory, record: CertRecord | None) -> str | None:
    """The CMP reference the holder enrolled a certificate with, if any."""
    return _enrolled_with(holder, record, "ref")


def _enrolled_with(holder: Inventory, record: CertRecord | None, name: str) -> str | None:
    if record is None or record.request_id is None:
        return None
    entry = holder.journal_get(record.request_id)
    if entry is not None and name == "ca":
        return journal_ca(entry) or None  # where it was finished, after a corrected address
    value = entry.params.get(name) if entry else None
    return str(value) if value else None


def certificate_status(
    s: TokenSession,
    holder: Inventory,
    *,
    within: timedelta | None = None,
    ask_ca: Callable[[str, int], CertStatus | None] | None = None,
    now: datetime | None = None,
) -> list[CertStatusReport]:
    """Every end-entity certificate on the token that has its key, with its state.

    A certificate is ``expiring`` (and renewal due) once ``within`` of its life is left; by
    default 30 days or a third of its lifetime, whichever is shorter, so that a 10-day
    certificate is not renewed again on every daily run.

    ``suspended`` (on hold at its CA) is never due: it is neither renewed nor re-issued until
    its CA restores it (then it is what its dates say again) or revokes it for good. What
    ``ask_ca`` answers wins over the holder's record, except that a revocation is final; the
    holder's record follows a restoration the CA reports.
    """
    now = now or datetime.now(UTC)
    out = []
    for c in s.certificates():
        if c.is_ca or not c.has_key:
            continue
        rec = holder.get_certificate(c.serial)
        ca = ca_of(holder, rec)
        known = rec.status if rec is not None else None
        if known is not CertStatus.REVOKED and ask_ca is not None and ca is not None:
            said = ask_ca(ca, c.serial)
            if said is not None and rec is not None and known is CertStatus.SUSPENDED and said is CertStatus.VALID:
                holder.restore(c.serial)  # the CA restored it
            known = said or known
        secs = (c.not_after - now).total_seconds()
        days_left = int(secs // 86400)
        if known is CertStatus.REVOKED:
            st = CertState.REVOKED
        elif known is CertStatus.SUSPENDED:
            st = CertState.SUSPENDED
        elif secs <= 0:
            st = CertState.EXPIRED
        elif c.not_after - now <= (within if within is not None else default_renewal_window(c)):
            st = CertState.EXPIRING
        else:
            st = CertState.VALID
        due = st not in (CertState.VALID, CertState.SUSPENDED)
        out.append(CertStatusReport(c, st, days_left, due, rec, ca))
    return out


def find_due(reports: list[CertStatusReport], kid: bytes | None = None) -> list[CertStatusReport]:
    """The certificates to renew: those due, or every one of the key ``kid`` when it is named."""
    if kid is not None:
        return [r for r in reports if r.cert.id == kid]
    return [r for r in reports if r.renew_due]


def renewal_params(
    report: CertStatusReport, *, token_serial: str, rekey: bool, ca: str, profile: str, ref: str | None = None
) -> EnrollParams:
    """Enrollment parameters that renew ``report``'s certificate: same subject, SANs and profile."""
    cert = x509.load_der_x509_certificate(report.cert.der)
    sans = tuple(format_san(n) for n in without_identify_data(sans_of(cert)))
    kt = _key_type_of(cert.public_key())
    return EnrollParams(
        token_serial=token_serial,
        subject=cert.subject.rfc4514_string(),
        profile=profile,
        key_type=kt.value,
        ca=ca,
        label=None,
        san=sans,
        reuse_key_id=None if rekey else report.cert.id.hex(),
        replaces=format(report.cert.serial, "x"),
        replaces_sha256=hashlib.sha256(report.cert.der).hexdigest(),
        old_key_id=report.cert.id.hex(),
        final_label=report.cert.label if rekey else None,
        ref=ref,
    )


def _key_type_of(pub: Any) -> KeyType:
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    from .models import KeyAlgorithm

    if isinstance(pub, rsa.RSAPublicKey):
        return KeyType.from_parts(KeyAlgorithm.RSA, pub.key_size)
    if isinstance(pub, ec.EllipticCurvePublicKey):
        return KeyType.from_parts(KeyAlgorithm.EC, pub.key_size)
    if isinstance(pub, ed25519.Ed25519PublicKey):
        return KeyType.ED25519
    raise UsageError("The certificate's key type is not supported.")


def revoke_on_token(
    s: TokenSession, holder: Inventory, key: KeySelector, enroller_for: Callable[[str], Enroller],
    reason: RevocationReason, ca: str | None = None,
) -> list[CertRecord]:
    """Revoke the certificates of one key on a present token, at their CA, and remember it.

    For key compromise the key is revoked, not one certificate: every other certificate of it
    in the holder's records that is still valid and unexpired (a same-key renewal's predecessor,
    no longer on the token) is revoked at the same CA too, and recorded so. tokenissue's CA and
    CMP server revoke those along with the first; asked again, they answer that it is done.
    Returns what was recorded revoked, the certificates on the token first.
    """
    kid = s.key(key).id
    out: dict[int, CertRecord] = {}
    for c in s.certificates(key_id=kid):
        if c.is_ca or c.serial in out:
            continue
        rec = holder.get_certificate(c.serial)
        where = ca or ca_of(holder, rec)
        if where is None:
            raise UsageError(f"tokenissue did not enroll certificate {c.serial:x}.", remedy=Remedy.NAME_CA)
        now = datetime.now(UTC)
        others = holder.same_key(c.serial, now) if rec is not None and reason is RevocationReason.KEY_COMPROMISE else []
        enroller = enroller_for(where)
        try:
            # The certificate and its key go along: CMP authenticates a revocation by that key.
            private_key = s.private_key(KeySelector(id=kid))
            for serial, der in [(c.serial, c.der), *((o.serial, o.der) for o in others)]:
                enroller.revoke(serial, reason, cert=x509.load_der_x509_certificate(der), key=private_key)
        finally:
            enroller.close()
        if rec is None:
            continue
        if reason is RevocationReason.KEY_COMPROMISE:
            out.update((r.serial, r) for r in holder.revoke_key(c.serial, reason, now))
        elif reason is RevocationReason.CERTIFICATE_HOLD:
            if rec.status is not CertStatus.REVOKED:  # a hold asked after a revocation changes nothing
                rec, _ = holder.suspend(c.serial, now)
            out[c.serial] = rec
        else:
            out[c.serial] = holder.revoke(c.serial, reason, now)
    return list(out.values())


# -- a token gone for good ------------------------------------------------------------------


@dataclass(frozen=True)
class Unfinished:
    """An open journal entry, as ``journal list`` shows it and ``journal abandon`` ends it."""

    journal_id: str
    token_serial: str
    subject: str
    ca: str
    step: str  #: the last step done: started, csr, issued, written (see the module docstring)
    certificate: x509.Certificate | None  #: issued by the CA, not yet recorded as done
    updated_at: datetime
    state: str = "open"  #: "open", or "abandoned" once ended

    @property
    def may_be_issued(self) -> bool:
        """The CA was asked, so it may hold a certificate even when none came back."""
        return self.step not in (Step.STARTED, Step.KEY)

    def as_json(self) -> dict[str, object]:
        cert = self.certificate
        return {
            "journal_id": self.journal_id, "state": self.state, "step": self.step, "token_serial": self.token_serial,
            "subject": self.subject, "ca": self.ca, "updated_at": self.updated_at.isoformat(),
            "serial": format(cert.serial_number, "x") if cert else None,
            "not_after": cert.not_valid_after_utc.isoformat() if cert else None,
        }  # fmt: skip


def _unfinished(entry: JournalEntry, state: str = "open") -> Unfinished:
    pem = entry.data.get("cert")
    return Unfinished(
        journal_id=entry.id,
        token_serial=str(entry.params.get("token_serial", "")),
        subject=str(entry.params.get("subject", "")),
        ca=journal_ca(entry),
        step=entry.state,
        certificate=load_certificates(str(pem).encode())[0] if pem else None,
        updated_at=entry.updated_at,
        state=state,
    )


def journal_ca(entry: JournalEntry) -> str:
    """Where an enrollment asks for its certificate: the CA it was started with, or the one
    ``enroll --resume --ca`` moved it to."""
    return str(entry.data.get("ca") or entry.params.get("ca", ""))


def relocate(holder: Inventory, journal_id: str, ca: str) -> None:
    """Send an open enrollment to another CA location from now on (``enroll --resume --ca``).

    For an address that was wrong or has moved. The request keeps its ID, so the same CA at its
    new address answers a repeated request with the certificate it already issued.
    """
    entry = holder.journal_get(journal_id)
    if entry is None or entry.finished:
        raise UsageError(f"Enrollment {journal_id} is no longer open; nothing to resume.")
    if journal_ca(entry) != ca:
        holder.journal_update(journal_id, entry.state, ca=ca)


class SeveralCAs(UsageError):
    """Open enrollments of several CAs were to be moved to one address; ``cas`` are theirs."""

    def __init__(self, entries: int, cas: set[str]) -> None:
        super().__init__(
            f"The {entries} unfinished enrollments were started at {len(cas)} different CAs, and only the "
            "enrollments of one CA can be moved to a corrected address."
        )
        self.cas = frozenset(cas)


def relocate_all(holder: Inventory, ca: str) -> None:
    """Send every open enrollment to the CA location ``ca`` from now on (see :func:`relocate`).
    They must all have been started at one CA: a corrected address corrects one address."""
    entries = holder.journal_open("enroll")
    recorded = {journal_ca(e) for e in entries}
    if len(recorded) > 1:
        raise SeveralCAs(len(entries), recorded)
    for e in entries:
        relocate(holder, e.id, ca)


def entry_params(entry: JournalEntry) -> EnrollParams:
    """The parameters an enrollment's journal entry was started with."""
    return EnrollParams(**{**entry.params, "san": tuple(entry.params.get("san") or ())})  # type: ignore[arg-type]


@dataclass(frozen=True)
class Resumed:
    """An open enrollment :func:`resume_all` tried: finished (``outcome``) or not (``error``)."""

    journal_id: str
    params: EnrollParams
    ca: str  #: where it asked (:func:`journal_ca`)
    outcome: EnrollOutcome | None = None
    error: TokenIssueError | None = None


def resume_all(
    holder: Inventory,
    *,
    open_enroller: Callable[[str, EnrollParams], Enroller],
    pin: Pin | ProtectedAuth | None,
    module: str | None = None,
    on_step: StepHook = no_step,
    id_number: Callable[[], IdNumber] | None = None,
) -> list[Resumed]:
    """Finish every open enrollment, each at the CA it asks (``open_enroller(location,
    params)`` opens that CA for it; it is closed after the entry).

    ``id_number`` gives the holder's registration number to entries that bind it (a Korean
    VID) and have not been answered yet; it is called only for those.

    An entry that cannot go on (its token absent, its CA down, its key gone) is reported and
    the others go on, as in a batch. An error that stops a run (:func:`~tokenissue.errors.stops_a_run`:
    a refused PIN) is raised instead, since every further entry would cost its token a try.
    """
    out: list[Resumed] = []
    for e in holder.journal_open("enroll"):
        params, ca = entry_params(e), journal_ca(e)
        try:
            enroller = open_enroller(ca, params)
            number = id_number() if id_number is not None and e.data.get("vid") and e.state == Step.CSR else None
            try:
                outcome = enroll(
                    params, token=TokenSelector.from_identity(params.token_serial), pin=pin, enroller=enroller,
                    holder=holder, module=module, journal_id=e.id, on_step=on_step, id_number=number,
                )  # fmt: skip
            finally:
                enroller.close()
        except TokenIssueError as err:
            if stops_a_run(err):
                raise
            out.append(Resumed(e.id, params, ca, error=err))
            continue
        out.append(Resumed(e.id, params, ca, outcome=outcome))
    return out


def unfinished(holder: Inventory, *, token_serial: str | None = None) -> list[Unfinished]:
    """The enrollments and renewals not finished yet, oldest first (of one token, if given)."""
    out = [_unfinished(e) for e in holder.journal_open("enroll")]
    return [u for u in out if token_serial is None or u.token_serial == token_serial]


def abandon(
    holder: Inventory,
    journal_id: str,
    *,
    present: Callable[[str], bool],
    remove_key: Callable[[str, str], None] | None = None,
) -> Unfinished:
    """End an enrollment whose token is gone for good (lost, broken, re-initialised).

    Its journal entry is closed as "abandoned", so ``enroll --resume`` stops trying it. A
    certificate the CA issued for it goes into the holder's records in the same transaction,
    never onto a token: its key went with the token, so it must be revoked, and a record is what
    ``revoke --token-serial`` and the CA operator work from. Refused while the token is present
    (``present(serial)``): then the enrollment can still be finished, and ending it would leave
    a key without its certificate. Ending an entry already ended returns it unchanged.

    The way out of an enrollment that the token is present for but that can never be finished
    (its CA's address is gone for good, the outcome of the request unknown) is ``remove_key``:
    called with the token's identity and the label of the key this enrollment generated, it
    removes that key, after which any certificate the CA may have issued is for a key that no
    longer exists. Refused once a certificate is in hand (then resuming finishes the work) and
    for a renewal that kept its key (that key still carries the certificate being renewed, so
    the entry is ended and the key kept).
    """
    entry = holder.journal_get(journal_id)
    if entry is None or entry.kind != "enroll":
        raise UsageError(f"There is no enrollment {journal_id} in the journal.", remedy=Remedy.LIST_JOURNAL)
    serial = str(entry.params.get("token_serial", ""))
    busy = TokenBusy(f"Another tokenissue process is enrolling on token {serial}; try again once it has finished.")
    with holder.exclusive(token_lock(serial), busy=busy):
        return _abandon(holder, journal_id, present, remove_key)


def _abandon(
    holder: Inventory, journal_id: str, present: Callable[[str], bool], remove_key: Callable[[str, str], None] | None
) -> Unfinished:
    entry = holder.journal_get(journal_id)
    assert entry is not None
    if entry.finished:
        if entry.state == Step.ABANDONED:
            return _unfinished(entry, "abandoned")
        raise UsageError(f"Enrollment {journal_id} is already finished ({entry.state}); there is nothing to abandon.")
    found = _unfinished(entry)
    if remove_key is not None and present(found.token_serial):
        if found.certificate is not None:
            raise UsageError(f"Enrollment {journal_id} already has its certificate.", remedy=Remedy.RESUME)
        if entry.data.get("generated") and not entry.params.get("reuse_key_id"):
            remove_key(found.token_serial, str(entry.data.get("label")))
        holder.journal_finish(journal_id, Step.ABANDONED)
        return replace(found, state="abandoned")
    if present(found.token_serial):
        raise UsageError(
            f"Token serial {found.token_serial} is present, so this enrollment can still be finished.",
            remedy=Remedy.RESUME_OR_ABANDON, details={"journal_id": journal_id},
        )
    record = None
    if found.certificate is not None:
        kid = entry.data.get("key_id")
        record = cert_record(
            found.certificate, profile=str(entry.params.get("profile", "")), token_serial=found.token_serial,
            key_id=bytes.fromhex(str(kid)) if kid else None, label=str(entry.data.get("label") or "") or None,
            request_id=entry.id, replaces=None,
        )  # fmt: skip
    holder.journal_finish(journal_id, Step.ABANDONED, record=record)
    return replace(found, state="abandoned")
