"""The audit log's hash chain and the guard that keeps secrets out of stored JSON.

Each entry's hash is the SHA-256 (hex) of the canonical JSON of
``{"seq", "at", "action", "details", "prev_hash"}``; the first entry's ``prev_hash`` is 64
zeros. Canonical JSON is :func:`json.dumps` with sorted keys, no spaces and UTF-8, and ``at``
is ISO 8601 in UTC with microseconds, so anyone can re-verify a log with a few lines of code.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from datetime import datetime

from ._types import utc

__all__ = ["GENESIS_HASH", "audit_hash", "canonical_json", "check_no_secrets"]

GENESIS_HASH = "0" * 64

# Whole-word names that mean a secret. "code" is here because registration and authorization
# codes are secrets; a caller that wants a status code should call it "status".
_SECRET_WORDS = frozenset(
    {"pin", "pins", "sopin", "userpin", "puk", "code", "codes", "otp", "secret", "secrets",
     "password", "passwords", "passwd", "passphrase", "pwd"}
)
# A secret word followed by one of these names a property of the secret, not the secret:
# "pin_state", "pin_count_low", "code_length" are fine to log.
_HARMLESS_NEXT = frozenset(
    {"state", "status", "policy", "length", "len", "count", "source", "locked", "tries",
     "retries", "left", "low", "final", "min", "max", "type", "hint", "pad", "required"}
)
# Substrings that mean a secret wherever they appear ("dbpassword", "client_secret_x").
_SECRET_PARTS = ("password", "passphrase", "secret")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_SPLIT = re.compile(r"[^a-z0-9]+")


def canonical_json(value: object) -> str:
    """One JSON spelling per value, so hashes and stored text are reproducible.

    Raises ValueError (not TypeError) for values JSON cannot hold, because the caller passed
    bad data rather than the wrong kind of object.
    """
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ValueError(f"value is not JSON-serialisable: {e}") from e


def audit_hash(seq: int, at: datetime, action: str, details: object, prev_hash: str) -> str:
    """The hash of one audit entry, as :meth:`Inventory.audit_verify` recomputes it."""
    payload = {
        "seq": seq,
        "at": utc(at).isoformat(timespec="microseconds"),
        "action": action,
        "details": details,
        "prev_hash": prev_hash,
    }
    return hashlib.sha256(canonical_json(payload).encode("utf-8")).hexdigest()


def _is_secret_name(key: str) -> bool:
    lowered = key.lower()
    if any(part in lowered for part in _SECRET_PARTS):
        return True
    words = [w for w in _SPLIT.split(_CAMEL.sub("_", key).lower()) if w]
    for i, word in enumerate(words):
        if word in _SECRET_WORDS and not (i + 1 < len(words) and words[i + 1] in _HARMLESS_NEXT):
            return True
    return False


def check_no_secrets(value: object, where: str) -> None:
    """Refuse (ValueError) any mapping key, at any depth, named like a PIN, code or password.

    Keeping secrets out is the caller's job; this is the net under it. The audit log and the
    journal are stored in clear and kept for years, so a PIN written there once is leaked for
    good. Only key names are checked: values cannot be told apart from ordinary strings.
    """
    if isinstance(value, Mapping):
        for key, item in value.items():
            if isinstance(key, str) and _is_secret_name(key):
                raise ValueError(
                    f"{where} must not contain secrets, but has a key named {key!r}"
                )
            check_no_secrets(item, where)
    elif isinstance(value, list | tuple):
        for item in value:
            check_no_secrets(item, where)
