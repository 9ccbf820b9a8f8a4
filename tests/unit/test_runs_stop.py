"""One rule for when a run over many tokens stops (batch, sweep, sweep resume, enroll --resume):
at a PIN refused or not to be had, never at a token's own state."""

from __future__ import annotations

import pytest

from tokenissue.errors import (
    CAUnavailable,
    PinError,
    PinIncorrect,
    PinLocked,
    TokenIssueError,
    TokenNotFound,
    stops_a_run,
)


@pytest.mark.parametrize(
    ("error", "stops"),
    [
        (PinIncorrect("The token refused the PIN."), True),
        (PinError("Resuming needs the authorization code: set TOKENISSUE_AUTH_CODE."), True),
        (PinLocked("The token's PIN is locked."), False),
        (TokenNotFound("No token 'x'."), False),
        (CAUnavailable("The CA is down."), False),
        (TokenIssueError("Something else."), False),
    ],
)
def test_what_stops_a_run(error: TokenIssueError, stops: bool) -> None:
    assert stops_a_run(error) is stops
