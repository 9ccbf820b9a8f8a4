"""A second Inventory.open of a SQLite file, in a process that has it open already, must not
cost the first its locks (found while testing suspension, issue 13 item 7).

Closing any descriptor of a database file drops every POSIX lock the process holds on it,
SQLite's included (sqlite.org/howtocorrupt.html §2.2). Opening the file to check its mode did
that: another process then found the database unused, checkpointed and removed the WAL on
closing, and what the first connection wrote next no other process ever saw. A CMP server
in-process with a test that opens the CA again, and a CLI reading the same ca.db, lost a
suspension that way.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tokenissue.inventory import Inventory

_READER = (
    "import sys; from tokenissue.inventory import Inventory; "
    "i = Inventory.open(sys.argv[1]); print(len(i.audit_entries())); i.close()"
)
_CHECKOUT = str(Path(__file__).resolve().parents[2])


def _entries_seen_by_another_process(path: Path) -> int:
    env = {**os.environ, "PYTHONPATH": _CHECKOUT}
    proc = subprocess.run([sys.executable, "-P", "-c", _READER, str(path)], capture_output=True, text=True,
                          env=env, timeout=60, check=True)  # fmt: skip
    return int(proc.stdout)


def test_a_second_open_here_leaves_the_first_connections_writes_visible(tmp_path: Path) -> None:
    path = tmp_path / "ca.db"
    with Inventory.open(path) as first:
        first.audit_append("one", {"n": 1})
        Inventory.open(path).close()  # e.g. snapshot() or register() next to an in-process server
        assert _entries_seen_by_another_process(path) == 1
        first.audit_append("two", {"n": 2})
        assert _entries_seen_by_another_process(path) == 2
        assert len(first.audit_entries()) == 2
