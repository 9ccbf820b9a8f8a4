"""Registrations and CMP transactions in the inventory (SQLite and PostgreSQL): round trips,
single use under concurrency, lock-out after exactly max_failures, duplicate transactionIDs, and
migration of a database written at revision 0001."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import pytest

from tokenissue.errors import InventoryError, NotFound
from tokenissue.inventory import DuplicateRegistration, DuplicateTransaction, Inventory
from tokenissue.inventory._migrate import HEAD_REVISION
from tokenissue.models import (
    CertRecord,
    Registration,
    RegistrationStatus,
    TransactionKind,
    TransactionState,
)

from support.inventory import raw, sa_url, schema_snapshot

T = TypeVar("T")
NOW = datetime.now(UTC)
THREADS = 8


def reg(ref: str = "1234567890", **kw: object) -> Registration:
    fields: dict[str, object] = {
        "ref": ref,
        "subject": "CN=Hong Gildong,C=KR",
        "profile": "personal",
        "nonce": bytes(range(16)),
        "created_at": NOW,
        "expires_at": NOW + timedelta(days=7),
    }
    fields.update(kw)
    return Registration(**fields)  # type: ignore[arg-type]


def race(db_url: str, work: Callable[[Inventory], T]) -> list[T]:
    """Run ``work`` in THREADS threads at once, each with its own Inventory on the same database."""
    inventories = [Inventory.open(db_url) for _ in range(THREADS)]
    barrier = threading.Barrier(THREADS)
    results: list[T] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def run(inventory: Inventory) -> None:
        try:
            barrier.wait()
            out = work(inventory)
            with lock:
                results.append(out)
        except BaseException as e:  # reported below, with the assertion
            with lock:
                errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in inventories]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    for i in inventories:
        i.close()
    assert errors == []
    return results


# -- registrations ---------------------------------------------------------------------------


def test_registration_round_trip(inv: Inventory) -> None:
    stored = inv.add_registration(reg(san=("dns:a.example", "email:a@example.kr")))
    assert stored == reg(san=("dns:a.example", "email:a@example.kr"))
    assert inv.get_registration("1234567890") == stored
    assert inv.get_registration("0000000000") is None
    assert stored.status is RegistrationStatus.OPEN and stored.failures == 0 and stored.max_failures == 5


def test_duplicate_ref_refused(inv: Inventory) -> None:
    inv.add_registration(reg())
    with pytest.raises(DuplicateRegistration) as info:
        inv.add_registration(reg(subject="CN=Someone Else"))
    assert info.value.ref == "1234567890"
    assert inv.get_registration("1234567890") == reg()


def test_add_registration_refuses_bad_values(inv: Inventory) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        inv.add_registration(reg(expires_at=datetime(2030, 1, 1)))
    with pytest.raises(ValueError, match="nonce"):
        inv.add_registration(reg(nonce=b""))
    with pytest.raises(ValueError, match="max_failures"):
        inv.add_registration(reg(max_failures=0))
    assert inv.list_registrations() == []


def test_list_registrations_by_status(inv: Inventory) -> None:
    inv.add_registration(reg("1", created_at=NOW - timedelta(seconds=2)))
    inv.add_registration(reg("2", created_at=NOW - timedelta(seconds=1)))
    inv.add_registration(reg("3"))
    inv.registration_cancel("2")
    assert [r.ref for r in inv.list_registrations()] == ["1", "2", "3"]
    assert [r.ref for r in inv.list_registrations(RegistrationStatus.OPEN)] == ["1", "3"]
    assert [r.ref for r in inv.list_registrations(RegistrationStatus.CANCELLED)] == ["2"]
    assert inv.list_registrations(RegistrationStatus.USED) == []


def test_consume_once(inv: Inventory) -> None:
    inv.add_registration(reg())
    assert inv.registration_consume("1234567890", 0xABC, NOW) is True
    assert inv.registration_consume("1234567890", 0xDEF, NOW) is False
    got = inv.get_registration("1234567890")
    assert got is not None
    assert (got.status, got.serial, got.used_at) == (RegistrationStatus.USED, 0xABC, NOW)


def test_consume_refuses_expired_cancelled_locked_unknown(inv: Inventory) -> None:
    inv.add_registration(reg("1", expires_at=NOW))
    assert inv.registration_consume("1", 1, NOW) is False  # expires_at is not after now
    assert inv.registration_consume("1", 1, NOW - timedelta(microseconds=1)) is True
    inv.add_registration(reg("2"))
    inv.registration_cancel("2")
    assert inv.registration_consume("2", 2, NOW) is False
    inv.add_registration(reg("3", max_failures=1))
    assert inv.registration_failed("3").status is RegistrationStatus.LOCKED
    assert inv.registration_consume("3", 3, NOW) is False
    assert inv.registration_consume("nope", 4, NOW) is False


def test_consume_is_single_use_across_racing_writers(db_url: str) -> None:
    """Eight threads, each with its own Inventory (own engine, own connections) on one
    database, consume the same registration at once: the conditional UPDATE lets exactly one win."""
    with Inventory.open(db_url) as inv:
        inv.add_registration(reg())
    serials = iter(range(1, THREADS + 1))
    lock = threading.Lock()

    def consume(inventory: Inventory) -> tuple[int, bool]:
        with lock:
            serial = next(serials)
        return serial, inventory.registration_consume("1234567890", serial, datetime.now(UTC))

    results = race(db_url, consume)
    winners = [serial for serial, won in results if won]
    assert len(results) == THREADS
    assert len(winners) == 1
    with Inventory.open(db_url) as inv:
        got = inv.get_registration("1234567890")
    assert got is not None
    assert got.status is RegistrationStatus.USED
    assert got.serial == winners[0]


def test_failures_lock_at_exactly_max(inv: Inventory) -> None:
    inv.add_registration(reg())
    for n in range(1, 5):
        after = inv.registration_failed("1234567890")
        assert (after.failures, after.status) == (n, RegistrationStatus.OPEN)
    after = inv.registration_failed("1234567890")
    assert (after.failures, after.status) == (5, RegistrationStatus.LOCKED)
    after = inv.registration_failed("1234567890")
    assert (after.failures, after.status) == (6, RegistrationStatus.LOCKED)
    assert inv.registration_consume("1234567890", 1, NOW) is False


def test_failures_on_used_registration_do_not_relabel_it(inv: Inventory) -> None:
    inv.add_registration(reg(max_failures=1))
    assert inv.registration_consume("1234567890", 7, NOW)
    after = inv.registration_failed("1234567890")
    assert (after.failures, after.status) == (1, RegistrationStatus.USED)


def test_concurrent_failures_are_all_counted(db_url: str) -> None:
    """No lost updates: eight concurrent failures count eight, and the lock happens on the fifth."""
    with Inventory.open(db_url) as inv:
        inv.add_registration(reg())
    results = race(db_url, lambda i: i.registration_failed("1234567890"))
    assert sorted(r.failures for r in results) == list(range(1, THREADS + 1))
    assert all((r.status is RegistrationStatus.LOCKED) == (r.failures >= 5) for r in results)


def test_failed_unknown_is_not_found(inv: Inventory) -> None:
    with pytest.raises(NotFound):
        inv.registration_failed("nope")
    with pytest.raises(NotFound):
        inv.registration_cancel("nope")


def test_cancel(inv: Inventory) -> None:
    inv.add_registration(reg("1"))
    assert inv.registration_cancel("1").status is RegistrationStatus.CANCELLED
    assert inv.registration_cancel("1").status is RegistrationStatus.CANCELLED
    inv.add_registration(reg("2", max_failures=1))
    inv.registration_failed("2")
    assert inv.registration_cancel("2").status is RegistrationStatus.CANCELLED
    inv.add_registration(reg("3"))
    inv.registration_consume("3", 9, NOW)
    assert inv.registration_cancel("3").status is RegistrationStatus.USED  # stays used


def test_no_code_column(db_url: str, inv: Inventory) -> None:
    """The schema has nowhere to put a code or its hash, or a registration number (only its
    keyed hash, id_hash)."""
    table = schema_snapshot(db_url)["registrations"]
    assert isinstance(table, tuple)
    columns = {c[0] for c in table[0]}
    assert columns == {
        "ref", "subject", "profile", "nonce", "status", "failures", "max_failures",
        "created_at", "expires_at", "used_at", "serial", "san", "reserved_tid",
        "id_hash", "real_name", "verified_by", "terms_version", "reissue_of",
    }


# -- reservations (one CMP transaction holds a registration while it issues) ---------------


def test_reserve_is_held_by_one_transaction_until_consumed(inv: Inventory) -> None:
    inv.add_registration(reg())
    a, b = b"\xaa" * 16, b"\xbb" * 16
    assert inv.registration_reserve("1234567890", a, NOW)
    assert inv.registration_reserve("1234567890", a, NOW)  # the same transaction may retry
    assert not inv.registration_reserve("1234567890", b, NOW)  # another may not
    got = inv.get_registration("1234567890")
    assert got is not None and got.reserved_tid == a and got.status is RegistrationStatus.OPEN
    # Consuming needs the reservation: neither without a tid nor with another one.
    assert not inv.registration_consume("1234567890", 1, NOW)
    assert not inv.registration_consume("1234567890", 1, NOW, b)
    # Not even after expiry is the holder refused: the code was good when it was reserved.
    assert inv.registration_consume("1234567890", 7, NOW + timedelta(days=30), a)
    assert not inv.registration_consume("1234567890", 7, NOW, a)  # once
    assert not inv.registration_reserve("1234567890", a, NOW)
    assert not inv.registration_release("1234567890", a)  # a used one stays used


def test_release_only_by_the_holder_and_reserve_needs_open_unexpired(inv: Inventory) -> None:
    inv.add_registration(reg("1"))
    a, b = b"\xaa" * 16, b"\xbb" * 16
    assert inv.registration_reserve("1", a, NOW)
    assert not inv.registration_release("1", b)
    assert inv.registration_release("1", a)
    assert inv.registration_reserve("1", b, NOW)  # free again
    inv.add_registration(reg("2", expires_at=NOW))
    assert not inv.registration_reserve("2", a, NOW)
    inv.add_registration(reg("3"))
    inv.registration_cancel("3")
    assert not inv.registration_reserve("3", a, NOW)
    assert not inv.registration_reserve("nope", a, NOW)


def test_reserve_race_has_one_winner(db_url: str) -> None:
    with Inventory.open(db_url) as first:
        first.add_registration(reg())
    counter = iter(range(THREADS))
    lock = threading.Lock()

    def reserve(inventory: Inventory) -> bool:
        with lock:
            n = next(counter)
        return inventory.registration_reserve("1234567890", bytes([n]) * 16, datetime.now(UTC))

    assert sorted(race(db_url, reserve)) == [False] * (THREADS - 1) + [True]


# -- CMP transactions ----------------------------------------------------------------------


TID = bytes.fromhex("00112233445566778899aabbccddeeff")


def test_transaction_round_trip_and_update(inv: Inventory) -> None:
    t = inv.transaction_begin(TID, TransactionKind.IR, "1234567890", b"\x01" * 16, b"\x02" * 16, True)
    assert (t.transaction_id, t.kind, t.ref, t.state, t.pbm, t.serial) == (
        TID, TransactionKind.IR, "1234567890", TransactionState.WAITING_CONFIRM, True, None
    )
    assert (t.sender_nonce, t.our_nonce) == (b"\x01" * 16, b"\x02" * 16)
    assert inv.transaction_get(TID) == t
    assert inv.transaction_get(b"\xff" * 16) is None

    u = inv.transaction_update(TID, serial=(1 << 159) + 1, our_nonce=b"\x03" * 16)
    assert (u.serial, u.our_nonce, u.sender_nonce, u.state) == (
        (1 << 159) + 1, b"\x03" * 16, b"\x01" * 16, TransactionState.WAITING_CONFIRM
    )
    assert u.updated_at >= t.updated_at and u.created_at == t.created_at
    v = inv.transaction_update(TID, state=TransactionState.DONE, sender_nonce=b"\x04" * 16)
    assert (v.state, v.sender_nonce, v.serial) == (TransactionState.DONE, b"\x04" * 16, (1 << 159) + 1)
    assert inv.transaction_get(TID) == v


def test_transaction_signature_protected_has_no_ref(inv: Inventory) -> None:
    t = inv.transaction_begin(TID, TransactionKind.KUR, None, b"\x01" * 16, b"\x02" * 16, False, signer=(1 << 159) + 5)
    assert (t.ref, t.pbm, t.kind, t.signer) == (None, False, TransactionKind.KUR, (1 << 159) + 5)
    g = inv.transaction_begin(b"g" * 16, TransactionKind.GENM, None, b"\x01", b"\x02", False, state=TransactionState.DONE)
    assert g.state is TransactionState.DONE


def test_transaction_begin_duplicate_raises(inv: Inventory) -> None:
    first = inv.transaction_begin(TID, TransactionKind.IR, "1", b"\x01" * 16, b"\x02" * 16, True)
    with pytest.raises(DuplicateTransaction) as info:
        inv.transaction_begin(TID, TransactionKind.CR, "2", b"\x05" * 16, b"\x06" * 16, True)
    assert isinstance(info.value, InventoryError) and info.value.exit_code == 7
    assert info.value.transaction_id == TID
    assert inv.transaction_get(TID) == first  # the loser changed nothing


def test_transaction_begin_race_has_one_winner(db_url: str) -> None:
    Inventory.open(db_url).close()

    def begin(inventory: Inventory) -> bool:
        try:
            inventory.transaction_begin(TID, TransactionKind.IR, None, b"\x01" * 16, b"\x02" * 16, False)
        except DuplicateTransaction:
            return False
        return True

    assert sorted(race(db_url, begin)) == [False] * (THREADS - 1) + [True]


def test_transaction_update_unknown_and_bad_values(inv: Inventory) -> None:
    with pytest.raises(NotFound):
        inv.transaction_update(TID, state=TransactionState.DONE)
    with pytest.raises(ValueError, match="transaction id"):
        inv.transaction_begin(b"", TransactionKind.IR, None, b"\x01", b"\x02", False)
    with pytest.raises(ValueError, match="sender nonce"):
        inv.transaction_begin(TID, TransactionKind.IR, None, b"\x01" * 65, b"\x02", False)


# -- migration from revision 0001 ------------------------------------------------------------


def test_migrates_a_0001_database_and_keeps_its_data(db_url: str) -> None:
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import create_engine

    from tokenissue.inventory._migrate import MIGRATIONS_DIR

    assert HEAD_REVISION == "0005"
    # An inventory as tokenissue before registrations left it: schema at 0001, with data
    # written through the store's own methods (they only touch 0001 tables).
    engine = create_engine(sa_url(db_url))
    with engine.begin() as conn:
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
    old = Inventory(engine, db_url)
    record = CertRecord(
        serial=0x1234, subject="CN=old", issuer="CN=CA", not_before=NOW, not_after=NOW + timedelta(days=1),
        sha256="ab" * 32, profile="personal", der=b"\x30\x00", request_id="req-1",
    )
    old.add_certificate(record)
    old.audit_append("ca-init", {"subject": "CN=CA"})
    old.set_setting("k", "v")
    old.close()
    assert raw(db_url, "SELECT version_num FROM alembic_version") == [("0001",)]
    assert "registrations" not in schema_snapshot(db_url)

    with Inventory.open(db_url) as inv:
        got = inv.get_certificate(0x1234)
        assert got is not None and dataclasses.replace(got) == record
        assert inv.find_by_request("req-1") == record
        assert inv.audit_verify() == 1
        assert inv.get_setting("k") == "v"
        assert inv.next_crl_number() == 1  # the counter row survived
        inv.add_registration(reg())
        assert inv.registration_consume("1234567890", 5, NOW)
        inv.transaction_begin(TID, TransactionKind.IR, "1234567890", b"\x01", b"\x02", True)
    assert raw(db_url, "SELECT version_num FROM alembic_version") == [(HEAD_REVISION,)]


def test_a_0002_database_takes_token_identities_longer_than_a_serial(db_url: str) -> None:
    """tpm2-pkcs11 tokens all have serial 0000000000000000, so their identity is a pkcs11: URI
    of ~90 characters; PostgreSQL's column of 0002 held 64 (SQLite never enforced it)."""
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import create_engine

    from tokenissue.inventory._migrate import MIGRATIONS_DIR

    engine = create_engine(sa_url(db_url))
    with engine.begin() as conn:
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0002")
    engine.dispose()
    identity = "pkcs11:token=" + "%e1%84%92" * 30 + ";manufacturer=IBM;model=SW%20%20%20TPM;serial=0000000000000000"
    record = CertRecord(
        serial=0x99, subject="CN=tpm", issuer="CN=CA", not_before=NOW, not_after=NOW + timedelta(days=1),
        sha256="cd" * 32, profile="personal", der=b"\x30\x00", request_id="req-tpm", token_serial=identity,
    )
    with Inventory.open(db_url) as inv:
        inv.add_certificate(record)
        assert [r.serial for r in inv.list_certificates(token_serial=identity)] == [0x99]
    assert raw(db_url, "SELECT version_num FROM alembic_version") == [(HEAD_REVISION,)]


def test_a_0003_registration_reads_back_without_the_korean_fields(db_url: str) -> None:
    """Migration 0004 adds nullable columns: a registration made before it has none of them."""
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import create_engine

    from tokenissue.inventory._migrate import MIGRATIONS_DIR

    engine = create_engine(sa_url(db_url))
    with engine.begin() as conn:
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0003")
        conn.exec_driver_sql(
            "INSERT INTO registrations (ref, subject, profile, nonce, status, failures, max_failures, "
            "created_at, expires_at, san) VALUES ('1112223334', 'CN=old', 'personal', '00ff', 'open', 0, 5, "
            "'2026-01-01T00:00:00.000000Z', '2026-01-08T00:00:00.000000Z', '[]')"
        )
    engine.dispose()
    with Inventory.open(db_url) as inv:
        got = inv.get_registration("1112223334")
        assert got is not None and got.subject == "CN=old"
        assert (got.id_hash, got.real_name, got.verified_by, got.terms_version, got.reissue_of) == (None,) * 5
        inv.add_registration(dataclasses.replace(reg(), id_hash=b"\x01" * 32, real_name="홍길동", reissue_of=0xAB))
        back = inv.get_registration(reg().ref)
        assert back is not None and (back.id_hash, back.real_name, back.reissue_of) == (b"\x01" * 32, "홍길동", 0xAB)
    assert raw(db_url, "SELECT version_num FROM alembic_version") == [(HEAD_REVISION,)]
