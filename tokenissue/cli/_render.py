"""Tables and dict views of models, shared by the commands that print them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from ..models import CertObject, CertRecord, CertStatus, KeyInfo, RevocationReason, TokenInfo
from ..p11.uri import format_uri


def token_dict(t: TokenInfo) -> dict[str, Any]:
    return {
        "label": t.label,
        "serial": t.serial,
        "manufacturer": t.manufacturer,
        "model": t.model,
        "initialized": t.initialized,
        "user_pin_initialized": t.user_pin_initialized,
        "login_required": t.login_required,
        "protected_auth_path": t.protected_auth_path,
        "pin_state": t.pin_state,
        "user_pin_count_low": t.user_pin_count_low,
        "user_pin_final_try": t.user_pin_final_try,
        "user_pin_locked": t.user_pin_locked,
        "so_pin_count_low": t.so_pin_count_low,
        "so_pin_final_try": t.so_pin_final_try,
        "so_pin_locked": t.so_pin_locked,
        "identity": t.name,
        "uri": t.name if t.name.startswith("pkcs11:") else format_uri(token=t.label, serial=t.serial),
    }


def key_dict(k: KeyInfo, token_label: str) -> dict[str, Any]:
    return {
        "id": k.id.hex(),
        "label": k.label,
        "type": k.key_type.value if k.key_type else "unknown",
        "size": k.key_type.bits if k.key_type else None,
        "local": k.local,
        "never_extractable": k.never_extractable,
        "always_sensitive": k.always_sensitive,
        "sensitive": k.sensitive,
        "extractable": k.extractable,
        "born_on_token": k.born_on_token,
        "can_decrypt": k.can_decrypt,
        "sign_only": not k.can_decrypt,
        # The token's own CKA_DECRYPT/UNWRAP: set on every TPM key, even one whose
        # CKA_ALLOWED_MECHANISMS leaves it no way to decrypt (then sign_only is still true).
        "decrypt_flag": k.decrypt_flag,
        "has_certificate": k.has_certificate,
        "uri": format_uri(token=token_label, object=k.label, id=k.id, type="private"),
    }


FORCED_NOTE = (
    "Note: this key can decrypt as well as sign (the token set CKA_DECRYPT and could not pin the key to "
    "signature-only mechanisms); --require-sign-only refuses such keys. See docs/tokens-and-keys.md#sign-only-keys."
)


def forced_note(k: KeyInfo) -> str:
    """The sentence that tells a key the token made able to decrypt (empty for sign-only keys)."""
    return FORCED_NOTE if k.can_decrypt else ""


def cert_dict(c: CertObject, now: datetime | None = None) -> dict[str, Any]:
    now = now or datetime.now(UTC)
    days = (c.not_after - now).total_seconds() / 86400
    return {
        "id": c.id.hex(),
        "label": c.label,
        "subject": c.subject,
        "issuer": c.issuer,
        "serial": format(c.serial, "x"),
        "not_before": c.not_before,
        "not_after": c.not_after,
        "days_left": int(days) if days >= 0 else int(days) - 1,
        "valid_now": c.not_before <= now <= c.not_after,
        "ca": c.is_ca,
        "has_key": c.has_key,
    }


def plain(value: object) -> Any:
    """A table cell that shows ``value`` as written: labels, subjects and names come from
    tokens and certificates anyone can make, and '[/]' in one must not be read as markup."""
    from rich.text import Text

    return Text(str(value))


def yesno(v: bool) -> str:
    return "[green]yes[/]" if v else "[red]no[/]"


def record_dict(r: Any) -> dict[str, Any]:
    return {
        "serial": format(r.serial, "x"),
        "subject": r.subject,
        "profile": r.profile,
        "not_before": r.not_before,
        "not_after": r.not_after,
        "status": r.status.value,
        "revoked_at": r.revoked_at,
        "reason": r.revocation_reason.value if r.revocation_reason else None,
        "token_serial": r.token_serial,
        "key_id": r.key_id.hex() if r.key_id else None,
        "sha256": r.sha256,
    }


def revoked_lines(recs: list[CertRecord], why: RevocationReason, *, one_key: bool) -> list[str]:
    """What a revocation tells the user: each certificate, and, when a key compromise revoked a
    key's certificates (``one_key``: ``recs`` are all of one key), how many."""
    if why is RevocationReason.CERTIFICATE_HOLD:
        # A hold suspends; a certificate revoked for good before stays so.
        return [
            f"Suspended {r.serial:x} ({r.subject}), reason certificate-hold; only its CA can restore it."
            if r.status is CertStatus.SUSPENDED
            else f"{r.serial:x} ({r.subject}) was revoked before ({_reason(r)}); a revocation is final."
            for r in recs
        ]
    names = [f"{r.serial:x} ({r.subject})" for r in recs]
    if one_key and len(recs) > 1:
        return [f"Revoked {len(recs)} certificates of this key: {', '.join(names)}; reason {why.value}."]
    return [f"Revoked {name}, reason {why.value}." for name in names]


def _reason(r: CertRecord) -> str:
    return r.revocation_reason.value if r.revocation_reason else "unspecified"
