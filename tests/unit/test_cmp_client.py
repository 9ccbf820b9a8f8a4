"""The CMP client (tokenissue.enroll.cmp) against a real HTTP server on 127.0.0.1.

The server is a few lines of http.server in a thread; what it answers is built with our own
CMP message layer (tokenissue.protocols.cmp), or is deliberately wrong: HTTP 500, another
content type, bytes that are not DER, an error message. Software keys stand in for token keys
(the client only calls ``sign()`` and ``public_key()``); the token path is in tests/interop.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tokenissue.cli._messages import say
from tokenissue.credentials import Secret
from tokenissue.enroll import is_cmp_location, open_enroller
from tokenissue.enroll.cmp import CMPEnroller, CMPError, canonical_auth_code, transaction_id_for
from tokenissue.errors import CAOutcomeUnknown, CAUnavailable, RequestRejected, UsageError
from tokenissue.lifecycle import EnrollParams
from tokenissue.models import RevocationReason
from tokenissue.pkix.csr import build_csr
from tokenissue.protocols.cmp import (
    CMPRequest,
    SharedSecret,
    StatusInfo,
    build_cp,
    build_error,
    build_kup,
    build_pkiconf,
    build_rp,
    decode_message,
    encode_message,
    parse_request,
    protect_pbm,
    protect_signature,
    verify_cert_hash,
    verify_protection,
)

from support.software_ca import SoftwareCA, make_software_ca


@contextlib.contextmanager
def _raises_saying(kind: type[Exception], pattern: str) -> Iterator[pytest.ExceptionInfo[Exception]]:
    """``pytest.raises(kind)``, and what the CLI says for it matches ``pattern``: the client's
    errors name no option; the CLI adds the remedy (tokenissue/cli/_messages.py)."""
    with pytest.raises(kind) as info:
        yield info
    said = say(info.value)  # type: ignore[arg-type]
    assert re.search(pattern, said), said

CODE = "auth-code-5512"
REF = "1234"
CT = "application/pkixcmp"

Answer = tuple[int, str, bytes]


class _Server:
    """An HTTP server on 127.0.0.1 whose answer to each POST is ``handler(body)``."""

    def __init__(self, handler: Callable[[bytes], Answer], tls: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.scheme = "https" if tls else "http"
        self.requests: list[bytes] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                outer.requests.append(body)
                outer.content_types.append(self.headers.get("Content-Type", ""))
                status, ctype, payload = outer.handler(body)
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.content_types: list[str] = []
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"cmp+{self.scheme}://127.0.0.1:{self.httpd.server_address[1]}/pkix/"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve() -> Iterator[Callable[..., _Server]]:
    servers: list[_Server] = []

    def start(handler: Callable[[bytes], Answer], tls: ssl.SSLContext | None = None) -> _Server:
        s = _Server(handler, tls)
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.close()


class Pki:
    """A software CA, a holder key with its CSR, and what a well-behaved CMP server answers."""

    def __init__(self, root: Path) -> None:
        self.ca: SoftwareCA = make_software_ca(root)
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.csr = build_csr(self.key, x509.Name.from_rfc4514_string("CN=holder"))
        self.cert = self.ca.issue(self.key.public_key(), "holder")
        self.confirmed: list[CMPRequest] = []

    def enroller(self, url: str, **kw: Any) -> CMPEnroller:
        kw.setdefault("ref", REF)
        kw.setdefault("auth_code", Secret(CODE))
        return CMPEnroller(url, **kw)

    def mac(self, msg: Any) -> bytes:
        return encode_message(protect_pbm(msg, SharedSecret.from_text(CODE), sender_kid=b"server"))

    def good(self, cert: x509.Certificate | None = None, *, ca_pubs: bool = True) -> Callable[[bytes], Answer]:
        """A server that checks our MAC, issues ``cert`` (default: the holder's) and confirms."""

        def handle(body: bytes) -> Answer:
            msg = decode_message(body)
            req = parse_request(msg)
            verify_protection(msg, secret=SharedSecret.from_text(CODE))
            if req.body_type == "p10cr":
                assert req.sender_kid == REF.encode()
                rsp = build_cp(req, cert or self.cert, [self.ca.cert] if ca_pubs else [], cert_req_id=-1)
                return 200, CT, self.mac(rsp)
            assert req.body_type == "certConf"
            self.confirmed.append(req)
            return 200, CT, self.mac(build_pkiconf(req))

        return handle


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path / "ca")


def _request(e: CMPEnroller, pki: Pki, request_id: str = "journal-1") -> Any:
    return e.request(pki.csr, profile="personal", request_id=request_id, token_serial=None, key_id=None, label=None)


# -- transport ------------------------------------------------------------------------------


def test_http_500_is_unavailable_and_maybe_processed(pki: Pki, serve: Any) -> None:
    s = serve(lambda body: (500, "text/plain", b"boom"))
    with pki.enroller(s.url) as e, pytest.raises(CAOutcomeUnknown) as err:
        _request(e, pki)
    assert str(err.value) == f"The CMP server at {s.url[4:]} answered HTTP 500; try again later."
    assert s.content_types == [CT]


def test_http_503_is_repeated_with_the_same_message(pki: Pki, serve: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A CA server answers 503 while its database is down: the client waits (Retry-After,
    capped) and sends the very same message again, a bounded number of times."""
    import tokenissue.enroll.cmp as cmp_module

    monkeypatch.setattr(cmp_module, "_RETRY_AFTER_MAX_S", 0.01)
    answers = iter([(503, "text/plain", b"busy"), (503, "text/plain", b"busy"), (404, "text/plain", b"")])
    s = serve(lambda body: next(answers))
    with pki.enroller(s.url) as e, pytest.raises(CAUnavailable, match="answered HTTP 404"):
        _request(e, pki)
    assert len(s.requests) == 3 and len(set(s.requests)) == 1
    s2 = serve(lambda body: (503, "text/plain", b"busy"))
    with pki.enroller(s2.url) as e, pytest.raises(CAOutcomeUnknown, match="answered HTTP 503; try again later"):
        _request(e, pki)
    assert len(s2.requests) == 3  # then it gives up: the journal keeps the enrollment open


def test_http_404_says_check_the_url(pki: Pki, serve: Any) -> None:
    s = serve(lambda body: (404, "text/html", b"<h1>no</h1>"))
    with pki.enroller(s.url) as e, _raises_saying(CAUnavailable, r"answered HTTP 404; check the URL") as err:
        _request(e, pki)
    assert not isinstance(err.value, CAOutcomeUnknown)


def test_wrong_content_type(pki: Pki, serve: Any) -> None:
    s = serve(lambda body: (200, "text/html; charset=utf-8", b"<html></html>"))
    with pki.enroller(s.url) as e, pytest.raises(CAUnavailable, match=r"is not a CMP server: it answered text/html"):
        _request(e, pki)


def test_garbage_der(pki: Pki, serve: Any) -> None:
    s = serve(lambda body: (200, CT, b"\x30\x03\x02\x01"))
    with pki.enroller(s.url) as e, pytest.raises(CAUnavailable, match=r"not a valid CMP message"):
        _request(e, pki)


def test_connection_refused() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound but not listening: the connection is refused
        with CMPEnroller(f"cmp+http://127.0.0.1:{port}/pkix/", ref=REF, auth_code=Secret(CODE)) as e:
            csr = build_csr(ec.generate_private_key(ec.SECP256R1()), x509.Name.from_rfc4514_string("CN=x"))
            with pytest.raises(CAUnavailable, match=r"^Cannot reach the CMP server at http://127\.0\.0\.1") as err:
                e.request(csr, profile="p", request_id="r", token_serial=None, key_id=None, label=None)
    assert not isinstance(err.value, CAOutcomeUnknown)


def test_read_timeout_keeps_the_outcome_open(pki: Pki, serve: Any) -> None:
    def slow(body: bytes) -> Answer:
        time.sleep(1.5)
        return 500, "text/plain", b""

    s = serve(slow)
    with pki.enroller(s.url, read_timeout=0.3) as e, pytest.raises(CAOutcomeUnknown, match="did not answer in time"):
        _request(e, pki)


def _tls_context(pki: Pki, tmp_path: Path) -> ssl.SSLContext:
    """A server TLS context with a certificate for 127.0.0.1 from the test CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = pki.ca.cert.not_valid_before_utc
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name.from_rfc4514_string("CN=127.0.0.1"))
        .issuer_name(pki.ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(pki.ca.cert.not_valid_after_utc)
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .sign(pki.ca.key, hashes.SHA256())
    )
    (tmp_path / "tls.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "tls.key").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(tmp_path / "tls.pem", tmp_path / "tls.key")
    return ctx


def test_https_with_ca_trust(pki: Pki, serve: Any, tmp_path: Path) -> None:
    s = serve(pki.good(), _tls_context(pki, tmp_path))
    assert s.url.startswith("cmp+https://")
    with pki.enroller(s.url, trust=[pki.ca.cert]) as e:
        assert _request(e, pki).certificate == pki.cert


def test_https_untrusted_server_certificate(pki: Pki, serve: Any, tmp_path: Path) -> None:
    s = serve(pki.good(), _tls_context(pki, tmp_path))
    with pki.enroller(s.url) as e, _raises_saying(CAUnavailable, r"TLS certificate .* is not trusted; give its CA with --ca-trust"):
        _request(e, pki)


# -- CMP error answers ------------------------------------------------------------------------


def _error_server(pki: Pki, failure: Any, text: str, *, protect: bool = True) -> Callable[[bytes], Answer]:
    def handle(body: bytes) -> Answer:
        req = parse_request(decode_message(body))
        msg = build_error(req, failure, text)
        return 200, CT, pki.mac(msg) if protect else encode_message(msg)

    return handle


def test_error_message_is_one_sentence_with_failinfo_and_text(pki: Pki, serve: Any) -> None:
    s = serve(_error_server(pki, "badCertTemplate", "Subject O=Evil is not\x07 allowed."))
    with pki.enroller(s.url) as e, pytest.raises(CMPError) as err:
        _request(e, pki)
    assert isinstance(err.value, RequestRejected)
    assert err.value.failure_info == "badCertTemplate"
    assert str(err.value) == (
        f"The CMP server at {s.url[4:]} refused the request: badCertTemplate (Subject O=Evil is not  allowed)."
    )


def test_system_unavailable_is_ca_unavailable(pki: Pki, serve: Any) -> None:
    s = serve(_error_server(pki, "systemUnavail", "maintenance"))
    with pki.enroller(s.url) as e, pytest.raises(CAUnavailable, match=r"systemUnavail \(maintenance\); try again later"):
        _request(e, pki)


def test_unprotected_error_is_reported_as_unauthenticated(pki: Pki, serve: Any) -> None:
    s = serve(_error_server(pki, "badMessageCheck", "wrong pbm value", protect=False))
    with pki.enroller(s.url) as e, pytest.raises(RequestRejected) as err:
        _request(e, pki)
    msg = say(err.value)  # what the CLI prints: the message and its remedy
    assert "in an unauthenticated answer: badMessageCheck (wrong pbm value)" in msg
    assert "check --ref and the authorization code" in msg
    assert CODE not in msg


def test_error_with_other_http_status_is_still_read(pki: Pki, serve: Any) -> None:
    def handle(body: bytes) -> Answer:
        _status, ctype, payload = _error_server(pki, "notAuthorized", "unknown reference")(body)
        return 400, ctype, payload

    s = serve(handle)
    with pki.enroller(s.url) as e, pytest.raises(CMPError, match=r"notAuthorized \(unknown reference\)"):
        _request(e, pki)


def test_answer_with_wrong_mac_is_refused(pki: Pki, serve: Any) -> None:
    def handle(body: bytes) -> Answer:
        req = parse_request(decode_message(body))
        rsp = build_cp(req, pki.cert, [pki.ca.cert], cert_req_id=-1)
        return 200, CT, encode_message(protect_pbm(rsp, SharedSecret.from_text("not-the-code"), sender_kid=b"s"))

    s = serve(handle)
    with pki.enroller(s.url) as e, _raises_saying(CMPError, r"does not verify .*check --ref and the authorization code"):
        _request(e, pki)


# -- the happy path and its checks ------------------------------------------------------------


def test_request_issues_confirms_and_returns_the_chain(pki: Pki, serve: Any) -> None:
    s = serve(pki.good())
    with pki.enroller(s.url) as e:
        result = _request(e, pki)
    assert result.certificate == pki.cert
    assert result.chain == [pki.ca.cert]
    assert len(pki.confirmed) == 1
    conf = pki.confirmed[0]
    assert conf.confirmations[0].cert_req_id == -1
    verify_cert_hash(conf.confirmations[0], pki.cert)
    first = parse_request(decode_message(s.requests[0]))
    assert conf.transaction_id == first.transaction_id == transaction_id_for("journal-1")
    assert conf.sender_nonce != first.sender_nonce
    # The profile travels as id-it-certProfile in generalInfo.
    infos = first.message["header"]["generalInfo"]
    assert [str(i["infoType"]) for i in infos] == ["1.3.6.1.5.5.7.4.21"]
    assert b"personal" in bytes(infos[0]["infoValue"])


def test_transaction_id_is_derived_from_the_request_id(pki: Pki, serve: Any) -> None:
    assert transaction_id_for("abc") == hashlib.sha256(b"abc").digest()[:16]
    assert transaction_id_for("abc") != transaction_id_for("abd")
    s = serve(pki.good())
    with pki.enroller(s.url) as e:
        _request(e, pki, "same-id")
        _request(e, pki, "same-id")
    ids = [parse_request(decode_message(b)) for b in s.requests if parse_request(decode_message(b)).body_type == "p10cr"]
    assert len(ids) == 2
    assert ids[0].transaction_id == ids[1].transaction_id == transaction_id_for("same-id")
    assert ids[0].sender_nonce != ids[1].sender_nonce  # fresh per message


def test_certificate_for_another_key_is_rejected_in_cert_conf(pki: Pki, serve: Any) -> None:
    other = pki.ca.issue(ec.generate_private_key(ec.SECP256R1()).public_key(), "someone else")
    s = serve(pki.good(other))
    with pki.enroller(s.url) as e, pytest.raises(CMPError, match=r"another key than the one requested; it was refused\.$"):
        _request(e, pki)
    assert len(pki.confirmed) == 1
    assert pki.confirmed[0].confirmations[0].accepted is False


def test_no_root_anywhere_is_rejected_unless_trusted(pki: Pki, serve: Any) -> None:
    s = serve(pki.good(ca_pubs=False))
    with pki.enroller(s.url) as e, _raises_saying(RequestRejected, r"no root CA certificate .*--ca-trust"):
        _request(e, pki)
    assert pki.confirmed[-1].confirmations[0].accepted is False
    with pki.enroller(s.url, trust=[pki.ca.cert]) as e:
        assert _request(e, pki).chain == [pki.ca.cert]


def test_missing_ref_or_code_is_a_usage_error(pki: Pki) -> None:
    with CMPEnroller("cmp+http://127.0.0.1:1/", auth_code=Secret(CODE)) as e, _raises_saying(UsageError, "--ref"):
        _request(e, pki)
    with CMPEnroller("cmp+http://127.0.0.1:1/", ref=REF) as e, _raises_saying(UsageError, "TOKENISSUE_AUTH_CODE"):
        _request(e, pki)


def test_registration_codes_are_canonicalised_other_secrets_kept() -> None:
    typed = Secret("abcde fghjk-mnpqr-stvwx")
    assert canonical_auth_code(typed).reveal() == "ABCDE-FGHJK-MNPQR-STVWX"
    assert canonical_auth_code(Secret("mock-s3cret")).reveal() == "mock-s3cret"


def test_auth_code_is_asked_lazily(pki: Pki, serve: Any) -> None:
    asked: list[int] = []

    def code() -> Secret:
        asked.append(1)
        return Secret(CODE)

    s = serve(pki.good())
    with pki.enroller(s.url, auth_code=code) as e:
        assert not asked
        _request(e, pki)
    assert asked


# -- revoke (rr signed by the certificate's key) ----------------------------------------------


def _signing_server(pki: Pki, answer: Callable[[CMPRequest], Any]) -> Callable[[bytes], Answer]:
    """A server that checks our signature against the CA and signs its answers with the CA key."""

    def handle(body: bytes) -> Answer:
        msg = decode_message(body)
        req = parse_request(msg)
        signer = verify_protection(msg, trusted_signers=[pki.ca.cert])
        assert signer == pki.cert
        return 200, CT, encode_message(protect_signature(answer(req), pki.ca.key, pki.ca.cert))

    return handle


def test_revoke_signs_with_the_certificate_key(pki: Pki, serve: Any) -> None:
    seen: list[CMPRequest] = []

    def answer(req: CMPRequest) -> Any:
        seen.append(req)
        return build_rp(req, [StatusInfo("accepted")])

    s = serve(_signing_server(pki, answer))
    with pki.enroller(s.url, ref=None, auth_code=None) as e:
        # No --ca-trust: the CA certificate in extraCerts is trusted because it issued ours.
        e.revoke(pki.cert.serial_number, RevocationReason.KEY_COMPROMISE, cert=pki.cert, key=pki.key)
    rev = seen[0].revocations[0]
    assert (rev.serial, rev.issuer, rev.reason) == (
        pki.cert.serial_number, pki.ca.cert.subject, x509.ReasonFlags.key_compromise,
    )  # fmt: skip


def test_revoke_of_a_revoked_certificate_is_done(pki: Pki, serve: Any) -> None:
    """A rejection with certRevoked means the goal is reached: no error, one request sent for
    this very certificate; the same rejection with another failure (the control) is an error."""
    seen: list[CMPRequest] = []

    def answer(failure: str) -> Callable[[CMPRequest], Any]:
        def build(req: CMPRequest) -> Any:
            seen.append(req)
            return build_rp(req, [StatusInfo("rejection", (failure,), "already")])

        return build

    s = serve(_signing_server(pki, answer("certRevoked")))
    with pki.enroller(s.url) as e:
        assert e.revoke(pki.cert.serial_number, RevocationReason.UNSPECIFIED, cert=pki.cert, key=pki.key) is None
    assert [r.serial for q in seen for r in q.revocations] == [pki.cert.serial_number]
    other = serve(_signing_server(pki, answer("badRequest")))
    with pki.enroller(other.url) as e, pytest.raises(CMPError, match="badRequest"):
        e.revoke(pki.cert.serial_number, RevocationReason.UNSPECIFIED, cert=pki.cert, key=pki.key)


def test_revoke_refused(pki: Pki, serve: Any) -> None:
    s = serve(_signing_server(pki, lambda req: build_rp(req, [StatusInfo("rejection", ("notAuthorized",), "no")])))
    with pki.enroller(s.url) as e, pytest.raises(CMPError, match=r"notAuthorized \(no\)"):
        e.revoke(pki.cert.serial_number, RevocationReason.UNSPECIFIED, cert=pki.cert, key=pki.key)


def test_revoke_signed_by_an_untrusted_ca_is_refused(pki: Pki, serve: Any, tmp_path: Path) -> None:
    stranger = make_software_ca(tmp_path / "stranger", "Stranger CA")

    def handle(body: bytes) -> Answer:
        req = parse_request(decode_message(body))
        return 200, CT, encode_message(protect_signature(build_rp(req, [StatusInfo()]), stranger.key, stranger.cert))

    s = serve(handle)
    with pki.enroller(s.url) as e, _raises_saying(CMPError, r"does not verify .*--ca-trust") as err:
        e.revoke(pki.cert.serial_number, RevocationReason.UNSPECIFIED, cert=pki.cert, key=pki.key)
    assert err.value.failure_info == "signerNotTrusted"


def test_revoke_without_the_key_is_a_usage_error(pki: Pki) -> None:
    with pki.enroller("cmp+http://127.0.0.1:1/") as e, pytest.raises(UsageError, match="needs the certificate and its key"):
        e.revoke(5, RevocationReason.UNSPECIFIED)


# -- renew (kur signed by the current key, POP by the new key) --------------------------------


def test_renew_sends_kur_signed_by_the_current_key(pki: Pki, serve: Any) -> None:
    new_key = ec.generate_private_key(ec.SECP256R1())
    new_cert = pki.ca.issue(new_key.public_key(), "holder")
    csr = build_csr(new_key, x509.Name.from_rfc4514_string("CN=holder"))
    seen: list[CMPRequest] = []

    def answer(req: CMPRequest) -> Any:
        seen.append(req)
        if req.body_type == "kur":
            assert req.pop_valid and req.old_cert_id == (pki.ca.cert.subject, pki.cert.serial_number)
            return build_kup(req, new_cert, [pki.ca.cert])
        return build_pkiconf(req)

    s = serve(_signing_server(pki, answer))
    with pki.enroller(s.url, ref=None, auth_code=None) as e:
        result = e.renew(
            csr, new_key=new_key, current_cert=pki.cert, current_key=pki.key, profile="personal",
            request_id="renew-1", token_serial=None, key_id=None, label=None, replaces=pki.cert.serial_number,
        )  # fmt: skip
    assert result.certificate == new_cert
    assert result.chain == [pki.ca.cert]
    assert [r.body_type for r in seen] == ["kur", "certConf"]
    assert seen[0].transaction_id == transaction_id_for("renew-1")


# -- locations and journal parameters ---------------------------------------------------------


def test_open_enroller_schemes() -> None:
    e = open_enroller("cmp+http://127.0.0.1:8080/pkix/", ref="1")
    try:
        assert isinstance(e, CMPEnroller)
        assert e.location == "cmp+http://127.0.0.1:8080/pkix/" and e.url == "http://127.0.0.1:8080/pkix/"
        assert e.needs_ca_pin is False and e.status(1) is None
    finally:
        e.close()
    assert is_cmp_location("cmp+https://ca.example/pkix/") and not is_cmp_location("/srv/ca")
    with pytest.raises(UsageError, match=r"not supported; give cmp\+http"):
        open_enroller("ftp://x/")
    with pytest.raises(UsageError, match="does not talk to ACME"):
        open_enroller("acme+https://x/")  # ACME is supported, with ACMEOptions (tests/unit/test_acme_enroller.py)
    with pytest.raises(UsageError, match="is not a CMP URL"):
        CMPEnroller("cmp+ftp://x/")


def test_journal_params_hold_the_ref_never_the_code() -> None:
    base = dict(token_serial="s", subject="CN=x", profile="p", key_type="ec-p256", ca="cmp+http://h/")
    with_ref = EnrollParams(**base, ref="1234").as_json()  # type: ignore[arg-type]
    assert with_ref["ref"] == "1234"
    assert "ref" not in EnrollParams(**base).as_json()  # type: ignore[arg-type]  # old entries still match
    assert not any("code" in k or "secret" in k for k in with_ref)
