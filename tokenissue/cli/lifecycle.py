"""``tokenissue enroll / status / renew / revoke``: a certificate's life on a token."""

from __future__ import annotations

import enum
import os
import signal
from pathlib import Path
from typing import Annotated, Any

import typer

from ..errors import UsageError
from ..models import KeyType, RevocationReason
from ._common import (
    CaPinFileOpt,
    JsonOpt,
    PinEnvOpt,
    PinFileOpt,
    PinSource,
    ProtectedAuthOpt,
    ca_pin_source,
    console,
    emit_json,
    err_console,
    parse_duration,
    state,
)

KeyTypeChoice = enum.Enum("KeyTypeChoice", {k.name: k.value for k in KeyType}, type=str)  # type: ignore[misc]
Reason = enum.Enum("Reason", {r.name: r.value for r in RevocationReason}, type=str)  # type: ignore[misc]

TokenOptional = Annotated[
    str | None,
    typer.Option("--token", "-t", help="The token: label, serial:XXXX or pkcs11: URI.", envvar="TOKENISSUE_TOKEN"),
]
CaOpt = Annotated[
    str | None,
    typer.Option("--ca", help="The CA: a CA directory made by 'tokenissue ca init' (CA URLs come later).", envvar="TOKENISSUE_CA"),
]


def _state_db(ctx: typer.Context) -> Any:
    from ..inventory import Inventory

    d = state(ctx).state_dir
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    return Inventory.open(d / "state.db")


def _step_hook() -> Any:
    """Progress on stderr, and a fault-injection point for the crash tests.

    TOKENISSUE_FAILPOINT=STEP kills this process with SIGKILL right after STEP, exactly as a
    power cut would; the journal must then let the next run finish the work.
    """
    failpoint = os.environ.get("TOKENISSUE_FAILPOINT")

    def hook(step: str) -> None:
        if failpoint == step:
            os.kill(os.getpid(), signal.SIGKILL)

    return hook


def _enroller(ctx: typer.Context, location: str, ca_pin_file: Path | None) -> Any:
    from ..enroll import open_enroller
    from ..enroll.local import LocalCA

    enroller = open_enroller(location, module=state(ctx).module)
    if isinstance(enroller, LocalCA) and enroller.needs_ca_pin:
        enroller.ca_pin = ca_pin_source(ca_pin_file).get()
    return enroller


def enroll(
    ctx: typer.Context,
    token: TokenOptional = None,
    ca: CaOpt = None,
    subject: Annotated[str | None, typer.Option("--subject", "-s", help="RFC 4514 subject, UTF-8: 'CN=홍길동,O=Example,C=KR'.")] = None,
    profile: Annotated[str, typer.Option("--profile", "-p", help="Certificate type (see the CA's profiles).")] = "personal",
    key_type: Annotated[KeyTypeChoice, typer.Option("--type", help="Key type to generate on the token.")] = KeyTypeChoice("ec-p256"),  # noqa: B008
    label: Annotated[str | None, typer.Option("--label", "-l", help="Label for the new key and certificate. Default: PROFILE-DATE-RANDOM.")] = None,
    san: Annotated[list[str] | None, typer.Option("--san", help="dns:NAME, email:ADDR, uri:URI or ip:ADDR (repeatable).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Finish every unfinished enrollment in the journal, then stop.")] = False,
    pin_file: PinFileOpt = None,
    pin_env: PinEnvOpt = None,
    protected_auth: ProtectedAuthOpt = False,
    ca_pin_file: CaPinFileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Key on the token → CSR signed in it → CA → certificate and chain written next to the key.

    Every step is journaled: if the process dies, run the same command again (or
    'enroll --resume') to finish; a failure before issuance removes the key it made.
    """
    from .. import p11
    from ..lifecycle import EnrollParams
    from ..lifecycle import enroll as run_enroll

    pin_src = PinSource("TOKENISSUE_PIN", "PIN", pin_file=pin_file, pin_env=pin_env, protected_auth=protected_auth)
    mod = state(ctx).module
    with _state_db(ctx) as db:
        if resume:
            entries = db.journal_open("enroll")
            if not entries:
                console().print("No unfinished enrollment; nothing to do.")
                return
            pin = pin_src.get()
            results = []
            for e in entries:
                params = EnrollParams(**{**e.params, "san": tuple(e.params.get("san") or ())})
                enroller = _enroller(ctx, params.ca, ca_pin_file)
                try:
                    out = run_enroll(
                        params, token=p11.TokenSelector(serial=params.token_serial), pin=pin, enroller=enroller,
                        state=db, module=mod, journal_id=e.id, on_step=_step_hook(),
                    )
                finally:
                    enroller.close()
                results.append(out.as_json())
            _report(results, json_out)
            return
        if token is None or ca is None or subject is None:
            raise UsageError("enroll needs --token, --ca and --subject (or --resume).")
        from ..pkix.names import parse_san, parse_subject

        parse_subject(subject)
        parse_san(san or [])
        sel = p11.TokenSelector.parse(token)
        token_serial = p11.load_module(mod).token_info(sel).serial
        enroller = _enroller(ctx, ca, ca_pin_file)
        try:
            enroller.check_profile(profile)  # before any key is made
            params = EnrollParams(
                token_serial=token_serial, subject=subject, profile=profile, key_type=key_type.value,
                ca=enroller.location, label=label, san=tuple(san or ()),
            )
            out = run_enroll(params, token=sel, pin=pin_src.get(), enroller=enroller, state=db, module=mod, on_step=_step_hook())
        finally:
            enroller.close()
    _report([out.as_json()], json_out)


def _report(results: list[dict[str, Any]], json_out: bool) -> None:
    if json_out:
        emit_json(results[0] if len(results) == 1 else results)
        return
    for r in results:
        how = "Already enrolled" if r.get("already_done") else ("Resumed and finished" if r["resumed"] else "Enrolled")
        console().print(
            f"{how}: [bold]{r['subject']}[/] serial {r['serial']} on token '{r['token']}' "
            f"(key {r['label']}, id {r['key_id'][:16]}…), valid until {r['not_after'][:10]}."
        )


def status(
    ctx: typer.Context,
    token: Annotated[str, typer.Option("--token", "-t", help="The token: label, serial:XXXX or pkcs11: URI.", envvar="TOKENISSUE_TOKEN")],
    within: Annotated[
        str | None,
        typer.Option(
            "--within",
            help="Call a certificate 'expiring' this long before it expires. "
            "Default: 30 days or a third of its lifetime, whichever is shorter.",
        ),
    ] = None,
    pin_file: PinFileOpt = None,
    pin_env: PinEnvOpt = None,
    protected_auth: ProtectedAuthOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Every certificate on the token: days left and valid / expiring / expired / revoked."""
    from .. import p11
    from ..lifecycle import certificate_status

    pin = PinSource("TOKENISSUE_PIN", "PIN", pin_file=pin_file, pin_env=pin_env, protected_auth=protected_auth).get()
    with _state_db(ctx) as db, p11.open_token(p11.TokenSelector.parse(token), pin, module=state(ctx).module) as s:
        reports = certificate_status(s, db, within=parse_duration(within) if within else None, ask_ca=_ask_ca(ctx))
        label = s.info.label
    if json_out:
        emit_json([r.as_json() for r in reports])
        return
    if not reports:
        err_console().print(f"No certificates with keys on token '{label}'. Get one with 'tokenissue enroll'.")
        return
    from rich.table import Table

    colours = {"valid": "green", "expiring": "yellow", "expired": "red", "revoked": "red"}
    table = Table("Label", "Subject", "Serial", "Not after", "Days left", "State")
    for r in reports:
        c = colours[r.state]
        table.add_row(r.cert.label, r.cert.subject, format(r.cert.serial, "x")[:16], f"{r.cert.not_after:%Y-%m-%d}", str(r.days_left), f"[{c}]{r.state}[/]")
    console().print(table)
    due = [r for r in reports if r.renew_due]
    if any(r.state == "revoked" for r in due):
        console().print("[red]A certificate is revoked:[/] re-issue with 'tokenissue renew --rekey --key LABEL'.")
    if any(r.state in ("expiring", "expired") for r in due):
        console().print("[yellow]Renewal is due:[/] run 'tokenissue renew --token ...'.")


def _ask_ca(ctx: typer.Context) -> Any:
    def ask(location: str, serial: int) -> Any:
        from ..enroll import open_enroller
        from ..errors import TokenIssueError

        try:
            e = open_enroller(location, module=state(ctx).module)
        except TokenIssueError:
            return None  # the CA is not reachable from here; the holder's record has to do
        try:
            return e.status(serial)
        finally:
            e.close()

    return ask


def renew(
    ctx: typer.Context,
    token: Annotated[str, typer.Option("--token", "-t", help="The token: label, serial:XXXX or pkcs11: URI.", envvar="TOKENISSUE_TOKEN")],
    key: Annotated[str | None, typer.Option("--key", "-k", help="Renew this key's certificate now, due or not.")] = None,
    within: Annotated[
        str | None,
        typer.Option(
            "--within",
            help="Renew certificates expiring within this time. "
            "Default: 30 days or a third of the certificate's lifetime, whichever is shorter.",
        ),
    ] = None,
    rekey: Annotated[bool, typer.Option("--rekey", help="Generate a new key (the old key and certificate are removed once the new one is on the token).")] = False,
    ca: CaOpt = None,
    profile: Annotated[str | None, typer.Option("--profile", "-p", help="Profile, when tokenissue did not enroll the certificate.")] = None,
    pin_file: PinFileOpt = None,
    pin_env: PinEnvOpt = None,
    protected_auth: ProtectedAuthOpt = False,
    ca_pin_file: CaPinFileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Renew certificates before they expire (same key, or a new one with --rekey); revoked ones are re-issued with --rekey."""
    from .. import p11
    from ..lifecycle import certificate_status, renewal_params
    from ..lifecycle import enroll as run_enroll

    pin = PinSource("TOKENISSUE_PIN", "PIN", pin_file=pin_file, pin_env=pin_env, protected_auth=protected_auth).get()
    mod = state(ctx).module
    sel = p11.TokenSelector.parse(token)
    with _state_db(ctx) as db:
        with p11.open_token(sel, pin, module=mod) as s:
            reports = certificate_status(s, db, within=parse_duration(within) if within else None, ask_ca=_ask_ca(ctx))
            kid = s.key(p11.KeySelector.parse(key)).id if key else None
            token_serial = s.info.serial
        todo = [r for r in reports if r.cert.id == kid] if kid is not None else [r for r in reports if r.renew_due]
        if kid is not None and not todo:
            raise UsageError(f"Key '{key}' has no certificate on the token to renew.")
        if not todo:
            if json_out:
                emit_json([])
            else:
                horizon = within or "30 days (or a third of its lifetime)"
                console().print(f"Nothing due: no certificate expires within {horizon}.")
            return
        results = []
        for r in todo:
            if r.state == "revoked" and not rekey:
                raise UsageError(f"Certificate {r.cert.serial:x} is revoked; re-issue it with --rekey (a revoked key is not reused).")
            where = ca or r.ca
            prof = profile or (r.record.profile if r.record else None)
            if where is None or prof is None:
                raise UsageError(f"tokenissue did not enroll '{r.cert.label}'; give --ca and --profile to renew it.")
            params = renewal_params(r, token_serial=token_serial, rekey=rekey, ca=where, profile=prof)
            enroller = _enroller(ctx, where, ca_pin_file)
            try:
                out = run_enroll(params, token=sel, pin=pin, enroller=enroller, state=db, module=mod, on_step=_step_hook())
            finally:
                enroller.close()
            results.append(out.as_json())
    if json_out:
        emit_json(results)
    else:
        for res in results:
            console().print(f"Renewed {res['replaces']} → serial {res['serial']} (key {res['label']}), valid until {str(res['not_after'])[:10]}.")


def revoke(
    ctx: typer.Context,
    token: TokenOptional = None,
    key: Annotated[str | None, typer.Option("--key", "-k", help="Revoke this key's certificate(s) (token present).")] = None,
    token_serial: Annotated[
        str | None, typer.Option("--token-serial", help="A LOST token's serial: revoke all its certificates at the CA, no token needed.")
    ] = None,
    ca: CaOpt = None,
    reason: Annotated[Reason, typer.Option("--reason", help="RFC 5280 reason; lost tokens default to key-compromise.")] = None,  # type: ignore[assignment]
    pin_file: PinFileOpt = None,
    pin_env: PinEnvOpt = None,
    protected_auth: ProtectedAuthOpt = False,
    ca_pin_file: CaPinFileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Revoke a certificate on a token, or every certificate of a lost token (by its serial)."""
    from datetime import UTC, datetime

    from .. import p11
    from ..lifecycle import revoke_on_token
    from .ca import record_dict

    if token_serial is not None:
        if ca is None:
            raise UsageError("A lost token is revoked at its CA: give --ca.")
        why = RevocationReason(reason.value) if reason else RevocationReason.KEY_COMPROMISE
        from ..ca.authority import CertificateAuthority

        with CertificateAuthority.open(Path(ca), module=state(ctx).module) as authority:
            recs = authority.revoke_token(token_serial, why)
        with _state_db(ctx) as db:
            for r in recs:
                if db.get_certificate(r.serial) is not None:
                    db.revoke(r.serial, why, datetime.now(UTC))
    else:
        if token is None or key is None:
            raise UsageError("Give --token and --key, or --token-serial and --ca for a lost token.")
        why = RevocationReason(reason.value) if reason else RevocationReason.UNSPECIFIED
        pin = PinSource("TOKENISSUE_PIN", "PIN", pin_file=pin_file, pin_env=pin_env, protected_auth=protected_auth).get()
        with _state_db(ctx) as db, p11.open_token(p11.TokenSelector.parse(token), pin, module=state(ctx).module) as s:
            recs = revoke_on_token(s, db, p11.KeySelector.parse(key), lambda where: _enroller(ctx, where, ca_pin_file), why, ca)
    if json_out:
        emit_json([record_dict(r) for r in recs])
    elif not recs:
        console().print("Nothing was revoked: no valid certificate matched.")
    else:
        for r in recs:
            console().print(f"Revoked {r.serial:x} ({r.subject}), reason {why.value}.")
