"""The inventory: tokenissue's database, and the only package that imports SQLAlchemy/Alembic.

It keeps the CA's record of what it issued and the holder's record of what it enrolled, the
RA's registrations, the CMP server's transactions, the journal that makes multi-step
operations resumable, a hash-chained audit log and a small settings table. SQLite is the default (a plain path opens one, created mode 0600); the
schema is portable to PostgreSQL. Migrations run on :meth:`Inventory.open`.

Errors: everything the database can raise leaves this package as
:class:`tokenissue.errors.InventoryError` (exit status 7), with :class:`DuplicateRequest`
for an enrollment request that already has a certificate, :class:`DuplicateRegistration`
for a registration reference already taken and :class:`DuplicateTransaction` for a CMP
transactionID already in use; unknown serials, registrations and transactions raise
:class:`tokenissue.errors.NotFound`; bad arguments (naive datetimes, secret-looking keys,
non-JSON data) raise ValueError.
"""

from __future__ import annotations

from ._audit import GENESIS_HASH, audit_hash, canonical_json
from ._errors import DuplicateRegistration, DuplicateRequest, DuplicateTransaction, InventoryUnavailable
from .store import Inventory

__all__ = [
    "GENESIS_HASH",
    "DuplicateRegistration",
    "DuplicateRequest",
    "DuplicateTransaction",
    "Inventory",
    "InventoryUnavailable",
    "audit_hash",
    "canonical_json",
]
