"""Certificate profiles: what each certificate type contains and which requests it accepts.

The built-in profiles live in ``profiles.toml`` next to this module. A CA directory may carry
its own ``profiles.toml``: :func:`load_profiles` reads the built-in file first and then the
user's, where a table for a new name adds a profile and a table for an existing name changes
only the keys it sets. Every value is checked on load, so a typo in a usage name is a
:class:`ConfigError` (exit 3) when the CA starts, not a surprise in the first certificate.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

from ..errors import ConfigError, RequestRejected, UsageError
from ..models import KeyAlgorithm, KeyType
from ..pkix.names import check_names

__all__ = [
    "EKU_NAMES",
    "KEY_USAGE_NAMES",
    "SAN_TYPES",
    "SUBJECT_FIELDS",
    "Profile",
    "check_request",
    "eku_for",
    "get_profile",
    "key_usage_for",
    "load_profiles",
]


@dataclass(frozen=True)
class Profile:
    """One certificate type. Built by :func:`load_profiles`; names are canonical on load."""

    name: str
    """The name users pass as ``--profile`` (lowercase letters, digits and dashes)."""

    description: str
    """One line shown when profiles are listed."""

    days: int
    """Certificate lifetime in days."""

    key_usage: tuple[str, ...]
    """keyUsage bit names (see :data:`KEY_USAGE_NAMES`); bits a key cannot perform are
    dropped per key by :func:`key_usage_for`."""

    extended_key_usage: tuple[str, ...]
    """extendedKeyUsage names from :data:`EKU_NAMES`, or dotted OIDs."""

    policies: tuple[str, ...]
    """certificatePolicies OIDs as dotted strings; empty means no policies extension."""

    allowed_key_types: tuple[KeyType, ...]
    """Key types accepted; for RSA any modulus from the floor up is accepted (see
    :attr:`min_rsa_bits`), so an older 4096-bit key is not refused by a list naming 3072."""

    min_rsa_bits: int
    """Smallest RSA modulus accepted; the floor is the larger of this and the smallest RSA
    type in :attr:`allowed_key_types`."""

    subject_fields: tuple[str, ...]
    """Subject attributes a requester may set, by canonical name (see :data:`SUBJECT_FIELDS`)."""

    required_subject_fields: tuple[str, ...]
    """Subject attributes that must be present; a subset of :attr:`subject_fields`."""

    san_types: tuple[str, ...]
    """SAN kinds a requester may ask for: ``dns``, ``email``, ``uri``, ``ip``."""

    required_san_types: tuple[str, ...]
    """When not empty, at least one SAN must be of one of these kinds (a TLS server needs a
    DNS name or an address, an S/MIME certificate an e-mail address)."""

    max_san: int
    """The most SAN entries one certificate may carry."""

    renew_before_days: int
    """Renewal is due this many days before notAfter."""

    ca: bool = False
    """Issue CA certificates (basicConstraints cA=TRUE): an intermediate under this CA. Needs
    key_cert_sign in :attr:`key_usage`."""

    path_length: int | None = None
    """With :attr:`ca`: the pathLenConstraint (0: the intermediate may issue end-entity
    certificates only); None: no constraint."""

    require_sign_only: bool = False
    """Refuse keys that can decrypt as well as sign (where a token allows neither CKA_DECRYPT
    off nor a signature-only CKA_ALLOWED_MECHANISMS). Enforced where the key is made, by an enrollment against this CA in the same
    process (``--ca DIR``); a CA reached over a network cannot see a key's attributes, so there
    the holder's ``--require-sign-only`` is what applies. See docs/tokens-and-keys.md."""

    cps_uri: str | None = None
    """A CPS pointer qualifier on every policy in :attr:`policies` (where the CA publishes
    its certification practice statement)."""

    user_notice: str | None = None
    """A userNotice explicitText qualifier on every policy (at most 200 characters)."""

    identify_data: bool = False
    """Bind the holder's registration number into the certificate as a Korean VID
    (subjectAltName otherName identifyData, :mod:`tokenissue.pkix.kr_vid`): the holder gives
    the number and a random R at enrollment, the CA computes the VID and forgets both."""

    require_verified_by: bool = False
    """Refuse a registration that does not record how the officer verified the holder's
    identity (a branch visit with an ID card, a video call, ...): the record a Korean CA keeps."""

    keep_term_on_reissue: bool = False
    """A re-issue (a registration that replaces a valid certificate) keeps the replaced
    certificate's notAfter instead of starting a new term of :attr:`days`."""

    approval: bool = False
    """A request authorized by a registration's code waits for an officer's approval (``ca
    approve``) before it is issued: SCEP answers PENDING and the client's poll gets the
    certificate. Protocols that cannot wait (CMP, EST, a local enrollment) are refused."""


#: keyUsage bit names as cryptography spells them, with the algorithms able to use each bit.
#: Signing bits suit every key type; encryption of a key needs RSA; key agreement needs EC.
KEY_USAGE_NAMES: Mapping[str, frozenset[KeyAlgorithm]] = {
    "digital_signature": frozenset(KeyAlgorithm),
    "content_commitment": frozenset(KeyAlgorithm),
    "key_encipherment": frozenset({KeyAlgorithm.RSA}),
    "data_encipherment": frozenset({KeyAlgorithm.RSA}),
    "key_agreement": frozenset({KeyAlgorithm.EC}),
    "key_cert_sign": frozenset(KeyAlgorithm),
    "crl_sign": frozenset(KeyAlgorithm),
    "encipher_only": frozenset({KeyAlgorithm.EC}),
    "decipher_only": frozenset({KeyAlgorithm.EC}),
}
# The X.509 name of content_commitment, which many people still use.
_KEY_USAGE_ALIASES = {"non_repudiation": "content_commitment"}

#: extendedKeyUsage names accepted in profiles.
EKU_NAMES: Mapping[str, ObjectIdentifier] = {
    "server_auth": ExtendedKeyUsageOID.SERVER_AUTH,
    "client_auth": ExtendedKeyUsageOID.CLIENT_AUTH,
    "code_signing": ExtendedKeyUsageOID.CODE_SIGNING,
    "email_protection": ExtendedKeyUsageOID.EMAIL_PROTECTION,
    "time_stamping": ExtendedKeyUsageOID.TIME_STAMPING,
    "ocsp_signing": ExtendedKeyUsageOID.OCSP_SIGNING,
    "smartcard_logon": ExtendedKeyUsageOID.SMARTCARD_LOGON,
    "any": ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE,
}

#: Subject attributes by the canonical name used in profiles and messages.
SUBJECT_FIELDS: Mapping[str, ObjectIdentifier] = {
    "CN": NameOID.COMMON_NAME,
    "O": NameOID.ORGANIZATION_NAME,
    "OU": NameOID.ORGANIZATIONAL_UNIT_NAME,
    "C": NameOID.COUNTRY_NAME,
    "L": NameOID.LOCALITY_NAME,
    "ST": NameOID.STATE_OR_PROVINCE_NAME,
    "STREET": NameOID.STREET_ADDRESS,
    "DC": NameOID.DOMAIN_COMPONENT,
    "UID": NameOID.USER_ID,
    "serialNumber": NameOID.SERIAL_NUMBER,
    "emailAddress": NameOID.EMAIL_ADDRESS,
    "GN": NameOID.GIVEN_NAME,
    "SN": NameOID.SURNAME,
    "title": NameOID.TITLE,
    "organizationIdentifier": NameOID.ORGANIZATION_IDENTIFIER,
}
_FIELD_BY_OID = {oid: name for name, oid in SUBJECT_FIELDS.items()}
# Case-insensitive lookup, plus the long names people also write.
_FIELD_LOOKUP = {name.lower(): name for name in SUBJECT_FIELDS} | {
    "givenname": "GN",
    "surname": "SN",
    "email": "emailAddress",
}

#: SAN kinds, in the spelling of :func:`tokenissue.pkix.names.parse_san`.
SAN_TYPES: Mapping[type[x509.GeneralName], str] = {
    x509.DNSName: "dns",
    x509.RFC822Name: "email",
    x509.UniformResourceIdentifier: "uri",
    x509.IPAddress: "ip",
}

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]*$")

# Keys a new profile must set; everything else has a default below.
_REQUIRED_KEYS = ("days", "key_usage", "allowed_key_types")
_DEFAULTS: dict[str, Any] = {
    "description": "",
    "extended_key_usage": [],
    "policies": [],
    "min_rsa_bits": 2048,
    "subject_fields": ["CN", "O", "OU", "C"],
    "required_subject_fields": ["CN"],
    "san_types": [],
    "required_san_types": [],
    "max_san": 10,
    "require_sign_only": False,
    "ca": False,
    "cps_uri": "",
    "user_notice": "",
    "identify_data": False,
    "require_verified_by": False,
    "keep_term_on_reissue": False,
    "approval": False,
}
_LIST_KEYS = (
    "key_usage",
    "extended_key_usage",
    "policies",
    "allowed_key_types",
    "subject_fields",
    "required_subject_fields",
    "san_types",
    "required_san_types",
)
_INT_KEYS = ("days", "min_rsa_bits", "max_san", "renew_before_days", "path_length")
_KNOWN_KEYS = frozenset(_DEFAULTS) | set(_REQUIRED_KEYS) | {"renew_before_days", "path_length"}


def _read_toml(data: bytes, source: str) -> dict[str, dict[str, Any]]:
    """The ``[profiles.*]`` tables of one file, with only the top-level structure checked."""
    try:
        doc = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"{source} is not valid UTF-8 TOML ({e}).") from None
    unknown = set(doc) - {"profiles"}
    if unknown:
        raise ConfigError(
            f"{source} has unknown top-level key '{sorted(unknown)[0]}'; "
            "put profiles under [profiles.NAME]."
        )
    profiles = doc.get("profiles", {})
    if not isinstance(profiles, dict):
        raise ConfigError(f"{source}: 'profiles' must be a table of [profiles.NAME] tables.")
    for name, table in profiles.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{source}: profile '{name}' must be a table, [profiles.{name}].")
    return profiles


def _canonical_usage(name: str) -> str | None:
    name = _KEY_USAGE_ALIASES.get(name, name)
    return name if name in KEY_USAGE_NAMES else None


def _build(name: str, raw: Mapping[str, Any], source: str) -> Profile:
    """Check one merged profile table and turn it into a :class:`Profile`."""
    where = f"{source}: profile '{name}'"
    if not _NAME_RE.match(name):
        raise ConfigError(f"{where}: a name may use only lowercase letters, digits and dashes.")
    unknown = set(raw) - _KNOWN_KEYS
    if unknown:
        raise ConfigError(
            f"{where} has unknown key '{sorted(unknown)[0]}'; "
            f"known keys: {', '.join(sorted(_KNOWN_KEYS))}."
        )
    missing = [k for k in _REQUIRED_KEYS if k not in raw]
    if missing:
        raise ConfigError(f"{where} lacks the required key '{missing[0]}'.")
    values = _DEFAULTS | dict(raw)
    if not isinstance(values["description"], str):
        raise ConfigError(f"{where}: 'description' must be a string.")
    for key in _LIST_KEYS:
        v = values[key]
        if not isinstance(v, list) or not all(isinstance(i, str) for i in v):
            raise ConfigError(f"{where}: '{key}' must be a list of strings.")
    for key in _INT_KEYS:
        # bool is an int subclass in Python; `days = true` is a mistake, not 1.
        if key in values and (not isinstance(values[key], int) or isinstance(values[key], bool)):
            raise ConfigError(f"{where}: '{key}' must be an integer.")

    days: int = values["days"]
    if days <= 0:
        raise ConfigError(f"{where}: 'days' must be at least 1.")

    key_usage: list[str] = []
    for u in values["key_usage"]:
        canon = _canonical_usage(u)
        if canon is None:
            raise ConfigError(
                f"{where}: unknown key usage '{u}'; use one of "
                f"{', '.join([*KEY_USAGE_NAMES, *_KEY_USAGE_ALIASES])}."
            )
        if canon not in key_usage:
            key_usage.append(canon)
    if not key_usage:
        raise ConfigError(f"{where}: 'key_usage' must name at least one usage.")
    if {"encipher_only", "decipher_only"} & set(key_usage) and "key_agreement" not in key_usage:
        raise ConfigError(f"{where}: encipher_only and decipher_only need key_agreement.")

    for e in values["extended_key_usage"]:
        if e not in EKU_NAMES and not _is_oid(e):
            raise ConfigError(
                f"{where}: unknown extended key usage '{e}'; use one of "
                f"{', '.join(EKU_NAMES)} or a dotted OID."
            )
    for p in values["policies"]:
        if not _is_oid(p):
            raise ConfigError(f"{where}: policy '{p}' is not a dotted OID such as 1.2.3.4.")

    key_types: list[KeyType] = []
    for kt in values["allowed_key_types"]:
        try:
            key_types.append(KeyType(kt))
        except ValueError:
            raise ConfigError(
                f"{where}: unknown key type '{kt}'; use one of "
                f"{', '.join(k.value for k in KeyType)}."
            ) from None
    if not key_types:
        raise ConfigError(f"{where}: 'allowed_key_types' must name at least one key type.")

    subject_fields = [_canonical_field(f, where) for f in values["subject_fields"]]
    required_fields = [_canonical_field(f, where) for f in values["required_subject_fields"]]
    for f in required_fields:
        if f not in subject_fields:
            raise ConfigError(f"{where}: required subject field '{f}' is not in subject_fields.")

    for key in ("san_types", "required_san_types"):
        for t in values[key]:
            if t not in SAN_TYPES.values():
                raise ConfigError(
                    f"{where}: SAN type '{t}' in '{key}' is not one of dns, email, uri, ip."
                )
    for t in values["required_san_types"]:
        if t not in values["san_types"]:
            raise ConfigError(f"{where}: required SAN type '{t}' is not in san_types.")
    max_san: int = values["max_san"]
    if max_san < 0:
        raise ConfigError(f"{where}: 'max_san' must not be negative.")
    if values["required_san_types"] and max_san < 1:
        raise ConfigError(f"{where}: 'max_san' must be at least 1 when a SAN is required.")

    # 30 days is the usual renewal window, but for short-lived certificates that would make
    # renewal due the moment they are issued; a third of the lifetime keeps two thirds usable.
    renew: int = values.get("renew_before_days", min(30, days // 3))
    if not 0 <= renew < days:
        raise ConfigError(f"{where}: 'renew_before_days' must be between 0 and days - 1.")

    is_ca = _bool(values["ca"], where, "ca")
    path_length: int | None = values.get("path_length")
    if path_length is not None and (not is_ca or path_length < 0):
        raise ConfigError(f"{where}: 'path_length' goes with ca = true and must not be negative.")
    if is_ca and "key_cert_sign" not in key_usage:
        raise ConfigError(f"{where}: a CA profile (ca = true) needs key_cert_sign in key_usage.")
    cps_uri, notice = values["cps_uri"], values["user_notice"]
    if not isinstance(cps_uri, str) or not isinstance(notice, str):
        raise ConfigError(f"{where}: 'cps_uri' and 'user_notice' must be strings.")
    if (cps_uri or notice) and not values["policies"]:
        raise ConfigError(f"{where}: 'cps_uri' and 'user_notice' qualify policies; set 'policies' too.")
    if cps_uri and (not cps_uri.isascii() or "://" not in cps_uri):
        raise ConfigError(f"{where}: 'cps_uri' must be an ASCII URI such as https://ca.example/cps.")
    if len(notice) > 200:
        # RFC 5280 4.2.1.4: explicitText is at most 200 characters.
        raise ConfigError(f"{where}: 'user_notice' has {len(notice)} characters; RFC 5280 allows 200.")
    identify = _bool(values["identify_data"], where, "identify_data")
    if identify and is_ca:
        raise ConfigError(f"{where}: a CA profile cannot carry a holder's identity (identify_data).")
    return Profile(
        name=name,
        description=values["description"],
        days=days,
        key_usage=tuple(key_usage),
        extended_key_usage=tuple(values["extended_key_usage"]),
        policies=tuple(values["policies"]),
        allowed_key_types=tuple(key_types),
        min_rsa_bits=values["min_rsa_bits"],
        subject_fields=tuple(subject_fields),
        required_subject_fields=tuple(required_fields),
        san_types=tuple(values["san_types"]),
        required_san_types=tuple(values["required_san_types"]),
        max_san=max_san,
        renew_before_days=renew,
        require_sign_only=_bool(values["require_sign_only"], where, "require_sign_only"),
        ca=is_ca,
        path_length=path_length,
        cps_uri=cps_uri or None,
        user_notice=notice or None,
        identify_data=identify,
        require_verified_by=_bool(values["require_verified_by"], where, "require_verified_by"),
        keep_term_on_reissue=_bool(values["keep_term_on_reissue"], where, "keep_term_on_reissue"),
        approval=_bool(values["approval"], where, "approval"),
    )


def _bool(value: Any, where: str, key: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: '{key}' must be true or false.")
    return value


def _is_oid(text: str) -> bool:
    try:
        ObjectIdentifier(text)
    except ValueError:
        return False
    return True


def _canonical_field(name: str, where: str) -> str:
    canon = _FIELD_LOOKUP.get(name.lower())
    if canon is None:
        raise ConfigError(
            f"{where}: unknown subject field '{name}'; use one of {', '.join(SUBJECT_FIELDS)}."
        )
    return canon


def load_profiles(extra_file: Path | None = None) -> dict[str, Profile]:
    """The built-in profiles, then those of ``extra_file`` (a CA's own profiles.toml).

    A table in ``extra_file`` for an existing name replaces only the keys it sets; a new
    name adds a profile. Raises :class:`ConfigError` with one sentence on a bad file.
    """
    builtin_source = "the built-in profiles.toml"
    data = resources.files(__package__).joinpath("profiles.toml").read_bytes()
    merged: dict[str, dict[str, Any]] = {
        name: dict(table) for name, table in _read_toml(data, builtin_source).items()
    }
    sources = dict.fromkeys(merged, builtin_source)
    if extra_file is not None:
        try:
            extra = extra_file.read_bytes()
        except OSError as e:
            raise ConfigError(f"Cannot read profiles file {extra_file} ({e.strerror}).") from None
        for name, table in _read_toml(extra, str(extra_file)).items():
            merged[name] = merged.get(name, {}) | table
            sources[name] = str(extra_file)
    return {name: _build(name, raw, sources[name]) for name, raw in merged.items()}


def get_profile(profiles: Mapping[str, Profile], name: str) -> Profile:
    """The profile called ``name``; :class:`UsageError` naming the available ones if none."""
    try:
        return profiles[name]
    except KeyError:
        raise UsageError(
            f"There is no profile '{name}'; available: {', '.join(sorted(profiles))}."
        ) from None


def _key_algorithm(public_key: Any) -> KeyAlgorithm | None:
    if isinstance(public_key, rsa.RSAPublicKey):
        return KeyAlgorithm.RSA
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return KeyAlgorithm.EC
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return KeyAlgorithm.ED25519
    return None


def _check_key(profile: Profile, public_key: Any) -> None:
    allowed = ", ".join(k.value for k in profile.allowed_key_types)
    refuse = f"Profile '{profile.name}' does not accept {{}}; allowed key types: {allowed}."
    algorithm = _key_algorithm(public_key)
    if algorithm is KeyAlgorithm.RSA:
        rsa_bits = [k.bits for k in profile.allowed_key_types if k.algorithm is algorithm]
        if not rsa_bits:
            raise RequestRejected(refuse.format("RSA keys"))
        _check_rsa_numbers(public_key)
        floor = max(profile.min_rsa_bits, min(rsa_bits))
        if public_key.key_size < floor:
            raise RequestRejected(
                f"Profile '{profile.name}' needs RSA keys of at least {floor} bits; "
                f"this one has {public_key.key_size}."
            )
    elif algorithm is KeyAlgorithm.EC:
        curve = public_key.curve.name
        if not any(k.curve == curve for k in profile.allowed_key_types):
            raise RequestRejected(refuse.format(f"EC keys on curve {curve}"))
    elif algorithm is KeyAlgorithm.ED25519:
        if KeyType.ED25519 not in profile.allowed_key_types:
            raise RequestRejected(refuse.format("Ed25519 keys"))
    else:
        raise RequestRejected(refuse.format(f"{type(public_key).__name__} keys"))


# CA/Browser Forum Baseline Requirements §6.1.6 and NIST SP 800-89 §5.3.3: the public exponent
# is odd and 2**16 + 1 <= e < 2**256. Small exponents (3) invite the attacks on unpadded or
# badly padded RSA that this bound was set against; our own tokens all use 65537.
_RSA_MIN_EXPONENT = 65537
_RSA_MAX_EXPONENT = 1 << 256


def _check_rsa_numbers(public_key: rsa.RSAPublicKey) -> None:
    numbers = public_key.public_numbers()
    if numbers.e % 2 == 0 or not _RSA_MIN_EXPONENT <= numbers.e < _RSA_MAX_EXPONENT:
        shown = str(numbers.e) if numbers.e < 1 << 64 else f"of {numbers.e.bit_length()} bits"
        raise RequestRejected(
            f"The RSA key's public exponent {shown} is not accepted; it must be odd, at least 65537 "
            "and below 2**256 (CA/Browser Forum BR 6.1.6)."
        )
    if numbers.n % 2 == 0:
        raise RequestRejected("The RSA key's modulus is even, so it is not an RSA key anyone can use.")


def _check_subject(profile: Profile, subject: x509.Name) -> None:
    present: set[str] = set()
    for attr in subject:
        field = _FIELD_BY_OID.get(attr.oid)
        if field is None or field not in profile.subject_fields:
            shown = field or attr.rfc4514_attribute_name
            raise RequestRejected(
                f"Profile '{profile.name}' does not allow the subject attribute '{shown}'; "
                f"allowed: {', '.join(profile.subject_fields)}."
            )
        present.add(field)
    for field in profile.required_subject_fields:
        if field not in present:
            raise RequestRejected(
                f"Profile '{profile.name}' requires the subject attribute '{field}'."
            )


def _check_san(profile: Profile, san: Sequence[x509.GeneralName]) -> None:
    kinds: list[str] = []
    for name in san:
        kind = SAN_TYPES.get(type(name))
        if kind is None or kind not in profile.san_types:
            allowed = ", ".join(profile.san_types) or "none"
            shown = kind or type(name).__name__
            raise RequestRejected(
                f"Profile '{profile.name}' does not allow SAN type '{shown}'; allowed: {allowed}."
            )
        kinds.append(kind)
    if len(san) > profile.max_san:
        raise RequestRejected(
            f"Profile '{profile.name}' allows at most {profile.max_san} SAN entries, "
            f"the request has {len(san)}."
        )
    if profile.required_san_types and not set(kinds) & set(profile.required_san_types):
        raise RequestRejected(
            f"Profile '{profile.name}' requires at least one SAN of type "
            f"{' or '.join(profile.required_san_types)}."
        )


def check_request(
    profile: Profile,
    *,
    subject: x509.Name,
    san: Sequence[x509.GeneralName],
    public_key: Any,
) -> None:
    """Raise :class:`RequestRejected` with one sentence unless the request fits ``profile``.

    Checks, in order: the key type and size (and an RSA key's exponent), that every name is
    safe to certify (:func:`tokenissue.pkix.names.check_names`; a DNS wildcard only in a
    profile for TLS servers), the subject attributes (allowed, then required), the SAN kinds,
    their number, and the SAN kinds the profile requires.
    """
    _check_key(profile, public_key)
    check_names(subject, san, allow_wildcard="server_auth" in profile.extended_key_usage)
    _check_subject(profile, subject)
    _check_san(profile, san)


def key_usage_for(profile: Profile, public_key: Any) -> x509.KeyUsage:
    """The keyUsage extension for ``public_key``: the profile's bits that its algorithm can use.

    One profile serves RSA, EC and Ed25519 keys; claiming keyEncipherment for an EC key
    would be false and some verifiers reject it, so such bits are dropped here.
    """
    algorithm = _key_algorithm(public_key)
    if algorithm is None:
        raise RequestRejected(
            f"Profile '{profile.name}' cannot certify a {type(public_key).__name__} key."
        )
    bits = {u for u in profile.key_usage if algorithm in KEY_USAGE_NAMES[u]}
    if not bits:
        raise RequestRejected(
            f"Profile '{profile.name}' has no key usage that a {algorithm.value} key can perform."
        )
    return x509.KeyUsage(**{name: name in bits for name in KEY_USAGE_NAMES})


def eku_for(profile: Profile) -> list[ObjectIdentifier]:
    """The extendedKeyUsage OIDs of ``profile`` (empty: no extension)."""
    return [
        EKU_NAMES[e] if e in EKU_NAMES else ObjectIdentifier(e)
        for e in profile.extended_key_usage
    ]
