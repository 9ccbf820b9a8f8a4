"""The Korean identity binding end to end (issue 13): a kr-personal certificate carries
identifyData with a VID of the holder's registration number and an R that lives on the token
next to the key; `vid verify` says yes to the right number and R and no (exit 9) to a wrong
one; pkilint's PKIX linter and `openssl verify` accept the certificate; and the number is in
no file, log, output or database afterwards.

Locally (CA directory in this process) on SoftHSM and tpm2-pkcs11, and over CMP to `ca serve`,
where number and R travel encrypted for the authorization code and a wrong number counts
toward the registration's lock like a wrong code.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from cryptography import x509

from tokenissue import p11
from tokenissue.credentials import Pin
from tokenissue.pkix.kr_vid import RANDOM_NUM_OBJECT_ID, identify_data_of, vid_digest

from support.cli import USER_PIN
from support.cmp_server import served
from support.lifecycle import USER_TOKEN, TokenCA, make_token_ca
from support.softhsm import SOFTHSM_MODULE, SoftHSM
from support.token_impls import TokenImpl, on_impls

NUMBER = "8501011234567"  # a made-up resident registration number (13 digits)
TYPED = "850101-1234567"  # as a person writes it
OTHER = "8501011234568"
SUBJECT = "CN=홍길동()0012345678901234,OU=ExampleBank,OU=personal4IB,O=ExampleCA,C=KR"
ID_ENV = "TOKENISSUE_ID_NUMBER"


def _random_on_token(impl_module: str, key_id: str) -> bytes:
    """R as another program on this machine reads it: the data object next to the key (login needed)."""
    p11.load_module(impl_module).refresh()  # tpm2-pkcs11 lists objects as they were when the module was opened
    with p11.open_token(p11.TokenSelector.parse(USER_TOKEN), Pin(USER_PIN), module=impl_module) as s:
        value = s.key_data(bytes.fromhex(key_id), RANDOM_NUM_OBJECT_ID)
    assert value is not None and len(value) == 20
    return value


def _leaf(ca: TokenCA, out: dict[str, Any], tmp: Path) -> tuple[x509.Certificate, Path]:
    path = tmp / f"{out['serial']}.pem"
    certs = ca.export(out["label"], path)
    return certs[0], path


def _pkilint(pem: Path) -> str:
    """pkilint's RFC 5280 linter: its findings of WARNING and above (empty: none). Below that
    it notes, as RFC 5280 §4.2.1.4 recommends, that the policy has qualifiers: Korean CAs
    publish theirs with a CPS URI and a userNotice, and so do these profiles."""
    tool = Path(sys.executable).parent / "lint_pkix_cert"  # installed with the dev extras
    command = [str(tool)] if tool.exists() else [shutil.which("lint_pkix_cert") or "lint_pkix_cert"]
    proc = subprocess.run(
        [*command, "lint", "-s", "WARNING", str(pem)], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.stderr == "", proc.stderr
    return proc.stdout.strip() + ("" if proc.returncode == 0 else f"\n(exit {proc.returncode})")


def _files_with(root: Path, needles: list[bytes]) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and any(n in p.read_bytes() for n in needles)]


def _number_forms() -> list[bytes]:
    return [f.encode(enc) for f in (NUMBER, TYPED) for enc in ("utf-8", "utf-16-le")]


def _check_certificate(ca: TokenCA, out: dict[str, Any], module: str, tmp: Path, *, real_name: str) -> bytes:
    """identifyData with the VID of NUMBER and the token's R; lint-clean; verifies; returns R."""
    cert, pem = _leaf(ca, out, tmp)
    data = identify_data_of(cert)
    assert data is not None and data.real_name == real_name and data.hash_name == "sha256"
    random = _random_on_token(module, out["key_id"])
    assert data.virtual_id == vid_digest(NUMBER, random)
    policies = cert.extensions.get_extension_for_class(x509.CertificatePolicies).value
    [policy] = list(policies)
    assert policy.policy_identifier.dotted_string == "1.3.6.1.4.1.32473.1.2"
    qualifiers = policy.policy_qualifiers or []
    assert "https://ca.example/cps" in qualifiers
    [notice] = [q for q in qualifiers if isinstance(q, x509.UserNotice)]
    assert notice.explicit_text is not None and "용도제한용" in notice.explicit_text
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and usage.content_commitment and not usage.key_encipherment
    verified = ca.verify(pem)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert _pkilint(pem) == ""
    return random


def _vid_verify(ca: TokenCA, *args: str, number: str) -> subprocess.CompletedProcess[str]:
    return ca.run("vid", "verify", *args, env={ID_ENV: number})


@on_impls("softhsm", "tpm2")
def test_local_ca_binds_the_number_and_vid_verify_checks_it(
    token_impl_with_ca: TokenCA, session_token_impl: TokenImpl, tmp_path: Path
) -> None:
    ca, impl = token_impl_with_ca, session_token_impl
    out = ca.json(*ca.enroll_args(SUBJECT, "--profile", "kr-personal", "--label", "kr"), env={ID_ENV: TYPED})
    assert out["profile"] == "kr-personal"
    random = _check_certificate(ca, out, impl.module, tmp_path, real_name="홍길동")

    # The holder's token: the certificate and R are read from it.
    ok = _vid_verify(ca, "--token", USER_TOKEN, "--key", "kr", "--json", number=TYPED)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert json.loads(ok.stdout) == {**json.loads(ok.stdout), "match": True, "real_name": "홍길동", "serial": out["serial"]}
    wrong = _vid_verify(ca, "--token", USER_TOKEN, "--key", "kr", number=OTHER)
    assert wrong.returncode == 9, wrong.stdout + wrong.stderr
    assert "does not match" in wrong.stderr and OTHER not in wrong.stderr + wrong.stdout

    # A bank's server: the certificate and R as the holder's client sent them.
    pem = tmp_path / "leaf.pem"
    ca.export("kr", pem)
    r_file = tmp_path / "r.bin"
    r_file.write_bytes(random)
    assert _vid_verify(ca, "--cert", str(pem), "--random-file", str(r_file), number=NUMBER).returncode == 0
    r_file.write_bytes(bytes([random[0] ^ 1]) + random[1:])
    bad_r = _vid_verify(ca, "--cert", str(pem), "--random-file", str(r_file), number=NUMBER)
    assert bad_r.returncode == 9, bad_r.stdout + bad_r.stderr

    # A re-key keeps the identity: the new key gets the old key's R, the CA carries the VID over.
    renewed = ca.run("renew", "--token", USER_TOKEN, "--key", "kr", "--rekey", "--json")
    assert renewed.returncode == 0, renewed.stdout + renewed.stderr
    [after] = json.loads(renewed.stdout)
    assert after["serial"] != out["serial"]
    assert _random_on_token(impl.module, after["key_id"]) == random
    [kept] = [k for k in ca.private_keys() if k["id"] == after["key_id"]]
    assert kept["label"] == "kr"  # R was relabelled with its key (data objects: checked in test_key_data)
    assert _vid_verify(ca, "--token", USER_TOKEN, "--key", "kr", number=NUMBER).returncode == 0

    # The number from a file must be the holder's alone (0600), as a PIN file.
    number_file = tmp_path / "number"
    number_file.write_text(TYPED + "\n")
    number_file.chmod(0o644)
    loose = ca.run("vid", "verify", "--token", USER_TOKEN, "--key", "kr", "--id-number-file", str(number_file))
    assert loose.returncode == 5 and "chmod 600" in loose.stderr, loose.stderr
    number_file.chmod(0o600)
    by_file = ca.run("vid", "verify", "--token", USER_TOKEN, "--key", "kr", "--id-number-file", str(number_file))
    assert by_file.returncode == 0, by_file.stderr
    number_file.unlink()

    # Nowhere on disk: not in the token store, the CA directory, its database or the holder's state.
    assert _files_with(impl.root, _number_forms()) == []


def test_the_number_is_required_and_never_in_argv(softhsm: SoftHSM) -> None:
    ca = make_token_ca(softhsm)
    # No number and no terminal to ask on: refused before any key is made.
    proc = ca.run(*ca.enroll_args(SUBJECT, "--profile", "kr-personal", "--label", "kr"))
    assert proc.returncode == 5, proc.stdout + proc.stderr
    assert "registration number" in proc.stderr.lower()
    assert ca.private_keys() == []
    # There is no option that takes the number itself.
    assert ca.run(*ca.enroll_args(SUBJECT, "--profile", "kr-personal", "--id-number", NUMBER)).returncode == 2
    # A malformed number: one sentence, the number not repeated, no key made.
    bad = ca.run(*ca.enroll_args(SUBJECT, "--profile", "kr-personal"), env={ID_ENV: "12345"})
    assert bad.returncode == 2 and "13 digits" in bad.stderr and "12345" not in bad.stderr
    assert ca.private_keys() == []


def test_over_cmp_the_number_is_checked_against_the_registration(session_softhsm: SoftHSM, tmp_path: Path) -> None:
    softhsm = session_softhsm
    ca = make_token_ca(softhsm)
    number_file = tmp_path / "number"
    number_file.write_text(TYPED + "\n")
    number_file.chmod(0o600)
    reg = ca.json(
        "ra", "register", "--ca-dir", str(ca.dir), "--subject", SUBJECT, "--profile", "kr-personal",
        "--id-number-file", str(number_file), "--real-name", "홍길동", "--verified-by", "branch visit with ID card",
    )  # fmt: skip
    number_file.unlink()
    with served(ca) as server:
        location = f"cmp+{server.url}/pkix/"

        def enroll(label: str, number: str) -> subprocess.CompletedProcess[str]:
            return ca.run(
                "enroll", "--token", USER_TOKEN, "--ca", location, "--ref", reg["ref"], "--subject", reg["subject"],
                "--profile", "kr-personal", "--label", label, "--json",
                env={"TOKENISSUE_AUTH_CODE": reg["code"], ID_ENV: number},
            )  # fmt: skip

        # A wrong number: refused, counted toward the lock like a wrong code, no key left.
        wrong = enroll("kr-wrong", OTHER)
        assert wrong.returncode == 6, wrong.stdout + wrong.stderr
        assert "Wrong registration number" in wrong.stderr and OTHER not in wrong.stderr
        [row] = [r for r in ca.json("ra", "list", "--ca-dir", str(ca.dir)) if r["ref"] == reg["ref"]]
        assert row["failures"] == 1 and row["status"] == "open"
        assert [k for k in ca.private_keys() if k["label"] == "kr-wrong"] == []

        proc = enroll("kr", TYPED)
        assert proc.returncode == 0, proc.stdout + proc.stderr + server.stderr()[-3000:]
        out = json.loads(proc.stdout)
        _check_certificate(ca, out, SOFTHSM_MODULE, tmp_path, real_name="홍길동")
        assert _vid_verify(ca, "--token", USER_TOKEN, "--key", "kr", number=NUMBER).returncode == 0
        # A re-key over CMP (kur, signed by the old key) keeps the VID: R moves to the new key.
        rekeyed = ca.run("renew", "--token", USER_TOKEN, "--key", "kr", "--rekey", "--json", env={"TOKENISSUE_AUTH_CODE": ""})
        assert rekeyed.returncode == 0, rekeyed.stdout + rekeyed.stderr + server.stderr()[-3000:]
        assert _vid_verify(ca, "--token", USER_TOKEN, "--key", "kr", number=NUMBER).returncode == 0
        log = server.stderr()
    assert NUMBER not in log and TYPED not in log
    # Not in the CA's database, its audit log, the token store or the holder's state.
    assert _files_with(softhsm.root, _number_forms()) == []


def test_the_certificate_binds_nothing_it_should_not(softhsm: SoftHSM, tmp_path: Path) -> None:
    """A profile without identify_data refuses a number at the desk, and its certificates carry
    no identifyData even when the holder has one to give."""
    ca = make_token_ca(softhsm)
    refused = ca.run("ra", "register", "--ca-dir", str(ca.dir), "--subject", "CN=Plain", "--profile", "personal",
                     env={ID_ENV: NUMBER})  # fmt: skip
    assert refused.returncode == 2 and "does not bind" in refused.stderr
    out = ca.json(*ca.enroll_args("CN=Plain", "--label", "plain"), env={ID_ENV: NUMBER})
    [cert] = ca.export("plain", tmp_path / "plain.pem")
    assert out["profile"] == "personal" and identify_data_of(cert) is None
