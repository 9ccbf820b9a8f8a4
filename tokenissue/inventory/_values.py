"""How the stores write values into columns: serials and octet strings as lowercase hex, JSON
as text, times as aware UTC.

Shared by every area of the store; the checks raise ValueError for a value the caller got
wrong (an out-of-range serial, an empty or oversized nonce).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

__all__ = ["MAX_CMP_OCTETS", "json_dict", "octets_hex", "serial_hex", "utc_now"]

# A serial is a positive integer of at most 20 octets (RFC 5280); String(64) leaves room
# for the odd non-conforming certificate a holder may have enrolled elsewhere.
_MAX_SERIAL = 1 << 256
#: Column widths (hex doubles the length): RFC 4210 recommends 128-bit transactionIDs and
#: nonces; 64 bytes leaves room for clients that use more.
MAX_CMP_OCTETS = 64


def utc_now() -> datetime:
    """The current time, aware and in UTC."""
    return datetime.now(UTC)


def serial_hex(serial: int) -> str:
    """A certificate serial as its column holds it; ValueError outside [0, 2**256)."""
    if not isinstance(serial, int) or isinstance(serial, bool) or not 0 <= serial < _MAX_SERIAL:
        raise ValueError(f"certificate serial must be an integer in [0, 2**256), not {serial!r}")
    return format(serial, "x")


def octets_hex(value: bytes, name: str, limit: int) -> str:
    """1 to ``limit`` bytes as hex; ValueError naming ``name`` otherwise."""
    if not isinstance(value, bytes | bytearray) or not 0 < len(value) <= limit:
        raise ValueError(f"{name} must be 1 to {limit} bytes")
    return bytes(value).hex()


def json_dict(text: str) -> dict[str, object]:
    """A JSON object column read back (the stores only ever write objects there)."""
    value = json.loads(text)
    assert isinstance(value, dict)
    return value
