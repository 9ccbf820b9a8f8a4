"""'make demo' (softhsm-config/demo.sh) runs, tells the holder where the command is, and the
README's transcript of it is what it really does: every command the README shows is one the
demo runs, in the same order, and the demo's messages have the README's shape."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from support.softhsm import SOFTHSM_MODULE

ROOT = Path(__file__).resolve().parents[2]
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _commands(text: str) -> list[str]:
    """The '$ ...' lines of a transcript, with paths and serials reduced to their shape."""
    out = []
    for line in text.splitlines():
        if line.startswith("$ "):
            line = re.sub(r"\S*/\.state/demo", "STATE", line)
            line = re.sub(r"/tmp/\S*?/demo", "STATE", line)
            line = re.sub(r"\b[0-9a-f]{16}\b", "SERIAL", line)
            line = re.sub(r"personal-\d{8}-[0-9a-f]{6}", "LABEL", line)
            out.append(line)
    return out


@pytest.mark.skipif(not Path(SOFTHSM_MODULE).exists(), reason="SoftHSM2 is not installed (make deps)")
def test_demo_runs_and_the_readme_shows_what_it_does(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TOKENISSUE_", "SOFTHSM2_"))}
    bindir = Path(sys.executable).parent
    env.update({"STATE": str(tmp_path), "TOKENISSUE_BIN": str(bindir / "tokenissue"), "PYTHON": sys.executable,
                "PYTHONPATH": str(ROOT)})  # fmt: skip
    proc = subprocess.run(["bash", str(ROOT / "softhsm-config" / "demo.sh")], capture_output=True, text=True,
                          env=env, timeout=300, check=False)  # fmt: skip
    out = ANSI.sub("", proc.stdout + proc.stderr)
    assert proc.returncode == 0, out
    for said in ("Enrolled: CN=홍길동,O=Demo Bank,C=KR", ": OK", "reason key-compromise.", "CRL with 1 revoked",
                 "on token 'demo-new'", "The command is "):  # fmt: skip
        assert said in out, (said, out)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme[readme.index("`make demo` starts from a clean slate") : readme.index("## Commands")]
    shown = _commands(block)
    assert shown, "the README shows no demo command"
    assert shown == _commands(out), "README.md's demo transcript is not what softhsm-config/demo.sh runs"
