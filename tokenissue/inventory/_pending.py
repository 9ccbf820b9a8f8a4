"""Requests waiting for an officer's approval (profiles with ``approval``), shared by every
server replica: the client's poll may reach another one than its request did."""

from __future__ import annotations

import secrets
from typing import Any

from sqlalchemy import exc as sa_exc
from sqlalchemy import insert, select, update
from sqlalchemy.engine import Row

from ..errors import InventoryError, NotFound, RequestRejected
from ..models import PendingRequest, PendingStatus
from ._engine import Database
from ._schema import pending_requests
from ._values import serial_hex, utc_now

__all__ = ["PendingStore"]


def _row(row: Row[Any]) -> PendingRequest:
    return PendingRequest(
        id=row.id, protocol=row.protocol, transaction_id=row.transaction_id, ref=row.ref, csr=bytes(row.csr),
        requester=bytes(row.requester), cipher=row.cipher, status=PendingStatus(row.status),
        created_at=row.created_at, decided_at=row.decided_at, decided_by=row.decided_by,
        serial=None if row.serial is None else int(row.serial, 16),
    )  # fmt: skip


class PendingStore(Database):
    """Pending requests, one database transaction per call."""

    def pending_add(
        self, protocol: str, transaction_id: str, ref: str, csr: bytes, requester: bytes, cipher: str
    ) -> PendingRequest:
        """Queue a request; the same (protocol, transactionID) again returns the one queued."""
        existing = self.pending_for(protocol, transaction_id)
        if existing is not None:
            return existing
        values = {
            "id": secrets.token_hex(6), "protocol": protocol, "transaction_id": transaction_id, "ref": ref, "csr": csr,
            "requester": requester, "cipher": cipher, "status": PendingStatus.PENDING.value, "created_at": utc_now(),
        }  # fmt: skip
        try:
            with self._tx("write to", write=True) as conn:
                conn.execute(insert(pending_requests).values(**values))
                row = conn.execute(select(pending_requests).where(pending_requests.c.id == values["id"])).one()
        except InventoryError as e:
            if isinstance(e.__cause__, sa_exc.IntegrityError):  # another replica queued it first
                again = self.pending_for(protocol, transaction_id)
                if again is not None:
                    return again
            raise
        self.audit_append("request-pending", {"id": values["id"], "protocol": protocol, "ref": ref})  # type: ignore[attr-defined]
        return _row(row)

    def pending_for(self, protocol: str, transaction_id: str) -> PendingRequest | None:
        with self._tx("read", write=False) as conn:
            row = conn.execute(select(pending_requests).where(
                pending_requests.c.protocol == protocol, pending_requests.c.transaction_id == transaction_id)).first()  # fmt: skip
        return None if row is None else _row(row)

    def pending_get(self, pending_id: str) -> PendingRequest:
        with self._tx("read", write=False) as conn:
            row = conn.execute(select(pending_requests).where(pending_requests.c.id == pending_id)).first()
        if row is None:
            raise NotFound(f"No request {pending_id} waits for approval.")
        return _row(row)

    def pending_list(self, status: PendingStatus | None = PendingStatus.PENDING) -> list[PendingRequest]:
        query = select(pending_requests).order_by(pending_requests.c.created_at)
        if status is not None:
            query = query.where(pending_requests.c.status == status.value)
        with self._tx("read", write=False) as conn:
            return [_row(r) for r in conn.execute(query)]

    def pending_decide(self, pending_id: str, approve: bool, by: str) -> PendingRequest:
        """Approve or reject a pending request; one conditional UPDATE decides, so two
        officers deciding at once cannot both win."""
        status = PendingStatus.APPROVED if approve else PendingStatus.REJECTED
        with self._tx("write to", write=True) as conn:
            done = conn.execute(update(pending_requests).where(
                pending_requests.c.id == pending_id, pending_requests.c.status == PendingStatus.PENDING.value,
            ).values(status=status.value, decided_at=utc_now(), decided_by=by)).rowcount  # fmt: skip
        current = self.pending_get(pending_id)
        if not done:
            raise RequestRejected(f"Request {pending_id} was already {current.status.value}.")
        self.audit_append(f"request-{status.value}", {"id": pending_id, "ref": current.ref, "by": by})  # type: ignore[attr-defined]
        return current

    def pending_issued(self, pending_id: str, serial: int) -> None:
        with self._tx("write to", write=True) as conn:
            conn.execute(update(pending_requests).where(pending_requests.c.id == pending_id).values(
                status=PendingStatus.ISSUED.value, serial=serial_hex(serial)))  # fmt: skip
