"""A SCEP requester for the tests' own corner cases (a bad content key under a good signature,
fuzzing): builds a PKCSReq as RFC 8894 §3.2 says. Interop is proven with scepclient and
certmonger; this only reaches what they never send."""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from pyasn1.codec.ber import decoder
from pyasn1.codec.der import decoder as der_decoder
from pyasn1.codec.der import encoder
from pyasn1.type import char, univ
from pyasn1_alt_modules import rfc5280, rfc5652, rfc8894

from tokenissue.protocols.scep._message import _attribute, _envelope, _issuer_and_serial


def requester(subject: str = "CN=scep test") -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    """An RSA key and the self-signed certificate a PKCSReq is signed with (§2.3)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name.from_rfc4514_string(subject)
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=1))
            .not_valid_after(now + timedelta(days=1)).sign(key, hashes.SHA256()))  # fmt: skip
    return key, cert


def csr_with_challenge(key: rsa.RSAPrivateKey, subject: str, challenge: str, *, sha: str = "sha256") -> bytes:
    """A PKCS#10 request with the challengePassword (``sha`` makes another CSR for the same key)."""
    digest = {"sha256": hashes.SHA256(), "sha384": hashes.SHA384()}[sha]
    csr = (x509.CertificateSigningRequestBuilder().subject_name(x509.Name.from_rfc4514_string(subject))
           .add_attribute(x509.oid.AttributeOID.CHALLENGE_PASSWORD, challenge.encode()).sign(key, digest))  # fmt: skip
    return csr.public_bytes(serialization.Encoding.DER)


def pki_message(
    data: bytes, key: rsa.RSAPrivateKey, cert: x509.Certificate, ra: x509.Certificate, *,
    message_type: int = 19, tid: str = "test-transaction", nonce: bytes | None = None, cipher: str = "aes256",
    garbage_key: bool = False,
) -> bytes:  # fmt: skip
    """A signed pkiMessage over ``data`` encrypted to ``ra``; with ``garbage_key`` the RA's
    encrypted content key is replaced by random bytes (the signature still covers it)."""
    envelope = _envelope(data, ra, cipher)
    if garbage_key:
        info, _ = decoder.decode(envelope, asn1Spec=rfc5652.ContentInfo())
        enveloped, _ = decoder.decode(bytes(info["content"]), asn1Spec=rfc5652.EnvelopedData())
        ktri = enveloped["recipientInfos"][0]["ktri"]
        ktri["encryptedKey"] = os.urandom(len(bytes(ktri["encryptedKey"])))
        info["content"] = univ.Any(encoder.encode(enveloped))
        envelope = encoder.encode(info)
    attrs = [
        _attribute(rfc5652.id_contentType, rfc5652.id_data),
        _attribute(rfc5652.id_messageDigest, univ.OctetString(hashlib.sha256(envelope).digest())),
        _attribute(rfc8894.id_transactionID, char.PrintableString(tid) if tid.isascii() else char.UTF8String(tid)),
        _attribute(rfc8894.id_messageType, char.PrintableString(str(message_type))),
        _attribute(rfc8894.id_senderNonce, univ.OctetString(nonce or os.urandom(16))),
    ]
    si = rfc5652.SignerInfo()
    si["version"] = 1
    si["sid"]["issuerAndSerialNumber"] = _issuer_and_serial(cert)
    si["digestAlgorithm"]["algorithm"] = univ.ObjectIdentifier("2.16.840.1.101.3.4.2.1")
    for a in attrs:
        si["signedAttrs"].append(a)
    si["signatureAlgorithm"]["algorithm"] = univ.ObjectIdentifier("1.2.840.113549.1.1.11")
    si["signature"] = key.sign(b"\x31" + encoder.encode(si["signedAttrs"])[1:], padding.PKCS1v15(), hashes.SHA256())
    sd = rfc5652.SignedData()
    sd["version"] = 1
    alg = sd["digestAlgorithms"].componentType.clone()
    alg["algorithm"] = univ.ObjectIdentifier("2.16.840.1.101.3.4.2.1")
    sd["digestAlgorithms"].append(alg)
    sd["encapContentInfo"]["eContentType"] = rfc5652.id_data
    sd["encapContentInfo"]["eContent"] = sd["encapContentInfo"]["eContent"].clone(envelope)
    choice = rfc5652.CertificateChoices()
    choice["certificate"], _ = der_decoder.decode(cert.public_bytes(serialization.Encoding.DER), asn1Spec=rfc5280.Certificate())
    sd["certificates"].append(choice)
    sd["signerInfos"].append(si)
    out = rfc5652.ContentInfo()
    out["contentType"] = rfc5652.id_signedData
    out["content"] = univ.Any(encoder.encode(sd))
    der: bytes = encoder.encode(out)
    return der


def cert_rep_attributes(der: bytes) -> dict[str, Any]:
    """The SCEP attributes of a CertRep (for the tests' checks): names to decoded values."""
    info, _ = decoder.decode(der, asn1Spec=rfc5652.ContentInfo())
    sd, _ = decoder.decode(bytes(info["content"]), asn1Spec=rfc5652.SignedData())
    names = {str(rfc8894.id_pkiStatus): "pkiStatus", str(rfc8894.id_failInfo): "failInfo",
             str(rfc8894.id_transactionID): "transactionID", str(rfc8894.id_recipientNonce): "recipientNonce",
             str(rfc8894.id_scep_failInfoText): "failInfoText"}  # fmt: skip
    out: dict[str, Any] = {}
    for attr in sd["signerInfos"][0]["signedAttrs"]:
        name = names.get(str(attr["attrType"]))
        if name:
            value, _ = decoder.decode(bytes(attr["attrValues"][0]))
            out[name] = bytes(value) if name == "recipientNonce" else str(value)
    return out
