"""The batch file parser: every row is either taken whole or refused by line, none vanishes."""

from __future__ import annotations

import pytest

from tokenissue.errors import UsageError
from tokenissue.fleet.batch import read_rows


def _rows(text: str) -> list[tuple[int, str, str]]:
    return [(r.line, r.token, r.subject) for r in read_rows(text, default_profile="personal")]


def test_bom_comments_blank_lines_header_case_and_quoting() -> None:
    text = '\ufeffToken,SUBJECT,Key-Type\n# a comment\n\ntray-01,"CN=홍길동,O=Bank,C=KR",rsa-2048\n"#3",CN=x,\n'
    assert _rows(text) == [(4, "tray-01", "CN=홍길동,O=Bank,C=KR"), (5, "#3", "CN=x")]
    assert read_rows(text, default_profile="p")[0].key_type == "rsa-2048"
    assert read_rows(text, default_profile="p")[1].key_type == "ec-p256"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        # An unclosed quote would swallow the next row into one cell.
        ('token,subject\nt1,"CN=a\nt2,CN=b\n', "not valid CSV"),
        ('token,subject\nt1,"CN=a\nt2,CN=b\nt3,"CN=c"\n', "not valid CSV"),
        ('token,subject\nt1,"CN=a\nt2,CN=b"\n', "line break"),
        ('token,subject\nt1,"' + "x" * 200_000 + '"\n', "not valid CSV"),
        ("token,subject\nt1\n", "1 cells for 2 columns"),
        ("token,subject\nt1,CN=a\nt1,CN=a\n", "line 3: repeats line 2"),
        ("token,subject\n", "no rows"),
        ("", "is empty"),
    ],
)
def test_bad_files_are_refused_whole(text: str, says: str) -> None:
    with pytest.raises(UsageError, match=says):
        read_rows(text, default_profile="personal")


def test_a_comment_line_cannot_swallow_the_rest() -> None:
    assert _rows('token,subject\n#,"note\nt1,CN=a\n') == [(3, "t1", "CN=a")]
