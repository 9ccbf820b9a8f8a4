"""The journal: multi-step operations (enrollments, batches, sweeps) recorded step by step so
that a crash can be resumed where it stopped."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.engine import Connection, Row

from ..errors import InventoryError
from ..models import CertRecord, JournalEntry
from ._audit import canonical_json, check_no_secrets
from ._certificates import cert_to_row, insert_unless_recorded
from ._engine import Database
from ._schema import journal
from ._values import json_dict, utc_now

__all__ = ["JournalStore"]

# Statements on the paths every enrollment takes, built once: building a Core statement and
# its cache key costs more than running it on SQLite.
_JOURNAL_BY_ID = select(journal).where(journal.c.id == bindparam("key"))
_JOURNAL_FOR_UPDATE = _JOURNAL_BY_ID.with_for_update()
_JOURNAL_INSERT = insert(journal)
_JOURNAL_UPDATE = (
    update(journal)
    .where(journal.c.id == bindparam("key"))
    .values(state=bindparam("state"), data=bindparam("data"), updated_at=bindparam("updated_at"))
)
_JOURNAL_FINISH = (
    update(journal)
    .where(journal.c.id == bindparam("key"))
    .values(state=bindparam("state"), finished=True, updated_at=bindparam("updated_at"))
)
_JOURNAL_BY_PARAMS = (
    select(journal)
    .where(journal.c.kind == bindparam("kind"), journal.c.params == bindparam("params"))
    .order_by(journal.c.created_at, journal.c.id)
)


def _row_to_journal(row: Row[Any]) -> JournalEntry:
    return JournalEntry(
        id=row.id,
        kind=row.kind,
        state=row.state,
        params=json_dict(row.params),
        data=json_dict(row.data),
        created_at=row.created_at,
        updated_at=row.updated_at,
        finished=bool(row.finished),
    )


class JournalStore(Database):
    """Journal entries, one transaction per call."""

    def journal_start(
        self,
        kind: str,
        params: Mapping[str, object],
        *,
        id: str | None = None,
        data: Mapping[str, object] | None = None,
    ) -> JournalEntry:
        """Record the start of a multi-step operation so it can be resumed after a crash.

        ``params`` (and the optional first ``data``) must be JSON-serialisable and hold no
        secrets (ValueError otherwise).
        """
        check_no_secrets(params, "journal params")
        check_no_secrets(data or {}, "journal data")
        entry_id = id if id is not None else uuid.uuid4().hex
        now = utc_now()
        params_json = canonical_json(dict(params))
        data_json = canonical_json(dict(data or {}))
        with self._tx("write to", write=True) as conn:
            conn.execute(
                _JOURNAL_INSERT,
                {
                    "id": entry_id, "kind": kind, "state": "started", "params": params_json, "data": data_json,
                    "created_at": now, "updated_at": now, "finished": False,
                },
            )  # fmt: skip
        return JournalEntry(
            id=entry_id, kind=kind, state="started", params=json_dict(params_json), data=json_dict(data_json),
            created_at=now, updated_at=now, finished=False,
        )  # fmt: skip

    def journal_update(self, id: str, state: str, **data: object) -> JournalEntry:
        """Record that step ``state`` is done, merging ``data`` into the entry's data.

        Raises InventoryError for an unknown or finished entry: a finished operation must
        not be resumed.
        """
        check_no_secrets(data, "journal data")
        with self._tx("write to", write=True) as conn:
            row = self._journal_row_for_write(conn, id)
            if row.finished:
                raise InventoryError(
                    f"Journal entry {id} is already finished; start a new operation instead."
                )
            merged = json_dict(row.data)
            merged.update(data)
            data_json = canonical_json(merged)
            now = utc_now()
            conn.execute(_JOURNAL_UPDATE, {"key": id, "state": state, "data": data_json, "updated_at": now})
        return replace(_row_to_journal(row), state=state, data=json_dict(data_json), updated_at=now)

    def journal_get(self, id: str) -> JournalEntry | None:
        """The journal entry with this id, or None."""
        with self._tx("read", write=False) as conn:
            row = conn.execute(_JOURNAL_BY_ID, {"key": id}).first()
        return None if row is None else _row_to_journal(row)

    def journal_open(self, kind: str | None = None, *, params: Mapping[str, object] | None = None) -> list[JournalEntry]:
        """Unfinished operations, oldest first: what a restart should offer to resume.

        With ``params``, only those started with exactly these parameters (compared as
        canonical JSON in the database, so a long journal is not decoded entry by entry).
        """
        query = (
            select(journal)
            .where(journal.c.finished.is_(False))
            .order_by(journal.c.created_at, journal.c.id)
        )
        if kind is not None:
            query = query.where(journal.c.kind == kind)
        if params is not None:
            query = query.where(journal.c.params == canonical_json(dict(params)))
        with self._tx("read", write=False) as conn:
            rows = conn.execute(query).all()
        return [_row_to_journal(row) for row in rows]

    def journal_by_params(self, kind: str, params: Mapping[str, object]) -> list[JournalEntry]:
        """Every entry of ``kind`` started with exactly these parameters, open or finished,
        oldest first (compared as canonical JSON in the database, in one read)."""
        values = {"kind": kind, "params": canonical_json(dict(params))}
        with self._tx("read", write=False) as conn:
            rows = conn.execute(_JOURNAL_BY_PARAMS, values).all()
        return [_row_to_journal(row) for row in rows]

    def journal_finish(self, id: str, state: str = "done", *, record: CertRecord | None = None) -> JournalEntry:
        """Close an operation. Finishing a finished entry returns it unchanged.

        With ``record``, the certificate the operation produced is recorded (unless its
        serial already is) in the same transaction: an enrollment is never finished without
        its record, nor recorded and still open.
        """
        cert_row = None if record is None else cert_to_row(record)
        with self._tx("write to", write=True) as conn:
            row = self._journal_row_for_write(conn, id)
            entry = _row_to_journal(row)
            if row.finished:
                return entry
            if cert_row is not None:
                insert_unless_recorded(conn, cert_row)
            now = utc_now()
            conn.execute(_JOURNAL_FINISH, {"key": id, "state": state, "updated_at": now})
        return replace(entry, state=state, finished=True, updated_at=now)

    def _journal_row_for_write(self, conn: Connection, id: str) -> Row[Any]:
        # Locked until commit on PostgreSQL, so concurrent journal_update calls merge their
        # data one after the other instead of the last one dropping the others' keys.
        row = conn.execute(_JOURNAL_FOR_UPDATE, {"key": id}).first()
        if row is None:
            raise InventoryError(
                f"No journal entry {id} is in the inventory at {self._where}; "
                "list the open operations and resume one of those."
            )
        return row

