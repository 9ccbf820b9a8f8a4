"""The inventory on SQLite and PostgreSQL: every method round-trips, conflicts are refused, the
audit chain detects tampering and concurrent writers share it; on SQLite the file is private."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tokenissue.errors import InventoryError, NotFound, RequestRejected
from tokenissue.inventory import DuplicateRequest, Inventory, audit_hash
from tokenissue.inventory._migrate import HEAD_REVISION
from tokenissue.models import CertRecord, CertStatus, RevocationReason

from support.inventory import raw, sa_url, schema_snapshot
from support.postgres import PgServer

T = TypeVar("T")
T0 = datetime(2025, 1, 1, tzinfo=UTC)
BIG_SERIAL = (1 << 159) + 12345  # a 160-bit-ish serial: overflows BIGINT


def cert(serial: int, **kw: object) -> CertRecord:
    fields: dict[str, object] = {
        "serial": serial,
        "subject": f"CN=holder {serial}",
        "issuer": "CN=Test CA",
        "not_before": T0 + timedelta(days=serial % 1000),
        "not_after": T0 + timedelta(days=365 + serial % 1000),
        "sha256": f"{serial:064x}"[-64:],
        "profile": "tls-client",
        "der": b"\x30\x82" + serial.to_bytes(32, "big"),
    }
    fields.update(kw)
    return CertRecord(**fields)  # type: ignore[arg-type]


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "inventory.db"


def sqlite_raw(db_path: Path, sql: str) -> list[tuple[object, ...]]:
    """SQLite-only SQL (PRAGMA, sqlite_master) with the plain sqlite3 module."""
    conn = sqlite3.connect(db_path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


# -- opening, files and migrations ---------------------------------------------------------


def test_new_file_is_owner_only(db_path: Path) -> None:
    old = os.umask(0o022)
    try:
        Inventory.open(db_path).close()
    finally:
        os.umask(old)
    assert stat.S_IMODE(db_path.stat().st_mode) == 0o600


def test_existing_loose_file_is_tightened(db_path: Path) -> None:
    db_path.touch()
    db_path.chmod(0o644)
    Inventory.open(db_path).close()
    assert stat.S_IMODE(db_path.stat().st_mode) == 0o600


def test_sqlite_url_and_missing_parent(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "inv.db"
    with Inventory.open(f"sqlite:///{path}") as inv:
        inv.set_setting("k", "v")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with Inventory.open(path) as inv:
        assert inv.get_setting("k") == "v"


def test_wal_and_foreign_keys(db_path: Path) -> None:
    with Inventory.open(db_path):
        assert sqlite_raw(db_path, "PRAGMA journal_mode") == [("wal",)]


@pytest.mark.parametrize(
    ("location", "message"),
    [
        ("foo bar://user:hunter2@host/db", "neither a path nor a database URL"),
        ("postgresql://user:hunter2@host:port/db", "neither a path nor a database URL"),
        ("nosuchdb://user:hunter2@host/db", "does not know the database kind"),
    ],
)
def test_bad_location_is_inventory_error(location: str, message: str) -> None:
    with pytest.raises(InventoryError, match=message) as info:
        Inventory.open(location)
    assert "hunter2" not in str(info.value)
    assert info.value.exit_code == 7


def test_missing_driver_is_inventory_error() -> None:
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("psycopg2 is installed")
    with pytest.raises(InventoryError, match="driver") as info:
        Inventory.open("postgresql+psycopg2://user:hunter2@localhost/inv")
    assert "hunter2" not in str(info.value)


def test_unwritable_path_is_inventory_error(tmp_path: Path) -> None:
    # The tests may run as root, which ignores permission bits, so the parent is a file.
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("x")
    with pytest.raises(InventoryError) as info:
        Inventory.open(blocker / "inventory.db")
    assert info.value.exit_code == 7
    assert str(blocker) in str(info.value)
    assert "check the path" in str(info.value)
    assert info.value.__cause__ is not None


def test_not_a_database_is_inventory_error(db_path: Path) -> None:
    db_path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(InventoryError) as info:
        Inventory.open(db_path)
    assert info.value.exit_code == 7


def test_migration_rerun_is_noop(db_path: Path) -> None:
    with Inventory.open(db_path) as inv:
        inv.add_certificate(cert(1))
        inv.audit_append("init", {"n": 1})
    schema = sqlite_raw(db_path, "SELECT type, name, sql FROM sqlite_master ORDER BY name")
    with Inventory.open(db_path) as inv:
        assert inv.get_certificate(1) is not None
        assert inv.audit_verify() == 1
    assert sqlite_raw(db_path, "SELECT type, name, sql FROM sqlite_master ORDER BY name") == schema
    assert sqlite_raw(db_path, "SELECT version_num FROM alembic_version") == [(HEAD_REVISION,)]


def test_migration_from_empty_and_rerun_is_noop(db_url: str) -> None:
    """On every backend: an empty database migrates to head, and opening again changes nothing."""
    assert schema_snapshot(db_url) == {}
    with Inventory.open(db_url) as inv:
        inv.add_certificate(cert(1))
        inv.audit_append("init", {"n": 1})
    schema = schema_snapshot(db_url)
    assert set(schema) == {
        "alembic_version", "audit", "certificates", "cmp_transactions", "counters", "journal",
        "pending_requests", "registrations", "settings",
    }
    with Inventory.open(db_url) as inv:
        assert inv.get_certificate(1) is not None
        assert inv.audit_verify() == 1
    assert schema_snapshot(db_url) == schema
    assert raw(db_url, "SELECT version_num FROM alembic_version") == [(HEAD_REVISION,)]


def test_concurrent_opens_of_a_new_database_migrate_once(db_url: str) -> None:
    """Several processes opening a brand-new inventory at once: one migrates, the rest wait.

    On SQLite, ten brand-new files in a row: the race this guards (a switch to WAL answered
    "database is locked" at once, without the busy handler, while another connection created
    the file) struck about 1 open in 15."""
    urls = [db_url] if "://" in db_url else [f"{db_url}.{i}" for i in range(10)]
    for url in urls:
        errors: list[BaseException] = []
        barrier = threading.Barrier(4)

        def work(target: str = url, barrier: threading.Barrier = barrier, errors: list[BaseException] = errors) -> None:
            try:
                barrier.wait()
                Inventory.open(target).close()
            except BaseException as e:  # collected and asserted on below
                errors.append(e)

        threads = [threading.Thread(target=work, daemon=True) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert not any(t.is_alive() for t in threads), "concurrent migrations hung"
        assert errors == [], url
        assert raw(url, "SELECT version_num FROM alembic_version") == [(HEAD_REVISION,)]


def test_migration_matches_schema_module(db_url: str, inv: Inventory) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlalchemy import create_engine

    from tokenissue.inventory._schema import metadata

    engine = create_engine(sa_url(db_url))
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": False})
            assert compare_metadata(ctx, metadata) == []
    finally:
        engine.dispose()


def test_newer_schema_is_refused(db_url: str) -> None:
    Inventory.open(db_url).close()
    raw(db_url, "UPDATE alembic_version SET version_num = '9999'")
    with pytest.raises(InventoryError, match="newer tokenissue") as info:
        Inventory.open(db_url)
    assert info.value.exit_code == 7


# -- certificates --------------------------------------------------------------------------


def test_certificate_round_trip_all_fields(inv: Inventory) -> None:
    cest = timezone(timedelta(hours=2))
    rec = cert(
        BIG_SERIAL,
        not_before=datetime(2025, 3, 1, 14, 0, 0, 123456, tzinfo=cest),
        not_after=datetime(2026, 3, 1, 12, 0, tzinfo=UTC),
        token_serial="0123456789abcdef",
        key_id=b"\x00\x01\xfe",
        label="signing",
        request_id="req-1",
        replaces=(1 << 158) + 7,
    )
    inv.add_certificate(rec)
    got = inv.get_certificate(BIG_SERIAL)
    assert got == rec
    assert got is not None
    assert got.not_before.tzinfo is UTC
    assert got.not_before == datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
    assert inv.get_certificate(999) is None
    assert inv.serial_exists(BIG_SERIAL)
    assert not inv.serial_exists(BIG_SERIAL + 1)


def test_duplicate_serial_refused(inv: Inventory) -> None:
    inv.add_certificate(cert(5, request_id="a"))
    with pytest.raises(InventoryError, match="already issued") as info:
        inv.add_certificate(cert(5, request_id="b"))
    assert not isinstance(info.value, DuplicateRequest)
    assert info.value.exit_code == 7
    assert inv.find_by_request("b") is None


def test_duplicate_request_refused(inv: Inventory) -> None:
    inv.add_certificate(cert(5, request_id="req"))
    with pytest.raises(DuplicateRequest) as info:
        inv.add_certificate(cert(6, request_id="req"))
    assert info.value.request_id == "req"
    assert isinstance(info.value, InventoryError)
    assert not inv.serial_exists(6)


def test_many_certificates_without_request(inv: Inventory) -> None:
    for serial in (1, 2, 3):
        inv.add_certificate(cert(serial))
    assert len(inv.list_certificates()) == 3


def test_find_by_request(inv: Inventory) -> None:
    rec = cert(10, request_id="enroll-42")
    inv.add_certificate(rec)
    assert inv.find_by_request("enroll-42") == rec
    assert inv.find_by_request("nope") is None


def test_list_filters_and_order(inv: Inventory) -> None:
    a = cert(30, not_before=T0 + timedelta(days=3), not_after=T0 + timedelta(days=10),
             token_serial="tok1", key_id=b"\x01")
    b = cert(20, not_before=T0 + timedelta(days=1), not_after=T0 + timedelta(days=100),
             token_serial="tok1", key_id=b"\x02")
    c = cert(10, not_before=T0 + timedelta(days=2), not_after=T0 + timedelta(days=5),
             token_serial="tok2", key_id=b"\x01")
    for rec in (a, b, c):
        inv.add_certificate(rec)
    inv.revoke(10, RevocationReason.SUPERSEDED, T0 + timedelta(days=4))

    assert [r.serial for r in inv.list_certificates()] == [20, 10, 30]
    assert [r.serial for r in inv.list_certificates(status=CertStatus.VALID)] == [20, 30]
    assert [r.serial for r in inv.list_certificates(status=CertStatus.REVOKED)] == [10]
    soon = T0 + timedelta(days=10)
    assert [r.serial for r in inv.list_certificates(expiring_before=soon)] == [10]
    assert [r.serial for r in inv.list_certificates(token_serial="tok1")] == [20, 30]
    assert [r.serial for r in inv.list_certificates(key_id=b"\x01")] == [10, 30]
    assert [
        r.serial
        for r in inv.list_certificates(
            status=CertStatus.VALID, token_serial="tok1", key_id=b"\x01",
            expiring_before=T0 + timedelta(days=11),
        )
    ] == [30]


def test_revoke_and_idempotence(inv: Inventory) -> None:
    inv.add_certificate(cert(7))
    first = inv.revoke(7, RevocationReason.KEY_COMPROMISE, T0 + timedelta(days=1))
    assert first.status is CertStatus.REVOKED
    assert first.revocation_reason is RevocationReason.KEY_COMPROMISE
    assert first.revoked_at == T0 + timedelta(days=1)
    again = inv.revoke(7, RevocationReason.SUPERSEDED, T0 + timedelta(days=2))
    assert again == first
    assert inv.get_certificate(7) == first


def test_revoke_unknown_is_not_found(inv: Inventory) -> None:
    with pytest.raises(NotFound):
        inv.revoke(404, RevocationReason.UNSPECIFIED, T0)


# -- re-issue: the new certificate recorded and the old one superseded, at once -------------


def test_add_superseding_records_the_new_and_revokes_the_old_in_one_go(inv: Inventory) -> None:
    inv.add_certificate(cert(7))
    at = T0 + timedelta(days=30)
    old = inv.add_superseding(
        cert(8, request_id="r8"), 7, at,
        audit=("issue", {"serial": "8", "reissue_of": "7"}),
        revoke_audit=("revoke", {"serial": "7", "reason": "superseded", "superseded_by": "8"}),
    )  # fmt: skip
    assert (old.serial, old.status, old.revocation_reason, old.revoked_at) == (
        7, CertStatus.REVOKED, RevocationReason.SUPERSEDED, at,
    )  # fmt: skip
    new = inv.get_certificate(8)
    assert new is not None and new.status is CertStatus.VALID
    assert [(e.action, e.details) for e in inv.audit_entries()] == [
        ("issue", {"serial": "8", "reissue_of": "7"}),
        ("revoke", {"serial": "7", "reason": "superseded", "superseded_by": "8"}),
    ]
    assert inv.audit_verify() == 2


def _unchanged(inv: Inventory, *, old: int, new: int) -> None:
    """The old certificate still valid, no new one, no audit entry: nothing of the re-issue happened."""
    kept = inv.get_certificate(old)
    assert kept is not None and kept.status is CertStatus.VALID and kept.revoked_at is None
    assert inv.get_certificate(new) is None
    assert inv.audit_entries() == []


def test_add_superseding_refuses_an_old_certificate_no_longer_valid(inv: Inventory) -> None:
    inv.add_certificate(cert(7))
    inv.add_certificate(cert(9))
    inv.revoke(9, RevocationReason.KEY_COMPROMISE, T0)
    with pytest.raises(RequestRejected, match="is revoked; nothing was issued"):
        inv.add_superseding(cert(10), 9, T0 + timedelta(days=1))
    # Expired at the moment of the re-issue: refused as well.
    with pytest.raises(RequestRejected, match="no longer valid"):
        inv.add_superseding(cert(10), 7, T0 + timedelta(days=400))
    with pytest.raises(NotFound):
        inv.add_superseding(cert(10), 404, T0)
    assert inv.get_certificate(10) is None
    _unchanged(inv, old=7, new=10)


def test_a_failure_while_recording_a_reissue_leaves_the_old_certificate_valid(
    inv: Inventory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The old certificate is revoked first and the new one inserted after, in one transaction:
    when the insert fails (a serial already recorded), or the last audit entry cannot be written,
    the revocation is rolled back with it: there is never a moment with neither valid."""
    inv.add_certificate(cert(7))
    inv.add_certificate(cert(8))
    with pytest.raises(InventoryError, match="already issued"):
        inv.add_superseding(cert(8), 7, T0 + timedelta(days=1))
    kept = inv.get_certificate(7)
    assert kept is not None and kept.status is CertStatus.VALID

    from tokenissue.inventory import _certificates

    real = _certificates.append_audit
    calls: list[str] = []

    def failing(conn: Any, action: str, details: Any) -> Any:
        calls.append(action)
        if action == "revoke":
            raise RuntimeError("the database went away")
        return real(conn, action, details)

    monkeypatch.setattr(_certificates, "append_audit", failing)
    with pytest.raises(RuntimeError):
        inv.add_superseding(
            cert(11), 7, T0 + timedelta(days=1), audit=("issue", {"serial": "b"}), revoke_audit=("revoke", {"serial": "7"})
        )
    assert calls == ["issue", "revoke"]
    _unchanged(inv, old=7, new=11)


def test_naive_datetimes_and_bad_serials_refused(inv: Inventory) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        inv.add_certificate(cert(1, not_before=datetime(2025, 1, 1)))
    inv.add_certificate(cert(1))
    with pytest.raises(ValueError, match="timezone-aware"):
        inv.revoke(1, RevocationReason.UNSPECIFIED, datetime(2025, 1, 1))
    with pytest.raises(ValueError, match="timezone-aware"):
        inv.list_certificates(expiring_before=datetime(2025, 1, 1))
    with pytest.raises(ValueError, match="serial"):
        inv.get_certificate(-1)


def test_crl_number_is_monotonic_and_persistent(db_url: str) -> None:
    with Inventory.open(db_url) as inv:
        assert [inv.next_crl_number() for _ in range(3)] == [1, 2, 3]
    with Inventory.open(db_url) as inv:
        assert inv.next_crl_number() == 4


@pytest.mark.parametrize("writers", [2, 8])
def test_crl_numbers_unique_across_writers(db_url: str, writers: int) -> None:
    Inventory.open(db_url).close()
    got: list[int] = []
    lock = threading.Lock()

    def work() -> None:
        with Inventory.open(db_url) as mine:
            numbers = [mine.next_crl_number() for _ in range(25)]
        assert numbers == sorted(numbers)  # each writer sees its numbers only grow
        with lock:
            got.extend(numbers)

    threads = [threading.Thread(target=work) for _ in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == list(range(1, 25 * writers + 1))


# -- journal -------------------------------------------------------------------------------


def test_journal_lifecycle(inv: Inventory) -> None:
    entry = inv.journal_start("enroll", {"token": "tok1", "profile": "tls-client"})
    assert len(entry.id) == 32
    assert entry.state == "started"
    assert entry.params == {"token": "tok1", "profile": "tls-client"}
    assert entry.data == {}
    assert not entry.finished
    assert entry.created_at.tzinfo is UTC

    step1 = inv.journal_update(entry.id, "key-generated", key_id="0a0b")
    step2 = inv.journal_update(entry.id, "csr-made", csr="MIIB", key_id="0a0c")
    assert step1.data == {"key_id": "0a0b"}
    assert step2.state == "csr-made"
    assert step2.data == {"key_id": "0a0c", "csr": "MIIB"}
    assert step2.updated_at >= step1.updated_at >= entry.created_at
    assert inv.journal_get(entry.id) == step2
    assert inv.journal_get("missing") is None

    done = inv.journal_finish(entry.id)
    assert done.finished and done.state == "done"
    assert inv.journal_finish(entry.id, "other") == done
    assert inv.journal_open() == []
    with pytest.raises(InventoryError, match="already finished"):
        inv.journal_update(entry.id, "again")


def test_journal_open_order_and_kind(inv: Inventory) -> None:
    a = inv.journal_start("enroll", {}, id="a")
    b = inv.journal_start("renew", {"serial": "0x10"}, id="b")
    c = inv.journal_start("enroll", {}, id="c")
    inv.journal_finish("c", "failed")
    assert [e.id for e in inv.journal_open()] == [a.id, b.id]
    assert [e.id for e in inv.journal_open("enroll")] == ["a"]
    assert inv.journal_get(c.id) is not None
    with pytest.raises(InventoryError):
        inv.journal_start("enroll", {}, id="a")


def test_journal_unknown_id(inv: Inventory) -> None:
    with pytest.raises(InventoryError, match="No journal entry"):
        inv.journal_update("nope", "x")
    with pytest.raises(InventoryError, match="No journal entry"):
        inv.journal_finish("nope")


def test_journal_refuses_secrets_and_non_json(inv: Inventory) -> None:
    with pytest.raises(ValueError, match="secrets"):
        inv.journal_start("enroll", {"user_pin": "123456"})
    entry = inv.journal_start("enroll", {})
    with pytest.raises(ValueError, match="secrets"):
        inv.journal_update(entry.id, "x", registration_code="abc")
    with pytest.raises(ValueError, match="JSON"):
        inv.journal_update(entry.id, "x", csr=b"\x30")


# -- audit log -----------------------------------------------------------------------------


def test_audit_chain_round_trip(inv: Inventory) -> None:
    assert inv.audit_verify() == 0
    first = inv.audit_append("issue", {"serial": "0x1", "subject": "CN=é", "n": [1, 2]})
    second = inv.audit_append("revoke", {"serial": "0x1", "reason": "superseded"})
    assert first.seq == 1 and second.seq == 2
    assert first.prev_hash == "0" * 64
    assert second.prev_hash == first.hash
    assert first.hash == audit_hash(1, first.at, "issue", first.details, "0" * 64)
    assert inv.audit_entries() == [first, second]
    assert inv.audit_verify() == 2


@pytest.mark.parametrize(
    "key",
    ["pin", "PIN", "so_pin", "userPin", "newPIN", "auth-code", "registrationCode", "secret",
     "client_secret", "password", "dbPassword", "passphrase", "puk"],
)
def test_audit_refuses_secret_keys(inv: Inventory, key: str) -> None:
    with pytest.raises(ValueError, match="secrets"):
        inv.audit_append("login", {key: "x"})
    with pytest.raises(ValueError, match="secrets"):
        inv.audit_append("login", {"outer": [{key: "x"}]})
    assert inv.audit_entries() == []


def test_audit_allows_ordinary_keys(inv: Inventory) -> None:
    details = {"token_serial": "1", "key_id": "01", "spinner": 1, "decoder": 2,
               "pin_state": "count-low", "pin_count_low": True, "code_length": 8}
    inv.audit_append("x", details)
    assert inv.audit_verify() == 1


def _chain(db_url: str, n: int = 5) -> None:
    with Inventory.open(db_url) as inv:
        for i in range(1, n + 1):
            inv.audit_append("issue", {"serial": hex(i)})


def _verify_error(db_url: str) -> str:
    with Inventory.open(db_url) as inv, pytest.raises(InventoryError) as info:
        inv.audit_verify()
    assert info.value.exit_code == 7
    return str(info.value)


def test_audit_detects_altered_details(db_url: str) -> None:
    _chain(db_url)
    raw(db_url, "UPDATE audit SET details = :d WHERE seq = 3", {"d": '{"serial":"0x99"}'})
    assert "entry 3 was altered" in _verify_error(db_url)


def test_audit_detects_altered_time(db_url: str) -> None:
    _chain(db_url)
    raw(db_url, "UPDATE audit SET at = '2020-01-01T00:00:00.000000Z' WHERE seq = 2")
    assert "entry 2 was altered" in _verify_error(db_url)


def test_audit_detects_removed_middle_entry(db_url: str) -> None:
    _chain(db_url)
    raw(db_url, "DELETE FROM audit WHERE seq = 3")
    assert "entry 3 was removed" in _verify_error(db_url)


def test_audit_detects_removed_last_entry(db_url: str) -> None:
    _chain(db_url)
    raw(db_url, "DELETE FROM audit WHERE seq = 5")
    assert "entry 5 was removed" in _verify_error(db_url)


def test_audit_detects_removed_everything(db_url: str) -> None:
    _chain(db_url)
    raw(db_url, "DELETE FROM audit")
    assert "entry 1 was removed" in _verify_error(db_url)


def test_audit_detects_reordering(db_url: str) -> None:
    _chain(db_url)
    # Swap the content of entries 2 and 3 but keep each one's own seq and hash consistent,
    # as someone who knows the hash format would: only the links betray it.
    rows = raw(db_url, "SELECT seq, at, action, details, prev_hash FROM audit ORDER BY seq")
    by_seq = {r[0]: r for r in rows}

    def rehash(seq: int, src: tuple[object, ...]) -> None:
        # SQLite returns the stored ISO text, PostgreSQL a timestamptz.
        at = src[1] if isinstance(src[1], datetime) else datetime.fromisoformat(str(src[1]))
        details = json.loads(str(src[3]))
        digest = audit_hash(seq, at, str(src[2]), details, str(src[4]))
        raw(db_url, "UPDATE audit SET at=:at, action=:action, details=:details, prev_hash=:prev, hash=:hash "
                    "WHERE seq=:seq",
            {"at": src[1], "action": src[2], "details": src[3], "prev": src[4], "hash": digest, "seq": seq})

    rehash(2, by_seq[3])
    rehash(3, by_seq[2])
    assert "entry 2 does not follow entry 1" in _verify_error(db_url)


def test_audit_detects_removed_head(db_url: str) -> None:
    _chain(db_url)
    raw(db_url, "DELETE FROM settings WHERE key = 'inventory.audit_head'")
    assert "head record was removed" in _verify_error(db_url)


def test_concurrent_audit_appends_make_one_chain(db_url: str) -> None:
    Inventory.open(db_url).close()
    errors: list[BaseException] = []

    def work(name: str) -> None:
        try:
            with Inventory.open(db_url) as mine:
                for i in range(50):
                    mine.audit_append("tick", {"writer": name, "i": i})
        except BaseException as e:  # collected and asserted on below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with Inventory.open(db_url) as inv:
        assert inv.audit_verify() == 100
        entries = inv.audit_entries()
    assert [e.seq for e in entries] == list(range(1, 101))
    assert sorted((e.details["writer"], e.details["i"]) for e in entries) == sorted(
        (w, i) for w in ("a", "b") for i in range(50)
    )


# -- settings ------------------------------------------------------------------------------


def test_settings_round_trip(inv: Inventory) -> None:
    assert inv.get_setting("ca.name") is None
    inv.set_setting("ca.name", "Test CA")
    inv.set_setting("ca.name", "Renamed CA")
    inv.set_setting("ca.serial_bits", "159")
    assert inv.get_setting("ca.name") == "Renamed CA"
    assert inv.get_setting("ca.serial_bits") == "159"


def test_settings_reserved_prefix(inv: Inventory) -> None:
    with pytest.raises(ValueError, match="reserved"):
        inv.set_setting("inventory.audit_head", "{}")


def test_head_revision_constant_matches_alembic() -> None:
    """The fast path that skips importing Alembic trusts HEAD_REVISION; it must be the real head."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from tokenissue.inventory._migrate import HEAD_REVISION, MIGRATIONS_DIR

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    assert ScriptDirectory.from_config(cfg).get_heads() == [HEAD_REVISION]


def test_reopen_at_head_does_not_import_alembic(db_url: str) -> None:
    import subprocess
    import sys

    Inventory.open(db_url).close()
    code = (
        "import sys; from tokenissue.inventory import Inventory; "
        f"Inventory.open({db_url!r}).close(); print('alembic' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_certificate_and_its_audit_entry_are_one_transaction(inv: Inventory) -> None:
    """An issuance is never on record without its audit entry, nor the other way round."""
    inv.add_certificate(cert(0x51), audit=("issue", {"serial": "51"}))
    assert inv.get_certificate(0x51) is not None
    assert [(e.action, e.details) for e in inv.audit_entries()] == [("issue", {"serial": "51"})]
    # An audit entry that cannot be written takes the certificate down with it.
    with pytest.raises(ValueError):
        inv.add_certificate(cert(0x52), audit=("issue", {"pin": "x"}))
    assert inv.get_certificate(0x52) is None
    inv.revoke(0x51, RevocationReason.KEY_COMPROMISE, datetime.now(UTC), audit=("revoke", {"serial": "51"}))
    assert [e.action for e in inv.audit_entries()] == ["issue", "revoke"]
    assert inv.audit_verify() == 2


def _race(db_url: str, n: int, work: Callable[[Inventory, int], T]) -> list[T]:
    """Run ``work(inventory, i)`` in n threads at once, each with its own Inventory."""
    inventories = [Inventory.open(db_url) for _ in range(n)]
    barrier = threading.Barrier(n)
    results: list[T] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def run(i: int) -> None:
        try:
            barrier.wait()
            out = work(inventories[i], i)
            with lock:
                results.append(out)
        except BaseException as e:  # asserted on below
            with lock:
                errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    for inventory in inventories:
        inventory.close()
    assert errors == []
    return results


def test_concurrent_revocations_keep_the_first(db_url: str) -> None:
    """Racing revocations of one certificate: one wins, the rest return its reason and time
    unchanged, and only the winner writes an audit entry."""
    with Inventory.open(db_url) as inv:
        inv.add_certificate(cert(0x77))
    reasons = list(RevocationReason)

    def revoke(inventory: Inventory, i: int) -> CertRecord:
        return inventory.revoke(
            0x77, reasons[i % len(reasons)], T0 + timedelta(seconds=i), audit=("revoke", {"i": i})
        )

    results = _race(db_url, 8, revoke)
    with Inventory.open(db_url) as inv:
        final = inv.get_certificate(0x77)
        entries = inv.audit_entries()
        assert inv.audit_verify() == 1
    assert len(entries) == 1
    assert final is not None and final.revoked_at == T0 + timedelta(seconds=int(str(entries[0].details["i"])))
    assert all(r == final for r in results)


def test_concurrent_journal_updates_lose_nothing(db_url: str) -> None:
    with Inventory.open(db_url) as inv:
        entry = inv.journal_start("enroll", {})
    _race(db_url, 8, lambda inventory, i: inventory.journal_update(entry.id, f"step{i}", **{f"k{i}": i}))
    with Inventory.open(db_url) as inv:
        got = inv.journal_get(entry.id)
    assert got is not None and got.data == {f"k{i}": i for i in range(8)}


def test_concurrent_writers_of_a_new_setting(db_url: str) -> None:
    """The portable UPDATE-then-INSERT upsert must not fail when two writers create a key."""
    _race(db_url, 8, lambda inventory, i: inventory.set_setting("ca.name", f"CA {i}"))
    with Inventory.open(db_url) as inv:
        assert inv.get_setting("ca.name") in {f"CA {i}" for i in range(8)}


def test_value_too_long_for_postgresql_is_inventory_error(pg_url: str) -> None:
    """PostgreSQL enforces column widths (SQLite does not): the error says what is wrong."""
    with Inventory.open(pg_url) as inv, pytest.raises(InventoryError, match="does not fit its column") as info:
        inv.journal_start("k" * 33, {})
    assert info.value.exit_code == 7


def test_bare_postgresql_url_uses_psycopg(pg_url: str) -> None:
    assert pg_url.startswith("postgresql://")
    with Inventory.open(pg_url) as inv:
        assert inv._engine.dialect.driver == "psycopg"
        assert "psycopg" in inv._where and "postgresql" in inv._where


def test_wrong_postgresql_settings_are_not_called_an_outage(pg_server: PgServer) -> None:
    """A database or role that does not exist is a setting to fix, not a retryable outage
    (a CA server would otherwise answer 503 for ever and clients retry); a server that is
    not there at all is an outage."""
    from tokenissue.errors import InventoryError
    from tokenissue.inventory import Inventory, InventoryUnavailable

    with pytest.raises(InventoryError) as wrong:
        Inventory.open(pg_server.url("no_such_database"))
    assert not isinstance(wrong.value, InventoryUnavailable), wrong.value
    assert "does not exist" in str(wrong.value)
    with pytest.raises(InventoryUnavailable, match="unreachable or restarting"):
        Inventory.open("postgresql://postgres@/x?host=/nonexistent-socket-dir")


def test_setting_default_keeps_the_first_value(inv: Any) -> None:
    assert inv.setting_default("ra.key_id", "first") == "first"
    assert inv.setting_default("ra.key_id", "second") == "first"
    assert inv.get_setting("ra.key_id") == "first"
    with pytest.raises(ValueError):
        inv.setting_default("inventory.audit_head", "x")


# -- exclusive(): one holder across processes --------------------------------------------------
def test_exclusive_excludes_another_holder_and_is_freed_when_its_process_dies(db_url: str) -> None:
    import signal
    import subprocess
    import sys
    import textwrap

    from tokenissue.errors import TokenBusy

    busy = TokenBusy("busy")
    with Inventory.open(db_url) as first, Inventory.open(db_url) as second:
        with first.exclusive("enroll:A", busy=busy):
            with pytest.raises(TokenBusy), second.exclusive("enroll:A", busy=busy, timeout=0.2):
                pass
            with second.exclusive("enroll:B", busy=busy, timeout=0.2):
                pass  # another name is another lock
        with second.exclusive("enroll:A", busy=busy, timeout=0.2):
            pass
        # A process that dies holding the lock (SIGKILL: no clean-up runs) leaves it free.
        child = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(f"""
                import sys, time
                from tokenissue.errors import TokenBusy
                from tokenissue.inventory import Inventory
                inv = Inventory.open({db_url!r})
                with inv.exclusive("enroll:A", busy=TokenBusy("busy")):
                    print("held", flush=True)
                    time.sleep(60)
            """)],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert child.stdout is not None and child.stdout.readline().strip() == "held"
            with pytest.raises(TokenBusy), second.exclusive("enroll:A", busy=busy, timeout=0.2):
                pass
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=30)
            with second.exclusive("enroll:A", busy=busy, timeout=10):
                pass
        finally:
            child.kill()
            child.wait()
