"""The CMP server's transactions: what each transactionID has done so far, shared by every
server replica."""

from __future__ import annotations

from typing import Any

from sqlalchemy import exc as sa_exc
from sqlalchemy import insert, select, update
from sqlalchemy.engine import Row

from ..errors import InventoryError, NotFound
from ..models import CMPTransaction, TransactionKind, TransactionState
from ._engine import Database
from ._errors import DuplicateTransaction
from ._schema import cmp_transactions
from ._values import MAX_CMP_OCTETS, octets_hex, serial_hex, utc_now

__all__ = ["TransactionStore"]


def _row_to_transaction(row: Row[Any]) -> CMPTransaction:
    return CMPTransaction(
        transaction_id=bytes.fromhex(row.transaction_id),
        kind=TransactionKind(row.kind),
        state=TransactionState(row.state),
        sender_nonce=bytes.fromhex(row.sender_nonce),
        our_nonce=bytes.fromhex(row.our_nonce),
        pbm=bool(row.pbm),
        created_at=row.created_at,
        updated_at=row.updated_at,
        ref=row.ref,
        serial=None if row.serial is None else int(row.serial, 16),
        signer=None if row.signer is None else int(row.signer, 16),
    )


class TransactionStore(Database):
    """CMP transactions, one database transaction per call."""

    def transaction_begin(
        self,
        tid: bytes,
        kind: TransactionKind,
        ref: str | None,
        sender_nonce: bytes,
        our_nonce: bytes,
        pbm: bool,
        *,
        state: TransactionState = TransactionState.WAITING_CONFIRM,
        signer: int | None = None,
    ) -> CMPTransaction:
        """Start CMP transaction ``tid`` and return it.

        Raises DuplicateTransaction if ``tid`` is already known: the primary key decides, so
        of two replicas receiving the same transactionID only one starts it.
        """
        key = octets_hex(tid, "transaction id", MAX_CMP_OCTETS)
        now = utc_now()
        values = {
            "transaction_id": key,
            "kind": TransactionKind(kind).value,
            "ref": ref,
            "state": TransactionState(state).value,
            "sender_nonce": octets_hex(sender_nonce, "sender nonce", MAX_CMP_OCTETS),
            "our_nonce": octets_hex(our_nonce, "our nonce", MAX_CMP_OCTETS),
            "serial": None,
            "pbm": bool(pbm),
            "signer": None if signer is None else serial_hex(signer),
            "created_at": now,
            "updated_at": now,
        }
        try:
            with self._tx("write to", write=True) as conn:
                conn.execute(insert(cmp_transactions).values(**values))
                row = conn.execute(
                    select(cmp_transactions).where(cmp_transactions.c.transaction_id == key)
                ).one()
        except InventoryError as e:
            if isinstance(e.__cause__, sa_exc.IntegrityError):
                raise DuplicateTransaction(
                    f"CMP transaction {key} is already in use; start a new transaction with a "
                    "fresh transactionID.",
                    transaction_id=bytes(tid),
                ) from e.__cause__
            raise
        return _row_to_transaction(row)

    def transaction_get(self, tid: bytes) -> CMPTransaction | None:
        """The CMP transaction ``tid``, or None."""
        key = octets_hex(tid, "transaction id", MAX_CMP_OCTETS)
        with self._tx("read", write=False) as conn:
            row = conn.execute(
                select(cmp_transactions).where(cmp_transactions.c.transaction_id == key)
            ).first()
        return None if row is None else _row_to_transaction(row)

    def transaction_update(
        self,
        tid: bytes,
        *,
        state: TransactionState | None = None,
        sender_nonce: bytes | None = None,
        our_nonce: bytes | None = None,
        serial: int | None = None,
    ) -> CMPTransaction:
        """Change the given fields of transaction ``tid`` (and ``updated_at``) and return it.

        Raises NotFound for an unknown transaction.
        """
        key = octets_hex(tid, "transaction id", MAX_CMP_OCTETS)
        values: dict[str, object] = {"updated_at": utc_now()}
        if state is not None:
            values["state"] = TransactionState(state).value
        if sender_nonce is not None:
            values["sender_nonce"] = octets_hex(sender_nonce, "sender nonce", MAX_CMP_OCTETS)
        if our_nonce is not None:
            values["our_nonce"] = octets_hex(our_nonce, "our nonce", MAX_CMP_OCTETS)
        if serial is not None:
            values["serial"] = serial_hex(serial)
        t = cmp_transactions.c
        with self._tx("write to", write=True) as conn:
            result = conn.execute(update(cmp_transactions).where(t.transaction_id == key).values(**values))
            if result.rowcount != 1:
                raise NotFound(
                    f"No CMP transaction {key} is in the inventory at {self._where}; "
                    "the client must start a new transaction."
                )
            row = conn.execute(select(cmp_transactions).where(t.transaction_id == key)).one()
        return _row_to_transaction(row)

