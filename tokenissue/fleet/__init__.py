"""Work on many tokens and certificates at once: batch provisioning and the CA's expiry sweep.

Built on :mod:`tokenissue.lifecycle` (one journaled enrollment or renewal at a time), so
everything here inherits its guarantees: a run that dies is finished by the next one, and
nothing is issued twice. Progress is reported through callbacks; the CLI draws it.
"""

from .batch import BatchRow, RowResult, read_rows, run_batch
from .sweep import SweepItem, run_hook, sweep

__all__ = ["BatchRow", "RowResult", "SweepItem", "read_rows", "run_batch", "run_hook", "sweep"]
