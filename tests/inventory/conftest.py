"""Run the inventory tests on SQLite and on a real PostgreSQL server this session starts.

The server is Debian's PostgreSQL 15 (``/usr/lib/postgresql/15/bin``, or ``TOKENISSUE_PG_BIN``)
in a temporary directory on /dev/shm, listening only on a unix socket in that directory,
with fsync off. PostgreSQL refuses to run as root, so as root initdb and the server run as
the ``postgres`` system user. Each test gets its own database, dropped afterwards. Without
the binaries, or when the server does not come up in 30 s, the PostgreSQL cases are skipped
with the reason.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

PG_BIN = Path(os.environ.get("TOKENISSUE_PG_BIN", "/usr/lib/postgresql/15/bin"))
PG_START_TIMEOUT = 30
TMPFS = Path("/dev/shm") if Path("/dev/shm").is_dir() else None


@dataclass(frozen=True)
class PgServer:
    socket_dir: Path
    data_dir: Path

    def url(self, database: str) -> str:
        # A bare postgresql:// on purpose: Inventory.open must pick the psycopg driver itself.
        return f"postgresql://postgres@/{database}?host={self.socket_dir}"


def _run(cmd: list[str], user: str | None, timeout: float) -> subprocess.CompletedProcess[str]:
    if user is not None:
        cmd = ["runuser", "-u", user, "--", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


def _start_pg() -> tuple[PgServer | None, str]:
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
    options = (
        f"-c listen_addresses='' -c unix_socket_directories='{root}' -c fsync=off "
        "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
    )
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
        _stop_pg(PgServer(root, data), user)
        return None, f"PostgreSQL did not start within {PG_START_TIMEOUT} s: {why} {tail}".strip()
    return PgServer(root, data), ""


def _stop_pg(server: PgServer, user: str | None) -> None:
    # pg_ctl finds the postmaster through data/postmaster.pid.
    if (server.data_dir / "postmaster.pid").exists():
        _run([str(PG_BIN / "pg_ctl"), "-D", str(server.data_dir), "stop", "-m", "fast", "-w", "-t", "30"], user, 40)
    shutil.rmtree(server.socket_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    server, why = _start_pg()
    if server is None:
        pytest.skip(why)
    user = "postgres" if os.geteuid() == 0 else None

    def on_sigterm(signum: int, _frame: object) -> None:
        # A session killed by a CI timeout would otherwise leave the server running.
        _stop_pg(server, user)
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield server
    finally:
        signal.signal(signal.SIGTERM, previous)
        _stop_pg(server, user)


def _admin(server: PgServer, sql: str) -> None:
    import psycopg

    with psycopg.connect(host=str(server.socket_dir), user="postgres", dbname="postgres", autocommit=True) as conn:
        conn.execute(sql.encode())  # fixed test SQL built from a uuid, no user input


@pytest.fixture
def pg_url(pg_server: PgServer) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test."""
    name = f"t_{uuid.uuid4().hex}"
    _admin(pg_server, f'CREATE DATABASE "{name}" STRATEGY FILE_COPY')
    try:
        yield pg_server.url(name)
    finally:
        # FORCE: a test that failed half-way may still hold connections.
        _admin(pg_server, f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where the inventory lives: a SQLite file path, or a PostgreSQL URL."""
    if request.param == "sqlite":
        return str(tmp_path / "inventory.db")
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def inv(db_url: str) -> Iterator[Any]:
    from tokenissue.inventory import Inventory

    inventory = Inventory.open(db_url)
    yield inventory
    inventory.close()
