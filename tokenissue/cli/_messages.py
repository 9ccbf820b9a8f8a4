"""Errors as the CLI says them: the library's sentence plus what to type about it.

The library's errors carry data (the candidates, the tries left, the URL) and a sentence that
names no command or option, since the same error reaches a server, a batch worker or another
program. Here each kind the user can do something about gets its remedy in this CLI's words,
as yubikey-manager's CLI turns ``InvalidPinError.attempts_remaining`` into a sentence.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import TokenIssueError

__all__ = ["join", "say"]


def join(message: str, remedy: str) -> str:
    """One sentence: ``message`` (its full stop dropped), a semicolon, then ``remedy``."""
    return f"{message.rstrip('.')}; {remedy}"


def _ambiguous_lost_token(e: Any) -> str:
    return join(e.message, f"name one with --token-serial and its URI: {', '.join(repr(c) for c in e.candidates)}.")


def _nothing_recorded(e: Any) -> str:
    return join(
        e.message,
        "--token-serial takes the token's serial (or the pkcs11: URI where serials repeat) as 'tokenissue ca list' "
        "shows it in its Token column, not its label.",
    )


#: Renderers by the error class's dotted name, so that printing an error imports nothing.
_RENDERERS: dict[str, Callable[[Any], str]] = {
    "tokenissue.fleet.lost_token.AmbiguousLostToken": _ambiguous_lost_token,
    "tokenissue.fleet.lost_token.NothingRecorded": _nothing_recorded,
}


def say(error: TokenIssueError) -> str:
    """What the CLI prints for ``error``: its message, with the remedy where one is known."""
    for kind in type(error).__mro__:
        render = _RENDERERS.get(f"{kind.__module__}.{kind.__qualname__}")
        if render is not None:
            return render(error)
    return error.message
