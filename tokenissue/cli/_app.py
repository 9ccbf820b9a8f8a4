"""The root typer app: global options and the command tree (one module per noun)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from .. import __version__
from . import batch, ca, cert, certmonger, journal, keys, lifecycle, ra, token, vid
from ._common import AppState, default_state_dir

app = typer.Typer(
    name="tokenissue",
    help="Certificates for keys that never leave a PKCS#11 token: generate the key on the token, "
    "have a CSR signed inside it, get it certified, store the certificate next to the key, "
    "and keep it alive (status, renew, revoke).\n\n"
    "PINs come from $TOKENISSUE_PIN, --pin-file, --pin-env or a hidden prompt, never from argv.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    rich_markup_mode="rich",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"tokenissue {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    module: Annotated[
        str | None,
        typer.Option(
            "--module",
            "-m",
            envvar="TOKENISSUE_MODULE",
            show_envvar=True,
            help="PKCS#11 module (.so) to load. Default: SoftHSM2 if installed, else p11-kit-proxy.",
        ),
    ] = None,
    state_dir: Annotated[
        Path | None,
        typer.Option(
            "--state-dir",
            envvar="TOKENISSUE_STATE_DIR",
            show_envvar=True,
            help="Where the holder's enrollment journal and records live. Default: $XDG_STATE_HOME/tokenissue.",
        ),
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks (never local variables) on errors.")] = False,
    version: Annotated[
        bool,
        typer.Option("--version", "-V", callback=_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    ctx.obj = AppState(
        module=module,
        debug=debug or os.environ.get("TOKENISSUE_DEBUG") == "1",
        state_dir=state_dir or default_state_dir(),
    )


app.command("tokens", help="List the tokens present: label, serial, maker, PIN state.")(token.list_tokens)
app.add_typer(token.app, name="token")
app.add_typer(keys.app, name="keys")
app.command("csr", help="Make a CSR signed inside the token by one of its keys.")(keys.csr)
app.add_typer(cert.app, name="cert")
app.command("enroll", help="One command: key on the token, CSR signed in it, certificate from the CA, written back.")(lifecycle.enroll)
app.command("status", help="Certificates on a token: days left, valid / expiring / expired / revoked.")(lifecycle.status)
app.command("renew", help="Renew certificates that are due (same key, or --rekey).")(lifecycle.renew)
app.command("revoke", help="Revoke a token's certificate, or all certificates of a lost token.")(lifecycle.revoke)
app.add_typer(ca.app, name="ca")
app.add_typer(ra.app, name="ra")
app.command("certmonger-submit", help="certmonger's CA helper for a CA directory (getcert add-ca -e '...').")(
    certmonger.certmonger_submit
)
app.add_typer(batch.app, name="batch")
app.add_typer(journal.app, name="journal")
app.add_typer(vid.app, name="vid")
