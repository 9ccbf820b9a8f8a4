"""A key that clients encrypt to (the SCEP RA's, issue 14): RSA, made on the token able to
decrypt with CKM_RSA_PKCS and to sign, sensitive and never extractable; a holder's signing key
made by generate_key cannot be used to decrypt on a token that makes sign-only keys."""

from __future__ import annotations

import contextlib
import os

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from tokenissue import p11
from tokenissue.credentials import Pin
from tokenissue.errors import TokenError, UsageError
from tokenissue.models import KeyType

from support.cli import USER_PIN
from support.token_impls import TokenImpl, on_impls

SEL = p11.TokenSelector.parse("test")


@on_impls("softhsm", "softhsm-raw", "tpm2")
def test_a_decryption_key_decrypts_and_signs_on_the_token(session_token_impl: TokenImpl) -> None:
    impl = session_token_impl
    with p11.open_token(SEL, Pin(USER_PIN), module=impl.module) as s:
        info = s.generate_decryption_key(KeyType.RSA_2048, f"ra-{os.getpid()}")
        try:
            assert info.sensitive and not info.extractable and info.can_decrypt
            key = s.private_key(p11.KeySelector(id=info.id))
            decryptor = s.decryptor(p11.KeySelector(id=info.id))
            cek = os.urandom(32)
            wrapped = key.public_key().encrypt(cek, padding.PKCS1v15())
            assert decryptor.decrypt(wrapped) == cek
            # Not a PKCS#1 block for this key: None, and the key goes on working (tpm2-pkcs11
            # leaves the failed operation active in its session; the decryptor takes a new one).
            assert decryptor.decrypt(os.urandom(256)) is None
            assert decryptor.decrypt(wrapped) == cek
            sig = key.sign(b"message", padding.PKCS1v15(), hashes.SHA256())
            key.public_key().verify(sig, b"message", padding.PKCS1v15(), hashes.SHA256())
            with pytest.raises(UsageError):
                s.generate_decryption_key(KeyType.EC_P256, "ec-decrypt")
        finally:
            # tpm2-pkcs11 cannot destroy a key in the process that had an operation on it fail
            # (TOKENS.md); the label is this process's own, so a key left there harms no test.
            with contextlib.suppress(TokenError):
                s.delete_key(p11.KeySelector(id=info.id))


@on_impls("softhsm")  # tpm2-pkcs11 makes every key able to decrypt (TOKENS.md)
def test_a_signing_key_does_not_decrypt(session_token_impl: TokenImpl) -> None:
    impl = session_token_impl
    with p11.open_token(SEL, Pin(USER_PIN), module=impl.module) as s:
        info = s.generate_key(KeyType.RSA_2048, f"sig-{os.getpid()}")
        try:
            with pytest.raises(TokenError, match="sign only"):
                s.decryptor(p11.KeySelector(id=info.id))
        finally:
            s.delete_key(p11.KeySelector(id=info.id))
