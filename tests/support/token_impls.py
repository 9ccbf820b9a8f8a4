"""The token suites by implementation (issue 10, point 8): the token and lifecycle suites run
on every PKCS#11 implementation the project is proven on. The ``token_impl`` fixture
(tests/conftest.py) is parametrized over

  softhsm      SoftHSM 2.6 (permissive: sign-only keys, any attribute, the reference);
  softhsm-raw  SoftHSM with a smart-card-like slots.mechanisms (RAW_MECHANISMS: raw CKM_ECDSA,
               CKM_RSA_PKCS and CKM_EDDSA only, so the host hashes);
  tpm2         tpm2-pkcs11 on the session's software TPM (strict templates, keys that decrypt
               too, no Ed25519, RSA 1024-3072, every serial 0000000000000000).

It yields a :class:`TokenImpl`: the SoftHSM interface (run, env, root, add_token, labels; a
token 'test') plus what the implementation can do. Those facts are what 'tokenissue token
check --json' reports, asked once per implementation per session (:func:`impl_facts`), and
they must agree with the ones documented in DOCUMENTED_IMPLS (/work/shared/TOKENS.md,
RAW_MECHANISMS): a product that starts to misreport a token fails there instead of turning
tests into skips. A test that needs a key type calls token_impl.require(key_type): skipped with
the reason when the token cannot make it (test_keys.py proves that refusal) or when it would
only repeat, slowly, what another case of the test proves. Tests that learn nothing from some
implementation narrow the parametrization with :func:`on_impls`. Where tokens legitimately
differ, tests compare what tokenissue reports with the token's own answer: support.key_report
and TokenImpl.key_attributes (the same, from a process of its own) read a key's flags with
python-pkcs11 and ask the token for a real decryption (or ECDH) with it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tokenissue.models import KeyAlgorithm, KeyType

from support.cli import USER_PIN
from support.lifecycle import TokenCA, make_token_ca
from support.softhsm import SOFTHSM_MODULE, SoftHSM

#: tests/, which a subprocess puts on sys.path to import this module.
TESTS = Path(__file__).resolve().parents[1]

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
    """The SoftHSM or support.tpm.TPMTokens underneath."""
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
        return list(json.loads(self.run("tokens", "--json", *extra, check=True).stdout))

    def identity(self, label: str = "test") -> str:
        """What tokenissue records for the token ``label`` ('tokens --json': its identity)."""
        return str(next(t["identity"] for t in self.tokens_json() if t["label"] == label))

    def key_attributes(self, label: str, on: str = "test") -> dict[str, bool | str]:
        """support.key_report of the key pair ``label`` on the token ``on``, from a process of its own
        that opens the module with python-pkcs11 (not through tokenissue)."""
        code = (f"import sys; sys.path.insert(0, {str(TESTS)!r}); "
                "from support.key_report import key_report_main; key_report_main()")
        proc = subprocess.run(
            [sys.executable, "-c", code, self.module, on, USER_PIN, label],
            capture_output=True, text=True, env=self.env, timeout=60, check=False,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stdout + proc.stderr
        out: dict[str, bool | str] = json.loads(proc.stdout.strip().splitlines()[-1])
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
        """support.lifecycle.make_token_ca for this holder token: the CA key on SoftHSM token 'ca'."""
        if not Path(SOFTHSM_MODULE).exists():
            pytest.skip("SoftHSM2 is not installed (make deps): the CA's token is on it")
        return make_token_ca(self, ca_hsm=self.ca_softhsm, **kwargs)


def impl_facts(impl: str, tokens: Any) -> tuple[ImplFacts, dict[str, Any]]:
    """The implementation's facts from 'token check --json', checked against the documented ones."""
    if impl in _CHECKED_IMPLS:
        return _CHECKED_IMPLS[impl]
    proc = tokens.run("token", "check", "-t", "test", "--json")
    assert proc.returncode == 0, f"token check on {impl} exited {proc.returncode}: {proc.stdout}{proc.stderr}"
    check = json.loads(proc.stdout)
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
            f"(tests/support/token_impls.py DOCUMENTED_IMPLS, /work/shared/TOKENS.md):\n reported   {reported}\n documented "
            f"{documented}\n{proc.stdout}"
        )
    _CHECKED_IMPLS[impl] = (reported, check)
    return reported, check
