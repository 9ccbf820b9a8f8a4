"""The RA's registrations: one-time enrollment codes and their state.

Every state change is one conditional UPDATE: the database, not a process lock, decides which
of several concurrent requests (possibly on different server replicas) wins.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import and_, case, func, insert, or_, select, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Row

from ..errors import InventoryError, NotFound, Remedy
from ..models import Registration, RegistrationStatus
from ._audit import canonical_json
from ._engine import Database
from ._errors import DuplicateRegistration
from ._schema import registrations
from ._types import utc
from ._values import MAX_CMP_OCTETS, octets_hex, serial_hex

__all__ = ["RegistrationStore"]

_MAX_REG_NONCE = 32


def _row_to_registration(row: Row[Any]) -> Registration:
    san = json.loads(row.san)
    assert isinstance(san, list)
    return Registration(
        ref=row.ref,
        subject=row.subject,
        profile=row.profile,
        nonce=bytes.fromhex(row.nonce),
        created_at=row.created_at,
        expires_at=row.expires_at,
        status=RegistrationStatus(row.status),
        failures=int(row.failures),
        max_failures=int(row.max_failures),
        used_at=row.used_at,
        serial=None if row.serial is None else int(row.serial, 16),
        san=tuple(str(item) for item in san),
        reserved_tid=None if row.reserved_tid is None else bytes.fromhex(row.reserved_tid),
        id_hash=None if row.id_hash is None else bytes.fromhex(row.id_hash),
        real_name=row.real_name,
        verified_by=row.verified_by,
        terms_version=row.terms_version,
        reissue_of=None if row.reissue_of is None else int(row.reissue_of, 16),
    )


class RegistrationStore(Database):
    """Registrations, one transaction per call."""

    def add_registration(self, reg: Registration) -> Registration:
        """Record a new registration and return it as stored.

        Raises DuplicateRegistration if ``reg.ref`` is taken (draw another reference).
        """
        if not reg.ref or len(reg.ref) > 32:
            raise ValueError("registration ref must be 1 to 32 characters")
        if reg.max_failures < 1 or reg.failures < 0:
            raise ValueError("registration failures must be >= 0 and max_failures >= 1")
        if not all(isinstance(item, str) for item in reg.san):
            raise ValueError("registration san must be a sequence of strings")
        row = {
            "ref": reg.ref,
            "subject": reg.subject,
            "profile": reg.profile,
            "nonce": octets_hex(reg.nonce, "registration nonce", _MAX_REG_NONCE),
            "status": reg.status.value,
            "failures": reg.failures,
            "max_failures": reg.max_failures,
            "created_at": utc(reg.created_at, "created_at"),
            "expires_at": utc(reg.expires_at, "expires_at"),
            "used_at": None if reg.used_at is None else utc(reg.used_at, "used_at"),
            "serial": None if reg.serial is None else serial_hex(reg.serial),
            "san": canonical_json(list(reg.san)),
            "reserved_tid": None
            if reg.reserved_tid is None
            else octets_hex(reg.reserved_tid, "reserved transaction id", MAX_CMP_OCTETS),
            "id_hash": None if reg.id_hash is None else octets_hex(reg.id_hash, "registration number hash", 32),
            "real_name": reg.real_name,
            "verified_by": reg.verified_by,
            "terms_version": reg.terms_version,
            "reissue_of": None if reg.reissue_of is None else serial_hex(reg.reissue_of),
        }
        try:
            with self._tx("write to", write=True) as conn:
                conn.execute(insert(registrations).values(**row))
                stored = conn.execute(select(registrations).where(registrations.c.ref == reg.ref)).one()
        except InventoryError as e:
            # The primary key is the only constraint on the table.
            if isinstance(e.__cause__, sa_exc.IntegrityError):
                raise DuplicateRegistration(
                    f"Registration {reg.ref} already exists; register again with a new reference.",
                    ref=reg.ref,
                ) from e.__cause__
            raise
        return _row_to_registration(stored)

    def get_registration(self, ref: str) -> Registration | None:
        """The registration with this reference, or None."""
        with self._tx("read", write=False) as conn:
            row = conn.execute(select(registrations).where(registrations.c.ref == ref)).first()
        return None if row is None else _row_to_registration(row)

    def list_registrations(self, status: RegistrationStatus | None = None) -> list[Registration]:
        """Registrations, oldest first; only those in ``status`` when given.

        An expired registration keeps the status ``open``: expiry is a property of time,
        checked against ``expires_at`` (see :meth:`Registration.is_expired`).
        """
        query = select(registrations).order_by(registrations.c.created_at, registrations.c.ref)
        if status is not None:
            query = query.where(registrations.c.status == status.value)
        with self._tx("read", write=False) as conn:
            rows = conn.execute(query).all()
        return [_row_to_registration(row) for row in rows]

    def registration_failed(self, ref: str) -> Registration:
        """Count one wrong code and return the registration afterwards.

        The increment and the lock are one UPDATE (SQL evaluates every SET expression against
        the row as it was), so concurrent failures are never lost and the registration locks
        on exactly the ``max_failures``-th. Only an open registration becomes locked: a used
        or cancelled one keeps its status. Raises NotFound for an unknown reference.
        """
        r = registrations.c
        with self._tx("write to", write=True) as conn:
            result = conn.execute(
                update(registrations)
                .where(r.ref == ref)
                .values(
                    failures=r.failures + 1,
                    status=case(
                        (
                            and_(
                                r.status == RegistrationStatus.OPEN.value,
                                r.failures + 1 >= r.max_failures,
                            ),
                            RegistrationStatus.LOCKED.value,
                        ),
                        else_=r.status,
                    ),
                )
            )
            if result.rowcount != 1:
                raise self._no_registration(ref)
            row = conn.execute(select(registrations).where(r.ref == ref)).one()
        return _row_to_registration(row)

    def registration_reserve(self, ref: str, tid: bytes, now: datetime) -> bool:
        """Reserve an open, unexpired registration for CMP transaction ``tid``.

        True iff it is now reserved for ``tid`` (freshly, or again: the same transaction may
        retry). One conditional UPDATE, so of any number of concurrent transactions on any
        number of server replicas exactly one holds the registration; a certificate is issued
        only after this, and :meth:`registration_consume` then requires the same ``tid``.
        """
        key = octets_hex(tid, "transaction id", MAX_CMP_OCTETS)
        now = utc(now, "now")
        r = registrations.c
        with self._tx("write to", write=True) as conn:
            result = conn.execute(
                update(registrations)
                .where(
                    r.ref == ref,
                    r.status == RegistrationStatus.OPEN.value,
                    r.expires_at > now,
                    or_(r.reserved_tid.is_(None), r.reserved_tid == key),
                )
                .values(reserved_tid=key)
            )
            return result.rowcount == 1

    def registration_release(self, ref: str, tid: bytes) -> bool:
        """Drop ``tid``'s reservation of an open registration (after a definite refusal).

        True iff this call released it; a reservation held by another transaction, or a used
        registration, is left alone.
        """
        key = octets_hex(tid, "transaction id", MAX_CMP_OCTETS)
        r = registrations.c
        with self._tx("write to", write=True) as conn:
            result = conn.execute(
                update(registrations)
                .where(r.ref == ref, r.status == RegistrationStatus.OPEN.value, r.reserved_tid == key)
                .values(reserved_tid=None)
            )
            return result.rowcount == 1

    def registration_consume(self, ref: str, serial: int, now: datetime, tid: bytes | None = None) -> bool:
        """Mark a registration used by certificate ``serial``.

        With ``tid``: the registration must be open and reserved by that transaction (expiry
        was checked when it was reserved, before the certificate was issued). Without: it must
        be open, unexpired and not reserved by anyone. True iff this call changed it. The
        condition is in the UPDATE itself, so of any number of concurrent callers (threads,
        processes, replicas) at most one gets True: this is what makes a code good for one
        certificate only.
        """
        key = serial_hex(serial)
        now = utc(now, "now")
        r = registrations.c
        if tid is None:
            condition = and_(r.expires_at > now, r.reserved_tid.is_(None))
        else:
            condition = r.reserved_tid == octets_hex(tid, "transaction id", MAX_CMP_OCTETS)
        with self._tx("write to", write=True) as conn:
            result = conn.execute(
                update(registrations)
                .where(r.ref == ref, r.status == RegistrationStatus.OPEN.value, condition)
                .values(status=RegistrationStatus.USED.value, used_at=now, serial=key)
            )
            return result.rowcount == 1

    def registration_cancel(self, ref: str) -> Registration:
        """Cancel an open or locked registration and return it.

        A used registration stays used (its certificate exists; revoke that instead), and
        cancelling a cancelled one changes nothing; both are returned as they are, so the
        caller can tell. Raises NotFound for an unknown reference.
        """
        r = registrations.c
        with self._tx("write to", write=True) as conn:
            conn.execute(
                update(registrations)
                .where(
                    r.ref == ref,
                    r.status.in_([RegistrationStatus.OPEN.value, RegistrationStatus.LOCKED.value]),
                )
                .values(status=RegistrationStatus.CANCELLED.value)
            )
            row = conn.execute(select(registrations).where(r.ref == ref)).first()
            if row is None:
                raise self._no_registration(ref)
        return _row_to_registration(row)

    def _no_registration(self, ref: str) -> NotFound:
        return NotFound(f"No registration {ref} is in the inventory at {self._where}.", remedy=Remedy.LIST_REGISTRATIONS)

    def registration_count(self) -> int:
        """How many registrations exist, in any state (the RA makes no new key while any exist)."""
        with self._tx("read", write=False) as conn:
            return int(conn.execute(select(func.count()).select_from(registrations)).scalar_one())
