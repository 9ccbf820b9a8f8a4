"""Keep what PKCS#11 modules print on stderr from burying tokenissue's own sentence.

Some modules write to file descriptor 2 on failures they also return (tpm2-pkcs11 prints
``ERROR:`` lines on every refused template, even while tokenissue negotiates one that works;
SoftHSM prints configuration errors). They cannot be turned off. For the length of a command the
process's fd 2 is pointed at a private temporary file, while Python's ``sys.stderr`` (and so rich,
tracebacks and our messages) keeps writing to the real stderr. What a module wrote is dropped when
the command succeeds, and announced in one line after our sentence when it fails. ``--debug``
turns this off: everything then goes to the terminal as written.
"""

from __future__ import annotations

import io
import os
import sys
import tempfile
from types import TracebackType
from typing import Any

__all__ = ["ModuleStderr"]


class ModuleStderr:
    """Context manager: capture fd 2 (C-level writes), keep ``sys.stderr`` on the real one."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._saved: int | None = None
        self._file: io.BufferedRandom | None = None
        self._old: Any = None

    def __enter__(self) -> ModuleStderr:
        if not self.enabled:
            return self
        try:
            sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError):
            return self  # no usable fd 2 (closed): nothing to protect
        self._saved = saved
        self._file = tempfile.TemporaryFile()
        os.dup2(self._file.fileno(), 2)
        self._old = sys.stderr
        sys.stderr = io.TextIOWrapper(
            io.FileIO(saved, "w", closefd=False), encoding="utf-8", errors="backslashreplace", line_buffering=True
        )
        return self

    def lines(self) -> list[str]:
        """What was written to fd 2 since entering (modules, and C libraries generally)."""
        if self._file is None:
            return []
        self._file.flush()
        self._file.seek(0)
        return [ln for ln in self._file.read().decode("utf-8", "replace").splitlines() if ln.strip()]

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._saved is None:
            return
        sys.stderr.flush()
        os.dup2(self._saved, 2)
        os.close(self._saved)
        sys.stderr = self._old
        self._saved = None
        if self._file is not None:
            self._file.close()
            self._file = None
