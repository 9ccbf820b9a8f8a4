"""How the user names a token or a key: label, ``serial:XXXX``, ``id:HEX`` or an RFC 7512 URI.

Slot numbers are deliberately not accepted: SoftHSM moves a token to a new slot ID when it is
initialised and USB tokens change slots when re-plugged, so a slot number names nothing stable.

This module is pure: it parses and formats, it never touches a token.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, unquote_to_bytes

from ..errors import Remedy, UsageError

__all__ = ["KeySelector", "TokenSelector", "format_uri", "parse_uri"]

# RFC 7512 path attributes that name a token or an object.
_TOKEN_ATTRS = ("token", "serial", "manufacturer", "model")
_OBJECT_ATTRS = ("object", "id", "type")


def parse_uri(uri: str) -> dict[str, bytes]:
    """Split a ``pkcs11:`` URI into its path attributes (values percent-decoded, as bytes).

    Query attributes (``?pin-value=...``) are refused: a PIN has no place in a URI here.
    """
    if not uri.startswith("pkcs11:"):
        raise UsageError(f"'{uri}' is not a pkcs11: URI.")
    body = uri[len("pkcs11:") :]
    if "?" in body:
        body, query = body.split("?", 1)
        if "pin-value" in query:
            raise UsageError("PKCS#11 URIs with pin-value are refused.", remedy=Remedy.GIVE_PIN)
    out: dict[str, bytes] = {}
    for part in filter(None, body.split(";")):
        if "=" not in part:
            raise UsageError(f"Malformed pkcs11: URI attribute '{part}'.")
        k, v = part.split("=", 1)
        out[k.strip().lower()] = unquote_to_bytes(v)
    return out


def _pct(value: bytes) -> str:
    return "".join(f"%{b:02x}" for b in value)


def format_uri(
    *,
    token: str | None = None,
    manufacturer: str | None = None,
    model: str | None = None,
    serial: str | None = None,
    object: str | None = None,
    id: bytes | None = None,
    type: str | None = None,
) -> str:
    """Build an RFC 7512 URI; the id is always fully percent-encoded (libp11 needs that)."""
    parts = []
    if token is not None:
        parts.append("token=" + quote(token, safe=""))
    if manufacturer is not None:
        parts.append("manufacturer=" + quote(manufacturer, safe=""))
    if model is not None:
        parts.append("model=" + quote(model, safe=""))
    if serial is not None:
        parts.append("serial=" + quote(serial, safe=""))
    if object is not None:
        parts.append("object=" + quote(object, safe=""))
    if id is not None:
        parts.append("id=" + _pct(id))
    if type is not None:
        parts.append("type=" + type)
    return "pkcs11:" + ";".join(parts)


@dataclass(frozen=True)
class TokenSelector:
    """Which token: any combination of label, serial, manufacturer and model."""

    label: str | None = None
    serial: str | None = None
    manufacturer: str | None = None
    model: str | None = None

    @classmethod
    def parse(cls, text: str) -> TokenSelector:
        text = text.strip()
        if not text:
            raise UsageError("An empty token name was given; use a label, serial:XXXX or a pkcs11: URI.")
        if text.startswith("pkcs11:"):
            attrs = parse_uri(text)
            sel = cls(
                label=_text(attrs.get("token")),
                serial=_text(attrs.get("serial")),
                manufacturer=_text(attrs.get("manufacturer")),
                model=_text(attrs.get("model")),
            )
            if sel == cls():
                raise UsageError(f"The URI '{text}' names no token (token=, serial=, ...).")
            return sel
        if text.lower().startswith("serial:"):
            return cls(serial=text.split(":", 1)[1].strip())
        return cls(label=text)

    @classmethod
    def from_identity(cls, identity: str) -> TokenSelector:
        """The selector for a recorded token identity: a serial, or a pkcs11: URI."""
        if identity.startswith("pkcs11:"):
            return cls.parse(identity)
        return cls(serial=identity)

    def matches(self, label: str, serial: str, manufacturer: str, model: str) -> bool:
        return (
            (self.label is None or self.label == label)
            and (self.serial is None or self.serial.lower() == serial.lower())
            and (self.manufacturer is None or self.manufacturer == manufacturer)
            and (self.model is None or self.model == model)
        )

    def __str__(self) -> str:
        if self.serial and self.label is None and self.manufacturer is None and self.model is None:
            return f"serial:{self.serial}"
        if self.serial is None and self.manufacturer is None and self.model is None:
            return str(self.label)
        return format_uri(token=self.label, manufacturer=self.manufacturer, model=self.model, serial=self.serial)


@dataclass(frozen=True)
class KeySelector:
    """Which key on a token: by CKA_LABEL, by CKA_ID, or both."""

    label: str | None = None
    id: bytes | None = None

    @classmethod
    def parse(cls, text: str) -> KeySelector:
        text = text.strip()
        if text.startswith("pkcs11:"):
            attrs = parse_uri(text)
            sel = cls(label=_text(attrs.get("object")), id=attrs.get("id"))
            if sel == cls():
                raise UsageError(f"The URI '{text}' names no key (object= or id=).")
            return sel
        if text.lower().startswith("id:"):
            try:
                return cls(id=bytes.fromhex(text[3:].replace(":", "")))
            except ValueError:
                raise UsageError(f"'{text}' is not a hex key ID (id:0a1b...).") from None
        if not text:
            raise UsageError("An empty key name was given; use a label, id:HEX or a pkcs11: URI.")
        return cls(label=text)

    def __str__(self) -> str:
        if self.id is not None and self.label is None:
            return "id:" + self.id.hex()
        if self.id is None:
            return str(self.label)
        return format_uri(object=self.label, id=self.id)


def _text(value: bytes | None) -> str | None:
    if value is None:
        return None
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError("A pkcs11: URI label must be UTF-8 once percent-decoded.") from None
