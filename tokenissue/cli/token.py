"""``tokenissue tokens`` and ``tokenissue token ...``: find, inspect and initialise tokens."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..errors import TokenError, UsageError
from ..models import KeyType
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
    user_pin_source,
)
from ._render import plain, token_dict

if TYPE_CHECKING:
    from .. import p11

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
        # Only the types the token can make: its mechanism list and its key-size ranges (a TPM
        # has RSA key generation, but for 1024-3072 bits only).
        usable = [kt for kt in KeyType if s.capabilities.key_size_refusal(kt) is None]
    mechs = [m for m in _RELEVANT if m in names]
    key_types = []
    for prefix in ("rsa-", "ec-", "ed25519"):
        sizes = [kt.value.removeprefix(prefix) for kt in usable if kt.value.startswith(prefix)]
        if sizes:
            key_types.append(prefix + "/".join(sizes) if prefix != "ed25519" else prefix)
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


@app.command("check")
def check(
    ctx: typer.Context,
    token: TokenOpt,
    probe: Annotated[
        bool,
        typer.Option(
            "--probe",
            help="Prove each finding on the token: make, read back, use and delete a scratch key per key type "
            "and a scratch certificate (needs the user PIN; the token's contents are left as they were, and "
            "anything the token refuses to delete is named and exits 4).",
        ),
    ] = False,
    pin_file: PinFileOpt = None,
    pin_env: PinEnvOpt = None,
    protected_auth: ProtectedAuthOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Will tokenissue work on this token, and how? Key types and the signature mechanism used for each,
    sign-only keys, CKA_ALLOWED_MECHANISMS, certificate attributes, PIN try counters, serials.

    Without --probe no PIN is needed and the answers come from the token's mechanism list and what is
    known about its module; each finding says where it comes from."""
    from .. import p11

    sel = p11.TokenSelector.parse(token)
    mod = p11.load_module(state(ctx).module)
    present = mod.tokens()
    pin = user_pin_source(pin_file, pin_env, protected_auth).get() if probe else None
    with p11.open_token(sel, pin, module=state(ctx).module) as s:
        report = p11.check_token(s, present, probe=probe)
    data = check_dict(report)
    if json_out:
        emit_json(data)
    else:
        _print_check(data, report, probe)
    if report.leftovers:
        raise TokenError(
            f"The probe could not delete {len(report.leftovers)} scratch object(s) from token "
            f"'{report.token.label}': {'; '.join(report.leftovers)}. Delete them with 'tokenissue keys delete' "
            "(a new process can, where this one could not)."
        )


def _print_check(data: dict[str, Any], report: p11.TokenCheck, probe: bool) -> None:
    from rich.markup import escape
    from rich.table import Table

    c = console()
    c.print(f"Token '{escape(report.token.label)}' ({escape(report.token.manufacturer)} {escape(report.token.model)}, "
            f"module {escape(report.library)}), recorded as {escape(report.token.name)}")  # fmt: skip
    extra = ("Template", "Can decrypt", "Verified") if probe else ()
    table = Table("Key type", "Usable", "Signature (CSRs, certificates)", *extra)
    for r in data["key_types"]:
        usable = "[green]yes[/]" if r["supported"] else f"[red]no[/]: {escape(r['reason'])}"
        cells = [r["type"], usable, escape(r["signature"] or "-")]
        if probe:
            cells += [escape(r["template"] or "-"), escape(_decrypt_cell(r)), "-" if r["verified"] is None else _tri(r["verified"])]
        table.add_row(*cells)
    c.print(table)
    for key, text in (
        ("sign_only_keys", "Sign-only keys"),
        ("allowed_mechanisms", "CKA_ALLOWED_MECHANISMS"),
        ("certificate_category", "Certificate categories"),
        ("pin_counters", "PIN try counters"),
        ("serials_unique", "Unique serial"),
    ):
        f = data["findings"][key]
        c.print(f"[bold]{text:<24}[/] {_tri(f['value']):<7} [dim]({escape(f['source'])})[/]")
    for line in data["notes"]:
        c.print(f"- {escape(line)}", highlight=False)


def _tri(v: bool | None) -> str:
    return "unknown" if v is None else ("yes" if v else "no")


def _decrypt_cell(r: dict[str, Any]) -> str:
    if r["template"] is None:
        return "-"
    if r["sign_only"]:
        return "no"
    mechs = r["decrypts_with"] or []
    if not mechs:
        return "flag only (no mechanism)"
    proof = {True: ", proven", False: ", test failed", None: ""}[r["decrypt_proven"]]
    return f"yes: {', '.join(mechs)}{proof}"


def check_dict(r: p11.TokenCheck) -> dict[str, Any]:
    notes = []
    if r.probed and r.certificates_stored is False:
        notes.append(f"The token refused to store a certificate ({r.certificate_error}); 'enroll' and 'cert import' "
                     "would fail at the end on it.")  # fmt: skip
    if r.sign_only_keys is False:
        made = [k for k in r.key_types if k.template is not None and not k.sign_only]
        by_mechs: dict[tuple[tuple[str, ...], bool], list[str]] = {}
        for k in made:
            if k.decrypts_with:
                by_mechs.setdefault((k.decrypts_with, bool(k.decrypt_proven)), []).append(k.key_type.value)
        how = [
            f"{' and '.join(types)} keys decrypt with {', '.join(mechs)}"
            + (" (PKCS#1 v1.5; proven by a test decryption)" if "CKM_RSA_PKCS" in mechs and proven else "")
            for (mechs, proven), types in by_mechs.items()
        ]
        nominal = [k.key_type.value for k in made if not k.decrypts_with]
        detail = ""
        if how:
            detail += "; " + "; ".join(how)
        if nominal:
            detail += "; " + ", ".join(nominal) + " keys carry CKA_DECRYPT but the token offers no mechanism to use it"
        notes.append("The token makes signing keys that can also decrypt" + detail + ". tokenissue keeps them and reports "
                     "them; --require-sign-only (or a CA profile's require_sign_only) refuses them. See "
                     "docs/tokens-and-keys.md#sign-only-keys.")  # fmt: skip
    if r.refused_cert_attributes:
        notes.append("Certificate objects are stored without " + ", ".join("CKA_" + a for a in r.refused_cert_attributes)
                     + " (the token refuses them).")  # fmt: skip
    elif r.probed and r.certificates_stored and r.certificate_category is False:
        notes.append("The token took CKA_CERTIFICATE_CATEGORY but does not keep it: CA certificates on it are not "
                     "marked as authorities.")  # fmt: skip
    if r.pin_counters is None:
        notes.append("tokenissue has no record of this module's PIN behaviour: whether it reports tries left or "
                     "locks is unknown. A wrong PIN is tried once and never again.")  # fmt: skip
    elif not r.pin_counters:
        notes.append("The token does not report PIN tries left; "
                     + ("each wrong PIN counts against the device's dictionary-attack lockout, which then locks "
                        "every PIN on it (the SO PIN too) until its recovery time passes." if r.lockout == "device"
                        else "count wrong PINs yourself.")
                     + " A wrong PIN is tried once and never again.")  # fmt: skip
    if not r.serials_unique:
        notes.append(f"Its serial does not tell it apart; tokenissue records it as {r.token.name}. Give it a label no "
                     "other token of this model has, on any machine enrolling with the same CA: a lost-token revocation "
                     "(revoke --token-serial) revokes every certificate recorded under that name.")  # fmt: skip
    return {
        "token": token_dict(r.token),
        "library": r.library,
        "probed": r.probed,
        "key_types": [
            {"type": k.key_type.value, "supported": k.supported, "reason": k.reason, "hash": k.hash,
             "signature": k.signature, "pss": k.pss, "template": k.template,
             "refused_templates": [{"template": n, "refusal": why} for n, why in k.refused_steps],
             "sign_only": k.sign_only, "decrypts_with": list(k.decrypts_with) if k.decrypts_with is not None else None,
             "decrypt_proven": k.decrypt_proven, "allowed_mechanisms": k.allowed_mechanisms,
             "allowed_mechanisms_read_back": list(k.allowed) if k.allowed is not None else None,
             "verified": k.verified}
            for k in r.key_types
        ],
        "findings": {
            "sign_only_keys": {"value": r.sign_only_keys, "source": r.source["sign_only_keys"]},
            "allowed_mechanisms": {"value": r.allowed_mechanisms, "source": r.source["allowed_mechanisms"]},
            "certificate_category": {"value": r.certificate_category, "source": r.source["certificate_category"]},
            "pin_counters": {"value": r.pin_counters, "source": r.source["pin_counters"], "lockout": r.lockout},
            "serials_unique": {"value": r.serials_unique, "source": r.source["serials"]},
        },
        "certificates_stored": r.certificates_stored,
        "refused_certificate_attributes": r.refused_cert_attributes,
        "leftovers": r.leftovers,
        "notes": notes,
    }


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
