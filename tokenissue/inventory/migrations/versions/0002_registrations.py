"""Registrations (RA reference numbers for out-of-band identity checks) and CMP transactions.

Revision ID: 0002
Revises: 0001
Create Date: 2025-02-01

Written by hand with Core operations only, so it runs unchanged on SQLite and PostgreSQL.
Only new tables: existing rows are not touched.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from tokenissue.inventory._types import UTCDateTime

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "registrations",
        sa.Column("ref", sa.String(32), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("profile", sa.String(128), nullable=False),
        sa.Column("nonce", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("max_failures", sa.Integer(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("used_at", UTCDateTime(), nullable=True),
        sa.Column("serial", sa.String(64), nullable=True),
        sa.Column("san", sa.Text(), nullable=False),
        sa.Column("reserved_tid", sa.String(128), nullable=True),
        sa.PrimaryKeyConstraint("ref", name="pk_registrations"),
    )
    op.create_index("ix_registrations_status", "registrations", ["status"])

    op.create_table(
        "cmp_transactions",
        sa.Column("transaction_id", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("ref", sa.String(32), nullable=True),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("sender_nonce", sa.String(128), nullable=False),
        sa.Column("our_nonce", sa.String(128), nullable=False),
        sa.Column("serial", sa.String(64), nullable=True),
        sa.Column("pbm", sa.Boolean(create_constraint=False), nullable=False),
        sa.Column("signer", sa.String(64), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("transaction_id", name="pk_cmp_transactions"),
    )
    op.create_index("ix_cmp_transactions_ref", "cmp_transactions", ["ref"])


def downgrade() -> None:
    op.drop_index("ix_cmp_transactions_ref", table_name="cmp_transactions")
    op.drop_table("cmp_transactions")
    op.drop_index("ix_registrations_status", table_name="registrations")
    op.drop_table("registrations")
