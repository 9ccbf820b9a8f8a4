"""The token layer: the only package that imports python-pkcs11.

Public names are loaded on first use so that ``import tokenissue.p11`` (and the CLI's start-up)
does not pay for loading python-pkcs11 until a command really talks to a token.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .uri import KeySelector, TokenSelector, format_uri, parse_uri

if TYPE_CHECKING:
    from ._check import TokenCheck, check_token
    from ._init import init_token
    from ._module import Module, find_module, load_module, placeholder_serial, token_identity
    from .session import TokenSession, open_token
    from .signing import plan_signature

__all__ = [
    "KeySelector",
    "Module",
    "TokenCheck",
    "TokenSelector",
    "TokenSession",
    "check_token",
    "find_module",
    "format_uri",
    "init_token",
    "load_module",
    "open_token",
    "parse_uri",
    "placeholder_serial",
    "plan_signature",
    "token_identity",
]

_LAZY = {
    "Module": "._module",
    "find_module": "._module",
    "load_module": "._module",
    "TokenSession": ".session",
    "open_token": ".session",
    "plan_signature": ".signing",
    "check_token": "._check",
    "TokenCheck": "._check",
    "token_identity": "._module",
    "placeholder_serial": "._module",
    "init_token": "._init",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(name)
