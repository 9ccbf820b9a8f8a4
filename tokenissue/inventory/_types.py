"""Column types that behave the same on SQLite and PostgreSQL.

The migrations import this module, so a change here changes what old migrations create:
only ever add types, never change how an existing one stores its values.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, String
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine

__all__ = ["UTCDateTime", "utc"]


def utc(value: datetime, name: str = "datetime") -> datetime:
    """Return ``value`` in UTC; refuse a naive datetime.

    A naive datetime would be read as local time by one layer and as UTC by another, which is
    how certificates end up an hour early or late, so the inventory refuses them outright.
    """
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware (use datetime.now(UTC))")
    return value.astimezone(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend.

    PostgreSQL stores it as ``TIMESTAMP WITH TIME ZONE``. SQLite has no datetime type and
    SQLAlchemy's emulation drops the offset, so there it is a fixed-width ISO 8601 string
    (``YYYY-MM-DDTHH:MM:SS.ffffffZ``): fixed width keeps text order equal to time order, so
    ``<`` and ``ORDER BY`` work in SQL. Values read back are always aware and in UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(32))
        return dialect.type_descriptor(DateTime(timezone=True))

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        value = utc(value)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        parsed: datetime = datetime.fromisoformat(value) if isinstance(value, str) else value
        if parsed.tzinfo is None:
            # Only a row written by something other than this type can be naive; the
            # inventory never writes one, and UTC is the only reading it could have meant.
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.astimezone(UTC)
