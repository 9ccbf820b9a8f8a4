"""``token check``: will tokenissue work on this token, and how?

Without probing, the answer comes from the token's mechanism list and key-size ranges
(C_GetMechanismInfo) and from what the module is known to do (:mod:`._capabilities`); each
finding says which, and a module tokenissue knows nothing about gets "unknown", not a guess.
With ``probe=True`` every claim that can be proven is proven on the token itself: a scratch key
per key type is generated with the negotiated template, its attributes are read back (usage
flags, CKA_ALLOWED_MECHANISMS), it signs a test message with the hash tokenissue uses for that
key type and the signature is verified on the host; an RSA key is given a test message encrypted
on the host: one the token made able to decrypt must decrypt it, one that only its
CKA_ALLOWED_MECHANISMS keeps from decrypting must be refused, so "can decrypt" is a fact, not a
flag (a token that forces CKA_DECRYPT gets every key pinned to the signature mechanisms that do
not decrypt, without CKM_RSA_PKCS; tpm2-pkcs11 enforces that list). For a key type whose keys
still decrypt as made (a token that can pin nothing, or does not enforce the list), what
``--require-sign-only`` does instead is probed too. A scratch certificate is stored with the
optional attributes and read back; and everything scratch is deleted again (also when a step
fails). A scratch object the token refuses to delete is named in the report (``leftovers``)
instead of being passed over in silence.

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
from ._capabilities import _LIBRARY_QUIRKS, OPTIONAL_CERT_ATTRIBUTES, decrypting_mechanisms, signing_mechanisms
from ._module import _rv, placeholder_serial
from .signing import plan_signature
from .uri import KeySelector

__all__ = ["KeyTypeCheck", "RequiredKeyCheck", "SignOnlyKeys", "TokenCheck", "check_token"]

_PROBE_LABEL = "tokenissue-check-"

#: The hash tokenissue signs CSRs, certificates and CRLs with, per key type (pkix.csr.hash_for:
#: SHA-384 goes with P-384, Ed25519 signs the message itself, SHA-256 for the rest).
_HASH = {KeyType.EC_P384: "sha384", KeyType.ED25519: None}

#: What keeps a key from decrypting (``KeyTypeCheck.sign_only_by``):
#:   "flags"               CKA_DECRYPT, UNWRAP, DERIVE and SIGN_RECOVER are false (SoftHSM);
#:   "no-mechanism"        a flag is set, but no mechanism can use it: PKCS#11 has no EC
#:                         decryption, and CKA_DERIVE is false (an EC key on a TPM);
#:   "allowed-mechanisms"  the flags would let it decrypt; its CKA_ALLOWED_MECHANISMS, which
#:                         the token enforces, holds no mechanism that decrypts.
SIGN_ONLY_BY = ("flags", "no-mechanism", "allowed-mechanisms")
_USAGE_FLAGS = (Attribute.DECRYPT, Attribute.UNWRAP, Attribute.DERIVE, Attribute.SIGN_RECOVER)


@dataclass(frozen=True)
class RequiredKeyCheck:
    """Probe: what ``--require-sign-only`` does, for a key type whose default key decrypts (on the
    tokens seen it refuses: the default key was as narrow as the token allows)."""

    made: bool
    """Whether the token made one (False: refused, ``reason`` says why)."""
    reason: str = ""
    template: str | None = None
    sign_only_by: str | None = None
    """What keeps it from decrypting (see :data:`SIGN_ONLY_BY`); None: it can decrypt."""
    allowed: tuple[str, ...] | None = None
    """CKA_ALLOWED_MECHANISMS as read back."""
    decrypt_test: str | None = None
    """The token's answer to a test decryption ("decrypted", "refused: CKR_..."); None: nothing to try."""
    verified: bool | None = None
    """Whether a signature it made verified on the host."""

    @property
    def sign_only(self) -> bool:
        """Whether the key is sign-only, as read back and, where a decryption can be tried, as tried."""
        return bool(self.made and self.verified and self.sign_only_by is not None and self.decrypt_test != "decrypted")


@dataclass(frozen=True)
class SignOnlyKeys:
    """The ``sign_only_keys`` finding: can tokenissue get sign-only keys on this token, and how."""

    value: bool | None
    """Whether every usable key type can be had sign-only (by default, or with --require-sign-only)."""
    by_default: tuple[KeyType, ...] = ()
    """Key types whose keys are sign-only as made by default."""
    with_require_sign_only: tuple[KeyType, ...] = ()
    """Key types whose default keys can decrypt, but a --require-sign-only key was sign-only (probe
    only; none on the tokens seen: tokenissue already pins every key it can to signing)."""
    never: tuple[KeyType, ...] = ()
    """Key types that cannot be made sign-only here (--require-sign-only refuses them)."""
    decrypt_flag: bool | None = None
    """Whether the token sets CKA_DECRYPT/UNWRAP on the keys it makes (whatever the template asks)."""


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
    """Probe: whether the key made by default cannot decrypt, unwrap or derive (``decrypts_with``
    is empty), whatever its CKA_DECRYPT says."""
    decrypt_flag: bool | None = None
    """Probe: CKA_DECRYPT or CKA_UNWRAP as read back (a TPM sets them on every key)."""
    sign_only_by: str | None = None
    """Probe: what keeps the default key from decrypting (:data:`SIGN_ONLY_BY`); None: it decrypts."""
    decrypts_with: tuple[str, ...] | None = None
    """Probe: mechanisms the key can decrypt, unwrap or derive with (its usage flags, the
    token's mechanism list and the CKA_ALLOWED_MECHANISMS read back, all three agreeing)."""
    decrypt_proven: bool | None = None
    """Probe, RSA keys that decrypt: whether the token really decrypted a PKCS#1 v1.5 message."""
    decrypt_test: str | None = None
    """Probe, RSA keys: the token's answer to a test decryption ("decrypted", "refused: CKR_...")."""
    required: RequiredKeyCheck | None = None
    """Probe, key types whose default key decrypts: the key --require-sign-only makes instead."""
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
    sign_only: SignOnlyKeys
    """Whether (and how) tokenissue gets sign-only keys of every usable type on this token."""
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

    @property
    def sign_only_keys(self) -> bool | None:
        """Whether every usable key type can be had sign-only here (None: unknown)."""
        return self.sign_only.value


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
    allowed = quirks.expect_allowed_mechanisms
    category = quirks.expect_certificate_category
    usable = [r.key_type for r in rows if r.supported]
    sign_only = _expected_sign_only(usable, quirks.expect_sign_only, allowed, caps.mechanisms)
    refused: list[str] | None = None
    for k, v in (("sign_only_keys", sign_only.value), ("allowed_mechanisms", allowed), ("certificate_category", category)):
        source[k] = "known module behaviour" if v is not None else "module not on record; the probe tells"
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
            sign_only = _proven_sign_only(made)
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
        sign_only=sign_only,
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


def _expected_sign_only(
    usable: list[KeyType], flags_off: bool | None, allowed: bool | None, offered: frozenset[Any]
) -> SignOnlyKeys:
    """The sign_only_keys finding without a probe: from what the module is known to do (whether
    it takes CKA_DECRYPT=False, whether it keeps CKA_ALLOWED_MECHANISMS) and the mechanism list,
    the way key generation would template each key type."""
    if flags_off is None or not usable:
        return SignOnlyKeys(value=None)
    if flags_off:
        return SignOnlyKeys(value=True, by_default=tuple(usable), decrypt_flag=False)
    if allowed is None:
        return SignOnlyKeys(value=None, decrypt_flag=True)
    by_default: list[KeyType] = []
    never: list[KeyType] = []
    for kt in usable:
        alg = kt.algorithm
        forced: dict[Any, Any] = {Attribute.DECRYPT: True}
        # As key generation templates it where the token decides CKA_DECRYPT: pinned to the
        # signature mechanisms that do not decrypt, when the token offers any (and keeps the list).
        narrow = signing_mechanisms(alg, offered, sign_only=True)
        pinned = {**forced, Attribute.ALLOWED_MECHANISMS: narrow or signing_mechanisms(alg, offered)}
        if not decrypting_mechanisms(alg, pinned if allowed else forced, offered):
            by_default.append(kt)
        else:
            never.append(kt)  # --require-sign-only refuses it: nothing narrower to ask for
    return SignOnlyKeys(value=not never, by_default=tuple(by_default), never=tuple(never), decrypt_flag=True)


def _proven_sign_only(made: list[KeyTypeCheck]) -> SignOnlyKeys:
    """The sign_only_keys finding from the probe's keys."""
    by_default = tuple(r.key_type for r in made if r.sign_only)
    required = tuple(r.key_type for r in made if not r.sign_only and r.required is not None and r.required.sign_only)
    never = tuple(r.key_type for r in made if r.key_type not in by_default + required)
    return SignOnlyKeys(value=not never, by_default=by_default, with_require_sign_only=required, never=never,
                        decrypt_flag=any(r.decrypt_flag for r in made))  # fmt: skip


def _sign_only_by(algorithm: KeyAlgorithm, usage: dict[Any, Any], offered: frozenset[Any]) -> str | None:
    """What keeps a key with these usage attributes from decrypting (:data:`SIGN_ONLY_BY`), or None."""
    if decrypting_mechanisms(algorithm, usage, offered):
        return None
    if not any(usage.get(a) for a in _USAGE_FLAGS):
        return "flags"
    unpinned = {a: v for a, v in usage.items() if a != Attribute.ALLOWED_MECHANISMS}
    return "allowed-mechanisms" if decrypting_mechanisms(algorithm, unpinned, offered) else "no-mechanism"


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


def _probe_key(session: Any, row: KeyTypeCheck, leftovers: list[str]) -> KeyTypeCheck:
    """Make, read back, use and delete a scratch key of ``row.key_type`` (and, when that key can
    decrypt, the one --require-sign-only makes instead)."""
    from dataclasses import replace

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
        decrypts = decrypting_mechanisms(row.key_type.algorithm, usage, caps.mechanisms)
        by = _sign_only_by(algorithm, usage, caps.mechanisms)
        verified, pub = _sign_and_verify(session, info.id, row.hash)
        proven: bool | None = None
        test: str | None = None
        if verified:
            test, tried = _decrypt_test(session, info.id, pub, usage, caps.mechanisms)
            if decrypts and test is not None:
                proven = test == "decrypted"
            elif test == "decrypted":
                # Its CKA_ALLOWED_MECHANISMS said no, and the token decrypted anyway: the list
                # is not enforced, and the key is reported as what it did.
                decrypts, by, proven = (tried,), None, True
    finally:
        _delete_key(session, info.id, label, leftovers)
    required: RequiredKeyCheck | None = None
    if verified and decrypts:
        required = _probe_required(session, row, leftovers)
    return replace(
        row,
        supported=verified,
        reason="" if verified else "a signature made on the token did not verify",
        template=step.name,
        refused_steps=refused_steps,
        sign_only=not decrypts,  # (a test decryption that worked is among decrypts)
        decrypt_flag=bool(usage.get(Attribute.DECRYPT) or usage.get(Attribute.UNWRAP)),
        sign_only_by=by,
        decrypts_with=_mech_names(decrypts),
        decrypt_proven=proven,
        decrypt_test=test,
        required=required,
        allowed_mechanisms=bool(allowed_back) if step.allowed_mechanisms else False,
        allowed=_mech_names(allowed_back) if allowed_back else None,
        verified=verified,
    )


def _probe_required(session: Any, row: KeyTypeCheck, leftovers: list[str]) -> RequiredKeyCheck:
    """Make, read back, use and delete the scratch key --require-sign-only makes of ``row.key_type``."""
    label = _PROBE_LABEL + os.urandom(4).hex()
    algorithm = row.key_type.algorithm
    try:
        info = session.generate_key(row.key_type, label, require_sign_only=True)
    except TokenIssueError as e:
        return RequiredKeyCheck(made=False, reason=str(e))
    caps = session.capabilities
    try:
        usage = _read_usage(session, info.id)
        allowed_back = usage.get(Attribute.ALLOWED_MECHANISMS)
        verified, pub = _sign_and_verify(session, info.id, row.hash)
        test = _decrypt_test(session, info.id, pub, usage, caps.mechanisms)[0] if verified else None
    finally:
        _delete_key(session, info.id, label, leftovers)
    return RequiredKeyCheck(
        made=True,
        template=caps.template_step[algorithm].name,
        sign_only_by=_sign_only_by(algorithm, usage, caps.mechanisms),
        allowed=_mech_names(allowed_back) if allowed_back else None,
        decrypt_test=test,
        verified=verified,
    )


def _sign_and_verify(session: Any, kid: bytes, hash_name: str | None) -> tuple[bool, Any]:
    """Whether the key ``kid`` signs a test message (with the key type's hash) that verifies on
    the host; and its public key."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

    key = session.private_key(KeySelector(id=kid))
    data = b"tokenissue token check"
    pub = key.public_key()
    h: hashes.SHA256 | hashes.SHA384 = hashes.SHA384() if hash_name == "sha384" else hashes.SHA256()
    try:
        if isinstance(key, rsa.RSAPrivateKey):
            assert isinstance(pub, rsa.RSAPublicKey)
            sig = key.sign(data, padding.PKCS1v15(), h)
            pub.verify(sig, data, padding.PKCS1v15(), h)
        elif isinstance(key, ec.EllipticCurvePrivateKey):
            assert isinstance(pub, ec.EllipticCurvePublicKey)
            # The key type's own hash (CSRs, certificates), and SHA-256 (proofs of possession).
            for hh in (h, hashes.SHA256()) if hash_name == "sha384" else (h,):
                sig = key.sign(data, ec.ECDSA(hh))
                pub.verify(sig, data, ec.ECDSA(hh))
        else:
            sig = key.sign(data)
            pub.verify(sig, data)
    except (TokenIssueError, InvalidSignature):
        return False, pub
    return True, pub


def _delete_key(session: Any, kid: bytes, label: str, leftovers: list[str]) -> None:
    try:
        session.delete_key(KeySelector(id=kid))
    except TokenIssueError as e:
        leftovers.append(f"key '{label}' (id {kid.hex()}): {e}")


def _decrypt_test(
    session: Any, kid: bytes, pub: Any, usage: dict[Any, Any], offered: frozenset[Any]
) -> tuple[str | None, Any]:
    """Ask the RSA key ``kid`` to decrypt a message encrypted on the host, with the first of
    CKM_RSA_PKCS and CKM_RSA_PKCS_OAEP that its usage flags and the token's list permit
    (whatever its CKA_ALLOWED_MECHANISMS says: that is what is tested). ("decrypted", "refused:
    CKR_..." or "wrong plaintext", the mechanism); (None, None) when there is nothing to try (EC
    and Ed25519 keys, keys whose CKA_DECRYPT is false).

    Only CKA_ALLOWED_MECHANISMS refusals are provoked: the token answers them before it starts
    an operation, and the key can be deleted afterwards in the same process (measured on
    tpm2-pkcs11 1.9; after a failed C_SignInit it cannot). A key whose CKA_DECRYPT is false is
    never asked."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    if not isinstance(pub, rsa.RSAPublicKey) or not usage.get(Attribute.DECRYPT):
        return None, None
    unpinned = {a: v for a, v in usage.items() if a != Attribute.ALLOWED_MECHANISMS}
    candidates = decrypting_mechanisms(KeyAlgorithm.RSA, unpinned, offered)
    secret = os.urandom(16)
    if Mechanism.RSA_PKCS in candidates:
        mechanism, ciphertext = Mechanism.RSA_PKCS, pub.encrypt(secret, padding.PKCS1v15())
    elif Mechanism.RSA_PKCS_OAEP in candidates:
        # python-pkcs11's default OAEP parameters: SHA-1, MGF1-SHA-1, no label.
        oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None)  # noqa: S303
        mechanism, ciphertext = Mechanism.RSA_PKCS_OAEP, pub.encrypt(secret, oaep)
    else:
        return None, None
    obj = session._one_private(KeySelector(id=kid))
    try:
        with session.lock:
            plain = bytes(obj.decrypt(ciphertext, mechanism=mechanism))
    except px.PKCS11Error as e:
        return f"refused: {_rv(e)}", mechanism
    return ("decrypted" if plain == secret else "wrong plaintext"), mechanism


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
