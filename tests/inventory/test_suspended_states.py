"""Suspension in the inventory (issue 13 item 7): the states a certificate moves through, on
SQLite and PostgreSQL.

valid → suspended → valid (restore); valid or suspended → revoked, which is final. Each
change that happens writes its audit entry in the same transaction; each refusal changes
nothing and is a CertificateStateRefused (exit 6) saying why.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from tokenissue.errors import CertificateStateRefused, NotFound, Remedy
from tokenissue.inventory import Inventory
from tokenissue.models import CertRecord, CertStatus, RevocationReason

T0 = datetime(2025, 1, 1, tzinfo=UTC)
SOON = T0 + timedelta(days=10)


def _cert(serial: int, *, der: bytes | None = None) -> CertRecord:
    return CertRecord(
        serial=serial, subject=f"CN=holder {serial}", issuer="CN=Test CA", not_before=T0,
        not_after=T0 + timedelta(days=365), sha256=f"{serial:064x}", profile="personal",
        der=der or b"\x30\x82" + serial.to_bytes(32, "big"),
    )  # fmt: skip


@pytest.fixture
def store(db_url: str) -> Iterator[Inventory]:
    inv = Inventory.open(db_url)
    try:
        inv.add_certificate(_cert(1))
        inv.add_certificate(_cert(2))
        yield inv
    finally:
        inv.close()


def _actions(inv: Inventory) -> list[str]:
    return [e.action for e in inv.audit_entries()]


def test_suspend_then_restore_round_trips(store: Inventory) -> None:
    rec, changed = store.suspend(1, SOON, audit=("suspend", {"serial": "1"}))
    assert changed
    assert (rec.status, rec.revocation_reason, rec.revoked_at) == (
        CertStatus.SUSPENDED, RevocationReason.CERTIFICATE_HOLD, SOON
    )  # fmt: skip
    assert [r.serial for r in store.list_certificates(status=CertStatus.SUSPENDED)] == [1]

    back = store.restore(1, audit=("restore", {"serial": "1"}))
    assert (back.status, back.revocation_reason, back.revoked_at) == (CertStatus.VALID, None, None)
    assert store.list_certificates(status=CertStatus.SUSPENDED) == []
    assert _actions(store) == ["suspend", "restore"]
    assert store.audit_verify() == 2
    # The other certificate was never touched.
    other = store.get_certificate(2)
    assert other is not None and other.status is CertStatus.VALID


def test_suspending_twice_changes_nothing_the_second_time(store: Inventory) -> None:
    store.suspend(1, SOON, audit=("suspend", {"serial": "1"}))
    rec, changed = store.suspend(1, SOON + timedelta(hours=1), audit=("suspend", {"serial": "1"}))
    assert not changed and rec.revoked_at == SOON  # the first suspension's time stays
    assert _actions(store) == ["suspend"]


def test_restoring_a_valid_certificate_is_refused(store: Inventory) -> None:
    with pytest.raises(CertificateStateRefused, match="is valid, not suspended; there is nothing to restore") as e:
        store.restore(1, audit=("restore", {"serial": "1"}))
    assert e.value.exit_code == 6 and e.value.state == "valid" and e.value.remedy is Remedy.LIST_SUSPENDED
    assert _actions(store) == []


def test_a_revocation_is_final(store: Inventory) -> None:
    store.revoke(1, RevocationReason.SUPERSEDED, SOON)
    with pytest.raises(CertificateStateRefused, match=r"is revoked \(superseded\), which is final") as e:
        store.suspend(1, SOON, audit=("suspend", {"serial": "1"}))
    assert e.value.state == "revoked"
    with pytest.raises(CertificateStateRefused, match="only a suspended certificate can be restored"):
        store.restore(1, audit=("restore", {"serial": "1"}))
    rec = store.get_certificate(1)
    assert rec is not None and (rec.status, rec.revocation_reason) == (CertStatus.REVOKED, RevocationReason.SUPERSEDED)
    assert _actions(store) == []


def test_an_expired_certificate_is_not_suspended(store: Inventory) -> None:
    with pytest.raises(CertificateStateRefused, match="expired on 2026-01-01") as e:
        store.suspend(1, T0 + timedelta(days=400))
    assert e.value.state == "expired"


def test_unknown_serials_are_not_found(store: Inventory) -> None:
    with pytest.raises(NotFound):
        store.suspend(99, SOON)
    with pytest.raises(NotFound):
        store.restore(99)


def test_revoking_a_suspended_certificate_makes_it_final_as_of_the_suspension(store: Inventory) -> None:
    store.suspend(1, SOON)
    later = SOON + timedelta(days=2)
    rec = store.revoke(1, RevocationReason.KEY_COMPROMISE, later)
    assert (rec.status, rec.revocation_reason, rec.revoked_at) == (
        CertStatus.REVOKED, RevocationReason.KEY_COMPROMISE, SOON
    )  # fmt: skip


def test_a_key_compromise_takes_the_keys_suspended_certificates_too(db_url: str) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name.from_rfc4514_string("CN=Test CA")

    def der(serial: int) -> bytes:
        cert = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(serial).not_valid_before(T0).not_valid_after(T0 + timedelta(days=365))
            .sign(key, hashes.SHA256())
        )  # fmt: skip
        return cert.public_bytes(serialization.Encoding.DER)

    with Inventory.open(db_url) as inv:
        inv.add_certificate(_cert(10, der=der(10)))
        inv.add_certificate(_cert(11, der=der(11)))
        inv.suspend(10, SOON)
        done = inv.revoke_key(11, RevocationReason.KEY_COMPROMISE, SOON + timedelta(days=1))
        assert {r.serial: (r.status, r.revoked_at) for r in done} == {
            11: (CertStatus.REVOKED, SOON + timedelta(days=1)),
            10: (CertStatus.REVOKED, SOON),  # revoked for good, as of its suspension
        }
