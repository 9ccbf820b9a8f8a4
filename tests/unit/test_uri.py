"""RFC 7512 PKCS#11 URIs and the token/key selectors (pure: no token)."""

from __future__ import annotations

import pytest

from tokenissue.errors import UsageError
from tokenissue.p11.uri import KeySelector, TokenSelector, format_uri, parse_uri


def test_format_then_parse_round_trip() -> None:
    uri = format_uri(token="my token;x", serial="0a1b2c", object="키 라벨/1", id=b"\x00\xc0\x01\xff", type="private")
    attrs = parse_uri(uri)
    assert attrs == {
        "token": b"my token;x",
        "serial": b"0a1b2c",
        "object": "키 라벨/1".encode(),
        "id": b"\x00\xc0\x01\xff",
        "type": b"private",
    }


def test_id_is_fully_percent_encoded() -> None:
    # libp11 wants every id byte percent-encoded, printable ones too.
    assert format_uri(id=b"\xc0\x01") == "pkcs11:id=%c0%01"
    assert format_uri(id=b"AB") == "pkcs11:id=%41%42"
    assert format_uri(token="test", id=b"\x01", type="private") == "pkcs11:token=test;id=%01;type=private"


def test_reserved_characters_in_labels_are_escaped() -> None:
    uri = format_uri(token="a;b=c", object="x?y")
    assert ";b" not in uri.split("token=", 1)[1].split(";")[0]
    assert "?" not in uri
    assert parse_uri(uri) == {"token": b"a;b=c", "object": b"x?y"}


def test_parse_accepts_mixed_case_names_and_empty_parts() -> None:
    assert parse_uri("pkcs11:Token=t;;ID=%01") == {"token": b"t", "id": b"\x01"}


@pytest.mark.parametrize(
    "uri",
    ["pkcs11:token=t?pin-value=1234", "pkcs11:token=t;id=%01?module-path=/x&pin-value=secret"],
)
def test_pin_value_is_refused_and_not_echoed(uri: str) -> None:
    with pytest.raises(UsageError) as exc:
        parse_uri(uri)
    assert "pin-value" in str(exc.value)
    assert "1234" not in str(exc.value)
    assert "secret" not in str(exc.value)
    with pytest.raises(UsageError):
        TokenSelector.parse(uri)


def test_other_query_attributes_are_ignored() -> None:
    assert parse_uri("pkcs11:token=t?module-path=/usr/lib/x.so") == {"token": b"t"}


@pytest.mark.parametrize("bad", ["token=t", "pkcs11:token", "pkcs11:token=t;junk"])
def test_malformed_uris(bad: str) -> None:
    with pytest.raises(UsageError):
        parse_uri(bad)


def test_token_selector_forms() -> None:
    assert TokenSelector.parse("test") == TokenSelector(label="test")
    assert TokenSelector.parse("  test ") == TokenSelector(label="test")
    assert TokenSelector.parse("serial:0a1B") == TokenSelector(serial="0a1B")
    assert TokenSelector.parse("SERIAL: 77ff") == TokenSelector(serial="77ff")
    assert TokenSelector.parse("pkcs11:token=test;serial=abc;manufacturer=SoftHSM%20project") == TokenSelector(
        label="test", serial="abc", manufacturer="SoftHSM project"
    )


def test_serial_selector_matches_case_insensitively_and_only_that_serial() -> None:
    sel = TokenSelector.parse("serial:ABCDEF")
    assert sel.matches("any", "abcdef", "m", "x")
    assert not sel.matches("any", "abcdee", "m", "x")
    both = TokenSelector(label="a", serial="1")
    assert both.matches("a", "1", "m", "x")
    assert not both.matches("b", "1", "m", "x")


@pytest.mark.parametrize("bad", ["", "   ", "pkcs11:", "pkcs11:id=%01;type=private"])
def test_token_selector_refuses_names_without_a_token(bad: str) -> None:
    with pytest.raises(UsageError):
        TokenSelector.parse(bad)


def test_token_selector_str_round_trips() -> None:
    for sel in (TokenSelector(label="test"), TokenSelector(serial="0a1b"), TokenSelector(label="t;x", serial="9")):
        assert TokenSelector.parse(str(sel)) == sel


def test_key_selector_forms() -> None:
    assert KeySelector.parse("mykey") == KeySelector(label="mykey")
    assert KeySelector.parse("id:c001") == KeySelector(id=b"\xc0\x01")
    assert KeySelector.parse("id:c0:01") == KeySelector(id=b"\xc0\x01")
    assert KeySelector.parse("pkcs11:token=t;object=k;id=%c0%01;type=private") == KeySelector(label="k", id=b"\xc0\x01")
    with pytest.raises(UsageError):
        KeySelector.parse("id:xyz")
    with pytest.raises(UsageError):
        KeySelector.parse("pkcs11:token=t")
    with pytest.raises(UsageError):
        KeySelector.parse("")


def test_key_selector_str_round_trips() -> None:
    for sel in (KeySelector(label="k"), KeySelector(id=b"\x00\xff"), KeySelector(label="홍길동", id=b"\x01")):
        assert KeySelector.parse(str(sel)) == sel
