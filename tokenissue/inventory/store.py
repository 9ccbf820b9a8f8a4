"""The inventory store: certificates, the resumable journal, the audit log, settings, the
RA's registrations and the CMP server's transactions.

One :class:`Inventory` wraps one SQLAlchemy engine. Every public method is one transaction;
on SQLite a writing transaction starts with ``BEGIN IMMEDIATE`` so concurrent writers
queue on the busy timeout instead of failing half-way with "database is locked" when a
read lock cannot be upgraded. Errors from SQLAlchemy leave this module as
:class:`~tokenissue.errors.InventoryError` (exit status 7).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import stat
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import and_, bindparam, case, create_engine, event, func, insert, or_, select, text, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, Connection, Engine, Row, make_url
from sqlalchemy.sql.elements import ColumnElement

from ..errors import InventoryError, NotFound, TokenIssueError
from ..models import (
    AuditEntry,
    CertRecord,
    CertStatus,
    CMPTransaction,
    JournalEntry,
    Registration,
    RegistrationStatus,
    RevocationReason,
    TransactionKind,
    TransactionState,
)
from ..publickeys import certificate_spki
from ._audit import GENESIS_HASH, audit_hash, canonical_json, check_no_secrets
from ._errors import DuplicateRegistration, DuplicateRequest, DuplicateTransaction, translate
from ._schema import audit, certificates, cmp_transactions, counters, journal, registrations, settings
from ._types import utc

__all__ = ["Inventory"]

# How long a SQLite writer waits for another one before giving up. Issuing a certificate
# holds the lock for milliseconds; the generous wait covers a slow disk or a long migration.
_BUSY_TIMEOUT_MS = 30_000
# Two audit appends that both pick seq N: the loser retries. On SQLite BEGIN IMMEDIATE and on
# PostgreSQL an advisory lock (_AUDIT_LOCK_KEY) queue appenders, so this is only a backstop.
_AUDIT_RETRIES = 20
# Settings under this prefix are the inventory's own bookkeeping; set_setting refuses them.
_RESERVED_PREFIX = "inventory."
_AUDIT_HEAD_KEY = "inventory.audit_head"
_WRITE_OPTION = "tokenissue_write"
# A serial is a positive integer of at most 20 octets (RFC 5280); String(64) leaves room
# for the odd non-conforming certificate a holder may have enrolled elsewhere.
_MAX_SERIAL = 1 << 256
# Column widths (hex doubles the length): RFC 4210 recommends 128-bit transactionIDs and
# nonces; 64 bytes leaves room for clients that use more.
_MAX_CMP_OCTETS = 64
_MAX_REG_NONCE = 32
# The PostgreSQL advisory lock that serialises migrations (any fixed 64-bit number will do).
_MIGRATE_LOCK_KEY = 0x746F6B656E697373  # "tokeniss"
# The PostgreSQL advisory lock that queues audit appenders, held until their commit.
_AUDIT_LOCK_KEY = _MIGRATE_LOCK_KEY + 1
# How long exclusive() waits for another holder, and how often it looks. An enrollment holds
# its token's lock for milliseconds on SoftHSM, seconds for RSA on a smart card.
_EXCLUSIVE_WAIT_S = 300.0
_EXCLUSIVE_POLL_S = 0.02

# Statements on the paths every enrollment and issuance takes, built once: building a Core
# statement and its cache key costs more than running it on SQLite.
_JOURNAL_BY_ID = select(journal).where(journal.c.id == bindparam("key"))
_JOURNAL_FOR_UPDATE = _JOURNAL_BY_ID.with_for_update()
_JOURNAL_INSERT = insert(journal)
_JOURNAL_UPDATE = (
    update(journal)
    .where(journal.c.id == bindparam("key"))
    .values(state=bindparam("state"), data=bindparam("data"), updated_at=bindparam("updated_at"))
)
_JOURNAL_FINISH = (
    update(journal)
    .where(journal.c.id == bindparam("key"))
    .values(state=bindparam("state"), finished=True, updated_at=bindparam("updated_at"))
)
_CERT_INSERT = insert(certificates)
_CERT_BY_REQUEST = select(certificates).where(certificates.c.request_id == bindparam("request_id"))
_AUDIT_LAST = select(audit.c.seq, audit.c.hash).order_by(audit.c.seq.desc()).limit(1)
_AUDIT_INSERT = insert(audit)
_SETTING_UPDATE = update(settings).where(settings.c.key == bindparam("name")).values(value=bindparam("value"))
_SETTING_INSERT = insert(settings)
_JOURNAL_BY_PARAMS = (
    select(journal)
    .where(journal.c.kind == bindparam("kind"), journal.c.params == bindparam("params"))
    .order_by(journal.c.created_at, journal.c.id)
)
_CERT_BY_SERIAL = select(certificates).where(certificates.c.serial == bindparam("serial"))
_CERT_SERIAL = select(certificates.c.serial).where(certificates.c.serial == bindparam("serial"))


def _prepare_audit(details: Mapping[str, object]) -> tuple[str, dict[str, object]]:
    """Check and canonicalise audit details. They are round-tripped through JSON so the hash
    covers exactly what is stored (tuples become lists, keys strings) and verifying later
    recomputes the same value."""
    check_no_secrets(details, "audit details")
    details_json = canonical_json(dict(details))
    return details_json, _json_dict(details_json)


def _poll(attempt: Callable[[], bool], timeout: float, busy: TokenIssueError) -> None:
    """Call ``attempt`` until it returns True, for at most ``timeout`` seconds; then raise ``busy``."""
    deadline = time.monotonic() + timeout
    while not attempt():
        if time.monotonic() >= deadline:
            raise busy
        time.sleep(_EXCLUSIVE_POLL_S)


def _now() -> datetime:
    return datetime.now(UTC)


def _serial_hex(serial: int) -> str:
    if not isinstance(serial, int) or isinstance(serial, bool) or not 0 <= serial < _MAX_SERIAL:
        raise ValueError(f"certificate serial must be an integer in [0, 2**256), not {serial!r}")
    return format(serial, "x")


def _octets_hex(value: bytes, name: str, limit: int) -> str:
    if not isinstance(value, bytes | bytearray) or not 0 < len(value) <= limit:
        raise ValueError(f"{name} must be 1 to {limit} bytes")
    return bytes(value).hex()


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
    if url.drivername == "postgresql":
        # SQLAlchemy's default PostgreSQL driver is psycopg2; tokenissue depends on psycopg 3.
        return url.set(drivername="postgresql+psycopg"), None
    if url.get_backend_name() != "sqlite":
        return url, None
    database = url.database
    # An in-memory database and SQLite "file:" URIs have no plain file to secure.
    if not database or database == ":memory:" or database.startswith("file:"):
        return url, None
    path = Path(database).expanduser().absolute()
    return url.set(database=str(path)), path


def _engine_options(url: URL) -> dict[str, Any]:
    if url.get_backend_name() != "postgresql":
        return {}
    # A server restart or failover leaves dead connections in the pool: test each one before
    # use (pre-ping) rather than fail the next request, and give up connecting after a few
    # seconds so a CA server answers "unavailable" instead of hanging its clients.
    connect_args = {} if "connect_timeout" in url.query else {"connect_timeout": 5}
    return {"pool_pre_ping": True, "connect_args": connect_args}


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


def _set_wal(cursor: Any) -> None:
    """Switch the database file to WAL, once: the mode is kept in the file.

    Switching needs a moment of exclusive access, and SQLite answers "database is locked" at
    once, without its busy handler, when another connection is using the file meanwhile (four
    processes opening a brand-new inventory together hit this about 1 run in 15). So a file
    already in WAL is left alone, and the switch is retried for as long as the busy timeout.
    """
    import sqlite3
    import time

    deadline = time.monotonic() + _BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            mode = cursor.execute("PRAGMA journal_mode").fetchone()
            if mode and str(mode[0]).lower() == "wal":
                return
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)


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
            _set_wal(cursor)
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

    def __init__(self, engine: Engine, where: str, path: Path | None = None) -> None:
        """Wrap an engine whose schema is already at head; use :meth:`open` instead."""
        self._engine = engine
        self._where = where
        self._path = path

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
        # Without the password, and without the query, which may carry one (?password=...).
        where = str(path) if path is not None else url.set(query={}).render_as_string(hide_password=True)
        engine: Engine | None = None
        try:
            with translate("open", where):
                if path is not None:
                    _secure_file(path)
                try:
                    engine = create_engine(url, **_engine_options(url))
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
                inv = cls(engine, where, path)
                inv._migrate()
                return inv
        except BaseException:
            if engine is not None:
                engine.dispose()
            raise

    def _migrate(self) -> None:
        from ._migrate import at_head, upgrade_to_head

        with self._tx("check the schema version of", write=False) as conn:
            if at_head(conn):
                return
        from alembic.util import CommandError

        try:
            with self._tx("migrate", write=True) as conn:
                if conn.dialect.name == "postgresql":
                    # SQLite serialises migrators with BEGIN IMMEDIATE; PostgreSQL needs a lock,
                    # or two processes opening a new database both run CREATE TABLE and one
                    # fails. Alembic reads the version after the lock, so the second does nothing.
                    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATE_LOCK_KEY})
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
    def exclusive(self, name: str, *, busy: TokenIssueError, timeout: float = _EXCLUSIVE_WAIT_S) -> Iterator[None]:
        """Hold the lock ``name`` for the block, against every process that uses this inventory.

        Two processes that must not work on the same thing at once (two runs of one batch, a
        cron sweep overlapping the last one, both enrolling on one token) take the same name.
        SQLite: an flock on a file beside the database (released by the kernel when a process
        dies); PostgreSQL: a session advisory lock, on its own connection. A holder that does
        not let go within ``timeout`` seconds makes this raise ``busy``.
        """
        digest = hashlib.sha256(name.encode()).digest()
        if self._engine.dialect.name == "postgresql":
            key = int.from_bytes(digest[:8], "big", signed=True)
            with translate("lock", self._where):
                conn = self._engine.connect()
            try:
                with translate("lock", self._where):
                    _poll(lambda: bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar()), timeout, busy)
                    conn.commit()
                # Errors of the block are the block's: only taking and giving back the lock are
                # translated as the lock's.
                yield
                try:
                    conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                    conn.commit()
                except sa_exc.SQLAlchemyError:
                    conn.invalidate()  # the session ends, and its advisory locks with it
            except BaseException:
                # Not back to the pool with the lock still held: end the session instead.
                with suppress(sa_exc.SQLAlchemyError):
                    conn.invalidate()
                raise
            finally:
                conn.close()
            return
        if self._path is None:
            yield  # an in-memory database: one process only
            return
        locks = self._path.with_name(self._path.name + ".locks")
        locks.mkdir(mode=0o700, exist_ok=True)
        fd = os.open(locks / digest.hex()[:32], os.O_RDWR | os.O_CREAT, 0o600)
        try:

            def take() -> bool:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return False
                return True

            _poll(take, timeout, busy)
            yield
        finally:
            os.close(fd)  # releases the lock

    @contextmanager
    def _tx(self, doing: str, *, write: bool) -> Iterator[Connection]:
        """One transaction; SQLAlchemy errors inside become InventoryError."""
        with translate(doing, self._where), self._engine.connect() as conn:
            if write:
                conn.execution_options(**{_WRITE_OPTION: True})
            with conn.begin():
                yield conn

    # -- certificates -------------------------------------------------------------------

    def add_certificate(self, rec: CertRecord, *, audit: tuple[str, Mapping[str, object]] | None = None) -> None:
        """Record an issued (or enrolled) certificate, and with ``audit`` (action, details) its
        audit entry in the same transaction: an issuance is never on record without it.

        Raises InventoryError if the serial is already recorded, and DuplicateRequest if a
        certificate for ``rec.request_id`` is: the caller should then return that one.
        """
        row = self._cert_to_row(rec)
        prepared = _prepare_audit(audit[1]) if audit else None
        for attempt in range(_AUDIT_RETRIES):
            try:
                with self._tx("write to", write=True) as conn:
                    conn.execute(_CERT_INSERT, row)
                    if audit is not None and prepared is not None:
                        self._append_audit(conn, audit[0], prepared)
                return
            except InventoryError as e:
                if not isinstance(e.__cause__, sa_exc.IntegrityError):
                    raise
                self._explain_duplicate(rec, e)
                if attempt + 1 == _AUDIT_RETRIES:
                    raise
                # Neither the serial nor the request: another writer took the audit seq.

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
        key = _serial_hex(serial)
        with self._tx("read", write=False) as conn:
            row = conn.execute(_CERT_BY_SERIAL, {"serial": key}).first()
        return None if row is None else self._row_to_cert(row)

    def find_by_request(self, request_id: str) -> CertRecord | None:
        """The certificate issued for an enrollment request; the CA looks here first."""
        with self._tx("read", write=False) as conn:
            row = conn.execute(_CERT_BY_REQUEST, {"request_id": request_id}).first()
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
        and time: a revocation is a fact on a published CRL and is never rewritten.
        Raises NotFound for an unknown serial.
        """
        key = _serial_hex(serial)
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
            if audit is not None:
                self._append_audit(conn, audit[0], _prepare_audit(audit[1]))
            row = conn.execute(select(certificates).where(certificates.c.serial == key)).one()
        return self._row_to_cert(row)

    def same_key(self, serial: int, at: datetime) -> list[CertRecord]:
        """The other certificates of the public key certified by ``serial``, from its issuer,
        that are neither revoked nor expired at ``at``: what a key compromise also revokes.

        Oldest ``not_before`` first; empty for an unknown serial or a certificate that does
        not parse. See :meth:`revoke_key`.
        """
        at = utc(at, "at")
        with self._tx("read", write=False) as conn:
            row = conn.execute(_CERT_BY_SERIAL, {"serial": _serial_hex(serial)}).first()
            if row is None:
                return []
            return [self._row_to_cert(r) for r in self._same_key_rows(conn, row, at, lock=False)]

    def revoke_key(
        self,
        serial: int,
        reason: RevocationReason,
        at: datetime,
        *,
        audit: Callable[[CertRecord], tuple[str, Mapping[str, object]]] | None = None,
    ) -> list[CertRecord]:
        """Revoke the certificate ``serial`` and, in the same transaction, every other one of
        its public key from its issuer that is neither revoked nor expired at ``at``.

        A key compromise puts the key out of its holder's hands, so every certificate that
        vouches for it must go, not only the one named: a same-key renewal leaves its
        predecessor valid until it expires. Returns the certificate ``serial`` (unchanged if it
        was revoked before, as :meth:`revoke` does) followed by the others it revoked, oldest
        first. ``audit(record)`` gives the (action, details) of each revocation's audit entry;
        a certificate revoked before gets none. Raises NotFound for an unknown serial.
        """
        at = utc(at, "at")
        with self._tx("write to", write=True) as conn:
            row = conn.execute(_CERT_BY_SERIAL.with_for_update(), {"serial": _serial_hex(serial)}).first()
            if row is None:
                raise NotFound(
                    f"No certificate with serial {serial:#x} is in the inventory; "
                    "check the serial with 'tokenissue cert list'."
                )
            rows = [row] if row.status == CertStatus.REVOKED.value else []
            todo = ([] if rows else [row]) + self._same_key_rows(conn, row, at, lock=True)
            if todo:
                conn.execute(
                    update(certificates)
                    .where(certificates.c.serial.in_([r.serial for r in todo]))
                    .values(status=CertStatus.REVOKED.value, revoked_at=at, revocation_reason=reason.value)
                )
            for r in todo:
                done = conn.execute(_CERT_BY_SERIAL, {"serial": r.serial}).one()
                rows.append(done)
                if audit is not None:
                    action, details = audit(self._row_to_cert(done))
                    self._append_audit(conn, action, _prepare_audit(details))
        return [self._row_to_cert(r) for r in rows]

    @staticmethod
    def _same_key_rows(conn: Connection, row: Row[Any], at: datetime, *, lock: bool) -> list[Row[Any]]:
        """Valid, unexpired certificates other than ``row`` with its issuer and public key.

        There is no column for the key: the DER of each valid, unexpired certificate from the
        issuer is searched for the SubjectPublicKeyInfo's bytes (a certificate holds them
        verbatim), and a match is confirmed by parsing. Key compromises are rare, and that
        costs microseconds per certificate, so no index (and no migration) is needed.
        """
        spki = certificate_spki(bytes(row.der))
        if spki is None:
            return []
        query = select(certificates).where(
            certificates.c.status == CertStatus.VALID.value,
            certificates.c.issuer == row.issuer,
            certificates.c.not_after > at,
            certificates.c.serial != row.serial,
        ).order_by(certificates.c.not_before, certificates.c.serial)
        if lock:
            query = query.with_for_update()
        return [r for r in conn.execute(query).all() if spki in bytes(r.der) and certificate_spki(bytes(r.der)) == spki]

    def serial_exists(self, serial: int) -> bool:
        """Whether a certificate with this serial is recorded (the CA's reuse check)."""
        key = _serial_hex(serial)
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
        self,
        kind: str,
        params: Mapping[str, object],
        *,
        id: str | None = None,
        data: Mapping[str, object] | None = None,
    ) -> JournalEntry:
        """Record the start of a multi-step operation so it can be resumed after a crash.

        ``params`` (and the optional first ``data``) must be JSON-serialisable and hold no
        secrets (ValueError otherwise).
        """
        check_no_secrets(params, "journal params")
        check_no_secrets(data or {}, "journal data")
        entry_id = id if id is not None else uuid.uuid4().hex
        now = _now()
        params_json = canonical_json(dict(params))
        data_json = canonical_json(dict(data or {}))
        with self._tx("write to", write=True) as conn:
            conn.execute(
                _JOURNAL_INSERT,
                {
                    "id": entry_id, "kind": kind, "state": "started", "params": params_json, "data": data_json,
                    "created_at": now, "updated_at": now, "finished": False,
                },
            )  # fmt: skip
        return JournalEntry(
            id=entry_id, kind=kind, state="started", params=_json_dict(params_json), data=_json_dict(data_json),
            created_at=now, updated_at=now, finished=False,
        )  # fmt: skip

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
            data_json = canonical_json(merged)
            now = _now()
            conn.execute(_JOURNAL_UPDATE, {"key": id, "state": state, "data": data_json, "updated_at": now})
        return replace(self._row_to_journal(row), state=state, data=_json_dict(data_json), updated_at=now)

    def journal_get(self, id: str) -> JournalEntry | None:
        """The journal entry with this id, or None."""
        with self._tx("read", write=False) as conn:
            row = conn.execute(_JOURNAL_BY_ID, {"key": id}).first()
        return None if row is None else self._row_to_journal(row)

    def journal_open(self, kind: str | None = None, *, params: Mapping[str, object] | None = None) -> list[JournalEntry]:
        """Unfinished operations, oldest first: what a restart should offer to resume.

        With ``params``, only those started with exactly these parameters (compared as
        canonical JSON in the database, so a long journal is not decoded entry by entry).
        """
        query = (
            select(journal)
            .where(journal.c.finished.is_(False))
            .order_by(journal.c.created_at, journal.c.id)
        )
        if kind is not None:
            query = query.where(journal.c.kind == kind)
        if params is not None:
            query = query.where(journal.c.params == canonical_json(dict(params)))
        with self._tx("read", write=False) as conn:
            rows = conn.execute(query).all()
        return [self._row_to_journal(row) for row in rows]

    def journal_by_params(self, kind: str, params: Mapping[str, object]) -> list[JournalEntry]:
        """Every entry of ``kind`` started with exactly these parameters, open or finished,
        oldest first (compared as canonical JSON in the database, in one read)."""
        values = {"kind": kind, "params": canonical_json(dict(params))}
        with self._tx("read", write=False) as conn:
            rows = conn.execute(_JOURNAL_BY_PARAMS, values).all()
        return [self._row_to_journal(row) for row in rows]

    def journal_finish(self, id: str, state: str = "done", *, record: CertRecord | None = None) -> JournalEntry:
        """Close an operation. Finishing a finished entry returns it unchanged.

        With ``record``, the certificate the operation produced is recorded (unless its
        serial already is) in the same transaction: an enrollment is never finished without
        its record, nor recorded and still open.
        """
        cert_row = None if record is None else self._cert_to_row(record)
        with self._tx("write to", write=True) as conn:
            row = self._journal_row_for_write(conn, id)
            entry = self._row_to_journal(row)
            if row.finished:
                return entry
            if cert_row is not None and conn.execute(_CERT_SERIAL, {"serial": cert_row["serial"]}).first() is None:
                conn.execute(_CERT_INSERT, cert_row)
            now = _now()
            conn.execute(_JOURNAL_FINISH, {"key": id, "state": state, "updated_at": now})
        return replace(entry, state=state, finished=True, updated_at=now)

    def _journal_row_for_write(self, conn: Connection, id: str) -> Row[Any]:
        # Locked until commit on PostgreSQL, so concurrent journal_update calls merge their
        # data one after the other instead of the last one dropping the others' keys.
        row = conn.execute(_JOURNAL_FOR_UPDATE, {"key": id}).first()
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
        prepared = _prepare_audit(details)
        for attempt in range(_AUDIT_RETRIES):
            try:
                with self._tx("write to", write=True) as conn:
                    return self._append_audit(conn, action, prepared)
            except InventoryError as e:
                if isinstance(e.__cause__, sa_exc.IntegrityError) and attempt + 1 < _AUDIT_RETRIES:
                    continue
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _append_audit(self, conn: Connection, action: str, prepared: tuple[str, dict[str, object]]) -> AuditEntry:
        """Write one audit entry inside the caller's transaction."""
        details_json, stored_details = prepared
        if conn.dialect.name == "postgresql":
            # Under READ COMMITTED two appenders read the same head and one fails on the
            # primary key; retrying alone can starve a writer (the other keeps winning), so
            # appenders queue here. The audit entry is always the last write of its
            # transaction, so waiting here while holding other row locks cannot deadlock.
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _AUDIT_LOCK_KEY})
        last = conn.execute(_AUDIT_LAST).first()
        seq = 1 if last is None else last.seq + 1
        prev_hash = GENESIS_HASH if last is None else last.hash
        at = _now()
        digest = audit_hash(seq, at, action, stored_details, prev_hash)
        conn.execute(
            _AUDIT_INSERT,
            {"seq": seq, "at": at, "action": action, "details": details_json, "prev_hash": prev_hash, "hash": digest},
        )
        # The chain proves nothing about entries cut off its end, so the head (count and last
        # hash) is kept beside it and checked by audit_verify.
        self._put_setting(conn, _AUDIT_HEAD_KEY, canonical_json({"seq": seq, "hash": digest}))
        return AuditEntry(seq, at, action, stored_details, prev_hash, digest)

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
        try:
            with self._tx("write to", write=True) as conn:
                self._put_setting(conn, key, value)
        except InventoryError as e:
            # On PostgreSQL two writers of a new key can both find no row to update and both
            # insert; the loser's insert fails, and now the row exists, so its update wins.
            if not isinstance(e.__cause__, sa_exc.IntegrityError):
                raise
            with self._tx("write to", write=True) as conn:
                self._put_setting(conn, key, value)

    def setting_default(self, key: str, value: str) -> str:
        """Store ``value`` under ``key`` unless a value is there already; return the stored one.

        Of concurrent callers (processes, replicas) with different values, exactly one value
        is kept and every caller gets that one back.
        """
        if key.startswith(_RESERVED_PREFIX):
            raise ValueError(f"setting keys starting with {_RESERVED_PREFIX!r} are reserved")
        try:
            with self._tx("write to", write=True) as conn:
                found = conn.execute(select(settings.c.value).where(settings.c.key == key)).scalar_one_or_none()
                if found is not None:
                    return str(found)
                conn.execute(insert(settings).values(key=key, value=value))
                return value
        except InventoryError as e:
            if not isinstance(e.__cause__, sa_exc.IntegrityError):
                raise
        stored = self.get_setting(key)  # another writer inserted first: theirs stands
        assert stored is not None
        return stored

    def registration_count(self) -> int:
        """How many registrations exist, in any state."""
        with self._tx("read", write=False) as conn:
            return int(conn.execute(select(func.count()).select_from(registrations)).scalar_one())

    @staticmethod
    def _put_setting(conn: Connection, key: str, value: str) -> None:
        # UPDATE-then-INSERT is the portable upsert: SQLite and PostgreSQL spell
        # ON CONFLICT alike, but SQLAlchemy exposes it only per dialect.
        result = conn.execute(_SETTING_UPDATE, {"name": key, "value": value})
        if result.rowcount == 0:
            conn.execute(_SETTING_INSERT, {"key": key, "value": value})

    # -- registrations (RA) -------------------------------------------------------------
    #
    # Every state change is one conditional UPDATE: the database, not a process lock, decides
    # which of several concurrent requests (possibly on different server replicas) wins.

    def add_registration(self, reg: Registration) -> Registration:
        """Record a new registration and return it as stored.

        Raises DuplicateRegistration if ``reg.ref`` is taken (draw another reference).
        """
        if not reg.ref or len(reg.ref) > 32:
            raise ValueError("registration ref must be 1 to 32 characters")
        if reg.max_failures < 1 or reg.failures < 0:
            raise ValueError("registration failures must be >= 0 and max_failures >= 1")
        if not all(isinstance(item, str) for item in reg.san):
            raise ValueError("registration san must be a sequence of strings")
        row = {
            "ref": reg.ref,
            "subject": reg.subject,
            "profile": reg.profile,
            "nonce": _octets_hex(reg.nonce, "registration nonce", _MAX_REG_NONCE),
            "status": reg.status.value,
            "failures": reg.failures,
            "max_failures": reg.max_failures,
            "created_at": utc(reg.created_at, "created_at"),
            "expires_at": utc(reg.expires_at, "expires_at"),
            "used_at": None if reg.used_at is None else utc(reg.used_at, "used_at"),
            "serial": None if reg.serial is None else _serial_hex(reg.serial),
            "san": canonical_json(list(reg.san)),
            "reserved_tid": None
            if reg.reserved_tid is None
            else _octets_hex(reg.reserved_tid, "reserved transaction id", _MAX_CMP_OCTETS),
        }
        try:
            with self._tx("write to", write=True) as conn:
                conn.execute(insert(registrations).values(**row))
                stored = conn.execute(select(registrations).where(registrations.c.ref == reg.ref)).one()
        except InventoryError as e:
            # The primary key is the only constraint on the table.
            if isinstance(e.__cause__, sa_exc.IntegrityError):
                raise DuplicateRegistration(
                    f"Registration {reg.ref} already exists; register again with a new reference.",
                    ref=reg.ref,
                ) from e.__cause__
            raise
        return self._row_to_registration(stored)

    def get_registration(self, ref: str) -> Registration | None:
        """The registration with this reference, or None."""
        with self._tx("read", write=False) as conn:
            row = conn.execute(select(registrations).where(registrations.c.ref == ref)).first()
        return None if row is None else self._row_to_registration(row)

    def list_registrations(self, status: RegistrationStatus | None = None) -> list[Registration]:
        """Registrations, oldest first; only those in ``status`` when given.

        An expired registration keeps the status ``open``: expiry is a property of time,
        checked against ``expires_at`` (see :meth:`Registration.is_expired`).
        """
        query = select(registrations).order_by(registrations.c.created_at, registrations.c.ref)
        if status is not None:
            query = query.where(registrations.c.status == status.value)
        with self._tx("read", write=False) as conn:
            rows = conn.execute(query).all()
        return [self._row_to_registration(row) for row in rows]

    def registration_failed(self, ref: str) -> Registration:
        """Count one wrong code and return the registration afterwards.

        The increment and the lock are one UPDATE (SQL evaluates every SET expression against
        the row as it was), so concurrent failures are never lost and the registration locks
        on exactly the ``max_failures``-th. Only an open registration becomes locked: a used
        or cancelled one keeps its status. Raises NotFound for an unknown reference.
        """
        r = registrations.c
        with self._tx("write to", write=True) as conn:
            result = conn.execute(
                update(registrations)
                .where(r.ref == ref)
                .values(
                    failures=r.failures + 1,
                    status=case(
                        (
                            and_(
                                r.status == RegistrationStatus.OPEN.value,
                                r.failures + 1 >= r.max_failures,
                            ),
                            RegistrationStatus.LOCKED.value,
                        ),
                        else_=r.status,
                    ),
                )
            )
            if result.rowcount != 1:
                raise self._no_registration(ref)
            row = conn.execute(select(registrations).where(r.ref == ref)).one()
        return self._row_to_registration(row)

    def registration_reserve(self, ref: str, tid: bytes, now: datetime) -> bool:
        """Reserve an open, unexpired registration for CMP transaction ``tid``.

        True iff it is now reserved for ``tid`` (freshly, or again: the same transaction may
        retry). One conditional UPDATE, so of any number of concurrent transactions on any
        number of server replicas exactly one holds the registration; a certificate is issued
        only after this, and :meth:`registration_consume` then requires the same ``tid``.
        """
        key = _octets_hex(tid, "transaction id", _MAX_CMP_OCTETS)
        now = utc(now, "now")
        r = registrations.c
        with self._tx("write to", write=True) as conn:
            result = conn.execute(
                update(registrations)
                .where(
                    r.ref == ref,
                    r.status == RegistrationStatus.OPEN.value,
                    r.expires_at > now,
                    or_(r.reserved_tid.is_(None), r.reserved_tid == key),
                )
                .values(reserved_tid=key)
            )
            return result.rowcount == 1

    def registration_release(self, ref: str, tid: bytes) -> bool:
        """Drop ``tid``'s reservation of an open registration (after a definite refusal).

        True iff this call released it; a reservation held by another transaction, or a used
        registration, is left alone.
        """
        key = _octets_hex(tid, "transaction id", _MAX_CMP_OCTETS)
        r = registrations.c
        with self._tx("write to", write=True) as conn:
            result = conn.execute(
                update(registrations)
                .where(r.ref == ref, r.status == RegistrationStatus.OPEN.value, r.reserved_tid == key)
                .values(reserved_tid=None)
            )
            return result.rowcount == 1

    def registration_consume(self, ref: str, serial: int, now: datetime, tid: bytes | None = None) -> bool:
        """Mark a registration used by certificate ``serial``.

        With ``tid``: the registration must be open and reserved by that transaction (expiry
        was checked when it was reserved, before the certificate was issued). Without: it must
        be open, unexpired and not reserved by anyone. True iff this call changed it. The
        condition is in the UPDATE itself, so of any number of concurrent callers (threads,
        processes, replicas) at most one gets True: this is what makes a code good for one
        certificate only.
        """
        key = _serial_hex(serial)
        now = utc(now, "now")
        r = registrations.c
        if tid is None:
            condition = and_(r.expires_at > now, r.reserved_tid.is_(None))
        else:
            condition = r.reserved_tid == _octets_hex(tid, "transaction id", _MAX_CMP_OCTETS)
        with self._tx("write to", write=True) as conn:
            result = conn.execute(
                update(registrations)
                .where(r.ref == ref, r.status == RegistrationStatus.OPEN.value, condition)
                .values(status=RegistrationStatus.USED.value, used_at=now, serial=key)
            )
            return result.rowcount == 1

    def registration_cancel(self, ref: str) -> Registration:
        """Cancel an open or locked registration and return it.

        A used registration stays used (its certificate exists; revoke that instead), and
        cancelling a cancelled one changes nothing; both are returned as they are, so the
        caller can tell. Raises NotFound for an unknown reference.
        """
        r = registrations.c
        with self._tx("write to", write=True) as conn:
            conn.execute(
                update(registrations)
                .where(
                    r.ref == ref,
                    r.status.in_([RegistrationStatus.OPEN.value, RegistrationStatus.LOCKED.value]),
                )
                .values(status=RegistrationStatus.CANCELLED.value)
            )
            row = conn.execute(select(registrations).where(r.ref == ref)).first()
            if row is None:
                raise self._no_registration(ref)
        return self._row_to_registration(row)

    def _no_registration(self, ref: str) -> NotFound:
        return NotFound(
            f"No registration {ref} is in the inventory at {self._where}; "
            "check the reference with 'tokenissue ra list'."
        )

    @staticmethod
    def _row_to_registration(row: Row[Any]) -> Registration:
        san = json.loads(row.san)
        assert isinstance(san, list)
        return Registration(
            ref=row.ref,
            subject=row.subject,
            profile=row.profile,
            nonce=bytes.fromhex(row.nonce),
            created_at=row.created_at,
            expires_at=row.expires_at,
            status=RegistrationStatus(row.status),
            failures=int(row.failures),
            max_failures=int(row.max_failures),
            used_at=row.used_at,
            serial=None if row.serial is None else int(row.serial, 16),
            san=tuple(str(item) for item in san),
            reserved_tid=None if row.reserved_tid is None else bytes.fromhex(row.reserved_tid),
        )

    # -- CMP transactions ---------------------------------------------------------------

    def transaction_begin(
        self,
        tid: bytes,
        kind: TransactionKind,
        ref: str | None,
        sender_nonce: bytes,
        our_nonce: bytes,
        pbm: bool,
        *,
        state: TransactionState = TransactionState.WAITING_CONFIRM,
        signer: int | None = None,
    ) -> CMPTransaction:
        """Start CMP transaction ``tid`` and return it.

        Raises DuplicateTransaction if ``tid`` is already known: the primary key decides, so
        of two replicas receiving the same transactionID only one starts it.
        """
        key = _octets_hex(tid, "transaction id", _MAX_CMP_OCTETS)
        now = _now()
        values = {
            "transaction_id": key,
            "kind": TransactionKind(kind).value,
            "ref": ref,
            "state": TransactionState(state).value,
            "sender_nonce": _octets_hex(sender_nonce, "sender nonce", _MAX_CMP_OCTETS),
            "our_nonce": _octets_hex(our_nonce, "our nonce", _MAX_CMP_OCTETS),
            "serial": None,
            "pbm": bool(pbm),
            "signer": None if signer is None else _serial_hex(signer),
            "created_at": now,
            "updated_at": now,
        }
        try:
            with self._tx("write to", write=True) as conn:
                conn.execute(insert(cmp_transactions).values(**values))
                row = conn.execute(
                    select(cmp_transactions).where(cmp_transactions.c.transaction_id == key)
                ).one()
        except InventoryError as e:
            if isinstance(e.__cause__, sa_exc.IntegrityError):
                raise DuplicateTransaction(
                    f"CMP transaction {key} is already in use; start a new transaction with a "
                    "fresh transactionID.",
                    transaction_id=bytes(tid),
                ) from e.__cause__
            raise
        return self._row_to_transaction(row)

    def transaction_get(self, tid: bytes) -> CMPTransaction | None:
        """The CMP transaction ``tid``, or None."""
        key = _octets_hex(tid, "transaction id", _MAX_CMP_OCTETS)
        with self._tx("read", write=False) as conn:
            row = conn.execute(
                select(cmp_transactions).where(cmp_transactions.c.transaction_id == key)
            ).first()
        return None if row is None else self._row_to_transaction(row)

    def transaction_update(
        self,
        tid: bytes,
        *,
        state: TransactionState | None = None,
        sender_nonce: bytes | None = None,
        our_nonce: bytes | None = None,
        serial: int | None = None,
    ) -> CMPTransaction:
        """Change the given fields of transaction ``tid`` (and ``updated_at``) and return it.

        Raises NotFound for an unknown transaction.
        """
        key = _octets_hex(tid, "transaction id", _MAX_CMP_OCTETS)
        values: dict[str, object] = {"updated_at": _now()}
        if state is not None:
            values["state"] = TransactionState(state).value
        if sender_nonce is not None:
            values["sender_nonce"] = _octets_hex(sender_nonce, "sender nonce", _MAX_CMP_OCTETS)
        if our_nonce is not None:
            values["our_nonce"] = _octets_hex(our_nonce, "our nonce", _MAX_CMP_OCTETS)
        if serial is not None:
            values["serial"] = _serial_hex(serial)
        t = cmp_transactions.c
        with self._tx("write to", write=True) as conn:
            result = conn.execute(update(cmp_transactions).where(t.transaction_id == key).values(**values))
            if result.rowcount != 1:
                raise NotFound(
                    f"No CMP transaction {key} is in the inventory at {self._where}; "
                    "the client must start a new transaction."
                )
            row = conn.execute(select(cmp_transactions).where(t.transaction_id == key)).one()
        return self._row_to_transaction(row)

    @staticmethod
    def _row_to_transaction(row: Row[Any]) -> CMPTransaction:
        return CMPTransaction(
            transaction_id=bytes.fromhex(row.transaction_id),
            kind=TransactionKind(row.kind),
            state=TransactionState(row.state),
            sender_nonce=bytes.fromhex(row.sender_nonce),
            our_nonce=bytes.fromhex(row.our_nonce),
            pbm=bool(row.pbm),
            created_at=row.created_at,
            updated_at=row.updated_at,
            ref=row.ref,
            serial=None if row.serial is None else int(row.serial, 16),
            signer=None if row.signer is None else int(row.signer, 16),
        )

    # -- introspection for tests and diagnostics ----------------------------------------

    def ping(self) -> None:
        """Reach the database (one trivial query); raises InventoryUnavailable when it cannot."""
        with self._tx("reach", write=False) as conn:
            conn.execute(text("SELECT 1"))

    def certificate_count(self) -> int:
        """How many certificates are recorded."""
        with self._tx("read", write=False) as conn:
            return int(conn.execute(select(func.count()).select_from(certificates)).scalar_one())
