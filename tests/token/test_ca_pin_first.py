"""The CA's PIN is checked before the holder's key is made (a local CA on a token).

A wrong or missing CA PIN used to be found only when the CA signed, after the key had been
generated on the holder's token: the enrollment failed and the message did not say a key had
been made. Now the CA token is logged in to first; nothing is generated or journaled.
"""

from __future__ import annotations

import pytest

from support.lifecycle import TokenCA, make_token_ca
from support.softhsm import SoftHSM


@pytest.fixture
def token_ca(softhsm: SoftHSM) -> TokenCA:
    return make_token_ca(softhsm)


def _nothing_made(ca: TokenCA) -> None:
    assert ca.json("keys", "list", "--token", "test") == []
    assert ca.json("journal", "list") == []
    assert ca.issued() == []


@pytest.mark.parametrize(("env", "why"), [({"TOKENISSUE_CA_PIN": "999999"}, "refused"),
                                          ({"TOKENISSUE_CA_PIN": ""}, "")], ids=["wrong", "empty"])  # fmt: skip
def test_a_wrong_ca_pin_is_told_before_any_key_is_made(token_ca: TokenCA, env: dict[str, str], why: str) -> None:
    proc = token_ca.run(*token_ca.enroll_args("CN=Early Check,C=KR"), env=env)
    assert proc.returncode == 5, (proc.returncode, proc.stderr)
    assert "CA PIN" in proc.stderr or "PIN" in proc.stderr, proc.stderr
    assert why in proc.stderr
    _nothing_made(token_ca)


def test_a_missing_ca_pin_without_a_terminal_is_told_before_any_key_is_made(token_ca: TokenCA) -> None:
    env = {k: v for k, v in token_ca.hsm.env.items() if k != "TOKENISSUE_CA_PIN"}
    proc = token_ca.hsm.run(*token_ca.enroll_args("CN=Early Check,C=KR"), env=env)
    assert proc.returncode == 5, (proc.returncode, proc.stderr)
    assert "CA PIN" in proc.stderr and "no terminal" in proc.stderr, proc.stderr
    _nothing_made(token_ca)
