"""Which certificates the expiry sweep (``ca list --expiring``) reports as due."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tokenissue.fleet.sweep import due
from tokenissue.models import CertRecord, CertStatus

NOW = datetime(2026, 12, 6, tzinfo=UTC)


def _rec(serial: int, days_left: int, *, status: CertStatus = CertStatus.VALID, replaces: int | None = None) -> CertRecord:
    return CertRecord(
        serial=serial, subject=f"CN=holder {serial}", issuer="CN=CA", not_before=NOW - timedelta(days=300),
        not_after=NOW + timedelta(days=days_left), sha256=f"{serial:064x}", profile="personal", der=b"\x30\x00",
        status=status, replaces=replaces,
    )  # fmt: skip


def test_expiring_certificates_are_due_soonest_first() -> None:
    records = [_rec(1, 20), _rec(2, 5), _rec(3, 90), _rec(4, 3, status=CertStatus.REVOKED)]
    assert [r.serial for r in due(records, timedelta(days=30), now=NOW)] == [2, 1]


def test_a_valid_successor_makes_a_certificate_not_due() -> None:
    records = [_rec(1, 10), _rec(2, 365, replaces=1)]
    assert due(records, timedelta(days=30), now=NOW) == []


def test_a_revoked_successor_replaces_nothing() -> None:
    """Found by review: a renewal the holder rejected (certConf) or an administrator revoked
    used to hide the old certificate from the sweep, which then expired with no notice."""
    records = [_rec(1, 10), _rec(2, 365, status=CertStatus.REVOKED, replaces=1)]
    assert [r.serial for r in due(records, timedelta(days=30), now=NOW)] == [1]


def test_skip_leaves_out_successors_issued_moments_ago() -> None:
    assert due([_rec(1, 10)], timedelta(days=30), now=NOW, skip=frozenset({1})) == []


def test_a_suspended_certificate_is_listed_skipped_and_still_supersedes() -> None:
    """A suspended certificate (on hold: its token is missing) that expires soon is listed as
    'suspended' with a sentence and neither renewed nor notified; a suspended successor still
    replaces what it renewed (the holder moved on to it; it is only on hold)."""
    from tokenissue.fleet.sweep import SweepAction, sweep

    held = CertRecord(**{**_rec(1, 10).__dict__, "status": CertStatus.SUSPENDED, "revoked_at": NOW})
    renewed_then_held = [_rec(2, 10), CertRecord(**{**_rec(3, 365, replaces=2).__dict__, "status": CertStatus.SUSPENDED})]
    assert [r.serial for r in due([held, *renewed_then_held], timedelta(days=30), now=NOW)] == [1]

    def renew(_rec: CertRecord) -> int:
        raise AssertionError("a suspended certificate must not be renewed")

    [item] = sweep([held], within=timedelta(days=30), hook="false", renew=renew, now=NOW)
    assert item.action is SweepAction.SUSPENDED and item.ok and item.notified is None
    assert item.detail == (
        "Suspended since 2026-12-06 00:00 UTC: not renewed or notified until the CA restores it (or revokes it for good)."
    )
