"""Fixtures of the ACME interop tests: Pebble (support/acme.py), one per test module."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from support.acme import EAB_EXAMPLE, Pebble, run_pebble


@pytest.fixture(scope="module")
def pebble(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pebble]:
    """Pebble and challtestsrv for this module's tests."""
    with run_pebble(tmp_path_factory.mktemp("pebble")) as p:
        yield p


@pytest.fixture(scope="module")
def pebble_eab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pebble]:
    """A Pebble that requires external account binding, with the keys of Debian's example config."""
    keys = json.loads(EAB_EXAMPLE.read_text())["pebble"]["externalAccountMACKeys"]
    with run_pebble(tmp_path_factory.mktemp("pebble-eab"), eab=keys) as p:
        yield p
