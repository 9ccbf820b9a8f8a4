"""What a Korean registration desk records (issue 13).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07

registrations gains:

- ``id_hash``: a keyed hash (HMAC-SHA256 under the RA key) of the holder's registration
  number, so the CA can check the number the holder gives at enrollment against the one the
  officer checked, without the number itself ever being stored;
- ``real_name``: the holder's name as the certificate's identifyData realName carries it;
- ``verified_by``: how the officer verified the identity (a branch visit with an ID card, a
  phone call, ...);
- ``terms_version``: the version of the terms the holder accepted;
- ``reissue_of``: the serial (hex) of the certificate a re-issue replaces.

Every column is nullable: registrations made before this revision have none of them.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None

_COLUMNS = (
    ("id_hash", sa.String(64)),
    ("real_name", sa.Text()),
    ("verified_by", sa.Text()),
    ("terms_version", sa.String(64)),
    ("reissue_of", sa.String(64)),
)


def upgrade() -> None:
    with op.batch_alter_table("registrations") as batch:
        for name, type_ in _COLUMNS:
            batch.add_column(sa.Column(name, type_, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("registrations") as batch:
        for name, _ in reversed(_COLUMNS):
            batch.drop_column(name)
