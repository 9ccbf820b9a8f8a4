"""The one way tokenissue runs a user's hook command: the expiry sweep's ``--hook`` and ACME's
``--dns-hook``.

A hook gets an environment built from an explicit allowlist (:data:`ALLOWED`: the locale, the
path, the user and home, the time zone) plus the variables tokenissue sets for it, and nothing
else: not tokenissue's PIN and code variables, not PGPASSWORD, not a variable a ``--*-env``
option named as a secret's source (the CLI withholds those with :func:`withhold`, so even a PIN
kept in a variable named like a locale setting, ``--pin-env LC_PIN``, stays out). A hook that
needs credentials (a DNS provider's API token) reads them from its own file, or takes a path as
an argument: the hook command line is split like a shell would, but no shell runs it.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["ALLOWED", "environment", "run", "withhold"]

#: What a hook inherits from tokenissue's environment, by exact name.
ALLOWED = frozenset({
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "TMPDIR", "TZ", "LANG", "LANGUAGE",
    "LC_ALL", "LC_CTYPE", "LC_COLLATE", "LC_MESSAGES", "LC_MONETARY", "LC_NUMERIC", "LC_TIME",
    "LC_ADDRESS", "LC_IDENTIFICATION", "LC_MEASUREMENT", "LC_NAME", "LC_PAPER", "LC_TELEPHONE",
})  # fmt: skip

_withheld: set[str] = set()


def withhold(name: str) -> None:
    """Never hand variable ``name`` to a hook (it holds a secret: a --pin-env NAME)."""
    _withheld.add(name)


def environment(extra: Mapping[str, str]) -> dict[str, str]:
    """The allowlisted part of this process's environment, less withheld names, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k in ALLOWED and k not in _withheld}
    env.update(extra)
    return env


def run(argv: Sequence[str], *, extra_env: Mapping[str, str], **kwargs: Any) -> subprocess.CompletedProcess[Any]:
    """Run a hook (no shell) with :func:`environment`; ``kwargs`` go to :func:`subprocess.run`."""
    return subprocess.run(list(argv), env=environment(extra_env), check=False, **kwargs)
