"""``tokenissue ra``: registrations through the real CLI, and the RegistrationAuthority on the
CA directory the CLI made. The code is shown once and found nowhere afterwards (output, files,
database bytes, audit log); it locks after five wrong tries and is good for one certificate.

The CA is made with ``ca init --insecure-file-key``: registration never touches the CA key.
"""

from __future__ import annotations

import json
import os
import re
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tokenissue.ca.authority import CertificateAuthority
from tokenissue.ca.registration import CODE_ALPHABET, RegistrationAuthority, parse_code
from tokenissue.credentials import Secret
from tokenissue.errors import NotFound, PinIncorrect, PinLocked, RequestRejected, UsageError
from tokenissue.models import RegistrationStatus

from support.softhsm import SoftHSM, make_softhsm

SUBJECT = "CN=Hong Gildong,serialNumber=850101,C=KR"


@pytest.fixture
def cli(hsm_root: Path) -> SoftHSM:
    """The real CLI in a subprocess with a clean environment (no token is needed here)."""
    return make_softhsm(hsm_root)


@pytest.fixture
def ca_dir(cli: SoftHSM) -> Path:
    d = cli.root / "ca"
    cli.run("ca", "init", "--ca-dir", str(d), "--subject", "CN=Test RA CA,C=KR", "--insecure-file-key", check=True)
    return d


@pytest.fixture
def ra(ca_dir: Path) -> Iterator[RegistrationAuthority]:
    with CertificateAuthority.open(ca_dir) as ca:
        yield RegistrationAuthority(ca)


def register(cli: SoftHSM, ca_dir: Path, *extra: str, subject: str = SUBJECT, profile: str = "personal") -> dict[str, Any]:
    named = [*(["--subject", subject] if subject else []), *(["--profile", profile] if profile else [])]
    proc = cli.run("ra", "register", "--ca-dir", str(ca_dir), *named, "--json", *extra)
    assert proc.returncode == 0, proc.stderr
    out: dict[str, Any] = json.loads(proc.stdout)
    return out


def spellings(code: str) -> set[str]:
    """Every way a code might be written down: grouped or compact, upper or lower case."""
    compact = code.replace("-", "")
    return {code, compact, code.lower(), compact.lower()}


def forms(code: str) -> list[bytes]:
    """Every spelling of a code as bytes someone might store: UTF-8 or UTF-16."""
    return [t.encode(enc) for t in spellings(code) for enc in ("utf-8", "utf-16-le")]


def files_containing(root: Path, code: str) -> list[str]:
    hits = []
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            if any(f in data for f in forms(code)):
                hits.append(str(path))
    return hits


def one_error_line(proc: Any) -> str:
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("Error: ") and lines[0].rstrip().endswith("."), lines[0]
    return lines[0]


def test_register_shows_code_once_and_stores_it_nowhere(cli: SoftHSM, ca_dir: Path) -> None:
    human = cli.run("ra", "register", "--ca-dir", str(ca_dir), "--subject", SUBJECT, "--profile", "personal")
    assert human.returncode == 0, human.stderr
    assert "separate channels" in human.stdout
    ref_line = next(line for line in human.stdout.splitlines() if "Reference number:" in line)
    code_line = next(line for line in human.stdout.splitlines() if "Authorization code:" in line)
    human_ref = ref_line.split("Reference number:")[1].strip(" │")
    human_code = code_line.split("Authorization code:")[1].strip(" │")

    shown = register(cli, ca_dir, "--san", "email:hong@example.kr", subject="CN=Hong Gildong,C=KR", profile="smime")
    assert set(shown) == {"ref", "code", "subject", "profile", "expires_at", "verified_by", "terms_version", "reissue_of"}
    assert shown["profile"] == "smime" and shown["subject"] == "CN=Hong Gildong,C=KR"
    for ref, code in ((human_ref, human_code), (shown["ref"], shown["code"])):
        assert len(ref) == 10 and ref.isdigit()
        groups = code.split("-")
        assert [len(g) for g in groups] == [5, 5, 5, 5]
        assert all(c in CODE_ALPHABET for c in "".join(groups))
    assert human_ref != shown["ref"] and human_code != shown["code"]

    listed = cli.run("ra", "list", "--ca-dir", str(ca_dir), "--json", check=True)
    rows = json.loads(listed.stdout)
    assert {r["ref"] for r in rows} == {human_ref, shown["ref"]}
    assert all(r["status"] == "open" for r in rows)
    assert next(r for r in rows if r["ref"] == shown["ref"])["san"] == ["email:hong@example.kr"]
    table = cli.run("ra", "list", "--ca-dir", str(ca_dir), check=True)
    assert shown["ref"] in table.stdout
    audit = cli.run("ca", "audit", "list", "--ca-dir", str(ca_dir), "--json", check=True)
    actions = [e["action"] for e in json.loads(audit.stdout)]
    assert actions.count("ra-register") == 2
    cli.run("ca", "audit", "verify", "--ca-dir", str(ca_dir), check=True)

    for code in (human_code, shown["code"]):
        for text in spellings(code):
            for out in (listed, table, audit):
                assert text not in out.stdout and text not in out.stderr
        assert files_containing(ca_dir, code) == []
        assert files_containing(cli.root, code) == []

    key = ca_dir / "ra.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert len(key.read_bytes()) == 32


def test_server_api_recomputes_the_code_and_consumes_once(cli: SoftHSM, ca_dir: Path, ra: RegistrationAuthority) -> None:
    shown = register(cli, ca_dir)
    assert ra.code_for(shown["ref"]) == Secret(shown["code"])
    assert repr(ra.code_for(shown["ref"])) == "<Secret ***>"
    assert ra.check_usable(shown["ref"]).subject == SUBJECT
    ra.consume(shown["ref"], 0x1234)
    with pytest.raises(RequestRejected, match="already used"):
        ra.consume(shown["ref"], 0x5678)
    with pytest.raises(RequestRejected, match="already used"):
        ra.check_usable(shown["ref"])
    got = ra.list(RegistrationStatus.USED)
    assert [(r.ref, r.serial) for r in got] == [(shown["ref"], 0x1234)]
    with pytest.raises(NotFound):
        ra.check_usable("0000000000")
    with pytest.raises(NotFound):
        ra.code_for("0000000000")


def test_cancel(cli: SoftHSM, ca_dir: Path, ra: RegistrationAuthority) -> None:
    shown = register(cli, ca_dir)
    proc = cli.run("ra", "cancel", "--ca-dir", str(ca_dir), shown["ref"])
    assert proc.returncode == 0, proc.stderr
    assert "cancelled" in proc.stdout
    with pytest.raises(RequestRejected, match="cancelled"):
        ra.check_usable(shown["ref"])
    with pytest.raises(RequestRejected, match="cancelled"):
        ra.consume(shown["ref"], 1)
    with pytest.raises(RequestRejected, match="cancelled"):
        ra.verify_code(shown["ref"], shown["code"])
    rows = json.loads(cli.run("ra", "list", "--ca-dir", str(ca_dir), "--json", check=True).stdout)
    assert [r["status"] for r in rows] == ["cancelled"]

    unknown = cli.run("ra", "cancel", "--ca-dir", str(ca_dir), "0000000000")
    assert unknown.returncode == 6
    assert "0000000000" in one_error_line(unknown)

    used = register(cli, ca_dir)
    ra.consume(used["ref"], 0xABC)
    refused = cli.run("ra", "cancel", "--ca-dir", str(ca_dir), used["ref"])
    assert refused.returncode == 6
    assert "revoke" in one_error_line(refused)


def test_expired(cli: SoftHSM, ca_dir: Path, ra: RegistrationAuthority) -> None:
    shown = register(cli, ca_dir, "--valid", "1s")
    time.sleep(2)
    with pytest.raises(RequestRejected, match="expired"):
        ra.check_usable(shown["ref"])
    with pytest.raises(RequestRejected, match="expired"):
        ra.verify_code(shown["ref"], shown["code"])
    with pytest.raises(RequestRejected, match="expired"):
        ra.consume(shown["ref"], 1)
    rows = json.loads(cli.run("ra", "list", "--ca-dir", str(ca_dir), "--json", check=True).stdout)
    assert [r["status"] for r in rows] == ["expired"]


def test_verify_code_locks_after_five_wrong_codes(cli: SoftHSM, ca_dir: Path, ra: RegistrationAuthority) -> None:
    shown = register(cli, ca_dir)
    ref, code = shown["ref"], shown["code"]
    # Any case, no dashes, spaces, and O/I/L misread for 0/1 are all the same code.
    sloppy = " ".join(code.replace("-", "").lower().replace("0", "o").replace("1", "l"))
    assert ra.verify_code(ref, sloppy).ref == ref
    assert parse_code(sloppy) == Secret(code)

    wrong = "".join(CODE_ALPHABET[(CODE_ALPHABET.index(c) + 1) % 32] if c != "-" else c for c in code)
    for left in (4, 3, 2, 1):
        with pytest.raises(PinIncorrect, match=f"{left} tr") as info:
            ra.verify_code(ref, wrong)
        assert info.value.final_try == (left == 1)
        assert info.value.exit_code == 5
    with pytest.raises(PinLocked, match="locked"):
        ra.verify_code(ref, "not even a code")  # malformed counts too
    with pytest.raises(RequestRejected, match="locked after 5 wrong codes"):
        ra.verify_code(ref, code)  # the right code, too late
    reg = ra.ca.inventory.get_registration(ref)
    assert reg is not None and (reg.status, reg.failures) == (RegistrationStatus.LOCKED, 5)

    entries = json.loads(cli.run("ca", "audit", "list", "--ca-dir", str(ca_dir), "--json", check=True).stdout)
    actions = [e["action"] for e in entries]
    assert actions.count("ra-code-failure") == 5
    assert actions.count("ra-locked") == 1
    assert [e["details"]["failures"] for e in entries if e["action"] == "ra-code-failure"] == [1, 2, 3, 4, 5]
    dumped = json.dumps(entries, ensure_ascii=False)
    assert all(text not in dumped for text in spellings(code))


def test_record_failure_is_what_the_server_calls(cli: SoftHSM, ca_dir: Path, ra: RegistrationAuthority) -> None:
    shown = register(cli, ca_dir)
    statuses = [ra.record_failure(shown["ref"]).status for _ in range(5)]
    assert statuses == [RegistrationStatus.OPEN] * 4 + [RegistrationStatus.LOCKED]
    with pytest.raises(RequestRejected, match="locked after 5 wrong codes"):
        ra.check_usable(shown["ref"])


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--subject", SUBJECT, "--profile", "no-such-profile"], "no profile 'no-such-profile'"),
        (["--subject", "/CN=openssl style", "--profile", "personal"], "OpenSSL"),
        (["--subject", "CN=server", "--profile", "tls-server"], "requires at least one SAN"),
        (["--subject", "CN=x,street=Main St", "--profile", "personal"], "does not allow"),
        (["--subject", SUBJECT, "--profile", "personal", "--valid", "soon"], "duration"),
        (["--subject", SUBJECT, "--profile", "personal", "--san", "nonsense"], "SAN"),
    ],
)
def test_bad_registration_is_usage_error_and_changes_nothing(cli: SoftHSM, ca_dir: Path, args: list[str], words: str) -> None:
    proc = cli.run("ra", "register", "--ca-dir", str(ca_dir), *args)
    assert proc.returncode == 2, proc.stderr
    assert words in one_error_line(proc)
    rows = json.loads(cli.run("ra", "list", "--ca-dir", str(ca_dir), "--json", check=True).stdout)
    assert rows == []


def test_loose_ra_key_is_refused(cli: SoftHSM, ca_dir: Path) -> None:
    register(cli, ca_dir)
    os.chmod(ca_dir / "ra.key", 0o644)
    proc = cli.run("ra", "register", "--ca-dir", str(ca_dir), "--subject", SUBJECT, "--profile", "personal")
    assert proc.returncode == 3
    assert "chmod 600" in one_error_line(proc)


def test_not_a_ca_dir_is_config_error(cli: SoftHSM) -> None:
    proc = cli.run("ra", "list", "--ca-dir", str(cli.root / "nothing"))
    assert proc.returncode == 3
    one_error_line(proc)


def test_parse_code_rejects_wrong_shapes() -> None:
    for bad in ("", "ABCDE-ABCDE-ABCDE", "ABCDE-ABCDE-ABCDE-ABCDU", "ABCDE-ABCDE-ABCDE-ABCDE-A"):
        with pytest.raises(UsageError) as info:
            parse_code(bad)
        assert bad == "" or bad not in str(info.value)


# -- the registration number (issue 13: Korean profiles bind it as a VID) ------------------

KR_SUBJECT = "CN=홍길동()0012345678901234,OU=ExampleBank,O=ExampleCA,C=KR"


def test_the_registration_number_is_kept_as_a_keyed_hash_only(ra: RegistrationAuthority, ca_dir: Path) -> None:
    import hashlib

    from tokenissue.credentials import IdNumber

    with pytest.raises(UsageError, match="binds the holder's registration number"):
        ra.register(KR_SUBJECT, "kr-personal")
    reg, _ = ra.register(
        KR_SUBJECT, "kr-personal", id_number=IdNumber("850101-1234567"), real_name="홍길동", verified_by="branch visit"
    )
    assert reg.id_hash is not None and len(reg.id_hash) == 32 and reg.real_name == "홍길동"
    # Not a plain hash of the number (13 digits are few enough to try them all): keyed by ra.key.
    for form in ("8501011234567", "850101-1234567"):
        assert reg.id_hash != hashlib.sha256(form.encode()).digest()
    database = (ca_dir / "ca.db").read_bytes()
    for form in ("8501011234567", "850101-1234567"):
        assert form.encode() not in database and form.encode("utf-16-le") not in database
    ra.check_id_number(reg, IdNumber("8501011234567"))  # the same number, either spelling
    assert ra.ca.inventory.get_registration(reg.ref).failures == 0  # type: ignore[union-attr]


def test_a_wrong_registration_number_counts_like_a_wrong_code(ra: RegistrationAuthority) -> None:
    from tokenissue.credentials import IdNumber

    reg, _ = ra.register(KR_SUBJECT, "kr-personal", id_number=IdNumber("8501011234567"), verified_by="branch visit")
    with pytest.raises(RequestRejected, match="none was given"):
        ra.check_id_number(reg, None)  # a client that left it out: said, not counted
    for left in (4, 3, 2, 1):
        with pytest.raises(PinIncorrect, match=f"{left} tr"):
            ra.check_id_number(reg, IdNumber("8501011234568"))
    with pytest.raises(PinLocked):
        ra.check_id_number(reg, IdNumber("0000000000"))
    after = ra.ca.inventory.get_registration(reg.ref)
    assert after is not None and after.status is RegistrationStatus.LOCKED and after.failures == 5
    with pytest.raises(RequestRejected, match="locked"):
        ra.check_usable(reg.ref)


# -- split delivery of the code, verification records (issue 13 item 6) ---------------------

DELIVER = """umask 077
cat > "$1"
env > "$2"
echo "$0 $*" > "$3"
"""


def deliver_script(root: Path, body: str = DELIVER) -> Path:
    """A stand-in SMS gateway: writes what it reads on stdin to a 0600 file, and its environment
    and argv next to it, for the test to look at."""
    script = root / "deliver.sh"
    script.write_text(body, encoding="utf-8")
    return script


def test_deliver_code_hands_the_code_to_the_command_only(cli: SoftHSM, ca_dir: Path, ra: RegistrationAuthority) -> None:
    script = deliver_script(cli.root)
    got, env_file, argv_file = cli.root / "code.txt", cli.root / "env.txt", cli.root / "argv.txt"
    command = f"/bin/sh {script} {got} {env_file} {argv_file}"
    human = cli.run("ra", "register", "--ca-dir", str(ca_dir), "--subject", SUBJECT, "--profile", "personal",
                    "--deliver-code", command, "--verified-by", "phone", env={"TOKENISSUE_DEBUG": "0"})  # fmt: skip
    assert human.returncode == 0, human.stderr
    assert "delivered by /bin/sh" in human.stdout and "Reference number:" in human.stdout
    code = got.read_text().strip()
    assert stat.S_IMODE(got.stat().st_mode) == 0o600
    assert parse_code(code).reveal() == code  # one line: the canonical code
    ref = next(line for line in human.stdout.splitlines() if "Reference number:" in line).split(":")[1].strip(" │")
    # The code is the registration's: it verifies, and it was shown nowhere else.
    assert ra.verify_code(ref, code).ref == ref
    env = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line)
    assert env["TOKENISSUE_REF"] == ref and env["TOKENISSUE_PROFILE"] == "personal"
    assert "TOKENISSUE_CA_PIN" not in env and "TOKENISSUE_DEBUG" not in env
    leaks = [text for text in spellings(code) if text in human.stdout + human.stderr
             or text in env_file.read_text() or text in argv_file.read_text()]  # fmt: skip
    assert leaks == []

    as_json = register(cli, ca_dir, "--deliver-code", command)
    assert "code" not in as_json and as_json["code_delivered"] is True
    audit = cli.run("ca", "audit", "list", "--ca-dir", str(ca_dir), "--json", check=True)
    delivered = [e for e in json.loads(audit.stdout) if e["action"] == "ra-code-delivered"]
    assert [e["details"] for e in delivered] == [{"ref": ref, "command": "sh"}, {"ref": as_json["ref"], "command": "sh"}]
    for c in (code, got.read_text().strip()):
        assert files_containing(ca_dir, c) == [] and c not in audit.stdout


@pytest.mark.parametrize(
    ("command", "why"),
    [
        ("/bin/sh -c 'cat >/dev/null; echo gateway down: $0 >&2; exit 3'", "delivery exited with status 3: gateway down"),
        ("/no/such/gateway --to 010", "delivery command not found: /no/such/gateway"),
        ("/bin/sh -c 'sleep 30'", "delivery timed out after 1 s"),
    ],
)
def test_a_failed_delivery_cancels_the_registration(cli: SoftHSM, ca_dir: Path, command: str, why: str) -> None:
    proc = cli.run("ra", "register", "--ca-dir", str(ca_dir), "--subject", SUBJECT, "--profile", "personal",
                   "--deliver-code", command, "--deliver-timeout", "1s")  # fmt: skip
    assert proc.returncode == 10, proc.stdout + proc.stderr
    line = one_error_line(proc)
    assert why in line and "so the registration was cancelled" in line and "--deliver-code" in line, line
    assert "Authorization code" not in proc.stdout
    [row] = json.loads(cli.run("ra", "list", "--ca-dir", str(ca_dir), "--json", check=True).stdout)
    assert row["status"] == "cancelled"
    actions = [e["action"] for e in json.loads(cli.run("ca", "audit", "list", "--ca-dir", str(ca_dir), "--json",
                                                        check=True).stdout)]  # fmt: skip
    assert actions[-3:] == ["ra-register", "ra-code-not-delivered", "ra-cancel"]


def test_a_failed_delivery_never_repeats_the_code(cli: SoftHSM, ca_dir: Path) -> None:
    # A gateway that echoes what it got into its error message: the message blots it out.
    proc = cli.run("ra", "register", "--ca-dir", str(ca_dir), "--subject", SUBJECT, "--profile", "personal",
                   "--deliver-code", "/bin/sh -c 'read c; echo \"bad number for $c\" >&2; exit 1'")  # fmt: skip
    assert proc.returncode == 10
    assert "bad number for [withheld]" in one_error_line(proc)
    assert re.findall(r"[0-9A-Z]{5}-[0-9A-Z]{5}-[0-9A-Z]{5}-[0-9A-Z]{5}", proc.stdout + proc.stderr) == []


def test_verified_by_and_terms_version_are_kept_and_audited(cli: SoftHSM, ca_dir: Path) -> None:
    shown = register(cli, ca_dir, "--verified-by", "branch visit with ID card", "--terms-version", "2026-03")
    assert (shown["verified_by"], shown["terms_version"]) == ("branch visit with ID card", "2026-03")
    [row] = json.loads(cli.run("ra", "list", "--ca-dir", str(ca_dir), "--json", check=True).stdout)
    assert (row["verified_by"], row["terms_version"], row["reissue_of"]) == ("branch visit with ID card", "2026-03", None)
    audit = json.loads(cli.run("ca", "audit", "list", "--ca-dir", str(ca_dir), "--json", check=True).stdout)
    [entry] = [e for e in audit if e["action"] == "ra-register"]
    assert entry["details"]["verified_by"] == "branch visit with ID card"
    assert entry["details"]["terms_version"] == "2026-03"
    with CertificateAuthority.open(ca_dir) as ca:
        stored = ca.inventory.get_registration(shown["ref"])
    assert stored is not None and (stored.verified_by, stored.terms_version) == ("branch visit with ID card", "2026-03")


def test_a_profile_may_require_verified_by(cli: SoftHSM, ca_dir: Path) -> None:
    env = {"TOKENISSUE_ID_NUMBER": "8501011234567"}
    refused = cli.run("ra", "register", "--ca-dir", str(ca_dir), "--subject", KR_SUBJECT, "--profile", "kr-personal",
                      env=env)  # fmt: skip
    assert refused.returncode == 2, refused.stderr
    line = one_error_line(refused)
    assert "requires a record of how the holder's identity was verified" in line and "--verified-by" in line
    assert json.loads(cli.run("ra", "list", "--ca-dir", str(ca_dir), "--json", check=True).stdout) == []
    ok = cli.run("ra", "register", "--ca-dir", str(ca_dir), "--subject", KR_SUBJECT, "--profile", "kr-personal",
                 "--verified-by", "branch visit with ID card", "--json", env=env)  # fmt: skip
    assert ok.returncode == 0, ok.stderr


# -- re-issue (issue 13 item 8): what the desk refuses ----------------------------------------


def _issue(ca_dir: Path, subject: str = SUBJECT, profile: str = "personal") -> int:
    from cryptography.hazmat.primitives.asymmetric import ec

    from tokenissue.pkix.names import parse_subject

    with CertificateAuthority.open(ca_dir) as ca:
        key = ec.generate_private_key(ec.SECP256R1())
        issued = ca.issue(key.public_key(), profile, subject=parse_subject(subject), san=[], pin=None)
        return issued.record.serial


def test_reissue_of_takes_the_old_subject_and_profile(cli: SoftHSM, ca_dir: Path) -> None:
    serial = _issue(ca_dir)
    pasted = ":".join(f"{serial:040X}"[i : i + 2] for i in range(0, 40, 2))  # as openssl prints it
    shown = register(cli, ca_dir, "--reissue-of", pasted, subject="", profile="")
    assert shown["reissue_of"] == format(serial, "x")
    assert (shown["subject"], shown["profile"]) == (SUBJECT, "personal")
    audit = json.loads(cli.run("ca", "audit", "list", "--ca-dir", str(ca_dir), "--json", check=True).stdout)
    assert [e["details"]["reissue_of"] for e in audit if e["action"] == "ra-register"] == [format(serial, "x")]


def test_reissue_of_a_revoked_expired_or_unknown_certificate_is_refused(cli: SoftHSM, ca_dir: Path) -> None:
    revoked = _issue(ca_dir)
    cli.run("ca", "revoke", "--ca-dir", str(ca_dir), format(revoked, "x"), "--reason", "key-compromise", check=True)
    cases = [
        (format(revoked, "x"), f"Certificate {revoked:x} was revoked (key-compromise), so it cannot be re-issued"),
        ("0badc0ffee", "This CA issued no certificate with serial badc0ffee, so it cannot be re-issued; check the "
                       "serial with 'tokenissue ca list'."),
        ("xyz", "'xyz' is not a hex serial number."),
    ]  # fmt: skip
    for serial, said in cases:
        proc = cli.run("ra", "register", "--ca-dir", str(ca_dir), "--reissue-of", serial)
        assert proc.returncode in (2, 6), proc.stderr
        assert said in one_error_line(proc)
    with CertificateAuthority.open(ca_dir) as ca:
        ra = RegistrationAuthority(ca)
        expired = _issue(ca_dir)
        rec = ca.inventory.get_certificate(expired)
        assert rec is not None
        with pytest.raises(RequestRejected, match=r"expired on .* so it cannot be re-issued"):
            ra.reissuable(expired, now=rec.not_after)
    assert json.loads(cli.run("ra", "list", "--ca-dir", str(ca_dir), "--json", check=True).stdout) == []


def test_a_reissue_keeps_the_term_only_where_the_profile_says_so(ca_dir: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    from tokenissue.models import CertStatus, RevocationReason
    from tokenissue.pkix.names import parse_subject

    def reissue(serial: int) -> tuple[Any, Any]:
        with CertificateAuthority.open(ca_dir) as ca:
            reg, _ = RegistrationAuthority(ca).register(None, None, reissue_of=serial)
            key = ec.generate_private_key(ec.SECP256R1())
            issued = ca.issue(key.public_key(), reg.profile, subject=parse_subject(reg.subject), san=[], pin=None,
                              reissue_of=reg.reissue_of)  # fmt: skip
            return ca.inventory.get_certificate(serial), issued.record

    (ca_dir / "profiles.toml").write_text("[profiles.personal]\ndays = 100\n", encoding="utf-8")
    plain = _issue(ca_dir)
    (ca_dir / "profiles.toml").write_text("[profiles.personal]\ndays = 30\n", encoding="utf-8")
    old, new = reissue(plain)
    first_new = new.serial
    assert (old.status, old.revocation_reason) == (CertStatus.REVOKED, RevocationReason.SUPERSEDED)
    assert 29 <= (new.not_after - new.not_before).days <= 30  # a term of its own
    kept = _issue(ca_dir)
    (ca_dir / "profiles.toml").write_text("[profiles.personal]\ndays = 30\nkeep_term_on_reissue = true\n", encoding="utf-8")
    old, new = reissue(kept)
    assert new.not_after == old.not_after and old.status is CertStatus.REVOKED
    with CertificateAuthority.open(ca_dir) as ca:
        valid = [r.serial for r in ca.list(status=CertStatus.VALID)]
    assert sorted(valid) == sorted([first_new, new.serial])  # the two re-issues; both old ones revoked
