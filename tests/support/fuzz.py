"""What the endpoint fuzz tests share: how a seed request is mutated, and hypothesis's settings.

In CI the examples are the same every run (a failure there can be reproduced); elsewhere they
are new each run, which is where new bugs are found.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

__all__ = ["fuzz_settings", "mutate"]

_IN_CI = bool(os.environ.get("CI"))
KINDS = ("flip", "truncate", "insert", "splice", "random", "oversize")


def fuzz_settings(examples: int) -> Callable[[Any], Any]:
    """hypothesis settings for a fixed number of examples against a live app (function-scoped
    fixtures, slow and large examples allowed)."""
    return settings(
        max_examples=examples, deadline=None, database=None, derandomize=_IN_CI,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
    )  # fmt: skip


def mutate(seed: bytes, data: st.DataObject, *, max_body: int, kinds: Sequence[str] = KINDS) -> bytes:
    """``seed`` with bits flipped, cut short, bytes inserted, its tail replaced (splice), grown to
    about ``max_body`` (oversize), random bytes instead, or unchanged ("none")."""
    kind = data.draw(st.sampled_from(list(kinds)))
    buf = bytearray(seed)
    if kind == "flip":
        for _ in range(data.draw(st.integers(1, 8))):
            i = data.draw(st.integers(0, len(buf) - 1))
            buf[i] ^= data.draw(st.integers(1, 255))
    elif kind == "truncate":
        del buf[data.draw(st.integers(0, len(buf) - 1)) :]
    elif kind == "insert":
        i = data.draw(st.integers(0, len(buf)))
        buf[i:i] = data.draw(st.binary(min_size=1, max_size=64))
    elif kind == "splice":
        i = data.draw(st.integers(0, len(buf)))
        buf[i:] = data.draw(st.binary(max_size=max_body + 512))
    elif kind == "oversize":
        buf += bytes(data.draw(st.integers(max(0, max_body - len(buf) - 16), max_body + 64)))
    elif kind == "random":
        buf = bytearray(data.draw(st.binary(max_size=max_body + 512)))
    return bytes(buf)
