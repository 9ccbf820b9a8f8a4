"""OCSP at /ocsp on `ca serve` (issue 14, item 1), asked by clients nobody here wrote.

`tokenissue ca ocsp-signer` makes a delegated responder (id-kp-OCSPSigning, ocsp-nocheck) whose
key is on a token: the CA's SoftHSM token, or a TPM's through tpm2-pkcs11 when the CA's key is
there. `openssl ocsp` (POST, with and without a nonce) and pyhanko-certvalidator (which checks
the delegation itself) get good, revoked with reason and time, and unknown; GETs (RFC 5019)
carry cache headers; malformed requests get an OCSP malformedRequest, never a 500; a server
without a signer answers unauthorized and says at start which command makes one.
"""

from __future__ import annotations

import asyncio
import base64
import re
import tomllib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID

from tokenissue.pkix.ocsp import issuer_hashes

from support.cli import USER_PIN
from support.cmp_server import Served, served
from support.lifecycle import USER_TOKEN, TokenCA, add_token_fast, make_token_ca
from support.openssl import openssl
from support.servers import free_port
from support.softhsm import SOFTHSM_MODULE, SoftHSM
from support.tpm import TPM2_MODULE, TPMTokens

OCSP_REQUEST = "application/ocsp-request"
#: RFC 5019 §2.1.1: clients name certificates by SHA-1 CertIDs (not a signature hash).
CERTID_SHA1 = hashes.SHA1()  # noqa: S303


@dataclass
class Leaves:
    good: Path
    revoked: Path
    good_serial: int
    revoked_serial: int


def _leaves(ca: TokenCA, tmp: Path, token: str = USER_TOKEN, env: dict[str, str] | None = None) -> Leaves:
    paths, serials = [], []
    for name in ("good", "revoked"):
        out = ca.json("enroll", "--token", token, "--ca", str(ca.dir), "--subject", f"CN={name},O=tokenissue tests",
                      "--label", name, env=env)  # fmt: skip
        path = tmp / f"{name}.pem"
        ca.run("cert", "export", "--token", token, "--key", name, "-o", str(path), env=env, check=True)
        paths.append(path)
        serials.append(int(out["serial"], 16))
    ca.run("ca", "revoke", "--ca-dir", str(ca.dir), format(serials[1], "x"), "--reason", "key-compromise", env=env,
           check=True)  # fmt: skip
    return Leaves(paths[0], paths[1], serials[0], serials[1])


def _openssl_ocsp(ca: TokenCA, server: Served, leaf: Path, *extra: str) -> str:
    proc = openssl("ocsp", "-issuer", str(ca.pem), "-cert", str(leaf), "-url", f"{server.url}/ocsp",
                   "-CAfile", str(ca.pem), "-resp_text", *extra)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Response verify OK" in proc.stderr, proc.stderr
    return proc.stdout


def _unknown_leaf(ca: TokenCA, tmp: Path) -> Path:
    """A certificate naming this CA as issuer with a serial it never issued (signed by another key:
    the responder goes by issuer name and key hash, as a relying party's request does)."""
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder().subject_name(x509.Name.from_rfc4514_string("CN=never issued"))
        .issuer_name(ca.certificate.subject).public_key(key.public_key()).serial_number(0x1234567)
        .not_valid_before(now).not_valid_after(now + timedelta(days=1)).sign(key, hashes.SHA256())
    )  # fmt: skip
    path = tmp / "unknown.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def _check_openssl_answers(ca: TokenCA, server: Served, leaves: Leaves, tmp: Path) -> None:
    good = _openssl_ocsp(ca, server, leaves.good)
    assert re.search(r"good\.pem: good", good), good
    assert "OCSP Nonce" in good  # openssl sends one by default; the answer echoes it
    revoked = _openssl_ocsp(ca, server, leaves.revoked, "-no_nonce")
    assert re.search(r"revoked\.pem: revoked", revoked), revoked
    assert "Reason: keyCompromise" in revoked and "OCSP Nonce" not in revoked, revoked
    unknown = _openssl_ocsp(ca, server, _unknown_leaf(ca, tmp))
    assert re.search(r"unknown\.pem: unknown", unknown), unknown
    log = [line for line in server.access_log() if line["path"].startswith("/ocsp")]
    assert [line["ocsp"] for line in log[-3:]] == ["good", "revoked", "unknown"], log


def _pyhanko_status(ca: TokenCA, server: Served, leaf: Path) -> str:
    """pyhanko-certvalidator's verdict with OCSP required (it fetches from the AIA URL)."""
    from pyhanko_certvalidator import CertificateValidator, ValidationContext
    from pyhanko_certvalidator.errors import RevokedError

    root = x509.load_pem_x509_certificate(ca.pem.read_bytes())
    cert = x509.load_pem_x509_certificate(leaf.read_bytes())
    from asn1crypto import x509 as a509

    context = ValidationContext(
        trust_roots=[a509.Certificate.load(root.public_bytes(serialization.Encoding.DER))],
        allow_fetching=True, revocation_mode="hard-fail",
    )  # fmt: skip
    validator = CertificateValidator(a509.Certificate.load(cert.public_bytes(serialization.Encoding.DER)),
                                     validation_context=context)  # fmt: skip
    try:
        asyncio.run(validator.async_validate_usage(set()))
    except RevokedError as e:
        return f"revoked: {e}"
    return "good"


def _make_signer(ca: TokenCA, env: dict[str, str] | None = None) -> x509.Certificate:
    proc = ca.run("ca", "ocsp-signer", "--ca-dir", str(ca.dir), "--days", "7", env=env, check=True)
    assert "OCSP signer made" in proc.stdout, proc.stdout
    return x509.load_pem_x509_certificate((ca.dir / "ocsp.pem").read_bytes())


def _check_signer(ca: TokenCA, signer: x509.Certificate) -> None:
    eku = signer.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.OCSP_SIGNING]
    signer.extensions.get_extension_for_class(x509.OCSPNoCheck)
    assert signer.issuer == ca.certificate.subject
    assert signer.not_valid_after_utc - signer.not_valid_before_utc <= timedelta(days=7, minutes=6)
    config = tomllib.loads((ca.dir / "ca.toml").read_text())["ca"]
    assert config["ocsp_key"].startswith("id:") and "ocsp_token" not in config
    # On the token next to its key, and in the inventory and audit log.
    assert next(r for r in ca.records() if r.serial == signer.serial_number).profile == "ocsp-signer"
    assert any(e["action"] == "ocsp-signer" for e in ca.audit())


def test_openssl_and_pyhanko_get_good_revoked_and_unknown_from_a_token_signer(softhsm: SoftHSM, tmp_path: Path) -> None:
    ca = make_token_ca(softhsm)
    with served(ca) as bare:  # no signer yet: unauthorized, and the start-up line names the command
        assert "tokenissue ca ocsp-signer --ca " in bare.stderr()
        proc = openssl("ocsp", "-issuer", str(ca.pem), "-serial", "0x10", "-url", f"{bare.url}/ocsp")
        assert "unauthorized" in (proc.stdout + proc.stderr).lower(), proc.stdout + proc.stderr
    signer = _make_signer(ca)
    _check_signer(ca, signer)
    port = free_port()
    url = f"http://127.0.0.1:{port}/ocsp"
    ca.run("ca", "ocsp-signer", "--ca-dir", str(ca.dir), "--days", "7", "--url", url, check=True)  # renews, sets AIA
    renewed = x509.load_pem_x509_certificate((ca.dir / "ocsp.pem").read_bytes())
    assert renewed.serial_number != signer.serial_number and renewed.public_key() == signer.public_key()
    leaves = _leaves(ca, tmp_path)
    aia = x509.load_pem_x509_certificate(leaves.good.read_bytes()).extensions.get_extension_for_class(
        x509.AuthorityInformationAccess
    ).value
    assert [d.access_location.value for d in aia] == [url]
    with served(ca, port=port) as server:
        assert "Serving OCSP at" in server.stderr()
        _check_openssl_answers(ca, server, leaves, tmp_path)
        assert _pyhanko_status(ca, server, leaves.good) == "good"
        assert "revoked" in _pyhanko_status(ca, server, leaves.revoked)
        _check_get_and_malformed(ca, server, leaves)


def _check_get_and_malformed(ca: TokenCA, server: Served, leaves: Leaves) -> None:
    issuer = ca.certificate
    cert = x509.load_pem_x509_certificate(leaves.good.read_bytes())
    der = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hashes.SHA256()).build().public_bytes(
        serialization.Encoding.DER
    )
    got = httpx.get(f"{server.url}/ocsp/{base64.b64encode(der).decode()}", timeout=10)
    assert got.status_code == 200 and got.headers["content-type"] == "application/ocsp-response"
    answer = ocsp.load_der_ocsp_response(got.content)
    assert answer.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
    assert answer.certificate_status is ocsp.OCSPCertStatus.GOOD and answer.serial_number == cert.serial_number
    assert "max-age=" in got.headers["cache-control"] and got.headers["etag"] and got.headers["expires"]
    # Malformed in every way a client can: each an OCSP error, never a 500.
    cases = [
        ("POST", "/ocsp", b"\x30\x03\x02\x01\x01", OCSP_REQUEST, 200),
        ("POST", "/ocsp", b"not der at all", OCSP_REQUEST, 200),
        ("POST", "/ocsp", der, "text/plain", 415),
        ("POST", "/ocsp", b"\x30" * 20000, OCSP_REQUEST, 413),
        ("GET", "/ocsp/%%%not-base64", b"", "", 200),
        ("GET", "/ocsp/" + base64.b64encode(b"\x30\x00").decode(), b"", "", 200),
    ]
    for method, path, body, ctype, want in cases:
        resp = httpx.request(method, server.url + path, content=body or None,
                             headers={"content-type": ctype} if ctype else {}, timeout=10)  # fmt: skip
        assert resp.status_code == want, (path, ctype, resp.status_code, resp.text)
        assert ocsp.load_der_ocsp_response(resp.content).response_status is ocsp.OCSPResponseStatus.MALFORMED_REQUEST
    # A serial no certificate can have (negative, over 20 octets) is malformedRequest, not a 500.
    for serial in (43, 1 << 300):
        odd = ocsp.OCSPRequestBuilder().add_certificate_by_hash(
            *issuer_hashes(issuer, CERTID_SHA1), serial_number=serial, algorithm=CERTID_SHA1
        ).build().public_bytes(serialization.Encoding.DER)
        if serial == 43:  # cryptography builds no negative serial: -43 written by hand (INTEGER 0xd5)
            assert odd.count(b"\x02\x01\x2b") == 1
            odd = odd.replace(b"\x02\x01\x2b", b"\x02\x01\xd5")
        resp = httpx.post(f"{server.url}/ocsp", content=odd, headers={"content-type": OCSP_REQUEST}, timeout=10)
        assert resp.status_code == 200
        assert ocsp.load_der_ocsp_response(resp.content).response_status is ocsp.OCSPResponseStatus.MALFORMED_REQUEST
    # A nonce longer than RFC 8954 allows is refused; another CA's certificate is not ours to answer.
    long_nonce = (
        ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, CERTID_SHA1)
        .add_extension(x509.OCSPNonce(b"n" * 33), critical=False).build().public_bytes(serialization.Encoding.DER)
    )  # fmt: skip
    resp = httpx.post(f"{server.url}/ocsp", content=long_nonce, headers={"content-type": OCSP_REQUEST}, timeout=10)
    assert ocsp.load_der_ocsp_response(resp.content).response_status is ocsp.OCSPResponseStatus.MALFORMED_REQUEST
    other = ocsp.OCSPRequestBuilder().add_certificate(cert, cert, CERTID_SHA1).build().public_bytes(
        serialization.Encoding.DER
    )
    resp = httpx.post(f"{server.url}/ocsp", content=other, headers={"content-type": OCSP_REQUEST}, timeout=10)
    assert ocsp.load_der_ocsp_response(resp.content).response_status is ocsp.OCSPResponseStatus.UNAUTHORIZED
    assert all(line["status"] != 500 for line in server.access_log())


def test_signer_key_on_a_tpm_with_the_ca_key(tpm_with_softhsm: tuple[SoftHSM, TPMTokens], tmp_path: Path) -> None:
    """The CA's key and the responder's on a TPM (tpm2-pkcs11); the holder's token on SoftHSM."""
    softhsm, tpm = tpm_with_softhsm
    tpm_env = {"TOKENISSUE_MODULE": TPM2_MODULE, "TOKENISSUE_CA_PIN": USER_PIN}
    ca_dir = tpm.root / "ca"
    proc = tpm.run("ca", "init", "--ca-dir", str(ca_dir), "--token", "test", "--subject",
                   "CN=TPM CA,O=tokenissue tests,C=KR", "--type", "ec-p256", env=tpm_env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    ca = TokenCA(hsm=tpm, dir=ca_dir)
    signer = _make_signer(ca, env=tpm_env)
    _check_signer(ca, signer)
    add_token_fast(softhsm, "holder")
    soft = {"TOKENISSUE_MODULE": SOFTHSM_MODULE, "TOKENISSUE_CA_PIN": USER_PIN}
    leaves = _leaves(ca, tmp_path, token="holder", env=soft)
    with served(ca, env=tpm_env) as server:
        _check_openssl_answers(ca, server, leaves, tmp_path)


def test_signer_on_another_token_and_a_new_key_on_renewal(softhsm: SoftHSM, tmp_path: Path) -> None:
    """--token puts the responder's key on a token of its own (its PIN as the user's; 'ca serve'
    reads it from TOKENISSUE_OCSP_PIN); --new-key replaces the key and deletes the old one once
    the new certificate is in place, and a running server answers with the new one at once."""
    ca = make_token_ca(softhsm)
    add_token_fast(softhsm, "ocsp")
    pins = {"TOKENISSUE_PIN": USER_PIN, "TOKENISSUE_OCSP_PIN": USER_PIN}
    ca.run("ca", "ocsp-signer", "--ca-dir", str(ca.dir), "--token", "ocsp", env=pins, check=True)
    first = x509.load_pem_x509_certificate((ca.dir / "ocsp.pem").read_bytes())
    config = tomllib.loads((ca.dir / "ca.toml").read_text())["ca"]
    assert config["ocsp_token"].startswith("serial:")
    [key] = ca.private_keys("ocsp")
    assert key["label"] == "tokenissue-ocsp" and f"id:{key['id']}" == config["ocsp_key"]
    leaves = _leaves(ca, tmp_path)
    without = ca.run("ca", "serve", "--ca-dir", str(ca.dir), "--listen", "127.0.0.1:1", env={"TOKENISSUE_OCSP_PIN": ""})
    assert without.returncode != 0 and "Traceback" not in without.stderr, without.stderr
    good = x509.load_pem_x509_certificate(leaves.good.read_bytes())
    body = ocsp.OCSPRequestBuilder().add_certificate(good, ca.certificate, CERTID_SHA1).build().public_bytes(
        serialization.Encoding.DER
    )

    def responder_cert(server: Served) -> x509.Certificate:
        resp = httpx.post(f"{server.url}/ocsp", headers={"content-type": OCSP_REQUEST}, timeout=10, content=body)
        answer = ocsp.load_der_ocsp_response(resp.content)
        assert answer.certificate_status is ocsp.OCSPCertStatus.GOOD
        [cert] = answer.certificates
        return cert

    with served(ca, env=pins) as server:
        assert responder_cert(server) == first
        # Rotated while the server runs: it takes up the new key and certificate by itself.
        ca.run("ca", "ocsp-signer", "--ca-dir", str(ca.dir), "--new-key", env=pins, check=True)
        second = x509.load_pem_x509_certificate((ca.dir / "ocsp.pem").read_bytes())
        assert second.public_key() != first.public_key()
        [new_key] = ca.private_keys("ocsp")  # the old key is gone from the token
        assert new_key["id"] != key["id"]
        assert responder_cert(server) == second
        out = _openssl_ocsp(ca, server, leaves.good)
        assert re.search(r"good\.pem: good", out), out
        # Renewed for the same key: the new certificate, again without a restart.
        ca.run("ca", "ocsp-signer", "--ca-dir", str(ca.dir), env=pins, check=True)
        third = x509.load_pem_x509_certificate((ca.dir / "ocsp.pem").read_bytes())
        assert third.public_key() == second.public_key() and responder_cert(server) == third
    assert not any(line.get("ocsp_reload") for line in server.access_log())
