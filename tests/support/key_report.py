"""What the token itself says and does with a key pair, asked through python-pkcs11 and never
through tokenissue: its flags, and whether its private key really decrypts (or agrees on a key)
whatever the flags claim. Where implementations legitimately differ, tests compare what
tokenissue reports with this. ``key_report_main`` is the same from a process of its own
(TokenImpl.key_attributes), so this module imports nothing heavy at the top.
"""

from __future__ import annotations

import json
import sys
from typing import Any

_KEY_FLAGS = ("DECRYPT", "UNWRAP", "DERIVE", "SIGN", "SENSITIVE", "EXTRACTABLE", "ENCRYPT", "WRAP", "VERIFY")


def key_report(session: Any, label: str, names: tuple[str, ...] = _KEY_FLAGS) -> dict[str, bool | str]:
    """What the token itself says and does with the key pair ``label``, through a python-pkcs11
    session (never through tokenissue): {"private.DECRYPT": True, ..., "decrypts": False}.

    An attribute the token refuses to show gives the exception's name. "decrypts" is whether the
    private key really decrypts (RSA: CKM_RSA_PKCS and OAEP, as offered) or agrees on a key
    (EC: CKM_ECDH1_DERIVE, as offered) when asked to, whatever its flags claim."""
    import pkcs11
    from pkcs11 import Attribute, ObjectClass

    out: dict[str, bool | str] = {}
    objs: dict[str, Any] = {}
    for cls, kind in ((ObjectClass.PRIVATE_KEY, "private"), (ObjectClass.PUBLIC_KEY, "public")):
        found = list(session.get_objects({Attribute.CLASS: cls, Attribute.LABEL: label}))
        assert len(found) == 1, f"{len(found)} {kind} keys labelled {label!r}"
        objs[kind] = found[0]
        for name in names:
            try:
                out[f"{kind}.{name}"] = bool(found[0][Attribute[name]])
            except pkcs11.exceptions.PKCS11Error as e:
                out[f"{kind}.{name}"] = type(e).__name__
    out["decrypts"] = _really_decrypts(session, objs["private"], objs["public"])
    return out


def _really_decrypts(session: Any, priv: Any, pub: Any) -> bool:
    import pkcs11
    import pkcs11._pkcs11 as _p11impl
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
    from pkcs11 import KDF, Attribute, Mechanism
    from pkcs11 import KeyType as P11KeyType

    offered = set(session.token.slot.get_mechanisms())
    # python-pkcs11 gives a key object only the methods its flags allow (no decrypt() without
    # CKA_DECRYPT): the same object with all of them, for the question is what the token does.
    asking: Any = type("AskingPrivateKey", (_p11impl.PrivateKey, _p11impl.DecryptMixin, _p11impl.DeriveMixin,
                                            _p11impl.Object), {})(priv.wrapper)  # fmt: skip
    secret = b"only the key holder reads this"
    if priv.key_type == P11KeyType.RSA:
        n, e = (int.from_bytes(bytes(pub[a]), "big") for a in (Attribute.MODULUS, Attribute.PUBLIC_EXPONENT))
        host = rsa.RSAPublicNumbers(e, n).public_key()
        tries = []
        if Mechanism.RSA_PKCS in offered:
            tries.append((Mechanism.RSA_PKCS, host.encrypt(secret, padding.PKCS1v15())))
        if Mechanism.RSA_PKCS_OAEP in offered:  # python-pkcs11's default OAEP parameters: SHA-1
            oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None)  # noqa: S303
            tries.append((Mechanism.RSA_PKCS_OAEP, host.encrypt(secret, oaep)))
        for mech, ciphertext in tries:
            try:
                if asking.decrypt(ciphertext, mechanism=mech) == secret:
                    return True
            except pkcs11.exceptions.PKCS11Error:
                pass
        return False
    if priv.key_type == P11KeyType.EC and Mechanism.ECDH1_DERIVE in offered:
        curve = {bytes.fromhex("06082a8648ce3d030107"): ec.SECP256R1(), bytes.fromhex("06052b81040022"): ec.SECP384R1()}
        peer = ec.generate_private_key(curve[bytes(pub[Attribute.EC_PARAMS])]).public_key()
        point = peer.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
        try:
            asking.derive_key(P11KeyType.GENERIC_SECRET, 256, mechanism=Mechanism.ECDH1_DERIVE,
                              mechanism_param=(KDF.NULL, None, point))  # fmt: skip
        except pkcs11.exceptions.PKCS11Error:
            return False
        return True
    return False  # Ed25519: PKCS#11 has no way to decrypt with it


def key_report_main() -> None:
    """``python -c``: print key_report for argv module, token, pin, label (TokenImpl.key_attributes)."""
    import pkcs11

    module, token, pin, label = sys.argv[1:5]
    with pkcs11.lib(module).get_token(token_label=token).open(user_pin=pin) as session:
        print(json.dumps(key_report(session, label)))
