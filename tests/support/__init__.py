"""What the tests share, one module a topic; the fixtures built from it are in tests/conftest.py
(and tests/interop/conftest.py for Pebble).

tests/ has no __init__.py: pytest's default import mode (prepend) puts tests/ on sys.path when
it loads tests/conftest.py, so a test imports ``from support.softhsm import SoftHSM``. A script
or subprocess that needs a helper puts tests/ on sys.path itself (bench/acme.py,
TokenImpl.key_attributes). tests/conftest.py registers this package for pytest's assertion
rewriting.

cli          the real CLI as a subprocess: ``run_cli``, ``cli_env``, the test PINs
softhsm      a private SoftHSM per test: ``SoftHSM``, ``make_softhsm``, ``RAW_MECHANISMS``
software_ca  a CA with an ordinary software key, for certificates without a CA token
lifecycle    a CA whose key is on a token (``make_token_ca``, ``TokenCA``), fast token set-up
token_impls  the token suites by implementation: ``TokenImpl``, documented facts, ``on_impls``
key_report   what the token itself says and does with a key pair (python-pkcs11, not tokenissue)
tpm          tpm2-pkcs11 on a software TPM: ``SoftwareTPM``, ``TPMTokens``
postgres     a PostgreSQL server for the inventory and fleet tests: ``PgServer``, ``start_pg``
inventory    reaching the inventory's database behind its back: ``raw``, ``schema_snapshot``
servers      a free port on 127.0.0.1 and stopping a server by PID
cmp_server   the CMP server in-process or as ``ca serve``, and a CMP client for it
fleet        concurrent CMP enrollments failing over between ``ca serve`` replicas
acme         Pebble and challtestsrv, Debian's ACME test servers
openssl      the system's openssl next to the tokens: engine config, ``s_server``
safe_names   hostile subjects and SANs, hand-made CSRs
"""
