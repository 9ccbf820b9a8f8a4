"""The certificates table: what the CA issued and what the holder enrolled, their
revocations and suspensions, and the CRL number counter.

A certificate's ``status`` moves only this way::

    valid ──suspend──▶ suspended ──restore──▶ valid
      │                    │
      └──────revoke────────┴──revoke──▶ revoked (final)

A suspension is a revocation with reason certificateHold that can be taken back: it keeps
``revoked_at`` (the CRL entry's date) and ``revocation_reason`` as a revocation does, and a
restoration clears both. Revoking a suspended certificate keeps the suspension's time, since
the certificate has been out of use from then on. The history is in the audit log.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import and_, bindparam, func, insert, select, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, Row
from sqlalchemy.sql.elements import ColumnElement

from ..errors import CertificateStateRefused, InventoryError, NotFound, Remedy, RequestRejected
from ..models import CertRecord, CertStatus, RevocationReason
from ..publickeys import certificate_spki
from ._audit_log import AUDIT_RETRIES, append_audit, prepare_audit
from ._engine import Database
from ._errors import DuplicateRequest
from ._schema import certificates, counters
from ._types import utc
from ._values import serial_hex, utc_now

__all__ = ["CertificateStore", "cert_to_row", "insert_unless_recorded"]

# Statements on the paths every enrollment and issuance takes, built once: building a Core
# statement and its cache key costs more than running it on SQLite.
_CERT_INSERT = insert(certificates)
_CERT_BY_REQUEST = select(certificates).where(certificates.c.request_id == bindparam("request_id"))
_CERT_BY_SERIAL = select(certificates).where(certificates.c.serial == bindparam("serial"))
_CERT_SERIAL = select(certificates.c.serial).where(certificates.c.serial == bindparam("serial"))


def cert_to_row(rec: CertRecord) -> dict[str, object]:
    """The certificates row that records ``rec``."""
    return {
        "serial": serial_hex(rec.serial),
        "subject": rec.subject,
        "issuer": rec.issuer,
        "not_before": utc(rec.not_before, "not_before"),
        "not_after": utc(rec.not_after, "not_after"),
        "sha256": rec.sha256.lower(),
        "profile": rec.profile,
        "der": bytes(rec.der),
        "status": rec.status.value,
        "revoked_at": None if rec.revoked_at is None else utc(rec.revoked_at, "revoked_at"),
        "revocation_reason": (
            None if rec.revocation_reason is None else rec.revocation_reason.value
        ),
        "token_serial": rec.token_serial,
        "key_id": None if rec.key_id is None else rec.key_id.hex(),
        "label": rec.label,
        "request_id": rec.request_id,
        "replaces": None if rec.replaces is None else serial_hex(rec.replaces),
        "created_at": utc_now(),
    }


def _row_to_cert(row: Row[Any]) -> CertRecord:
    return CertRecord(
        serial=int(row.serial, 16),
        subject=row.subject,
        issuer=row.issuer,
        not_before=row.not_before,
        not_after=row.not_after,
        sha256=row.sha256,
        profile=row.profile,
        der=bytes(row.der),
        status=CertStatus(row.status),
        revoked_at=row.revoked_at,
        revocation_reason=(
            None if row.revocation_reason is None else RevocationReason(row.revocation_reason)
        ),
        token_serial=row.token_serial,
        key_id=None if row.key_id is None else bytes.fromhex(row.key_id),
        label=row.label,
        request_id=row.request_id,
        replaces=None if row.replaces is None else int(row.replaces, 16),
    )


def insert_unless_recorded(conn: Connection, row: Mapping[str, object]) -> None:
    """Record the certificate ``row`` (from :func:`cert_to_row`) inside the caller's
    transaction, unless its serial already is."""
    if conn.execute(_CERT_SERIAL, {"serial": row["serial"]}).first() is None:
        conn.execute(_CERT_INSERT, row)


def _same_key_rows(conn: Connection, row: Row[Any], at: datetime, *, lock: bool) -> list[Row[Any]]:
    """Valid or suspended, unexpired certificates other than ``row`` with its issuer and public key.

    There is no column for the key: the DER of each valid, unexpired certificate from the
    issuer is searched for the SubjectPublicKeyInfo's bytes (a certificate holds them
    verbatim), and a match is confirmed by parsing. Key compromises are rare, and that
    costs microseconds per certificate, so no index (and no migration) is needed.
    """
    spki = certificate_spki(bytes(row.der))
    if spki is None:
        return []
    query = select(certificates).where(
        certificates.c.status.in_([CertStatus.VALID.value, CertStatus.SUSPENDED.value]),
        certificates.c.issuer == row.issuer,
        certificates.c.not_after > at,
        certificates.c.serial != row.serial,
    ).order_by(certificates.c.not_before, certificates.c.serial)
    if lock:
        query = query.with_for_update()
    return [r for r in conn.execute(query).all() if spki in bytes(r.der) and certificate_spki(bytes(r.der)) == spki]


_T = TypeVar("_T")


class CertificateStore(Database):
    """Certificate records, one transaction per call."""

    def add_certificate(self, rec: CertRecord, *, audit: tuple[str, Mapping[str, object]] | None = None) -> None:
        """Record an issued (or enrolled) certificate, and with ``audit`` (action, details) its
        audit entry in the same transaction: an issuance is never on record without it.

        Raises InventoryError if the serial is already recorded, and DuplicateRequest if a
        certificate for ``rec.request_id`` is: the caller should then return that one.
        """
        row = cert_to_row(rec)
        prepared = prepare_audit(audit[1]) if audit else None

        def insert(conn: Connection) -> None:
            conn.execute(_CERT_INSERT, row)
            if audit is not None and prepared is not None:
                append_audit(conn, audit[0], prepared)

        self._recording(rec, insert)

    def _recording(self, rec: CertRecord, write: Callable[[Connection], _T]) -> _T:
        """``write`` in one write transaction that records ``rec``, tried again when another
        writer took the audit log's next seq; a duplicate serial or request is told precisely."""
        for attempt in range(AUDIT_RETRIES):
            try:
                with self._tx("write to", write=True) as conn:
                    return write(conn)
            except InventoryError as e:
                if not isinstance(e.__cause__, sa_exc.IntegrityError):
                    raise
                self._explain_duplicate(rec, e)
                if attempt + 1 == AUDIT_RETRIES:
                    raise
                # Neither the serial nor the request: another writer took the audit seq.
        raise AssertionError("unreachable")  # pragma: no cover

    def add_superseding(
        self,
        rec: CertRecord,
        old_serial: int,
        at: datetime,
        *,
        audit: tuple[str, Mapping[str, object]] | None = None,
        revoke_audit: tuple[str, Mapping[str, object]] | None = None,
    ) -> CertRecord:
        """Record ``rec`` and revoke certificate ``old_serial`` as superseded at ``at``, in one
        transaction with both audit entries: there is never a moment with both certificates
        valid, or neither. Returns the old certificate as revoked.

        The old certificate must be valid and unexpired at ``at`` (checked under a row lock,
        so of two re-issues of one certificate only one succeeds): RequestRejected otherwise,
        NotFound if it is unknown, and nothing is recorded. The other errors are those of
        :meth:`add_certificate`.
        """
        row = cert_to_row(rec)
        at = utc(at, "at")
        key = serial_hex(old_serial)
        prepared = prepare_audit(audit[1]) if audit else None
        prepared_revoke = prepare_audit(revoke_audit[1]) if revoke_audit else None

        def supersede(conn: Connection) -> CertRecord:
            old = conn.execute(_CERT_BY_SERIAL.with_for_update(), {"serial": key}).first()
            if old is None:
                raise NotFound(
                    f"No certificate with serial {old_serial:#x} is in the inventory.",
                    remedy=Remedy.LIST_CERTIFICATES,
                )
            # A suspended certificate (a lost token on hold) may be re-issued too.
            held = old.status == CertStatus.SUSPENDED.value
            if (old.status != CertStatus.VALID.value and not held) or old.not_after <= at:
                state = "revoked" if old.status == CertStatus.REVOKED.value else "no longer valid"
                raise RequestRejected(
                    f"Certificate {old_serial:x}, which this one was to replace, is {state}; "
                    "nothing was issued."
                )
            conn.execute(
                update(certificates)
                .where(certificates.c.serial == key)
                .values(
                    status=CertStatus.REVOKED.value,
                    # Revoked for good as of its suspension, as any revocation of a held one.
                    revoked_at=old.revoked_at if held and old.revoked_at is not None else at,
                    revocation_reason=RevocationReason.SUPERSEDED.value,
                )
            )
            conn.execute(_CERT_INSERT, row)
            if audit is not None and prepared is not None:
                append_audit(conn, audit[0], prepared)
            if revoke_audit is not None and prepared_revoke is not None:
                append_audit(conn, revoke_audit[0], prepared_revoke)
            done = conn.execute(_CERT_BY_SERIAL, {"serial": key}).one()
            return _row_to_cert(done)

        return self._recording(rec, supersede)

    def _explain_duplicate(self, rec: CertRecord, e: InventoryError) -> None:
        """Raise the precise error when the serial or the request is what was duplicated."""
        # Which constraint failed is spelled differently by each database, so ask.
        if self.serial_exists(rec.serial):
            raise InventoryError(
                f"Serial {rec.serial:#x} is already issued; a serial must never be "
                "reused, so issue the certificate again with a fresh serial."
            ) from e.__cause__
        if rec.request_id is not None and self.find_by_request(rec.request_id):
            raise DuplicateRequest(
                f"A certificate for request {rec.request_id} is already recorded; "
                "return that certificate instead of issuing another.",
                request_id=rec.request_id,
            ) from e.__cause__

    def get_certificate(self, serial: int) -> CertRecord | None:
        """The certificate with this serial, or None."""
        key = serial_hex(serial)
        with self._tx("read", write=False) as conn:
            row = conn.execute(_CERT_BY_SERIAL, {"serial": key}).first()
        return None if row is None else _row_to_cert(row)

    def find_by_request(self, request_id: str) -> CertRecord | None:
        """The certificate issued for an enrollment request; the CA looks here first."""
        with self._tx("read", write=False) as conn:
            row = conn.execute(_CERT_BY_REQUEST, {"request_id": request_id}).first()
        return None if row is None else _row_to_cert(row)

    def list_certificates(
        self,
        *,
        status: CertStatus | None = None,
        expiring_before: datetime | None = None,
        token_serial: str | None = None,
        key_id: bytes | None = None,
    ) -> list[CertRecord]:
        """Certificates matching every given filter, oldest ``not_before`` first.

        ``expiring_before`` keeps those whose ``not_after`` is strictly earlier.
        """
        conds: list[ColumnElement[bool]] = []
        if status is not None:
            conds.append(certificates.c.status == status.value)
        if expiring_before is not None:
            conds.append(certificates.c.not_after < utc(expiring_before, "expiring_before"))
        if token_serial is not None:
            conds.append(certificates.c.token_serial == token_serial)
        if key_id is not None:
            conds.append(certificates.c.key_id == key_id.hex())
        query = select(certificates).order_by(
            certificates.c.not_before, certificates.c.serial
        )
        if conds:
            query = query.where(and_(*conds))
        with self._tx("read", write=False) as conn:
            rows = conn.execute(query).all()
        return [_row_to_cert(row) for row in rows]

    def token_identities(self, serial: str) -> list[str]:
        """The recorded token identities that ``serial`` may mean: the serial itself, and the
        ``pkcs11:`` URIs (tokens whose serials repeat) whose ``serial=`` attribute it is."""
        from urllib.parse import quote

        pattern = "%;serial=" + quote(serial, safe="").replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        col = certificates.c.token_serial
        query = (
            select(col).distinct()
            .where((col == serial) | (col.like("pkcs11:%") & (col.like(pattern, escape="\\") | col.like(pattern + ";%", escape="\\"))))
            .order_by(col)
        )  # fmt: skip
        with self._tx("read", write=False) as conn:
            return [str(r[0]) for r in conn.execute(query).all()]

    def revoke(
        self,
        serial: int,
        reason: RevocationReason,
        at: datetime,
        *,
        audit: tuple[str, Mapping[str, object]] | None = None,
    ) -> CertRecord:
        """Mark a certificate revoked and return it.

        Revoking one that is already revoked returns it unchanged, keeping the first reason
        and time: a revocation is a fact on a published CRL and is never rewritten. A suspended
        one is revoked for good with ``reason``, keeping the time of its suspension.
        Raises NotFound for an unknown serial.
        """
        key = serial_hex(serial)
        at = utc(at, "at")
        with self._tx("write to", write=True) as conn:
            # FOR UPDATE (nothing on SQLite, where BEGIN IMMEDIATE already serialises): on
            # PostgreSQL two revokers would otherwise both read "valid" and the second would
            # overwrite the first one's reason and time and log a second audit entry.
            row = conn.execute(
                select(certificates).where(certificates.c.serial == key).with_for_update()
            ).first()
            if row is None:
                raise NotFound(
                    f"No certificate with serial {serial:#x} is in the inventory.", remedy=Remedy.LIST_CERTIFICATES
                )
            if row.status == CertStatus.REVOKED.value:
                return _row_to_cert(row)
            conn.execute(
                update(certificates)
                .where(certificates.c.serial == key)
                .values(
                    status=CertStatus.REVOKED.value,
                    revoked_at=row.revoked_at if row.status == CertStatus.SUSPENDED.value and row.revoked_at else at,
                    revocation_reason=reason.value,
                )
            )
            if audit is not None:
                append_audit(conn, audit[0], prepare_audit(audit[1]))
            row = conn.execute(select(certificates).where(certificates.c.serial == key)).one()
        return _row_to_cert(row)

    def suspend(
        self,
        serial: int,
        at: datetime,
        *,
        audit: tuple[str, Mapping[str, object]] | None = None,
    ) -> tuple[CertRecord, bool]:
        """Suspend a valid certificate (reason certificateHold, since ``at``) and return it, with
        whether it was suspended now (False: it was suspended already, and is left as it was).

        Raises NotFound for an unknown serial, and CertificateStateRefused for one that is
        revoked (a revocation is final) or has expired by ``at`` (nothing to hold).
        """
        key = serial_hex(serial)
        at = utc(at, "at")
        with self._tx("write to", write=True) as conn:
            row = self._locked(conn, serial)
            if row.status == CertStatus.SUSPENDED.value:
                return _row_to_cert(row), False
            if row.status == CertStatus.REVOKED.value:
                raise CertificateStateRefused(
                    f"Certificate {serial:x} is revoked ({row.revocation_reason}), which is final; "
                    "only a valid certificate can be suspended.",
                    state=row.status,
                )
            if row.not_after <= at:
                raise CertificateStateRefused(
                    f"Certificate {serial:x} expired on {row.not_after:%Y-%m-%d}; an expired certificate "
                    "is not suspended.",
                    state="expired",
                )
            conn.execute(
                update(certificates)
                .where(certificates.c.serial == key, certificates.c.status == CertStatus.VALID.value)
                .values(
                    status=CertStatus.SUSPENDED.value,
                    revoked_at=at,
                    revocation_reason=RevocationReason.CERTIFICATE_HOLD.value,
                )
            )
            if audit is not None:
                append_audit(conn, audit[0], prepare_audit(audit[1]))
            row = conn.execute(_CERT_BY_SERIAL, {"serial": key}).one()
        return _row_to_cert(row), True

    def restore(self, serial: int, *, audit: tuple[str, Mapping[str, object]] | None = None) -> CertRecord:
        """Take a suspension back: the certificate is valid again (and off the next CRL).

        Raises NotFound for an unknown serial, and CertificateStateRefused for a certificate
        that is not suspended (valid already, or revoked for good).
        """
        key = serial_hex(serial)
        with self._tx("write to", write=True) as conn:
            row = self._locked(conn, serial)
            if row.status == CertStatus.VALID.value:
                raise CertificateStateRefused(
                    f"Certificate {serial:x} is valid, not suspended; there is nothing to restore.",
                    state=row.status,
                    remedy=Remedy.LIST_SUSPENDED,
                )
            if row.status != CertStatus.SUSPENDED.value:
                raise CertificateStateRefused(
                    f"Certificate {serial:x} is revoked ({row.revocation_reason}), which is final; "
                    "only a suspended certificate can be restored.",
                    state=row.status,
                )
            conn.execute(
                update(certificates)
                .where(certificates.c.serial == key, certificates.c.status == CertStatus.SUSPENDED.value)
                .values(status=CertStatus.VALID.value, revoked_at=None, revocation_reason=None)
            )
            if audit is not None:
                append_audit(conn, audit[0], prepare_audit(audit[1]))
            row = conn.execute(_CERT_BY_SERIAL, {"serial": key}).one()
        return _row_to_cert(row)

    @staticmethod
    def _locked(conn: Connection, serial: int) -> Row[Any]:
        """The row of ``serial``, locked for the rest of the transaction (FOR UPDATE on
        PostgreSQL; SQLite's BEGIN IMMEDIATE serialises writers already)."""
        row = conn.execute(_CERT_BY_SERIAL.with_for_update(), {"serial": serial_hex(serial)}).first()
        if row is None:
            raise NotFound(
                f"No certificate with serial {serial:#x} is in the inventory.", remedy=Remedy.LIST_CERTIFICATES
            )
        return row

    def same_key(self, serial: int, at: datetime) -> list[CertRecord]:
        """The other certificates of the public key certified by ``serial``, from its issuer,
        that are neither revoked nor expired at ``at``: what a key compromise also revokes.

        Oldest ``not_before`` first; empty for an unknown serial or a certificate that does
        not parse. See :meth:`revoke_key`.
        """
        at = utc(at, "at")
        with self._tx("read", write=False) as conn:
            row = conn.execute(_CERT_BY_SERIAL, {"serial": serial_hex(serial)}).first()
            if row is None:
                return []
            return [_row_to_cert(r) for r in _same_key_rows(conn, row, at, lock=False)]

    def revoke_key(
        self,
        serial: int,
        reason: RevocationReason,
        at: datetime,
        *,
        audit: Callable[[CertRecord], tuple[str, Mapping[str, object]]] | None = None,
    ) -> list[CertRecord]:
        """Revoke the certificate ``serial`` and, in the same transaction, every other one of
        its public key from its issuer that is neither revoked nor expired at ``at`` (a suspended
        one is revoked for good, as of its suspension).

        A key compromise puts the key out of its holder's hands, so every certificate that
        vouches for it must go, not only the one named: a same-key renewal leaves its
        predecessor valid until it expires. Returns the certificate ``serial`` (unchanged if it
        was revoked before, as :meth:`revoke` does) followed by the others it revoked, oldest
        first. ``audit(record)`` gives the (action, details) of each revocation's audit entry;
        a certificate revoked before gets none. Raises NotFound for an unknown serial.
        """
        at = utc(at, "at")
        with self._tx("write to", write=True) as conn:
            row = conn.execute(_CERT_BY_SERIAL.with_for_update(), {"serial": serial_hex(serial)}).first()
            if row is None:
                raise NotFound(
                    f"No certificate with serial {serial:#x} is in the inventory.", remedy=Remedy.LIST_CERTIFICATES
                )
            rows = [row] if row.status == CertStatus.REVOKED.value else []
            todo = ([] if rows else [row]) + _same_key_rows(conn, row, at, lock=True)
            # A suspended certificate is revoked for good as of its suspension.
            fresh = [r.serial for r in todo if r.status != CertStatus.SUSPENDED.value]
            held = [r.serial for r in todo if r.status == CertStatus.SUSPENDED.value]
            if fresh:
                conn.execute(
                    update(certificates)
                    .where(certificates.c.serial.in_(fresh))
                    .values(status=CertStatus.REVOKED.value, revoked_at=at, revocation_reason=reason.value)
                )
            if held:
                conn.execute(
                    update(certificates)
                    .where(certificates.c.serial.in_(held))
                    .values(status=CertStatus.REVOKED.value, revocation_reason=reason.value)
                )
            for r in todo:
                done = conn.execute(_CERT_BY_SERIAL, {"serial": r.serial}).one()
                rows.append(done)
                if audit is not None:
                    action, details = audit(_row_to_cert(done))
                    append_audit(conn, action, prepare_audit(details))
        return [_row_to_cert(r) for r in rows]

    def serial_exists(self, serial: int) -> bool:
        """Whether a certificate with this serial is recorded (the CA's reuse check)."""
        key = serial_hex(serial)
        with self._tx("read", write=False) as conn:
            found = conn.execute(_CERT_SERIAL, {"serial": key}).first()
        return found is not None

    def next_crl_number(self) -> int:
        """Hand out the next CRL number: 1, 2, 3, ... never the same one twice.

        The increment and the read are one transaction, and the UPDATE locks the counter
        row, so two CAs issuing CRLs at once still get different numbers.
        """
        with self._tx("write to", write=True) as conn:
            conn.execute(
                update(counters)
                .where(counters.c.name == "crl_number")
                .values(value=counters.c.value + 1)
            )
            value = conn.execute(
                select(counters.c.value).where(counters.c.name == "crl_number")
            ).scalar_one()
        return int(value)

    def certificate_count(self) -> int:
        """How many certificates are recorded (``ca init`` refuses an inventory that has any)."""
        with self._tx("read", write=False) as conn:
            return int(conn.execute(select(func.count()).select_from(certificates)).scalar_one())
