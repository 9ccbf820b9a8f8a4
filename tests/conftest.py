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
        full_env = {**self.env, **(env or {})}
        proc = subprocess.run(
            [sys.executable, "-m", "tokenissue.cli", *args],
            input=input,
            capture_output=True,
            text=True,
            env=full_env,
            timeout=300,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"tokenissue {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
        return proc

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
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENISSUE_") and k not in ("SOFTHSM2_CONF",)}
    env.update(
        {
            "SOFTHSM2_CONF": str(conf),
            "TOKENISSUE_MODULE": SOFTHSM_MODULE,
            "TOKENISSUE_PIN": USER_PIN,
            "TOKENISSUE_STATE_DIR": str(root / "state"),
            "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
            "COLUMNS": "200",
        }
    )
    return SoftHSM(root=root, conf=conf, env=env)


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
