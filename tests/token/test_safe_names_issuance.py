"""Hostile names are refused on every path that leads to a certificate (issue 11, item 2), with
the CA key on a real SoftHSM token: ``ca sign`` of hand-made CSRs, ``enroll --subject/--san``,
``ra register`` and a CMP request. Each refusal is one sentence with its exit status (2 for what
the user typed, 6 for a request the CA refuses, badCertTemplate over CMP) and leaves nothing
behind: no certificate, no audit entry, no registration, no key on the holder's token. Ordinary
international names keep working on the same paths.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from starlette.testclient import TestClient

from tokenissue.ca.authority import CertificateAuthority
from tokenissue.credentials import Pin
from tokenissue.pkix.certs import cert_record, issue_certificate, random_serial
from tokenissue.protocols.cmp import MessageHeader, build_cr, build_ir

from support.cli import USER_PIN
from support.cmp_server import CMP_TYPE, confirm, in_process_app, new_key, register, response_of, signed, snapshot
from support.lifecycle import TokenCA, make_token_ca
from support.safe_names import HOSTILE_SANS, HOSTILE_SUBJECTS, ORDINARY_SUBJECT, hostile_csr, sha1_csr
from support.softhsm import SOFTHSM_MODULE, SoftHSM

pytestmark = pytest.mark.filterwarnings("ignore:Attribute's length:UserWarning")

SUBJECT_CASES = dict(HOSTILE_SUBJECTS)
SAN_CASES = dict(HOSTILE_SANS)


def _one_sentence(text: str) -> None:
    line = text.strip()
    assert line and "\n" not in line and "Traceback" not in line, text
    assert line.endswith("."), text
    for bad in ("\x00", "\r", "\u202e", "\u2067"):
        assert bad not in line


def _pem(csr: x509.CertificateSigningRequest) -> bytes:
    return csr.public_bytes(serialization.Encoding.PEM)


def _sign(ca: TokenCA, tmp: Path, data: bytes, profile: str = "personal") -> Any:
    path = tmp / "request.csr"
    path.write_bytes(data)
    return ca.run("ca", "sign", "--ca-dir", str(ca.dir), str(path), "--profile", profile)


def test_ca_sign_refuses_hostile_csrs_and_issues_nothing(softhsm: SoftHSM, tmp_path: Path) -> None:
    ca = make_token_ca(softhsm)
    before = snapshot(ca.dir)
    cases: list[tuple[str, bytes, str, int]] = [
        (case, _pem(hostile_csr(attrs=SUBJECT_CASES[case])), "personal", 6)
        for case in ("nul", "cr-lf", "bidi-rlo", "bidi-isolate", "cn-5000", "c-three-letters", "c-utf8",
                     "serial-not-printable")
    ]  # fmt: skip
    cases += [
        (case, _pem(hostile_csr(san=[SAN_CASES[case]])), "tls-server", 6)
        for case in ("dns-space", "dns-nul", "dns-label-64", "dns-inner-wildcard", "email-crlf", "uri-space")
    ]
    cases.append(("sha1", sha1_csr(), "personal", 6))
    rsa3 = rsa.generate_private_key(3, 2048)
    cases.append(("rsa-e3", _pem(hostile_csr(rsa3, [(NameOID.COMMON_NAME, "Small Exponent")])), "personal", 6))
    two = _pem(hostile_csr(attrs=[(NameOID.COMMON_NAME, "One")])) + _pem(
        hostile_csr(attrs=[(NameOID.COMMON_NAME, "Two")])
    )
    cases.append(("two-requests", two, "personal", 2))
    for case, data, profile, status in cases:
        proc = _sign(ca, tmp_path, data, profile)
        assert proc.returncode == status, (case, proc.returncode, proc.stdout, proc.stderr)
        assert "BEGIN CERTIFICATE" not in proc.stdout, case
        _one_sentence(proc.stderr)
    assert (
        "signed with SHA-1, which is not accepted; sign it with SHA-256 or better"
        in _sign(ca, tmp_path, sha1_csr()).stderr
    )
    assert "give one request per file" in _sign(ca, tmp_path, two).stderr
    assert snapshot(ca.dir) == before  # nothing issued, nothing audited

    # The ordinary names still go through the same command.
    ok = hostile_csr(
        attrs=[
            (NameOID.COMMON_NAME, "홍길동"),
            (NameOID.ORGANIZATION_NAME, "Example Bank Co Ltd"),
            (NameOID.COUNTRY_NAME, "KR"),
        ],
        san=[x509.RFC822Name("hong.gildong@example.kr")],
    )
    proc = _sign(ca, tmp_path, _pem(ok))
    assert proc.returncode == 0, proc.stderr
    cert = x509.load_pem_x509_certificate(proc.stdout.encode())
    assert cert.subject == ok.subject
    server = hostile_csr(attrs=[(NameOID.COMMON_NAME, "www.example.org")],
                         san=[x509.DNSName("www.example.org"), x509.DNSName("*.example.org")])  # fmt: skip
    assert _sign(ca, tmp_path, _pem(server), "tls-server").returncode == 0
    assert len(ca.records()) == 2


HOSTILE_ENROLL = [
    ("--subject", "CN=Hong\\00Gildong"),
    ("--subject", "CN=Hong\r\nO=Forged"),
    ("--subject", "CN=Hong \u202egpj.exe"),
    ("--subject", "CN=" + "A" * 5000),
    ("--subject", "CN=Hong,C=KOR"),
    ("--subject", "CN=Hong,serialNumber=12_34"),
    ("--san", "dns:www example.org"),
    ("--san", "dns:" + "a" * 64 + ".example.org"),
    ("--san", "email:hong@example.kr\r\nBcc: x@example.kr"),
    ("--san", "email:홍길동@example.kr"),
    ("--san", "uri:https://example.org/a b"),
]


def test_enroll_refuses_hostile_names_before_making_a_key(softhsm: SoftHSM) -> None:
    ca = make_token_ca(softhsm)
    before = snapshot(ca.dir)
    for option, value in HOSTILE_ENROLL:
        subject = value if option == "--subject" else "CN=Hong Gildong,C=KR"
        extra = ["--san", value] if option == "--san" else []
        proc = ca.run(*ca.enroll_args(subject, "--profile", "tls-client", *extra))
        assert proc.returncode == 2, (value, proc.returncode, proc.stderr)
        _one_sentence(proc.stderr)
    assert ca.private_keys() == []
    assert snapshot(ca.dir) == before

    out = ca.enroll(ORDINARY_SUBJECT, "--profile", "tls-client", "--san", "email:hong.gildong@example.kr",
                    "--san", "dns:bücher.example")  # fmt: skip
    assert out
    [rec] = ca.records()
    assert rec.subject == x509.Name.from_rfc4514_string(ORDINARY_SUBJECT).rfc4514_string()
    cert = x509.load_der_x509_certificate(rec.der)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert x509.DNSName("xn--bcher-kva.example") in san


def test_ra_register_refuses_hostile_names(softhsm: SoftHSM) -> None:
    ca = make_token_ca(softhsm)
    before = snapshot(ca.dir)
    for option, value in HOSTILE_ENROLL:
        subject = value if option == "--subject" else "CN=Hong Gildong,C=KR"
        extra = ["--san", value] if option == "--san" else []
        proc = ca.run("ra", "register", "--ca-dir", str(ca.dir), "--subject", subject, "--profile", "tls-client",
                      *extra)  # fmt: skip
        assert proc.returncode == 2, (value, proc.returncode, proc.stderr)
        _one_sentence(proc.stderr)
    assert snapshot(ca.dir) == before  # no registration, no audit entry
    out = ca.json("ra", "register", "--ca-dir", str(ca.dir), "--subject", ORDINARY_SUBJECT, "--profile", "personal",
                  "--san", "email:hong.gildong@example.kr")  # fmt: skip
    assert out["subject"] == x509.Name.from_rfc4514_string(ORDINARY_SUBJECT).rfc4514_string()


# -- CMP --------------------------------------------------------------------------------------


@pytest.fixture
def cmp(session_softhsm: SoftHSM) -> Iterator[tuple[TokenCA, TestClient]]:
    ca = make_token_ca(session_softhsm)
    app, _log = in_process_app(session_softhsm, ca)
    with TestClient(app) as client:
        yield ca, client


def _post(client: TestClient, body: bytes) -> Any:
    r = client.post("/pkix/", content=body, headers={"content-type": CMP_TYPE})
    assert r.status_code != 500, r.content
    return response_of(r.content)


def _legacy_certificate(ca_dir: Path, key: Any, subject: x509.Name) -> x509.Certificate:
    """A certificate this CA issued before it checked names (signed and recorded directly)."""
    with CertificateAuthority.open(ca_dir, module=SOFTHSM_MODULE) as ca, ca.signing_key(Pin(USER_PIN)) as ca_key:
        now = datetime.now(UTC)
        profile = ca.profile("personal")
        cert = issue_certificate(
            ca_key, ca.certificate, public_key=key.public_key(), subject=subject, san=[], serial=random_serial(),
            not_before=now - timedelta(minutes=5), not_after=now + timedelta(days=30),
            key_usage=x509.KeyUsage(True, True, False, False, False, False, False, False, False),
            extended_key_usage=[], policies=[], crl_url=None,
        )  # fmt: skip
        ca.inventory.add_certificate(
            cert_record(
                cert, profile=profile.name, token_serial=None, key_id=None, label=None, request_id=None, replaces=None
            ),
            audit=("issue", {"serial": format(cert.serial_number, "x"), "legacy": True}),
        )
    return cert


def test_cmp_refuses_hostile_names_with_bad_cert_template(cmp: tuple[TokenCA, TestClient]) -> None:
    ca, client = cmp
    key = new_key()
    hostile = hostile_csr(attrs=[(NameOID.COMMON_NAME, "Hong \u202egpj.exe"), (NameOID.COUNTRY_NAME, "KOR")]).subject
    legacy = _legacy_certificate(ca.dir, key, hostile)
    before = snapshot(ca.dir)
    # A cr signed with the old certificate asks for its subject again: the CA must not repeat it.
    resp = _post(client, signed(build_cr(None, None, new_key()), key, legacy))
    assert resp.body_type == "error", resp
    assert resp.status is not None and resp.status.failure_info == ("badCertTemplate",), resp.status
    _one_sentence(str(resp.status.text))
    assert snapshot(ca.dir) == before

    # An ordinary Korean registration is still served.
    reg = register(ca.dir, "CN=홍길동,O=Example Bank,C=KR", san=("email:hong@example.kr",))
    ip = _post(client, reg.protect(build_ir(None, None, new_key(), header=MessageHeader(sender=reg.subject))))
    assert ip.body_type == "ip", ip.status
    assert ip.certificate is not None and ip.certificate.subject == reg.subject
    assert _post(client, reg.protect(confirm(ip))).body_type == "pkiconf"
