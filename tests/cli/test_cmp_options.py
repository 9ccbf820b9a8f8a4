"""``enroll --ca cmp+http://...``: where the authorization code comes from, and what is refused.

No CMP server is needed: these checks happen before the token is touched or the server asked
(the exchanges themselves are in tests/unit/test_cmp_client.py and tests/interop).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from support.lifecycle import add_token_fast
from support.softhsm import SoftHSM, make_softhsm

URL = "cmp+http://127.0.0.1:9/pkix/"  # port 9 (discard): nothing listens there
CODE = "auth-9931-code"


@pytest.fixture
def hsm(hsm_root: Path) -> SoftHSM:
    return make_softhsm(hsm_root)


def _enroll(hsm: SoftHSM, *extra: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    proc = hsm.run("enroll", "--token", "test", "--ca", URL, "--subject", "CN=x", *extra, env=env)
    return proc.returncode, proc.stdout + proc.stderr


def test_ref_is_required(hsm: SoftHSM) -> None:
    rc, out = _enroll(hsm, env={"TOKENISSUE_AUTH_CODE": CODE})
    assert rc == 2, out
    assert "needs --ref" in out


def test_missing_code_without_a_terminal(hsm: SoftHSM) -> None:
    rc, out = _enroll(hsm, "--ref", "1234")
    assert rc == 5, out
    assert "needs the authorization code: set TOKENISSUE_AUTH_CODE or give --auth-code-file" in out


def test_code_file_readable_by_others_is_refused(hsm: SoftHSM, hsm_root: Path) -> None:
    f = hsm_root / "code.txt"
    f.write_text(CODE + "\n")
    f.chmod(0o644)
    rc, out = _enroll(hsm, "--ref", "1234", "--auth-code-file", str(f))
    assert rc == 5, out
    assert "authorization code file" in out and "chmod 600" in out
    assert CODE not in out


def test_no_option_takes_the_code_in_argv(hsm: SoftHSM) -> None:
    help_text = hsm.run("enroll", "--help", env={"COLUMNS": "300"}).stdout
    assert "--auth-code-file" in help_text and "--ca-trust" in help_text and "--ref" in help_text
    for bad in ("--auth-code ", "--code ", "--secret "):
        assert bad not in help_text


def test_unknown_url_scheme_is_one_sentence(hsm: SoftHSM) -> None:
    add_token_fast(hsm, "test")  # the token is looked up before the CA is opened
    proc = hsm.run("enroll", "--token", "test", "--ca", "scep+https://x/", "--subject", "CN=x")
    assert proc.returncode == 2, proc.stderr
    assert ("scep+https:// are not supported; give cmp+http(s)://HOST:PORT/PATH, est+https://HOST:PORT, "
            "acme+https://HOST/DIRECTORY or a local CA directory") in proc.stderr


def test_lost_token_cannot_be_revoked_over_cmp(hsm: SoftHSM) -> None:
    proc = hsm.run("revoke", "--token-serial", "abc", "--ca", URL)
    assert proc.returncode == 2, proc.stderr
    assert "cannot be revoked over CMP" in proc.stderr
