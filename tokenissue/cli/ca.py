"""``tokenissue ca ...``: run a CA whose key lives on a token."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated, Any

import typer

from ..errors import UsageError
from ..models import CertStatus, KeyType, RevocationReason
from ._common import (
    DURATION_HELP,
    CaDirOpt,
    CaPinFileOpt,
    JsonOpt,
    PinEnvOpt,
    PinFileOpt,
    PinSource,
    ReasonOpt,
    RequireSignOnlyOpt,
    ca_pin_source,
    console,
    emit_json,
    err_console,
    parse_duration,
    parse_reason,
    resolve_serial,
    state,
)
from ._render import FORCED_NOTE, plain, record_dict, revoked_lines

app = typer.Typer(help="Run a certificate authority whose key lives on a token.", no_args_is_help=True)
audit_app = typer.Typer(help="The CA's append-only, hash-chained audit log.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")

KeyTypeChoice = enum.Enum("KeyTypeChoice", {k.name: k.value for k in KeyType}, type=str)  # type: ignore[misc]
StatusChoice = enum.Enum("StatusChoice", {k.name: k.value for k in CertStatus}, type=str)  # type: ignore[misc]


def _open(ctx: typer.Context, ca_dir: Path) -> Any:
    from ..ca.authority import CertificateAuthority

    return CertificateAuthority.open(ca_dir, module=state(ctx).module)


def _url_has_password(url: str) -> bool:
    from urllib.parse import parse_qs, urlsplit

    try:
        parts = urlsplit(url)
        return parts.password is not None or "password" in {k.lower() for k in parse_qs(parts.query)}
    except ValueError:
        return False


@app.command("init")
def init(
    ctx: typer.Context,
    ca_dir: CaDirOpt,
    subject: Annotated[str, typer.Option("--subject", "-s", help="The CA's subject, e.g. 'CN=Example Root CA,O=Example,C=KR'.")],
    token: Annotated[str | None, typer.Option("--token", "-t", help="Token for the CA key (label, serial:XXXX or pkcs11: URI).")] = None,
    key_type: Annotated[KeyTypeChoice, typer.Option("--type", help="CA key type.")] = KeyTypeChoice("ec-p256"),  # noqa: B008
    days: Annotated[int, typer.Option("--days", help="Lifetime of the self-signed CA certificate.")] = 3650,
    label: Annotated[str, typer.Option("--label", help="Label of the CA key on the token.")] = "tokenissue-ca",
    crl_url: Annotated[str | None, typer.Option("--crl-url", help="CRL distribution point put into issued certificates.")] = None,
    csr_out: Annotated[
        Path | None,
        typer.Option("--csr-out", help="Make an intermediate: write a CSR here for the parent CA, then 'ca install-cert'."),
    ] = None,
    insecure_file_key: Annotated[
        bool, typer.Option("--insecure-file-key", help="Keep the CA key in a file in the CA dir. Throwaway CAs only.")
    ] = False,
    db: Annotated[
        str | None,
        typer.Option(
            "--db",
            help="Inventory database shared by CA server replicas, e.g. 'postgresql://ca@db.example/ca' "
            "(password from ~/.pgpass or PGPASSFILE, never in the URL); saved in ca.toml. "
            "Default: SQLite file ca.db in the CA directory.",
            envvar="TOKENISSUE_CA_DB",
        ),
    ] = None,
    require_sign_only: RequireSignOnlyOpt = False,
    ca_pin_file: CaPinFileOpt = None,
) -> None:
    """Create a CA: its key is generated on the token, then a self-signed root (or a CSR)."""
    from ..ca.authority import CSR_FILE, CertificateAuthority

    if db is not None and "://" not in db:
        db = str(Path(db).expanduser().resolve())  # a relative path would follow the working directory
    if db is not None and "://" in db and _url_has_password(db):
        raise UsageError(
            "--db must not carry a password (it would sit in the shell history and the process list); "
            "put it in ~/.pgpass or a PGPASSFILE, or edit 'database' in ca.toml (mode 0600)."
        )
    pin = None if insecure_file_key else ca_pin_source(ca_pin_file).get()
    ca = CertificateAuthority.init(
        ca_dir,
        subject=subject,
        days=days,
        pin=pin,
        token=token,
        key_type=KeyType(key_type.value),
        label=label,
        module=state(ctx).module,
        crl_url=crl_url,
        csr_out=csr_out is not None,
        insecure_file_key=insecure_file_key,
        database=db,
        require_sign_only=require_sign_only,
    )
    with ca:
        if csr_out is not None:
            csr_out.write_bytes((ca_dir / CSR_FILE).read_bytes())
            console().print(f"CA key made; CSR written to {csr_out}. Install the certificate with 'tokenissue ca install-cert'.", markup=False)
        else:
            cert = ca.certificate
            console().print(
                f"CA '{cert.subject.rfc4514_string()}' ready in {ca_dir}, valid until {cert.not_valid_after_utc:%Y-%m-%d}."
            )
    if insecure_file_key:
        err_console().print("[yellow]Warning:[/] the CA key is in a file (--insecure-file-key); use it only for tests.")
    elif ca.key_can_decrypt:
        err_console().print(FORCED_NOTE, markup=False)


@app.command("profiles")
def profiles(ctx: typer.Context, ca_dir: CaDirOpt, json_out: JsonOpt = False) -> None:
    """The certificate types (profiles) this CA issues: the built-in ones and those of the CA
    directory's own profiles.toml, with what each certifies."""
    with _open(ctx, ca_dir) as ca:
        rows = [
            {"name": p.name, "description": p.description, "days": p.days, "key_usage": list(p.key_usage),
             "extended_key_usage": list(p.extended_key_usage), "key_types": [k.value for k in p.allowed_key_types],
             "san_types": list(p.san_types), "ca": p.ca, "path_length": p.path_length,
             "require_sign_only": p.require_sign_only, "policies": list(p.policies)}
            for p in ca.profiles.values()
        ]  # fmt: skip
    if json_out:
        emit_json(rows)
        return
    from rich.table import Table

    table = Table("Profile", "Days", "Extended key usage", "Key types", "Description")
    for r in rows:
        eku = ", ".join(r["extended_key_usage"]) or ("CA" if r["ca"] else "-")
        table.add_row(r["name"], str(r["days"]), plain(eku), ", ".join(r["key_types"]), plain(r["description"]))
    console().print(table)


@app.command("install-cert")
def install_cert(
    ctx: typer.Context,
    ca_dir: CaDirOpt,
    cert_file: Annotated[Path, typer.Argument(help="The CA certificate the parent issued (PEM/DER).", exists=True)],
    chain: Annotated[Path | None, typer.Option("--chain", help="The parent's chain up to the root (PEM).", exists=True)] = None,
) -> None:
    """Install an intermediate CA's certificate after 'ca init --csr-out'."""
    with _open(ctx, ca_dir) as ca:
        cert = ca.install_certificate(cert_file.read_bytes(), chain.read_bytes() if chain else None)
    console().print(f"Installed CA certificate '{cert.subject.rfc4514_string()}'.", markup=False)


@app.command("sign")
def sign(
    ctx: typer.Context,
    ca_dir: CaDirOpt,
    csr_file: Annotated[Path, typer.Argument(help="The CSR (PEM or DER).", exists=True, dir_okay=False)],
    profile: Annotated[str, typer.Option("--profile", "-p", help="Certificate type: personal, personal-banking, tls-client, tls-server, smime, code-signing, sub-ca, or one from the CA's profiles.toml ('tokenissue ca profiles' lists them).")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the certificate here (PEM) instead of stdout.")] = None,
    ca_pin_file: CaPinFileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Check a CSR against a profile and issue the certificate."""
    from cryptography.hazmat.primitives import serialization

    from ..pkix.csr import load_csr

    csr = load_csr(csr_file.read_bytes())
    with _open(ctx, ca_dir) as ca:
        ca.profile(profile)  # an unknown profile fails before any PIN is asked
        pin = ca_pin_source(ca_pin_file).get() if ca.needs_pin else None
        issued = ca.sign(csr, profile, pin=pin)
    pem = issued.certificate.public_bytes(serialization.Encoding.PEM)
    if output:
        output.write_bytes(pem)
    if json_out:
        emit_json(record_dict(issued.record))
    elif output is None:
        typer.echo(pem.decode(), nl=False)
    else:
        err_console().print(f"Issued serial {issued.record.serial:x} to {issued.record.subject}; written to {output}.", markup=False)


@app.command("list")
def list_issued(
    ctx: typer.Context,
    ca_dir: CaDirOpt,
    within: Annotated[
        str | None,
        typer.Option(
            "--within",
            help="The expiry sweep: only valid certificates expiring within this time that no newer "
            f"certificate replaces yet; {DURATION_HELP}.",
        ),
    ] = None,
    due: Annotated[
        bool,
        typer.Option(
            "--due",
            help="The expiry sweep by each certificate's profile: those whose renewal is due, "
            "renew_before_days before they expire (default 30 days, or a third of the lifetime).",
        ),
    ] = False,
    hook: Annotated[
        str | None,
        typer.Option(
            "--hook",
            help="With --within or --due: run this command once per certificate (PEM on stdin, TOKENISSUE_SERIAL, "
            "_SUBJECT, _NOT_AFTER, _DAYS_LEFT, _TOKEN_SERIAL, _SWEEP_ACTION... in the environment; no shell). "
            "Exit 0 = notified.",
        ),
    ] = None,
    renew: Annotated[
        bool,
        typer.Option(
            "--renew",
            help="With --within or --due: renew each certificate on its token when that token is present here "
            "(the token serial the CA recorded at enrollment), with the holder PIN options.",
        ),
    ] = False,
    rekey: Annotated[bool, typer.Option("--rekey", help="With --renew: a new key instead of the same one.")] = False,
    status: Annotated[
        StatusChoice | None,
        typer.Option(
            "--status",
            help="Without --within or --due: only certificates in this state (valid, suspended: on hold, "
            "restorable with 'ca restore'; revoked: for good).",
        ),
    ] = None,
    pin_file: PinFileOpt = None,
    pin_env: PinEnvOpt = None,
    ca_pin_file: CaPinFileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """List what the CA issued, with status; with --within or --due, the expiry sweep (notify or renew).

    Run the sweep daily. Exit status 8 when a renewal or a hook failed, or a token needed for
    --renew is not present and no hook told its holder.
    """
    if within is not None and due:
        raise UsageError("Give --within or --due, not both.")
    if within is None and not due and (hook or renew or rekey):
        raise UsageError(
            "--hook, --renew and --rekey belong to the expiry sweep; give --within (e.g. 30d) or --due too."
        )
    if rekey and not renew:
        raise UsageError("--rekey goes with --renew.")
    if status is not None and (within is not None or due):
        raise UsageError("--status lists the inventory; the expiry sweep (--within, --due) looks at valid certificates.")
    if within is None and not due:
        _list_all(ctx, ca_dir, json_out, None if status is None else CertStatus(status.value))
        return
    window = parse_duration(within) if within is not None else None
    _sweep(ctx, ca_dir, window, hook, renew, rekey, pin_file, pin_env, ca_pin_file, json_out)


def _list_all(ctx: typer.Context, ca_dir: Path, json_out: bool, status: CertStatus | None = None) -> None:
    with _open(ctx, ca_dir) as ca:
        rows = [record_dict(r) for r in ca.list(status=status)]
    if json_out:
        emit_json(rows)
        return
    if not rows:
        err_console().print("Nothing to list.")
        return
    from rich.table import Column, Table

    # Serials and token identities are folded, never cut: they are what revoke takes.
    table = Table(Column("Serial", overflow="fold"), "Subject", "Profile", "Not after", "Status",
                  Column("Token", overflow="fold"))  # fmt: skip
    for r in rows:
        colour = {"revoked": "red", "suspended": "yellow"}.get(r["status"], "green")
        table.add_row(
            r["serial"], plain(r["subject"]), plain(r["profile"]), f"{r['not_after']:%Y-%m-%d}",
            f"[{colour}]{r['status']}[/]", plain(r["token_serial"] or "-"),
        )  # fmt: skip
    console().print(table)


def _sweep(
    ctx: typer.Context, ca_dir: Path, within: Any, hook: str | None, renew: bool, rekey: bool,
    pin_file: Path | None, pin_env: str | None, ca_pin_file: Path | None, json_out: bool,
) -> None:  # fmt: skip
    from contextlib import ExitStack

    from ..errors import Incomplete
    from ..fleet.sweep import Renewing, run_sweep
    from ._common import user_pin_source
    from ._enrolling import ca_enroller, holder_state, step_hook

    with ExitStack() as stack:
        ca = stack.enter_context(_open(ctx, ca_dir))
        renewing = None
        if renew:
            source = user_pin_source(pin_file, pin_env, False)
            pins: dict[str, Any] = {}

            def holder_pin() -> Any:
                if "pin" not in pins:
                    pins["pin"] = source.get()
                return pins["pin"]

            enroller = ca_enroller(ctx, str(ca_dir), ca_pin_file)
            stack.callback(enroller.close)
            renewing = Renewing(
                enroller=enroller, pin=holder_pin, holder=stack.enter_context(holder_state(ctx)),
                module=state(ctx).module, rekey=rekey, on_step=step_hook(),
            )  # fmt: skip
        items = run_sweep(ca, within=within, hook=hook, renewing=renewing)
    if json_out:
        emit_json(
            [{**record_dict(i.record), "days_left": i.days_left, "action": i.action, "notified": i.notified,
              "new_serial": format(i.new_serial, "x") if i.new_serial else None, "detail": i.detail}
             for i in items]
        )  # fmt: skip
    elif not items:
        err_console().print("Nothing expires in that time (renewed certificates are not listed).")
    else:
        from rich.markup import escape
        from rich.table import Table

        table = Table("Serial", "Subject", "Not after", "Days", "Token", "Action", "Notified")
        for i in items:
            r = i.record
            colour = "yellow" if i.action == "suspended" else "green" if i.ok else "red"
            action = i.action + (f" → {i.new_serial:x}" if i.new_serial else "")
            told = {None: "-", True: "yes", False: "[red]failed[/]"}[i.notified]
            table.add_row(format(r.serial, "x"), escape(r.subject), f"{r.not_after:%Y-%m-%d}", str(i.days_left),
                          r.token_serial or "-", f"[{colour}]{escape(action)}[/]", told)  # fmt: skip
        console().print(table)
        for i in items:
            if (not i.ok or i.action == "suspended") and i.detail:
                err_console().print(f"{i.record.serial:x}: {escape(i.detail)}", highlight=False)
    bad = [i for i in items if not i.ok]
    if bad:
        raise Incomplete(f"{len(bad)} of {len(items)} expiring certificate(s) still need attention; see above.")


@app.command("revoke")
def revoke(
    ctx: typer.Context,
    ca_dir: CaDirOpt,
    serial: Annotated[str | None, typer.Argument(help="Serial number in hex, as 'ca list' shows it.")] = None,
    token_serial: Annotated[str | None, typer.Option("--token-serial", help="Revoke every certificate whose key is on this (lost) token.")] = None,
    reason: ReasonOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Revoke a certificate by serial (reason unspecified unless given), or all of a lost token's
    certificates (key-compromise unless given: its keys are out of the holder's hands).

    Key compromise revokes the key: every unexpired certificate of that public key goes too.
    """
    from ..fleet.lost_token import recorded_identity, require_recorded

    if (serial is None) == (token_serial is None):
        raise UsageError("Give either a SERIAL or --token-serial.")
    with _open(ctx, ca_dir) as ca:
        if serial is not None:
            why = parse_reason(reason, RevocationReason.UNSPECIFIED)
            number = resolve_serial(serial, ca)
            recs = ca.revoke(number, why)  # key-compromise: every certificate of the key
        else:
            assert token_serial is not None
            why = parse_reason(reason, RevocationReason.KEY_COMPROMISE)
            token_serial = recorded_identity(token_serial, ca.inventory)
            require_recorded(token_serial, ca.inventory)
            recs = ca.revoke_token(token_serial, why)
    if json_out:
        emit_json([record_dict(r) for r in recs])
    elif not recs:
        console().print(f"No valid certificate is recorded for token {token_serial}; nothing to revoke.")
    else:
        for line in revoked_lines(recs, why, one_key=serial is not None):
            console().print(line, markup=False)
        console().print("Publish a CRL with 'tokenissue ca crl'.")


SerialArg = Annotated[
    str,
    typer.Argument(
        metavar="SERIAL",
        help="Serial number in hex, as 'ca list' shows it (openssl's 0A:1B:... form, 0x... or a unique prefix "
        "of at least 4 digits work too).",
    ),
]


@app.command("suspend")
def suspend(ctx: typer.Context, ca_dir: CaDirOpt, serial: SerialArg, json_out: JsonOpt = False) -> None:
    """Suspend a certificate (put it on hold, reason certificateHold), e.g. while its token is missing.

    The next CRL lists it with reason certificateHold; 'ca restore' makes it valid again and takes it
    off the next CRL, 'ca revoke' revokes it for good. A revoked or expired certificate cannot be
    suspended (exit 6); one suspended already is left as it is.
    """
    with _open(ctx, ca_dir) as ca:
        rec, now = ca.suspend(resolve_serial(serial, ca))
    if json_out:
        emit_json({**record_dict(rec), "changed": now})
        return
    since = f"{rec.revoked_at:%Y-%m-%d %H:%M} UTC" if rec.revoked_at else "before"
    what = "Suspended" if now else "Already suspended:"
    console().print(f"{what} {rec.serial:x} ({rec.subject}) since {since}, reason certificate-hold.", markup=False)
    if now:
        console().print("Publish a CRL with 'tokenissue ca crl'; 'tokenissue ca restore' takes the hold back.", markup=False)


@app.command("restore")
def restore(ctx: typer.Context, ca_dir: CaDirOpt, serial: SerialArg, json_out: JsonOpt = False) -> None:
    """Restore a suspended certificate: valid again, and gone from the next CRL.

    Only a suspended certificate can be restored (exit 6 otherwise: a revocation is final). Holders
    cannot restore their own certificates; the CA (or its RA) does, once the token is back in the
    holder's hands.
    """
    with _open(ctx, ca_dir) as ca:
        rec = ca.restore(resolve_serial(serial, ca))
    if json_out:
        emit_json(record_dict(rec))
        return
    console().print(f"Restored {rec.serial:x} ({rec.subject}): valid again.", markup=False)
    console().print("Publish a CRL with 'tokenissue ca crl': the new one no longer lists it.", markup=False)


@app.command("crl")
def crl(
    ctx: typer.Context,
    ca_dir: CaDirOpt,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Also write the CRL here (PEM).")] = None,
    ca_pin_file: CaPinFileOpt = None,
) -> None:
    """Sign and publish a new CRL (written to crl.pem in the CA directory): revoked certificates, and
    suspended ones with reason certificateHold; a restored certificate is not on it any more."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    with _open(ctx, ca_dir) as ca:
        pin = ca_pin_source(ca_pin_file).get() if ca.needs_pin else None
        c = ca.crl(pin)
    pem = c.public_bytes(serialization.Encoding.PEM)
    if output:
        output.write_bytes(pem)
    held = sum(1 for r in c if _reason_of(r) is x509.ReasonFlags.certificate_hold)
    of_them = f" ({held} of them suspended, reason certificateHold)" if held else ""
    err_console().print(
        f"CRL with {len(list(c))} revoked certificate(s){of_them}, valid until {c.next_update_utc:%Y-%m-%d %H:%M} UTC."
    )


def _reason_of(entry: Any) -> Any:
    from cryptography import x509

    try:
        return entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    except x509.ExtensionNotFound:
        return None


def _service_pins(ca: Any, token: str | None, current_token: str | None, ca_pin_file: Path | None,
                  pin_file: Path | None) -> tuple[Any, Any]:  # fmt: skip
    """The CA token's PIN, and the PIN of the token a service's key goes on (or is on) when that
    is another token (``--token``, or ca.toml's ``<service>_token``)."""
    pin = ca_pin_source(ca_pin_file).get() if ca.needs_pin else None
    other = (token is not None and token != ca.config.token) or (token is None and current_token is not None)
    token_pin = PinSource("TOKENISSUE_PIN", "PIN", pin_file=pin_file).get() if other else None
    return pin, token_pin


@app.command("ocsp-signer")
def ocsp_signer(
    ctx: typer.Context,
    ca_dir: CaDirOpt,
    days: Annotated[int, typer.Option("--days", help="Lifetime of the responder's certificate (1-366 days). It has id-pkix-ocsp-nocheck, so it cannot be revoked: keep it short and run this again before it ends.")] = 30,
    key_type: Annotated[KeyTypeChoice, typer.Option("--type", help="Type of the responder's key, when one is made.")] = KeyTypeChoice("ec-p256"),  # noqa: B008
    token: Annotated[str | None, typer.Option("--token", "-t", help="Token for the responder's key (label, serial:XXXX or pkcs11: URI). Default: the CA's token. Its PIN: --pin-file, $TOKENISSUE_PIN or a prompt.")] = None,
    new_key: Annotated[bool, typer.Option("--new-key", help="On renewal, make a new key (the old one is deleted once the new certificate is in place). Default: renew the certificate for the same key.")] = False,
    url: Annotated[str | None, typer.Option("--url", help="The responder's address, e.g. http://ca.example/ocsp, saved in ca.toml and put into certificates issued from now on (authorityInfoAccess).")] = None,
    ca_pin_file: CaPinFileOpt = None,
    pin_file: PinFileOpt = None,
) -> None:
    """Make the OCSP responder's signing key and certificate, or renew it.

    The key is generated on a token; the CA certifies it for OCSP signing (delegated responder,
    RFC 6960). 'ca serve' then answers OCSP at /ocsp; a running one takes up a renewed or new
    signer by itself."""
    from dataclasses import replace

    from ..ca.ocsp import provision_signer

    if url is not None and not url.startswith(("http://", "https://")):
        raise UsageError(f"--url must be an http:// or https:// address, not '{url}'.")
    with _open(ctx, ca_dir) as ca:
        pin, token_pin = _service_pins(ca, token, ca.config.ocsp_token, ca_pin_file, pin_file)
        renewing = ca.config.ocsp_key is not None
        cert = provision_signer(
            ca, pin, days=days, key_type=KeyType(key_type.value), token=token, token_pin=token_pin, new_key=new_key
        )
        if url is not None:
            ca.config = replace(ca.config, ocsp_url=url)
            ca.config.save(ca_dir)
    verb = "renewed" if renewing else "made"
    console().print(
        f"OCSP signer {verb}: serial {cert.serial_number:x}, valid until {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC "
        f"({ca_dir / 'ocsp.pem'}).",
        markup=False,
    )
    if url is not None:
        console().print(f"Certificates issued from now on name {url} as their OCSP responder.", markup=False)


@app.command("scep-ra")
def scep_ra(
    ctx: typer.Context,
    ca_dir: CaDirOpt,
    days: Annotated[int, typer.Option("--days", help="Lifetime of the RA certificate (1-825 days); run this again before it ends.")] = 365,
    key_type: Annotated[KeyTypeChoice, typer.Option("--type", help="Type of the RA's key, when one is made: an RSA type (SCEP clients encrypt to it with RSA).")] = KeyTypeChoice("rsa-2048"),  # noqa: B008
    token: Annotated[str | None, typer.Option("--token", "-t", help="Token for the RA's key (label, serial:XXXX or pkcs11: URI). Default: the CA's token. Its PIN: --pin-file, $TOKENISSUE_PIN or a prompt.")] = None,
    new_key: Annotated[bool, typer.Option("--new-key", help="On renewal, make a new key (the old one is deleted once the new certificate is in place). Default: renew the certificate for the same key.")] = False,
    ca_pin_file: CaPinFileOpt = None,
    pin_file: PinFileOpt = None,
) -> None:
    """Make the SCEP registration authority's key and certificate, or renew it.

    The key is RSA, generated on a token able to decrypt: SCEP clients encrypt their requests to
    it, and it signs the CA's answers. 'ca serve' then answers SCEP at /scep (restart it after a
    renewal)."""
    from cryptography.hazmat.primitives import hashes

    from ..ca.scep import RA_CERT_FILE, provision_ra

    with _open(ctx, ca_dir) as ca:
        pin, token_pin = _service_pins(ca, token, ca.config.scep_token, ca_pin_file, pin_file)
        renewing = ca.config.scep_key is not None
        cert = provision_ra(
            ca, pin, days=days, key_type=KeyType(key_type.value), token=token, token_pin=token_pin, new_key=new_key
        )
    verb = "renewed" if renewing else "made"
    fingerprint = cert.fingerprint(hashes.SHA256()).hex()
    console().print(
        f"SCEP RA certificate {verb}: serial {cert.serial_number:x}, valid until {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC "
        f"({ca_dir / RA_CERT_FILE}).\nSHA-256 fingerprint: {fingerprint}",
        markup=False,
    )


_ByOpt = Annotated[str | None, typer.Option("--by", help="Who decides, for the audit log. Default: the name of the user running the command.")]
_PendingIdArg = Annotated[str, typer.Argument(help="The request's ID, as 'ca pending' shows it.")]


@app.command("pending")
def pending_list(
    ctx: typer.Context,
    ca_dir: CaDirOpt,
    every: Annotated[bool, typer.Option("--all", help="Also show requests already approved, rejected or issued.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Show the requests waiting for approval (profiles with 'approval = true'; SCEP polls them)."""
    from ..ca.approvals import pending

    with _open(ctx, ca_dir) as ca:
        rows = pending(ca, every=every)
        details = [(p, ca.inventory.get_registration(p.ref)) for p in rows]
    if json_out:
        emit_json([{"id": p.id, "protocol": p.protocol, "ref": p.ref, "subject": reg.subject if reg else None,
                    "profile": reg.profile if reg else None, "status": p.status.value,
                    "created_at": p.created_at.isoformat(), "decided_by": p.decided_by,
                    "serial": None if p.serial is None else format(p.serial, "x")} for p, reg in details])  # fmt: skip
        return
    if not rows:
        console().print("No request waits for approval." if not every else "No requests.")
        return
    for p, reg in details:
        who = f"  decided by {p.decided_by}" if p.decided_by else ""
        console().print(f"{p.id}  {p.status.value:<8} {p.protocol}  ref {p.ref}  {reg.profile if reg else '?'}  "
                        f"{reg.subject if reg else '?'}  {p.created_at:%Y-%m-%d %H:%M}{who}", markup=False)  # fmt: skip


def _decide(ctx: typer.Context, ca_dir: Path, pending_id: str, approve: bool, by: str | None) -> None:
    import getpass

    from ..ca.approvals import decide

    who = by or getpass.getuser()
    with _open(ctx, ca_dir) as ca:
        decided = decide(ca, pending_id, approve=approve, by=who)
    if approve:
        console().print(f"Request {decided.id} (registration {decided.ref}) approved by {who}; the client's next poll "
                        "gets its certificate.", markup=False)  # fmt: skip
    else:
        console().print(f"Request {decided.id} (registration {decided.ref}) rejected by {who}; the client's next poll is "
                        "refused, and the registration's code may be used again.", markup=False)  # fmt: skip


@app.command("approve")
def approve(ctx: typer.Context, ca_dir: CaDirOpt, pending_id: _PendingIdArg, by: _ByOpt = None) -> None:
    """Approve a request waiting for approval; the server issues the certificate at the client's next poll."""
    _decide(ctx, ca_dir, pending_id, True, by)


@app.command("reject")
def reject(ctx: typer.Context, ca_dir: CaDirOpt, pending_id: _PendingIdArg, by: _ByOpt = None) -> None:
    """Reject a request waiting for approval; its registration is released for a corrected request."""
    _decide(ctx, ca_dir, pending_id, False, by)


@audit_app.command("verify")
def audit_verify(ctx: typer.Context, ca_dir: CaDirOpt) -> None:
    """Check the hash chain of the audit log; any altered, removed or inserted entry fails."""
    with _open(ctx, ca_dir) as ca:
        n = ca.inventory.audit_verify()
    console().print(f"Audit log intact: {n} entries verified.")


@audit_app.command("list")
def audit_list(ctx: typer.Context, ca_dir: CaDirOpt, json_out: JsonOpt = False) -> None:
    """Show the audit log."""
    with _open(ctx, ca_dir) as ca:
        entries = ca.inventory.audit_entries()
    if json_out:
        emit_json([{"seq": e.seq, "at": e.at, "action": e.action, "details": e.details, "hash": e.hash} for e in entries])
        return
    for e in entries:
        console().print(f"{e.seq:>5} {e.at:%Y-%m-%d %H:%M:%S} {e.action:<10} {e.details}", markup=False)


def _parse_listen(listen: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[V6]:PORT`` for IPv6); a host is required, never implied."""
    host, sep, port_text = listen.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise UsageError(
            f"--listen '{listen}' must be HOST:PORT with an explicit host, e.g. 127.0.0.1:8080 "
            "(0.0.0.0:8080 to listen on every interface)."
        )
    return host, int(port_text)


def _server_step_hook() -> Any:
    """The server's fault-injection point for the crash tests: TOKENISSUE_SERVER_FAILPOINT=STEP
    (after-reserve, after-issue, after-consume) kills it in the middle of a request."""
    from ._enrolling import failpoint

    return failpoint("TOKENISSUE_SERVER_FAILPOINT")


@app.command("serve")
def serve(
    ctx: typer.Context,
    ca_dir: CaDirOpt,
    listen: Annotated[str, typer.Option("--listen", help="HOST:PORT to listen on, e.g. 127.0.0.1:8080; the host is required.")],
    path: Annotated[str, typer.Option("--path", help="The CMP path (RFC 6712), e.g. /pkix/.")] = "/pkix/",
    tls_cert: Annotated[Path | None, typer.Option("--tls-cert", help="Serve HTTPS with this certificate chain (PEM).", exists=True, dir_okay=False)] = None,
    tls_key: Annotated[Path | None, typer.Option("--tls-key", help="The TLS private key (PEM) for --tls-cert.", exists=True, dir_okay=False)] = None,
    max_body: Annotated[int, typer.Option("--max-body", help="Largest CMP message or EST request accepted, in bytes.")] = 64 * 1024,
    max_concurrent: Annotated[int, typer.Option("--max-concurrent", help="CMP, OCSP, SCEP and EST requests in progress at once; past it a request is answered at once with 503 and Retry-After (CMP systemUnavail, OCSP tryLater), and the client sends it again later.")] = 256,
    max_per_client: Annotated[int, typer.Option("--max-per-client", help="Connections (so requests in flight) one client address may hold at once; past it a connection is closed at once. 0: no limit (behind a load balancer, where every client has its address: limit there).")] = 32,
    ca_pin_file: CaPinFileOpt = None,
    ocsp_pin_file: Annotated[Path | None, typer.Option("--ocsp-pin-file", help="Read the PIN of the OCSP signer's token from this file (chmod 600), when its key is not on the CA's token. Default: $TOKENISSUE_OCSP_PIN, else a prompt.")] = None,
    scep_pin_file: Annotated[Path | None, typer.Option("--scep-pin-file", help="Read the PIN of the SCEP RA's token from this file (chmod 600), when its key is not on the CA's token. Default: $TOKENISSUE_SCEP_PIN, else a prompt.")] = None,
) -> None:
    """Serve the CA over CMP (RFC 4210/9483 over HTTP, RFC 6712): enrollment with registration codes,
    key update, revocation; OCSP (RFC 6960, RFC 5019) at /ocsp once 'ca ocsp-signer' has made
    its signer; SCEP (RFC 8894) at /scep once 'ca scep-ra' has made the RA; and with --tls-cert,
    EST (RFC 7030) under /.well-known/est/. One JSON access-log line per request goes to stderr."""
    host, port = _parse_listen(listen)
    if (tls_cert is None) != (tls_key is None):
        raise UsageError("Give both --tls-cert and --tls-key, or neither.")
    if tls_cert is not None and tls_key is not None:
        _check_tls_pair(tls_cert, tls_key)
    if max_body < 1024:
        raise UsageError("--max-body must be at least 1024 bytes.")
    if not 1 <= max_concurrent <= 400:
        # 2N+64 open connections must stay under the usual limit of 1024 open files.
        raise UsageError("--max-concurrent must be between 1 and 400.")
    if max_per_client < 0:
        raise UsageError("--max-per-client must be 0 (no limit) or more.")
    with _open(ctx, ca_dir) as ca:
        subject = ca.certificate.subject.rfc4514_string()
        pin = ca_pin_source(ca_pin_file).get() if ca.needs_pin else None
        # Log in once now, so a wrong PIN or a missing token is one sentence before the server
        # starts rather than a failed start-up in the server's log.
        with ca.signing_key(pin):
            pass
        ocsp_pin = None
        if ca.config.ocsp_token is not None:
            ocsp_pin = PinSource("TOKENISSUE_OCSP_PIN", "OCSP signer's PIN", pin_file=ocsp_pin_file).get()
        from ..ca.ocsp import open_signer_key

        with open_signer_key(ca, pin, ocsp_pin) as ocsp_key:
            ocsp_ready = ocsp_key is not None
        scep_pin = None
        if ca.config.scep_token is not None:
            scep_pin = PinSource("TOKENISSUE_SCEP_PIN", "SCEP RA's PIN", pin_file=scep_pin_file).get()
        from ..ca.scep import ra_certificate

        scep_ready = ca.config.scep_key is not None and ra_certificate(ca.dir) is not None
        from ..ca.registration import RegistrationAuthority

        RegistrationAuthority(ca).check_key()  # a replica must hold the ra.key the codes come from
    import uvicorn

    from ..server.app import create_app, http_protocol

    web = create_app(
        ca_dir, ca_pin=pin, module=state(ctx).module, cmp_path=path, max_body=max_body,
        max_concurrent=max_concurrent, on_step=_server_step_hook(), ocsp_pin=ocsp_pin, scep_pin=scep_pin,
    )
    scheme = "https" if tls_cert else "http"
    shown_host = f"[{host}]" if ":" in host else host
    shown_path = "/" + path.strip("/") + "/" if path.strip("/") else "/"
    typer.echo(f"Serving CMP at {scheme}://{shown_host}:{port}{shown_path} for CA '{subject}'", err=True)
    if tls_cert:
        typer.echo(f"Serving EST at {scheme}://{shown_host}:{port}/.well-known/est/", err=True)
    if ocsp_ready:
        typer.echo(f"Serving OCSP at {scheme}://{shown_host}:{port}/ocsp", err=True)
    else:
        typer.echo(f"No OCSP signer: /ocsp answers 'unauthorized'; make one with 'tokenissue ca ocsp-signer --ca {ca_dir}'.", err=True)
    if scep_ready:
        typer.echo(f"Serving SCEP at {scheme}://{shown_host}:{port}/scep", err=True)
    else:
        typer.echo(f"No SCEP RA: /scep answers 503; make one with 'tokenissue ca scep-ra --ca {ca_dir}'.", err=True)
    uvicorn.run(
        web,
        host=host,
        port=port,
        workers=1,
        log_level="warning",
        access_log=False,  # ours is the structured one
        # Slow clients: headers within 5 s (http_protocol), the body within 5 s (create_app),
        # an idle kept-alive connection closed after 5 s; none of them holds a CMP slot.
        http=http_protocol(max_per_client=max_per_client),
        timeout_keep_alive=5,
        # X-Forwarded-* from a local client must not turn plain HTTP into "https" (EST's check).
        proxy_headers=False,
        # A backstop on open connections (idle keep-alives included), well above the CMP limit
        # so that the answer a client sees under load is ours (CMP, Retry-After, logged).
        limit_concurrency=2 * max_concurrent + 64,
        ssl_certfile=str(tls_cert) if tls_cert else None,
        ssl_keyfile=str(tls_key) if tls_key else None,
        # EST re-enrollment is authorized by the client certificate being renewed: ask for one
        # (optional: CMP, OCSP and first enrollments need none), issued by this CA.
        **_client_auth(ca_dir) if tls_cert else {},
    )


def _check_tls_pair(cert: Path, key: Path) -> None:
    """Refuse, before the server announces itself, a TLS key that is not the certificate's or
    that others may read."""
    import ssl

    if key.stat().st_mode & 0o077:
        raise UsageError(f"The TLS key {key} can be read by others; chmod 600 it.")
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(str(cert), str(key))
    except ssl.SSLError as e:
        raise UsageError(f"--tls-key {key} is not the key of --tls-cert {cert} ({e.reason or e}).") from None
    except ValueError as e:
        raise UsageError(f"--tls-key {key} cannot be read with --tls-cert {cert} ({e}).") from None


def _client_auth(ca_dir: Path) -> dict[str, Any]:
    """uvicorn's settings to ask TLS clients for a certificate of this CA (not to require one)."""
    import ssl

    from ..ca.authority import CERT_FILE, CHAIN_FILE

    anchors = ca_dir / CERT_FILE
    if (ca_dir / CHAIN_FILE).exists():
        # An intermediate: OpenSSL verifies a client's chain up to a self-signed root, so the
        # root and everything between go into the bundle (public certificates only).
        anchors = ca_dir / "tls-client-ca.pem"
        anchors.write_bytes((ca_dir / CERT_FILE).read_bytes() + b"\n" + (ca_dir / CHAIN_FILE).read_bytes())
    return {"ssl_cert_reqs": ssl.CERT_OPTIONAL, "ssl_ca_certs": str(anchors)}
