"""Requests that wait for an officer's approval (issue 14: SCEP PENDING).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-08

A profile with ``approval = true`` keeps a request authorized by a registration's code in
``pending_requests`` until ``ca approve`` or ``ca reject``; the client's poll (SCEP CertPoll)
then gets the certificate or the refusal. The registration stays reserved for the request
meanwhile, so its code cannot be used twice. The row keeps what issuing needs (the public key,
the SANs asked for, the reservation ID), never the CSR: its challengePassword is the code.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from tokenissue.inventory._types import UTCDateTime

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "pending_requests",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("protocol", sa.String(16), nullable=False),
        sa.Column("transaction_id", sa.String(128), nullable=False),
        sa.Column("ref", sa.String(32), nullable=False),
        sa.Column("public_key", sa.LargeBinary(), nullable=False),
        sa.Column("sans", sa.LargeBinary(), nullable=False),
        sa.Column("reservation", sa.String(64), nullable=False),
        sa.Column("requester", sa.LargeBinary(), nullable=False),
        sa.Column("cipher", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("decided_at", UTCDateTime(), nullable=True),
        sa.Column("decided_by", sa.Text(), nullable=True),
        sa.Column("serial", sa.String(64), nullable=True),
    )
    op.create_index("ix_pending_requests_transaction", "pending_requests", ["protocol", "transaction_id"])
    op.create_index("ix_pending_requests_status", "pending_requests", ["status"])


def downgrade() -> None:
    op.drop_index("ix_pending_requests_status", table_name="pending_requests")
    op.drop_index("ix_pending_requests_transaction", table_name="pending_requests")
    op.drop_table("pending_requests")
