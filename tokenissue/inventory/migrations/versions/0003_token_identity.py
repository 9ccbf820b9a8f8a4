"""Token identities longer than a serial.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06

certificates.token_serial holds a token's identity: its serial, or, for modules whose serials do
not tell tokens apart (every tpm2-pkcs11 token has 0000000000000000), an RFC 7512 URI with the
label, manufacturer, model and serial, which is longer than 64 characters. SQLite does not
enforce VARCHAR lengths, so only PostgreSQL's column is widened. No row changes.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column("certificates", "token_serial", type_=sa.String(512), existing_nullable=True)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column("certificates", "token_serial", type_=sa.String(64), existing_nullable=True)
