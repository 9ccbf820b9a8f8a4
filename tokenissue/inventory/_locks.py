"""Named locks that every process using one inventory respects (:meth:`Locks.exclusive`)."""

from __future__ import annotations

import fcntl
import hashlib
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress

from sqlalchemy import exc as sa_exc
from sqlalchemy import text

from ..errors import TokenIssueError
from ._engine import Database
from ._errors import translate

__all__ = ["Locks"]

# How long exclusive() waits for another holder, and how often it looks. An enrollment holds
# its token's lock for milliseconds on SoftHSM, seconds for RSA on a smart card.
_EXCLUSIVE_WAIT_S = 300.0
_EXCLUSIVE_POLL_S = 0.02


def _poll(attempt: Callable[[], bool], timeout: float, busy: TokenIssueError) -> None:
    """Call ``attempt`` until it returns True, for at most ``timeout`` seconds; then raise ``busy``."""
    deadline = time.monotonic() + timeout
    while not attempt():
        if time.monotonic() >= deadline:
            raise busy
        time.sleep(_EXCLUSIVE_POLL_S)


class Locks(Database):
    """Locks between processes, by name: SQLite file locks beside the database, or PostgreSQL
    advisory locks."""

    @contextmanager
    def exclusive(self, name: str, *, busy: TokenIssueError, timeout: float = _EXCLUSIVE_WAIT_S) -> Iterator[None]:
        """Hold the lock ``name`` for the block, against every process that uses this inventory.

        Two processes that must not work on the same thing at once (two runs of one batch, a
        cron sweep overlapping the last one, both enrolling on one token) take the same name.
        SQLite: an flock on a file beside the database (released by the kernel when a process
        dies); PostgreSQL: a session advisory lock, on its own connection. A holder that does
        not let go within ``timeout`` seconds makes this raise ``busy``.
        """
        digest = hashlib.sha256(name.encode()).digest()
        if self._engine.dialect.name == "postgresql":
            key = int.from_bytes(digest[:8], "big", signed=True)
            with translate("lock", self._where):
                conn = self._engine.connect()
            try:
                with translate("lock", self._where):
                    _poll(lambda: bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar()), timeout, busy)
                    conn.commit()
                # Errors of the block are the block's: only taking and giving back the lock are
                # translated as the lock's.
                yield
                try:
                    conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                    conn.commit()
                except sa_exc.SQLAlchemyError:
                    conn.invalidate()  # the session ends, and its advisory locks with it
            except BaseException:
                # Not back to the pool with the lock still held: end the session instead.
                with suppress(sa_exc.SQLAlchemyError):
                    conn.invalidate()
                raise
            finally:
                conn.close()
            return
        if self._path is None:
            yield  # an in-memory database: one process only
            return
        locks = self._path.with_name(self._path.name + ".locks")
        locks.mkdir(mode=0o700, exist_ok=True)
        fd = os.open(locks / digest.hex()[:32], os.O_RDWR | os.O_CREAT, 0o600)
        try:

            def take() -> bool:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return False
                return True

            _poll(take, timeout, busy)
            yield
        finally:
            os.close(fd)  # releases the lock
