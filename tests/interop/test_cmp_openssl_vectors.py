"""Messages built by tokenissue.protocols.cmp, judged by OpenSSL's CMP implementation.

``openssl cmp -use_mock_srv`` runs OpenSSL's mock CMP server inside the client process (no
socket, no port), and ``-reqin`` makes the client send our DER file instead of its own request.
The mock server checks the protection (PBM with ``-srv_secret``, or a signature against
``-srv_trusted``) and the proof of possession, then answers; ``-rspout`` saves its answer, which
our parser and verifier must accept in turn. The mock server never issues: it returns the fixed
``-rsp_cert``, so that certificate is made for the key in our request.

Software keys stand in for token keys (only ``sign()`` and ``public_key()`` are used).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tokenissue.pkix.certs import issue_certificate, random_serial, self_signed_ca
from tokenissue.pkix.csr import build_csr
from tokenissue.protocols.cmp import (
    ID_IT_CA_CERTS,
    CMPError,
    MessageHeader,
    build_cr,
    build_genm,
    build_ir,
    build_p10cr,
    decode_message,
    encode_message,
    parse_request,
    parse_response,
    protect_pbm,
    protect_signature,
    verify_protection,
)

from support.openssl import has_openssl_cmp

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(not has_openssl_cmp(), reason="openssl with the cmp command is not installed"),
]

SECRET = b"s3cret"
REF = b"1234"


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass
class Setup:
    dir: Path
    ca_key: Any
    ca: x509.Certificate
    client_key: Any
    client_cert: x509.Certificate

    def write(self, name: str, data: bytes) -> Path:
        path = self.dir / name
        path.write_bytes(data)
        return path


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = self_signed_ca(ca_key, x509.Name.from_rfc4514_string("CN=mock CA"), 10)
    client_key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    client_cert = issue_certificate(
        ca_key, ca, public_key=client_key.public_key(), subject=x509.Name.from_rfc4514_string("CN=py-client"),
        san=[], serial=random_serial(), not_before=now - timedelta(minutes=5), not_after=now + timedelta(days=1),
        key_usage=x509.KeyUsage(True, False, False, False, False, False, False, False, False),
        extended_key_usage=[], policies=[], crl_url=None,
    )  # fmt: skip
    s = Setup(tmp_path, ca_key, ca, client_key, client_cert)
    s.write("ca.pem", _pem(ca))
    s.write("rsp.pem", _pem(client_cert))
    return s


def _send(s: Setup, request: Any, cmd: str, *server_auth: str) -> subprocess.CompletedProcess[str]:
    """Send ``request`` to OpenSSL's in-process mock server; the answer lands in rsp.der."""
    s.write("req.der", encode_message(request))
    (s.dir / "rsp.der").unlink(missing_ok=True)
    # The client options only satisfy the client's own setup checks: -reqin replaces the
    # request it would have built. It never needs the client's private key.
    args = [
        "openssl", "cmp", "-config", "", "-use_mock_srv", "-cmd", cmd,
        "-rsp_cert", "rsp.pem", "-rsp_capubs", "ca.pem", *server_auth,
        "-ref", REF.decode(), "-secret", "pass:" + SECRET.decode(), "-recipient", "/CN=mock CA",
        "-subject", "/CN=py-client", "-reqin", "req.der", "-rspout", "rsp.der", "-disable_confirm",
        "-unprotected_errors", "-certout", "out.pem",
    ]  # fmt: skip
    if cmd in ("ir", "cr"):
        s.write("pub.pem", s.client_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))  # fmt: skip
        # -popo -1: the client's own (discarded) request needs no private key.
        args += ["-newkey", "pub.pem", "-popo", "-1"]
    if cmd == "p10cr":
        args += ["-csr", "req.csr"]
    return subprocess.run(args, cwd=s.dir, capture_output=True, text=True, timeout=60, check=False)


PBM_SERVER = ("-srv_ref", REF.decode(), "-srv_secret", "pass:" + SECRET.decode())


def test_pbm_ir_is_accepted_by_openssl(setup: Setup) -> None:
    ir = protect_pbm(
        build_ir(setup.client_cert.subject, None, setup.client_key, header=MessageHeader(recipient=setup.ca.subject)),
        SECRET, sender_kid=REF, iterations=500,
    )  # fmt: skip
    result = _send(setup, ir, "ir", *PBM_SERVER)
    assert result.returncode == 0, result.stderr
    rsp = parse_response(decode_message((setup.dir / "rsp.der").read_bytes()))
    assert verify_protection(rsp.message, secret=SECRET) is None
    request = parse_request(ir)
    assert rsp.body_type == "ip"
    rsp.raise_for_status()
    assert rsp.certificate == setup.client_cert
    assert rsp.ca_pubs == (setup.ca,)
    assert rsp.transaction_id == request.transaction_id
    assert rsp.recip_nonce == request.sender_nonce


def test_wrong_secret_is_refused_by_openssl(setup: Setup) -> None:
    ir = protect_pbm(build_ir(setup.client_cert.subject, None, setup.client_key), b"other", sender_kid=REF)
    result = _send(setup, ir, "ir", *PBM_SERVER)
    assert result.returncode != 0
    rsp = parse_response(decode_message((setup.dir / "rsp.der").read_bytes()))
    assert rsp.body_type == "error"
    with pytest.raises(CMPError) as e:
        rsp.raise_for_status()
    # OpenSSL 3.0's server reports a failed MAC as badRequest with this text.
    assert e.value.failure_info == "badRequest"
    assert rsp.status is not None and rsp.status.text == "wrong pbm value"


def test_signature_protected_cr_is_accepted_by_openssl(setup: Setup) -> None:
    cr = protect_signature(
        build_cr(setup.client_cert.subject, None, setup.client_key, header=MessageHeader(recipient=setup.ca.subject)),
        setup.client_key, setup.client_cert, [setup.ca],
    )  # fmt: skip
    result = _send(setup, cr, "cr", *PBM_SERVER, "-srv_trusted", "ca.pem")
    assert result.returncode == 0, result.stderr
    rsp = parse_response(decode_message((setup.dir / "rsp.der").read_bytes()))
    assert rsp.body_type == "cp" and rsp.certificate == setup.client_cert


def test_p10cr_is_accepted_by_openssl(setup: Setup) -> None:
    csr = build_csr(setup.client_key, setup.client_cert.subject)
    setup.write("req.csr", csr.public_bytes(serialization.Encoding.PEM))
    p10cr = protect_pbm(build_p10cr(csr, header=MessageHeader(recipient=setup.ca.subject)), SECRET, sender_kid=REF, iterations=500)
    result = _send(setup, p10cr, "p10cr", *PBM_SERVER)
    assert result.returncode == 0, result.stderr
    rsp = parse_response(decode_message((setup.dir / "rsp.der").read_bytes()))
    assert rsp.body_type == "cp" and rsp.cert_req_id == -1 and rsp.certificate == setup.client_cert


def test_genm_is_answered_by_openssl(setup: Setup) -> None:
    genm = protect_pbm(build_genm([ID_IT_CA_CERTS], header=MessageHeader(recipient=setup.ca.subject)), SECRET, sender_kid=REF, iterations=500)
    result = _send(setup, genm, "genm", *PBM_SERVER)
    assert result.returncode == 0, result.stderr
    rsp = parse_response(decode_message((setup.dir / "rsp.der").read_bytes()))
    assert rsp.body_type == "genp"
    verify_protection(rsp.message, secret=SECRET)


def test_altered_pop_is_refused_by_openssl(setup: Setup) -> None:
    # The same request for a different subject, with the POP of the first: the signature no
    # longer covers the template, and OpenSSL's server must notice.
    good = build_ir(x509.Name.from_rfc4514_string("CN=alice"), None, setup.client_key)
    other = build_ir(x509.Name.from_rfc4514_string("CN=malle"), None, setup.client_key)
    other["body"]["ir"][0]["popo"] = good["body"]["ir"][0]["popo"]
    result = _send(setup, protect_pbm(other, SECRET, sender_kid=REF, iterations=500), "ir", *PBM_SERVER)
    assert result.returncode != 0
    rsp = parse_response(decode_message((setup.dir / "rsp.der").read_bytes()))
    # RFC 4210 §5.3.4: a refused certificate request is an ip with status rejection.
    assert rsp.body_type == "ip" and rsp.certificate is None
    with pytest.raises(CMPError) as e:
        rsp.raise_for_status()
    assert e.value.failure_info == "badPOP"
