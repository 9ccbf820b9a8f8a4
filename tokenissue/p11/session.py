"""Operations on one logged-in token: keys, certificates, PINs.

Nothing here assumes a permissive token. Key templates are negotiated with the token (strict
sign-only first, then the documented steps of :data:`._capabilities.KEY_TEMPLATE_STEPS`), the
new key's attributes are read back, optional certificate attributes the token refuses are left
out, and key sizes it cannot make are refused before anything is written. What each token
accepted is kept in its capability record (:class:`._capabilities.Capabilities`).

Key IDs: when the user gives no ``--id``, a key's CKA_ID is the SHA-1 of its public key's
subjectPublicKey BIT STRING (RFC 5280 §4.2.1.2, method 1) — the same value cryptography and
OpenSSL put in the certificate's SubjectKeyIdentifier. The key is generated under a random
provisional ID, which is replaced at once; a token that refuses to change CKA_ID keeps the
random one. Certificates are written under their key's CKA_ID and CKA_LABEL, which is how
pkcs11-tool, p11tool, OpenSSL's engine and browsers pair them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import replace
from typing import Any

import pkcs11
import pkcs11.exceptions as px
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from pkcs11 import Attribute, CertificateType, Mechanism, MechanismFlag, ObjectClass
from pkcs11 import KeyType as P11KeyType

from ..credentials import Pin, ProtectedAuth
from ..errors import (
    KeyNotFound,
    KeyUsageForced,
    MechanismUnsupported,
    ObjectExists,
    ProvenanceError,
    Remedy,
    TokenError,
    TokenIssueError,
    TokenNotFound,
    UsageError,
)
from ..models import CertObject, KeyAlgorithm, KeyInfo, KeyType, TokenInfo
from ..publickeys import spki_der
from ._capabilities import (
    KEY_TEMPLATE_STEPS,
    OPTIONAL_CERT_ATTRIBUTES,
    TEMPLATE_REFUSALS,
    Capabilities,
    TemplateStep,
    decrypting_mechanisms,
    signing_mechanisms,
)
from ._errors import translate
from ._module import Module, _rv, load_module
from .signing import TokenPrivateKey, make_private_key
from .uri import KeySelector, TokenSelector

__all__ = ["TokenSession", "open_token"]

# DER of EC_PARAMS (namedCurve OIDs) and the raw point sizes that go with them.
_EC_PARAMS = {
    "secp256r1": bytes.fromhex("06082a8648ce3d030107"),
    "secp384r1": bytes.fromhex("06052b81040022"),
}
_ED25519_PARAMS = (
    bytes.fromhex("06032b6570"),  # id-Ed25519 OID (SoftHSM, PKCS#11 3.0)
    b"\x13\x0cedwards25519",  # PrintableString form some tokens use
)
_CURVES: dict[bytes, tuple[ec.EllipticCurve, int, KeyType]] = {
    _EC_PARAMS["secp256r1"]: (ec.SECP256R1(), 65, KeyType.EC_P256),
    _EC_PARAMS["secp384r1"]: (ec.SECP384R1(), 97, KeyType.EC_P384),
}


@contextmanager
def open_token(
    selector: TokenSelector,
    pin: Pin | ProtectedAuth | None = None,
    *,
    module: str | None = None,
    so: bool = False,
) -> Iterator[TokenSession]:
    """Open the token ``selector`` names, logged in as user (or SO) when a PIN is given."""
    mod = load_module(module)
    with mod.session(selector, pin, so=so) as raw:
        with mod.lock:
            info = mod.token_info(selector)
        yield TokenSession(mod, raw, info)


def _unwrap_point(data: bytes, raw_len: int) -> bytes:
    """CKA_EC_POINT is a DER OCTET STRING per the spec, but some tokens return the raw point."""
    if len(data) == raw_len:
        return data
    if data[:1] == b"\x04":
        n = data[1]
        if n < 0x80:
            return data[2 : 2 + n]
        k = n & 0x7F
        return data[2 + k :]
    raise TokenError("The token returned a malformed EC point.")


class TokenSession:
    """A session on one token. Every PKCS#11 call holds the module lock."""

    def __init__(self, module: Module, session: Any, info: TokenInfo) -> None:
        self.module = module
        self.lock = module.lock
        self._session = session
        self.info = info
        self._mechanisms: set[Any] | None = None

    # -- token-wide ------------------------------------------------------------------------
    @property
    def mechanisms(self) -> set[Any]:
        if self._mechanisms is None:
            with self.lock, translate("list its mechanisms"):
                self._mechanisms = set(self._session.token.slot.get_mechanisms())
        return self._mechanisms

    def mechanism_names(self) -> list[str]:
        return sorted(getattr(m, "name", hex(int(m))) for m in self.mechanisms)

    def change_pin(self, old: Pin, new: Pin) -> None:
        with self.lock, translate("change the PIN"):
            try:
                self._session.set_pin(old.reveal(), new.reveal())
            except px.PinIncorrect:
                raise self.module._pin_incorrect(self._session.token, so=False, label=self.info.label) from None

    def init_user_pin(self, new: Pin) -> None:
        """Set a new user PIN (SO session): unblocks a locked PIN."""
        with self.lock, translate("set the user PIN"):
            self._session.init_pin(new.reveal())

    # -- keys ------------------------------------------------------------------------------
    def _private_objects(self, sel: KeySelector | None = None) -> list[Any]:
        attrs: dict[Any, Any] = {Attribute.CLASS: ObjectClass.PRIVATE_KEY}
        if sel is not None and sel.id is not None:
            attrs[Attribute.ID] = sel.id
        if sel is not None and sel.label is not None:
            attrs[Attribute.LABEL] = sel.label
        with self.lock, translate("list keys"):
            return list(self._session.get_objects(attrs))

    def _one_private(self, sel: KeySelector) -> Any:
        found = self._private_objects(sel)
        if not found:
            raise KeyNotFound(f"No private key '{sel}' on token '{self.info.label}'.", remedy=Remedy.LIST_KEYS)
        if len(found) > 1:
            raise UsageError(f"{len(found)} keys match '{sel}' on token '{self.info.label}'; name one by id:HEX.")
        return found[0]

    def _has_object(self, cls: Any, kid: bytes) -> bool:
        """Whether an object of class ``cls`` has CKA_ID ``kid`` (a search, not a scan:
        tokens slow down linearly with the objects they hold)."""
        with self.lock, translate("search the token"):
            return any(True for _ in self._session.get_objects({Attribute.CLASS: cls, Attribute.ID: kid}))

    def _has_id(self, kid: bytes) -> bool:
        with self.lock, translate("search the token"):
            return any(True for _ in self._session.get_objects({Attribute.ID: kid}))

    def find_keys(self, label: str) -> list[KeyInfo]:
        """Private keys labelled ``label`` (normally none or one)."""
        return [self._key_info(o) for o in self._private_objects(KeySelector(label=label))]

    def _cert_ids(self) -> set[bytes]:
        with self.lock, translate("list certificates"):
            return {
                bytes(o[Attribute.ID]) for o in self._session.get_objects({Attribute.CLASS: ObjectClass.CERTIFICATE})
            }

    def _key_info(self, obj: Any, cert_ids: set[bytes] | None = None) -> KeyInfo:
        with self.lock, translate("read key attributes"):
            a = obj.get_attributes(
                [
                    Attribute.ID,
                    Attribute.LABEL,
                    Attribute.LOCAL,
                    Attribute.NEVER_EXTRACTABLE,
                    Attribute.ALWAYS_SENSITIVE,
                    Attribute.SENSITIVE,
                    Attribute.EXTRACTABLE,
                    Attribute.DECRYPT,
                    Attribute.UNWRAP,
                    Attribute.DERIVE,
                    Attribute.SIGN_RECOVER,
                    Attribute.ALLOWED_MECHANISMS,
                ]
            )
            kid = bytes(a.get(Attribute.ID) or b"")
        key_type = self._key_type(obj)
        has_cert = kid in cert_ids if cert_ids is not None else self._has_object(ObjectClass.CERTIFICATE, kid)
        flagged = bool(a.get(Attribute.DECRYPT) or a.get(Attribute.UNWRAP))
        # Whether it really can: its flags, limited by CKA_ALLOWED_MECHANISMS (an EC key whose
        # CKA_DECRYPT a TPM forced, but whose list holds only ECDSA, cannot decrypt at all).
        decrypts = decrypting_mechanisms(key_type.algorithm, a, self.mechanisms) if key_type else ()
        return KeyInfo(
            id=kid,
            label=a.get(Attribute.LABEL) or "",
            key_type=key_type,
            local=bool(a.get(Attribute.LOCAL)),
            never_extractable=bool(a.get(Attribute.NEVER_EXTRACTABLE)),
            always_sensitive=bool(a.get(Attribute.ALWAYS_SENSITIVE)),
            sensitive=bool(a.get(Attribute.SENSITIVE)),
            extractable=bool(a.get(Attribute.EXTRACTABLE)),
            can_decrypt=bool(decrypts) if key_type else flagged,
            decrypt_flag=flagged,
            has_certificate=has_cert,
        )

    def _key_type(self, obj: Any) -> KeyType | None:
        with self.lock, translate("read the key type"):
            kt = obj.key_type
            if kt is P11KeyType.RSA:
                return KeyType.from_parts(KeyAlgorithm.RSA, len(obj[Attribute.MODULUS]) * 8)
            if kt is P11KeyType.EC:
                params = bytes(obj[Attribute.EC_PARAMS])
                curve = _CURVES.get(params)
                return curve[2] if curve else None
            if kt is P11KeyType.EC_EDWARDS:
                return KeyType.ED25519
        return None

    def list_keys(self) -> list[KeyInfo]:
        """Every private key on the token, with provenance flags."""
        ids = self._cert_ids()
        return [self._key_info(o, ids) for o in self._private_objects()]

    def key(self, sel: KeySelector) -> KeyInfo:
        return self._key_info(self._one_private(sel))

    @property
    def capabilities(self) -> Capabilities:
        """This token's capability record (see :mod:`._capabilities`), shared by the process."""
        return self.module.capabilities(self._session.token, self.info)

    def generate_key(
        self, key_type: KeyType, label: str, key_id: bytes | None = None, *, require_sign_only: bool = False
    ) -> KeyInfo:
        """Generate a signing key pair on the token: private, sensitive, never extractable.

        The template is negotiated (:data:`KEY_TEMPLATE_STEPS`): the strict sign-only one
        first, then one documented step at a time on the refusals real modules give. The key's
        attributes are read back; a key that came out extractable or not sensitive is destroyed
        and refused. A key the token made able to decrypt is kept, and reported as such
        (``KeyInfo.can_decrypt``), unless ``require_sign_only`` asks for it to be refused.
        """
        if not label:
            raise UsageError("A key needs a label.")
        caps = self.capabilities
        refusal = caps.key_size_refusal(key_type)
        if refusal is not None:
            raise MechanismUnsupported(
                f"Token '{self.info.label}' cannot make a {key_type.value} key: {refusal}.",
                remedy=Remedy.LIST_KEY_TYPES,
            )
        if self._private_objects(KeySelector(label=label)):
            raise ObjectExists(f"Token '{self.info.label}' already has a key labelled '{label}'; choose another label.")
        if key_id is not None and self._has_id(key_id):
            # Any object, not only keys: a certificate left under this ID would otherwise be
            # paired with the new key by every tool that matches by CKA_ID.
            raise ObjectExists(
                f"Token '{self.info.label}' already has objects with id {key_id.hex()}; choose another."
            )
        provisional = key_id if key_id is not None else os.urandom(20)
        pub, priv, step = self._negotiate_keygen(key_type, provisional, label, sign_only=require_sign_only)
        try:
            self._check_generated(priv, key_type, require_sign_only)
        except TokenIssueError:
            self._destroy_pair(pub, priv)
            raise
        if key_id is None:
            ski = x509.SubjectKeyIdentifier.from_public_key(self._public_from(pub, priv)).digest
            with self.lock:
                try:
                    priv[Attribute.ID] = ski
                    try:
                        pub[Attribute.ID] = ski
                    except px.PKCS11Error:
                        priv[Attribute.ID] = provisional
                        raise
                except px.PKCS11Error:
                    pass  # This token will not relabel; the random provisional ID stays.
        return replace(self._key_info(priv), template=step.name)

    def generate_decryption_key(self, key_type: KeyType, label: str) -> KeyInfo:
        """Generate an RSA key pair that signs and decrypts (CKM_RSA_PKCS): private,
        sensitive, never extractable, with no unwrap and no sign-recover.

        For a protocol server's own key that clients encrypt to (a SCEP RA); never for a holder's
        key. CKA_ALLOWED_MECHANISMS pins it to PKCS#1 v1.5 and the signature mechanisms where the
        token knows the attribute; a token that refuses the attribute gets the template without it.
        """
        if key_type.algorithm is not KeyAlgorithm.RSA:
            raise UsageError(f"A key that decrypts must be RSA, not {key_type.value}.")
        if self._private_objects(KeySelector(label=label)):
            raise ObjectExists(f"Token '{self.info.label}' already has a key labelled '{label}'; choose another label.")
        refusal = self.capabilities.key_size_refusal(key_type)
        if refusal is not None:
            raise MechanismUnsupported(
                f"Token '{self.info.label}' cannot make a {key_type.value} key: {refusal}.", remedy=Remedy.LIST_KEY_TYPES
            )
        if Mechanism.RSA_PKCS not in self.mechanisms:
            raise MechanismUnsupported(f"Token '{self.info.label}' offers no CKM_RSA_PKCS, so its keys cannot decrypt.")
        allowed = [Mechanism.RSA_PKCS, *signing_mechanisms(KeyAlgorithm.RSA, self.mechanisms)]
        private: dict[Any, Any] = {
            Attribute.TOKEN: True, Attribute.PRIVATE: True, Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False,
            Attribute.SIGN: True, Attribute.DECRYPT: True, Attribute.UNWRAP: False, Attribute.DERIVE: False,
            Attribute.SIGN_RECOVER: False, Attribute.ALLOWED_MECHANISMS: list(dict.fromkeys(allowed)),
        }  # fmt: skip
        public: dict[Any, Any] = {
            Attribute.TOKEN: True, Attribute.PRIVATE: False, Attribute.VERIFY: True, Attribute.ENCRYPT: True,
            Attribute.VERIFY_RECOVER: False, Attribute.WRAP: False,
        }  # fmt: skip
        kid = os.urandom(20)
        attempts = (
            (private, public),
            # Tokens without CKA_ALLOWED_MECHANISMS or the recover/unwrap attributes.
            ({k: v for k, v in private.items() if k not in (Attribute.ALLOWED_MECHANISMS, Attribute.SIGN_RECOVER,
                                                           Attribute.UNWRAP, Attribute.DERIVE)},
             {k: v for k, v in public.items() if k not in (Attribute.VERIFY_RECOVER, Attribute.WRAP)}),
        )  # fmt: skip
        last = ""
        for priv_t, pub_t in attempts:
            with self.lock, translate(f"generate a {key_type.value} key"):
                try:
                    pub, priv = self._generate(P11KeyType.RSA, kid, label, pub_t, priv_t, {"key_length": key_type.bits},
                                               capabilities=MechanismFlag.SIGN | MechanismFlag.VERIFY
                                               | MechanismFlag.ENCRYPT | MechanismFlag.DECRYPT)  # fmt: skip
                except px.PKCS11Error as e:
                    if type(e).__name__ not in TEMPLATE_REFUSALS:
                        raise
                    last = _rv(e)
                    for o in list(self._session.get_objects({Attribute.ID: kid})):
                        with suppress(px.PKCS11Error):
                            o.destroy()
                    continue
            try:
                self._check_generated(priv, key_type, False)
            except TokenIssueError:
                self._destroy_pair(pub, priv)
                raise
            return self._key_info(priv)
        raise TokenError(f"Token '{self.info.label}' refused to make an RSA key that decrypts ({last}).")

    def decryptor(self, sel: KeySelector) -> Decryptor:
        """A :class:`Decryptor` for the RSA key ``sel`` (one made by :meth:`generate_decryption_key`)."""
        priv = self._one_private(sel)
        if not bool(priv[Attribute.DECRYPT]):
            raise TokenError(f"Key '{priv.label}' on token '{self.info.label}' was made to sign only; it cannot decrypt.")
        return Decryptor(self, bytes(priv[Attribute.ID]))

    def _negotiate_keygen(
        self, key_type: KeyType, kid: bytes, label: str, *, sign_only: bool = False
    ) -> tuple[Any, Any, TemplateStep]:
        """Generate with the first template step the token accepts; remember it for the token.

        A step that leaves CKA_DECRYPT to the token pins the key to the signature mechanisms that
        do not also decrypt (no raw CKM_RSA_PKCS), so that the token's enforcement of
        CKA_ALLOWED_MECHANISMS keeps the key from decrypting. With ``sign_only``, steps that
        cannot give a sign-only key are not tried at all.
        """
        caps = self.capabilities
        algorithm = key_type.algorithm
        allowed = signing_mechanisms(algorithm, self.mechanisms)
        narrow = signing_mechanisms(algorithm, self.mechanisms, sign_only=True)
        private_template: dict[Any, Any] = {
            Attribute.TOKEN: True,
            Attribute.PRIVATE: True,
            Attribute.SENSITIVE: True,
            Attribute.EXTRACTABLE: False,
            Attribute.SIGN: True,
            Attribute.DECRYPT: False,
            Attribute.UNWRAP: False,
            Attribute.DERIVE: False,
            # A raw RSA "signature" (CKM_RSA_X_509, or sign-recover) is a decryption: without
            # these two, a sign-only RSA key still decrypts. ALLOWED_MECHANISMS pins the key to
            # the signature mechanisms; SoftHSM also makes it read-only from then on.
            Attribute.SIGN_RECOVER: False,
            Attribute.ALLOWED_MECHANISMS: allowed,
        }
        public_template: dict[Any, Any] = {
            Attribute.TOKEN: True,
            Attribute.PRIVATE: False,
            Attribute.VERIFY: True,
            Attribute.VERIFY_RECOVER: False,
            Attribute.ENCRYPT: False,
            Attribute.WRAP: False,
        }
        kwargs: dict[str, Any] = {}
        if algorithm is KeyAlgorithm.RSA:
            p11_type, kwargs["key_length"] = P11KeyType.RSA, key_type.bits
        elif algorithm is KeyAlgorithm.EC:
            p11_type = P11KeyType.EC
            assert key_type.curve is not None
            public_template[Attribute.EC_PARAMS] = _EC_PARAMS[key_type.curve]
        else:
            p11_type = P11KeyType.EC_EDWARDS
            public_template[Attribute.EC_PARAMS] = _ED25519_PARAMS[0]
        known = caps.template_step.get(algorithm)
        steps = [known] if known is not None else list(KEY_TEMPLATE_STEPS)
        refusals: list[tuple[str, str]] = []
        skipped = False
        for step in steps:
            # pkcs11.DEFAULT removes the attribute from the template python-pkcs11 builds.
            priv_t = {**private_template, **dict.fromkeys(step.omit_private, pkcs11.DEFAULT)}
            if not step.sign_only:
                # The token decides CKA_DECRYPT (and sets it: tpm2-pkcs11). Pin the key to the
                # signature mechanisms that cannot decrypt, so that the token's enforcement of
                # CKA_ALLOWED_MECHANISMS keeps it sign-only. Raw CKM_RSA_PKCS is left out: it is
                # also a decryption, and tpm2-pkcs11 refuses host-hashed CKM_RSA_PKCS signatures
                # with any key anyway (it checks them as CKM_RSA_X_509), so nothing is lost there.
                if step.allowed_mechanisms and narrow:
                    priv_t[Attribute.ALLOWED_MECHANISMS] = narrow
                elif sign_only:
                    # Without a list (or with only raw RSA to list) this step cannot give a
                    # sign-only key: not tried, so no weaker step is learnt for the token.
                    skipped = True
                    continue
            pub_t = {**public_template, **dict.fromkeys(step.omit_public, pkcs11.DEFAULT)}
            with self.lock, translate(f"generate a {key_type.value} key"):
                try:
                    pub, priv = self._generate(p11_type, kid, label, pub_t, priv_t, kwargs)
                except px.PKCS11Error as e:
                    if type(e).__name__ not in TEMPLATE_REFUSALS:
                        raise
                    refusals.append((step.name, _rv(e)))
                    # The ID is fresh and random (or checked unused): anything under it now is
                    # half a key pair a module kept after refusing the template.
                    for o in list(self._session.get_objects({Attribute.ID: kid})):
                        with suppress(px.PKCS11Error):
                            o.destroy()
                    continue
            if known is None:
                caps.template_step[algorithm] = step
                caps.template_refusals[algorithm] = refusals
            return pub, priv, step
        if skipped:
            # The steps that would have made a key were left out: it could not be sign-only.
            raise KeyUsageForced(self._forced_sentence(key_type), remedy=Remedy.SIGN_ONLY_HOW)
        kinds = {r for _, r in refusals}
        # CKR_ATTRIBUTE_VALUE_INVALID for a template the token takes for other sizes: the size.
        size = (
            f" (CKR_ATTRIBUTE_VALUE_INVALID: it probably cannot make {key_type.bits}-bit keys)"
            if kinds == {"CKR_ATTRIBUTE_VALUE_INVALID"} and algorithm is not KeyAlgorithm.ED25519 else ""
        )  # fmt: skip
        if known is not None:
            raise TokenError(
                f"Token '{self.info.label}' refused a {key_type.value} key with the template it accepted before"
                f"{size or f' ({refusals[-1][1]}); it may be full or failing'}.",
                remedy=None if size else Remedy.INSPECT_TOKEN,
            )
        caps.template_refusals[algorithm] = refusals
        raise TokenError(
            f"Token '{self.info.label}' refused every key template tokenissue can use for a {key_type.value} key"
            f"{size or ' (' + ', '.join(sorted(kinds)) + ')'}.",
            remedy=Remedy.PROBE_TOKEN,
        )

    def _check_generated(self, priv: Any, key_type: KeyType, require_sign_only: bool) -> KeyInfo:
        """Read the new key back; refuse what the token made weaker than it must be."""
        info = self._key_info(priv)
        if info.extractable or not info.sensitive:
            what = "extractable" if info.extractable else "not sensitive"
            raise ProvenanceError(
                f"Token '{self.info.label}' made the {key_type.value} key {what} although the template forbade it; "
                "the key was destroyed. Such a token cannot hold a key tokenissue can vouch for."
            )
        if require_sign_only and info.can_decrypt:
            raise KeyUsageForced(self._forced_sentence(key_type), remedy=Remedy.SIGN_ONLY_HOW)
        return info

    def _forced_sentence(self, key_type: KeyType) -> str:
        return (
            f"Token '{self.info.label}' cannot make a {key_type.value} key that is unable to decrypt (it sets "
            "CKA_DECRYPT and cannot pin the key to signature mechanisms), and sign-only keys were required; "
            "no key was kept. Use a token that makes sign-only keys, or drop the requirement."
        )

    def _destroy_pair(self, pub: Any, priv: Any) -> None:
        with self.lock:
            for o in (priv, pub):
                if o is not None:
                    with suppress(px.PKCS11Error):
                        o.destroy()

    def _generate(
        self, p11_type: Any, kid: bytes, label: str, public: dict[Any, Any], private: dict[Any, Any], kwargs: dict[str, Any],
        *, capabilities: Any = MechanismFlag.SIGN | MechanismFlag.VERIFY,
    ) -> tuple[Any, Any]:  # fmt: skip
        return tuple(
            self._session.generate_keypair(
                p11_type,
                id=kid,
                label=label,
                store=True,
                capabilities=capabilities,
                public_template=public,
                private_template=private,
                **kwargs,
            )
        )

    def has_key_id(self, kid: bytes) -> bool:
        """Whether any key object has CKA_ID ``kid``; the public key answers without a login."""
        return self._has_object(ObjectClass.PUBLIC_KEY, kid) or self._has_object(ObjectClass.PRIVATE_KEY, kid)

    def remove_orphan_public_keys(self, label: str) -> int:
        """Destroy public keys labelled ``label`` whose private key (same CKA_ID) is not on the
        token; return how many. What a key generation cut short leaves behind."""
        n = 0
        with self.lock, translate("remove a half key pair"):
            for pub in list(self._session.get_objects({Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.LABEL: label})):
                kid = bytes(pub[Attribute.ID] or b"")
                if not self._has_object(ObjectClass.PRIVATE_KEY, kid):
                    pub.destroy()
                    n += 1
        return n

    def delete_key(self, sel: KeySelector, *, with_certificates: bool = True) -> KeyInfo:
        """Destroy the private key, its public key, the data tokenissue keeps next to it
        (:meth:`put_key_data`) and (by default) certificates under its ID."""
        priv = self._one_private(sel)
        info = self._key_info(priv)
        with self.lock, translate("delete the key"):
            for cls in (ObjectClass.PUBLIC_KEY,) + ((ObjectClass.CERTIFICATE,) if with_certificates else ()):
                for o in list(self._session.get_objects({Attribute.CLASS: cls, Attribute.ID: info.id})):
                    o.destroy()
            for o in self._key_data_objects(info.id, None):
                o.destroy()
            priv.destroy()
        return info

    # -- data next to a key (the Korean VID's R) ---------------------------------------------
    def put_key_data(self, key_id: bytes, object_id: bytes, value: bytes) -> None:
        """Keep ``value`` on the token next to key ``key_id``: a private, token-resident data
        object (CKO_DATA) with the key's label, CKA_OBJECT_ID ``object_id`` (the DER of an OID)
        and CKA_APPLICATION "tokenissue key=<CKA_ID in hex>". PKCS#11 gives data objects no
        CKA_ID (SoftHSM refuses one: CKR_ATTRIBUTE_TYPE_INVALID), so the application string
        names the key. One per key and OID: an earlier one is replaced, the new one written
        first, so that the key is never left without it."""
        priv = self._one_private(KeySelector(id=key_id))
        label = self._key_info(priv).label
        with self.lock, translate("store data next to the key"):
            old = self._key_data_objects(key_id, object_id)
            try:
                self._session.create_object({
                    Attribute.CLASS: ObjectClass.DATA, Attribute.TOKEN: True, Attribute.PRIVATE: True,
                    Attribute.LABEL: label, Attribute.OBJECT_ID: object_id,
                    Attribute.APPLICATION: _data_application(key_id), Attribute.VALUE: value,
                })  # fmt: skip
            except (px.DeviceMemory, px.FunctionFailed, px.GeneralError) as e:
                raise TokenError(
                    f"Token '{self.info.label}' could not store data next to key '{label}' ({_rv(e)}): it is "
                    "probably full.",
                    remedy=Remedy.FREE_TOKEN,
                ) from e
            for o in old:
                o.destroy()

    def key_data(self, key_id: bytes, object_id: bytes) -> bytes | None:
        """The value :meth:`put_key_data` kept next to key ``key_id`` under ``object_id``."""
        with self.lock, translate("read data next to the key"):
            found = self._key_data_objects(key_id, object_id)
            return bytes(found[0][Attribute.VALUE]) if found else None

    def _key_data_objects(self, key_id: bytes, object_id: bytes | None) -> list[Any]:
        template: dict[Any, Any] = {Attribute.CLASS: ObjectClass.DATA}
        if object_id is not None:
            template[Attribute.OBJECT_ID] = object_id
        # Compared here, not in the template: only tokenissue's own, for this key.
        want = _data_application(key_id)
        return [o for o in self._session.get_objects(template) if _application(o) == want]

    def _public_from(self, pub: Any | None, priv: Any) -> Any:
        """A cryptography public key from the token's public (or private) key attributes."""
        with self.lock, translate("read the public key"):
            kt = priv.key_type
            if kt is P11KeyType.RSA:
                src = pub if pub is not None else priv
                n = int.from_bytes(src[Attribute.MODULUS], "big")
                e = int.from_bytes(src[Attribute.PUBLIC_EXPONENT], "big")
                return rsa.RSAPublicNumbers(e, n).public_key()
            if pub is None:
                cert_pub = self._cert_public(bytes(priv[Attribute.ID]))
                if cert_pub is None:
                    raise TokenError("The key has no public key object and no certificate on the token.")
                return cert_pub
            point = bytes(pub[Attribute.EC_POINT])
            if kt is P11KeyType.EC:
                params = bytes(pub[Attribute.EC_PARAMS])
                if params not in _CURVES:
                    raise TokenError("The key is on a curve tokenissue does not support.")
                curve, raw_len, _ = _CURVES[params]
                return ec.EllipticCurvePublicKey.from_encoded_point(curve, _unwrap_point(point, raw_len))
            if kt is P11KeyType.EC_EDWARDS:
                return ed25519.Ed25519PublicKey.from_public_bytes(_unwrap_point(point, 32))
        raise TokenError("The key type is not supported by tokenissue.")

    def _cert_public(self, kid: bytes) -> Any:
        for c in self.certificates(key_id=kid):
            return x509.load_der_x509_certificate(c.der).public_key()
        return None

    def _public_object(self, kid: bytes) -> Any | None:
        with self.lock, translate("find the public key"):
            for o in self._session.get_objects({Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.ID: kid}):
                return o
        return None

    def public_key(self, sel: KeySelector) -> Any:
        priv = self._one_private(sel)
        return self._public_from(self._public_object(bytes(priv[Attribute.ID])), priv)

    def private_key(self, sel: KeySelector) -> TokenPrivateKey:
        """The key as a cryptography private-key object whose ``sign()`` runs on the token."""
        priv = self._one_private(sel)
        public = self._public_from(self._public_object(bytes(priv[Attribute.ID])), priv)
        mechanisms = self.mechanisms
        with self.lock, suppress(px.PKCS11Error):
            allowed = priv[Attribute.ALLOWED_MECHANISMS]
            if allowed:
                # Plan signatures within the key's own list: a key pinned to the combined
                # mechanisms (no raw CKM_RSA_PKCS) must not be asked to sign a host digest.
                mechanisms = {m for m in mechanisms if int(m) in {int(x) for x in allowed}}
        return make_private_key(priv, self.lock, mechanisms, public)

    def find_key_for(self, public: Any) -> KeyInfo | None:
        """The private key whose public half is ``public``, if any."""
        want = spki_der(public)
        ids = self._cert_ids()
        for priv in self._private_objects():
            try:
                have = self._public_from(self._public_object(bytes(priv[Attribute.ID])), priv)
            except TokenError:
                continue
            if spki_der(have) == want:
                return self._key_info(priv, ids)
        return None

    # -- certificates ----------------------------------------------------------------------
    def certificates(self, *, key_id: bytes | None = None) -> list[CertObject]:
        attrs: dict[Any, Any] = {
            Attribute.CLASS: ObjectClass.CERTIFICATE,
            Attribute.CERTIFICATE_TYPE: CertificateType.X_509,
        }
        if key_id is not None:
            attrs[Attribute.ID] = key_id
        with self.lock, translate("list certificates"):
            objs = [
                (bytes(o[Attribute.ID]), o[Attribute.LABEL] or "", bytes(o[Attribute.VALUE]))
                for o in self._session.get_objects(attrs)
            ]
            if key_id is not None:
                key_ids = {key_id} if self._has_object(ObjectClass.PRIVATE_KEY, key_id) else set()
            else:
                key_ids = {
                    bytes(o[Attribute.ID])
                    for o in self._session.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY})
                }
        out = []
        for kid, label, der in objs:
            # Tokens often carry certificates other tools wrote; one that cannot be parsed is
            # left alone rather than breaking every listing.
            try:
                cert = x509.load_der_x509_certificate(der)
                out.append(_cert_object(kid, label, der, cert, has_key=kid in key_ids))
            except (ValueError, TypeError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType):
                continue
        return out

    def write_certificate(
        self, cert: x509.Certificate, *, key_id: bytes, label: str, trusted: bool = False
    ) -> CertObject:
        """Store ``cert`` as a CKO_CERTIFICATE; an identical one already there is kept, not doubled."""
        der = cert.public_bytes(serialization.Encoding.DER)
        with self.lock, translate("search the token"):
            # One search for this very certificate (PKCS#11 matches CKA_VALUE like any other
            # attribute) rather than reading and parsing every certificate under the ID.
            existing = list(
                self._session.get_objects(
                    {Attribute.CLASS: ObjectClass.CERTIFICATE, Attribute.ID: key_id, Attribute.VALUE: der}
                )
            )
            if existing:
                label = existing[0][Attribute.LABEL] or ""
                return _cert_object(key_id, label, der, cert, has_key=self._has_object(ObjectClass.PRIVATE_KEY, key_id))
        attrs: dict[Any, Any] = {
            Attribute.CLASS: ObjectClass.CERTIFICATE,
            Attribute.CERTIFICATE_TYPE: CertificateType.X_509,
            Attribute.TOKEN: True,
            Attribute.PRIVATE: False,
            Attribute.ID: key_id,
            Attribute.LABEL: label,
            # Always given: SoftHSM (and the PKCS#11 spec) require CKA_SUBJECT.
            Attribute.SUBJECT: cert.subject.public_bytes(),
            Attribute.VALUE: der,
            Attribute.ISSUER: cert.issuer.public_bytes(),
            Attribute.SERIAL_NUMBER: _der_integer(cert.serial_number),
        }
        if trusted:
            # CKA_CERTIFICATE_CATEGORY 2 = authority (CKA_TRUSTED itself needs an SO session).
            attrs[Attribute.CERTIFICATE_CATEGORY] = 2
        self._create_certificate(attrs)
        return _cert_object(key_id, label, der, cert, has_key=self._has_object(ObjectClass.PRIVATE_KEY, key_id))

    def _create_certificate(self, attrs: dict[Any, Any]) -> None:
        """C_CreateObject, leaving out the optional attributes the token refuses.

        PKCS#11 does not say which attribute a template failed on, so after a refusal each
        optional attribute is left out alone in turn (one culprit costs at most one try per
        optional attribute), then all of them. What the token refused is remembered in its
        capability record and left out from the start next time.
        """
        caps = self.capabilities
        for a in caps.cert_refused:
            attrs.pop(a, None)
        optional = [a for a in OPTIONAL_CERT_ATTRIBUTES if a in attrs]
        refusals = (px.AttributeTypeInvalid, px.AttributeValueInvalid, px.TemplateInconsistent, px.AttributeReadOnly)
        with self.lock, translate("store the certificate"):
            try:
                self._session.create_object(attrs)
                return
            except refusals as e:
                first = e
                self._remove_leftovers(attrs)
            except (px.ObjectHandleInvalid, px.FunctionFailed, px.GeneralError, px.DeviceMemory) as e:
                raise self._store_failed(e) from e
            for drop in [[a] for a in optional] + ([optional] if len(optional) > 1 else []):
                try:
                    self._session.create_object({k: v for k, v in attrs.items() if k not in drop})
                except refusals:
                    self._remove_leftovers(attrs)
                    continue
                caps.cert_refused.update(drop)
                return
        raise TokenError(
            f"Token '{self.info.label}' refused to store the certificate ({_rv(first)}) even with only the "
            "required attributes (class, type, id, label, subject, value).",
            remedy=Remedy.PROBE_TOKEN,
        ) from first

    def _store_failed(self, e: Exception) -> TokenError:
        """Why C_CreateObject of a new object failed: a full token, unless the token is gone.

        A full SoftHSM token directory answers CKR_OBJECT_HANDLE_INVALID (measured), which would
        otherwise read as "the certificate went away"; nothing had a handle yet."""
        try:
            present = any(t.name == self.info.name for t in self.module.tokens())
        except TokenIssueError:
            present = False
        if not present:
            return TokenNotFound(
                f"Token '{self.info.label}' went away while the certificate was being stored; plug it in again and "
                "run the same command again."
            )
        return TokenError(
            f"Token '{self.info.label}' could not store the certificate ({_rv(e)}): it is probably full; nothing is "
            "lost meanwhile.",
            remedy=Remedy.FREE_TOKEN,
        )

    def _remove_leftovers(self, attrs: dict[Any, Any]) -> None:
        """Destroy what a refused C_CreateObject left behind.

        SoftHSM 2.6 stores the object before it checks the attributes, and keeps it when one is
        refused: a certificate object with an empty CKA_VALUE, CKA_ID and CKA_LABEL. No
        certificate is ever empty, so such objects are removed; nothing else is touched.
        """
        for o in list(self._session.get_objects({Attribute.CLASS: attrs[Attribute.CLASS], Attribute.VALUE: b""})):
            with suppress(px.PKCS11Error):
                if not bytes(o[Attribute.VALUE]):
                    o.destroy()

    def relabel(self, key_id: bytes, label: str) -> int:
        """Give the key pair, the certificates under ``key_id`` and the data kept next to the key
        (:meth:`put_key_data`) the label ``label``; return how many objects changed. Objects that
        have it already are left alone, so a relabel cut short (a kill between the private key
        and its certificate) is finished by calling this again."""
        changed = 0
        with self.lock, translate("relabel the key"):
            objects = [
                o
                for cls in (ObjectClass.PRIVATE_KEY, ObjectClass.PUBLIC_KEY, ObjectClass.CERTIFICATE)
                for o in self._session.get_objects({Attribute.CLASS: cls, Attribute.ID: key_id})
            ]
            for o in [*objects, *self._key_data_objects(key_id, None)]:
                if (o[Attribute.LABEL] or "") != label:
                    o[Attribute.LABEL] = label
                    changed += 1
        return changed

    def delete_certificate(self, key_id: bytes, der: bytes | None = None) -> int:
        """Destroy certificates under ``key_id`` (only the one with value ``der`` if given)."""
        n = 0
        with self.lock, translate("delete the certificate"):
            for o in list(self._session.get_objects({Attribute.CLASS: ObjectClass.CERTIFICATE, Attribute.ID: key_id})):
                if der is None or bytes(o[Attribute.VALUE]) == der:
                    o.destroy()
                    n += 1
        return n


class Decryptor:
    """RSA PKCS#1 v1.5 decryption (CKM_RSA_PKCS) with one key, each in a session of its own.

    A refused block (not PKCS#1 for this key: a client's garbage or a probe) gives None, never
    an exception with the token's reason, so callers answer every bad block alike. Every
    decryption opens a session, finds the key, decrypts and closes the session, whatever the
    outcome: the work is the same for a good and a refused block, so the time does not tell
    them apart beyond what the token's own C_Decrypt does. It is also what tpm2-pkcs11 needs: it
    leaves a failed C_Decrypt's operation active, and that session would refuse everything after
    with CKR_OPERATION_ACTIVE (measured; PKCS#11 says a failed C_Decrypt ends the operation).
    The application's login covers each new session.
    """

    def __init__(self, owner: TokenSession, key_id: bytes) -> None:
        self._owner = owner
        self._key_id = key_id

    def decrypt(self, ciphertext: bytes) -> bytes | None:
        with self._owner.lock:
            with translate("open a session"):
                session = self._owner._session.token.open()
            try:
                with translate("find the key"):
                    key = session.get_key(object_class=ObjectClass.PRIVATE_KEY, id=self._key_id)
                try:
                    plain: bytes | None = key.decrypt(ciphertext, mechanism=Mechanism.RSA_PKCS)
                except (px.PKCS11Error, RuntimeError):
                    plain = None
            finally:
                with suppress(px.PKCS11Error):
                    session.close()
        return plain


def _data_application(key_id: bytes) -> str:
    """CKA_APPLICATION of the data tokenissue keeps next to key ``key_id``."""
    return f"tokenissue key={key_id.hex()}"


def _application(obj: Any) -> str | None:
    try:
        value = obj[Attribute.APPLICATION]
    except px.PKCS11Error:
        return None
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _cert_object(kid: bytes, label: str, der: bytes, cert: x509.Certificate, *, has_key: bool) -> CertObject:
    """A certificate object's description; ValueError (and kin) for a certificate cryptography
    cannot read its fields from."""
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    return CertObject(
        id=kid,
        label=label,
        der=der,
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        serial=cert.serial_number,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        is_ca=is_ca,
        has_key=has_key,
    )


def _der_integer(value: int) -> bytes:
    body = value.to_bytes((value.bit_length() + 8) // 8 or 1, "big")
    if len(body) < 0x80:
        return b"\x02" + bytes([len(body)]) + body
    length = len(body).to_bytes((len(body).bit_length() + 7) // 8, "big")
    return b"\x02" + bytes([0x80 | len(length)]) + length + body
