"""SoftHSM 2, the reference PKCS#11 implementation of the tests: a private installation per
test (its own config and token directory, on tmpfs when there is one) and the CLI run against it.

Nothing mocks the PKCS#11 layer. In-process tests switch SoftHSM to a test's own token
directory by pointing SOFTHSM2_CONF at it and re-initialising the module (SoftHSM reads its
config at C_Initialize); CLI tests run ``tokenissue`` as a real subprocess with that environment.
The fixtures that make these (``softhsm``, ``raw_softhsm``, ``session_softhsm``) are in
tests/conftest.py.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from support.cli import SO_PIN, USER_PIN, cli_env, run_cli

SOFTHSM_MODULE = "/usr/lib/softhsm/libsofthsm2.so"
#: Where test token directories go: tmpfs when the machine has one, else TMPDIR.
TMPFS = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
#: A smart-card-like slot (slots.mechanisms): raw signatures only, so the host must hash.
RAW_MECHANISMS = (
    "CKM_RSA_PKCS,CKM_RSA_PKCS_KEY_PAIR_GEN,CKM_ECDSA,CKM_EC_KEY_PAIR_GEN,"
    "CKM_EDDSA,CKM_EC_EDWARDS_KEY_PAIR_GEN,CKM_SHA256,CKM_SHA384,CKM_SHA512"
)

requires_softhsm = pytest.mark.skipif(not Path(SOFTHSM_MODULE).exists(), reason="SoftHSM2 is not installed (make deps)")


@dataclass
class SoftHSM:
    """A private SoftHSM installation: config, token directory, and an environment to run with."""

    root: Path
    conf: Path
    env: dict[str, str] = field(default_factory=dict)
    labels: list[str] = field(default_factory=list)

    def run(
        self, *args: str, input: str | None = None, env: dict[str, str] | None = None, check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """Run the real CLI in a subprocess with this SoftHSM."""
        return run_cli({**self.env, **(env or {})}, args, input=input, check=check)

    def add_token(self, label: str) -> None:
        proc = self.run(
            "token", "init", "--label", label, env={"TOKENISSUE_SO_PIN": SO_PIN, "TOKENISSUE_PIN": USER_PIN}
        )
        assert proc.returncode == 0, proc.stderr
        self.labels.append(label)


def make_softhsm(root: Path, *, mechanisms: str | None = None) -> SoftHSM:
    (root / "tokens").mkdir(parents=True, exist_ok=True)
    conf = root / "softhsm2.conf"
    lines = [
        f"directories.tokendir = {root / 'tokens'}",
        "objectstore.backend = file",
        "log.level = ERROR",
        "slots.removable = false",
    ]
    if mechanisms:
        lines.append(f"slots.mechanisms = {mechanisms}")
    conf.write_text("\n".join(lines) + "\n")
    env = cli_env(root, SOFTHSM_MODULE)
    env["SOFTHSM2_CONF"] = str(conf)
    return SoftHSM(root=root, conf=conf, env=env)
