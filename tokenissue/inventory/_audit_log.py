"""The audit log table: appending to the hash chain, reading it and verifying it.

The chain itself (hashes, canonical JSON, the secret guard) is in :mod:`._audit`; here it is
stored, with its head (count and last hash) kept in the settings so that entries cut off the
end are noticed too.
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import exc as sa_exc
from sqlalchemy import insert, select, text
from sqlalchemy.engine import Connection

from ..errors import InventoryError
from ..models import AuditEntry
from ._audit import GENESIS_HASH, audit_hash, canonical_json, check_no_secrets
from ._engine import MIGRATE_LOCK_KEY, Database
from ._schema import audit, settings
from ._settings import RESERVED_PREFIX, put_setting
from ._values import json_dict, utc_now

__all__ = ["AUDIT_RETRIES", "AuditStore", "Prepared", "append_audit", "prepare_audit"]

#: Two audit appends that both pick seq N: the loser retries. On SQLite BEGIN IMMEDIATE and on
#: PostgreSQL an advisory lock (_AUDIT_LOCK_KEY) queue appenders, so this is only a backstop.
AUDIT_RETRIES = 20
_AUDIT_HEAD_KEY = RESERVED_PREFIX + "audit_head"
# The PostgreSQL advisory lock that queues audit appenders, held until their commit.
_AUDIT_LOCK_KEY = MIGRATE_LOCK_KEY + 1

_AUDIT_LAST = select(audit.c.seq, audit.c.hash).order_by(audit.c.seq.desc()).limit(1)
_AUDIT_INSERT = insert(audit)

#: Audit details checked and canonicalised: their JSON text, and the value that text reads back as.
Prepared = tuple[str, dict[str, object]]


def prepare_audit(details: Mapping[str, object]) -> Prepared:
    """Check and canonicalise audit details. They are round-tripped through JSON so the hash
    covers exactly what is stored (tuples become lists, keys strings) and verifying later
    recomputes the same value."""
    check_no_secrets(details, "audit details")
    details_json = canonical_json(dict(details))
    return details_json, json_dict(details_json)


def append_audit(conn: Connection, action: str, prepared: Prepared) -> AuditEntry:
    """Write one audit entry inside the caller's transaction."""
    details_json, stored_details = prepared
    if conn.dialect.name == "postgresql":
        # Under READ COMMITTED two appenders read the same head and one fails on the
        # primary key; retrying alone can starve a writer (the other keeps winning), so
        # appenders queue here. The audit entry is always the last write of its
        # transaction, so waiting here while holding other row locks cannot deadlock.
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _AUDIT_LOCK_KEY})
    last = conn.execute(_AUDIT_LAST).first()
    seq = 1 if last is None else last.seq + 1
    prev_hash = GENESIS_HASH if last is None else last.hash
    at = utc_now()
    digest = audit_hash(seq, at, action, stored_details, prev_hash)
    conn.execute(
        _AUDIT_INSERT,
        {"seq": seq, "at": at, "action": action, "details": details_json, "prev_hash": prev_hash, "hash": digest},
    )
    # The chain proves nothing about entries cut off its end, so the head (count and last
    # hash) is kept beside it and checked by audit_verify.
    put_setting(conn, _AUDIT_HEAD_KEY, canonical_json({"seq": seq, "hash": digest}))
    return AuditEntry(seq, at, action, stored_details, prev_hash, digest)


class AuditStore(Database):
    """The hash-chained audit log."""

    def audit_append(self, action: str, details: Mapping[str, object]) -> AuditEntry:
        """Append an entry to the hash-chained audit log and return it.

        ``details`` must be JSON-serialisable and hold no secrets (ValueError otherwise).
        The new seq, the link to the previous hash and the head record in settings are all
        written in one transaction; if another writer took the same seq first, the primary
        key refuses ours and we start over from the new head.
        """
        prepared = prepare_audit(details)
        for attempt in range(AUDIT_RETRIES):
            try:
                with self._tx("write to", write=True) as conn:
                    return append_audit(conn, action, prepared)
            except InventoryError as e:
                if isinstance(e.__cause__, sa_exc.IntegrityError) and attempt + 1 < AUDIT_RETRIES:
                    continue
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def audit_entries(self) -> list[AuditEntry]:
        """Every audit entry in seq order."""
        with self._tx("read", write=False) as conn:
            rows = conn.execute(select(audit).order_by(audit.c.seq)).all()
        return [
            AuditEntry(
                seq=row.seq,
                at=row.at,
                action=row.action,
                details=json_dict(row.details),
                prev_hash=row.prev_hash,
                hash=row.hash,
            )
            for row in rows
        ]

    def audit_verify(self) -> int:
        """Check the whole chain and return how many entries were verified.

        Raises InventoryError naming the first bad seq when an entry was altered, removed
        (from the middle or the end) or reordered. Someone who can write the database can
        also rewrite the whole chain and its head; this detects edits, not a full rewrite,
        unless the head hash is also kept somewhere else (a CRL, a log, a ticket).
        """
        with self._tx("read", write=False) as conn:
            rows = conn.execute(select(audit).order_by(audit.c.seq)).all()
            head_text = conn.execute(
                select(settings.c.value).where(settings.c.key == _AUDIT_HEAD_KEY)
            ).scalar_one_or_none()
        prefix = f"The audit log in the inventory at {self._where} is damaged: "
        prev_hash = GENESIS_HASH
        for expected, row in enumerate(rows, start=1):
            if row.seq != expected:
                raise InventoryError(
                    prefix + f"audit log entry {expected} was removed; "
                    "restore the inventory from a backup and investigate."
                )
            details = json_dict(row.details)
            if audit_hash(row.seq, row.at, row.action, details, row.prev_hash) != row.hash:
                raise InventoryError(
                    prefix + f"audit log entry {row.seq} was altered; "
                    "restore the inventory from a backup and investigate."
                )
            if row.prev_hash != prev_hash:
                raise InventoryError(
                    prefix + f"audit log entry {row.seq} does not follow entry {row.seq - 1} "
                    "(entries were reordered or replaced); "
                    "restore the inventory from a backup and investigate."
                )
            prev_hash = row.hash
        count = len(rows)
        if head_text is None:
            if count:
                raise InventoryError(
                    prefix + "the audit log head record was removed; "
                    "restore the inventory from a backup and investigate."
                )
            return 0
        head = json_dict(head_text)
        head_seq, head_hash = head.get("seq"), head.get("hash")
        if not isinstance(head_seq, int) or head_seq > count:
            first_missing = count + 1
            raise InventoryError(
                prefix + f"audit log entry {first_missing} was removed (the log ends early); "
                "restore the inventory from a backup and investigate."
            )
        if head_seq < count:
            raise InventoryError(
                prefix + f"audit log entry {head_seq + 1} was added behind tokenissue's back; "
                "restore the inventory from a backup and investigate."
            )
        if head_hash != prev_hash:
            raise InventoryError(
                prefix + f"audit log entry {count} was altered (it does not match the head); "
                "restore the inventory from a backup and investigate."
            )
        return count

