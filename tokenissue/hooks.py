"""The one way tokenissue runs a user's hook command: the expiry sweep's ``--hook``, ACME's
``--dns-hook`` and the RA's code delivery command.

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
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from typing import Any

from .errors import UsageError

__all__ = ["ALLOWED", "environment", "run", "run_checked", "split", "withhold"]

#: The most of a failed hook's last line of standard error that is passed on.
DETAIL_MAX = 300

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


def split(command: str, what: str = "hook") -> list[str]:
    """``command`` split as a shell would split it (no shell runs it); UsageError if it cannot be."""
    try:
        argv = shlex.split(command)
    except ValueError as e:
        raise UsageError(f"The {what} command cannot be parsed ({e}).") from None
    if not argv:
        raise UsageError(f"The {what} command is empty.")
    return argv


def run_checked(
    argv: Sequence[str],
    *,
    extra_env: Mapping[str, str],
    input: bytes | None,
    timeout: float,
    what: str = "hook",
    redact: Sequence[str] = (),
) -> str | None:
    """Run a hook with :func:`run`, its output captured; None if it succeeded, else why not.

    The reason is one phrase: not found, not executable, cannot run, timed out, or the exit
    status with the last line the hook wrote to standard error, in which each of ``redact``
    (a secret the hook was given on standard input) is blotted out.
    """
    try:
        proc = run(argv, extra_env=extra_env, input=input, capture_output=True, timeout=timeout)
    except FileNotFoundError:
        return f"{what} command not found: {argv[0]}"
    except PermissionError:
        return f"{what} command not executable: {argv[0]}"
    except OSError as e:  # no #! line (ENOEXEC), argument list too long, ...
        return f"{what} command cannot run: {e.strerror or e}"
    except subprocess.TimeoutExpired:
        return f"{what} timed out after {timeout:g} s"
    if proc.returncode != 0:
        said = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        last = said[-1] if said else ""
        for secret in redact:
            if secret:
                last = last.replace(secret, "[withheld]")
        tail = f": {last[:DETAIL_MAX]}" if last else ""
        return f"{what} exited with status {proc.returncode}{tail}"
    return None
