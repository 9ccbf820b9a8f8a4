"""``tokenissue ra ...``: register holders whose identity was checked out of band.

``ra register`` prints a reference number and an authorization code once; the holder
enrolls with them over CMP. Codes are never stored, listed or logged.
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated, Any

import typer

from ..models import RegistrationStatus
from ._common import (
    CaDirOpt,
    IdNumberFileOpt,
    IdNumberSource,
    JsonOpt,
    console,
    emit_json,
    err_console,
    parse_duration,
    state,
)

app = typer.Typer(
    help="Registration authority: reference numbers and one-time authorization codes for CMP enrollment.",
    no_args_is_help=True,
)

StatusChoice = enum.Enum("StatusChoice", {s.name: s.value for s in RegistrationStatus}, type=str)  # type: ignore[misc]


def _open(ctx: typer.Context, ca_dir: Path) -> Any:
    from ..ca.authority import CertificateAuthority

    return CertificateAuthority.open(ca_dir, module=state(ctx).module)


def _row(reg: Any, now: Any) -> dict[str, Any]:
    status = reg.status.value
    if status == "open" and reg.is_expired(now):
        status = "expired"
    return {
        "ref": reg.ref,
        "subject": reg.subject,
        "profile": reg.profile,
        "san": list(reg.san),
        "status": status,
        "failures": reg.failures,
        "created_at": reg.created_at,
        "expires_at": reg.expires_at,
        "used_at": reg.used_at,
        "serial": format(reg.serial, "x") if reg.serial is not None else None,
        # An open registration an unfinished CMP enrollment holds (only that one can use it).
        "reserved": reg.status.value == "open" and reg.reserved_tid is not None,
    }


@app.command("register")
def register(
    ctx: typer.Context,
    ca_dir: CaDirOpt,
    subject: Annotated[str, typer.Option("--subject", "-s", help="The holder's checked identity, e.g. 'CN=Hong Gildong,serialNumber=123,C=KR'.")],
    profile: Annotated[str, typer.Option("--profile", "-p", help="Certificate type the holder will get.")],
    valid: Annotated[str, typer.Option("--valid", help="How long the holder has to enroll: 7d, 12h, 30m, ...")] = "7d",
    san: Annotated[
        list[str] | None,
        typer.Option("--san", help="A SAN the certificate may carry (dns:, email:, uri:, ip:); repeat for more."),
    ] = None,
    id_number_file: IdNumberFileOpt = None,
    real_name: Annotated[
        str | None,
        typer.Option(
            "--real-name",
            help="For profiles that bind an identity (kr-personal, kr-business): the holder's name as the "
            "certificate's identifyData carries it (default: the subject's CN up to '()').",
        ),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Register a holder: prints a reference number and an authorization code, once.

    For a profile that binds the holder's identity (a Korean VID) the holder's registration
    number is read too (--id-number-file, $TOKENISSUE_ID_NUMBER or a prompt): only a keyed hash
    of it is kept, to check the number the holder gives again at enrollment.
    """
    from ..ca.registration import RegistrationAuthority

    validity = parse_duration(valid)
    with _open(ctx, ca_dir) as ca:
        binds = ca.profile(profile).identify_data
        numbers = IdNumberSource(id_number_file)
        number = numbers.get() if binds or numbers.given() else None
        reg, code = RegistrationAuthority(ca).register(
            subject, profile, valid=validity, san=san or [], id_number=number, real_name=real_name
        )
    if json_out:
        emit_json(
            {
                "ref": reg.ref,
                "code": code.reveal(),
                "subject": reg.subject,
                "profile": reg.profile,
                "expires_at": reg.expires_at,
            }
        )
        return
    from rich.markup import escape
    from rich.panel import Panel

    body = (
        f"Reference number:    [bold]{reg.ref}[/]\n"
        f"Authorization code:  [bold]{code.reveal()}[/]\n\n"
        f"Subject:  {escape(reg.subject)}\n"
        f"Profile:  {escape(reg.profile)}\n"
        f"Enroll before {reg.expires_at:%Y-%m-%d %H:%M} UTC.\n\n"
        "Hand the reference and the code to the holder by [bold]separate channels[/] "
        "(e.g. the reference on paper, the code by SMS or sealed letter).\n"
        "The code is shown only this once and is good for one certificate. If it is lost, "
        f"run 'tokenissue ra cancel {reg.ref}' and register again."
    )
    console().print(Panel(body, title="New registration", expand=False), soft_wrap=False)


@app.command("list")
def list_registrations(
    ctx: typer.Context,
    ca_dir: CaDirOpt,
    status: Annotated[StatusChoice | None, typer.Option("--status", help="Only registrations in this state.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """List registrations and their state (codes are never shown)."""
    from datetime import UTC, datetime

    from ..ca.registration import RegistrationAuthority

    wanted = RegistrationStatus(status.value) if status is not None else None
    with _open(ctx, ca_dir) as ca:
        regs = RegistrationAuthority(ca).list(wanted)
    now = datetime.now(UTC)
    rows = [_row(r, now) for r in regs]
    if json_out:
        emit_json(rows)
        return
    if not rows:
        err_console().print("No registrations.")
        return
    from rich.markup import escape
    from rich.table import Table

    table = Table("Reference", "Subject", "Profile", "Status", "Expires", "Serial")
    colours = {"open": "green", "used": "blue", "expired": "yellow", "cancelled": "dim", "locked": "red"}
    for r in rows:
        shown = f"[{colours[r['status']]}]{r['status']}[/]"
        table.add_row(escape(r["ref"]), escape(r["subject"]), escape(r["profile"]), shown, f"{r['expires_at']:%Y-%m-%d %H:%M}", r["serial"] or "-")
    console().print(table)


@app.command("cancel")
def cancel(
    ctx: typer.Context,
    ca_dir: CaDirOpt,
    ref: Annotated[str, typer.Argument(help="The registration's reference number.")],
) -> None:
    """Cancel a registration: its code can no longer be used."""
    from ..ca.registration import RegistrationAuthority

    with _open(ctx, ca_dir) as ca:
        RegistrationAuthority(ca).cancel(ref.strip())
    console().print(f"Registration {ref.strip()} is cancelled; its code can no longer be used.", markup=False)
