"""Opening the inventory's database: the location, the engine and its SQLite set-up, the
migrations, and :class:`Database`, which every area of the store builds on.

Every public method of the store is one transaction (:meth:`Database._tx`); on SQLite a
writing transaction starts with ``BEGIN IMMEDIATE`` so concurrent writers queue on the busy
timeout instead of failing half-way with "database is locked" when a read lock cannot be
upgraded. Errors from SQLAlchemy leave as :class:`~tokenissue.errors.InventoryError`
(exit status 7).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self

from sqlalchemy import create_engine, event, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, Connection, Engine, make_url

from ..errors import InventoryError
from ._errors import translate

__all__ = ["MIGRATE_LOCK_KEY", "Database"]

# How long a SQLite writer waits for another one before giving up. Issuing a certificate
# holds the lock for milliseconds; the generous wait covers a slow disk or a long migration.
_BUSY_TIMEOUT_MS = 30_000
_WRITE_OPTION = "tokenissue_write"
#: The PostgreSQL advisory lock that serialises migrations (any fixed 64-bit number will do).
MIGRATE_LOCK_KEY = 0x746F6B656E697373  # "tokeniss"


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

    An existing file is checked and tightened by its path, never opened: closing any descriptor
    of the database file drops every POSIX lock this process holds on it, those of SQLite
    connections already open here included (sqlite.org/howtocorrupt.html §2.2). Another process
    then takes the database for unused, checkpoints and removes the WAL, and what the
    connections here write next is seen by no one else.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            path.chmod(0o600)
        return
    os.close(fd)  # a new file: no connection can have it open yet


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


class Database:
    """One SQLAlchemy engine at one location, at the newest schema, and its transactions.

    Each area of the store (certificates, journal, audit log, ...) is a subclass that adds its
    methods; :class:`~tokenissue.inventory.Inventory` is all of them over one database.
    """

    def __init__(self, engine: Engine, where: str, path: Path | None = None) -> None:
        """Wrap an engine whose schema is already at head; use :meth:`open` instead."""
        self._engine = engine
        self._where = where
        self._path = path

    @classmethod
    def open(cls, url_or_path: str | os.PathLike[str]) -> Self:
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
                opened = cls(engine, where, path)
                opened._migrate()
                return opened
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
                    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATE_LOCK_KEY})
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

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def ping(self) -> None:
        """Reach the database (one trivial query); raises InventoryUnavailable when it cannot.

        The CA server's readiness check: a replica whose database is down answers 503.
        """
        with self._tx("reach", write=False) as conn:
            conn.execute(text("SELECT 1"))

    @contextmanager
    def _tx(self, doing: str, *, write: bool) -> Iterator[Connection]:
        """One transaction; SQLAlchemy errors inside become InventoryError."""
        with translate(doing, self._where), self._engine.connect() as conn:
            if write:
                conn.execution_options(**{_WRITE_OPTION: True})
            with conn.begin():
                yield conn

