"""Two ``tokenissue ca serve`` replicas on one PostgreSQL database and one CA token, under
concurrent load and faults.

Everything is real: PostgreSQL from Debian's packages in a temporary directory, the CA key on
a SoftHSM token that both replica processes open, the replicas as subprocesses on 127.0.0.1
stopped by their PIDs, CMP over HTTP. What is proved after each run, from the database and from
what the clients received:

* no serial twice, and every certificate a client received is recorded exactly once (same
  fingerprint), and nothing is recorded that no client received;
* every registration code issued at most one certificate (a contested code: exactly one);
* the audit chain verifies (both replicas append to it concurrently).
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from tokenissue.ca.authority import CertificateAuthority
from tokenissue.models import RegistrationStatus

from support.cmp_server import served
from support.fleet import Attempt, Outcome, register_many, run_attempts
from support.lifecycle import TokenCA, make_token_ca
from support.postgres import PgServer
from support.softhsm import SOFTHSM_MODULE, SoftHSM

pytestmark = pytest.mark.slow


# The load tests stand for many client hosts, but every test client comes from 127.0.0.1: the
# per-address connection cap (--max-per-client, default 32) is off, as behind a load balancer.
MANY_CLIENTS = ("--max-per-client", "0")


@pytest.fixture

def pg_ca(softhsm: SoftHSM, pg_url: str) -> TokenCA:
    return make_token_ca(softhsm, database=pg_url)


def _check_books(ca: TokenCA, outcomes: list[Outcome]) -> dict[str, Any]:
    """The invariants every run must keep; returns counts for the test's own assertions."""
    with CertificateAuthority.open(ca.dir, module=SOFTHSM_MODULE) as authority:
        inv = authority.inventory
        records = inv.list_certificates()
        registrations = inv.list_registrations()
        audited = inv.audit_verify()
        audit = [e.action for e in inv.audit_entries()]
    serials = Counter(r.serial for r in records)
    assert not [s for s, n in serials.items() if n > 1], "a serial was recorded twice"
    recorded = Counter(r.sha256 for r in records)
    received = Counter(o.sha256 for o in outcomes if o.certificate is not None)
    assert all(n == 1 for n in received.values()), "two clients received the same certificate"
    assert recorded == received, "the certificates recorded are not the ones the clients received"
    by_ref = {r.ref: r for r in registrations}
    winners = Counter(o.attempt.reg.ref for o in outcomes if o.certificate is not None)
    assert all(n == 1 for n in winners.values()), "a registration code issued two certificates"
    for o in outcomes:
        if o.certificate is not None:
            reg = by_ref[o.attempt.reg.ref]
            assert reg.status is RegistrationStatus.USED and reg.serial == o.certificate.serial_number
    assert audit.count("issue") == len(records), "an issuance without its audit entry"
    return {"records": len(records), "audited": audited}


def test_two_replicas_200_concurrent_enrollments_contested_codes(pg_ca: TokenCA) -> None:
    regs = register_many(pg_ca.dir, 200, "Replica Load")
    # Every registration enrolls once, alternating replicas, half with certConf; 50 codes are
    # also used at the same time by a second client on the other replica: one of the two must
    # lose (the code is reserved by the first transaction, or consumed).
    attempts = [Attempt(reg, i % 2, implicit_confirm=i % 4 < 2) for i, reg in enumerate(regs)]
    contested = [Attempt(reg, (i + 1) % 2) for i, reg in enumerate(regs[:50])]
    mixed = [a for pair in zip(attempts[:50], contested, strict=True) for a in pair] + attempts[50:]
    with served(pg_ca, *MANY_CLIENTS) as one, served(pg_ca, *MANY_CLIENTS) as two:
        # As many clients as enrollments: all 200 (and the 50 contenders) in flight at once.
        outcomes = run_attempts([one.url, two.url], mixed, workers=200)
        logs = [one.access_log(), two.access_log()]
        scraped = [_metrics(s.url) for s in (one, two)]
    books = _check_books(pg_ca, outcomes)
    issued = [o for o in outcomes if o.certificate is not None]
    refused = [o for o in outcomes if o.certificate is None]
    assert books["records"] == len(issued) == 200, Counter(o.failure for o in refused)
    assert len(refused) == 50
    assert {o.failure for o in refused} <= {"notAuthorized", "badRequest"}, Counter((o.failure, o.text) for o in refused)
    # Each replica admits more requests at once (--max-concurrent, 256) than arrive here, and
    # idle kept-alive connections no longer count against it: a retry is a fault nobody injected.
    retries = Counter(why for o in outcomes for why in o.retried_on)
    assert not retries, f"no fault was injected, yet clients had to retry: {retries}"
    # Both replicas did a real share of the work.
    issued_by = [sum(1 for line in log if line.get("cmp_body") == "ir" and line["status"] == 200) for log in logs]
    assert min(issued_by) >= 50, issued_by
    for o in issued:
        assert o.certificate is not None
        o.certificate.verify_directly_issued_by(pg_ca.certificate)
    # What the monitoring sees agrees with the books: 200 issued across the replicas, none shed.
    assert sum(m["tokenissue_certificates_issued_total"] for m in scraped) == 200
    assert [m["tokenissue_cmp_shed_total"] for m in scraped] == [0, 0]


def _metrics(url: str) -> dict[str, float]:
    """The unlabelled samples of a replica's /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{url}/metrics", timeout=15).text
    return {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples if not s.labels}


def test_replica_killed_during_load_loses_and_doubles_nothing(pg_ca: TokenCA) -> None:
    regs = register_many(pg_ca.dir, 120, "Replica Kill")
    attempts = [Attempt(reg, i % 2) for i, reg in enumerate(regs)]
    with served(pg_ca, *MANY_CLIENTS) as victim, served(pg_ca, *MANY_CLIENTS) as survivor:
        urls = [victim.url, survivor.url]

        def kill_when_busy() -> None:
            # SIGKILL once the victim has answered some requests: a power cut in mid-load.
            deadline = time.monotonic() + 60
            while len(victim.access_log()) < 20 and time.monotonic() < deadline:
                time.sleep(0.02)
            victim.proc.send_signal(signal.SIGKILL)

        killer = threading.Thread(target=kill_when_busy)
        killer.start()
        outcomes = run_attempts(urls, attempts, workers=24)
        killer.join()
        assert victim.proc.wait(timeout=30) == -signal.SIGKILL
    books = _check_books(pg_ca, outcomes)
    assert [o.failure for o in outcomes if o.certificate is None] == []
    assert books["records"] == 120
    failed_over = [o for o in outcomes if o.retried_on]
    assert failed_over, "no client had to fail over from the killed replica; the test proved nothing"


def test_postgresql_restart_during_load(pg_ca: TokenCA, pg_server: PgServer) -> None:
    regs = register_many(pg_ca.dir, 120, "PG Restart")
    attempts = [Attempt(reg, i % 2) for i, reg in enumerate(regs)]
    with served(pg_ca, *MANY_CLIENTS) as one, served(pg_ca, *MANY_CLIENTS) as two:

        def restart_when_busy() -> None:
            deadline = time.monotonic() + 60
            while len(one.access_log()) + len(two.access_log()) < 30 and time.monotonic() < deadline:
                time.sleep(0.02)
            pg_server.stop()
            time.sleep(1.5)  # long enough for requests to find the database gone
            pg_server.start()

        restarter = threading.Thread(target=restart_when_busy)
        restarter.start()
        outcomes = run_attempts([one.url, two.url], attempts, workers=24)
        restarter.join()
        logs = one.access_log() + two.access_log()
        # Both replicas are ready again without a restart of their own.
        assert [httpx.get(f"{s.url}/health", timeout=15).json()["database"] for s in (one, two)] == ["ok", "ok"]
        stderr = one.stderr() + two.stderr()
    books = _check_books(pg_ca, outcomes)
    assert [o.failure for o in outcomes if o.certificate is None] == []
    assert books["records"] == 120
    unavailable = [line for line in logs if line.get("status") == 503]
    assert unavailable, "no request met the stopped database; the test proved nothing"
    assert all(line.get("failure_info") == "systemUnavail" for line in unavailable)
    errors = [line for line in logs if line.get("status") == 500]
    assert not errors, f"a database outage must be a 503, not a 500: {errors[:3]}\n{stderr[-3000:]}"
    assert "Traceback" not in stderr, stderr[-3000:]


def test_health_reports_an_unreachable_database(pg_ca: TokenCA, pg_server: PgServer) -> None:
    with served(pg_ca) as one:
        assert httpx.get(f"{one.url}/health").json()["database"] == "ok"
        pg_server.stop()
        try:
            r = httpx.get(f"{one.url}/health", timeout=15)
            assert r.status_code == 503 and r.json()["status"] == "unavailable"
            assert r.headers["retry-after"].isdigit()
        finally:
            pg_server.start()
        assert httpx.get(f"{one.url}/health", timeout=15).status_code == 200



def test_a_replica_without_the_ra_key_refuses_to_start(pg_ca: TokenCA, tmp_path: Path) -> None:
    """Codes are derived from ra.key: a replica set up from a copy of the CA directory made
    before ra.key existed would call every code wrong and lock the registrations."""
    register_many(pg_ca.dir, 1, "RA Key")  # creates ra.key, recorded (as a hash) in the database
    copy = tmp_path / "replica-ca"
    shutil.copytree(pg_ca.dir, copy)
    (copy / "ra.key").unlink()
    res = pg_ca.run("ca", "serve", "--ca-dir", str(copy), "--listen", "127.0.0.1:9")
    assert res.returncode == 3 and "copy ra.key" in res.stderr, res.stderr
    (copy / "ra.key").write_bytes(os.urandom(32))
    (copy / "ra.key").chmod(0o600)
    res = pg_ca.run("ca", "serve", "--ca-dir", str(copy), "--listen", "127.0.0.1:9")
    assert res.returncode == 3 and "not the one this CA's database was set up with" in res.stderr, res.stderr


def test_ca_init_refuses_a_database_that_holds_another_ca(pg_ca: TokenCA, tmp_path: Path) -> None:
    assert pg_ca.database is not None
    res = pg_ca.run("ca", "init", "--ca-dir", str(tmp_path / "second"), "--token", "ca", "--subject", "CN=Second CA",
                    "--db", pg_ca.database)  # fmt: skip
    assert res.returncode == 2 and "already holds a CA's inventory" in res.stderr, res.stderr
    assert len(pg_ca.private_keys("ca")) == 1  # no second CA key was made
    res = pg_ca.run("ca", "init", "--ca-dir", str(tmp_path / "third"), "--token", "ca", "--subject", "CN=Third CA",
                    "--db", "postgresql://user:secret@db.example/ca")  # fmt: skip
    assert res.returncode == 2 and "must not carry a password" in res.stderr and "secret" not in res.stderr
    res = pg_ca.run("ca", "init", "--ca-dir", str(tmp_path / "fourth"), "--token", "ca", "--subject", "CN=Fourth CA",
                    "--db", "postgresql://user@db.example/ca?password=secret")  # fmt: skip
    assert res.returncode == 2 and "must not carry a password" in res.stderr and "secret" not in res.stderr
