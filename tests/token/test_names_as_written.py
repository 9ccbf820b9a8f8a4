"""Names that look like rich markup ('[/]', '[bold]') are shown as written in every table.

Token labels, key labels and certificate subjects come from whoever made the token or the
request; found by review: one such subject made 'ca list' fail with an unexpected error, so
the CA could no longer list anything.
"""

from __future__ import annotations

from support.lifecycle import TokenCA, add_token_fast, make_token_ca
from support.softhsm import SoftHSM

TOKEN = "tray [/] 7"
LABEL = "[bold]k[/bold]"
SUBJECT = "CN=Evil [/] holder,O=Example Bank,C=KR"


def test_markup_like_names_are_printed_literally(softhsm: SoftHSM) -> None:
    ca: TokenCA = make_token_ca(softhsm)
    add_token_fast(softhsm, TOKEN)
    ca.run("enroll", "--token", TOKEN, "--ca", str(ca.dir), "--subject", SUBJECT, "--label", LABEL, check=True)
    for args, shown in (
        (("tokens",), TOKEN),
        (("token", "info", "-t", TOKEN), TOKEN),
        (("keys", "list", "-t", TOKEN), LABEL),
        (("cert", "list", "-t", TOKEN), LABEL),
        (("status", "-t", TOKEN), "Evil [/] holder"),
        (("ca", "list", "--ca-dir", str(ca.dir)), "Evil [/] holder"),
    ):
        proc = ca.run(*args)
        assert proc.returncode == 0, (args, proc.stderr)
        assert shown in proc.stdout, (args, proc.stdout)
