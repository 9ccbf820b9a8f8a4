"""``tokenissue tokens`` and ``tokenissue token ...``: find, inspect and initialise tokens."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import UsageError
from ._common import (
    JsonOpt,
    PinEnvOpt,
    PinFileOpt,
    PinSource,
    ProtectedAuthOpt,
    TokenOpt,
    console,
    emit_json,
    err_console,
    state,
)
from ._render import plain, token_dict

app = typer.Typer(help="Inspect, initialise and manage the PINs of one token.", no_args_is_help=True)
pin_app = typer.Typer(help="Change or unblock the user PIN.", no_args_is_help=True)
app.add_typer(pin_app, name="pin")

# The mechanisms tokenissue may use, in the order `token info` shows them.
_RELEVANT = (
    "RSA_PKCS_KEY_PAIR_GEN",
    "EC_KEY_PAIR_GEN",
    "EC_EDWARDS_KEY_PAIR_GEN",
    "RSA_PKCS",
    "SHA256_RSA_PKCS",
    "SHA384_RSA_PKCS",
    "RSA_PKCS_PSS",
    "SHA256_RSA_PKCS_PSS",
    "ECDSA",
    "ECDSA_SHA256",
    "ECDSA_SHA384",
    "EDDSA",
)


def list_tokens(
    ctx: typer.Context,
    json_out: JsonOpt = False,
    all_slots: Annotated[
        bool, typer.Option("--all", help="Also show uninitialised tokens (SoftHSM's free slot).")
    ] = False,
) -> None:
    from .. import p11

    tokens = p11.load_module(state(ctx).module).tokens(include_uninitialized=all_slots)
    if json_out:
        emit_json([token_dict(t) for t in tokens])
        return
    if not tokens:
        err_console().print("No initialised token found. Create one with 'tokenissue token init --label NAME'.")
        return
    from rich.table import Table

    table = Table("Label", "Serial", "Manufacturer", "Model", "PIN", "Initialized")
    for t in tokens:
        pin = {"ok": "[green]ok[/]", "locked": "[red]LOCKED[/]", "final-try": "[red]final try[/]"}.get(
            t.pin_state, f"[yellow]{t.pin_state}[/]"
        )
        table.add_row(plain(t.label), plain(t.serial), plain(t.manufacturer), plain(t.model), pin, "yes" if t.initialized else "no")
    console().print(table)


@app.command("info")
def info(ctx: typer.Context, token: TokenOpt, json_out: JsonOpt = False) -> None:
    """Show one token: identity, PIN state, and the mechanisms tokenissue can use on it."""
    from .. import p11

    sel = p11.TokenSelector.parse(token)
    with p11.open_token(sel, module=state(ctx).module) as s:
        names = set(s.mechanism_names())
        data = token_dict(s.info)
    mechs = [m for m in _RELEVANT if m in names]
    key_types = [
        kt
        for kt, need in (
            ("rsa-2048/3072/4096", "RSA_PKCS_KEY_PAIR_GEN"),
            ("ec-p256/p384", "EC_KEY_PAIR_GEN"),
            ("ed25519", "EC_EDWARDS_KEY_PAIR_GEN"),
        )
        if need in names
    ]
    data.update({"module": data.get("module") or state(ctx).module, "mechanisms": mechs, "key_types": key_types})
    if json_out:
        emit_json(data)
        return
    from rich.markup import escape

    c = console()
    for k in ("label", "serial", "manufacturer", "model", "pin_state", "login_required", "protected_auth_path", "uri"):
        c.print(f"[bold]{k.replace('_', ' ').capitalize():<20}[/] {escape(str(data[k]))}")
    c.print(f"[bold]{'Key types':<20}[/] {', '.join(key_types) or 'none'}")
    c.print(f"[bold]{'Mechanisms':<20}[/] {', '.join(mechs) or 'none'}")


@app.command("init")
def init(
    ctx: typer.Context,
    label: Annotated[str, typer.Option("--label", "-l", help="Label of the new token (at most 32 bytes).")],
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            "-t",
            help="Re-initialise this existing token instead (ERASES every key and certificate on it). "
            "Without it, a free slot is used (SoftHSM).",
        ),
    ] = None,
    so_pin_file: Annotated[
        Path | None,
        typer.Option(
            "--so-pin-file", help="Read the SO PIN from this file (chmod 600). Default: $TOKENISSUE_SO_PIN or a prompt."
        ),
    ] = None,
    pin_file: Annotated[
        Path | None,
        typer.Option(
            "--pin-file", help="Read the new user PIN from this file (chmod 600). Default: $TOKENISSUE_PIN or a prompt."
        ),
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before erasing an existing token.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Create a token (SoftHSM free slot) or re-initialise one, and set its SO and user PINs."""
    from .. import p11

    if len(label.encode("utf-8")) > 32:
        raise UsageError("A token label is at most 32 bytes.")
    mod_path = state(ctx).module
    serial = None
    if token is not None:
        info = p11.load_module(mod_path).token_info(p11.TokenSelector.parse(token))
        serial = info.serial
        if not yes:
            typer.confirm(
                f"Re-initialise token '{info.label}' (serial {info.serial})? Every key and certificate on it is erased",
                abort=True,
            )
    else:
        existing = [t for t in p11.load_module(mod_path).tokens() if t.label == label]
        if existing:
            raise UsageError(
                f"A token labelled '{label}' exists already (serial {existing[0].serial}); "
                "pick another label or re-initialise it with --token."
            )
    so_pin = PinSource("TOKENISSUE_SO_PIN", "SO PIN", pin_file=so_pin_file).get_value(confirm=True)
    user_pin = PinSource("TOKENISSUE_PIN", "new user PIN", pin_file=pin_file).get_value(confirm=True)
    new_serial = p11.init_token(label, so_pin, user_pin, module=mod_path, serial=serial)
    if json_out:
        emit_json({"label": label, "serial": new_serial})
    else:
        console().print(f"Token '{label}' initialised, serial {new_serial}.", markup=False)


@pin_app.command("change")
def pin_change(
    ctx: typer.Context,
    token: TokenOpt,
    pin_file: PinFileOpt = None,
    pin_env: PinEnvOpt = None,
    new_pin_file: Annotated[
        Path | None,
        typer.Option(
            "--new-pin-file",
            help="Read the new PIN from this file (chmod 600). Default: $TOKENISSUE_NEW_PIN or a prompt.",
        ),
    ] = None,
) -> None:
    """Change the user PIN (needs the current one)."""
    from .. import p11

    old = PinSource("TOKENISSUE_PIN", "current PIN", pin_file=pin_file, pin_env=pin_env).get_value()
    new = PinSource("TOKENISSUE_NEW_PIN", "new PIN", pin_file=new_pin_file).get_value(confirm=True)
    with p11.open_token(p11.TokenSelector.parse(token), old, module=state(ctx).module) as s:
        s.change_pin(old, new)
    console().print("PIN changed.")


@pin_app.command("unblock")
def pin_unblock(
    ctx: typer.Context,
    token: TokenOpt,
    so_pin_file: Annotated[
        Path | None,
        typer.Option(
            "--so-pin-file", help="Read the SO PIN from this file (chmod 600). Default: $TOKENISSUE_SO_PIN or a prompt."
        ),
    ] = None,
    new_pin_file: Annotated[
        Path | None,
        typer.Option(
            "--new-pin-file",
            help="Read the new user PIN from this file (chmod 600). Default: $TOKENISSUE_NEW_PIN or a prompt.",
        ),
    ] = None,
    protected_auth: ProtectedAuthOpt = False,
) -> None:
    """Set a new user PIN with the SO PIN (unblocks a locked PIN)."""
    from .. import p11

    so = PinSource("TOKENISSUE_SO_PIN", "SO PIN", pin_file=so_pin_file, protected_auth=protected_auth).get()
    new = PinSource("TOKENISSUE_NEW_PIN", "new user PIN", pin_file=new_pin_file).get_value(confirm=True)
    with p11.open_token(p11.TokenSelector.parse(token), so, module=state(ctx).module, so=True) as s:
        s.init_user_pin(new)
    console().print("User PIN set; the token is unblocked.")
