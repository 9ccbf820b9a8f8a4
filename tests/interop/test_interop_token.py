"""Objects tokenissue writes are what pkcs11-tool, p11tool and OpenSSL's engine expect, and keys
they make are usable by tokenissue. Every subprocess runs with the test's own SOFTHSM2_CONF."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from support.cli import USER_PIN
from support.softhsm import SOFTHSM_MODULE, SoftHSM
from support.software_ca import SoftwareCA, make_software_ca

pytestmark = pytest.mark.interop

ENGINE_SO = next(
    (p for p in ("/usr/lib/x86_64-linux-gnu/engines-3/pkcs11.so", "/usr/lib/aarch64-linux-gnu/engines-3/pkcs11.so")
     if Path(p).exists()),
    None,
)


def _needs(tool: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(shutil.which(tool) is None, reason=f"{tool} is not installed")


def _tool(hsm: SoftHSM, *args: str, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    # OPENSSL_CONF only where a test sets it: with the engine loaded, OpenSSL cannot use file keys.
    env = {k: v for k, v in os.environ.items() if k != "OPENSSL_CONF"}
    env.update({"SOFTHSM2_CONF": str(hsm.conf), "PIN": USER_PIN, "GNUTLS_PIN": USER_PIN, "LC_ALL": "C"})
    env.update(extra_env or {})
    proc = subprocess.run(list(args), capture_output=True, text=True, env=env, timeout=120, check=False)
    assert proc.returncode == 0, f"{args[0]} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def _certified_key(hsm: SoftHSM, ca: SoftwareCA, label: str) -> tuple[str, x509.Certificate]:
    """keys generate + csr + a certificate from the software CA + cert import; returns (id, cert)."""
    kid = json.loads(hsm.run("keys", "generate", "-t", "test", "-l", label, "--json", check=True).stdout)["id"]
    csr = x509.load_pem_x509_csr(hsm.run("csr", "-t", "test", "-k", label, "-s", f"CN={label}", check=True).stdout.encode())
    cert = ca.issue(csr.public_key(), label)
    path = ca.root / f"{label}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    hsm.run("cert", "import", "-t", "test", str(path), check=True)
    return kid, cert


def _pkcs11_tool_objects(output: str) -> list[dict[str, str]]:
    """Parse `pkcs11-tool -O`: one dict per object with its kind, label and ID."""
    objects: list[dict[str, str]] = []
    for line in output.splitlines():
        head = re.match(r"^(Private Key|Public Key|Certificate|Data) Object", line)
        if head:
            objects.append({"kind": head.group(1)})
            continue
        field = re.match(r"^\s+(label|ID):\s*(.*)$", line)
        if field and objects:
            objects[-1][field.group(1)] = field.group(2).strip()
    return objects


@_needs("pkcs11-tool")
@_needs("p11tool")
@_needs("openssl")
def test_objects_are_seen_by_pkcs11_tool_p11tool_and_openssl(softhsm: SoftHSM, software_ca: SoftwareCA) -> None:
    kid, cert = _certified_key(softhsm, software_ca, "alice")
    _certified_key(softhsm, software_ca, "bob")  # a second set of objects that must not be confused

    out = _tool(softhsm, "pkcs11-tool", "--module", SOFTHSM_MODULE, "--token-label", "test",
                "--login", "--pin", "env:PIN", "-O").stdout
    objects = _pkcs11_tool_objects(out)
    # pkcs11-tool ignores --id filters, so pick ours out of the full list.
    mine = sorted(o["kind"] for o in objects if o.get("ID") == kid)
    assert mine == ["Certificate", "Private Key", "Public Key"], out
    assert {o.get("label") for o in objects if o.get("ID") == kid} == {"alice"}
    assert len(objects) == 6

    # The label must be blank-padded to 32 bytes, else p11tool sees "test\0\0..." and
    # pkcs11:token=test matches nothing (tokenissue's token init used to NUL-pad it).
    tokens = _tool(softhsm, "p11tool", "--provider", SOFTHSM_MODULE, "--list-tokens").stdout
    token_urls = [u.strip() for u in tokens.splitlines() if "URL:" in u]
    assert any(u.endswith(";token=test") for u in token_urls), tokens
    assert not any("%00" in u for u in token_urls), tokens
    listed = _tool(softhsm, "p11tool", "--provider", SOFTHSM_MODULE, "--list-all-certs", "pkcs11:token=test").stdout
    pct = "".join(f"%{b:02x}" for b in bytes.fromhex(kid))
    urls = [line.split("URL:", 1)[1].strip() for line in listed.splitlines() if "URL:" in line]
    alice = [u for u in urls if "object=alice" in u]
    assert len(alice) == 1, listed
    assert "type=cert" in alice[0]
    assert pct in alice[0].lower()

    leaf = softhsm.root / "alice-export.pem"
    softhsm.run("cert", "export", "-t", "test", "-k", "alice", "-o", str(leaf), check=True)
    assert x509.load_pem_x509_certificate(leaf.read_bytes()) == cert
    ok = _tool(softhsm, "openssl", "verify", "-CAfile", str(software_ca.root / "ca.pem"), str(leaf))
    assert ok.stdout.strip().endswith(": OK")
    # The control: another CA must not verify it.
    other = make_software_ca(softhsm.root / "other-ca", cn="Other CA")
    bad = subprocess.run(["openssl", "verify", "-CAfile", str(other.root / "ca.pem"), str(leaf)],
                         capture_output=True, text=True, check=False)
    assert bad.returncode != 0


@_needs("openssl")
@pytest.mark.skipif(ENGINE_SO is None, reason="libengine-pkcs11-openssl is not installed")
def test_openssl_engine_signs_a_csr_with_our_key(softhsm: SoftHSM) -> None:
    # No Ed25519 key on this token: libp11 0.4.12 segfaults once one is present.
    kid = json.loads(softhsm.run("keys", "generate", "-t", "test", "-l", "eng", "--json", check=True).stdout)["id"]
    cnf = softhsm.root / "engine.cnf"
    cnf.write_text(
        "openssl_conf = openssl_init\n[openssl_init]\nengines = engine_section\n"
        "[engine_section]\npkcs11 = pkcs11_section\n[pkcs11_section]\nengine_id = pkcs11\n"
        f"dynamic_path = {ENGINE_SO}\nMODULE_PATH = {SOFTHSM_MODULE}\ninit = 0\n"
        "[req]\ndistinguished_name = req_dn\n[req_dn]\n"
    )
    pct = "".join(f"%{b:02x}" for b in bytes.fromhex(kid))
    out = softhsm.root / "engine.csr"
    _tool(softhsm, "openssl", "req", "-new", "-engine", "pkcs11", "-keyform", "engine",
          "-key", f"pkcs11:token=test;id={pct};type=private", "-passin", "env:PIN",
          "-subj", "/CN=made by openssl", "-sha256", "-out", str(out), extra_env={"OPENSSL_CONF": str(cnf)})
    csr = x509.load_pem_x509_csr(out.read_bytes())
    assert csr.is_signature_valid
    assert x509.SubjectKeyIdentifier.from_public_key(csr.public_key()).digest.hex() == kid
    ours = x509.load_pem_x509_csr(softhsm.run("csr", "-t", "test", "-k", "eng", "-s", "CN=x", check=True).stdout.encode())
    assert ours.public_key() == csr.public_key()


@_needs("pkcs11-tool")
def test_key_made_by_pkcs11_tool_is_usable_by_tokenissue(softhsm: SoftHSM, software_ca: SoftwareCA) -> None:
    _tool(softhsm, "pkcs11-tool", "--module", SOFTHSM_MODULE, "--token-label", "test", "--login", "--pin", "env:PIN",
          "--keypairgen", "--key-type", "EC:prime256v1", "--id", "c0ffee", "--label", "foreign", "--usage-sign")
    keys = json.loads(softhsm.run("keys", "list", "-t", "test", "--json", check=True).stdout)
    assert [(k["label"], k["id"], k["type"], k["local"]) for k in keys] == [("foreign", "c0ffee", "ec-p256", True)]

    pub_der = softhsm.root / "foreign-pub.der"
    _tool(softhsm, "pkcs11-tool", "--module", SOFTHSM_MODULE, "--token-label", "test", "--read-object",
          "--type", "pubkey", "--id", "c0ffee", "-o", str(pub_der))
    tool_pub: Any = serialization.load_der_public_key(pub_der.read_bytes())
    for sel in ("foreign", "id:c0ffee"):
        proc = softhsm.run("csr", "-t", "test", "-k", sel, "-s", "CN=foreign,C=KR", check=True)
        csr = x509.load_pem_x509_csr(proc.stdout.encode())
        assert csr.is_signature_valid
        assert csr.public_key() == tool_pub

    # And its certificate goes under pkcs11-tool's ID and label.
    path = software_ca.issue_pem_file(tool_pub, "foreign", "foreign.pem")
    stored = json.loads(softhsm.run("cert", "import", "-t", "test", str(path), "--json", check=True).stdout)
    assert [(c["id"], c["label"]) for c in stored] == [("c0ffee", "foreign")]
