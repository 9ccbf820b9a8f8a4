"""``tokenissue enroll / status / renew / revoke``: a certificate's life on a token."""

from __future__ import annotations

import dataclasses
import enum
from pathlib import Path
from typing import Annotated, Any

import typer

from ..errors import (
    CertificateStateRefused,
    Incomplete,
    KeyNotFound,
    Remedy,
    TokenIssueError,
    TokenNotFound,
    UsageError,
)
from ..models import CertState, KeyType, RevocationReason
from ._common import (
    DURATION_HELP,
    CaPinFileOpt,
    CaTrustOpt,
    IdNumberFileOpt,
    IdNumberSource,
    JsonOpt,
    PinEnvOpt,
    PinFileOpt,
    ProtectedAuthOpt,
    ReasonOpt,
    RequireSignOnlyOpt,
    TokenOptional,
    console,
    emit_json,
    err_console,
    holder_token,
    parse_duration,
    parse_reason,
    state,
    user_pin_source,
)
from ._enrolling import (
    AcmeArgs,
    AuthCodeSource,
    ServerArgs,
    ca_enroller,
    holder_state,
    present_token_serials,
    revoke_lost_command,
    step_hook,
    unlock_local_ca,
)
from ._messages import join, say
from ._render import FORCED_NOTE, plain

KeyTypeChoice = enum.Enum("KeyTypeChoice", {k.name: k.value for k in KeyType}, type=str)  # type: ignore[misc]

CaOpt = Annotated[
    str | None,
    typer.Option(
        "--ca",
        help="The CA: a CA directory made by 'tokenissue ca init', a CMP server as "
        "cmp+http://HOST:PORT/PATH or cmp+https://HOST/PATH, an EST server as est+https://HOST:PORT, "
        "or an ACME server as acme+https://HOST/DIRECTORY-PATH.",
        envvar="TOKENISSUE_CA",
    ),
]
RefOpt = Annotated[
    str | None,
    typer.Option(
        "--ref",
        help="The registration's reference the RA gave with the authorization code: over CMP (sent as "
        "senderKID), over EST (the HTTP Basic user), or with a CA directory, where the code is checked the same way. Renewals default to "
        "the one the certificate was enrolled with.",
    ),
]
AuthCodeFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--auth-code-file",
        help="Read the authorization code (the secret that goes with --ref) from this file's "
        "first line (must be chmod 600); '-' reads stdin. Default: $TOKENISSUE_AUTH_CODE, else a hidden prompt.",
    ),
]
DomainOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--domain",
        help="ACME: a DNS name to certify (repeatable); becomes a dns: SAN, and the CN when --subject is absent.",
    ),
]
EmailOpt = Annotated[str | None, typer.Option("--email", help="ACME: contact address for a new account.")]
EabKidOpt = Annotated[
    str | None, typer.Option("--eab-kid", help="ACME: external account binding key ID, when the CA requires one.")
]
EabHmacFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--eab-hmac-file",
        help="ACME: read the external account binding HMAC key (base64url) from this file (must be chmod 600).",
    ),
]
ChallengeChoice = enum.Enum("ChallengeChoice", {"HTTP_01": "http-01", "DNS_01": "dns-01"}, type=str)
ChallengeOpt = Annotated[
    ChallengeChoice,
    typer.Option("--challenge", help="ACME: prove control of the domains by http-01 (built-in responder) or dns-01 (--dns-hook)."),
]
Http01AddressOpt = Annotated[
    str,
    typer.Option(
        "--http-01-address",
        metavar="HOST:PORT",
        help="ACME http-01: where the built-in responder listens while the CA validates (the CA connects to port 80 of the domain).",
    ),
]
DnsHookOpt = Annotated[
    str | None,
    typer.Option(
        "--dns-hook",
        help="ACME dns-01: command run with TOKENISSUE_ACME_ACTION=present|cleanup, TOKENISSUE_ACME_DOMAIN, "
        "TOKENISSUE_ACME_TXT_NAME and TOKENISSUE_ACME_TXT_VALUE; exit status 0 means done (docs/acme.md).",
    ),
]
AcmeTrustOpt = Annotated[
    Path | None,
    typer.Option(
        "--acme-trust",
        help="ACME: CA bundle (PEM) for the ACME server's TLS certificate (default: the system's trust store). "
        "The root of the issued chain is looked up in --ca-trust, then the system's trust store.",
        envvar="TOKENISSUE_ACME_TRUST",
    ),
]

def enroll(
    ctx: typer.Context,
    token: TokenOptional = None,
    ca: CaOpt = None,
    subject: Annotated[str | None, typer.Option("--subject", "-s", help="RFC 4514 subject, UTF-8: 'CN=홍길동,O=Example,C=KR'.")] = None,
    profile: Annotated[str, typer.Option("--profile", "-p", help="Certificate type (see the CA's profiles).")] = "personal",
    key_type: Annotated[KeyTypeChoice, typer.Option("--type", help="Key type to generate on the token.")] = KeyTypeChoice("ec-p256"),  # noqa: B008
    label: Annotated[str | None, typer.Option("--label", "-l", help="Label for the new key and certificate. Default: PROFILE-DATE-RANDOM.")] = None,
    san: Annotated[list[str] | None, typer.Option("--san", help="dns:NAME, email:ADDR, uri:URI or ip:ADDR (repeatable).")] = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Finish every unfinished enrollment in the journal, then stop. With --ca: ask that CA from now on "
            "(the address they were started with was wrong or has moved).",
        ),
    ] = False,
    ref: RefOpt = None,
    auth_code_file: AuthCodeFileOpt = None,
    ca_trust: CaTrustOpt = None,
    domain: DomainOpt = None,
    email: EmailOpt = None,
    eab_kid: EabKidOpt = None,
    eab_hmac_file: EabHmacFileOpt = None,
    challenge: ChallengeOpt = ChallengeChoice("http-01"),  # noqa: B008
    http01_address: Http01AddressOpt = "0.0.0.0:80",
    dns_hook: DnsHookOpt = None,
    acme_trust: AcmeTrustOpt = None,
    pin_file: PinFileOpt = None,
    pin_env: PinEnvOpt = None,
    protected_auth: ProtectedAuthOpt = False,
    ca_pin_file: CaPinFileOpt = None,
    require_sign_only: RequireSignOnlyOpt = False,
    id_number_file: IdNumberFileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Key on the token → CSR signed in it → CA → certificate and chain written next to the key.

    Every step is journaled: if the process dies, run the same command again (or
    'enroll --resume') to finish; a failure before issuance removes the key it made.
    With a CMP server (--ca cmp+http(s)://...) the CA's reference (--ref) and authorization
    code authenticate the request; resuming needs the code again. With an ACME server
    (--ca acme+https://HOST/DIRECTORY) give --domain; the CA decides the profile (see docs/acme.md).
    A profile that binds the holder's identity (kr-personal, kr-business: a Korean VID) asks for
    the registration number (--id-number-file, $TOKENISSUE_ID_NUMBER or a prompt); a random R
    is kept on the token next to the key (docs/korean-pki.md).
    """
    from .. import p11
    from ..lifecycle import EnrollParams
    from ..lifecycle import enroll as run_enroll

    pin_src = user_pin_source(pin_file, pin_env, protected_auth)
    mod = state(ctx).module
    acme = AcmeArgs(
        email=email, eab_kid=eab_kid, eab_hmac_file=eab_hmac_file, challenge=challenge.value,
        http01_address=http01_address, dns_hook=dns_hook, acme_trust=acme_trust,
    )  # fmt: skip
    from ..enroll import is_acme_location

    if ca is not None and is_acme_location(ca) and not resume:
        if not domain and subject is None:
            raise UsageError("Enrolling at an ACME server needs --domain NAME (the names the CA validates).")
        if subject is None and domain:
            subject = f"CN={domain[0]}"
        san = [*(san or []), *(f"dns:{d}" for d in domain or [] if f"dns:{d}" not in (san or []))]
        profile = "acme"  # The CA decides what it issues; this is the name in tokenissue's records.
    with holder_state(ctx) as db:
        if resume:
            _resume(ctx, db, ca, pin_src, auth_code_file, ca_trust, ca_pin_file, acme, json_out, id_number_file)
            return
        if token is None or ca is None or subject is None:
            raise UsageError("enroll needs --token, --ca and --subject (or --resume).")
        from ..pkix.names import parse_san, parse_subject

        parse_subject(subject)
        parse_san(san or [])
        from ..enroll import takes_registration

        fresh: ServerArgs | None = None
        if takes_registration(ca):
            if not ref:
                raise UsageError("Enrolling at a CMP or EST server needs --ref, the reference the CA gave with the authorization code.")
            # Asked for now, before a key is made, and kept out of the journal.
            fresh = ServerArgs(ref=ref, auth_code=AuthCodeSource(auth_code_file)(), trust_file=ca_trust)
        elif is_acme_location(ca):
            fresh = ServerArgs(trust_file=ca_trust)  # --ca-trust: the roots the issued chain may end in
        elif ref:
            # A CA directory and a registration: the code is checked as a CMP server would.
            fresh = ServerArgs(ref=ref, auth_code=AuthCodeSource(auth_code_file)())
        sel = p11.TokenSelector.parse(token)
        token_serial = p11.load_module(mod).token_info(sel).name
        enroller = ca_enroller(ctx, ca, ca_pin_file, fresh, acme)
        try:
            enroller.check_profile(profile)  # before any key is made
            numbers = IdNumberSource(id_number_file)
            id_number = numbers.get() if numbers.given() or enroller.identity_required(profile) else None
            unlock_local_ca(enroller)
            params = EnrollParams(
                token_serial=token_serial, subject=subject, profile=profile, key_type=key_type.value,
                ca=enroller.location, label=label, san=tuple(san or ()), ref=fresh.ref if fresh else None,
                require_sign_only=require_sign_only,
            )
            out = run_enroll(
                params, token=sel, pin=pin_src.get(), enroller=enroller, holder=db, module=mod, on_step=step_hook(),
                id_number=id_number,
            )  # fmt: skip
        finally:
            enroller.close()
    _report([out.as_json()], json_out)


def _resume(
    ctx: typer.Context, db: Any, ca: str | None, pin_src: Any, auth_code_file: Path | None, ca_trust: Path | None,
    ca_pin_file: Path | None, acme: AcmeArgs, json_out: bool, id_number_file: Path | None = None,
) -> None:  # fmt: skip
    """``enroll --resume``: finish every unfinished enrollment (at ``ca``, when given, from now on)."""
    from ..lifecycle import SeveralCAs, relocate_all, resume_all

    total = len(db.journal_open("enroll"))
    if not total:
        console().print("No unfinished enrollment; nothing to do.")
        return
    if ca is not None:
        try:
            relocate_all(db, ca)
        except SeveralCAs as e:
            raise UsageError(join(e.message, "--ca with --resume moves enrollments of one CA. End the others first "
                                  "('tokenissue journal list').")) from e  # fmt: skip
    code = AuthCodeSource(auth_code_file, why="Resuming an enrollment at a CMP server")

    def opener(where: str, params: Any) -> Any:
        enroller = ca_enroller(ctx, where, ca_pin_file, ServerArgs(ref=params.ref, auth_code=code, trust_file=ca_trust), acme)
        try:
            unlock_local_ca(enroller)
        except BaseException:
            enroller.close()
            raise
        return enroller

    numbers = IdNumberSource(id_number_file)
    asked: list[Any] = []

    def id_number() -> Any:
        if not asked:  # asked once, for the first entry that binds it
            asked.append(numbers.get())
        return asked[0]

    tried = resume_all(
        db, open_enroller=opener, pin=pin_src.get(), module=state(ctx).module, on_step=step_hook(), id_number=id_number
    )
    results = [r.outcome.as_json() for r in tried if r.outcome is not None]
    failed = [r for r in tried if r.error is not None]
    for r in failed:
        assert r.error is not None
        hint = _absent_hint(r.journal_id, r.ca, r.params.token_serial) if isinstance(r.error, TokenNotFound) else ""
        if isinstance(r.error, KeyNotFound):
            hint = (f" Its key is no longer on the token (was the token re-initialised?): end the enrollment "
                    f"with 'tokenissue journal abandon {r.journal_id}'.")  # fmt: skip
        err_console().print(f"Enrollment {r.journal_id} (token {r.params.token_serial}): {say(r.error)}{hint}", markup=False)
    if json_out:
        rows = [{"journal_id": r.journal_id, "token_serial": r.params.token_serial, "status": "failed",
                 "error": str(r.error), "exit_code": r.error.exit_code} for r in failed if r.error is not None]  # fmt: skip
        _report([*results, *rows], True)
    else:
        _report(results, False)
    if failed:
        raise Incomplete(f"{len(failed)} of {len(tried)} unfinished enrollment(s) could not be finished; see above.")


def _absent_hint(journal_id: str, ca: str, token_serial: str) -> str:
    """What to do about an enrollment whose token is not there (it may be gone for good)."""
    command = revoke_lost_command(ca, token_serial)
    if command is None:
        return (
            f" If that token is gone for good: 'tokenissue journal abandon {journal_id}', and ask the CA's operator "
            "to revoke what it issued for it."
        )
    # The command comes last and unquoted: it is quoted for the shell already (URIs hold ';').
    return f" If that token is gone for good, this revokes its certificates and ends this enrollment: {command}"


def _report(results: list[dict[str, Any]], json_out: bool) -> None:
    if json_out:
        emit_json(results[0] if len(results) == 1 else results)
        return
    from rich.markup import escape

    for r in results:
        how = "Already enrolled" if r.get("already_done") else ("Resumed and finished" if r["resumed"] else "Enrolled")
        console().print(
            f"{how}: [bold]{escape(r['subject'])}[/] serial {r['serial']} on token '{escape(r['token'])}' "
            f"(key {escape(r['label'])}, id {r['key_id'][:16]}…), valid until {r['not_after'][:10]}."
        )
        if r.get("key_can_decrypt"):
            err_console().print(FORCED_NOTE, markup=False)


def status(
    ctx: typer.Context,
    token: Annotated[str, typer.Option("--token", "-t", help="The token: label, serial:XXXX or pkcs11: URI.", envvar="TOKENISSUE_TOKEN")],
    within: Annotated[
        str | None,
        typer.Option(
            "--within",
            help="Call a certificate 'expiring' this long before it expires; "
            f"{DURATION_HELP}. Default: 30 days or a third of its lifetime, whichever is shorter.",
        ),
    ] = None,
    pin_file: PinFileOpt = None,
    pin_env: PinEnvOpt = None,
    protected_auth: ProtectedAuthOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Every certificate on the token: days left and valid / expiring / expired / suspended / revoked.

    suspended: on hold at the CA (certificateHold), e.g. after 'revoke --reason certificate-hold'
    while the token was missing; only the CA can restore it.
    """
    from ..lifecycle import certificate_status

    with holder_state(ctx) as db, holder_token(ctx, token, pin_file, pin_env, protected_auth) as s:
        reports = certificate_status(s, db, within=parse_duration(within) if within else None, ask_ca=_ca_opener(ctx))
        label = s.info.label
    if json_out:
        emit_json([r.as_json() for r in reports])
        return
    if not reports:
        err_console().print(f"No certificates with keys on token '{label}'. Get one with 'tokenissue enroll'.", markup=False)
        return
    from rich.table import Table

    colours = {"valid": "green", "expiring": "yellow", "expired": "red", "revoked": "red", "suspended": "yellow"}
    table = Table("Label", "Subject", "Serial", "Not after", "Days left", "State")
    for r in reports:
        c = colours[r.state]
        table.add_row(plain(r.cert.label), plain(r.cert.subject), format(r.cert.serial, "x")[:16], f"{r.cert.not_after:%Y-%m-%d}", str(r.days_left), f"[{c}]{r.state}[/]")
    console().print(table)
    due = [r for r in reports if r.renew_due]
    if any(r.state is CertState.SUSPENDED for r in reports):
        console().print(
            "[yellow]A certificate is suspended[/] (on hold): it is not renewed until its CA restores it "
            "('tokenissue ca restore SERIAL' at the CA) or revokes it for good."
        )
    if any(r.state is CertState.REVOKED for r in due):
        console().print("[red]A certificate is revoked:[/] re-issue with 'tokenissue renew --rekey --key LABEL'.")
    if any(r.state in (CertState.EXPIRING, CertState.EXPIRED) for r in due):
        console().print("[yellow]Renewal is due:[/] run 'tokenissue renew --token ...'.")


def _ca_opener(ctx: typer.Context) -> Any:
    def ask(location: str, serial: int) -> Any:
        from ..enroll import open_enroller

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
            help=f"Renew certificates expiring within this time; {DURATION_HELP}. "
            "Default: 30 days or a third of the certificate's lifetime, whichever is shorter.",
        ),
    ] = None,
    rekey: Annotated[bool, typer.Option("--rekey", help="Generate a new key (the old key and certificate are removed once the new one is on the token).")] = False,
    ca: CaOpt = None,
    profile: Annotated[str | None, typer.Option("--profile", "-p", help="Profile, when tokenissue did not enroll the certificate.")] = None,
    ref: RefOpt = None,
    auth_code_file: AuthCodeFileOpt = None,
    ca_trust: CaTrustOpt = None,
    email: EmailOpt = None,
    eab_kid: EabKidOpt = None,
    eab_hmac_file: EabHmacFileOpt = None,
    challenge: ChallengeOpt = ChallengeChoice("http-01"),  # noqa: B008
    http01_address: Http01AddressOpt = "0.0.0.0:80",
    dns_hook: DnsHookOpt = None,
    acme_trust: AcmeTrustOpt = None,
    pin_file: PinFileOpt = None,
    pin_env: PinEnvOpt = None,
    protected_auth: ProtectedAuthOpt = False,
    ca_pin_file: CaPinFileOpt = None,
    require_sign_only: RequireSignOnlyOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Renew certificates before they expire (same key, or a new one with --rekey); revoked ones are re-issued with --rekey.

    At a CMP server a valid certificate is renewed with a key update request signed by its own
    key; an expired or revoked one needs the authorization code again (asked for only then).
    At an ACME server a certificate is due when the CA's renewal information (ARI) says so,
    when the server offers it; otherwise by the rule above.
    """
    from .. import p11
    from ..enroll import is_cmp_location
    from ..lifecycle import certificate_status, find_due, ref_of, renewal_params
    from ..lifecycle import enroll as run_enroll

    pin = user_pin_source(pin_file, pin_env, protected_auth).get()
    mod = state(ctx).module
    sel = p11.TokenSelector.parse(token)
    acme = AcmeArgs(
        email=email, eab_kid=eab_kid, eab_hmac_file=eab_hmac_file, challenge=challenge.value,
        http01_address=http01_address, dns_hook=dns_hook, acme_trust=acme_trust,
    )  # fmt: skip
    with holder_state(ctx) as db:
        with p11.open_token(sel, pin, module=mod) as s:
            reports = certificate_status(s, db, within=parse_duration(within) if within else None, ask_ca=_ca_opener(ctx))
            kid = s.key(p11.KeySelector.parse(key)).id if key else None
            token_serial = s.info.name
        if kid is None and within is None:
            reports = [_ari(ctx, r, acme, ca_trust) for r in reports]
        todo = find_due(reports, kid)
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
            if r.state is CertState.SUSPENDED and not is_cmp_location(ca or r.ca or ""):
                # A CMP server cannot be asked about a certificate beforehand; it refuses a key
                # update signed by one still on hold, and takes it once the CA has restored it.
                raise CertificateStateRefused(
                    f"Certificate {r.cert.serial:x} is suspended (on hold) at its CA, so it is not renewed or re-issued.",
                    state=r.state.value,
                    remedy=Remedy.ASK_RESTORE,
                    details={"serial": format(r.cert.serial, "x")},
                )
            if r.state is CertState.REVOKED and not rekey:
                raise UsageError(f"Certificate {r.cert.serial:x} is revoked; re-issue it with --rekey (a revoked key is not reused).")
            where = ca or r.ca
            prof = profile or (r.record.profile if r.record else None)
            if where is None or prof is None:
                raise UsageError(f"tokenissue did not enroll '{r.cert.label}'; give --ca and --profile to renew it.")
            cmp_ref = ref or ref_of(db, r.record)
            params = renewal_params(r, token_serial=token_serial, rekey=rekey, ca=where, profile=prof, ref=cmp_ref)
            if require_sign_only:
                params = dataclasses.replace(params, require_sign_only=True)
            code = AuthCodeSource(auth_code_file, why="Renewing an expired or revoked certificate at a CMP server")
            enroller = ca_enroller(ctx, where, ca_pin_file, ServerArgs(ref=cmp_ref, auth_code=code, trust_file=ca_trust), acme)
            try:
                unlock_local_ca(enroller)
                out = run_enroll(params, token=sel, pin=pin, enroller=enroller, holder=db, module=mod, on_step=step_hook())
            finally:
                enroller.close()
            results.append(out.as_json())
    if json_out:
        emit_json(results)
    else:
        for res in results:
            console().print(
                f"Renewed {res['replaces']} → serial {res['serial']} (key {res['label']}), valid until {str(res['not_after'])[:10]}.",
                markup=False,
            )
            if res.get("key_can_decrypt"):
                err_console().print(FORCED_NOTE, markup=False)


def _ari(ctx: typer.Context, report: Any, acme: AcmeArgs, ca_trust: Path | None) -> Any:
    """``report`` marked due when its ACME CA's renewal information (RFC 9773) says the
    suggested window has begun; unchanged for other CAs, for servers without ARI, and when
    the server cannot be asked (the lifetime rule has decided already)."""
    import dataclasses
    from datetime import UTC, datetime

    from cryptography import x509

    from ..enroll import is_acme_location

    if report.renew_due or report.ca is None or not is_acme_location(report.ca):
        return report
    try:
        enroller = ca_enroller(ctx, report.ca, None, ServerArgs(trust_file=ca_trust), acme)
        try:
            start = enroller.renewal_window_start(x509.load_der_x509_certificate(report.cert.der))
        finally:
            enroller.close()
    except TokenIssueError as e:
        err_console().print(
            f"Renewal information for {report.cert.label} is unavailable ({e}); going by the certificate's lifetime.",
            markup=False,
        )
        return report
    if start is None or datetime.now(UTC) < start:
        return report
    return dataclasses.replace(report, state=CertState.EXPIRING, renew_due=True)


def revoke(
    ctx: typer.Context,
    token: TokenOptional = None,
    key: Annotated[str | None, typer.Option("--key", "-k", help="Revoke this key's certificate(s) (token present).")] = None,
    token_serial: Annotated[
        str | None,
        typer.Option(
            "--token-serial",
            help="A LOST token's serial: revoke all its certificates at the CA, no token needed. Where serials repeat "
            "(TPM tokens), the pkcs11: URI 'journal list' and 'ca list' show for it.",
        ),
    ] = None,
    ca: CaOpt = None,
    reason: ReasonOpt = None,
    ca_trust: CaTrustOpt = None,
    acme_trust: AcmeTrustOpt = None,
    pin_file: PinFileOpt = None,
    pin_env: PinEnvOpt = None,
    protected_auth: ProtectedAuthOpt = False,
    ca_pin_file: CaPinFileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Revoke a certificate on a token, or every certificate of a lost token (by its serial).

    At a CMP server the revocation request is signed with the certificate's own key on the token.
    """
    from .. import p11
    from ..enroll import takes_registration
    from ..lifecycle import revoke_on_token
    from ._render import record_dict, revoked_lines

    if token_serial is not None:
        if ca is None:
            raise UsageError("A lost token is revoked at its CA: give --ca.")
        if takes_registration(ca):
            raise UsageError(
                "A lost token's certificates cannot be revoked over CMP, which needs each certificate's key "
                "(RFC 9483 §4.2), nor over EST, which has no revocation; ask the CA's operator to revoke them."
            )
        why = parse_reason(reason, RevocationReason.KEY_COMPROMISE)  # a lost token's keys are out of reach
        from ..ca.authority import CertificateAuthority
        from ..fleet.lost_token import revoke_lost_token

        with CertificateAuthority.open(Path(ca), module=state(ctx).module) as authority, holder_state(ctx) as db:
            # The token is said to be lost: a module that cannot even start shows none present.
            present = present_token_serials(ctx, unusable_module_is_none=True)
            done = revoke_lost_token(authority, db, token_serial, why, present=present)
        recs, ended = done.revoked, done.ended
        for u in ended:
            err_console().print(f"Ended the unfinished enrollment {u.journal_id} ({u.subject}) of the lost token.", markup=False)
    else:
        if token is None or key is None:
            raise UsageError("Give --token and --key, or --token-serial and --ca for a lost token.")
        why = parse_reason(reason, RevocationReason.UNSPECIFIED)
        with holder_state(ctx) as db, holder_token(ctx, token, pin_file, pin_env, protected_auth) as s:
            cmp = ServerArgs(trust_file=ca_trust)
            acme = AcmeArgs(acme_trust=acme_trust)  # revoked with the account key the certificate was ordered with
            recs = revoke_on_token(
                s, db, p11.KeySelector.parse(key), lambda where: ca_enroller(ctx, where, ca_pin_file, cmp, acme), why, ca
            )
    if json_out:
        emit_json([record_dict(r) for r in recs])
    elif not recs:
        console().print("Nothing was revoked: no valid certificate matched.")
    else:
        for line in revoked_lines(recs, why, one_key=token_serial is None):
            console().print(line, markup=False)
