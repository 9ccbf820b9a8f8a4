"""An intermediate CA: key on the token, CSR to a parent, certificate installed, then issuing.

Found by review: installing the intermediate's certificate without its parent chain used to
succeed, and every enrollment then stalled after issuance on a chain it could not verify.
"""

from __future__ import annotations

import json
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from support.openssl import openssl
from support.softhsm import SoftHSM
from support.software_ca import make_software_ca


def test_intermediate_ca_install_needs_the_chain_then_issues(softhsm: SoftHSM, tmp_path: Path) -> None:
    softhsm.add_token("ca")
    env = {"TOKENISSUE_CA_PIN": softhsm.env["TOKENISSUE_PIN"]}
    ica, csr_file = tmp_path / "ica", tmp_path / "ica.csr"
    softhsm.run("ca", "init", "--ca-dir", str(ica), "--token", "ca", "--subject", "CN=Issuing CA,O=T,C=KR",
                "--csr-out", str(csr_file), env=env, check=True)
    parent = make_software_ca(tmp_path / "root")
    csr = x509.load_pem_x509_csr(csr_file.read_bytes())
    ica_cert = parent.issue(csr.public_key(), "Issuing CA", ca=True, days=365)
    cert_pem = tmp_path / "ica.pem"
    cert_pem.write_bytes(ica_cert.public_bytes(serialization.Encoding.PEM))
    root_pem = tmp_path / "root.pem"
    root_pem.write_bytes(parent.pem)

    # Not installable without the chain to a root, and nothing is written.
    bad = softhsm.run("ca", "install-cert", "--ca-dir", str(ica), str(cert_pem))
    assert bad.returncode == 6, bad.stderr
    assert "--chain" in bad.stderr
    assert not (ica / "ca.pem").exists()
    # A certificate for another key is refused too.
    other = make_software_ca(tmp_path / "other")
    wrong = tmp_path / "wrong.pem"
    wrong.write_bytes(parent.issue(other.key.public_key(), "Issuing CA", ca=True).public_bytes(serialization.Encoding.PEM))
    assert softhsm.run("ca", "install-cert", "--ca-dir", str(ica), str(wrong), "--chain", str(root_pem)).returncode == 6

    softhsm.run("ca", "install-cert", "--ca-dir", str(ica), str(cert_pem), "--chain", str(root_pem), check=True)
    out = json.loads(softhsm.run("enroll", "--token", "test", "--ca", str(ica), "--subject", "CN=Leaf",
                                 "--label", "leaf", "--json", env=env, check=True).stdout)
    assert out["issuer"] == "CN=Issuing CA"  # the parent decides the subject it certifies
    # The token holds the leaf and both CA certificates; openssl verifies the leaf to the root.
    certs = json.loads(softhsm.run("cert", "list", "--token", "test", "--json", check=True).stdout)
    assert sorted(c["subject"] for c in certs if c["ca"]) == sorted(["CN=Issuing CA", parent.cert.subject.rfc4514_string()])
    leaf = tmp_path / "leaf.pem"
    softhsm.run("cert", "export", "--token", "test", "--key", "leaf", "-o", str(leaf), check=True)
    verified = openssl("verify", "-CAfile", str(root_pem), "-untrusted", str(cert_pem), str(leaf))
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_a_tokenissue_root_signs_an_intermediate_with_the_sub_ca_profile(softhsm: SoftHSM, tmp_path: Path) -> None:
    """The recipe of docs/ca-admin.md, all tokenissue: 'ca profiles' lists sub-ca; the root
    signs the intermediate's CSR with it (basicConstraints cA, pathLen 0, keyCertSign); the
    intermediate issues to a holder, and OpenSSL verifies leaf -> intermediate -> root. The
    intermediate (pathLen 0) cannot sign a CA below itself."""
    for label in ("root", "issuing"):
        softhsm.add_token(label)
    env = {"TOKENISSUE_CA_PIN": softhsm.env["TOKENISSUE_PIN"]}
    root, ica, csr_file = tmp_path / "root", tmp_path / "ica", tmp_path / "ica.csr"
    softhsm.run("ca", "init", "--ca-dir", str(root), "--token", "root", "--subject", "CN=Root CA,O=T,C=KR",
                env=env, check=True)  # fmt: skip
    listed = json.loads(softhsm.run("ca", "profiles", "--ca-dir", str(root), "--json", check=True).stdout)
    [sub] = [p for p in listed if p["name"] == "sub-ca"]
    assert sub["ca"] is True and sub["path_length"] == 0 and "key_cert_sign" in sub["key_usage"]
    softhsm.run("ca", "init", "--ca-dir", str(ica), "--token", "issuing", "--subject", "CN=Issuing CA,O=T,C=KR",
                "--csr-out", str(csr_file), env=env, check=True)  # fmt: skip
    ica_pem = tmp_path / "ica.pem"
    softhsm.run("ca", "sign", "--ca-dir", str(root), str(csr_file), "--profile", "sub-ca", "-o", str(ica_pem),
                env=env, check=True)  # fmt: skip
    cert = x509.load_pem_x509_certificate(ica_pem.read_bytes())
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert bc.ca is True and bc.path_length == 0
    assert cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    softhsm.run("ca", "install-cert", "--ca-dir", str(ica), str(ica_pem), "--chain", str(root / "ca.pem"),
                env=env, check=True)  # fmt: skip
    out = json.loads(softhsm.run("enroll", "--token", "test", "--ca", str(ica), "--subject", "CN=Leaf,C=KR",
                                 "--json", env=env, check=True).stdout)  # fmt: skip
    leaf = tmp_path / "leaf.pem"
    softhsm.run("cert", "export", "--token", "test", "--key", out["label"], "-o", str(leaf), check=True)
    proc = openssl("verify", "-CAfile", str(root / "ca.pem"), "-untrusted", str(ica_pem), str(leaf))
    assert proc.returncode == 0 and ": OK" in proc.stdout, proc.stdout + proc.stderr
    refused = softhsm.run("ca", "sign", "--ca-dir", str(ica), str(csr_file), "--profile", "sub-ca", env=env)
    assert refused.returncode == 6 and "pathLenConstraint 0" in refused.stderr, refused.stderr
