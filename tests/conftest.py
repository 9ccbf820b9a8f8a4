"""Shared fixtures: real SoftHSM tokens in per-test directories on tmpfs, a PostgreSQL server,
a software TPM, and the token suites by implementation.

Only fixtures live here; what they are made of, and every helper the tests import, is in the
package tests/support (its __init__ lists the modules). Nothing here mocks the PKCS#11 layer.
"""

from __future__ import annotations

import os
import shutil
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Before the support modules are imported: their asserts explain themselves as the tests' do.
pytest.register_assert_rewrite("support")

from tokenissue.models import KeyType  # noqa: E402

from support.lifecycle import TokenCA  # noqa: E402
from support.postgres import PgServer, pg_admin, pg_user, start_pg, stop_pg  # noqa: E402
from support.softhsm import RAW_MECHANISMS, SOFTHSM_MODULE, TMPFS, SoftHSM, make_softhsm  # noqa: E402
from support.software_ca import SoftwareCA, make_software_ca  # noqa: E402
from support.token_impls import TOKEN_IMPLS, TokenImpl, impl_facts  # noqa: E402
from support.tpm import SoftwareTPM, TPMTokens, make_tpm_tokens, start_software_tpm, tpm_in_process  # noqa: E402


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


@pytest.fixture
def software_ca(hsm_root: Path) -> SoftwareCA:
    """A software CA (EC P-256) living in the test's directory; its key never touches a token."""
    return make_software_ca(hsm_root / "ca")


# -- PostgreSQL for the inventory tests ------------------------------------------------------
# One server per session (support/postgres.py); each test gets its own database, dropped
# afterwards. Without the binaries, or when the server does not come up in 30 s, the PostgreSQL
# cases are skipped with the reason. These fixtures live here, not in tests/inventory/conftest.py:
# the replica tests in tests/fleet use them too.


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    server, why = start_pg()
    if server is None:
        if os.environ.get("CI"):
            # 'make test' installs PostgreSQL: in CI a missing server is a broken set-up, and
            # skipping would silently drop every PostgreSQL and replica test.
            pytest.fail(f"PostgreSQL is needed in CI: {why}")
        pytest.skip(why)
    user = pg_user()

    def on_sigterm(signum: int, _frame: object) -> None:
        # A session killed by a CI timeout would otherwise leave the server running.
        stop_pg(server, user)
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield server
    finally:
        signal.signal(signal.SIGTERM, previous)
        stop_pg(server, user)


@pytest.fixture
def pg_url(pg_server: PgServer) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test."""
    name = f"t_{uuid.uuid4().hex}"
    pg_admin(pg_server, f'CREATE DATABASE "{name}" STRATEGY FILE_COPY')
    try:
        yield pg_server.url(name)
    finally:
        # FORCE: a test that failed half-way may still hold connections.
        pg_admin(pg_server, f'DROP DATABASE "{name}" WITH (FORCE)')


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
# A second PKCS#11 implementation, much stricter than SoftHSM (see tests/support/tpm.py and
# /work/shared/TOKENS.md): swtpm + a private dbus-daemon + tpm2-abrmd, one per session, on
# /dev/shm. Each test gets its own tpm2-pkcs11 store (TPMTokens, the same interface as SoftHSM).
# Without the packages the TPM cases are skipped; in CI ('make test' installs them) that fails.
# The dictionary-attack lockout is TPM-wide: 'tpm' clears it before each test, and tests that
# enter wrong PINs use 'locking_tpm', which has a TPM of its own.


@pytest.fixture(scope="session")
def software_tpm() -> Iterator[SoftwareTPM]:
    """One running SoftwareTPM (swtpm + dbus-daemon + tpm2-abrmd) for the whole session."""
    tpm = start_software_tpm()
    try:
        yield tpm
    finally:
        tpm.stop()


@pytest.fixture
def tpm(software_tpm: SoftwareTPM, hsm_root: Path) -> TPMTokens:
    """A TPMTokens (a fresh tpm2-pkcs11 store on the session's TPM) with one token 'test'
    (user PIN in TOKENISSUE_PIN); the dictionary-attack lockout is cleared first."""
    software_tpm.clear_lockout()
    tokens = make_tpm_tokens(hsm_root / "tpm", software_tpm)
    tokens.add_token("test")
    return tokens


@pytest.fixture
def tpm_with_softhsm(software_tpm: SoftwareTPM, hsm_root: Path) -> tuple[SoftHSM, TPMTokens]:
    """(softhsm, tpm): a SoftHSM with token 'ca' and a TPM store with token 'test'; the TPM's env
    also carries SOFTHSM2_CONF, so one CLI process can use both modules."""
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
    own = start_software_tpm()
    try:
        tokens = make_tpm_tokens(hsm_root / "tpm", own)
        tokens.add_token("test")
        yield tokens
    finally:
        own.stop()


@pytest.fixture
def session_tpm(tpm: TPMTokens, monkeypatch: pytest.MonkeyPatch) -> Iterator[TPMTokens]:
    """The 'tpm' fixture, with this process's python-pkcs11 switched to its store."""
    with tpm_in_process(tpm, monkeypatch):
        yield tpm


# -- The token suites by implementation ------------------------------------------------------
# 'token_impl' runs a test on SoftHSM, SoftHSM with raw mechanisms only, and tpm2-pkcs11 (see
# support/token_impls.py for what each is and how its facts are checked). 'session_token_impl'
# also switches this process's python-pkcs11 to the implementation; 'token_impl_with_ca' adds a
# CA whose key is on a SoftHSM token 'ca' (the same SoftHSM for softhsm/softhsm-raw; for tpm2 a
# SoftHSM next to the TPM store, both modules in one CLI environment, as tpm_with_softhsm).

@pytest.fixture(params=TOKEN_IMPLS)
def token_impl(request: pytest.FixtureRequest, hsm_root: Path) -> TokenImpl:
    """A token 'test' (user PIN in TOKENISSUE_PIN) on each implementation, with its facts."""
    impl = str(request.param)
    ca_softhsm: SoftHSM | None = None
    tokens: Any
    if impl == "tpm2":
        software_tpm: SoftwareTPM = request.getfixturevalue("software_tpm")
        software_tpm.clear_lockout()
        ca_softhsm = make_softhsm(hsm_root / "softhsm")  # a config only; make_ca adds its token
        tokens = make_tpm_tokens(hsm_root / "tpm", software_tpm, with_softhsm=ca_softhsm)
    else:
        if not Path(SOFTHSM_MODULE).exists():
            pytest.skip("SoftHSM2 is not installed (make deps)")
        tokens = make_softhsm(hsm_root, mechanisms=RAW_MECHANISMS if impl == "softhsm-raw" else None)
    tokens.add_token("test")
    facts, check = impl_facts(impl, tokens)
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
