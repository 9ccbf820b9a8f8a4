"""Requests waiting for an officer's approval (profiles with ``approval``), shared by every
server replica: the client's poll may reach another one than its request did."""

from __future__ import annotations

import secrets
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Row

from ..errors import NotFound, RequestRejected
from ..models import PendingRequest, PendingStatus
from ._engine import Database
from ._schema import pending_requests
from ._values import serial_hex, utc_now

__all__ = ["PendingStore"]


def _row(row: Row[Any]) -> PendingRequest:
    return PendingRequest(
        id=row.id, protocol=row.protocol, transaction_id=row.transaction_id, ref=row.ref,
        public_key=bytes(row.public_key), sans=bytes(row.sans), reservation=row.reservation,
        requester=bytes(row.requester), cipher=row.cipher, status=PendingStatus(row.status),
        created_at=row.created_at, decided_at=row.decided_at, decided_by=row.decided_by,
        serial=None if row.serial is None else int(row.serial, 16),
    )  # fmt: skip


class PendingStore(Database):
    """Pending requests, one database transaction per call."""

    def pending_add(
        self, protocol: str, transaction_id: str, ref: str, *, public_key: bytes, sans: bytes, reservation: str,
        requester: bytes, cipher: str,
    ) -> PendingRequest:  # fmt: skip
        """Queue a request (the caller has looked for an active one of this transaction first)."""
        values = {
            "id": secrets.token_hex(6), "protocol": protocol, "transaction_id": transaction_id, "ref": ref,
            "public_key": public_key, "sans": sans, "reservation": reservation, "requester": requester,
            "cipher": cipher, "status": PendingStatus.PENDING.value, "created_at": utc_now(),
        }  # fmt: skip
        with self._tx("write to", write=True) as conn:
            conn.execute(insert(pending_requests).values(**values))
            row = conn.execute(select(pending_requests).where(pending_requests.c.id == values["id"])).one()
        self.audit_append("request-pending", {"id": values["id"], "protocol": protocol, "ref": ref})  # type: ignore[attr-defined]
        return _row(row)

    def pending_of(self, protocol: str, transaction_id: str) -> list[PendingRequest]:
        """Every queued request of this transaction, oldest first."""
        with self._tx("read", write=False) as conn:
            rows = conn.execute(select(pending_requests).where(
                pending_requests.c.protocol == protocol, pending_requests.c.transaction_id == transaction_id,
            ).order_by(pending_requests.c.created_at))  # fmt: skip
            return [_row(r) for r in rows]

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
        """Approve a pending request, or reject one pending or approved (not yet issued); one
        conditional UPDATE decides, so two officers deciding at once cannot both win."""
        status = PendingStatus.APPROVED if approve else PendingStatus.REJECTED
        before = [PendingStatus.PENDING.value] if approve else [PendingStatus.PENDING.value, PendingStatus.APPROVED.value]
        with self._tx("write to", write=True) as conn:
            done = conn.execute(update(pending_requests).where(
                pending_requests.c.id == pending_id, pending_requests.c.status.in_(before),
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
