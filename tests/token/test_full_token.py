"""A token that is full when the certificate is written back: said to be full, not "went away".

SoftHSM's token directory on a tmpfs of its own that fills up after the key is made. SoftHSM
answers the C_CreateObject of the certificate with CKR_OBJECT_HANDLE_INVALID (measured), which
tokenissue used to report as "the key or certificate went away ... removed". Nothing is lost:
an enrollment keeps the issued certificate in its journal and 'enroll --resume' writes it once
there is room.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from support.lifecycle import TokenCA, make_token_ca, token_dir
from support.softhsm import SoftHSM
from support.software_ca import SoftwareCA


class FullToken:
    """The token directory of ``label`` on a 256 KiB tmpfs; fill() takes every byte left."""

    def __init__(self, hsm: SoftHSM, label: str, tmp: Path) -> None:
        self.dir = token_dir(hsm, label)
        self.saved = tmp / f"{label}-saved"
        shutil.copytree(self.dir, self.saved)
        mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", str(self.dir)],
                               capture_output=True, text=True, check=False)  # fmt: skip
        if mount.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs here (needs root): {mount.stderr.strip()}")
        shutil.copytree(self.saved, self.dir, dirs_exist_ok=True)

    def fill(self) -> None:
        fd = os.open(self.dir / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            while True:
                os.write(fd, b"\0" * 4096)
        except OSError:
            pass  # ENOSPC: full
        finally:
            os.close(fd)

    def free(self) -> None:
        (self.dir / "filler").unlink()

    def unmount(self) -> None:
        subprocess.run(["umount", str(self.dir)], check=False)


@pytest.fixture
def full(softhsm: SoftHSM, tmp_path: Path) -> Iterator[tuple[SoftHSM, FullToken]]:
    ft = FullToken(softhsm, "test", tmp_path)
    try:
        yield softhsm, ft
    finally:
        ft.unmount()


def test_cert_import_onto_a_full_token_says_it_is_full(full: tuple[SoftHSM, FullToken], software_ca: SoftwareCA) -> None:
    hsm, ft = full
    hsm.run("keys", "generate", "-t", "test", "-l", "k", check=True)
    req = hsm.root / "req.pem"
    hsm.run("csr", "-t", "test", "-k", "k", "-s", "CN=Full", "-o", str(req), check=True)
    cert = software_ca.issue_pem_file(x509.load_pem_x509_csr(req.read_bytes()).public_key(), "Full", "full.pem")
    ft.fill()
    proc = hsm.run("cert", "import", "-t", "test", str(cert))
    said = " ".join(proc.stderr.split())
    assert proc.returncode == 4, said
    assert "probably full" in said and "went away" not in said, said
    ft.free()
    hsm.run("cert", "import", "-t", "test", str(cert), check=True)
    certs = json.loads(hsm.run("cert", "list", "-t", "test", "--json", check=True).stdout)
    assert [c["subject"] for c in certs] == ["CN=Full"]


def test_enrollment_onto_a_full_token_keeps_its_certificate_and_resumes(full: tuple[SoftHSM, FullToken]) -> None:
    hsm, ft = full
    ca: TokenCA = make_token_ca(hsm)  # its own token 'ca' lives outside the small tmpfs
    crashed = ca.run(*ca.enroll_args("CN=Full Enrollment,C=KR", token="test"), env={"TOKENISSUE_FAILPOINT": "issued-recorded"})
    assert crashed.returncode != 0
    ft.fill()
    proc = ca.run("enroll", "--resume")
    said = " ".join(proc.stderr.split())
    assert proc.returncode != 0 and "probably full" in said and "went away" not in said, said
    [entry] = ca.json("journal", "list")
    assert entry["step"] == "issued" and entry["token_present"] is True
    ft.free()
    ca.run("enroll", "--resume", check=True)
    assert ca.json("journal", "list") == []
    assert len(ca.issued()) == 1  # written back, not issued a second time
