"""Certificate profiles: the built-in ones, a CA's own profiles.toml, and request checks."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, ObjectIdentifier

from tokenissue.ca.profiles import (
    Profile,
    check_request,
    eku_for,
    get_profile,
    key_usage_for,
    load_profiles,
)
from tokenissue.errors import ConfigError, RequestRejected, UsageError
from tokenissue.models import KeyType
from tokenissue.pkix.names import parse_san, parse_subject

BUILT_IN = {
    "personal", "personal-banking", "kr-personal", "kr-business", "tls-client", "tls-server", "smime", "code-signing",
    "sub-ca",
}


@functools.cache
def pub(kind: str) -> Any:
    """The public half of a software key of ``kind``; profiles only ever see public keys."""
    factories: dict[str, Any] = {
        "rsa-2048": lambda: rsa.generate_private_key(65537, 2048),
        "rsa-3072": lambda: rsa.generate_private_key(65537, 3072),
        # A key the profiles must refuse, never used for anything else.
        "rsa-1024": lambda: rsa.generate_private_key(65537, 1024),  # noqa: S505
        "ec-p256": lambda: ec.generate_private_key(ec.SECP256R1()),
        "ec-p384": lambda: ec.generate_private_key(ec.SECP384R1()),
        "ec-p521": lambda: ec.generate_private_key(ec.SECP521R1()),
        "ed25519": ed25519.Ed25519PrivateKey.generate,
    }
    return factories[kind]().public_key()


@pytest.fixture(scope="module")
def profiles() -> dict[str, Profile]:
    return load_profiles()


def check(profile: Profile, subject: str, san: list[str], kind: str = "ec-p256") -> None:
    check_request(profile, subject=parse_subject(subject), san=parse_san(san), public_key=pub(kind))


# --- the built-in profiles ---------------------------------------------------------------------


def test_built_in_profiles_load(profiles: dict[str, Profile]) -> None:
    assert set(profiles) == BUILT_IN
    for name, p in profiles.items():
        assert p.name == name
        assert p.description
        assert p.days == (1825 if p.ca else 365)  # an intermediate outlives the certificates it signs
        assert 0 < p.renew_before_days < p.days
    assert [n for n, p in profiles.items() if p.ca] == ["sub-ca"]
    assert profiles["sub-ca"].path_length == 0 and "key_cert_sign" in profiles["sub-ca"].key_usage


GOOD = {
    "personal": ("CN=홍길동,O=우리은행,C=KR", ["email:hong@example.kr"]),
    "personal-banking": ("CN=홍길동,serialNumber=880101-1,C=KR", []),
    "kr-personal": ("CN=홍길동()0012345678901234,OU=ExampleBank,OU=personal4IB,O=ExampleCA,C=KR", []),
    "kr-business": ("CN=(주)예시상사()0001234567,OU=ExampleBank,OU=corporation4EC,O=ExampleCA,C=KR", []),
    "tls-client": ("CN=device-17,O=Example", ["dns:device-17.example"]),
    "tls-server": ("CN=www.example.kr", ["dns:www.example.kr", "ip:192.0.2.1"]),
    "smime": ("CN=Alice,emailAddress=alice@example.com", ["email:alice@example.com"]),
    "code-signing": ("CN=Example Release Signing,O=Example,C=KR", []),
    "sub-ca": ("CN=Example Issuing CA,O=Example,C=KR", []),
}


@pytest.mark.parametrize("name", sorted(BUILT_IN))
def test_each_profile_accepts_a_typical_request(profiles: dict[str, Profile], name: str) -> None:
    subject, san = GOOD[name]
    for kind in ("ec-p256", "ec-p384", "rsa-3072"):
        check(profiles[name], subject, san, kind)


def test_personal_profile_contents(profiles: dict[str, Profile]) -> None:
    p = profiles["personal"]
    usage = key_usage_for(p, pub("ec-p256"))
    assert usage.digital_signature and usage.content_commitment
    assert not usage.key_encipherment and not usage.key_cert_sign
    assert eku_for(p) == [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.EMAIL_PROTECTION]
    assert p.policies == ()
    assert p.san_types == ("email",)
    assert {KeyType.EC_P256, KeyType.RSA_2048, KeyType.ED25519} <= set(p.allowed_key_types)


def test_personal_banking_carries_the_example_policy(profiles: dict[str, Profile]) -> None:
    p = profiles["personal-banking"]
    assert p.policies == ("1.3.6.1.4.1.32473.1.1",)
    assert p.key_usage == profiles["personal"].key_usage
    assert p.days == 365


def test_smime_certifies_no_key_transport(profiles: dict[str, Profile]) -> None:
    """tokenissue's token keys cannot decrypt, so S/MIME must not invite mail encrypted to them."""
    for kind in ("rsa-2048", "ec-p256", "ec-p384", "ed25519"):
        usage = key_usage_for(profiles["smime"], pub(kind))
        assert usage.digital_signature and not usage.key_encipherment


def test_tls_server_marks_rsa_keys_for_key_encipherment(profiles: dict[str, Profile]) -> None:
    """NSS refuses an RSA server certificate without keyEncipherment (tests/interop/test_nss.py);
    EC and Ed25519 keys never get it."""
    assert key_usage_for(profiles["tls-server"], pub("rsa-2048")).key_encipherment
    for kind in ("ec-p256", "ec-p384", "ed25519"):
        usage = key_usage_for(profiles["tls-server"], pub(kind))
        assert usage.digital_signature and not usage.key_encipherment


def test_key_encipherment_only_for_rsa(tmp_path: Path) -> None:
    f = tmp_path / "profiles.toml"
    f.write_text(
        '[profiles.enc]\ndescription = "x"\ndays = 30\n'
        'key_usage = ["digital_signature", "key_encipherment"]\n'
        'allowed_key_types = ["rsa-2048", "ec-p256", "ec-p384", "ed25519"]\n'
    )
    p = load_profiles(f)["enc"]
    assert key_usage_for(p, pub("rsa-2048")).key_encipherment
    for kind in ("ec-p256", "ec-p384", "ed25519"):
        usage = key_usage_for(p, pub(kind))
        assert usage.digital_signature and not usage.key_encipherment


def test_eku_per_profile(profiles: dict[str, Profile]) -> None:
    assert eku_for(profiles["tls-server"]) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert eku_for(profiles["tls-client"]) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert eku_for(profiles["smime"]) == [ExtendedKeyUsageOID.EMAIL_PROTECTION]
    assert eku_for(profiles["code-signing"]) == [ExtendedKeyUsageOID.CODE_SIGNING]


def test_key_usage_is_a_valid_extension(profiles: dict[str, Profile]) -> None:
    for p in profiles.values():
        for kind in ("rsa-2048", "ec-p256", "ed25519"):
            if kind == "rsa-2048" and p.name == "code-signing":
                continue
            assert isinstance(key_usage_for(p, pub(kind)), x509.KeyUsage)


def test_get_profile(profiles: dict[str, Profile]) -> None:
    assert get_profile(profiles, "smime").name == "smime"
    with pytest.raises(UsageError) as e:
        get_profile(profiles, "smine")
    assert str(e.value) == (
        "There is no profile 'smine'; available: code-signing, kr-business, kr-personal, personal, "
        "personal-banking, smime, sub-ca, tls-client, tls-server."
    )
    assert e.value.exit_code == 2


# --- refusals ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "subject", "san", "kind", "message"),
    [
        ("code-signing", "CN=x", [], "ed25519",
         "Profile 'code-signing' does not accept Ed25519 keys; allowed key types: "
         "ec-p256, ec-p384, rsa-3072, rsa-4096."),
        ("code-signing", "CN=x", [], "rsa-2048",
         "Profile 'code-signing' needs RSA keys of at least 3072 bits; this one has 2048."),
        ("personal", "CN=x", [], "rsa-1024",
         "Profile 'personal' needs RSA keys of at least 2048 bits; this one has 1024."),
        ("personal", "CN=x", [], "ec-p521",
         "Profile 'personal' does not accept EC keys on curve secp521r1; allowed key types: "
         "ec-p256, ec-p384, rsa-2048, rsa-3072, rsa-4096, ed25519."),
        ("tls-server", "CN=www.example,emailAddress=a@example", ["dns:www.example"], "ec-p256",
         "Profile 'tls-server' does not allow the subject attribute 'emailAddress'; "
         "allowed: CN, O, OU, C, L, ST."),
        ("personal", "CN=x,title=Dr", [], "ec-p256",
         "Profile 'personal' does not allow the subject attribute 'title'; "
         "allowed: CN, O, OU, C, serialNumber, emailAddress, GN, SN."),
        ("personal", "CN=x,1.2.3.4=y", [], "ec-p256",
         "Profile 'personal' does not allow the subject attribute '1.2.3.4'; "
         "allowed: CN, O, OU, C, serialNumber, emailAddress, GN, SN."),
        ("personal", "O=우리은행,C=KR", [], "ec-p256",
         "Profile 'personal' requires the subject attribute 'CN'."),
        ("personal", "CN=x", ["dns:x.example"], "ec-p256",
         "Profile 'personal' does not allow SAN type 'dns'; allowed: email."),
        ("code-signing", "CN=x", ["email:a@example"], "ec-p256",
         "Profile 'code-signing' does not allow SAN type 'email'; allowed: none."),
        ("personal", "CN=x", [f"email:u{i}@example" for i in range(5)], "ec-p256",
         "Profile 'personal' allows at most 4 SAN entries, the request has 5."),
        ("tls-server", "CN=www.example", [], "ec-p256",
         "Profile 'tls-server' requires at least one SAN of type dns or ip."),
        ("smime", "CN=Alice", [], "rsa-2048",
         "Profile 'smime' requires at least one SAN of type email."),
    ],
)
def test_refusals(
    profiles: dict[str, Profile], name: str, subject: str, san: list[str], kind: str, message: str
) -> None:
    with pytest.raises(RequestRejected) as e:
        check(profiles[name], subject, san, kind)
    assert str(e.value) == message
    assert e.value.exit_code == 6


def test_other_san_kinds_are_refused(profiles: dict[str, Profile]) -> None:
    san: list[x509.GeneralName] = [x509.RegisteredID(ObjectIdentifier("1.2.3"))]
    with pytest.raises(RequestRejected, match="SAN type 'RegisteredID'"):
        check_request(profiles["tls-client"], subject=parse_subject("CN=x"), san=san,
                      public_key=pub("ec-p256"))


# --- a CA's own profiles.toml ------------------------------------------------------------------


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "profiles.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_user_file_overrides_and_adds(tmp_path: Path) -> None:
    path = write(tmp_path, """
[profiles.personal-banking]
# The deployer's accredited policy replaces the example one; nothing else changes.
policies = ["1.2.410.200004.5.2.1.1"]
days = 730

[profiles.vpn]
description = "Site VPN users."
days = 90
key_usage = ["digital_signature", "non_repudiation"]
extended_key_usage = ["client_auth", "1.3.6.1.5.5.7.3.17"]
allowed_key_types = ["ec-p256"]
subject_fields = ["CN", "OU", "givenName", "EMAIL"]
san_types = ["email"]
max_san = 1
""")
    profiles = load_profiles(path)
    assert set(profiles) == BUILT_IN | {"vpn"}
    banking = profiles["personal-banking"]
    assert banking.policies == ("1.2.410.200004.5.2.1.1",)
    assert banking.days == 730
    assert banking.key_usage == ("digital_signature", "content_commitment")  # kept
    vpn = profiles["vpn"]
    assert vpn.key_usage == ("digital_signature", "content_commitment")
    assert vpn.subject_fields == ("CN", "OU", "GN", "emailAddress")
    assert vpn.required_subject_fields == ("CN",)
    assert vpn.renew_before_days == 30
    assert eku_for(vpn) == [ExtendedKeyUsageOID.CLIENT_AUTH, ObjectIdentifier("1.3.6.1.5.5.7.3.17")]
    with pytest.raises(RequestRejected, match="does not accept RSA keys"):
        check(vpn, "CN=x", [], "rsa-2048")
    # The built-in file itself is untouched by the override.
    assert load_profiles()["personal-banking"].days == 365


def test_renewal_window_of_short_lifetimes(tmp_path: Path) -> None:
    path = write(tmp_path, """
[profiles.short]
days = 30
key_usage = ["digital_signature"]
allowed_key_types = ["ec-p256"]
""")
    assert load_profiles(path)["short"].renew_before_days == 10


def test_empty_user_file_changes_nothing(tmp_path: Path) -> None:
    assert load_profiles(write(tmp_path, "# nothing yet\n")) == load_profiles()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[profiles.personal]\ndayz = 3\n', "unknown key 'dayz'"),
        ('[profiles.personal]\nkey_usage = ["digital_signatur"]\n',
         "unknown key usage 'digital_signatur'"),
        ('[profiles.personal]\nextended_key_usage = ["web_auth"]\n',
         "unknown extended key usage 'web_auth'"),
        ('[profiles.personal]\ndays = "365"\n', "'days' must be an integer"),
        ('[profiles.personal]\ndays = true\n', "'days' must be an integer"),
        ('[profiles.personal]\ndays = 0\n', "'days' must be at least 1"),
        ('[profiles.personal]\nkey_usage = "digital_signature"\n',
         "'key_usage' must be a list of strings"),
        ('[profiles.personal]\nallowed_key_types = ["rsa-1024"]\n', "unknown key type 'rsa-1024'"),
        ('[profiles.personal]\npolicies = ["1.2.x"]\n', "policy '1.2.x' is not a dotted OID"),
        ('[profiles.personal]\nsan_types = ["dns", "smtp"]\n', "SAN type 'smtp'"),
        ('[profiles.personal]\nsubject_fields = ["CN", "Nickname"]\n',
         "unknown subject field 'Nickname'"),
        ('[profiles.personal]\nrequired_subject_fields = ["L"]\n',
         "required subject field 'L' is not in subject_fields"),
        ('[profiles.personal]\nrequired_san_types = ["dns"]\n',
         "required SAN type 'dns' is not in san_types"),
        ('[profiles.personal]\nrenew_before_days = 400\n', "'renew_before_days' must be between"),
        ('[profiles.personal]\nkey_usage = ["encipher_only"]\n', "need key_agreement"),
        ('[profiles.new]\ndays = 30\n', "lacks the required key 'key_usage'"),
        ('[profiles.Bad_Name]\ndays = 30\n', "lowercase letters"),
        ('[profile.personal]\ndays = 30\n', "unknown top-level key 'profile'"),
        ('profiles = 3\n', "must be a table"),
        ('[profiles]\npersonal = 3\n', "must be a table"),
        ('[profiles.personal\n', "is not valid UTF-8 TOML"),
    ],
)
def test_bad_user_file(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_profiles(path)
    assert e.value.exit_code == 3
    assert message in str(e.value)
    assert str(path) in str(e.value)
    assert "\n" not in str(e.value)


def test_unreadable_user_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        load_profiles(tmp_path / "missing.toml")
    assert e.value.exit_code == 3
    assert "Cannot read profiles file" in str(e.value)


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "profiles.toml"
    path.write_bytes(b'[profiles.personal]\ndescription = "\xff"\n')
    with pytest.raises(ConfigError, match="not valid UTF-8 TOML"):
        load_profiles(path)


def test_profile_is_frozen(profiles: dict[str, Profile]) -> None:
    with pytest.raises(AttributeError):
        profiles["personal"].days = 1  # type: ignore[misc]


def test_korean_profiles_bind_an_identity_under_an_example_policy(profiles: dict[str, Profile]) -> None:
    """kr-personal and kr-business as Korean CAs issue them: signing and non-repudiation only,
    a policy with a CPS URI and a Korean userNotice, the holder's identity bound (VID). Their
    policy OIDs are under IANA's documentation arc (RFC 5612), claiming no CA's accreditation."""
    for name in ("kr-personal", "kr-business"):
        p = profiles[name]
        assert p.identify_data and p.key_usage == ("digital_signature", "content_commitment")
        assert p.extended_key_usage == () and p.san_types == ()
        assert [oid.startswith("1.3.6.1.4.1.32473.") for oid in p.policies] == [True]
        assert p.cps_uri == "https://ca.example/cps" and p.user_notice and "예시" in p.user_notice
        assert {"CN", "O", "C"} <= set(p.required_subject_fields)
        assert p.require_verified_by and p.keep_term_on_reissue
    assert not any(p.require_verified_by or p.keep_term_on_reissue for n, p in profiles.items() if not n.startswith("kr-"))
    assert all(o.startswith("1.3.6.1.4.1.32473.") for o in profiles["personal-banking"].policies)
    assert not any(p.identify_data for n, p in profiles.items() if not n.startswith("kr-"))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('cps_uri = "ftp"', "ASCII URI"),
        (f'user_notice = "{"가" * 201}"', "RFC 5280 allows 200"),
        ("identify_data = 1", "true or false"),
        ('require_verified_by = "yes"', "true or false"),
        ("keep_term_on_reissue = 0", "true or false"),
        ('policies = []\ncps_uri = "https://x.example/cps"', "set 'policies' too"),
    ],
)
def test_policy_qualifiers_and_identity_are_checked(tmp_path: Path, extra: str, message: str) -> None:
    f = tmp_path / "profiles.toml"
    f.write_text(f"[profiles.kr-personal]\n{extra}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        load_profiles(f)
