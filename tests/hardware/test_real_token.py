"""Opt-in checks against a real token (a USB token, a smart card, an HSM).

Skipped unless TOKENISSUE_HW_MODULE (the PKCS#11 module) and TOKENISSUE_HW_TOKEN (its label or
serial:XXXX) are set, with the user PIN in TOKENISSUE_PIN. They generate one EC P-256 key
labelled 'tokenissue-hw-test', make a CSR with it, check the provenance flags, and delete the
key again: run them only on a token where that is acceptable.

    TOKENISSUE_HW_MODULE=/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so \\
    TOKENISSUE_HW_TOKEN='serial:0123456789' TOKENISSUE_PIN=... \\
    .venv/bin/pytest tests/hardware -v
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from cryptography import x509

MODULE = os.environ.get("TOKENISSUE_HW_MODULE")
TOKEN = os.environ.get("TOKENISSUE_HW_TOKEN")
LABEL = "tokenissue-hw-test"

pytestmark = pytest.mark.skipif(
    not (MODULE and TOKEN and os.environ.get("TOKENISSUE_PIN")),
    reason="set TOKENISSUE_HW_MODULE, TOKENISSUE_HW_TOKEN and TOKENISSUE_PIN to test a real token",
)


def _ti(*args: str) -> subprocess.CompletedProcess[str]:
    assert MODULE and TOKEN
    return subprocess.run(
        [sys.executable, "-m", "tokenissue.cli", "--module", MODULE, *args],
        capture_output=True, text=True, timeout=300, check=False,
    )


def test_key_born_on_the_real_token_signs_a_csr() -> None:
    assert TOKEN
    gen = _ti("keys", "generate", "--token", TOKEN, "--label", LABEL, "--type", "ec-p256", "--json")
    assert gen.returncode == 0, gen.stderr
    try:
        key = json.loads(gen.stdout)
        assert key["born_on_token"] is True, key
        csr = _ti("csr", "--token", TOKEN, "--key", LABEL, "--subject", "CN=tokenissue hardware test")
        assert csr.returncode == 0, csr.stderr
        assert x509.load_pem_x509_csr(csr.stdout.encode()).is_signature_valid
    finally:
        _ti("keys", "delete", "--token", TOKEN, "--key", LABEL, "--yes")
