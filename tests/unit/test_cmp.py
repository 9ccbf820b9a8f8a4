"""The CMP message layer against OpenSSL's messages, its own builders, and hostile input.

Vectors in tests/vectors/cmp were captured from OpenSSL 3.0.22's ``openssl cmp`` client and
mock server (see the README there). Software keys stand in for token keys: the code under test
only calls ``sign()`` and ``public_key()``, and :class:`OpaqueECKey` proves it never asks for
more.
"""

from __future__ import annotations

import contextlib
import functools
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tokenissue.errors import TokenIssueError
from tokenissue.pkix.certs import issue_certificate, random_serial, self_signed_ca
from tokenissue.pkix.csr import build_csr
from tokenissue.protocols.cmp import (
    ID_IT_CA_CERTS,
    ID_IT_ROOT_CA_CERT,
    ID_IT_ROOT_CA_KEY_UPDATE,
    CMPError,
    MessageHeader,
    RootCaUpdate,
    SharedSecret,
    StatusInfo,
    build_cert_conf,
    build_cp,
    build_cr,
    build_error,
    build_genm,
    build_genp,
    build_ip,
    build_ir,
    build_kup,
    build_kur,
    build_p10cr,
    build_pkiconf,
    build_rp,
    build_rr,
    cert_hash,
    decode_message,
    encode_message,
    parse_request,
    parse_response,
    protect_pbm,
    protect_pbmac1,
    protect_signature,
    verify_cert_hash,
    verify_pop,
    verify_protection,
)

# CI replays a fixed sequence (a red build must be reproducible); local runs explore anew.
_IN_CI = bool(os.environ.get("CI"))
VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "cmp"
MESSAGES = ["ir", "ip", "certConf", "pkiConf", "genm", "genp"]
KEY_TYPES = ["ec-p256", "rsa-2048", "ed25519"]


def vector(name: str) -> bytes:
    return (VECTORS / f"{name}.der").read_bytes()


def name(text: str) -> x509.Name:
    return x509.Name.from_rfc4514_string(text)


@functools.cache
def key(kind: str, n: int = 0) -> Any:
    del n  # Only part of the cache key.
    if kind == "ec-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "ec-p384":
        return ec.generate_private_key(ec.SECP384R1())
    if kind == "rsa-2048":
        return rsa.generate_private_key(65537, 2048)
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    raise AssertionError(kind)


def _ku(**bits: bool) -> x509.KeyUsage:
    names = ["digital_signature", "content_commitment", "key_encipherment", "data_encipherment", "key_agreement",
             "key_cert_sign", "crl_sign", "encipher_only", "decipher_only"]  # fmt: skip
    return x509.KeyUsage(**{n: bits.get(n, False) for n in names})


@functools.cache
def ca(kind: str = "ec-p256") -> tuple[Any, x509.Certificate]:
    k = key(kind, 100)
    return k, self_signed_ca(k, name(f"CN=CMP Test CA {kind}"), 30)


@functools.cache
def leaf(kind: str, ca_kind: str = "ec-p256", subject: str = "CN=ra") -> tuple[Any, x509.Certificate]:
    ca_key, ca_cert = ca(ca_kind)
    k = key(kind, 1)
    now = datetime.now(UTC)
    cert = issue_certificate(
        ca_key, ca_cert, public_key=k.public_key(), subject=name(subject), san=[], serial=random_serial(),
        not_before=now - timedelta(minutes=5), not_after=now + timedelta(days=10),
        key_usage=_ku(digital_signature=True), extended_key_usage=[], policies=[], crl_url=None,
    )  # fmt: skip
    return k, cert


class OpaqueECKey(ec.EllipticCurvePrivateKey):
    """A stand-in for a token key: it signs, and refuses everything that would export it."""

    def __init__(self, inner: ec.EllipticCurvePrivateKey) -> None:
        self._inner = inner

    def sign(self, data: bytes, signature_algorithm: Any) -> bytes:
        return self._inner.sign(data, signature_algorithm)

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._inner.public_key()

    @property
    def curve(self) -> ec.EllipticCurve:
        return self._inner.curve

    @property
    def key_size(self) -> int:
        return self._inner.key_size

    def private_numbers(self) -> ec.EllipticCurvePrivateNumbers:
        raise AssertionError("a token key cannot be read")

    def private_bytes(self, *args: Any, **kwargs: Any) -> bytes:
        raise AssertionError("a token key cannot be serialised")

    def exchange(self, *args: Any, **kwargs: Any) -> bytes:
        raise AssertionError("not a key-agreement key")

    def __copy__(self) -> OpaqueECKey:
        return self

    def __deepcopy__(self, memo: Any) -> OpaqueECKey:
        return self


def roundtrip(msg: Any) -> Any:
    return decode_message(encode_message(msg))


def spki(public_key: Any) -> bytes:
    return bytes(public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo))


# Decoding


@pytest.mark.parametrize("message", MESSAGES)
def test_vector_decodes_and_reencodes_byte_for_byte(message: str) -> None:
    der = vector(message)
    assert encode_message(decode_message(der)) == der


def test_trailing_bytes_are_refused() -> None:
    with pytest.raises(CMPError) as e:
        decode_message(vector("ir") + b"\x00")
    assert e.value.failure_info == "badDataFormat"


def test_size_limit() -> None:
    der = vector("ip")
    with pytest.raises(CMPError) as e:
        decode_message(der, max_size=len(der) - 1)
    assert e.value.failure_info == "badRequest"
    assert decode_message(der, max_size=len(der))


def test_ber_that_is_not_der_is_refused() -> None:
    der = vector("genm")
    # The same message with the outer length in a non-minimal long form (81 C4 instead of C4... is
    # already long form; use 82 00 C4), which BER allows and DER does not.
    assert der[1] == 0x81
    ber = der[:1] + b"\x82\x00" + der[2:]
    with pytest.raises(CMPError) as e:
        decode_message(ber)
    assert e.value.failure_info == "badDataFormat"


def test_wrong_body_tag_is_refused_cheaply() -> None:
    # pyasn1 alone would answer with a 3.5 MB error message built in ~0.3 s; the outline check
    # refuses it first.
    der = bytearray(vector("genm"))
    assert der[170] == 0xB5  # [21] genm
    der[170] = 0xBF
    with pytest.raises(CMPError) as e:
        decode_message(bytes(der))
    assert e.value.failure_info == "badDataFormat"
    assert len(str(e.value)) < 200


def test_unsupported_version() -> None:
    der = bytearray(vector("genm"))
    # pvno is the first INTEGER in the header: 02 01 02 at offset 6.
    assert der[6:9] == b"\x02\x01\x02"
    der[8] = 1
    with pytest.raises(CMPError) as e:
        decode_message(bytes(der))
    assert e.value.failure_info == "unsupportedVersion"


def test_decode_refuses_non_bytes() -> None:
    with pytest.raises(TypeError):
        decode_message("not bytes")  # type: ignore[arg-type]


# Parsing OpenSSL's messages


def test_parse_openssl_ir() -> None:
    req = parse_request(decode_message(vector("ir")))
    assert req.body_type == "ir"
    assert req.sender_kid == b"1234"
    assert req.subject == name("CN=sw-client")
    assert req.sender == name("CN=sw-client")
    assert req.recipient == name("CN=cmp mock CA")
    assert isinstance(req.public_key, ec.EllipticCurvePublicKey)
    assert isinstance(req.public_key.curve, ec.SECP256R1)
    assert req.cert_req_id == 0
    assert req.pop_kind == "signature"
    assert req.pop_valid
    verify_pop(req)
    assert req.protection_alg == "1.2.840.113533.7.66.13"
    assert req.transaction_id is not None and len(req.transaction_id) == 16
    assert req.sender_nonce is not None and len(req.sender_nonce) == 16
    assert req.recip_nonce is None
    assert not req.implicit_confirm
    assert req.header.pvno == 2
    assert req.header.message_time == datetime(2026, 11, 25, 13, 53, 8, tzinfo=UTC)


def test_parse_openssl_cert_conf_matches_issued_cert() -> None:
    req = parse_request(decode_message(vector("certConf")))
    ip = parse_response(decode_message(vector("ip")))
    assert req.body_type == "certConf"
    (conf,) = req.confirmations
    assert conf.cert_req_id == 0 and conf.accepted and conf.hash_alg is None
    assert ip.certificate is not None
    verify_cert_hash(conf, ip.certificate)
    # The transaction continues: same ID, and certConf's recipNonce is ip's senderNonce.
    assert req.transaction_id == ip.transaction_id
    assert req.recip_nonce == ip.sender_nonce


def test_parse_openssl_genm() -> None:
    req = parse_request(decode_message(vector("genm")))
    assert req.body_type == "genm"
    assert req.info_types == ()
    assert req.sender is None  # OpenSSL sends NULL-DN without -subject/-cert.


def test_parse_openssl_ip() -> None:
    ir = parse_request(decode_message(vector("ir")))
    ip = parse_response(decode_message(vector("ip")))
    mock_ca = x509.load_pem_x509_certificate((VECTORS / "mock-ca.crt").read_bytes())
    assert ip.body_type == "ip"
    assert ip.status == StatusInfo("accepted")
    ip.raise_for_status()
    assert ip.certificate is not None
    assert ip.certificate.subject == name("CN=sw-client")
    assert ip.certificate.serial_number == 0x1001
    assert spki(ip.certificate.public_key()) == spki(ir.public_key)
    assert ip.ca_pubs == (mock_ca,)
    assert ip.transaction_id == ir.transaction_id
    assert ip.recip_nonce == ir.sender_nonce


def test_parse_openssl_genp_and_pkiconf() -> None:
    genp = parse_response(decode_message(vector("genp")))
    assert genp.body_type == "genp" and genp.info_types == () and genp.ca_certs is None
    conf = parse_response(decode_message(vector("pkiConf")))
    assert conf.body_type == "pkiconf"
    conf.raise_for_status()


def test_request_parser_refuses_responses() -> None:
    with pytest.raises(CMPError) as e:
        parse_request(decode_message(vector("ip")))
    assert e.value.failure_info == "badRequest"
    with pytest.raises(CMPError):
        parse_response(decode_message(vector("ir")))


# Protection


@pytest.mark.parametrize("message", MESSAGES)
def test_openssl_pbm_verifies(message: str) -> None:
    assert verify_protection(decode_message(vector(message)), secret=b"s3cret") is None


def test_wrong_secret_is_bad_message_check() -> None:
    msg = decode_message(vector("ir"))
    with pytest.raises(CMPError) as e:
        verify_protection(msg, secret=b"wrong")
    assert e.value.failure_info == "badMessageCheck"


def test_secret_wrappers() -> None:
    msg = decode_message(vector("ir"))
    verify_protection(msg, secret=SharedSecret(b"s3cret"))
    verify_protection(msg, secret=SharedSecret.from_text("s3cret"))
    assert "s3cret" not in repr(SharedSecret(b"s3cret")) + str(SharedSecret(b"s3cret")) + f"{SharedSecret(b's3cret')}"


def test_missing_secret_and_unprotected() -> None:
    with pytest.raises(CMPError) as e:
        verify_protection(decode_message(vector("ir")))
    assert e.value.failure_info == "badMessageCheck"
    with pytest.raises(CMPError) as e:
        verify_protection(build_genm([]))
    assert e.value.failure_info == "badMessageCheck"


def test_iteration_cap() -> None:
    # OpenSSL used 500 iterations; a server that allows fewer refuses the message unread.
    with pytest.raises(CMPError) as e:
        verify_protection(decode_message(vector("ir")), secret=b"s3cret", max_iterations=499)
    assert e.value.failure_info == "badAlg"
    with pytest.raises(CMPError):
        protect_pbm(build_genm([]), b"x", sender_kid=b"r", iterations=99)
    with pytest.raises(CMPError):
        protect_pbm(build_genm([]), b"x", sender_kid=b"r", iterations=100_001)


@pytest.mark.parametrize("protect", [protect_pbm, protect_pbmac1], ids=["pbm", "pbmac1"])
def test_mac_roundtrip(protect: Any) -> None:
    plain = build_genm([ID_IT_CA_CERTS], header=MessageHeader(sender_kid=b"ignored"))
    msg = roundtrip(protect(plain, SharedSecret(b"shared"), sender_kid=b"ref-7", iterations=1000))
    assert parse_request(msg).sender_kid == b"ref-7"
    verify_protection(msg, secret=b"shared")
    with pytest.raises(CMPError) as e:
        verify_protection(msg, secret=b"Shared")
    assert e.value.failure_info == "badMessageCheck"
    # Protecting copies: the builder's message is left alone.
    assert not plain["protection"].isValue


@pytest.mark.parametrize("kind", KEY_TYPES)
def test_signature_roundtrip(kind: str) -> None:
    signer_key, signer_cert = leaf(kind, ca_kind=kind)
    _, ca_cert = ca(kind)
    msg = roundtrip(protect_signature(build_genm([ID_IT_CA_CERTS]), signer_key, signer_cert, [ca_cert]))
    req = parse_request(msg)
    assert req.sender == signer_cert.subject
    ski = signer_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    assert req.sender_kid == ski
    assert verify_protection(msg, trusted_signers=[ca_cert]) == signer_cert
    # Pinning the protection certificate itself works too.
    assert verify_protection(msg, trusted_signers=[signer_cert]) == signer_cert


def test_protecting_leaves_the_callers_message_alone() -> None:
    """Protection shares the body with the caller's message (no costly copy) and must still
    change nothing the caller holds: header, body, protection, extraCerts."""
    signer_key, signer_cert = leaf("ec-p256")
    _, ca_cert = ca("ec-p256")
    plain = build_p10cr(build_csr(signer_key, signer_cert.subject), header=MessageHeader(sender_kid=b"before"))
    before = encode_message(plain)
    signed = protect_signature(plain, signer_key, signer_cert, [ca_cert])
    pbm = protect_pbm(plain, SharedSecret(b"shared"), sender_kid=b"ref-1", iterations=500)
    assert encode_message(plain) == before
    assert parse_request(roundtrip(signed)).sender_kid != b"before"
    assert parse_request(roundtrip(pbm)).sender_kid == b"ref-1"
    verify_protection(roundtrip(pbm), secret=b"shared")
    assert verify_protection(roundtrip(signed), trusted_signers=[ca_cert]) == signer_cert


def test_signature_with_opaque_token_key() -> None:
    inner, cert = leaf("ec-p256")
    _, ca_cert = ca("ec-p256")
    msg = roundtrip(protect_signature(build_genm([]), OpaqueECKey(inner), cert, [ca_cert]))
    assert verify_protection(msg, trusted_signers=[ca_cert]) == cert


def test_signature_failures() -> None:
    signer_key, signer_cert = leaf("ec-p256")
    _, ca_cert = ca("ec-p256")
    _, other_ca = ca("ed25519")
    msg = roundtrip(protect_signature(build_genm([]), signer_key, signer_cert, [ca_cert]))
    with pytest.raises(CMPError) as e:
        verify_protection(msg, trusted_signers=[other_ca])
    assert e.value.failure_info == "signerNotTrusted"
    with pytest.raises(CMPError) as e:
        verify_protection(msg)
    assert e.value.failure_info == "signerNotTrusted"
    # A signature over other content: the body changed after signing.
    forged = roundtrip(protect_signature(build_genm([ID_IT_CA_CERTS]), signer_key, signer_cert))
    forged["body"] = msg["body"]
    with pytest.raises(CMPError) as e:
        verify_protection(roundtrip(forged), trusted_signers=[ca_cert])
    assert e.value.failure_info == "badMessageCheck"
    with pytest.raises(ValueError, match="does not belong to the CMP protection certificate"):
        protect_signature(build_genm([]), key("ec-p256", 9), signer_cert)


# Builders, through DER and back


@pytest.mark.parametrize("kind", KEY_TYPES)
def test_build_ir_roundtrip(kind: str) -> None:
    k = key(kind, 5)
    sans = [x509.DNSName("device.example.test")]
    msg = roundtrip(
        protect_pbm(build_ir(name("CN=device"), None, k, sans=sans, header=MessageHeader(implicit_confirm=True)), b"s", sender_kid=b"1")
    )
    req = parse_request(msg)
    assert req.body_type == "ir"
    assert req.subject == name("CN=device") == req.sender
    assert spki(req.public_key) == spki(k.public_key())
    assert req.sans == tuple(sans)
    assert req.implicit_confirm
    assert req.pop_kind == "signature" and req.pop_valid
    assert req.sender_kid == b"1"
    verify_protection(msg, secret=b"s")


def test_build_ir_with_opaque_token_key() -> None:
    k = OpaqueECKey(key("ec-p256", 6))
    req = parse_request(roundtrip(build_ir(name("CN=token"), k.public_key(), k)))
    assert req.pop_valid


def test_pop_must_match_the_certified_key() -> None:
    with pytest.raises(ValueError):
        build_ir(name("CN=x"), key("ec-p256", 7).public_key(), key("ec-p256", 8))


def test_altered_template_fails_pop() -> None:
    der = encode_message(build_ir(name("CN=alice"), None, key("ec-p256", 5)))
    # The header's sender and the template's subject both say alice; change both.
    tampered = der.replace(b"alice", b"malle")
    req = parse_request(decode_message(tampered))
    assert req.subject == name("CN=malle")
    assert not req.pop_valid
    with pytest.raises(CMPError) as e:
        verify_pop(req)
    assert e.value.failure_info == "badPOP"


def test_build_cr_and_kur() -> None:
    k = key("ec-p256", 5)
    _, old = leaf("ec-p256")
    cr = parse_request(roundtrip(build_cr(name("CN=device"), None, k)))
    assert cr.body_type == "cr" and cr.pop_valid
    kur = parse_request(roundtrip(build_kur(name("CN=device"), None, k, old_cert=old)))
    assert kur.body_type == "kur" and kur.pop_valid
    assert kur.old_cert_id == (old.issuer, old.serial_number)


def test_build_p10cr() -> None:
    k = key("ec-p384")
    csr = build_csr(k, name("CN=p10"), [x509.DNSName("p10.example.test")])
    req = parse_request(roundtrip(build_p10cr(csr, header=MessageHeader(sender_kid=b"ref"))))
    assert req.body_type == "p10cr"
    assert req.csr == csr
    assert req.cert_req_id == -1
    assert req.subject == name("CN=p10") == req.sender
    assert req.sans == (x509.DNSName("p10.example.test"),)
    assert req.pop_valid


def test_build_rr() -> None:
    issuer = name("CN=Issuing CA,O=tokenissue")
    req = parse_request(roundtrip(build_rr(issuer, 0x1234567890, x509.ReasonFlags.key_compromise)))
    assert req.body_type == "rr"
    (rev,) = req.revocations
    assert (rev.issuer, rev.serial, rev.reason) == (issuer, 0x1234567890, x509.ReasonFlags.key_compromise)
    (rev,) = parse_request(roundtrip(build_rr(issuer, 5))).revocations
    assert rev.reason is None


def test_build_cert_conf() -> None:
    _, cert = leaf("ed25519", ca_kind="ed25519")
    tid, nonce = b"t" * 16, b"n" * 16
    req = parse_request(roundtrip(build_cert_conf(cert, 0, header=MessageHeader(transaction_id=tid, recip_nonce=nonce))))
    (conf,) = req.confirmations
    assert req.transaction_id == tid and req.recip_nonce == nonce and req.header.pvno == 2
    # Ed25519 signatures have no hash of their own: RFC 9481 names SHA-512.
    assert conf.cert_hash == cert.fingerprint(hashes.SHA512())
    verify_cert_hash(conf, cert)
    _, other = leaf("ec-p256")
    with pytest.raises(CMPError) as e:
        verify_cert_hash(conf, other)
    assert e.value.failure_info == "badCertId"
    # A named hash needs hashAlg, which only cmp2021 has.
    req3 = parse_request(
        roundtrip(build_cert_conf(cert, 0, hash_alg=hashes.SHA384(), header=MessageHeader(transaction_id=tid, recip_nonce=nonce)))
    )
    assert req3.header.pvno == 3
    assert req3.confirmations[0].hash_alg == "2.16.840.1.101.3.4.2.2"
    verify_cert_hash(req3.confirmations[0], cert)
    rejected = parse_request(
        roundtrip(build_cert_conf(cert, failure_info="badCertTemplate", accepted=False, text="wrong name", header=MessageHeader(transaction_id=tid, recip_nonce=nonce)))
    )  # fmt: skip
    assert not rejected.confirmations[0].accepted
    assert rejected.confirmations[0].status == StatusInfo("rejection", ("badCertTemplate",), "wrong name")


def test_build_genm() -> None:
    _, root = ca("ec-p256")
    req = parse_request(roundtrip(build_genm([ID_IT_CA_CERTS], root_ca_cert=root)))
    assert req.info_types == (ID_IT_CA_CERTS, ID_IT_ROOT_CA_CERT)


@pytest.mark.parametrize(("builder", "body"), [(build_ip, "ip"), (build_cp, "cp"), (build_kup, "kup")])
def test_build_cert_responses(builder: Any, body: str) -> None:
    ca_key, ca_cert = ca("ec-p256")
    _, cert = leaf("rsa-2048")
    request = parse_request(roundtrip(build_ir(name("CN=ra"), None, key("rsa-2048", 1))))
    msg = roundtrip(protect_pbm(builder(request, cert, [ca_cert], implicit_confirm=True, sender=ca_cert.subject),
                                b"s", sender_kid=b"srv"))  # fmt: skip
    rsp = parse_response(msg)
    assert rsp.body_type == body
    assert rsp.status == StatusInfo("accepted")
    assert rsp.certificate == cert
    assert rsp.ca_pubs == (ca_cert,)
    assert rsp.cert_req_id == 0
    assert rsp.header.pvno == 2
    assert rsp.header.sender == ca_cert.subject
    assert rsp.header.recipient == request.sender
    assert rsp.transaction_id == request.transaction_id
    assert rsp.recip_nonce == request.sender_nonce
    assert rsp.sender_nonce is not None and len(rsp.sender_nonce) == 16 and rsp.sender_nonce != request.sender_nonce
    assert rsp.header.implicit_confirm
    assert rsp.header.message_time is not None
    assert abs(rsp.header.message_time - datetime.now(UTC)) < timedelta(minutes=1)
    verify_protection(msg, secret=b"s")
    rsp.raise_for_status()
    del ca_key


def test_response_uses_cmp2021_only_when_the_request_did() -> None:
    request = parse_request(roundtrip(build_genm([], header=MessageHeader(pvno=3))))
    assert parse_response(roundtrip(build_genp(request))).header.pvno == 3


def test_build_rejection_and_error() -> None:
    request = parse_request(roundtrip(build_ir(name("CN=x"), None, key("ec-p256", 5))))
    rsp = parse_response(roundtrip(build_ip(request, None, status="rejection", failure_info="badPOP", text="no")))
    assert rsp.status == StatusInfo("rejection", ("badPOP",), "no")
    assert rsp.certificate is None
    with pytest.raises(CMPError) as e:
        rsp.raise_for_status()
    assert e.value.failure_info == "badPOP"
    with pytest.raises(ValueError):
        build_ip(request, None)  # accepted needs a certificate

    err = parse_response(roundtrip(build_error(request, "badMessageCheck", "wrong MAC\x1b[31m", error_code=7)))
    assert err.body_type == "error"
    assert err.status == StatusInfo("rejection", ("badMessageCheck",), "wrong MAC [31m")
    assert err.error_code == 7
    assert err.transaction_id == request.transaction_id
    with pytest.raises(CMPError) as e:
        err.raise_for_status()
    assert e.value.failure_info == "badMessageCheck"
    assert "\x1b" not in str(e.value)

    blind = parse_response(roundtrip(build_error(None, "badDataFormat", "cannot decode")))
    assert blind.transaction_id is None and blind.recip_nonce is None


def test_build_pkiconf_rp_genp() -> None:
    request = parse_request(roundtrip(build_genm([ID_IT_CA_CERTS, ID_IT_ROOT_CA_KEY_UPDATE])))
    assert parse_response(roundtrip(build_pkiconf(request))).body_type == "pkiconf"

    rp = parse_response(
        roundtrip(build_rp(request, [StatusInfo("accepted"), StatusInfo("rejection", ("certRevoked",), "already")]))
    )
    assert rp.revocation_statuses == (StatusInfo("accepted"), StatusInfo("rejection", ("certRevoked",), "already"))
    with pytest.raises(CMPError) as e:
        rp.raise_for_status()
    assert e.value.failure_info == "certRevoked"

    _, root = ca("ec-p256")
    _, new_root = ca("ed25519")
    _, link = leaf("ec-p256")
    genp = parse_response(roundtrip(build_genp(request, ca_certs=[root, new_root],
                                               root_ca_update=RootCaUpdate(new_root, link, None))))  # fmt: skip
    assert genp.info_types == (ID_IT_CA_CERTS, ID_IT_ROOT_CA_KEY_UPDATE)
    assert genp.ca_certs == (root, new_root)
    assert genp.root_ca_update == RootCaUpdate(new_root, link, None)
    empty = parse_response(roundtrip(build_genp(request, ca_certs=[], answer_root_ca_update=True)))
    assert empty.ca_certs == () and empty.root_ca_update is None


def test_short_transaction_id_is_refused() -> None:
    with pytest.raises(CMPError) as e:
        parse_request(roundtrip(build_genm([], header=MessageHeader(transaction_id=b"short"))))
    assert e.value.failure_info == "badRequest"


def test_cmp_error() -> None:
    err = CMPError("badPOP", "The proof of possession does not verify.")
    assert not isinstance(err, TokenIssueError)  # the package stands alone; its callers translate
    assert str(err) == "The proof of possession does not verify."
    with pytest.raises(ValueError):
        CMPError("badPop", "typo")  # type: ignore[arg-type]


def test_cert_hash_uses_the_signature_hash() -> None:
    ip = parse_response(decode_message(vector("ip")))
    assert ip.certificate is not None
    assert cert_hash(ip.certificate) == ip.certificate.fingerprint(hashes.SHA256())


# Hostile input: only CMPError may come out.


def _exercise(der: bytes) -> None:
    try:
        msg = decode_message(der)
    except CMPError:
        return
    for step in (parse_request, parse_response):
        with contextlib.suppress(CMPError):
            step(msg)
    with contextlib.suppress(CMPError):
        verify_protection(msg, secret=b"s3cret")


@pytest.mark.parametrize("message", MESSAGES)
def test_every_truncation_is_a_cmp_error(message: str) -> None:
    der = vector(message)
    for end in range(len(der)):
        with pytest.raises(CMPError):
            decode_message(der[:end])


def test_every_single_byte_change_to_ir_is_detected() -> None:
    der = vector("ir")
    for i in range(len(der)):
        mutated = bytearray(der)
        mutated[i] ^= 0x01
        try:
            msg = decode_message(bytes(mutated))
            verify_protection(msg, secret=b"s3cret")
        except CMPError:
            continue
        raise AssertionError(f"flipping a bit of byte {i} went unnoticed")


FUZZ_EXAMPLES = 2000


@st.composite
def mutated_vectors(draw: st.DrawFn) -> bytes:
    data = bytearray(vector(draw(st.sampled_from(MESSAGES))))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "truncate", "insert", "delete"]))
        i = draw(st.integers(0, len(data) - 1))
        if op == "flip":
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            data[i] = draw(st.sampled_from([0x00, 0x01, 0x30, 0x7F, 0x80, 0x81, 0x82, 0x84, 0xA0, 0xFF]))
        elif op == "truncate":
            del data[i:]
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=8))
        else:
            del data[i : i + draw(st.integers(1, 8))]
        if not data:
            break
    return bytes(data)


def test_fuzz_only_cmp_errors(record_property: Any) -> None:
    """Random and mutated messages through decode, both parsers and MAC verification."""
    count = {"random": 0, "mutated": 0}

    @settings(max_examples=FUZZ_EXAMPLES // 4, deadline=None, database=None, derandomize=_IN_CI,
              suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
    @given(st.binary(max_size=600))
    def random_bytes(der: bytes) -> None:
        count["random"] += 1
        _exercise(der)

    @settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None, derandomize=_IN_CI, suppress_health_check=[HealthCheck.too_slow])
    @given(mutated_vectors())
    def mutated(der: bytes) -> None:
        count["mutated"] += 1
        _exercise(der)

    random_bytes()
    mutated()
    record_property("fuzz_inputs", count)
    print(f"fuzz inputs: {count}")
    assert count["random"] >= FUZZ_EXAMPLES // 4
    assert count["mutated"] >= FUZZ_EXAMPLES


def test_certificate_with_invalid_version_is_a_cmp_error() -> None:
    """Regression: the fuzz test found x509.InvalidVersion escaping from a caPubs certificate."""
    der = (VECTORS / "ip.der").read_bytes()
    bad = der.replace(b"\xa0\x03\x02\x01\x02", b"\xa0\x03\x02\x01\x03", 1)
    assert bad != der
    with pytest.raises(CMPError):
        parse_response(decode_message(bad))
