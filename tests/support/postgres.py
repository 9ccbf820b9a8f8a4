"""A real PostgreSQL server for the inventory, replica and fleet tests.

The inventory tests run on SQLite and on a PostgreSQL server the test session starts:
Debian's PostgreSQL 15 (/usr/lib/postgresql/15/bin, or TOKENISSUE_PG_BIN) in a temporary
directory on /dev/shm, listening only on a unix socket there, fsync off. PostgreSQL refuses to
run as root, so as root initdb and the server run as the `postgres` system user. The fixtures
(``pg_server`` for the session, ``pg_url`` a fresh database per test, ``db_url`` and
``ca_database`` parametrized over both backends) are in tests/conftest.py.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from support.softhsm import TMPFS

PG_BIN = Path(os.environ.get("TOKENISSUE_PG_BIN", "/usr/lib/postgresql/15/bin"))
PG_START_TIMEOUT = 30


@dataclass(frozen=True)
class PgServer:
    """A running server: its temporary root (where the unix socket is) and its data directory."""

    socket_dir: Path
    data_dir: Path

    def url(self, database: str) -> str:
        # A bare postgresql:// on purpose: Inventory.open must pick the psycopg driver itself.
        return f"postgresql://postgres@/{database}?host={self.socket_dir}"

    def stop(self) -> None:
        """Stop the server now (fast shutdown: open connections are cut), for the fault tests."""
        proc = _run([str(PG_BIN / "pg_ctl"), "-D", str(self.data_dir), "stop", "-m", "fast", "-w", "-t", "30"], pg_user(), 40)
        assert proc.returncode == 0, proc.stderr

    def start(self) -> None:
        """Start it again with the options it first ran with (pg_ctl keeps them in postmaster.opts)."""
        proc = _run(
            [str(PG_BIN / "pg_ctl"), "-D", str(self.data_dir), "-l", str(self.socket_dir / "server.log"), "-w",
             "-t", str(PG_START_TIMEOUT), "-o", _pg_options(self.socket_dir), "start"],
            pg_user(), PG_START_TIMEOUT + 10,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr + proc.stdout


def pg_user() -> str | None:
    """Who runs PostgreSQL: as root, the 'postgres' system user (initdb refuses root)."""
    return "postgres" if os.geteuid() == 0 else None


def _pg_options(socket_dir: Path) -> str:
    return (
        f"-c listen_addresses='' -c unix_socket_directories='{socket_dir}' -c fsync=off "
        "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
    )


def _run(cmd: list[str], user: str | None, timeout: float) -> subprocess.CompletedProcess[str]:
    if user is not None:
        cmd = ["runuser", "-u", user, "--", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


def start_pg() -> tuple[PgServer | None, str]:
    """Start the server; (server, "") or (None, why not)."""
    missing = [b for b in ("initdb", "pg_ctl", "postgres") if not (PG_BIN / b).is_file()]
    if missing:
        return None, f"PostgreSQL server binaries not found in {PG_BIN}: {', '.join(missing)}"
    user: str | None = None
    if os.geteuid() == 0:
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            return None, "running as root and there is no 'postgres' system user to run PostgreSQL as"
        if shutil.which("runuser") is None:
            return None, "running as root and runuser is missing"
        user = "postgres"
    root = Path(tempfile.mkdtemp(prefix="tokenissue-pg-", dir=TMPFS))
    if user is not None:
        os.chown(root, pw.pw_uid, pw.pw_gid)
    data = root / "data"
    # The socket path must stay under ~107 bytes; /dev/shm/tokenissue-pg-XXXXXXXX is short.
    initdb = _run(
        [str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres",
         "--no-locale", "-E", "UTF8", "--no-sync"],
        user, 60,
    )
    if initdb.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        return None, f"initdb failed: {initdb.stderr.strip()[-500:]}"
    options = _pg_options(root)
    log = root / "server.log"
    try:
        start = _run(
            [str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", str(PG_START_TIMEOUT),
             "-o", options, "start"],
            user, PG_START_TIMEOUT + 10,
        )
        started = start.returncode == 0
        why = start.stderr.strip() or start.stdout.strip()
    except subprocess.TimeoutExpired:
        started, why = False, "timed out"
    if not started:
        tail = log.read_text(errors="replace")[-800:] if log.exists() else ""
        stop_pg(PgServer(root, data), user)
        return None, f"PostgreSQL did not start within {PG_START_TIMEOUT} s: {why} {tail}".strip()
    return PgServer(root, data), ""


def stop_pg(server: PgServer, user: str | None) -> None:
    # pg_ctl finds the postmaster through data/postmaster.pid.
    if (server.data_dir / "postmaster.pid").exists():
        _run([str(PG_BIN / "pg_ctl"), "-D", str(server.data_dir), "stop", "-m", "fast", "-w", "-t", "30"], user, 40)
    shutil.rmtree(server.socket_dir, ignore_errors=True)


def pg_admin(server: PgServer, sql: str) -> None:
    """Run one statement as the 'postgres' superuser, outside any transaction (CREATE DATABASE)."""
    import psycopg

    with psycopg.connect(host=str(server.socket_dir), user="postgres", dbname="postgres", autocommit=True) as conn:
        conn.execute(sql.encode())  # fixed test SQL built from a uuid, no user input
