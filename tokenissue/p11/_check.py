"""``token check``: will tokenissue work on this token, and how?

Without probing, the answer comes from the token's mechanism list and key-size ranges
(C_GetMechanismInfo) and from what the module is known to do (:mod:`._capabilities`); each
finding says which, and a module tokenissue knows nothing about gets "unknown", not a guess.
With ``probe=True`` every claim that can be proven is proven on the token itself: a scratch key
per key type is generated with the negotiated template, its attributes are read back (usage
flags, CKA_ALLOWED_MECHANISMS), it signs a test message with the hash tokenissue uses for that
key type and the signature is verified on the host; an RSA key the token made able to decrypt
is asked to decrypt a PKCS#1 v1.5 test message, so "can decrypt" is a fact, not a flag; a scratch
certificate is stored with the optional attributes and read back; and everything scratch is
deleted again (also when a step fails). A scratch object the token refuses to delete is named in
the report (``leftovers``) instead of being passed over in silence.

PIN try counters are never probed: that would take wrong PINs, and on a TPM every wrong PIN
counts against the device-wide dictionary-attack lockout.
"""

from __future__ import annotations

import os
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pkcs11.exceptions as px
from pkcs11 import Attribute, Mechanism, ObjectClass

from ..errors import TokenIssueError
from ..models import KeyAlgorithm, KeyType, TokenInfo
from ._capabilities import _LIBRARY_QUIRKS, OPTIONAL_CERT_ATTRIBUTES
from ._errors import translate
from ._module import placeholder_serial
from .signing import plan_signature
from .uri import KeySelector

__all__ = ["KeyTypeCheck", "TokenCheck", "check_token"]

_PROBE_LABEL = "tokenissue-check-"

#: The hash tokenissue signs CSRs, certificates and CRLs with, per key type (pkix.csr.hash_for:
#: SHA-384 goes with P-384, Ed25519 signs the message itself, SHA-256 for the rest).
_HASH = {KeyType.EC_P384: "sha384", KeyType.ED25519: None}

#: Mechanisms with which a private key of each algorithm decrypts, unwraps or agrees on keys.
#: PKCS#11 has no EC decryption mechanism: an EC key's only such use is ECDH (CKA_DERIVE).
_DECRYPTING = {
    KeyAlgorithm.RSA: (Mechanism.RSA_PKCS, Mechanism.RSA_PKCS_OAEP, Mechanism.RSA_X_509),
    KeyAlgorithm.EC: (),
    KeyAlgorithm.ED25519: (),
}
_DERIVING = {
    KeyAlgorithm.RSA: (),
    KeyAlgorithm.EC: (Mechanism.ECDH1_DERIVE, Mechanism.ECDH1_COFACTOR_DERIVE),
    KeyAlgorithm.ED25519: (),
}


@dataclass(frozen=True)
class KeyTypeCheck:
    """One key type on this token."""

    key_type: KeyType
    supported: bool
    """Whether the mechanism list and key-size range allow it (proven by the probe when run)."""
    reason: str = ""
    """Why not, when not supported."""
    hash: str | None = None
    """The hash tokenissue signs with for this key type ("sha256", "sha384"; None: Ed25519)."""
    signature: str = ""
    """The mechanism CSRs and certificates are signed with, and who hashes."""
    pss: str = ""
    """RSA only: the mechanism an RSA-PSS signature would use ("" when none). tokenissue's own
    CSRs, certificates and CRLs are PKCS#1 v1.5; this is for callers that ask for PSS."""
    template: str | None = None
    """Probe: the key template step the token accepted."""
    refused_steps: tuple[tuple[str, str], ...] = ()
    """Probe: the template steps the token refused before that one, with its answer."""
    sign_only: bool | None = None
    """Probe: whether the key came out with CKA_DECRYPT false."""
    decrypts_with: tuple[str, ...] | None = None
    """Probe: mechanisms the key can decrypt, unwrap or derive with (its usage flags, the
    token's mechanism list and the CKA_ALLOWED_MECHANISMS read back, all three agreeing)."""
    decrypt_proven: bool | None = None
    """Probe, RSA keys that decrypt: whether the token really decrypted a PKCS#1 v1.5 message."""
    allowed_mechanisms: bool | None = None
    """Probe: whether CKA_ALLOWED_MECHANISMS was taken and reads back."""
    allowed: tuple[str, ...] | None = None
    """Probe: CKA_ALLOWED_MECHANISMS as read back from the key (None when it cannot be read)."""
    verified: bool | None = None
    """Probe: whether a token signature verified on the host."""


@dataclass(frozen=True)
class TokenCheck:
    """The answer to "will tokenissue work on this token, and how?"."""

    token: TokenInfo
    library: str
    key_types: list[KeyTypeCheck]
    probed: bool
    sign_only_keys: bool | None
    """Whether the token makes sign-only keys of every usable type (None: unknown)."""
    allowed_mechanisms: bool | None
    certificate_category: bool | None
    """Whether certificate objects keep CKA_CERTIFICATE_CATEGORY."""
    refused_cert_attributes: list[str] | None
    pin_counters: bool | None
    """Whether the token reports PIN state (count low / final try / locked); None: unknown module."""
    lockout: str | None
    serials_unique: bool
    """Whether the token's serial tells it apart from every other token present."""
    source: dict[str, str] = field(default_factory=dict)
    """Per finding, where it comes from: "probe", "known module behaviour", "tokens present", a
    placeholder serial, or why it is unknown ("module not on record; ...")."""
    certificates_stored: bool | None = None
    """Probe: whether the token stored a certificate object at all."""
    certificate_error: str = ""
    """Probe: why the scratch certificate could not be stored."""
    leftovers: list[str] = field(default_factory=list)
    """Probe: scratch objects the token refused to delete (label, what)."""


def _hash_of(kt: KeyType) -> str | None:
    return _HASH.get(kt, "sha256")


def _signature_plan(kt: KeyType, mechanisms: frozenset[Any], *, pss: bool = False) -> str:
    alg, hash_name = kt.algorithm, _hash_of(kt)
    if pss:
        hash_name = "sha256"
    try:
        plan = plan_signature(alg, hash_name, set(mechanisms), pss_salt=32 if pss else None)
    except TokenIssueError:
        return ""
    if alg is KeyAlgorithm.ED25519:
        return f"CKM_{plan.mechanism.name} (pure)"
    who = f"host hashes {plan.host_hash.upper().replace('SHA', 'SHA-')}" if plan.host_hash else "token hashes"
    return f"CKM_{plan.mechanism.name} ({who})"


def check_token(session: Any, present: list[TokenInfo], *, probe: bool = False) -> TokenCheck:
    """Describe ``session``'s token (a :class:`TokenSession`; logged in when ``probe``)."""
    caps = session.capabilities
    quirks = caps.quirks
    known = caps.library.strip() in _LIBRARY_QUIRKS
    rows: list[KeyTypeCheck] = []
    for kt in KeyType:
        refusal = caps.key_size_refusal(kt)
        rows.append(
            KeyTypeCheck(
                key_type=kt,
                supported=refusal is None,
                reason=refusal or "",
                hash=_hash_of(kt),
                signature=_signature_plan(kt, caps.mechanisms) if refusal is None else "",
                pss=_signature_plan(kt, caps.mechanisms, pss=True)
                if kt.algorithm is KeyAlgorithm.RSA and refusal is None else "",
            )
        )  # fmt: skip
    source = {"key_types": "mechanism list and key sizes"}
    sign_only = quirks.expect_sign_only
    allowed = quirks.expect_allowed_mechanisms
    category = quirks.expect_certificate_category
    refused: list[str] | None = None
    for k, v in (("sign_only_keys", sign_only), ("allowed_mechanisms", allowed), ("certificate_category", category)):
        source[k] = "known module behaviour" if v is not None else "module not on record; run with --probe"
    # A module tokenissue has no record of gets no claim about its PIN counters: proving them
    # would take wrong PINs.
    pin_counters: bool | None = caps.pin_counters if known else None
    lockout: str | None = caps.lockout if known else None
    source["pin_counters"] = (
        "known module behaviour" if known else "module not on record; never probed: that would take wrong PINs"
    )
    stored: bool | None = None
    cert_error = ""
    leftovers: list[str] = []
    if probe:
        rows = [_probe_key(session, r, leftovers) if r.supported else r for r in rows]
        made = [r for r in rows if r.template is not None]
        if made:
            sign_only = all(r.sign_only for r in made)
            allowed = all(r.allowed_mechanisms for r in made)
            source.update(sign_only_keys="probe", allowed_mechanisms="probe", key_types="probe")
        stored, refused, category, cert_error = _probe_certificate(session, leftovers)
        source["certificate_category"] = "probe"
    serial = session.info.serial
    same = [t for t in present if t.serial == serial and t.initialized]
    if placeholder_serial(serial):
        source["serials"] = f"serial '{serial}' is a placeholder, not a per-token number"
    elif len(same) > 1:
        source["serials"] = f"tokens present: {len(same)} share serial {serial}"
    else:
        source["serials"] = "tokens present"
    return TokenCheck(
        token=session.info,
        library=caps.library,
        key_types=rows,
        probed=probe,
        sign_only_keys=sign_only,
        allowed_mechanisms=allowed,
        certificate_category=category,
        refused_cert_attributes=refused,
        pin_counters=pin_counters,
        lockout=lockout,
        serials_unique=len(same) <= 1 and session.info.identity == serial,
        source=source,
        certificates_stored=stored,
        certificate_error=cert_error,
        leftovers=leftovers,
    )


def _mech_names(values: Any) -> tuple[str, ...]:
    out = []
    for v in values:
        try:
            out.append("CKM_" + Mechanism(int(v)).name)
        except ValueError:
            out.append(f"0x{int(v):08x}")
    return tuple(out)


def _read_usage(session: Any, kid: bytes) -> dict[Any, Any]:
    """The usage attributes of the private key ``kid`` as the token reports them (missing when
    the token does not know an attribute)."""
    obj = session._one_private(KeySelector(id=kid))
    out: dict[Any, Any] = {}
    with session.lock:
        for a in (Attribute.DECRYPT, Attribute.UNWRAP, Attribute.DERIVE, Attribute.SIGN_RECOVER,
                  Attribute.ALLOWED_MECHANISMS):  # fmt: skip
            with suppress(px.PKCS11Error):
                out[a] = obj[a]
    return out


def _decrypting(kt: KeyType, usage: dict[Any, Any], offered: frozenset[Any]) -> tuple[Any, ...]:
    """The mechanisms the key can decrypt, unwrap or derive with, by its flags, the token's list
    and its CKA_ALLOWED_MECHANISMS (when the token keeps one, it is enforced by PKCS#11)."""
    allowed = usage.get(Attribute.ALLOWED_MECHANISMS)
    permitted = set(allowed) if allowed else None
    mechs: list[Any] = []
    if usage.get(Attribute.DECRYPT) or usage.get(Attribute.UNWRAP):
        mechs += _DECRYPTING[kt.algorithm]
    if usage.get(Attribute.SIGN_RECOVER) and kt.algorithm is KeyAlgorithm.RSA:
        mechs.append(Mechanism.RSA_X_509)  # sign-recover with raw RSA is a decryption
    if usage.get(Attribute.DERIVE):
        mechs += _DERIVING[kt.algorithm]
    seen: list[Any] = []
    for m in mechs:
        if m in offered and (permitted is None or int(m) in permitted) and m not in seen:
            seen.append(m)
    return tuple(seen)


def _probe_key(session: Any, row: KeyTypeCheck, leftovers: list[str]) -> KeyTypeCheck:
    """Make, read back, use and delete a scratch key of ``row.key_type``."""
    from dataclasses import replace

    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

    label = _PROBE_LABEL + os.urandom(4).hex()
    algorithm = row.key_type.algorithm
    try:
        info = session.generate_key(row.key_type, label)
    except TokenIssueError as e:
        refused = tuple(session.capabilities.template_refusals.get(algorithm, ()))
        return replace(row, supported=False, reason=f"generation refused: {e}", refused_steps=refused)
    caps = session.capabilities
    step = caps.template_step[algorithm]
    refused_steps = tuple(caps.template_refusals.get(algorithm, ()))
    try:
        usage = _read_usage(session, info.id)
        allowed_back = usage.get(Attribute.ALLOWED_MECHANISMS)
        decrypts = _decrypting(row.key_type, usage, caps.mechanisms)
        key = session.private_key(KeySelector(id=info.id))
        data = b"tokenissue token check"
        pub = key.public_key()
        h: hashes.SHA256 | hashes.SHA384 = hashes.SHA384() if row.hash == "sha384" else hashes.SHA256()
        try:
            if isinstance(key, rsa.RSAPrivateKey):
                assert isinstance(pub, rsa.RSAPublicKey)
                sig = key.sign(data, padding.PKCS1v15(), h)
                pub.verify(sig, data, padding.PKCS1v15(), h)
            elif isinstance(key, ec.EllipticCurvePrivateKey):
                assert isinstance(pub, ec.EllipticCurvePublicKey)
                # The key type's own hash (CSRs, certificates), and SHA-256 (proofs of possession).
                for hh in (h, hashes.SHA256()) if row.hash == "sha384" else (h,):
                    sig = key.sign(data, ec.ECDSA(hh))
                    pub.verify(sig, data, ec.ECDSA(hh))
            else:
                sig = key.sign(data)
                pub.verify(sig, data)
            verified = True
        except (TokenIssueError, InvalidSignature):
            verified = False
        proven: bool | None = None
        if verified and Mechanism.RSA_PKCS in decrypts and isinstance(pub, rsa.RSAPublicKey):
            # Only a mechanism the key's flags and CKA_ALLOWED_MECHANISMS both permit is tried:
            # a refused C_DecryptInit can leave a tpm2-pkcs11 key undeletable in this process.
            proven = _try_decrypt(session, info.id, pub)
        return replace(
            row,
            supported=verified,
            reason="" if verified else "a signature made on the token did not verify",
            template=step.name,
            refused_steps=refused_steps,
            sign_only=not info.can_decrypt,
            decrypts_with=_mech_names(decrypts),
            decrypt_proven=proven,
            allowed_mechanisms=bool(allowed_back) if step.allowed_mechanisms else False,
            allowed=_mech_names(allowed_back) if allowed_back else None,
            verified=verified,
        )
    finally:
        try:
            session.delete_key(KeySelector(id=info.id))
        except TokenIssueError as e:
            leftovers.append(f"key '{label}' (id {info.id.hex()}): {e}")


def _try_decrypt(session: Any, kid: bytes, pub: Any) -> bool:
    """Whether the token decrypts, with the key ``kid``, a PKCS#1 v1.5 message made on the host."""
    from cryptography.hazmat.primitives.asymmetric import padding

    secret = os.urandom(16)
    ciphertext = pub.encrypt(secret, padding.PKCS1v15())
    obj = session._one_private(KeySelector(id=kid))
    try:
        with session.lock, translate("decrypt"):
            return bytes(obj.decrypt(ciphertext, mechanism=Mechanism.RSA_PKCS)) == secret
    except (TokenIssueError, px.PKCS11Error):
        return False


def _probe_certificate(session: Any, leftovers: list[str]) -> tuple[bool, list[str] | None, bool | None, str]:
    """Store, read back and delete a scratch CA certificate.

    Returns (stored, optional attributes refused, CKA_CERTIFICATE_CATEGORY kept, why not stored).
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())  # a host key: only the certificate object matters
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tokenissue token check")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    kid = os.urandom(20)
    label = _PROBE_LABEL + "cert"
    before = set(session.capabilities.cert_refused)
    session.capabilities.cert_refused.clear()  # prove it anew
    try:
        session.write_certificate(cert, key_id=kid, label=label, trusted=True)
    except TokenIssueError as e:
        session.capabilities.cert_refused.update(before)
        _delete_certificate(session, kid, label, leftovers)
        return False, None, None, str(e)
    try:
        refused = [a.name for a in OPTIONAL_CERT_ATTRIBUTES if a in session.capabilities.cert_refused]
        kept: bool | None = None
        if "CERTIFICATE_CATEGORY" not in refused:
            # Taken is not kept: read it back (2 = authority).
            with session.lock:
                objs = list(session._session.get_objects({Attribute.CLASS: ObjectClass.CERTIFICATE, Attribute.ID: kid}))
                value = None
                with suppress(px.PKCS11Error):
                    value = objs[0][Attribute.CERTIFICATE_CATEGORY] if objs else None
            kept = value == 2
        else:
            kept = False
        return True, refused, kept, ""
    finally:
        _delete_certificate(session, kid, label, leftovers)


def _delete_certificate(session: Any, kid: bytes, label: str, leftovers: list[str]) -> None:
    try:
        session.delete_certificate(kid)
    except TokenIssueError as e:
        leftovers.append(f"certificate '{label}' (id {kid.hex()}): {e}")
