"""Reaching the inventory's database behind its back, on SQLite or PostgreSQL alike."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def sa_url(db_url: str) -> str:
    """The SQLAlchemy URL for a db_url, to reach the database behind the inventory's back."""
    if "://" not in db_url:
        return f"sqlite:///{db_url}"
    return db_url.replace("postgresql://", "postgresql+psycopg://", 1)


def raw(db_url: str, sql: str, params: Mapping[str, object] | None = None) -> list[tuple[Any, ...]]:
    """Run SQL (``:name`` parameters) behind the inventory's back, as an attacker or a broken
    tool would, on either backend."""
    from sqlalchemy import create_engine, text

    engine = create_engine(sa_url(db_url))
    try:
        with engine.begin() as conn:
            result = conn.execute(text(sql), dict(params or {}))
            return [tuple(r) for r in result.fetchall()] if result.returns_rows else []
    finally:
        engine.dispose()


def schema_snapshot(db_url: str) -> dict[str, object]:
    """Tables, columns, keys and indexes as the database reports them, to compare two states."""
    from sqlalchemy import create_engine, inspect

    engine = create_engine(sa_url(db_url))
    try:
        with engine.connect() as conn:
            insp = inspect(conn)
            return {
                table: (
                    [(c["name"], str(c["type"]), c["nullable"]) for c in insp.get_columns(table)],
                    insp.get_pk_constraint(table),
                    sorted(insp.get_indexes(table), key=lambda i: str(i["name"])),
                    sorted(insp.get_unique_constraints(table), key=lambda u: str(u["name"])),
                )
                for table in sorted(insp.get_table_names())
            }
    finally:
        engine.dispose()
