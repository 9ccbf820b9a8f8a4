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
    confirm_or_refuse,
    console,
    emit_json,
    err_console,
    state,
    user_pin_source,
)
from ._render import plain, token_dict

if TYPE_CHECKING:
    from .. import p11
    from ..p11._check import RequiredKeyCheck

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
    extra = ("Template", "Can decrypt", "With --require-sign-only", "Verified") if probe else ()
    table = Table("Key type", "Usable", "Signature (CSRs, certificates)", *extra)
    for r in data["key_types"]:
        usable = "[green]yes[/]" if r["supported"] else f"[red]no[/]: {escape(r['reason'])}"
        cells = [r["type"], usable, escape(r["signature"] or "-")]
        if probe:
            cells += [escape(r["template"] or "-"), escape(_decrypt_cell(r)), _required_cell(r),
                      "-" if r["verified"] is None else _tri(r["verified"])]  # fmt: skip
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
        how = ""
        if key == "sign_only_keys" and f["decrypt_flag"]:
            # Not by their flags: say per key type how (the notes say why).
            parts = [(f["by_default"], "as made"), (f["with_require_sign_only"], "with --require-sign-only"),
                     (f["never"], "never")]  # fmt: skip
            how = " " + "; ".join(f"{', '.join(kts)} {what}" for kts, what in parts if kts)
        c.print(f"[bold]{text:<24}[/] {_tri(f['value']):<7} [dim]({escape(f['source'])})[/]{escape(how)}")
    for line in data["notes"]:
        c.print(f"- {escape(line)}", highlight=False)


def _tri(v: bool | None) -> str:
    return "unknown" if v is None else ("yes" if v else "no")


#: Why a key is sign-only, in the probe's "Can decrypt" column (see p11._check.SIGN_ONLY_BY).
_SIGN_ONLY_BY = {
    "flags": "no",
    "no-mechanism": "no (flag set, no mechanism)",
    "allowed-mechanisms": "no (allowed mechanisms)",
}


def _decrypt_cell(r: dict[str, Any]) -> str:
    if r["template"] is None:
        return "-"
    if r["sign_only"]:
        refused = ", refused" if (r["decrypt_test"] or "").startswith("refused") else ""
        return _SIGN_ONLY_BY.get(r["sign_only_by"] or "", "no") + refused
    mechs = r["decrypts_with"] or []
    proof = {True: ", proven", False: ", test failed", None: ""}[r["decrypt_proven"]]
    return f"yes: {', '.join(mechs)}{proof}"


def _required_cell(r: dict[str, Any]) -> str:
    """What --require-sign-only gets for this key type (probe)."""
    from rich.markup import escape

    if r["template"] is None:
        return "-"
    if r["sign_only"]:
        return "the same key"
    req = r["require_sign_only"]
    if req is None:
        return "-"
    if not req["made"]:
        return "[yellow]refused[/]"
    if req["decrypt_test"] == "decrypted":
        return "[red]still decrypts[/]"
    if not req["sign_only"]:
        return "[red]" + escape(_decrypt_cell({**req, "template": req["template"], "decrypts_with": [],
                                               "decrypt_proven": None})) + "[/]"  # fmt: skip
    # How (CKA_ALLOWED_MECHANISMS, on the tokens seen) is in the notes and --json.
    return "sign-only, decrypt refused" if (req["decrypt_test"] or "").startswith("refused") else "sign-only"


def _types(kts: Any) -> str:
    names = [k.value for k in kts]
    return ", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else "".join(names)


def _sign_only_notes(r: p11.TokenCheck) -> list[str]:
    """The notes that say which keys decrypt and what --require-sign-only does about it."""
    so = r.sign_only
    if so.value is None or not so.decrypt_flag:
        return []  # unknown, or sign-only by their flags (the finding says so)
    rows = {k.key_type: k for k in r.key_types}
    proven = r.probed and bool(r.source.get("sign_only_keys") == "probe")
    notes = []
    # What keeps each key type that is sign-only as made from decrypting, although the token set
    # CKA_DECRYPT (probed: as read back; else as the template would have it).
    groups: dict[str, list[KeyType]] = {}
    for kt in so.by_default:
        by = rows[kt].sign_only_by if proven else ("allowed-mechanisms" if kt.algorithm.value == "rsa" else "no-mechanism")
        groups.setdefault(by or "flags", []).append(kt)
    for by, why in (
        ("no-mechanism", "PKCS#11 has no EC decryption mechanism and their CKA_DERIVE is false"),
        ("allowed-mechanisms", "tokenissue pins them to signature mechanisms that cannot decrypt (CKA_ALLOWED_MECHANISMS "
         "without CKM_RSA_PKCS), and the token enforces that list"),
    ):
        if by in groups:
            tail = ""
            if by == "no-mechanism" and any(kt.algorithm.value != "ec" for kt in groups[by]):
                why = "no mechanism the token offers can use it"
            if by == "allowed-mechanisms":
                if proven:
                    allowed = sorted({m for k in groups[by] for m in (rows[k].allowed or ())})
                    tests = {t for k in groups[by] if (t := rows[k].decrypt_test)}
                    why += f": {', '.join(allowed)}"
                    if tests and all(t.startswith("refused") for t in tests):
                        why += f"; a test decryption was {' / '.join(sorted(tests)).replace('refused: ', 'refused with ')}"
                else:
                    why += " (--probe proves it with a test decryption)"
                tail = (" tokenissue signs with them; tools that sign a host-made hash with CKM_RSA_PKCS cannot use "
                        "them. See docs/tokens-and-keys.md#sign-only-keys.")  # fmt: skip
            notes.append(f"{_types(groups[by])} keys are sign-only as made: the token sets CKA_DECRYPT on them, but "
                         f"{why}.{tail}")  # fmt: skip
    decrypting = so.with_require_sign_only + so.never
    if decrypting:
        mechs = sorted({m for k in decrypting for m in (rows[k].decrypts_with or ())}) if proven else []
        if proven:
            proof = (" (PKCS#1 v1.5; proven by a test decryption)"
                     if all(rows[k].decrypt_proven for k in decrypting) else "")  # fmt: skip
        else:
            proof = " (--probe proves it with a test decryption)"
        why = ("the token offers no signature mechanism for them that cannot also decrypt (raw CKM_RSA_PKCS only), "
               "so CKA_ALLOWED_MECHANISMS cannot keep them from decrypting" if r.allowed_mechanisms
               else "the token does not keep CKA_ALLOWED_MECHANISMS")  # fmt: skip
        mechs = mechs or ["CKM_RSA_PKCS"]
        notes.append(
            f"{_types(decrypting)} keys made by default decrypt too, with {', '.join(mechs)}{proof}: the token sets "
            f"CKA_DECRYPT on them, and {why}. tokenissue keeps such keys and says so."
        )
    if so.with_require_sign_only:
        how = "CKA_ALLOWED_MECHANISMS holds only the hash-and-sign mechanisms, without CKM_RSA_PKCS"
        if proven:
            req = [rows[k].required for k in so.with_require_sign_only]
            allowed = sorted({m for q in req if q is not None for m in (q.allowed or ())})
            tests = {t for q in req if q is not None and (t := q.decrypt_test)}
            how = f"CKA_ALLOWED_MECHANISMS holds only {', '.join(allowed)}"
            if tests and all(t.startswith("refused") for t in tests):
                how += f"; a test decryption was {' / '.join(sorted(tests)).replace('refused: ', 'refused with ')}"
        notes.append(
            f"With --require-sign-only (or a CA profile's require_sign_only) {_types(so.with_require_sign_only)} keys "
            f"are made sign-only instead: {how}. tokenissue signs with them; tools that sign a host-made hash "
            "with CKM_RSA_PKCS cannot use them. See docs/tokens-and-keys.md#sign-only-keys."
        )
    if so.never:
        why = ""
        if proven:
            reasons = {q.reason for k in so.never if (q := rows[k].required) is not None and not q.made and q.reason}
            still = [k for k in so.never if (q := rows[k].required) is not None and q.decrypt_test == "decrypted"]
            if still:
                why = (f": a {_types(still)} key it made with a CKA_ALLOWED_MECHANISMS that leaves out every decryption "
                       "mechanism decrypted a test message all the same. The token does not enforce "
                       "CKA_ALLOWED_MECHANISMS; do not take any key on it for sign-only because of that list")  # fmt: skip
            elif reasons:
                why = " (" + "; ".join(sorted(reasons)) + ")"
        notes.append(f"--require-sign-only (or a CA profile's require_sign_only) refuses {_types(so.never)} keys on "
                     f"this token, which cannot make them sign-only{why}. See docs/tokens-and-keys.md#sign-only-keys.")  # fmt: skip
    return notes


def _required_dict(q: RequiredKeyCheck | None) -> dict[str, Any] | None:
    if q is None:
        return None
    return {"made": q.made, "reason": q.reason, "template": q.template, "sign_only": q.sign_only,
            "sign_only_by": q.sign_only_by,
            "allowed_mechanisms_read_back": list(q.allowed) if q.allowed is not None else None,
            "decrypt_test": q.decrypt_test, "verified": q.verified}  # fmt: skip


def check_dict(r: p11.TokenCheck) -> dict[str, Any]:
    notes = []
    if r.probed and r.certificates_stored is False:
        notes.append(f"The token refused to store a certificate ({r.certificate_error}); 'enroll' and 'cert import' "
                     "would fail at the end on it.")  # fmt: skip
    notes += _sign_only_notes(r)
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
    so = r.sign_only
    return {
        "token": token_dict(r.token),
        "library": r.library,
        "probed": r.probed,
        "key_types": [
            {"type": k.key_type.value, "supported": k.supported, "reason": k.reason, "hash": k.hash,
             "signature": k.signature, "pss": k.pss, "template": k.template,
             "refused_templates": [{"template": n, "refusal": why} for n, why in k.refused_steps],
             "sign_only": k.sign_only, "sign_only_by": k.sign_only_by, "decrypt_flag": k.decrypt_flag,
             "decrypts_with": list(k.decrypts_with) if k.decrypts_with is not None else None,
             "decrypt_proven": k.decrypt_proven, "decrypt_test": k.decrypt_test,
             "require_sign_only": _required_dict(k.required),
             "allowed_mechanisms": k.allowed_mechanisms,
             "allowed_mechanisms_read_back": list(k.allowed) if k.allowed is not None else None,
             "verified": k.verified}
            for k in r.key_types
        ],
        "findings": {
            # value: every usable key type can be had sign-only (by default, or with
            # --require-sign-only); the lists say which way; decrypt_flag: the token sets
            # CKA_DECRYPT/UNWRAP on its keys whatever the template asks (a TPM does).
            "sign_only_keys": {"value": so.value, "source": r.source["sign_only_keys"],
                               "by_default": [k.value for k in so.by_default],
                               "with_require_sign_only": [k.value for k in so.with_require_sign_only],
                               "never": [k.value for k in so.never], "decrypt_flag": so.decrypt_flag},
            "allowed_mechanisms": {"value": r.allowed_mechanisms, "source": r.source["allowed_mechanisms"]},
            "certificate_category": {"value": r.certificate_category, "source": r.source["certificate_category"]},
            "pin_counters": {"value": r.pin_counters, "source": r.source["pin_counters"], "lockout": r.lockout},
            "serials_unique": {"value": r.serials_unique, "source": r.source["serials"]},
        },
        "certificates_stored": r.certificates_stored,
        "refused_certificate_attributes": r.refused_cert_attributes,
        "leftovers": r.leftovers,
        "notes": notes,
    }  # fmt: skip


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
    current_label = None
    if token is not None:
        info = p11.load_module(mod_path).token_info(p11.TokenSelector.parse(token))
        serial = info.serial
        current_label = info.label  # serials repeat on some modules: the child matches both
        if not yes:
            confirm_or_refuse(
                f"Re-initialise token '{info.label}' (serial {info.serial})? Every key and certificate on it is erased"
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
    new_serial = p11.init_token(label, so_pin, user_pin, module=mod_path, serial=serial, current_label=current_label)
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
