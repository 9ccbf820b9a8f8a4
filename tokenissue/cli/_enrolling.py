"""What the commands that enroll, renew and revoke share: the CMP and ACME arguments, opening
a CA by its location, the holder's records, progress hooks, and naming a lost token.

A private toolkit of the cli package: command modules import it, never each other.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from ..credentials import Secret
from ..errors import PinError, UsageError
from ..models import StepHook, no_step
from ._common import ca_pin_source, err_console, read_secret_file, state

if TYPE_CHECKING:
    from ..enroll.base import Enroller
    from ..fleet.batch import BatchRow

AUTH_CODE_ENV = "TOKENISSUE_AUTH_CODE"


@dataclass
class AuthCodeSource:
    """Where the CMP authorization code comes from: --auth-code-file, $TOKENISSUE_AUTH_CODE or a
    hidden prompt, never argv. Read once, when first needed, then kept for this process."""

    file: Path | None
    why: str = "Enrolling at a CMP server"  #: what needs it, for the message when it is missing
    _value: Secret | None = field(default=None, repr=False)

    def __call__(self) -> Secret:
        if self._value is None:
            self._value = self._read()
        return self._value

    def _read(self) -> Secret:
        if self.file is not None:
            return Secret(read_secret_file(self.file, "authorization code"))
        value = os.environ.get(AUTH_CODE_ENV)
        if value:
            return Secret(value)
        if not sys.stdin.isatty():
            raise PinError(
                f"{self.why} needs the authorization code: set {AUTH_CODE_ENV} or give --auth-code-file."
            )
        code: str = typer.prompt("Authorization code", hide_input=True)
        return Secret(code)


@dataclass(frozen=True)
class ServerArgs:
    """What a command gives a CA server, passed to every enroller it opens: the CMP reference
    and authorization code, and the CA certificates to trust (--ca-trust: the CMP server's
    signer, or the roots an ACME chain may end in)."""

    ref: str | None = None
    auth_code: Callable[[], Secret] | Secret | None = None
    trust_file: Path | None = None

    def trust(self) -> list[Any]:
        if self.trust_file is None:
            return []
        from ..pkix.certs import load_certificates

        try:
            data = self.trust_file.read_bytes()
        except OSError:
            raise UsageError(f"Cannot read the --ca-trust file '{self.trust_file}'.") from None
        try:
            return load_certificates(data)
        except UsageError:
            raise UsageError(f"The --ca-trust file '{self.trust_file}' holds no certificates.") from None


@dataclass(frozen=True)
class AcmeArgs:
    """The ACME options of one command; the EAB HMAC key is read from its file only when set."""

    email: str | None = None
    eab_kid: str | None = None
    eab_hmac_file: Path | None = None
    challenge: str = "http-01"
    http01_address: str = "0.0.0.0:80"
    dns_hook: str | None = None
    acme_trust: Path | None = None

    def options(self, ctx: typer.Context, roots: list[Any]) -> Any:
        from ..enroll.acme_options import ACMEOptions, Challenge, ExternalAccount

        if (self.eab_kid is None) != (self.eab_hmac_file is None):
            raise UsageError("External account binding needs both --eab-kid and --eab-hmac-file.")
        eab = None
        if self.eab_kid is not None and self.eab_hmac_file is not None:
            eab = ExternalAccount(self.eab_kid, Secret(read_secret_file(self.eab_hmac_file, "EAB HMAC key")))
        if self.acme_trust is not None and not self.acme_trust.is_file():
            raise UsageError(f"Cannot read the --acme-trust file '{self.acme_trust}'.")
        host, sep, port = self.http01_address.rpartition(":")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            raise UsageError(f"--http-01-address wants HOST:PORT, not '{self.http01_address}'.")
        challenge = Challenge(self.challenge)
        if challenge is Challenge.DNS_01 and not self.dns_hook:
            raise UsageError("--challenge dns-01 needs --dns-hook, the command that publishes the TXT record.")

        def progress(message: str) -> None:
            err_console().print(message, markup=False, highlight=False)

        return ACMEOptions(
            state_dir=state(ctx).state_dir, email=self.email, eab=eab, challenge=challenge,
            http01_address=(host.strip("[]") or "0.0.0.0", int(port)), dns_hook=self.dns_hook,  # noqa: S104
            tls_trust=self.acme_trust, roots=roots, progress=progress,
        )  # fmt: skip


def holder_state(ctx: typer.Context) -> Any:
    from ..inventory import Inventory

    d = state(ctx).state_dir
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    return Inventory.open(d / "state.db")


def failpoint(variable: str) -> StepHook | None:
    """The crash tests' fault-injection point: with ``variable`` set to STEP in the environment,
    a hook that kills this process with SIGKILL right after STEP, exactly as a power cut would;
    None when it is not set."""
    step_named = os.environ.get(variable)
    if not step_named:
        return None

    def hook(step: str) -> None:
        if step == step_named:
            os.kill(os.getpid(), signal.SIGKILL)

    return hook


def step_hook() -> StepHook:
    """The holder's step hook: TOKENISSUE_FAILPOINT=STEP (see :func:`failpoint`); the journal
    must then let the next run finish the work."""
    return failpoint("TOKENISSUE_FAILPOINT") or no_step


def ca_enroller(
    ctx: typer.Context, location: str, ca_pin_file: Path | None, cmp: ServerArgs | None = None, acme: AcmeArgs | None = None
) -> Any:
    """The enroller for the CA at ``location`` (a CA directory, a CMP or an ACME server), with
    this command's server arguments; a local CA asks for its PIN once, when it first signs."""
    from ..enroll import is_acme_location, open_enroller, takes_registration
    from ..enroll.local import LocalCA

    if acme is not None and is_acme_location(location):
        enroller = open_enroller(location, acme=acme.options(ctx, cmp.trust() if cmp else []))
    elif cmp is not None and takes_registration(location):
        enroller = open_enroller(location, ref=cmp.ref, auth_code=cmp.auth_code, trust=cmp.trust())
    else:
        # A CA directory: with a reference, the holder enrolls with a registration's code.
        ref = cmp.ref if cmp is not None else None
        enroller = open_enroller(location, module=state(ctx).module, ref=ref, auth_code=cmp.auth_code if ref and cmp else None)
    if isinstance(enroller, LocalCA) and enroller.needs_ca_pin:
        # Asked for only when the CA signs, and once per command however many CAs it opens.
        enroller.ca_pin_provider = lambda: _ca_pin_once(ca_pin_file)
    return enroller


def unlock_local_ca(enroller: Any) -> None:
    """Log in to a local CA's token now, before the holder's key is made: a wrong or missing CA
    PIN must be told before anything is generated, not leave a key behind (revocation, which
    needs no CA signature, does not call this)."""
    from ..enroll.local import LocalCA

    if isinstance(enroller, LocalCA) and enroller.needs_ca_pin:
        enroller.unlock()


_CA_PINS: dict[Path | None, Any] = {}


def _ca_pin_once(ca_pin_file: Path | None) -> Any:
    if ca_pin_file not in _CA_PINS:
        _CA_PINS[ca_pin_file] = ca_pin_source(ca_pin_file).get()
    return _CA_PINS[ca_pin_file]


def revoke_lost_command(ca: str, token_serial: str) -> str | None:
    """The command that revokes a lost token's certificates at ``ca`` (and ends its unfinished
    enrollments); None for a CMP or ACME CA, which revokes only with the certificate's key."""
    from ..enroll import is_acme_location, takes_registration

    if takes_registration(ca) or is_acme_location(ca):
        return None
    import shlex

    # Quoted for the shell it is pasted into: a token identity URI is full of ';'.
    return f"tokenissue revoke --token-serial {shlex.quote(token_serial)} --ca {shlex.quote(ca)}"


def present_token_serials(ctx: typer.Context, *, unusable_module_is_none: bool = False) -> set[str]:
    """Identities (p11.token_identity) of the tokens present now.

    With ``unusable_module_is_none``, a module that cannot start (or be found) counts as no
    token present. That is what a lost token can look like: a tpm2-pkcs11 store deleted with
    its token makes C_Initialize itself fail, and 'revoke --token-serial' and 'journal list'
    are the commands that must still work then. ('journal abandon' keeps the error: it may
    only end an entry whose token is known to be absent.)
    """
    from .. import p11
    from ..errors import ConfigError, TokenError

    try:
        return {t.name for t in p11.load_module(state(ctx).module).tokens()}
    except (ConfigError, TokenError):
        if not unusable_module_is_none:
            raise
        return set()


class Enrollers:
    """One enroller for the batch's CA (a local CA: one for the whole batch, the CA PIN asked
    once); for CMP one per row, since each row has its own reference and code. ``opener``
    opens an enroller, given the row's CMP arguments or None."""

    def __init__(self, opener: Callable[[ServerArgs | None], Enroller], codes: dict[str, Secret], trust: Path | None) -> None:
        self.opener, self.codes, self.trust = opener, codes, trust
        self._shared: Enroller | None = None
        self._last: Enroller | None = None

    def get(self, row: BatchRow) -> Enroller:
        if not self.codes:
            if self._shared is None:
                # Asks for the CA PIN only when the CA first signs, once for the whole batch.
                self._shared = self.opener(None)
            return self._shared
        if self._last is not None:
            self._last.close()
        assert row.ref is not None
        self._last = self.opener(ServerArgs(ref=row.ref, auth_code=self.codes[row.ref], trust_file=self.trust))
        return self._last

    def __enter__(self) -> Enrollers:
        return self

    def __exit__(self, *exc: object) -> None:
        for e in (self._shared, self._last):
            if e is not None:
                e.close()
