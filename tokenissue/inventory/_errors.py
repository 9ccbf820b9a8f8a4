"""Inventory-specific errors and the translation of SQLAlchemy errors at the package boundary."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import exc as sa_exc

from ..errors import InventoryError, TokenIssueError

__all__ = ["DuplicateRegistration", "DuplicateRequest", "DuplicateTransaction", "InventoryUnavailable", "translate"]


class InventoryUnavailable(InventoryError):
    """The database cannot be reached or is busy right now (server down or restarting, network,
    SQLite locked by another process); the same call may succeed later. If the connection broke
    during a COMMIT the write may or may not have happened: repeat it, as the callers that write
    do (by request ID and transactionID), and it is not done twice. A CA server answers these
    with HTTP 503 so clients and load balancers retry."""


def _transient(e: sa_exc.DBAPIError) -> bool:
    if e.connection_invalidated:
        return True
    orig = e.orig
    sqlite_name = getattr(orig, "sqlite_errorname", None)
    if sqlite_name is not None:
        return str(sqlite_name).startswith(("SQLITE_BUSY", "SQLITE_LOCKED"))
    sqlstate = getattr(orig, "sqlstate", None)
    if sqlstate is None:
        # psycopg reports a failed or broken connection without an SQLSTATE, including the
        # refusals that no retry will cure: those are configuration errors.
        text = str(orig).lower()
        return isinstance(e, sa_exc.OperationalError) and not any(m in text for m in _PERMANENT)
    # 08 connection exception, 40 transaction rollback (serialization, deadlock), 53300 too many
    # connections, 57P01-03 shutting down / starting up.
    return str(sqlstate)[:2] in ("08", "40") or str(sqlstate) in ("53300", "57P01", "57P02", "57P03")


#: Connection failures (reported by libpq without SQLSTATE) that are wrong settings, not outages.
_PERMANENT = (
    "password authentication failed",
    "authentication failed",
    "no password supplied",
    "does not exist",
    "no pg_hba.conf entry",
    "permission denied",
    "invalid connection option",
    "certificate verify failed",
)


class DuplicateRequest(InventoryError):
    """A certificate for this enrollment request is already recorded.

    Issuance is idempotent on the request id: a CA that sees this should hand back the
    certificate it already issued (``find_by_request``) rather than sign a second one.
    """

    def __init__(self, message: str, *, request_id: str) -> None:
        super().__init__(message)
        self.request_id = request_id


class DuplicateRegistration(InventoryError):
    """A registration with this reference number already exists; draw another reference."""

    def __init__(self, message: str, *, ref: str) -> None:
        super().__init__(message)
        self.ref = ref


class DuplicateTransaction(InventoryError):
    """A CMP transaction with this transactionID already exists.

    The primary key refuses it, so two server replicas that receive the same first message
    cannot both start the transaction; the loser answers with an error (RFC 4210 transactionIdInUse).
    """

    def __init__(self, message: str, *, transaction_id: bytes) -> None:
        super().__init__(message)
        self.transaction_id = transaction_id


def _reason(err: BaseException) -> str:
    """A short cause without SQL text or bound parameters (they can be long, or DER)."""
    if isinstance(err, sa_exc.DBAPIError) and err.orig is not None:
        return str(err.orig).splitlines()[0] if str(err.orig) else type(err.orig).__name__
    return type(err).__name__


@contextmanager
def translate(doing: str, where: str) -> Iterator[None]:
    """Re-raise SQLAlchemy and OS errors from the block as one InventoryError sentence.

    ``doing`` completes "Cannot ... the inventory at WHERE", e.g. ``"write to"``. Our own
    errors pass through untouched; the original exception is chained as ``__cause__``.
    """
    try:
        yield
    except TokenIssueError:
        raise
    except sa_exc.SQLAlchemyError as e:
        raise _translated(e, doing, where) from e
    except OSError as e:
        raise InventoryError(
            f"Cannot {doing} the inventory at {where}: {e.strerror or e}; "
            "check the path and its permissions."
        ) from e


def _translated(e: sa_exc.SQLAlchemyError, doing: str, where: str) -> InventoryError:
    reason = _reason(e)
    prefix = f"Cannot {doing} the inventory at {where}: {reason}"
    if isinstance(e, sa_exc.DBAPIError) and _transient(e):
        if "locked" in reason or "busy" in reason:
            return InventoryUnavailable(f"{prefix}; another tokenissue process is using it; try again in a moment.")
        return InventoryUnavailable(f"{prefix}; the database is unreachable or restarting; try again in a moment.")
    if isinstance(e, sa_exc.OperationalError):
        return InventoryError(f"{prefix}; check the path, its permissions and that the database is reachable.")
    if isinstance(e, sa_exc.DataError):
        # PostgreSQL enforces column widths and refuses NUL in text; SQLite stores either.
        return InventoryError(f"{prefix}; a value does not fit its column (too long, or text containing a NUL character).")
    if isinstance(e, sa_exc.IntegrityError):
        return InventoryError(f"{prefix}; the record conflicts with one already stored.")
    return InventoryError(f"{prefix}; check that the database is a tokenissue inventory and is not damaged.")
