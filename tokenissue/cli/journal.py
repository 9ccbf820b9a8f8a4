"""``tokenissue journal``: the enrollments not finished yet, and ending one whose token is gone."""

from __future__ import annotations

from typing import Annotated

import typer

from ._common import JsonOpt, PinEnvOpt, PinFileOpt, ProtectedAuthOpt, console, emit_json, user_pin_source
from ._enrolling import holder_state, present_token_serials, revoke_lost_command
from ._render import plain

app = typer.Typer(
    help="Enrollments and renewals not finished yet: list them, or end one whose token is gone for good.",
    no_args_is_help=True,
)


@app.command("list")
def list_open(ctx: typer.Context, json_out: JsonOpt = False) -> None:
    """Every unfinished enrollment or renewal in the holder's journal, oldest first, and whether
    its token is present (then 'enroll --resume' finishes it)."""
    from ..lifecycle import unfinished

    with holder_state(ctx) as db:
        entries = unfinished(db)
    # Listing must work when the module cannot start (a TPM store deleted with its token): then
    # no token is present, which is true, since 'enroll --resume' could not finish any of them.
    present = present_token_serials(ctx, unusable_module_is_none=True) if entries else set()
    if json_out:
        emit_json([{**u.as_json(), "token_present": u.token_serial in present} for u in entries])
        return
    if not entries:
        console().print("No unfinished enrollment.")
        return
    from rich.table import Column, Table

    # The token's identity: its serial, or a pkcs11: URI where serials repeat; folded, never cut,
    # because it is what 'revoke --token-serial' takes.
    token = Column("Token", overflow="fold")
    table = Table("Journal ID", "Step", token, "Present", "Subject", "Certificate", "Updated")
    for u in entries:
        cert = format(u.certificate.serial_number, "x") if u.certificate else ("maybe (CA asked)" if u.may_be_issued else "-")
        table.add_row(
            u.journal_id, u.step, plain(u.token_serial), "yes" if u.token_serial in present else "[red]no[/]",
            plain(u.subject), cert, u.updated_at.strftime("%Y-%m-%d %H:%M"),
        )  # fmt: skip
    console().print(table)


@app.command("abandon")
def abandon(
    ctx: typer.Context,
    journal_id: Annotated[str, typer.Argument(help="The entry to end, as 'tokenissue journal list' shows it.")],
    remove_key: Annotated[
        bool,
        typer.Option(
            "--remove-key",
            help="The token is here but the enrollment can never be finished (its CA's address is gone, the "
            "outcome unknown): remove the key it generated (with the holder PIN options) and end it.",
        ),
    ] = False,
    pin_file: PinFileOpt = None,
    pin_env: PinEnvOpt = None,
    protected_auth: ProtectedAuthOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """End an unfinished enrollment whose token is gone for good (lost, broken, re-initialised),
    so that 'enroll --resume' stops trying it. Refused while the token is present with the
    enrollment's key (a token re-initialised in place is present, but its key is gone).

    A certificate the CA already issued for it is kept in the holder's records (never written to
    a token) and must be revoked: its key went with the token. With the built-in CA,
    'tokenissue revoke --token-serial SERIAL --ca DIR' does both at once.

    With the token present, --remove-key gives up on an enrollment that cannot be finished:
    resume it against a corrected address first ('enroll --resume --ca LOCATION') if there is one.
    """
    from .. import p11
    from ..lifecycle import abandon as run_abandon
    from ..lifecycle import remove_uncertified_keys
    from ._common import state

    with holder_state(ctx) as db:
        here = present_token_serials(ctx)
        found = db.journal_get(journal_id)
        key_id = str(found.data.get("key_id") or "") if found is not None else ""

        def present(identity: str) -> bool:
            """The token is here and still holds the entry's key: then the enrollment can be
            finished. A token re-initialised in place (same serial) is here without it."""
            if identity not in here:
                return False
            if not key_id:
                return True
            with p11.open_token(p11.TokenSelector.from_identity(identity), module=state(ctx).module) as s:
                return s.has_key_id(bytes.fromhex(key_id))

        def remove(identity: str, label: str) -> None:
            pin = user_pin_source(pin_file, pin_env, protected_auth).get()
            with p11.open_token(p11.TokenSelector.from_identity(identity), pin, module=state(ctx).module) as s:
                remove_uncertified_keys(s, label)

        ended = run_abandon(db, journal_id, present=present, remove_key=remove if remove_key else None)
    if json_out:
        emit_json(ended.as_json())
        return
    console().print(f"Ended enrollment {ended.journal_id} of {ended.subject} on token {ended.token_serial}.", markup=False)
    if ended.certificate is not None:
        what = f"The CA issued certificate {ended.certificate.serial_number:x} for it, whose key is lost"
    elif ended.may_be_issued:
        what = f"The CA was asked, and may have issued a certificate (request ID {ended.journal_id}) that never arrived"
        if remove_key:
            console().print(
                f"{what}; its key is removed from the token, so no one can use such a certificate. Ask the operator "
                f"of {ended.ca} to revoke it (reason cessation-of-operation) if it exists.",
                markup=False,
            )
            return
    else:
        return
    command = revoke_lost_command(ended.ca, ended.token_serial)
    how = f"revoke it with: {command}" if command else (
        f"ask the operator of {ended.ca} to revoke it (revoking needs the key, which went with the token)."
    )  # fmt: skip
    console().print(f"{what}: {how}", markup=False)
