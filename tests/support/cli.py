"""Running the real ``tokenissue`` CLI from a test: the test tokens' PINs, the environment a
test CLI runs with, and the subprocess itself.

Tests never call the CLI in-process: ``run_cli`` starts ``python -m tokenissue.cli`` with
exactly the environment it is given, which ``cli_env`` builds from this one without anything
that could point it at another token.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

USER_PIN = "246810"
SO_PIN = "13579135"

#: The checkout the tests run from: what a test CLI imports (PYTHONPATH).
CHECKOUT = Path(__file__).resolve().parents[2]


def run_cli(
    env: dict[str, str], args: tuple[str, ...], *, input: str | None = None, check: bool = False
) -> subprocess.CompletedProcess[str]:
    """The real CLI as a subprocess with exactly ``env``; ``check`` fails on a non-zero exit."""
    proc = subprocess.run(
        [sys.executable, "-m", "tokenissue.cli", *args],
        input=input, capture_output=True, text=True, env=env, timeout=300, check=False,
    )  # fmt: skip
    if check and proc.returncode != 0:
        raise AssertionError(f"tokenissue {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def cli_env(
    root: Path, module: str, *, drop: tuple[str, ...] = ("TOKENISSUE_",), drop_names: tuple[str, ...] = ("SOFTHSM2_CONF",)
) -> dict[str, str]:
    """The environment a test CLI runs with: this one without the variables that would point it
    at another token (names starting with ``drop``, or in ``drop_names``), plus the module, the
    test PIN, a state directory under ``root``, this checkout on PYTHONPATH and wide output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop) and k not in drop_names}
    env.update({
        "TOKENISSUE_MODULE": module,
        "TOKENISSUE_PIN": USER_PIN,
        "TOKENISSUE_STATE_DIR": str(root / "state"),
        "PYTHONPATH": str(CHECKOUT),
        "COLUMNS": "200",
    })  # fmt: skip
    return env
