"""The inventory store: certificates, the resumable journal, the audit log and settings.

One :class:`Inventory` wraps one SQLAlchemy engine. Every public method is one transaction;
on SQLite a writing transaction starts with ``BEGIN IMMEDIATE`` so concurrent writers
queue on the busy timeout instead of failing half-way with "database is locked" when a
read lock cannot be upgraded. Errors from SQLAlchemy leave this module as
:class:`~tokenissue.errors.InventoryError` (exit status 7).
"""

from __future__ import annotations

import json
import os
import stat
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import and_, create_engine, event, func, insert, select, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, Connection, Engine, Row, make_url
from sqlalchemy.sql.elements import ColumnElement

from ..errors import InventoryError, NotFound
from ..models import AuditEntry, CertRecord, CertStatus, JournalEntry, RevocationReason
from ._audit import GENESIS_HASH, audit_hash, canonical_json, check_no_secrets
from ._errors import DuplicateRequest, translate
from ._schema import audit, certificates, counters, journal, settings
from ._types import utc

__all__ = ["Inventory"]

# How long a SQLite writer waits for another one before giving up. Issuing a certificate
# holds the lock for milliseconds; the generous wait covers a slow disk or a long migration.
_BUSY_TIMEOUT_MS = 30_000
# Concurrent audit appends on PostgreSQL can both pick seq N; the loser retries.
_AUDIT_RETRIES = 20
# Settings under this prefix are the inventory's own bookkeeping; set_setting refuses them.
_RESERVED_PREFIX = "inventory."
_AUDIT_HEAD_KEY = "inventory.audit_head"
_WRITE_OPTION = "tokenissue_write"
# A serial is a positive integer of at most 20 octets (RFC 5280); String(64) leaves room
# for the odd non-conforming certificate a holder may have enrolled elsewhere.
_MAX_SERIAL = 1 << 256


def _now() -> datetime:
    return datetime.now(UTC)


def _serial_hex(serial: int) -> str:
    if not isinstance(serial, int) or isinstance(serial, bool) or not 0 <= serial < _MAX_SERIAL:
        raise ValueError(f"certificate serial must be an integer in [0, 2**256), not {serial!r}")
    return format(serial, "x")


def _json_dict(text: str) -> dict[str, object]:
    value = json.loads(text)
    assert isinstance(value, dict)
    return value


def _resolve_url(url_or_path: str | os.PathLike[str]) -> tuple[URL, Path | None]:
    """Turn the user's argument into a URL, and the SQLite file path when there is one."""
    text = os.fspath(url_or_path)
    if "://" not in text:
        path = Path(text).expanduser().absolute()
        return URL.create("sqlite+pysqlite", database=str(path)), path
    url = make_url(text)
    if url.get_backend_name() != "sqlite":
        return url, None
    database = url.database
    # An in-memory database and SQLite "file:" URIs have no plain file to secure.
    if not database or database == ":memory:" or database.startswith("file:"):
        return url, None
    path = Path(database).expanduser().absolute()
    return url.set(database=str(path)), path


def _secure_file(path: Path) -> None:
    """Create the SQLite file owner-only before SQLite does, or tighten an existing one.

    The inventory holds the CA's issuance records and audit trail; SQLite would create the
    file with the umask's mode (often world-readable). The WAL and shared-memory files
    SQLite adds later copy the main file's mode.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        mode = stat.S_IMODE(os.fstat(fd).st_mode)
        if mode & 0o077:
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def _configure_sqlite(engine: Engine) -> None:
    """Pragmas for every new SQLite connection, and explicit BEGIN statements.

    pysqlite's own transaction handling issues a deferred BEGIN lazily and would hide ours,
    so its isolation level is set to None and SQLAlchemy's "begin" event emits BEGIN itself.
    This is the recipe in the SQLAlchemy SQLite dialect documentation.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA foreign_keys = ON")
            # WAL lets readers (status, list) run while a writer issues a certificate.
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = FULL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        write = conn.get_execution_options().get(_WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


class Inventory:
    """The CA's record of what it issued and the holder's record of what it enrolled.

    Create one with :meth:`open`; it runs the migrations. Use it as a context manager or call
    :meth:`close`. Instances are not meant to be shared between threads: open one each.
    """

    def __init__(self, engine: Engine, where: str) -> None:
        """Wrap an engine whose schema is already at head; use :meth:`open` instead."""
        self._engine = engine
        self._where = where

    # -- lifecycle ----------------------------------------------------------------------

    @classmethod
    def open(cls, url_or_path: str | os.PathLike[str]) -> Inventory:
        """Open (creating if needed) the inventory and migrate it to the newest schema.

        ``url_or_path`` is a SQLAlchemy URL (``sqlite:////abs/path.db``,
        ``postgresql://...``) or a plain filesystem path, which means SQLite.
        """
        try:
            url, path = _resolve_url(url_or_path)
        except (sa_exc.ArgumentError, ValueError) as e:
            # The text is not echoed: a mistyped URL may still contain a password.
            raise InventoryError(
                "Cannot open the inventory: the location is neither a path nor a database "
                "URL; give a file path, sqlite:////abs/path.db or postgresql://..."
            ) from e
        where = str(path) if path is not None else url.render_as_string(hide_password=True)
        engine: Engine | None = None
        try:
            with translate("open", where):
                if path is not None:
                    _secure_file(path)
                try:
                    engine = create_engine(url)
                except ImportError as e:
                    raise InventoryError(
                        f"Cannot open the inventory at {where}: the database driver "
                        f"{e.name or ''} is not installed; install it (e.g. psycopg for "
                        "PostgreSQL)."
                    ) from e
                except sa_exc.NoSuchModuleError as e:
                    raise InventoryError(
                        f"Cannot open the inventory at {where}: tokenissue does not know the "
                        f"database kind {url.drivername!r}; use a path, sqlite:// or "
                        "postgresql://."
                    ) from e
                if url.get_backend_name() == "sqlite":
                    _configure_sqlite(engine)
                inv = cls(engine, where)
                inv._migrate()
                return inv
        except BaseException:
            if engine is not None:
                engine.dispose()
            raise

    def _migrate(self) -> None:
        from ._migrate import at_head, upgrade_to_head

        with self._tx("check the schema version", write=False) as conn:
            if at_head(conn):
                return
        from alembic.util import CommandError

        try:
            with self._tx("migrate", write=True) as conn:
                upgrade_to_head(conn)
        except CommandError as e:
            # The usual cause is a database last written by a newer tokenissue, whose
            # revision this version does not know.
            raise InventoryError(
                f"Cannot migrate the inventory at {self._where}: {e}; "
                "it was probably written by a newer tokenissue, so upgrade tokenissue."
            ) from e

    def close(self) -> None:
        """Release the database connections. The object is unusable afterwards."""
        self._engine.dispose()

    def __enter__(self) -> Inventory:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextmanager
    def _tx(self, doing: str, *, write: bool) -> Iterator[Connection]:
        """One transaction; SQLAlchemy errors inside become InventoryError."""
        with translate(doing, self._where), self._engine.connect() as conn:
            if write:
                conn.execution_options(**{_WRITE_OPTION: True})
            with conn.begin():
                yield conn

    # -- certificates -------------------------------------------------------------------

    def add_certificate(self, rec: CertRecord) -> None:
        """Record an issued (or enrolled) certificate.

        Raises InventoryError if the serial is already recorded, and DuplicateRequest if a
        certificate for ``rec.request_id`` is: the caller should then return that one.
        """
        row = self._cert_to_row(rec)
        try:
            with self._tx("write to", write=True) as conn:
                conn.execute(insert(certificates).values(**row))
        except InventoryError as e:
            if not isinstance(e.__cause__, sa_exc.IntegrityError):
                raise
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
            raise

    def get_certificate(self, serial: int) -> CertRecord | None:
        """The certificate with this serial, or None."""
        key = _serial_hex(serial)
        with self._tx("read", write=False) as conn:
            row = conn.execute(select(certificates).where(certificates.c.serial == key)).first()
        return None if row is None else self._row_to_cert(row)

    def find_by_request(self, request_id: str) -> CertRecord | None:
        """The certificate issued for an enrollment request; the CA looks here first."""
        with self._tx("read", write=False) as conn:
            row = conn.execute(
                select(certificates).where(certificates.c.request_id == request_id)
            ).first()
        return None if row is None else self._row_to_cert(row)

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
        return [self._row_to_cert(row) for row in rows]

    def revoke(self, serial: int, reason: RevocationReason, at: datetime) -> CertRecord:
        """Mark a certificate revoked and return it.

        Revoking one that is already revoked returns it unchanged, keeping the first reason
        and time: a revocation is a fact on a published CRL and is never rewritten.
        Raises NotFound for an unknown serial.
        """
        key = _serial_hex(serial)
        at = utc(at, "at")
        with self._tx("write to", write=True) as conn:
            row = conn.execute(select(certificates).where(certificates.c.serial == key)).first()
            if row is None:
                raise NotFound(
                    f"No certificate with serial {serial:#x} is in the inventory; "
                    "check the serial with 'tokenissue cert list'."
                )
            if row.status == CertStatus.REVOKED.value:
                return self._row_to_cert(row)
            conn.execute(
                update(certificates)
                .where(certificates.c.serial == key)
                .values(
                    status=CertStatus.REVOKED.value,
                    revoked_at=at,
                    revocation_reason=reason.value,
                )
            )
            row = conn.execute(select(certificates).where(certificates.c.serial == key)).one()
        return self._row_to_cert(row)

    def serial_exists(self, serial: int) -> bool:
        """Whether a certificate with this serial is recorded (the CA's reuse check)."""
        key = _serial_hex(serial)
        with self._tx("read", write=False) as conn:
            found = conn.execute(
                select(certificates.c.serial).where(certificates.c.serial == key)
            ).first()
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

    @staticmethod
    def _cert_to_row(rec: CertRecord) -> dict[str, object]:
        return {
            "serial": _serial_hex(rec.serial),
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
            "replaces": None if rec.replaces is None else _serial_hex(rec.replaces),
            "created_at": _now(),
        }

    @staticmethod
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

    # -- journal ------------------------------------------------------------------------

    def journal_start(
        self, kind: str, params: Mapping[str, object], *, id: str | None = None
    ) -> JournalEntry:
        """Record the start of a multi-step operation so it can be resumed after a crash.

        ``params`` must be JSON-serialisable and hold no secrets (ValueError otherwise).
        """
        check_no_secrets(params, "journal params")
        entry_id = id if id is not None else uuid.uuid4().hex
        now = _now()
        params_json = canonical_json(dict(params))
        with self._tx("write to", write=True) as conn:
            conn.execute(
                insert(journal).values(
                    id=entry_id,
                    kind=kind,
                    state="started",
                    params=params_json,
                    data="{}",
                    created_at=now,
                    updated_at=now,
                    finished=False,
                )
            )
            row = conn.execute(select(journal).where(journal.c.id == entry_id)).one()
        return self._row_to_journal(row)

    def journal_update(self, id: str, state: str, **data: object) -> JournalEntry:
        """Record that step ``state`` is done, merging ``data`` into the entry's data.

        Raises InventoryError for an unknown or finished entry: a finished operation must
        not be resumed.
        """
        check_no_secrets(data, "journal data")
        with self._tx("write to", write=True) as conn:
            row = self._journal_row_for_write(conn, id)
            if row.finished:
                raise InventoryError(
                    f"Journal entry {id} is already finished; start a new operation instead."
                )
            merged = _json_dict(row.data)
            merged.update(data)
            conn.execute(
                update(journal)
                .where(journal.c.id == id)
                .values(state=state, data=canonical_json(merged), updated_at=_now())
            )
            row = conn.execute(select(journal).where(journal.c.id == id)).one()
        return self._row_to_journal(row)

    def journal_get(self, id: str) -> JournalEntry | None:
        """The journal entry with this id, or None."""
        with self._tx("read", write=False) as conn:
            row = conn.execute(select(journal).where(journal.c.id == id)).first()
        return None if row is None else self._row_to_journal(row)

    def journal_open(self, kind: str | None = None) -> list[JournalEntry]:
        """Unfinished operations, oldest first: what a restart should offer to resume."""
        query = (
            select(journal)
            .where(journal.c.finished.is_(False))
            .order_by(journal.c.created_at, journal.c.id)
        )
        if kind is not None:
            query = query.where(journal.c.kind == kind)
        with self._tx("read", write=False) as conn:
            rows = conn.execute(query).all()
        return [self._row_to_journal(row) for row in rows]

    def journal_finished(self, kind: str, state: str = "done") -> list[JournalEntry]:
        """Finished operations of ``kind`` that ended in ``state``, newest first."""
        query = (
            select(journal)
            .where(journal.c.finished.is_(True), journal.c.kind == kind, journal.c.state == state)
            .order_by(journal.c.updated_at.desc(), journal.c.id)
        )
        with self._tx("read", write=False) as conn:
            rows = conn.execute(query).all()
        return [self._row_to_journal(row) for row in rows]

    def journal_finish(self, id: str, state: str = "done") -> JournalEntry:
        """Close an operation. Finishing a finished entry returns it unchanged."""
        with self._tx("write to", write=True) as conn:
            row = self._journal_row_for_write(conn, id)
            if not row.finished:
                conn.execute(
                    update(journal)
                    .where(journal.c.id == id)
                    .values(state=state, finished=True, updated_at=_now())
                )
                row = conn.execute(select(journal).where(journal.c.id == id)).one()
        return self._row_to_journal(row)

    def _journal_row_for_write(self, conn: Connection, id: str) -> Row[Any]:
        row = conn.execute(select(journal).where(journal.c.id == id)).first()
        if row is None:
            raise InventoryError(
                f"No journal entry {id} is in the inventory at {self._where}; "
                "list the open operations and resume one of those."
            )
        return row

    @staticmethod
    def _row_to_journal(row: Row[Any]) -> JournalEntry:
        return JournalEntry(
            id=row.id,
            kind=row.kind,
            state=row.state,
            params=_json_dict(row.params),
            data=_json_dict(row.data),
            created_at=row.created_at,
            updated_at=row.updated_at,
            finished=bool(row.finished),
        )

    # -- audit log ----------------------------------------------------------------------

    def audit_append(self, action: str, details: Mapping[str, object]) -> AuditEntry:
        """Append an entry to the hash-chained audit log and return it.

        ``details`` must be JSON-serialisable and hold no secrets (ValueError otherwise).
        The new seq, the link to the previous hash and the head record in settings are all
        written in one transaction; if another writer took the same seq first, the primary
        key refuses ours and we start over from the new head.
        """
        check_no_secrets(details, "audit details")
        # Round-trip through JSON so the hash covers exactly what is stored (tuples become
        # lists, keys become strings) and verification later recomputes the same value.
        details_json = canonical_json(dict(details))
        stored_details = _json_dict(details_json)
        for attempt in range(_AUDIT_RETRIES):
            try:
                with self._tx("write to", write=True) as conn:
                    last = conn.execute(
                        select(audit.c.seq, audit.c.hash).order_by(audit.c.seq.desc()).limit(1)
                    ).first()
                    seq = 1 if last is None else last.seq + 1
                    prev_hash = GENESIS_HASH if last is None else last.hash
                    at = _now()
                    digest = audit_hash(seq, at, action, stored_details, prev_hash)
                    conn.execute(
                        insert(audit).values(
                            seq=seq,
                            at=at,
                            action=action,
                            details=details_json,
                            prev_hash=prev_hash,
                            hash=digest,
                        )
                    )
                    # The chain proves nothing about entries cut off its end, so the head
                    # (count and last hash) is kept beside it and checked by audit_verify.
                    self._put_setting(
                        conn, _AUDIT_HEAD_KEY, canonical_json({"seq": seq, "hash": digest})
                    )
                return AuditEntry(seq, at, action, stored_details, prev_hash, digest)
            except InventoryError as e:
                if isinstance(e.__cause__, sa_exc.IntegrityError) and attempt + 1 < _AUDIT_RETRIES:
                    continue
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def audit_entries(self) -> list[AuditEntry]:
        """Every audit entry in seq order."""
        with self._tx("read", write=False) as conn:
            rows = conn.execute(select(audit).order_by(audit.c.seq)).all()
        return [
            AuditEntry(
                seq=row.seq,
                at=row.at,
                action=row.action,
                details=_json_dict(row.details),
                prev_hash=row.prev_hash,
                hash=row.hash,
            )
            for row in rows
        ]

    def audit_verify(self) -> int:
        """Check the whole chain and return how many entries were verified.

        Raises InventoryError naming the first bad seq when an entry was altered, removed
        (from the middle or the end) or reordered. Someone who can write the database can
        also rewrite the whole chain and its head; this detects edits, not a full rewrite,
        unless the head hash is also kept somewhere else (a CRL, a log, a ticket).
        """
        with self._tx("read", write=False) as conn:
            rows = conn.execute(select(audit).order_by(audit.c.seq)).all()
            head_text = conn.execute(
                select(settings.c.value).where(settings.c.key == _AUDIT_HEAD_KEY)
            ).scalar_one_or_none()
        prefix = f"The audit log in the inventory at {self._where} is damaged: "
        prev_hash = GENESIS_HASH
        for expected, row in enumerate(rows, start=1):
            if row.seq != expected:
                raise InventoryError(
                    prefix + f"audit log entry {expected} was removed; "
                    "restore the inventory from a backup and investigate."
                )
            details = _json_dict(row.details)
            if audit_hash(row.seq, row.at, row.action, details, row.prev_hash) != row.hash:
                raise InventoryError(
                    prefix + f"audit log entry {row.seq} was altered; "
                    "restore the inventory from a backup and investigate."
                )
            if row.prev_hash != prev_hash:
                raise InventoryError(
                    prefix + f"audit log entry {row.seq} does not follow entry {row.seq - 1} "
                    "(entries were reordered or replaced); "
                    "restore the inventory from a backup and investigate."
                )
            prev_hash = row.hash
        count = len(rows)
        if head_text is None:
            if count:
                raise InventoryError(
                    prefix + "the audit log head record was removed; "
                    "restore the inventory from a backup and investigate."
                )
            return 0
        head = _json_dict(head_text)
        head_seq, head_hash = head.get("seq"), head.get("hash")
        if not isinstance(head_seq, int) or head_seq > count:
            first_missing = count + 1
            raise InventoryError(
                prefix + f"audit log entry {first_missing} was removed (the log ends early); "
                "restore the inventory from a backup and investigate."
            )
        if head_seq < count:
            raise InventoryError(
                prefix + f"audit log entry {head_seq + 1} was added behind tokenissue's back; "
                "restore the inventory from a backup and investigate."
            )
        if head_hash != prev_hash:
            raise InventoryError(
                prefix + f"audit log entry {count} was altered (it does not match the head); "
                "restore the inventory from a backup and investigate."
            )
        return count

    # -- settings -----------------------------------------------------------------------

    def get_setting(self, key: str) -> str | None:
        """The value stored under ``key``, or None."""
        with self._tx("read", write=False) as conn:
            value = conn.execute(
                select(settings.c.value).where(settings.c.key == key)
            ).scalar_one_or_none()
        return None if value is None else str(value)

    def set_setting(self, key: str, value: str) -> None:
        """Store ``value`` under ``key``, replacing any previous value.

        Keys starting with ``inventory.`` are the inventory's own and are refused
        (ValueError), so that nobody overwrites the audit head by accident.
        """
        if key.startswith(_RESERVED_PREFIX):
            raise ValueError(f"setting keys starting with {_RESERVED_PREFIX!r} are reserved")
        with self._tx("write to", write=True) as conn:
            self._put_setting(conn, key, value)

    @staticmethod
    def _put_setting(conn: Connection, key: str, value: str) -> None:
        # UPDATE-then-INSERT is the portable upsert: SQLite and PostgreSQL spell
        # ON CONFLICT alike, but SQLAlchemy exposes it only per dialect.
        result = conn.execute(update(settings).where(settings.c.key == key).values(value=value))
        if result.rowcount == 0:
            conn.execute(insert(settings).values(key=key, value=value))

    # -- introspection for tests and diagnostics ----------------------------------------

    def certificate_count(self) -> int:
        """How many certificates are recorded."""
        with self._tx("read", write=False) as conn:
            return int(conn.execute(select(func.count()).select_from(certificates)).scalar_one())
