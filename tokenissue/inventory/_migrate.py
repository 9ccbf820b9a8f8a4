"""Run the Alembic migrations from code: no alembic.ini is needed at run time.

The migration scripts ship as package data in ``migrations/`` next to this file.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import Connection

__all__ = ["HEAD_REVISION", "MIGRATIONS_DIR", "at_head", "upgrade_to_head"]

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

#: The newest migration's revision. Bump it with every new migration script; a test checks
#: that it equals Alembic's head, so forgetting fails the suite, not a user's database.
HEAD_REVISION = "0005"


def at_head(conn: Connection) -> bool:
    """True when the schema is already at :data:`HEAD_REVISION`.

    Importing Alembic costs more than everything else a CLI command does (~0.3 s here), and an
    inventory is nearly always already migrated, so this one SELECT spares it.
    """
    from sqlalchemy import inspect, text

    # Ask first rather than catch the error: on PostgreSQL a failed statement would poison
    # the surrounding transaction.
    if not inspect(conn).has_table("alembic_version"):
        return False  # a new database
    rows = conn.execute(text("SELECT version_num FROM alembic_version")).fetchall()
    return [r[0] for r in rows] == [HEAD_REVISION]


def upgrade_to_head(conn: Connection) -> None:
    """Bring the schema on ``conn`` to the newest revision, inside the caller's transaction.

    The caller owns the transaction: on SQLite it is ``BEGIN IMMEDIATE``, so two processes
    opening a new inventory at once run the migrations one after the other, and the second
    finds nothing to do. A database already at head costs one SELECT.
    """
    # Alembic is imported here, not at module level, because it is slow to import and only
    # Inventory.open needs it.
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["connection"] = conn
    command.upgrade(cfg, "head")
