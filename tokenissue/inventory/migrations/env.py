"""Alembic environment for the tokenissue inventory.

It only runs "online" with the connection that :func:`tokenissue.inventory._migrate.upgrade_to_head`
passes in ``config.attributes``: the inventory never hands Alembic a URL, so there is no
second engine, no second set of SQLite pragmas and no alembic.ini.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from tokenissue.inventory._schema import metadata

connection = context.config.attributes.get("connection")
if not isinstance(connection, Connection):
    raise RuntimeError(
        "The tokenissue inventory migrations run only through Inventory.open, "
        "which passes a connection."
    )

context.configure(
    connection=connection,
    target_metadata=metadata,
    # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
