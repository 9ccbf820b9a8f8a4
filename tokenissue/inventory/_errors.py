"""Inventory-specific errors and the translation of SQLAlchemy errors at the package boundary."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import exc as sa_exc

from ..errors import InventoryError, TokenIssueError

__all__ = ["DuplicateRegistration", "DuplicateRequest", "DuplicateTransaction", "translate"]


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
    except sa_exc.OperationalError as e:
        reason = _reason(e)
        if "locked" in reason or "busy" in reason:
            hint = "another tokenissue process is using it; try again in a moment"
        else:
            hint = "check the path, its permissions and that the database is reachable"
        raise InventoryError(f"Cannot {doing} the inventory at {where}: {reason}; {hint}.") from e
    except sa_exc.DataError as e:
        # PostgreSQL enforces column widths and refuses NUL in text; SQLite stores either.
        raise InventoryError(
            f"Cannot {doing} the inventory at {where}: {_reason(e)}; "
            "a value does not fit its column (too long, or text containing a NUL character)."
        ) from e
    except sa_exc.IntegrityError as e:
        raise InventoryError(
            f"Cannot {doing} the inventory at {where}: {_reason(e)}; "
            "the record conflicts with one already stored."
        ) from e
    except sa_exc.SQLAlchemyError as e:
        raise InventoryError(
            f"Cannot {doing} the inventory at {where}: {_reason(e)}; "
            "check that the database is a tokenissue inventory and is not damaged."
        ) from e
    except OSError as e:
        raise InventoryError(
            f"Cannot {doing} the inventory at {where}: {e.strerror or e}; "
            "check the path and its permissions."
        ) from e
