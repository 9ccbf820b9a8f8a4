"""What one token accepts: one record per token, the only place token differences live.

Real PKCS#11 modules differ in ways a tool must meet rather than assume:

* **Key templates.** SoftHSM takes any combination of usage attributes. tpm2-pkcs11 ties
  CKA_SIGN to CKA_ENCRYPT and CKA_VERIFY to CKA_DECRYPT (one TPM attribute each) and answers a
  sign-only template with CKR_GENERAL_ERROR. Tokens older than PKCS#11 v2.40 do not know
  CKA_ALLOWED_MECHANISMS; some do not know the sign-recover attributes.
* **Certificate objects.** SoftHSM requires CKA_SUBJECT; tpm2-pkcs11 refuses
  CKA_CERTIFICATE_CATEGORY and CKA_TRUSTED with CKR_ATTRIBUTE_TYPE_INVALID.
* **PIN counters.** SoftHSM and most smart cards set USER_PIN_COUNT_LOW / FINAL_TRY / LOCKED;
  tpm2-pkcs11 never sets them, and its lockout is the TPM's dictionary-attack protection:
  TPM-wide, cleared by time, not by the SO PIN.
* **Serials.** Every tpm2-pkcs11 token has serial ``0000000000000000``.

Like OpenSC's per-driver flags and p11-kit's per-module configuration, these are modelled as
one :class:`Capabilities` record per token: learned from the mechanism list and from the
refusals the token gives (:data:`KEY_TEMPLATE_STEPS`, :data:`OPTIONAL_CERT_ATTRIBUTES`), plus
the few facts a token cannot be asked about, keyed by the module's own C_GetInfo answer
(:data:`_LIBRARY_QUIRKS`). Nothing outside this module tests for a manufacturer or a model.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pkcs11 import Attribute, Mechanism

from ..models import KeyAlgorithm, KeyType

__all__ = [
    "DECRYPTING",
    "KEY_TEMPLATE_STEPS",
    "OPTIONAL_CERT_ATTRIBUTES",
    "TEMPLATE_REFUSALS",
    "Capabilities",
    "TemplateStep",
    "decrypting_mechanisms",
    "keygen_mechanism",
    "library_quirks",
    "signing_mechanisms",
]

# The attributes a signing key is made with. Never relaxed by any step: CKA_TOKEN, CKA_PRIVATE,
# CKA_SENSITIVE=True, CKA_EXTRACTABLE=False (and the key's attributes are read back to prove it).
_USAGE_PRIVATE = (Attribute.DECRYPT, Attribute.UNWRAP)
_USAGE_PUBLIC = (Attribute.ENCRYPT, Attribute.WRAP)
_RECOVER = ((Attribute.SIGN_RECOVER,), (Attribute.VERIFY_RECOVER,))


@dataclass(frozen=True)
class TemplateStep:
    """One key template: the strict one less the attributes this step leaves to the token."""

    name: str
    """Short name, shown by ``token check`` and recorded with the key."""
    why: str
    """The kind of token this step is for (docs/tokens-and-keys.md lists them)."""
    omit_private: tuple[Any, ...] = ()
    omit_public: tuple[Any, ...] = ()

    @property
    def sign_only(self) -> bool:
        """Whether this template forbids decrypt/unwrap (else the token decides)."""
        return Attribute.DECRYPT not in self.omit_private

    @property
    def allowed_mechanisms(self) -> bool:
        return Attribute.ALLOWED_MECHANISMS not in self.omit_private


#: Tried in this order; the first the token accepts is used (and remembered for the token).
#: Each step gives up one protection, least important first; the usage coupling steps come
#: last because a key that can decrypt is worse than one without CKA_ALLOWED_MECHANISMS.
KEY_TEMPLATE_STEPS: tuple[TemplateStep, ...] = (
    TemplateStep("strict", "sign-only, CKA_ALLOWED_MECHANISMS, no sign-recover (SoftHSM, PKCS#11 v2.40+ tokens)"),
    TemplateStep(
        "no-allowed-mechanisms",
        "tokens older than PKCS#11 v2.40, which do not know CKA_ALLOWED_MECHANISMS",
        omit_private=(Attribute.ALLOWED_MECHANISMS,),
    ),
    TemplateStep(
        "no-recover",
        "tokens that know neither CKA_ALLOWED_MECHANISMS nor the sign-recover attributes",
        omit_private=(Attribute.ALLOWED_MECHANISMS, *_RECOVER[0]),
        omit_public=_RECOVER[1],
    ),
    TemplateStep(
        "token-usage",
        "tokens that tie signing to decryption (tpm2-pkcs11: CKA_SIGN is CKA_ENCRYPT, CKA_VERIFY is "
        "CKA_DECRYPT); decrypt/unwrap are left to the token",
        omit_private=_USAGE_PRIVATE,
        omit_public=_USAGE_PUBLIC,
    ),
    TemplateStep(
        "token-usage-no-allowed-mechanisms",
        "as token-usage, on a token that does not know CKA_ALLOWED_MECHANISMS either",
        omit_private=(*_USAGE_PRIVATE, Attribute.ALLOWED_MECHANISMS),
        omit_public=_USAGE_PUBLIC,
    ),
    TemplateStep(
        "token-usage-minimal",
        "as token-usage, on a token that knows none of the optional attributes",
        omit_private=(*_USAGE_PRIVATE, Attribute.ALLOWED_MECHANISMS, *_RECOVER[0]),
        omit_public=(*_USAGE_PUBLIC, *_RECOVER[1]),
    ),
)

#: The refusals that mean "not this template" (and not "the token is failing"). GENERAL_ERROR
#: is among them because tpm2-pkcs11 reports its attribute coupling that way.
TEMPLATE_REFUSALS = (
    "AttributeTypeInvalid",
    "AttributeValueInvalid",
    "TemplateInconsistent",
    "TemplateIncomplete",
    "AttributeReadOnly",
    "GeneralError",
)

#: Certificate attributes a token may refuse (CKR_ATTRIBUTE_TYPE_INVALID / VALUE_INVALID /
#: READ_ONLY, TEMPLATE_INCONSISTENT); the one refused is found and left out. CKA_CLASS, CKA_CERTIFICATE_TYPE, CKA_TOKEN,
#: CKA_ID, CKA_LABEL, CKA_VALUE and CKA_SUBJECT are always given (SoftHSM requires CKA_SUBJECT).
OPTIONAL_CERT_ATTRIBUTES: tuple[Any, ...] = (
    Attribute.CERTIFICATE_CATEGORY,
    Attribute.TRUSTED,
    Attribute.ISSUER,
    Attribute.SERIAL_NUMBER,
)

_SIGNING = {
    KeyAlgorithm.RSA: (
        Mechanism.RSA_PKCS, Mechanism.SHA256_RSA_PKCS, Mechanism.SHA384_RSA_PKCS,
        Mechanism.SHA512_RSA_PKCS, Mechanism.RSA_PKCS_PSS, Mechanism.SHA256_RSA_PKCS_PSS,
        Mechanism.SHA384_RSA_PKCS_PSS, Mechanism.SHA512_RSA_PKCS_PSS,
    ),
    KeyAlgorithm.EC: (Mechanism.ECDSA, Mechanism.ECDSA_SHA256, Mechanism.ECDSA_SHA384, Mechanism.ECDSA_SHA512),
    KeyAlgorithm.ED25519: (Mechanism.EDDSA,),
}  # fmt: skip
_KEYGEN = {
    KeyAlgorithm.RSA: Mechanism.RSA_PKCS_KEY_PAIR_GEN,
    KeyAlgorithm.EC: Mechanism.EC_KEY_PAIR_GEN,
    KeyAlgorithm.ED25519: Mechanism.EC_EDWARDS_KEY_PAIR_GEN,
}


#: Mechanisms with which a private key of each algorithm decrypts, unwraps or agrees on keys.
#: CKM_RSA_PKCS is a signature mechanism too: only leaving it out of a key's
#: CKA_ALLOWED_MECHANISMS keeps an RSA key whose CKA_DECRYPT the token forced from decrypting.
#: PKCS#11 has no EC decryption mechanism: an EC key's only such use is ECDH (CKA_DERIVE).
DECRYPTING: dict[KeyAlgorithm, tuple[Any, ...]] = {
    KeyAlgorithm.RSA: (Mechanism.RSA_PKCS, Mechanism.RSA_PKCS_OAEP, Mechanism.RSA_X_509),
    KeyAlgorithm.EC: (),
    KeyAlgorithm.ED25519: (),
}
_DERIVING: dict[KeyAlgorithm, tuple[Any, ...]] = {
    KeyAlgorithm.RSA: (),
    KeyAlgorithm.EC: (Mechanism.ECDH1_DERIVE, Mechanism.ECDH1_COFACTOR_DERIVE),
    KeyAlgorithm.ED25519: (),
}


def decrypting_mechanisms(algorithm: KeyAlgorithm, usage: Mapping[Any, Any], offered: frozenset[Any] | set[Any]) -> tuple[Any, ...]:
    """The mechanisms a private key can decrypt, unwrap or derive with: by its usage flags
    (CKA_DECRYPT, UNWRAP, SIGN_RECOVER, DERIVE), the token's mechanism list, and its
    CKA_ALLOWED_MECHANISMS when it has one (PKCS#11 requires tokens to enforce it; SoftHSM and
    tpm2-pkcs11 do: a decryption outside the list is CKR_MECHANISM_INVALID, measured)."""
    allowed = usage.get(Attribute.ALLOWED_MECHANISMS)
    permitted = {int(m) for m in allowed} if allowed else None
    mechs: list[Any] = []
    if usage.get(Attribute.DECRYPT) or usage.get(Attribute.UNWRAP):
        mechs += DECRYPTING[algorithm]
    if usage.get(Attribute.SIGN_RECOVER) and algorithm is KeyAlgorithm.RSA:
        mechs.append(Mechanism.RSA_X_509)  # sign-recover with raw RSA is a decryption
    if usage.get(Attribute.DERIVE):
        mechs += _DERIVING[algorithm]
    out: list[Any] = []
    for m in mechs:
        if m in offered and (permitted is None or int(m) in permitted) and m not in out:
            out.append(m)
    return tuple(out)


def keygen_mechanism(algorithm: KeyAlgorithm) -> Any:
    return _KEYGEN[algorithm]


def signing_mechanisms(algorithm: KeyAlgorithm, offered: set[Any] | frozenset[Any], *, sign_only: bool = False) -> list[Any]:
    """The signature mechanisms of ``algorithm`` the token offers (a new key's ALLOWED_MECHANISMS).

    ``sign_only`` leaves out those that also decrypt (CKM_RSA_PKCS): for a key whose CKA_DECRYPT
    the token forces, the list is then what keeps it from decrypting. Signatures then go through
    the combined hash-and-sign mechanisms; tools that hash on the host and sign with
    CKM_RSA_PKCS (OpenSSL's libp11 engine, for one) cannot use such a key.
    """
    return [m for m in _SIGNING[algorithm] if m in offered and not (sign_only and m in DECRYPTING[algorithm])]


@dataclass(frozen=True)
class _Quirks:
    """Facts a token cannot be asked about through PKCS#11."""

    pin_counters: bool = True
    """Whether C_GetTokenInfo's USER_PIN_COUNT_LOW / FINAL_TRY / LOCKED flags ever move."""
    lockout: str = "pin"
    """"pin": a locked PIN is unblocked with the SO PIN. "device": the device's own
    dictionary-attack protection locks every PIN on it until its recovery time passes."""
    unlock_hint: str | None = None
    """What the holder does about CKR_PIN_LOCKED, when it is not tokenissue's own unblocking
    with the SO PIN (:attr:`~tokenissue.errors.Remedy.UNBLOCK_PIN`)."""
    concurrent_writers: bool = True
    """Whether processes may write to different tokens of this module at once (tpm2-pkcs11
    keeps every token of a store in one SQLite file: parallel writers get "database is
    locked", reported as CKR_GENERAL_ERROR)."""
    expect_sign_only: bool | None = None
    expect_allowed_mechanisms: bool | None = None
    expect_certificate_category: bool | None = None
    """What ``token check`` reports without --probe (None: unknown until probed)."""


#: Keyed by CK_INFO.manufacturerID, the module's own answer to C_GetInfo.
_LIBRARY_QUIRKS: dict[str, _Quirks] = {
    # tpm2-pkcs11 1.9: the flags are never set; a wrong PIN counts against the TPM's
    # dictionary-attack lockout (TPM-wide, SO PIN included), measured in ../shared/TOKENS.md.
    "tpm2-software.github.io": _Quirks(
        pin_counters=False,
        lockout="device",
        concurrent_writers=False,
        unlock_hint=(
            "wait for the TPM's lockout recovery time, or have its owner run 'tpm2_dictionarylockout --clear-lockout'"
        ),
        # Measured on 1.9.0: sign implies decrypt, but CKA_ALLOWED_MECHANISMS and the
        # certificate attributes are taken (token check --probe proves it per token).
        expect_sign_only=False,
        expect_allowed_mechanisms=True,
        expect_certificate_category=True,
    ),
    # SoftHSM 2.6: accepts every attribute; USER_PIN_COUNT_LOW moves, the PIN never locks.
    "SoftHSM": _Quirks(expect_sign_only=True, expect_allowed_mechanisms=True, expect_certificate_category=True),
}


def library_quirks(manufacturer_id: str) -> _Quirks:
    """The quirks of a module, by its CK_INFO manufacturerID (defaults: a well-behaved token)."""
    return _LIBRARY_QUIRKS.get(manufacturer_id.strip(), _Quirks())


@dataclass
class Capabilities:
    """One token's record: offered mechanisms, key sizes, and what it has accepted or refused.

    Created when a token is first opened in this process and kept for the module's lifetime:
    a batch learns a token's template once, not once per key.
    """

    library: str
    """CK_INFO manufacturerID of the module (e.g. "SoftHSM", "tpm2-software.github.io")."""
    mechanisms: frozenset[Any]
    key_sizes: dict[Any, tuple[int, int]] = field(default_factory=dict)
    """Keygen mechanism -> (min, max) bits, from C_GetMechanismInfo."""
    template_step: dict[KeyAlgorithm, TemplateStep] = field(default_factory=dict)
    """The first key template step the token accepted, per algorithm."""
    template_refusals: dict[KeyAlgorithm, list[tuple[str, str]]] = field(default_factory=dict)
    """(step name, refusal) for each step the token refused, per algorithm."""
    cert_refused: set[Any] = field(default_factory=set)
    """Optional certificate attributes the token refused."""
    serials_unique: bool = True
    """Whether this token's serial tells it apart from every other token present."""

    @property
    def quirks(self) -> _Quirks:
        return library_quirks(self.library)

    @property
    def pin_counters(self) -> bool:
        return self.quirks.pin_counters

    @property
    def lockout(self) -> str:
        return self.quirks.lockout

    def key_size_refusal(self, key_type: KeyType) -> str | None:
        """A sentence when the token says (C_GetMechanismInfo) it cannot make ``key_type``."""
        mech = keygen_mechanism(key_type.algorithm)
        if mech not in self.mechanisms:
            what = {KeyAlgorithm.RSA: "RSA", KeyAlgorithm.EC: "EC", KeyAlgorithm.ED25519: "Ed25519"}[key_type.algorithm]
            return f"the token cannot generate {what} keys at all (no {mech.name})"
        lo, hi = self.key_sizes.get(mech, (0, 0))
        bits = key_type.bits
        if key_type.algorithm is KeyAlgorithm.ED25519 or not hi:
            return None
        # RSA ranges are in bits by every module seen; some report EC ranges in bytes.
        if key_type.algorithm is KeyAlgorithm.EC and hi < 128:
            lo, hi = lo * 8, hi * 8
        if not lo <= bits <= hi:
            return f"the token makes {key_type.algorithm.value.upper()} keys of {lo}-{hi} bits only"
        return None
