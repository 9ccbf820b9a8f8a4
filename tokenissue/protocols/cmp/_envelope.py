"""Confidential values inside a MAC-protected message: CMS EnvelopedData for a password.

A request protected by a password-based MAC has a shared secret (the registration's
authorization code) and nothing else the two ends both know. RFC 9483 §4.1.6.3 encrypts with
that secret for the same case (central key generation): CMS EnvelopedData (RFC 5652) with one
PasswordRecipientInfo (RFC 3211), the key-encryption key derived with PBKDF2 (RFC 8018). This
module builds and opens exactly that shape::

    ContentInfo { id-envelopedData, EnvelopedData {
        version 3, recipientInfos { pwri {
            version 0,
            keyDerivationAlgorithm  PBKDF2 { salt 16 octets, iterationCount, keyLength 32, hmacWithSHA256 },
            keyEncryptionAlgorithm  id-alg-PWRI-KEK { aes256-CBC, IV },   -- RFC 3211 §2.3
            encryptedKey } },
        encryptedContentInfo { id-data, aes256-CBC { IV }, encryptedContent } } }

OpenSSL reads and writes the same (``openssl cms -encrypt/-decrypt -pwri_password``); the
tests check both directions. Opening accepts PBKDF2 with HMAC-SHA1 (OpenSSL's default PRF) or
HMAC-SHA256, and AES-128/192/256-CBC; every other choice is refused.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any, Final

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from pyasn1.codec.der import encoder
from pyasn1.type import univ
from pyasn1_alt_modules import rfc5280, rfc5652, rfc8018

from ._der import decode_strict, is_present, oid_str
from ._errors import CMPError, SharedSecret

__all__ = ["open_with_password", "seal_with_password"]

ID_ALG_PWRI_KEK: Final = "1.2.840.113549.1.9.16.3.9"
_AES_CBC: Final = {
    "2.16.840.1.101.3.4.1.2": 16,  # aes128-CBC
    "2.16.840.1.101.3.4.1.22": 24,  # aes192-CBC
    "2.16.840.1.101.3.4.1.42": 32,  # aes256-CBC
}
_AES256_CBC: Final = "2.16.840.1.101.3.4.1.42"
_PRFS: Final = {"1.2.840.113549.2.7": "sha1", "1.2.840.113549.2.9": "sha256"}
_HMAC_SHA256: Final = "1.2.840.113549.2.9"
#: The secret is a 100-bit authorization code, not a word a person chose: the iterations
#: guard nothing that the code's entropy does not. The cap keeps a peer from making the
#: server spin.
ITERATIONS: Final = 10_000
MAX_ITERATIONS: Final = 100_000
_BLOCK: Final = 16


def _cbc(key: bytes, iv: bytes, data: bytes, *, encrypt: bool) -> bytes:
    cipher = Cipher(algorithms.AES(key), modes.CBC(iv))
    ctx = cipher.encryptor() if encrypt else cipher.decryptor()
    return ctx.update(data) + ctx.finalize()


def _kek_wrap(kek: bytes, iv: bytes, cek: bytes) -> bytes:
    """RFC 3211 §2.3.1: length, check bytes, CEK, random padding to whole blocks (two at
    least), encrypted in CBC twice, the second time chained from the first's last block."""
    formatted = bytes([len(cek)]) + bytes(b ^ 0xFF for b in cek[:3]) + cek
    size = max(2 * _BLOCK, -(-len(formatted) // _BLOCK) * _BLOCK)
    formatted += os.urandom(size - len(formatted))
    first = _cbc(kek, iv, formatted, encrypt=True)
    return _cbc(kek, first[-_BLOCK:], first, encrypt=True)


def _kek_unwrap(kek: bytes, iv: bytes, wrapped: bytes) -> bytes | None:
    """The CEK RFC 3211 §2.3.2 recovers, or None if the check bytes say the password is wrong."""
    if len(wrapped) < 2 * _BLOCK or len(wrapped) % _BLOCK:
        return None
    last = _cbc(kek, wrapped[-2 * _BLOCK : -_BLOCK], wrapped[-_BLOCK:], encrypt=False)
    inner = _cbc(kek, last, wrapped[:-_BLOCK], encrypt=False) + last
    formatted = _cbc(kek, iv, inner, encrypt=False)
    n = formatted[0]
    if any(formatted[1 + i] ^ formatted[4 + i] != 0xFF for i in range(3)) or not 3 <= n <= len(formatted) - 4:
        return None
    return formatted[4 : 4 + n]


def _pbkdf2(secret: SharedSecret, salt: bytes, iterations: int, hash_name: str, length: int) -> bytes:
    return hashlib.pbkdf2_hmac(hash_name, secret.reveal(), salt, iterations, length)


def _algorithm(oid: str, params: bytes | None) -> Any:
    alg = rfc5280.AlgorithmIdentifier()
    alg["algorithm"] = univ.ObjectIdentifier(oid)
    if params is not None:
        alg["parameters"] = univ.Any(params)
    return alg


def seal_with_password(plaintext: bytes, secret: SharedSecret, *, iterations: int = ITERATIONS) -> bytes:
    """The DER of a ContentInfo holding ``plaintext`` in EnvelopedData for ``secret``."""
    cek, content_iv, kek_iv, salt = os.urandom(32), os.urandom(16), os.urandom(16), os.urandom(16)
    kdf = rfc8018.PBKDF2_params()
    kdf["salt"]["specified"] = salt
    kdf["iterationCount"] = iterations
    kdf["keyLength"] = 32
    kdf["prf"] = _algorithm(_HMAC_SHA256, encoder.encode(univ.Null()))
    kek = _pbkdf2(secret, salt, iterations, "sha256", 32)

    info = rfc5652.RecipientInfo()
    pwri = info["pwri"]  # the [3]-tagged alternative, filled in place
    pwri["version"] = 0
    derivation = pwri["keyDerivationAlgorithm"]
    derivation["algorithm"] = univ.ObjectIdentifier(str(rfc8018.id_PBKDF2))
    derivation["parameters"] = univ.Any(encoder.encode(kdf))
    inner = _algorithm(_AES256_CBC, encoder.encode(univ.OctetString(kek_iv)))
    pwri["keyEncryptionAlgorithm"] = _algorithm(ID_ALG_PWRI_KEK, encoder.encode(inner))
    pwri["encryptedKey"] = _kek_wrap(kek, kek_iv, cek)

    padder = padding.PKCS7(128).padder()
    padded = padder.update(plaintext) + padder.finalize()
    env = rfc5652.EnvelopedData()
    env["version"] = 3  # RFC 5652 §6.1: a pwri makes it 3
    env["recipientInfos"].append(info)
    eci = env["encryptedContentInfo"]
    eci["contentType"] = rfc5652.id_data
    eci["contentEncryptionAlgorithm"] = _algorithm(_AES256_CBC, encoder.encode(univ.OctetString(content_iv)))
    eci["encryptedContent"] = _cbc(cek, content_iv, padded, encrypt=True)

    content_info = rfc5652.ContentInfo()
    content_info["contentType"] = rfc5652.id_envelopedData
    content_info["content"] = univ.Any(encoder.encode(env))
    return bytes(encoder.encode(content_info))


def _refuse(what: str) -> CMPError:
    return CMPError("badDataFormat", f"The encrypted value {what}.")


def _iv_of(alg: Any) -> tuple[int, bytes]:
    """The key length and IV of an AES-CBC AlgorithmIdentifier."""
    size = _AES_CBC.get(oid_str(alg["algorithm"]))
    if size is None or not is_present(alg["parameters"]):
        raise _refuse("uses a cipher other than AES-CBC")
    iv = bytes(decode_strict(bytes(alg["parameters"]), univ.OctetString(), "cipher IV"))
    if len(iv) != _BLOCK:
        raise _refuse("has an IV that is not 16 octets")
    return size, iv


def open_with_password(der: bytes, secret: SharedSecret) -> bytes:
    """The plaintext of :func:`seal_with_password`'s ContentInfo (or OpenSSL's).

    CMPError badDataFormat for anything malformed or not of the shape above;
    badMessageCheck when it does not open with ``secret``.
    """
    content_info = decode_strict(der, rfc5652.ContentInfo(), "encrypted value")
    if oid_str(content_info["contentType"]) != str(rfc5652.id_envelopedData):
        raise _refuse("is not CMS EnvelopedData")
    env = decode_strict(bytes(content_info["content"]), rfc5652.EnvelopedData(), "EnvelopedData")
    pwris = [ri["pwri"] for ri in env["recipientInfos"] if ri.getName() == "pwri"]
    if len(pwris) != 1 or len(env["recipientInfos"]) != 1:
        raise _refuse("must have exactly one password recipient")
    pwri = pwris[0]
    derivation = pwri["keyDerivationAlgorithm"]
    if not is_present(derivation) or oid_str(derivation["algorithm"]) != str(rfc8018.id_PBKDF2):
        raise _refuse("must derive its key with PBKDF2")
    kdf = decode_strict(bytes(derivation["parameters"]), rfc8018.PBKDF2_params(), "PBKDF2 parameters")
    if kdf["salt"].getName() != "specified":
        raise _refuse("must give its PBKDF2 salt")
    iterations = int(kdf["iterationCount"])
    if not 1 <= iterations <= MAX_ITERATIONS:
        raise _refuse(f"asks for {iterations} PBKDF2 iterations (at most {MAX_ITERATIONS})")
    prf = _PRFS.get(oid_str(kdf["prf"]["algorithm"]))
    if prf is None:
        raise _refuse("uses a PBKDF2 PRF other than HMAC-SHA1 or HMAC-SHA256")
    wrap = pwri["keyEncryptionAlgorithm"]
    if oid_str(wrap["algorithm"]) != ID_ALG_PWRI_KEK or not is_present(wrap["parameters"]):
        raise _refuse("must wrap its key with id-alg-PWRI-KEK")
    kek_size, kek_iv = _iv_of(decode_strict(bytes(wrap["parameters"]), rfc5280.AlgorithmIdentifier(), "key wrap cipher"))
    if is_present(kdf["keyLength"]) and int(kdf["keyLength"]) != kek_size:
        raise _refuse("has a PBKDF2 key length that does not fit its cipher")
    kek = _pbkdf2(secret, bytes(kdf["salt"]["specified"]), iterations, prf, kek_size)
    eci = env["encryptedContentInfo"]
    if oid_str(eci["contentType"]) != str(rfc5652.id_data) or not is_present(eci["encryptedContent"]):
        raise _refuse("must hold data")
    cek_size, content_iv = _iv_of(eci["contentEncryptionAlgorithm"])
    cek = _kek_unwrap(kek, kek_iv, bytes(pwri["encryptedKey"]))
    if cek is None or len(cek) != cek_size:
        raise CMPError("badMessageCheck", "The encrypted value does not open with this shared secret.")
    ciphertext = bytes(eci["encryptedContent"])
    if not ciphertext or len(ciphertext) % _BLOCK:
        raise _refuse("is not whole cipher blocks")
    padded = _cbc(cek, content_iv, ciphertext, encrypt=False)
    unpadder = padding.PKCS7(128).unpadder()
    try:
        return unpadder.update(padded) + unpadder.finalize()
    except ValueError:
        raise CMPError("badMessageCheck", "The encrypted value does not open with this shared secret.") from None
