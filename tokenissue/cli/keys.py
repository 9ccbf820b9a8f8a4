"""``tokenissue keys ...`` and ``tokenissue csr``: key pairs that are born on the token."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated

import typer

from ..errors import UsageError
from ..models import KeyType
from ._common import (
    JsonOpt,
    KeyOpt,
    PinEnvOpt,
    PinFileOpt,
    ProtectedAuthOpt,
    RequireSignOnlyOpt,
    TokenOpt,
    confirm_or_refuse,
    console,
    emit_json,
    err_console,
    holder_token,
    state,
    user_pin_source,
)
from ._render import forced_note, key_dict, plain, yesno

app = typer.Typer(help="Generate, list and delete key pairs on a token.", no_args_is_help=True)

KeyTypeChoice = enum.Enum("KeyTypeChoice", {k.name: k.value for k in KeyType}, type=str)  # type: ignore[misc]


class Format(str, enum.Enum):
    PEM = "pem"
    DER = "der"



@app.command("generate")
def generate(
    ctx: typer.Context,
    token: TokenOpt,
    label: Annotated[
        str, typer.Option("--label", "-l", help="CKA_LABEL of the new key pair; must be unused on the token.")
    ],
    key_type: Annotated[
        KeyTypeChoice, typer.Option("--type", help="Key type. EC P-256 is fast and widely accepted.")
    ] = KeyTypeChoice("ec-p256"),  # noqa: B008
    key_id: Annotated[
        str | None,
        typer.Option(
            "--id",
            help="CKA_ID as hex. Default: SHA-1 of the public key (= the certificate's Subject Key Identifier).",
        ),
    ] = None,
    require_sign_only: RequireSignOnlyOpt = False,
    pin_file: PinFileOpt = None,
    pin_env: PinEnvOpt = None,
    protected_auth: ProtectedAuthOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Generate a key pair inside the token: private, sensitive, never extractable, sign/verify only."""
    from .. import p11

    kid = None
    if key_id is not None:
        try:
            kid = bytes.fromhex(key_id.replace(":", ""))
        except ValueError:
            raise UsageError(f"--id '{key_id}' is not hex.") from None
        if not kid:
            raise UsageError("--id must not be empty.")
    sel = p11.TokenSelector.parse(token)
    pin = user_pin_source(pin_file, pin_env, protected_auth).get()
    with p11.open_token(sel, pin, module=state(ctx).module) as s:
        info = s.generate_key(KeyType(key_type.value), label, kid, require_sign_only=require_sign_only)
        data = key_dict(info, s.info.label)
        data["template"] = info.template
    if json_out:
        emit_json(data)
    else:
        console().print(f"Generated {data['type']} key '{info.label}' id {data['id']} on token '{sel}'.", markup=False)
        if info.can_decrypt:
            err_console().print(forced_note(info), markup=False)


@app.command("list")
def list_keys(
    ctx: typer.Context,
    token: TokenOpt,
    pin_file: PinFileOpt = None,
    pin_env: PinEnvOpt = None,
    protected_auth: ProtectedAuthOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """List private keys with the attributes that prove where they came from."""

    with holder_token(ctx, token, pin_file, pin_env, protected_auth) as s:
        rows = [key_dict(k, s.info.label) for k in s.list_keys()]
    if json_out:
        emit_json(rows)
        return
    if not rows:
        err_console().print("No keys on this token. Make one with 'tokenissue keys generate'.")
        return
    from rich.table import Table

    table = Table("ID", "Label", "Type", "Local", "Never extr.", "Always sens.", "Sign only", "Certificate")
    for r in rows:
        table.add_row(
            r["id"],
            plain(r["label"]),
            r["type"],
            yesno(r["local"]),
            yesno(r["never_extractable"]),
            yesno(r["always_sensitive"]),
            ("yes (CKA_DECRYPT unusable)" if r["decrypt_flag"] else "yes") if r["sign_only"] else "[yellow]no: decrypts too[/]",
            "yes" if r["has_certificate"] else "-",
        )
    console().print(table)


@app.command("delete")
def delete(
    ctx: typer.Context,
    token: TokenOpt,
    key: KeyOpt,
    keep_certificate: Annotated[
        bool, typer.Option("--keep-certificate", help="Keep certificates stored under the key's ID.")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    pin_file: PinFileOpt = None,
    pin_env: PinEnvOpt = None,
    protected_auth: ProtectedAuthOpt = False,
) -> None:
    """Delete a key pair (and, unless kept, its certificates). This cannot be undone."""
    from .. import p11

    with holder_token(ctx, token, pin_file, pin_env, protected_auth) as s:
        sel = p11.KeySelector.parse(key)
        info = s.key(sel)
        if not yes:
            confirm_or_refuse(f"Delete key '{info.label}' (id {info.id.hex()}) for good?")
        s.delete_key(sel, with_certificates=not keep_certificate)
    console().print(f"Deleted key '{info.label}' (id {info.id.hex()}).", markup=False)


def csr(
    ctx: typer.Context,
    token: TokenOpt,
    key: KeyOpt,
    subject: Annotated[
        str, typer.Option("--subject", "-s", help="RFC 4514 subject, UTF-8: 'CN=홍길동,O=Example,C=KR'.")
    ],
    san: Annotated[
        list[str] | None,
        typer.Option("--san", help="Subject alternative name: dns:NAME, email:ADDR, uri:URI or ip:ADDR (repeatable)."),
    ] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write here instead of stdout.")] = None,
    fmt: Annotated[Format, typer.Option("--format", help="Output encoding.")] = Format.PEM,
    pin_file: PinFileOpt = None,
    pin_env: PinEnvOpt = None,
    protected_auth: ProtectedAuthOpt = False,
) -> None:
    """Make a CSR for a token key; the signature is made inside the token."""
    from cryptography.hazmat.primitives import serialization

    from .. import p11
    from ..pkix.csr import build_csr
    from ..pkix.names import parse_san, parse_subject

    name = parse_subject(subject)
    sans = parse_san(san or [])
    if fmt is Format.DER and output is None:
        raise UsageError("DER is binary; give --output FILE with --format der.")
    with holder_token(ctx, token, pin_file, pin_env, protected_auth) as s:
        req = build_csr(s.private_key(p11.KeySelector.parse(key)), name, sans)
    enc = serialization.Encoding.PEM if fmt is Format.PEM else serialization.Encoding.DER
    data = req.public_bytes(enc)
    if output is None:
        typer.echo(data.decode("ascii"), nl=False)
    else:
        output.write_bytes(data)
        err_console().print(f"CSR written to {output}.", markup=False)
