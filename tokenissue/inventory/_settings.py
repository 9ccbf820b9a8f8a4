"""The settings table: small named values (the CA's name, the RA's key id, ...)."""

from __future__ import annotations

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection

from ..errors import InventoryError
from ._engine import Database
from ._schema import settings

__all__ = ["RESERVED_PREFIX", "SettingStore", "put_setting"]

#: Settings under this prefix are the inventory's own bookkeeping; set_setting refuses them.
RESERVED_PREFIX = "inventory."

_SETTING_UPDATE = update(settings).where(settings.c.key == bindparam("name")).values(value=bindparam("value"))
_SETTING_INSERT = insert(settings)


def put_setting(conn: Connection, key: str, value: str) -> None:
    """Store ``value`` under ``key`` inside the caller's transaction, reserved keys included."""
    # UPDATE-then-INSERT is the portable upsert: SQLite and PostgreSQL spell
    # ON CONFLICT alike, but SQLAlchemy exposes it only per dialect.
    result = conn.execute(_SETTING_UPDATE, {"name": key, "value": value})
    if result.rowcount == 0:
        conn.execute(_SETTING_INSERT, {"key": key, "value": value})


class SettingStore(Database):
    """Named string values, one transaction per call."""

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
        if key.startswith(RESERVED_PREFIX):
            raise ValueError(f"setting keys starting with {RESERVED_PREFIX!r} are reserved")
        try:
            with self._tx("write to", write=True) as conn:
                put_setting(conn, key, value)
        except InventoryError as e:
            # On PostgreSQL two writers of a new key can both find no row to update and both
            # insert; the loser's insert fails, and now the row exists, so its update wins.
            if not isinstance(e.__cause__, sa_exc.IntegrityError):
                raise
            with self._tx("write to", write=True) as conn:
                put_setting(conn, key, value)

    def setting_default(self, key: str, value: str) -> str:
        """Store ``value`` under ``key`` unless a value is there already; return the stored one.

        Of concurrent callers (processes, replicas) with different values, exactly one value
        is kept and every caller gets that one back.
        """
        if key.startswith(RESERVED_PREFIX):
            raise ValueError(f"setting keys starting with {RESERVED_PREFIX!r} are reserved")
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

