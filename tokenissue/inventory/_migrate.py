"""Run the Alembic migrations from code: no alembic.ini is needed at run time.

The migration scripts ship as package data in ``migrations/`` next to this file.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import Connection

__all__ = ["MIGRATIONS_DIR", "upgrade_to_head"]

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


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
