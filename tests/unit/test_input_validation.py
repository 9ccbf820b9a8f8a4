"""Bad input gets one clear sentence and a documented exit code, never 'Unexpected error'.

Each case here used to escape as a raw Python exception (found by review)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from tokenissue.cli._common import parse_duration
from tokenissue.config import CAConfig
from tokenissue.errors import ConfigError, UsageError
from tokenissue.p11.uri import KeySelector, TokenSelector


@pytest.mark.parametrize("text", ["inf", "nan", "-1d", "1e9d", "x", "", "d"])
def test_bad_durations_are_usage_errors(text: str) -> None:
    with pytest.raises(UsageError):
        parse_duration(text)


@pytest.mark.parametrize(("text", "days"), [("30d", 30), ("2w", 14), ("12h", 0.5), ("7", 7)])
def test_good_durations(text: str, days: float) -> None:
    assert parse_duration(text) == timedelta(days=days)


@pytest.mark.parametrize("uri", ["pkcs11:object=%ff", "pkcs11:token=%c3%28"])
def test_uri_with_invalid_utf8_label_is_a_usage_error(uri: str) -> None:
    with pytest.raises(UsageError):
        (KeySelector if "object" in uri else TokenSelector).parse(uri)


@pytest.mark.parametrize(
    "body",
    ['subject = "CN=x"\ncrl_days = "7"', 'subject = 5', 'token = "serial:1"', 'subject = "CN=x"\ncrl_days = 0'],
)
def test_ca_toml_with_wrong_types_is_a_config_error(tmp_path: Path, body: str) -> None:
    (tmp_path / "ca.toml").write_text("[ca]\n" + body + "\n")
    with pytest.raises(ConfigError) as e:
        CAConfig.load(tmp_path)
    assert e.value.exit_code == 3
