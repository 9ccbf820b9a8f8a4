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
    resolve_serial,
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
        "verified_by": reg.verified_by,
        "terms_version": reg.terms_version,
        "reissue_of": format(reg.reissue_of, "x") if reg.reissue_of is not None else None,
        # An open registration an unfinished CMP enrollment holds (only that one can use it).
        "reserved": reg.status.value == "open" and reg.reserved_tid is not None,
    }


@app.command("register")
def register(
    ctx: typer.Context,
    ca_dir: CaDirOpt,
    subject: Annotated[
        str | None,
        typer.Option(
            "--subject",
            "-s",
            help="The holder's checked identity, e.g. 'CN=Hong Gildong,serialNumber=123,C=KR' "
            "(with --reissue-of: default the old certificate's).",
        ),
    ] = None,
    profile: Annotated[
        str | None,
        typer.Option(
            "--profile", "-p", help="Certificate type the holder will get (with --reissue-of: default the old certificate's)."
        ),
    ] = None,
    valid: Annotated[str, typer.Option("--valid", help="How long the holder has to enroll: 7d, 12h, 30m, ...")] = "7d",
    san: Annotated[
        list[str] | None,
        typer.Option(
            "--san",
            help="A SAN the certificate may carry (dns:, email:, uri:, ip:); repeat for more "
            "(with --reissue-of: default the old certificate's).",
        ),
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
    verified_by: Annotated[
        str | None,
        typer.Option(
            "--verified-by",
            help="How the holder's identity was verified, e.g. 'branch visit with ID card' or 'phone'; kept with "
            "the registration and in the audit log. Required by profiles with require_verified_by "
            "(kr-personal, kr-business).",
        ),
    ] = None,
    terms_version: Annotated[
        str | None,
        typer.Option(
            "--terms-version",
            help="The version of the subscriber terms the holder accepted, e.g. '2026-03'; kept with the "
            "registration and in the audit log.",
        ),
    ] = None,
    reissue_of: Annotated[
        str | None,
        typer.Option(
            "--reissue-of",
            help="Register a re-issue of this valid certificate (its serial in hex, as 'ca list' or openssl "
            "print it, or a unique prefix). When the holder enrolls, the old certificate is revoked as "
            "superseded in the same transaction that records the new one, and a profile with "
            "keep_term_on_reissue (kr-personal, kr-business) keeps the old notAfter.",
        ),
    ] = None,
    deliver_code: Annotated[
        str | None,
        typer.Option(
            "--deliver-code",
            help="Hand the authorization code to this command on its standard input (an SMS or e-mail gateway; "
            "split like a shell would, run without one, with the hook environment plus TOKENISSUE_REF, "
            "TOKENISSUE_SUBJECT, TOKENISSUE_PROFILE and TOKENISSUE_EXPIRES_AT). Only the reference is shown "
            "then. If the command fails the registration is cancelled (exit 10).",
        ),
    ] = None,
    deliver_timeout: Annotated[
        str, typer.Option("--deliver-timeout", help="How long the --deliver-code command may take: 60s, 2m, ...")
    ] = "60s",
    json_out: JsonOpt = False,
) -> None:
    """Register a holder: prints a reference number and an authorization code, once.

    For a profile that binds the holder's identity (a Korean VID) the holder's registration
    number is read too (--id-number-file, $TOKENISSUE_ID_NUMBER or a prompt): only a keyed hash
    of it is kept, to check the number the holder gives again at enrollment.

    With --deliver-code the code goes to that command's standard input and nowhere else: the
    screen (and --json) shows the reference only.
    """
    from .. import hooks
    from ..ca.registration import RegistrationAuthority

    validity = parse_duration(valid)
    command = hooks.split(deliver_code, "delivery") if deliver_code is not None else None
    timeout = parse_duration(deliver_timeout).total_seconds() if command is not None else 0.0
    with _open(ctx, ca_dir) as ca:
        ra = RegistrationAuthority(ca)
        old = None if reissue_of is None else ra.reissuable(resolve_serial(reissue_of, ca))
        binds = ca.profile(profile or (old.profile if old else "")).identify_data if (profile or old) else False
        numbers = IdNumberSource(id_number_file)
        number = numbers.get() if binds or numbers.given() else None
        reg, code = ra.register(
            subject, profile, valid=validity, san=san or [], id_number=number, real_name=real_name,
            verified_by=verified_by, terms_version=terms_version, reissue_of=old.serial if old else None,
        )  # fmt: skip
        if command is not None:
            ra.deliver(reg, code, command, timeout=timeout)
    delivered = command is not None
    if json_out:
        out: dict[str, Any] = {"ref": reg.ref}
        if delivered:
            out["code_delivered"] = True
        else:
            out["code"] = code.reveal()
        out.update(
            {
                "subject": reg.subject,
                "profile": reg.profile,
                "expires_at": reg.expires_at,
                "verified_by": reg.verified_by,
                "terms_version": reg.terms_version,
                "reissue_of": format(reg.reissue_of, "x") if reg.reissue_of is not None else None,
            }
        )
        emit_json(out)
        return
    from rich.markup import escape
    from rich.panel import Panel

    extra = ""
    if reg.reissue_of is not None:
        extra += f"Re-issues: {reg.reissue_of:x} (revoked as superseded when the new one is issued)\n"
    if reg.verified_by:
        extra += f"Verified: {escape(reg.verified_by)}\n"
    if reg.terms_version:
        extra += f"Terms:    {escape(reg.terms_version)}\n"
    if delivered:
        body = (
            f"Reference number:    [bold]{reg.ref}[/]\n"
            f"Authorization code:  delivered by {escape(command[0] if command else '')}\n\n"
            f"Subject:  {escape(reg.subject)}\n"
            f"Profile:  {escape(reg.profile)}\n"
            f"{extra}"
            f"Enroll before {reg.expires_at:%Y-%m-%d %H:%M} UTC.\n\n"
            "Hand the reference to the holder (e.g. on paper); the code went by the other channel.\n"
            f"If the code does not arrive, run 'tokenissue ra cancel {reg.ref}' and register again."
        )
    else:
        body = (
            f"Reference number:    [bold]{reg.ref}[/]\n"
            f"Authorization code:  [bold]{code.reveal()}[/]\n\n"
            f"Subject:  {escape(reg.subject)}\n"
            f"Profile:  {escape(reg.profile)}\n"
            f"{extra}"
            f"Enroll before {reg.expires_at:%Y-%m-%d %H:%M} UTC.\n\n"
            "Hand the reference and the code to the holder by [bold]separate channels[/] "
            "(e.g. the reference on paper, the code by SMS or sealed letter).\n"
            "The code is shown only this once and is good for one certificate. If it is lost, "
            f"run 'tokenissue ra cancel {reg.ref}' and register again."
        )
    del code
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
