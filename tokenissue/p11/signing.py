"""Signing inside the token, exposed to cryptography as ordinary private-key objects.

cryptography has no external-signature API, but its CSR, certificate and CRL builders accept a
subclass of ``RSAPrivateKey`` / ``EllipticCurvePrivateKey`` / ``Ed25519PrivateKey`` whose
``sign()`` we implement (advice of the maintainers in pyca/cryptography#11616). The classes
here forward ``sign()`` to the token and refuse everything that would need the private key
itself.

Mechanisms are chosen from the token's own list (:func:`plan_signature`): the combined
hash-and-sign mechanism when the token offers it, else the host hashes and the token signs the
digest with raw CKM_ECDSA, CKM_RSA_PKCS (over a DigestInfo) or CKM_RSA_PKCS_PSS. SoftHSM 2.6.1
has no CKM_ECDSA_SHA256 at all, and many USB tokens offer only the raw mechanisms.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa, utils
from pkcs11 import MGF, Mechanism

from ..errors import MechanismUnsupported, TokenError
from ..models import KeyAlgorithm

__all__ = [
    "SignaturePlan",
    "TokenECPrivateKey",
    "TokenEd25519PrivateKey",
    "TokenRSAPrivateKey",
    "plan_signature",
]

# DER prefixes of DigestInfo (RFC 8017 §9.2 note 1): prefix || digest is what CKM_RSA_PKCS signs.
_DIGEST_INFO = {
    "sha256": bytes.fromhex("3031300d060960864801650304020105000420"),
    "sha384": bytes.fromhex("3041300d060960864801650304020205000430"),
    "sha512": bytes.fromhex("3051300d060960864801650304020305000440"),
}
_HASH_MECH = {"sha256": Mechanism.SHA256, "sha384": Mechanism.SHA384, "sha512": Mechanism.SHA512}
_MGF = {"sha256": MGF.SHA256, "sha384": MGF.SHA384, "sha512": MGF.SHA512}
_ECDSA_COMBINED = {
    "sha256": Mechanism.ECDSA_SHA256,
    "sha384": Mechanism.ECDSA_SHA384,
    "sha512": Mechanism.ECDSA_SHA512,
}
_RSA_COMBINED = {
    "sha256": Mechanism.SHA256_RSA_PKCS,
    "sha384": Mechanism.SHA384_RSA_PKCS,
    "sha512": Mechanism.SHA512_RSA_PKCS,
}
_PSS_COMBINED = {
    "sha256": Mechanism.SHA256_RSA_PKCS_PSS,
    "sha384": Mechanism.SHA384_RSA_PKCS_PSS,
    "sha512": Mechanism.SHA512_RSA_PKCS_PSS,
}
_HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}


@dataclass(frozen=True)
class SignaturePlan:
    """How one signature is made: which mechanism, and whether the host hashes first."""

    mechanism: Any
    host_hash: str | None  # hash name the host applies first, or None
    digest_info: bool = False  # wrap the host digest in DigestInfo (CKM_RSA_PKCS)
    mechanism_param: Any = None
    der_ecdsa: bool = False  # convert the token's raw r||s to DER


def plan_signature(
    algorithm: KeyAlgorithm,
    hash_name: str | None,
    mechanisms: set[Any],
    *,
    pss_salt: int | None = None,
) -> SignaturePlan:
    """Choose the mechanism for one signature from what the token offers."""
    if algorithm is KeyAlgorithm.ED25519:
        if Mechanism.EDDSA in mechanisms:
            return SignaturePlan(Mechanism.EDDSA, None)
        raise MechanismUnsupported("The token offers no CKM_EDDSA, so it cannot sign with Ed25519.")
    if hash_name not in _DIGEST_INFO:
        raise MechanismUnsupported(f"Hash '{hash_name}' is not supported for token signatures.")
    assert hash_name is not None
    if algorithm is KeyAlgorithm.EC:
        if _ECDSA_COMBINED[hash_name] in mechanisms:
            return SignaturePlan(_ECDSA_COMBINED[hash_name], None, der_ecdsa=True)
        if Mechanism.ECDSA in mechanisms:
            return SignaturePlan(Mechanism.ECDSA, hash_name, der_ecdsa=True)
        raise MechanismUnsupported("The token offers neither CKM_ECDSA nor a combined ECDSA mechanism.")
    if pss_salt is not None:
        param = (_HASH_MECH[hash_name], _MGF[hash_name], pss_salt)
        if _PSS_COMBINED[hash_name] in mechanisms:
            return SignaturePlan(_PSS_COMBINED[hash_name], None, mechanism_param=param)
        if Mechanism.RSA_PKCS_PSS in mechanisms:
            return SignaturePlan(Mechanism.RSA_PKCS_PSS, hash_name, mechanism_param=param)
        raise MechanismUnsupported("The token offers no RSA-PSS mechanism.")
    if _RSA_COMBINED[hash_name] in mechanisms:
        return SignaturePlan(_RSA_COMBINED[hash_name], None)
    if Mechanism.RSA_PKCS in mechanisms:
        return SignaturePlan(Mechanism.RSA_PKCS, hash_name, digest_info=True)
    raise MechanismUnsupported("The token offers neither CKM_RSA_PKCS nor a combined RSA mechanism.")


class _TokenSigner:
    """The token half: a private key object, its module lock and the token's mechanism list."""

    def __init__(self, key: Any, lock: Any, mechanisms: set[Any], algorithm: KeyAlgorithm) -> None:
        self.key = key
        self.lock = lock
        self.mechanisms = mechanisms
        self.algorithm = algorithm

    def sign(self, data: bytes, hash_name: str | None, *, prehashed: bool, pss_salt: int | None = None) -> bytes:
        from ._errors import translate

        plan = plan_signature(self.algorithm, hash_name, self.mechanisms, pss_salt=pss_salt)
        payload = data
        if plan.host_hash is not None and not prehashed:
            h = hashes.Hash(_HASHES[plan.host_hash]())
            h.update(data)
            payload = h.finalize()
        elif prehashed and plan.host_hash is None and self.algorithm is not KeyAlgorithm.ED25519:
            # The data is a digest but the plan wanted to hash inside the token: use the raw
            # mechanism instead so the digest is not hashed twice.
            raw = plan_signature(self.algorithm, hash_name, self.mechanisms - set(_ALL_COMBINED), pss_salt=pss_salt)
            plan = raw
        if plan.digest_info:
            assert plan.host_hash is not None
            payload = _DIGEST_INFO[plan.host_hash] + payload
        with self.lock, translate("sign"):
            sig: bytes = self.key.sign(payload, mechanism=plan.mechanism, mechanism_param=plan.mechanism_param)
        if plan.der_ecdsa:
            half = len(sig) // 2
            return utils.encode_dss_signature(int.from_bytes(sig[:half], "big"), int.from_bytes(sig[half:], "big"))
        return sig


_ALL_COMBINED = list(_ECDSA_COMBINED.values()) + list(_RSA_COMBINED.values()) + list(_PSS_COMBINED.values())


def _hash_of(algorithm: Any) -> tuple[str, bool]:
    if isinstance(algorithm, utils.Prehashed):
        return algorithm._algorithm.name, True
    return algorithm.name, False


def _no_export(*_: Any, **__: Any) -> NoReturn:
    raise TokenError("The private key lives on the token and cannot be exported or used for that.")


class TokenRSAPrivateKey(rsa.RSAPrivateKey):
    """An RSA key on a token. Only :meth:`sign` and :meth:`public_key` work."""

    def __init__(self, signer: _TokenSigner, public: rsa.RSAPublicKey) -> None:
        self._signer = signer
        self._public = public

    def sign(self, data: bytes, padding: padding.AsymmetricPadding, algorithm: Any) -> bytes:
        from cryptography.hazmat.primitives.asymmetric import padding as pad

        name, prehashed = _hash_of(algorithm)
        salt = None
        if isinstance(padding, pad.PSS):
            raw_salt = padding._salt_length
            digest_len = _HASHES[name]().digest_size if name in _HASHES else 32
            if isinstance(raw_salt, int):
                salt = raw_salt
            elif isinstance(raw_salt, pad._MaxLength):
                # RFC 8017 §9.1.1: emLen - hLen - 2, with emLen = ceil((modBits - 1) / 8).
                salt = (self.key_size - 1 + 7) // 8 - digest_len - 2
            elif isinstance(raw_salt, pad._DigestLength):
                salt = digest_len
            else:
                raise MechanismUnsupported("PSS with an automatic salt length cannot be signed on a token.")
        elif not isinstance(padding, pad.PKCS1v15):
            raise MechanismUnsupported("Only PKCS#1 v1.5 and PSS signatures are made on the token.")
        return self._signer.sign(data, name, prehashed=prehashed, pss_salt=salt)

    def public_key(self) -> rsa.RSAPublicKey:
        return self._public

    @property
    def key_size(self) -> int:
        return self._public.key_size

    decrypt = _no_export
    private_numbers = _no_export
    private_bytes = _no_export

    def __copy__(self) -> TokenRSAPrivateKey:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> TokenRSAPrivateKey:
        return self


class TokenECPrivateKey(ec.EllipticCurvePrivateKey):
    """An EC key on a token. Only :meth:`sign` and :meth:`public_key` work."""

    def __init__(self, signer: _TokenSigner, public: ec.EllipticCurvePublicKey) -> None:
        self._signer = signer
        self._public = public

    def sign(self, data: bytes, signature_algorithm: ec.EllipticCurveSignatureAlgorithm) -> bytes:  # type: ignore[override]
        if not isinstance(signature_algorithm, ec.ECDSA):
            raise MechanismUnsupported("Only ECDSA signatures are made on the token.")
        name, prehashed = _hash_of(signature_algorithm.algorithm)
        return self._signer.sign(data, name, prehashed=prehashed)

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._public

    @property
    def curve(self) -> ec.EllipticCurve:
        return self._public.curve

    @property
    def key_size(self) -> int:
        return self._public.key_size

    exchange = _no_export
    private_numbers = _no_export
    private_bytes = _no_export

    def __copy__(self) -> TokenECPrivateKey:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> TokenECPrivateKey:
        return self


class TokenEd25519PrivateKey(ed25519.Ed25519PrivateKey):
    """An Ed25519 key on a token. Only :meth:`sign` and :meth:`public_key` work."""

    def __init__(self, signer: _TokenSigner, public: ed25519.Ed25519PublicKey) -> None:
        self._signer = signer
        self._public = public

    def sign(self, data: bytes) -> bytes:  # type: ignore[override]
        return self._signer.sign(data, None, prehashed=False)

    def public_key(self) -> ed25519.Ed25519PublicKey:
        return self._public

    private_bytes = _no_export
    private_bytes_raw = _no_export

    def __copy__(self) -> TokenEd25519PrivateKey:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> TokenEd25519PrivateKey:
        return self


TokenPrivateKey = TokenRSAPrivateKey | TokenECPrivateKey | TokenEd25519PrivateKey


def make_private_key(key: Any, lock: Any, mechanisms: set[Any], public: Any) -> TokenPrivateKey:
    """Wrap a python-pkcs11 private key object for cryptography's builders."""
    if isinstance(public, rsa.RSAPublicKey):
        return TokenRSAPrivateKey(_TokenSigner(key, lock, mechanisms, KeyAlgorithm.RSA), public)
    if isinstance(public, ec.EllipticCurvePublicKey):
        return TokenECPrivateKey(_TokenSigner(key, lock, mechanisms, KeyAlgorithm.EC), public)
    if isinstance(public, ed25519.Ed25519PublicKey):
        return TokenEd25519PrivateKey(_TokenSigner(key, lock, mechanisms, KeyAlgorithm.ED25519), public)
    raise MechanismUnsupported(f"Keys of type {type(public).__name__} are not supported.")
