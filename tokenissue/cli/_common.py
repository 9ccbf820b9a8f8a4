"""What every command shares: the typed context, options, PIN sources and output."""

from __future__ import annotations

import json
import os
import stat
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..credentials import PROTECTED_AUTH, IdNumber, Pin, ProtectedAuth
from ..errors import PinError, UsageError
from ..models import RevocationReason

if TYPE_CHECKING:
    from rich.console import Console

    from ..p11 import TokenSession

__all__ = [
    "AppState",
    "JsonOpt",
    "PinSource",
    "TokenOpt",
    "console",
    "emit_json",
    "err_console",
    "resolve_serial",
    "state",
]


@dataclass(frozen=True)
class AppState:
    """Global options, parsed once by the root callback (replaces an untyped ctx.obj dict)."""

    module: str | None  #: PKCS#11 module path from --module / TOKENISSUE_MODULE, else auto
    debug: bool  #: show tracebacks (without locals)
    state_dir: Path  #: where the holder's journal and records live


def state(ctx: typer.Context) -> AppState:
    root = ctx.find_root()
    obj = root.obj
    if not isinstance(obj, AppState):  # a sub-app invoked directly in tests
        obj = AppState(module=os.environ.get("TOKENISSUE_MODULE"), debug=False, state_dir=default_state_dir())
    return obj


def default_state_dir() -> Path:
    env = os.environ.get("TOKENISSUE_STATE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "tokenissue"


_console: Console | None = None
_err_console: Console | None = None


def console() -> Console:
    global _console
    if _console is None:
        from rich.console import Console

        _console = Console(highlight=False, soft_wrap=True)
    return _console


def err_console() -> Console:
    global _err_console
    if _err_console is None:
        from rich.console import Console

        _err_console = Console(stderr=True, highlight=False, soft_wrap=True)
    return _err_console


def _json_default(o: Any) -> Any:
    if isinstance(o, datetime):
        return o.isoformat()
    if isinstance(o, bytes):
        return o.hex()
    if hasattr(o, "value"):
        return o.value
    raise TypeError(type(o).__name__)


def emit_json(data: Any) -> None:
    """Print machine-readable output on stdout (UTF-8, not ASCII-escaped: Korean stays readable)."""
    sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2, default=_json_default) + "\n")
    sys.stdout.flush()


# -- options ------------------------------------------------------------------------------
TokenOpt = Annotated[
    str,
    typer.Option(
        "--token",
        "-t",
        help="The token: its label, serial:XXXX, or a pkcs11: URI (token=...;serial=...). "
        "Never a slot number: slots move.",
        envvar="TOKENISSUE_TOKEN",
        show_envvar=True,
    ),
]
TokenOptional = Annotated[
    str | None,
    typer.Option("--token", "-t", help="The token: label, serial:XXXX or pkcs11: URI.", envvar="TOKENISSUE_TOKEN"),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]
KeyOpt = Annotated[
    str,
    typer.Option("--key", "-k", help="The key: its label, id:HEX, or a pkcs11: URI (object=...;id=%..)."),
]


@dataclass(frozen=True)
class PinSource:
    """Where a PIN comes from. There is deliberately no way to pass the value in argv."""

    env_default: str  #: the default environment variable, e.g. TOKENISSUE_PIN
    what: str  #: "PIN", "SO PIN", ... for prompts and messages
    pin_file: Path | None = None  #: --pin-file; "-" reads one line from stdin
    pin_env: str | None = None  #: --pin-env NAME
    protected_auth: bool = False  #: use the token's PIN pad

    def get(self, *, confirm: bool = False) -> Pin | ProtectedAuth:
        if self.protected_auth:
            return PROTECTED_AUTH
        if self.pin_file is not None:
            where = "standard input" if str(self.pin_file) == "-" else f"file '{self.pin_file}'"
            return _utf8(read_secret_file(self.pin_file, self.what), self.what, where)
        if self.pin_env:
            from .. import hooks

            hooks.withhold(self.pin_env)  # a secret now: never handed to a hook
            value = os.environ.get(self.pin_env)
            if value is None:
                raise PinError(f"Environment variable {self.pin_env} (--pin-env) is not set.")
            return _utf8(value, self.what, f"variable {self.pin_env}")
        value = os.environ.get(self.env_default)
        if value is not None:
            return _utf8(value, self.what, f"variable {self.env_default}")
        return Pin(prompt_secret(self.what, confirm=confirm, hint=f"{self.env_default} or use {self.file_option}"))

    @property
    def file_option(self) -> str:
        """The option that names a file for this secret, for messages."""
        return _FILE_OPTIONS.get(self.env_default, "--pin-file")

    def get_value(self, *, confirm: bool = False) -> Pin:
        got = self.get(confirm=confirm)
        if isinstance(got, ProtectedAuth):
            raise UsageError(f"The {self.what} must be typed here; a PIN pad cannot set it.")
        return got


def _utf8(value: str, what: str, where: str) -> Pin:
    """A PIN that is UTF-8 text (PKCS#11 PINs are). Python hands undecodable bytes from stdin and
    the environment on as surrogates; they are refused here, without being shown."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise PinError(f"The {what} in {where} is not UTF-8 text; PINs are UTF-8 (PKCS#11), so give it as UTF-8.") from None
    return Pin(value)


def read_secret_file(path: Path, what: str) -> str:
    """One secret from a file (or stdin for '-'): first line, trailing newline removed.

    Files readable by group or others are refused, like ssh does with private keys.
    """
    if str(path) == "-":
        try:
            line = sys.stdin.readline()
        except UnicodeDecodeError:
            raise PinError(f"The {what} on standard input is not UTF-8 text; PINs are UTF-8 (PKCS#11).") from None
        if not line:
            raise PinError(f"No {what} on standard input.")
        return line.rstrip("\r\n")
    try:
        st = path.stat()
    except OSError:
        raise PinError(f"Cannot read the {what} file '{path}'.") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise PinError(f"The {what} file '{path}' is readable by others; chmod 600 it first.")
    try:
        data = path.read_text(encoding="utf-8")
    except OSError:
        raise PinError(f"Cannot read the {what} file '{path}'.") from None
    except UnicodeDecodeError:
        # Said without the bytes: they are (part of) the secret.
        raise PinError(f"The {what} file '{path}' is not UTF-8 text; PINs are UTF-8 (PKCS#11), so re-save it as UTF-8.") from None
    lines = data.splitlines()
    if not lines or not lines[0]:
        raise PinError(f"The {what} file '{path}' is empty.")
    return lines[0]


_FILE_OPTIONS = {
    "TOKENISSUE_PIN": "--pin-file",
    "TOKENISSUE_OCSP_PIN": "--ocsp-pin-file",
    "TOKENISSUE_SO_PIN": "--so-pin-file",
    "TOKENISSUE_NEW_PIN": "--new-pin-file",
    "TOKENISSUE_CA_PIN": "--ca-pin-file",
    "TOKENISSUE_AUTH_CODE": "--auth-code-file",
    "TOKENISSUE_ID_NUMBER": "--id-number-file",
}

ID_NUMBER_ENV = "TOKENISSUE_ID_NUMBER"


@dataclass
class IdNumberSource:
    """Where the holder's registration number comes from: --id-number-file (0600),
    $TOKENISSUE_ID_NUMBER or a hidden prompt, as PINs do; never argv. Checked for form at once
    (13 or 10 digits), and the message never repeats it."""

    file: Path | None = None

    def given(self) -> bool:
        """Whether a file or the environment gives one (then no prompt is needed)."""
        return self.file is not None or os.environ.get(ID_NUMBER_ENV) is not None

    def get(self) -> IdNumber:
        from .. import hooks
        from ..pkix.kr_vid import normalize_idn

        hooks.withhold(ID_NUMBER_ENV)
        if self.file is not None:
            value = read_secret_file(self.file, "registration number")
        elif (env := os.environ.get(ID_NUMBER_ENV)) is not None:
            value = env
        else:
            value = prompt_secret("Registration number", hint=f"{ID_NUMBER_ENV} or use --id-number-file")
        return IdNumber(normalize_idn(value))


IdNumberFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--id-number-file",
        help="Read the holder's registration number (13-digit resident or 10-digit business number; '-' "
        "allowed between digits) from this file's first line (must be chmod 600); '-' reads stdin. Default: "
        "$TOKENISSUE_ID_NUMBER, else a hidden prompt. It is never stored: the CA keeps only a VID of it.",
    ),
]


def confirm_or_refuse(question: str) -> None:
    """Ask ``question`` (yes/no) on the terminal; without one, refuse (exit 2) naming --yes.

    A question that cannot be asked is a usage error, not an interruption (exit 130 is Ctrl-C).
    """
    if not sys.stdin.isatty():
        raise UsageError(f"{question.rstrip('?')}? That needs a yes, and there is no terminal to ask on: add --yes.")
    typer.confirm(question, abort=True)


def prompt_secret(what: str, *, confirm: bool = False, hint: str = "") -> str:
    if not sys.stdin.isatty():
        raise PinError(f"No {what} given and no terminal to ask on; set {hint}.")
    value: str = typer.prompt(f"{what}", hide_input=True, confirmation_prompt=confirm)
    return value


def user_pin_source(pin_file: Path | None, pin_env: str | None, protected_auth: bool) -> PinSource:
    """The token holder's PIN from the usual options (--pin-file, --pin-env, --protected-auth)."""
    return PinSource("TOKENISSUE_PIN", "PIN", pin_file=pin_file, pin_env=pin_env, protected_auth=protected_auth)


PinFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--pin-file",
        help="Read the user PIN from this file's first line (must be chmod 600); '-' reads stdin. "
        "Default: $TOKENISSUE_PIN, else a hidden prompt.",
    ),
]
PinEnvOpt = Annotated[
    str | None,
    typer.Option("--pin-env", metavar="NAME", help="Read the user PIN from environment variable NAME."),
]
ProtectedAuthOpt = Annotated[
    bool,
    typer.Option("--protected-auth", help="Enter the PIN on the token's own PIN pad."),
]
RequireSignOnlyOpt = Annotated[
    bool,
    typer.Option(
        "--require-sign-only",
        help="Refuse (and destroy) a new key that could decrypt as well as sign. tokenissue makes sign-only keys "
        "wherever the token allows (CKA_DECRYPT off, or, where the token forces it on, a signature-only "
        "CKA_ALLOWED_MECHANISMS); this makes the rare token that allows neither an error. See docs/tokens-and-keys.md.",
    ),
]


ReasonOpt = Annotated[
    str | None,
    typer.Option(
        "--reason",
        metavar="REASON",
        help="RFC 5280 revocation reason: unspecified, key-compromise, ca-compromise, affiliation-changed, "
        "superseded, cessation-of-operation, certificate-hold, privilege-withdrawn (RFC 5280's and openssl's "
        "spellings such as keyCompromise are accepted too). certificate-hold suspends rather than revokes: "
        "only the CA can restore it ('ca restore').",
    ),
]


def parse_reason(text: str | None, default: RevocationReason) -> RevocationReason:
    """A revocation reason as users write it: 'key-compromise', 'keyCompromise' (RFC 5280,
    openssl), 'key_compromise' or 'KEY-COMPROMISE'."""
    if text is None:
        return default
    import re

    canon = re.sub(r"(?<=[a-z])(?=[A-Z])", "-", text.strip()).lower().replace("_", "-")
    for r in RevocationReason:
        if canon == r.value:
            return r
    raise UsageError(
        f"'{text}' is not a revocation reason; use one of {', '.join(r.value for r in RevocationReason)}."
    )


DURATION_HELP = "a number and a unit: 30d (days), 12h (hours), 30m (minutes), 90s, 2w (weeks); a bare number is days"
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> timedelta:
    """'30d', '12h', '30m', '90s', '2w' or a plain number of days (at most 100 years)."""
    t = text.strip().lower()
    try:
        seconds = float(t[:-1]) * _DURATION_UNITS[t[-1]] if t and t[-1] in _DURATION_UNITS else float(t) * 86400
        if not 0 <= seconds <= 36500 * 86400:  # also refuses inf and nan
            raise ValueError(text)
        return timedelta(seconds=seconds)
    except ValueError:
        raise UsageError(f"'{text.strip()}' is not a duration like 30d, 12h, 30m or 2w.") from None


CaDirOpt = Annotated[
    Path,
    typer.Option(
        "--ca",
        help="The CA directory made by 'tokenissue ca init' (ca.toml, ca.pem, ca.db). "
        "Default: $TOKENISSUE_CA_DIR, else $TOKENISSUE_CA.",
        envvar=["TOKENISSUE_CA_DIR", "TOKENISSUE_CA"],
        show_envvar=False,
    ),
]
"""A local CA, for the commands that run one (``ca ...``, ``ra ...``). Holder commands take
:data:`tokenissue.cli.lifecycle.CaOpt`, which also accepts a CA server's URL."""

CaPinFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--ca-pin-file",
        help="Read the CA token's PIN from this file (chmod 600). Default: $TOKENISSUE_CA_PIN, else a prompt.",
    ),
]


@contextmanager
def holder_token(
    ctx: typer.Context, token: str, pin_file: Path | None, pin_env: str | None, protected_auth: bool
) -> Iterator[TokenSession]:
    """The token named by --token, logged in with the holder's PIN from the usual options."""
    from .. import p11

    pin = user_pin_source(pin_file, pin_env, protected_auth).get()
    with p11.open_token(p11.TokenSelector.parse(token), pin, module=state(ctx).module) as s:
        yield s


def ca_pin_source(ca_pin_file: Path | None) -> PinSource:
    return PinSource("TOKENISSUE_CA_PIN", "CA PIN", pin_file=ca_pin_file)


CaTrustOpt = Annotated[
    Path | None,
    typer.Option(
        "--ca-trust",
        help="CMP and EST: PEM file of certificates to trust: the root of the issued chain, the signer "
        "of a CMP server's signed answers, and for cmp+https and est+https the server's TLS certificate "
        "or its root (default: the system's trust store).",
        envvar="TOKENISSUE_CA_TRUST",
    ),
]


def resolve_serial(text: str, ca: Any) -> int:
    """A certificate serial as users paste it: hex as 'ca list' prints it, openssl's upper case
    with a leading zero or colons (0A:1B:...), 0x..., or a prefix naming one certificate."""
    norm = text.strip().lower().removeprefix("0x").replace(":", "").replace(" ", "")
    try:
        number = int(norm, 16)
    except ValueError:
        raise UsageError(f"'{text}' is not a hex serial number.") from None
    if ca.inventory.get_certificate(number) is not None:
        return number
    prefix = norm.lstrip("0") or "0"
    found = [r.serial for r in ca.list() if format(r.serial, "x").startswith(prefix)] if len(prefix) >= 4 else []
    if len(found) == 1:
        return int(found[0])
    if len(found) > 1:
        raise UsageError(f"{len(found)} certificates have serials starting with {prefix}; give more of it.")
    return number  # unknown: the CA says so in one sentence
