"""One Retry-After reading for the CMP and ACME clients (RFC 9110 §10.2.3)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tokenissue.enroll.base import retry_after_seconds

NOW = datetime(2026, 12, 7, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("3", 3.0),
        ("0", 0.0),
        ("2.5", 2.5),
        ("-4", 0.0),  # never negative
        ("Mon, 07 Dec 2026 12:00:30 GMT", 30.0),  # an HTTP-date is UTC, whatever the local zone
        ("Mon, 07 Dec 2026 11:00:00 GMT", 0.0),  # in the past
        (None, 7.0),
        ("", 7.0),
        ("nan", 7.0),
        ("inf", 7.0),
        ("soon", 7.0),
    ],
)
def test_retry_after_seconds(value: str | None, expected: float) -> None:
    assert retry_after_seconds(value, 7.0, now=NOW) == expected
