"""Shared fixtures: real SoftHSM tokens in per-test directories on tmpfs.

Nothing here mocks the PKCS#11 layer. In-process tests switch SoftHSM to the test's own token
directory by pointing SOFTHSM2_CONF at it and re-initialising the module (SoftHSM reads its
config at C_Initialize); CLI tests run ``tokenissue`` as a real subprocess with that environment.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

SOFTHSM_MODULE = "/usr/lib/softhsm/libsofthsm2.so"
USER_PIN = "246810"
SO_PIN = "13579135"
TMPFS = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
RAW_MECHANISMS = (
    "CKM_RSA_PKCS,CKM_RSA_PKCS_KEY_PAIR_GEN,CKM_ECDSA,CKM_EC_KEY_PAIR_GEN,"
    "CKM_EDDSA,CKM_EC_EDWARDS_KEY_PAIR_GEN,CKM_SHA256,CKM_SHA384,CKM_SHA512"
)

requires_softhsm = pytest.mark.skipif(not Path(SOFTHSM_MODULE).exists(), reason="SoftHSM2 is not installed (make deps)")


def run_cli(
    env: dict[str, str], args: tuple[str, ...], *, input: str | None = None, check: bool = False
) -> subprocess.CompletedProcess[str]:
    """The real CLI as a subprocess with exactly ``env``; ``check`` fails on a non-zero exit."""
    proc = subprocess.run(
        [sys.executable, "-m", "tokenissue.cli", *args],
        input=input, capture_output=True, text=True, env=env, timeout=300, check=False,
    )  # fmt: skip
    if check and proc.returncode != 0:
        raise AssertionError(f"tokenissue {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


@dataclass
class SoftHSM:
    """A private SoftHSM installation: config, token directory, and an environment to run with."""

    root: Path
    conf: Path
    env: dict[str, str] = field(default_factory=dict)
    labels: list[str] = field(default_factory=list)

    def run(
        self, *args: str, input: str | None = None, env: dict[str, str] | None = None, check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """Run the real CLI in a subprocess with this SoftHSM."""
        return run_cli({**self.env, **(env or {})}, args, input=input, check=check)

    def add_token(self, label: str) -> None:
        proc = self.run(
            "token", "init", "--label", label, env={"TOKENISSUE_SO_PIN": SO_PIN, "TOKENISSUE_PIN": USER_PIN}
        )
        assert proc.returncode == 0, proc.stderr
        self.labels.append(label)


def make_softhsm(root: Path, *, mechanisms: str | None = None) -> SoftHSM:
    (root / "tokens").mkdir(parents=True, exist_ok=True)
    conf = root / "softhsm2.conf"
    lines = [
        f"directories.tokendir = {root / 'tokens'}",
        "objectstore.backend = file",
        "log.level = ERROR",
        "slots.removable = false",
    ]
    if mechanisms:
        lines.append(f"slots.mechanisms = {mechanisms}")
    conf.write_text("\n".join(lines) + "\n")
    env = cli_env(root, SOFTHSM_MODULE)
    env["SOFTHSM2_CONF"] = str(conf)
    return SoftHSM(root=root, conf=conf, env=env)


def cli_env(
    root: Path, module: str, *, drop: tuple[str, ...] = ("TOKENISSUE_",), drop_names: tuple[str, ...] = ("SOFTHSM2_CONF",)
) -> dict[str, str]:
    """The environment a test CLI runs with: this one without the variables that would point it
    at another token (names starting with ``drop``, or in ``drop_names``), plus the module, the
    test PIN, a state directory under ``root``, this checkout on PYTHONPATH and wide output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop) and k not in drop_names}
    env.update({
        "TOKENISSUE_MODULE": module,
        "TOKENISSUE_PIN": USER_PIN,
        "TOKENISSUE_STATE_DIR": str(root / "state"),
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
        "COLUMNS": "200",
    })  # fmt: skip
    return env


@pytest.fixture
def hsm_root() -> Iterator[Path]:
    base = TMPFS or Path(os.environ.get("TMPDIR", "/tmp"))
    root = base / f"tokenissue-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    root.mkdir(mode=0o700)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def softhsm(hsm_root: Path) -> SoftHSM:
    """A SoftHSM with one initialised token labelled 'test' (user PIN in TOKENISSUE_PIN)."""
    if not Path(SOFTHSM_MODULE).exists():
        pytest.skip("SoftHSM2 is not installed (make deps)")
    hsm = make_softhsm(hsm_root)
    hsm.add_token("test")
    return hsm


@pytest.fixture
def raw_softhsm(hsm_root: Path) -> SoftHSM:
    """A SoftHSM whose slot offers only raw mechanisms (CKM_RSA_PKCS, CKM_ECDSA, CKM_EDDSA),
    like many smart cards: the host must hash."""
    if not Path(SOFTHSM_MODULE).exists():
        pytest.skip("SoftHSM2 is not installed (make deps)")
    hsm = make_softhsm(hsm_root, mechanisms=RAW_MECHANISMS)
    hsm.add_token("test")
    return hsm


@pytest.fixture
def session_softhsm(softhsm: SoftHSM, monkeypatch: pytest.MonkeyPatch) -> Iterator[SoftHSM]:
    """The 'softhsm' fixture, with this process's python-pkcs11 switched to it."""
    from tokenissue import p11

    monkeypatch.setenv("SOFTHSM2_CONF", str(softhsm.conf))
    mod = p11.load_module(SOFTHSM_MODULE)
    mod.refresh()
    yield softhsm
    mod.refresh()


@dataclass
class SoftwareCA:
    """A CA whose key is an ordinary cryptography key: issues certificates for token keys in tests."""

    key: Any
    cert: Any
    root: Path

    @property
    def pem(self) -> bytes:
        from cryptography.hazmat.primitives import serialization

        return bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, public_key: Any, cn: str, *, days: int = 30, ca: bool = False,
              not_before: Any = None, not_after: Any = None, serial: int | None = None) -> Any:
        """A certificate for ``public_key`` signed by this CA (valid ``days`` from now by default)."""
        from datetime import UTC, datetime, timedelta

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes
        from cryptography.x509.oid import NameOID

        now = datetime.now(UTC).replace(microsecond=0)
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(self.cert.subject)
            .public_key(public_key)
            .serial_number(serial or x509.random_serial_number())
            .not_valid_before(not_before or now - timedelta(minutes=1))
            .not_valid_after(not_after or now + timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.cert.public_key()), critical=False
            )
            .sign(self.key, hashes.SHA256())
        )

    def issue_pem_file(self, public_key: Any, cn: str, name: str, *, with_ca: bool = False) -> Path:
        """Issue a certificate and write it (optionally followed by the CA's) to a PEM file."""
        from cryptography.hazmat.primitives import serialization

        cert = self.issue(public_key, cn)
        path = self.root / name
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM) + (self.pem if with_ca else b""))
        return path


def make_software_ca(root: Path, cn: str = "Test Software CA") -> SoftwareCA:
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.now(UTC).replace(microsecond=0)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    root.mkdir(parents=True, exist_ok=True)
    ca = SoftwareCA(key=key, cert=cert, root=root)
    (root / "ca.pem").write_bytes(ca.pem)
    return ca


@pytest.fixture
def software_ca(hsm_root: Path) -> SoftwareCA:
    """A software CA (EC P-256) living in the test's directory; its key never touches a token."""
    return make_software_ca(hsm_root / "ca")


# -- PostgreSQL for the inventory tests ------------------------------------------------------
# The inventory tests run on SQLite and on a real PostgreSQL server this session starts:
# Debian's PostgreSQL 15 (/usr/lib/postgresql/15/bin, or TOKENISSUE_PG_BIN) in a temporary
# directory on /dev/shm, listening only on a unix socket there, fsync off. PostgreSQL refuses
# to run as root, so as root initdb and the server run as the `postgres` system user. Each test
# gets its own database, dropped afterwards. Without the binaries, or when the server does not
# come up in 30 s, the PostgreSQL cases are skipped with the reason. (These fixtures live here
# and not in tests/inventory/conftest.py: a second conftest module would shadow this one for
# the tests that import it by name.)

PG_BIN = Path(os.environ.get("TOKENISSUE_PG_BIN", "/usr/lib/postgresql/15/bin"))
PG_START_TIMEOUT = 30


@dataclass(frozen=True)
class PgServer:
    socket_dir: Path
    data_dir: Path

    def url(self, database: str) -> str:
        # A bare postgresql:// on purpose: Inventory.open must pick the psycopg driver itself.
        return f"postgresql://postgres@/{database}?host={self.socket_dir}"

    def stop(self) -> None:
        """Stop the server now (fast shutdown: open connections are cut), for the fault tests."""
        proc = _run([str(PG_BIN / "pg_ctl"), "-D", str(self.data_dir), "stop", "-m", "fast", "-w", "-t", "30"], _pg_user(), 40)
        assert proc.returncode == 0, proc.stderr

    def start(self) -> None:
        """Start it again with the options it first ran with (pg_ctl keeps them in postmaster.opts)."""
        proc = _run(
            [str(PG_BIN / "pg_ctl"), "-D", str(self.data_dir), "-l", str(self.socket_dir / "server.log"), "-w",
             "-t", str(PG_START_TIMEOUT), "-o", _pg_options(self.socket_dir), "start"],
            _pg_user(), PG_START_TIMEOUT + 10,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr + proc.stdout


def _pg_user() -> str | None:
    """Who runs PostgreSQL: as root, the 'postgres' system user (initdb refuses root)."""
    return "postgres" if os.geteuid() == 0 else None


def _pg_options(socket_dir: Path) -> str:
    return (
        f"-c listen_addresses='' -c unix_socket_directories='{socket_dir}' -c fsync=off "
        "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
    )


def _run(cmd: list[str], user: str | None, timeout: float) -> subprocess.CompletedProcess[str]:
    if user is not None:
        cmd = ["runuser", "-u", user, "--", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


def _start_pg() -> tuple[PgServer | None, str]:
    """Start the server; (server, "") or (None, why not)."""
    missing = [b for b in ("initdb", "pg_ctl", "postgres") if not (PG_BIN / b).is_file()]
    if missing:
        return None, f"PostgreSQL server binaries not found in {PG_BIN}: {', '.join(missing)}"
    user: str | None = None
    if os.geteuid() == 0:
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            return None, "running as root and there is no 'postgres' system user to run PostgreSQL as"
        if shutil.which("runuser") is None:
            return None, "running as root and runuser is missing"
        user = "postgres"
    root = Path(tempfile.mkdtemp(prefix="tokenissue-pg-", dir=TMPFS))
    if user is not None:
        os.chown(root, pw.pw_uid, pw.pw_gid)
    data = root / "data"
    # The socket path must stay under ~107 bytes; /dev/shm/tokenissue-pg-XXXXXXXX is short.
    initdb = _run(
        [str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres",
         "--no-locale", "-E", "UTF8", "--no-sync"],
        user, 60,
    )
    if initdb.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        return None, f"initdb failed: {initdb.stderr.strip()[-500:]}"
    options = _pg_options(root)
    log = root / "server.log"
    try:
        start = _run(
            [str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", str(PG_START_TIMEOUT),
             "-o", options, "start"],
            user, PG_START_TIMEOUT + 10,
        )
        started = start.returncode == 0
        why = start.stderr.strip() or start.stdout.strip()
    except subprocess.TimeoutExpired:
        started, why = False, "timed out"
    if not started:
        tail = log.read_text(errors="replace")[-800:] if log.exists() else ""
        _stop_pg(PgServer(root, data), user)
        return None, f"PostgreSQL did not start within {PG_START_TIMEOUT} s: {why} {tail}".strip()
    return PgServer(root, data), ""


def _stop_pg(server: PgServer, user: str | None) -> None:
    # pg_ctl finds the postmaster through data/postmaster.pid.
    if (server.data_dir / "postmaster.pid").exists():
        _run([str(PG_BIN / "pg_ctl"), "-D", str(server.data_dir), "stop", "-m", "fast", "-w", "-t", "30"], user, 40)
    shutil.rmtree(server.socket_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    server, why = _start_pg()
    if server is None:
        if os.environ.get("CI"):
            # 'make test' installs PostgreSQL: in CI a missing server is a broken set-up, and
            # skipping would silently drop every PostgreSQL and replica test.
            pytest.fail(f"PostgreSQL is needed in CI: {why}")
        pytest.skip(why)
    user = "postgres" if os.geteuid() == 0 else None

    def on_sigterm(signum: int, _frame: object) -> None:
        # A session killed by a CI timeout would otherwise leave the server running.
        _stop_pg(server, user)
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield server
    finally:
        signal.signal(signal.SIGTERM, previous)
        _stop_pg(server, user)


def _admin(server: PgServer, sql: str) -> None:
    import psycopg

    with psycopg.connect(host=str(server.socket_dir), user="postgres", dbname="postgres", autocommit=True) as conn:
        conn.execute(sql.encode())  # fixed test SQL built from a uuid, no user input


@pytest.fixture
def pg_url(pg_server: PgServer) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test."""
    name = f"t_{uuid.uuid4().hex}"
    _admin(pg_server, f'CREATE DATABASE "{name}" STRATEGY FILE_COPY')
    try:
        yield pg_server.url(name)
    finally:
        # FORCE: a test that failed half-way may still hold connections.
        _admin(pg_server, f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where the inventory lives: a SQLite file path, or a PostgreSQL URL."""
    if request.param == "sqlite":
        return str(tmp_path / "inventory.db")
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture(params=["sqlite", "postgresql"])
def ca_database(request: pytest.FixtureRequest) -> str | None:
    """The inventory of a test CA: None for the default SQLite ca.db in the CA directory, or a
    fresh PostgreSQL database's URL (for 'ca init --db')."""
    if request.param == "sqlite":
        return None
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def inv(db_url: str) -> Iterator[Any]:
    from tokenissue.inventory import Inventory

    inventory = Inventory.open(db_url)
    yield inventory
    inventory.close()


# -- tpm2-pkcs11 on a software TPM -----------------------------------------------------------
# A second PKCS#11 implementation, much stricter than SoftHSM (see tests/tpm_support.py and
# /work/shared/TOKENS.md): swtpm + a private dbus-daemon + tpm2-abrmd, one per session, on
# /dev/shm. Each test gets its own tpm2-pkcs11 store (TPMTokens, the same interface as SoftHSM).
# Without the packages the TPM cases are skipped; in CI ('make test' installs them) that fails.
# The dictionary-attack lockout is TPM-wide: 'tpm' clears it before each test, and tests that
# enter wrong PINs use 'locking_tpm', which has a TPM of its own. tpm_support is imported
# inside the fixtures: it imports this module (SoftHSM, the PINs), which is still loading here.

from typing import TYPE_CHECKING, NoReturn  # noqa: E402 - this section's own imports

if TYPE_CHECKING:
    from tpm_support import SoftwareTPM, TPMTokens


def _tpm_unavailable(why: str) -> NoReturn:
    if os.environ.get("CI"):
        pytest.fail(f"The software TPM is needed in CI: {why}")
    pytest.skip(why)


def _start_software_tpm() -> SoftwareTPM:
    from tpm_support import SoftwareTPM, TPMError, tpm_available

    ok, why = tpm_available()
    if not ok:
        _tpm_unavailable(why)
    try:
        return SoftwareTPM().start()
    except TPMError as e:
        _tpm_unavailable(f"the software TPM did not start: {e}")


@pytest.fixture(scope="session")
def software_tpm() -> Iterator[SoftwareTPM]:
    """One running SoftwareTPM (swtpm + dbus-daemon + tpm2-abrmd) for the whole session."""
    tpm = _start_software_tpm()
    try:
        yield tpm
    finally:
        tpm.stop()


@pytest.fixture
def tpm(software_tpm: SoftwareTPM, hsm_root: Path) -> TPMTokens:
    """A TPMTokens (a fresh tpm2-pkcs11 store on the session's TPM) with one token 'test'
    (user PIN in TOKENISSUE_PIN); the dictionary-attack lockout is cleared first."""
    from tpm_support import make_tpm_tokens

    software_tpm.clear_lockout()
    tokens = make_tpm_tokens(hsm_root / "tpm", software_tpm)
    tokens.add_token("test")
    return tokens


@pytest.fixture
def tpm_with_softhsm(software_tpm: SoftwareTPM, hsm_root: Path) -> tuple[SoftHSM, TPMTokens]:
    """(softhsm, tpm): a SoftHSM with token 'ca' and a TPM store with token 'test'; the TPM's env
    also carries SOFTHSM2_CONF, so one CLI process can use both modules."""
    from tpm_support import make_tpm_tokens

    if not Path(SOFTHSM_MODULE).exists():
        pytest.skip("SoftHSM2 is not installed (make deps)")
    softhsm = make_softhsm(hsm_root / "softhsm")
    softhsm.add_token("ca")
    software_tpm.clear_lockout()
    tokens = make_tpm_tokens(hsm_root / "tpm", software_tpm, with_softhsm=softhsm)
    tokens.add_token("test")
    return softhsm, tokens


@pytest.fixture
def locking_tpm(hsm_root: Path) -> Iterator[TPMTokens]:
    """A TPMTokens with token 'test' on a SoftwareTPM of its own (the lockout is TPM-wide, so
    wrong-PIN tests must not share one), stopped after the test. ``.tpm.clear_lockout()``."""
    from tpm_support import make_tpm_tokens

    own = _start_software_tpm()
    try:
        tokens = make_tpm_tokens(hsm_root / "tpm", own)
        tokens.add_token("test")
        yield tokens
    finally:
        own.stop()


@pytest.fixture
def session_tpm(tpm: TPMTokens, monkeypatch: pytest.MonkeyPatch) -> Iterator[TPMTokens]:
    """The 'tpm' fixture, with this process's python-pkcs11 switched to its store."""
    from tpm_support import TPM2_MODULE

    from tokenissue import p11

    for key, value in tpm.tpm.client_env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("TPM2_PKCS11_STORE", str(tpm.store))
    mod = p11.load_module(TPM2_MODULE)
    mod.refresh()
    yield tpm
    mod.refresh()


# -- The token suites by implementation ------------------------------------------------------
# Issue 10, point 8: the token and lifecycle suites run on every PKCS#11 implementation the
# project is proven on. 'token_impl' is parametrized over
#   softhsm      SoftHSM 2.6 (permissive: sign-only keys, any attribute, the reference);
#   softhsm-raw  SoftHSM with a smart-card-like slots.mechanisms (RAW_MECHANISMS: raw CKM_ECDSA,
#                CKM_RSA_PKCS and CKM_EDDSA only, so the host hashes);
#   tpm2         tpm2-pkcs11 on the session's software TPM (strict templates, keys that decrypt
#                too, no Ed25519, RSA 1024-3072, every serial 0000000000000000).
# It yields a TokenImpl: the SoftHSM interface (run, env, root, add_token, labels; a token
# 'test') plus what the implementation can do. Those facts are what 'tokenissue token check
# --json' reports, asked once per implementation per session, and they must agree with the
# ones documented in DOCUMENTED_IMPLS (/work/shared/TOKENS.md, RAW_MECHANISMS): a product
# that starts to misreport a token fails here instead of turning tests into skips. A test that
# needs a key type calls token_impl.require(key_type): skipped with the reason when the token
# cannot make it (test_keys.py proves that refusal) or when it would only repeat, slowly, what
# another case of the test proves. Tests that learn nothing from some implementation narrow
# the parametrization with on_impls(...). Where tokens legitimately differ, tests compare what
# tokenissue reports with the token's own answer: key_report / TokenImpl.key_attributes read a
# key's flags with python-pkcs11 and ask the token for a real decryption (or ECDH) with it.
# 'session_token_impl' also switches this process's
# python-pkcs11 to the implementation; 'token_impl_with_ca' adds a CA whose key is on a
# SoftHSM token 'ca' (the same SoftHSM for softhsm/softhsm-raw; for tpm2 a SoftHSM next to the
# TPM store, both modules in one CLI environment, as tpm_with_softhsm).

import json as _json  # noqa: E402 - this section's own imports

from tokenissue.models import KeyAlgorithm, KeyType  # noqa: E402

if TYPE_CHECKING:
    from lifecycle_support import TokenCA

TOKEN_IMPLS = ("softhsm", "softhsm-raw", "tpm2")
_RSA_BIG = (KeyType.RSA_3072, KeyType.RSA_4096)
_RAW_RSA_DUPLICATE = (
    "on softhsm-raw the RSA path (host hash + CKM_RSA_PKCS) does not depend on the key size: rsa-2048 "
    "covers it, and test_restricted.py makes a CSR with every size"
)


@dataclass(frozen=True)
class ImplFacts:
    """What one PKCS#11 implementation does, as far as the token tests care."""

    key_types: frozenset[KeyType]
    """The key types it can generate."""
    sign_only: bool
    """Whether it makes keys with CKA_DECRYPT (and UNWRAP) off: token check's sign_only_keys.
    tpm2-pkcs11 sets CKA_DECRYPT on every key."""
    decrypting: frozenset[KeyType]
    """Key types whose keys, as tokenissue makes them by default, really can decrypt (their
    forced CKA_DECRYPT together with a CKA_ALLOWED_MECHANISMS holding CKM_RSA_PKCS). Not asked
    through 'token check' (it tells only when probing); measured, and proven by the tests
    against a real decryption (key_report)."""
    token_hashes: frozenset[KeyType]
    """Key types whose SHA-256 signatures are made with a hash-and-sign (combined) mechanism."""
    serials_unique: bool
    """Whether the token's serial names it (else tokenissue records a pkcs11: URI)."""
    pin_counters: bool
    """Whether C_GetTokenInfo reports PIN tries left."""
    # Not asked through 'token check' (it cannot tell); measured on this machine:
    secret_read_error: str = "AttributeSensitive"
    """The python-pkcs11 exception reading a private key's secret attribute gives."""
    extractable_locked: bool = True
    """Whether C_SetAttributeValue refuses to turn CKA_EXTRACTABLE back on (PKCS#11 requires it;
    tpm2-pkcs11 1.9 accepts it and reads back True)."""
    duplicates: tuple[tuple[KeyType, str], ...] = ()
    """Key types a test would only repeat on this implementation, slowly, with why (skipped)."""


DOCUMENTED_IMPLS: dict[str, ImplFacts] = {
    "softhsm": ImplFacts(
        key_types=frozenset(KeyType), sign_only=True, decrypting=frozenset(), serials_unique=True, pin_counters=True,
        # SoftHSM 2.6.1 has SHA*_RSA_PKCS but no CKM_ECDSA_SHA*: the host hashes for ECDSA.
        token_hashes=frozenset(k for k in KeyType if k.algorithm is KeyAlgorithm.RSA),
    ),
    "softhsm-raw": ImplFacts(
        key_types=frozenset(KeyType), sign_only=True, decrypting=frozenset(), serials_unique=True, pin_counters=True,
        token_hashes=frozenset(),
        duplicates=tuple((k, _RAW_RSA_DUPLICATE) for k in _RSA_BIG),
    ),
    "tpm2": ImplFacts(
        key_types=frozenset({KeyType.EC_P256, KeyType.EC_P384, KeyType.RSA_2048, KeyType.RSA_3072}),
        sign_only=False, serials_unique=False, pin_counters=False,
        # CKA_DECRYPT is set on every key, but every key is pinned to signature-only mechanisms (no raw CKM_RSA_PKCS): none decrypts.
        decrypting=frozenset(),
        token_hashes=frozenset({KeyType.EC_P256, KeyType.EC_P384, KeyType.RSA_2048, KeyType.RSA_3072}),
        secret_read_error="AttributeTypeInvalid", extractable_locked=False,
    ),
}  # fmt: skip

# impl -> (facts, 'token check --json' of the first token 'test' it was asked about)
_CHECKED_IMPLS: dict[str, tuple[ImplFacts, dict[str, Any]]] = {}

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


def _key_report_main() -> None:
    """``python -c``: print key_report for argv module, token, pin, label (TokenImpl.key_attributes)."""
    import pkcs11

    module, token, pin, label = sys.argv[1:5]
    with pkcs11.lib(module).get_token(token_label=token).open(user_pin=pin) as session:
        print(_json.dumps(key_report(session, label)))


def on_impls(*impls: str) -> pytest.MarkDecorator:
    """Run a token_impl test on these implementations only (it learns nothing from the others)."""
    unknown = set(impls) - set(TOKEN_IMPLS)
    assert not unknown, unknown
    return pytest.mark.parametrize("token_impl", impls, indirect=True)


@dataclass
class TokenImpl:
    """A token 'test' on one PKCS#11 implementation: the SoftHSM interface plus its facts."""

    impl: str
    """"softhsm", "softhsm-raw" or "tpm2" (the parameter id)."""
    tokens: Any
    """The SoftHSM or tpm_support.TPMTokens underneath."""
    facts: ImplFacts
    check: dict[str, Any]
    """'tokenissue token check --json' of this implementation's token 'test' (asked once per session)."""
    ca_softhsm: SoftHSM | None = None
    """tpm2: a SoftHSM (no token yet) whose SOFTHSM2_CONF the environment carries, for a CA."""

    # -- the SoftHSM interface ---------------------------------------------------------------
    @property
    def root(self) -> Path:
        return Path(self.tokens.root)

    @property
    def env(self) -> dict[str, str]:
        env: dict[str, str] = self.tokens.env
        return env

    @property
    def labels(self) -> list[str]:
        labels: list[str] = self.tokens.labels
        return labels

    def run(
        self, *args: str, input: str | None = None, env: dict[str, str] | None = None, check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        proc: subprocess.CompletedProcess[str] = self.tokens.run(*args, input=input, env=env, check=check)
        return proc

    def add_token(self, label: str) -> None:
        self.tokens.add_token(label)

    # -- the facts -----------------------------------------------------------------------------
    @property
    def module(self) -> str:
        return SOFTHSM_MODULE if isinstance(self.tokens, SoftHSM) else str(self.tokens.module)

    @property
    def key_types(self) -> frozenset[KeyType]:
        return self.facts.key_types

    @property
    def sign_only(self) -> bool:
        """Whether keys come out with CKA_DECRYPT off (see ImplFacts.sign_only, and decrypting)."""
        return self.facts.sign_only

    @property
    def decrypting(self) -> frozenset[KeyType]:
        return self.facts.decrypting

    @property
    def combined_mechanisms(self) -> bool:
        """Whether the token hashes (a hash-and-sign mechanism) for some key type; see hashes_on_token."""
        return bool(self.facts.token_hashes)

    def hashes_on_token(self, key_type: KeyType) -> bool:
        return key_type in self.facts.token_hashes

    @property
    def serials_unique(self) -> bool:
        return self.facts.serials_unique

    @property
    def process_env(self) -> dict[str, str]:
        """What this process's environment needs for python-pkcs11 to see these tokens."""
        if isinstance(self.tokens, SoftHSM):
            return {"SOFTHSM2_CONF": str(self.tokens.conf)}
        return {**self.tokens.tpm.client_env, "TPM2_PKCS11_STORE": str(self.tokens.store)}

    def unsupported_reason(self, key_type: KeyType) -> str | None:
        """Why the token cannot make ``key_type`` (token check's words), or None."""
        if key_type in self.key_types:
            return None
        row = next(r for r in self.check["key_types"] if r["type"] == key_type.value)
        return str(row["reason"])

    def require(self, key_type: KeyType) -> None:
        """Skip the test, with the reason, unless this implementation makes ``key_type`` and the
        case adds something here."""
        why = self.unsupported_reason(key_type)
        if why is not None:
            pytest.skip(f"{self.impl} cannot make {key_type.value} keys: {why} (test_keys.py proves the refusal)")
        for kt, dup in self.facts.duplicates:
            if kt is key_type:
                pytest.skip(f"{key_type.value} on {self.impl} repeats another case: {dup}")

    # -- reading the token directly ------------------------------------------------------------
    def tokens_json(self, *extra: str) -> list[dict[str, Any]]:
        return list(_json.loads(self.run("tokens", "--json", *extra, check=True).stdout))

    def identity(self, label: str = "test") -> str:
        """What tokenissue records for the token ``label`` ('tokens --json': its identity)."""
        return str(next(t["identity"] for t in self.tokens_json() if t["label"] == label))

    def key_attributes(self, label: str, on: str = "test") -> dict[str, bool | str]:
        """key_report of the key pair ``label`` on the token ``on``, from a process of its own
        that opens the module with python-pkcs11 (not through tokenissue)."""
        code = f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import conftest; conftest._key_report_main()"
        proc = subprocess.run(
            [sys.executable, "-c", code, self.module, on, USER_PIN, label],
            capture_output=True, text=True, env=self.env, timeout=60, check=False,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stdout + proc.stderr
        out: dict[str, bool | str] = _json.loads(proc.stdout.strip().splitlines()[-1])
        return out

    def remove_token(self, label: str) -> None:
        """Take the token away, as a holder who lost it (SoftHSM: its directory; TPM: rmtoken)."""
        if isinstance(self.tokens, SoftHSM):
            # SoftHSM keeps each token in a directory whose token.object holds the label, padded.
            padded = label.encode().ljust(32)
            [gone] = [o.parent for o in (self.root / "tokens").glob("*/token.object") if padded in o.read_bytes()]
            shutil.rmtree(gone)
        else:
            self.tokens.tpm.tool("tpm2_ptool", "rmtoken", "--label", label, "--path", str(self.tokens.store))
        assert label not in [t["label"] for t in self.tokens_json()]

    def make_ca(self, **kwargs: Any) -> TokenCA:
        """lifecycle_support.make_token_ca for this holder token: the CA key on SoftHSM token 'ca'."""
        from lifecycle_support import make_token_ca

        if not Path(SOFTHSM_MODULE).exists():
            pytest.skip("SoftHSM2 is not installed (make deps): the CA's token is on it")
        return make_token_ca(self, ca_hsm=self.ca_softhsm, **kwargs)


def _impl_facts(impl: str, tokens: Any) -> tuple[ImplFacts, dict[str, Any]]:
    """The implementation's facts from 'token check --json', checked against the documented ones."""
    if impl in _CHECKED_IMPLS:
        return _CHECKED_IMPLS[impl]
    proc = tokens.run("token", "check", "-t", "test", "--json")
    assert proc.returncode == 0, f"token check on {impl} exited {proc.returncode}: {proc.stdout}{proc.stderr}"
    check = _json.loads(proc.stdout)
    rows = {KeyType(r["type"]): r for r in check["key_types"]}
    findings = check["findings"]
    documented = DOCUMENTED_IMPLS[impl]
    reported = ImplFacts(
        key_types=frozenset(k for k, r in rows.items() if r["supported"]),
        # sign_only here is "CKA_DECRYPT comes out off"; token check reports the flag itself.
        sign_only=not findings["sign_only_keys"]["decrypt_flag"],
        decrypting=documented.decrypting,
        token_hashes=frozenset(k for k, r in rows.items() if "(token hashes)" in r["signature"]),
        serials_unique=bool(findings["serials_unique"]["value"]),
        pin_counters=bool(findings["pin_counters"]["value"]),
        secret_read_error=documented.secret_read_error,
        extractable_locked=documented.extractable_locked,
        duplicates=documented.duplicates,
    )
    if reported != documented:
        pytest.fail(
            f"'tokenissue token check' describes {impl} differently from what is documented and measured "
            f"(tests/conftest.py DOCUMENTED_IMPLS, /work/shared/TOKENS.md):\n reported   {reported}\n documented "
            f"{documented}\n{proc.stdout}"
        )
    _CHECKED_IMPLS[impl] = (reported, check)
    return reported, check


@pytest.fixture(params=TOKEN_IMPLS)
def token_impl(request: pytest.FixtureRequest, hsm_root: Path) -> TokenImpl:
    """A token 'test' (user PIN in TOKENISSUE_PIN) on each implementation, with its facts."""
    impl = str(request.param)
    ca_softhsm: SoftHSM | None = None
    tokens: Any
    if impl == "tpm2":
        from tpm_support import make_tpm_tokens

        software_tpm: SoftwareTPM = request.getfixturevalue("software_tpm")
        software_tpm.clear_lockout()
        ca_softhsm = make_softhsm(hsm_root / "softhsm")  # a config only; make_ca adds its token
        tokens = make_tpm_tokens(hsm_root / "tpm", software_tpm, with_softhsm=ca_softhsm)
    else:
        if not Path(SOFTHSM_MODULE).exists():
            pytest.skip("SoftHSM2 is not installed (make deps)")
        tokens = make_softhsm(hsm_root, mechanisms=RAW_MECHANISMS if impl == "softhsm-raw" else None)
    tokens.add_token("test")
    facts, check = _impl_facts(impl, tokens)
    return TokenImpl(impl=impl, tokens=tokens, facts=facts, check=check, ca_softhsm=ca_softhsm)


@pytest.fixture
def session_token_impl(token_impl: TokenImpl, monkeypatch: pytest.MonkeyPatch) -> Iterator[TokenImpl]:
    """The 'token_impl' fixture, with this process's python-pkcs11 switched to its tokens."""
    from tokenissue import p11

    for key, value in token_impl.process_env.items():
        monkeypatch.setenv(key, value)
    mod = p11.load_module(token_impl.module)
    mod.refresh()
    yield token_impl
    mod.refresh()


@pytest.fixture
def token_impl_with_ca(token_impl: TokenImpl, request: pytest.FixtureRequest) -> TokenCA:
    """A fresh EC P-256 CA with its key on SoftHSM token 'ca'; the holder's token 'test' is
    token_impl's (``ca.hsm`` is the TokenImpl). A test parametrized by a ``key_type`` the
    implementation cannot make is skipped before the CA is made (token_impl.require)."""
    callspec = getattr(request.node, "callspec", None)
    key_type = callspec.params.get("key_type") if callspec is not None else None
    if isinstance(key_type, KeyType):
        token_impl.require(key_type)
    return token_impl.make_ca()
