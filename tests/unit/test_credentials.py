"""A Pin never shows its value: repr, str, format, f-strings, logging, exceptions, pickle."""

from __future__ import annotations

import logging
import pickle

import pytest

from tokenissue.credentials import PROTECTED_AUTH, Pin, ProtectedAuth

VALUE = "7391-secret-PIN"


def test_pin_reveals_only_through_reveal() -> None:
    pin = Pin(VALUE)
    assert pin.reveal() == VALUE
    for shown in (repr(pin), str(pin), f"{pin}", f"{pin!r}", f"{pin!s}", f"{pin:>40}", format(pin, "s"),
                  "%s" % pin, "%r" % (pin,), "{}".format(pin), repr([pin]), repr({"pin": pin})):  # noqa: UP031, UP032
        assert VALUE not in shown
        assert "***" in shown


def test_pin_not_in_log_records_or_exception_messages(caplog: pytest.LogCaptureFixture) -> None:
    pin = Pin(VALUE)
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("tokenissue.test").debug("logging in with %s and %r", pin, pin)
    assert caplog.records
    assert VALUE not in caplog.text
    err = RuntimeError(f"login failed for {pin}")
    assert VALUE not in str(err)
    assert VALUE not in repr(err)


def test_pin_cannot_be_pickled() -> None:
    pin = Pin(VALUE)
    with pytest.raises(TypeError):
        pickle.dumps(pin)
    for proto in range(pickle.HIGHEST_PROTOCOL + 1):
        with pytest.raises(TypeError):
            pickle.dumps({"pin": pin}, protocol=proto)


def test_pin_equality_and_hash_do_not_expose() -> None:
    assert Pin(VALUE) == Pin(VALUE)
    assert Pin(VALUE) != Pin(VALUE + "x")
    assert hash(Pin(VALUE)) == hash(Pin("other"))  # the hash carries nothing about the value
    assert len(Pin(VALUE)) == len(VALUE)


def test_pin_accepts_only_str() -> None:
    with pytest.raises(TypeError):
        Pin(VALUE.encode())  # type: ignore[arg-type]


def test_protected_auth_is_a_singleton_without_value() -> None:
    assert ProtectedAuth() is PROTECTED_AUTH
    assert repr(PROTECTED_AUTH) == "PROTECTED_AUTH"
