"""``tokenissue cert ...``: certificates stored on the token next to their keys."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated

import typer

from ..errors import KeyNotFound, UsageError
from ._common import (
    JsonOpt,
    PinEnvOpt,
    PinFileOpt,
    ProtectedAuthOpt,
    TokenOpt,
    console,
    emit_json,
    err_console,
    holder_token,
    state,
    user_pin_source,
)
from ._render import cert_dict, plain

app = typer.Typer(help="Import, list and export certificates on a token.", no_args_is_help=True)


class ExportFormat(str, enum.Enum):
    PEM = "pem"
    DER = "der"
    P7B = "p7b"



def _is_ca(cert: object) -> bool:
    from cryptography import x509

    assert isinstance(cert, x509.Certificate)
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _cn(cert: object) -> str:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    assert isinstance(cert, x509.Certificate)
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(cns[0].value) if cns else cert.subject.rfc4514_string()


@app.command("import")
def import_cert(
    ctx: typer.Context,
    token: TokenOpt,
    file: Annotated[
        Path,
        typer.Argument(help="PEM, DER or PKCS#7 (.p7b) file with the certificate(s).", exists=True, dir_okay=False),
    ],
    key: Annotated[
        str | None,
        typer.Option(
            "--key", "-k", help="The key it certifies (label, id:HEX, pkcs11: URI). Default: found by public key."
        ),
    ] = None,
    ca_cert: Annotated[
        bool, typer.Option("--ca-cert", help="Import CA certificates (no key on the token needed).")
    ] = False,
    label: Annotated[str | None, typer.Option("--label", help="Label for CA certificates (default: their CN).")] = None,
    pin_file: PinFileOpt = None,
    pin_env: PinEnvOpt = None,
    protected_auth: ProtectedAuthOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Store a certificate on the token under its key's CKA_ID and label, after proving they match.

    A certificate that matches no key on the token is refused. CA certificates in the same file
    are stored too (as authority certificates, CKA_ID = their Subject Key Identifier).
    """
    from cryptography import x509

    from .. import p11
    from ..pkix.certs import load_certificates
    from ..pkix.proof import prove_possession

    certs = load_certificates(file.read_bytes())
    leaves = [c for c in certs if not _is_ca(c)]
    cas = [c for c in certs if _is_ca(c)]
    if ca_cert:
        if leaves:
            raise UsageError(
                f"{file} holds a certificate that is not a CA certificate; drop --ca-cert to import it with its key."
            )
    elif not leaves:
        raise UsageError(f"{file} holds only CA certificates; import them with --ca-cert.")
    if key is not None and len(leaves) != 1:
        raise UsageError("--key goes with a file holding exactly one end-entity certificate.")
    pin = user_pin_source(pin_file, pin_env, protected_auth).get()
    stored = []
    with p11.open_token(p11.TokenSelector.parse(token), pin, module=state(ctx).module) as s:
        plans = []
        for leaf in leaves:
            if key is not None:
                ksel = p11.KeySelector.parse(key)
                info = s.key(ksel)
            else:
                found = s.find_key_for(leaf.public_key())
                if found is None:
                    raise KeyNotFound(
                        f"No key on token '{s.info.label}' matches the certificate for '{_cn(leaf)}'; "
                        "a certificate is only stored next to its key (CA certificates: --ca-cert)."
                    )
                info = found
            prove_possession(s.private_key(p11.KeySelector(id=info.id)), leaf)
            plans.append((leaf, info.id, info.label, False))
        for ca in cas:
            ski = x509.SubjectKeyIdentifier.from_public_key(ca.public_key()).digest
            plans.append((ca, ski, label or _cn(ca), True))
        # All checks passed: only now write, so a refused file changes nothing on the token.
        for cert, kid, lab, trusted in plans:
            stored.append(cert_dict(s.write_certificate(cert, key_id=kid, label=lab, trusted=trusted)))
    if json_out:
        emit_json(stored)
    else:
        for c in stored:
            console().print(f"Stored certificate '{c['subject']}' under id {c['id']} label '{c['label']}'.", markup=False)


@app.command("list")
def list_certs(
    ctx: typer.Context,
    token: TokenOpt,
    pin_file: PinFileOpt = None,
    pin_env: PinEnvOpt = None,
    protected_auth: ProtectedAuthOpt = False,
    public: Annotated[
        bool, typer.Option("--no-login", help="List without logging in (certificates are public objects).")
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """List certificates with their validity and whether their key is on the token."""
    from .. import p11

    pin = None if public else user_pin_source(pin_file, pin_env, protected_auth).get()
    with p11.open_token(p11.TokenSelector.parse(token), pin, module=state(ctx).module) as s:
        rows = [cert_dict(c) for c in s.certificates()]
    if json_out:
        emit_json(rows)
        return
    if not rows:
        err_console().print("No certificates on this token.")
        return
    from rich.table import Table

    table = Table("ID", "Label", "Subject", "Not after", "Days left", "Key")
    for r in rows:
        left = r["days_left"]
        colour = "red" if left < 0 else ("yellow" if left < 30 else "green")
        table.add_row(
            r["id"],
            plain(r["label"]),
            plain(r["subject"]),
            r["not_after"].strftime("%Y-%m-%d"),
            f"[{colour}]{left}[/]",
            "CA" if r["ca"] else ("yes" if r["has_key"] else "[red]no[/]"),
        )
    console().print(table)


@app.command("export")
def export(
    ctx: typer.Context,
    token: TokenOpt,
    key: Annotated[str, typer.Option("--key", "-k", help="Whose certificate: label, id:HEX or pkcs11: URI.")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write here instead of stdout.")] = None,
    chain: Annotated[bool, typer.Option("--chain", help="Add the issuing CA certificates found on the token.")] = False,
    fmt: Annotated[
        ExportFormat, typer.Option("--format", help="pem, der (one certificate only) or p7b.")
    ] = ExportFormat.PEM,
    pin_file: PinFileOpt = None,
    pin_env: PinEnvOpt = None,
    protected_auth: ProtectedAuthOpt = False,
) -> None:
    """Export the public part — certificate and optionally its chain — e.g. for backup or a server."""
    from cryptography import x509

    from .. import p11
    from ..pkix.certs import dump_certificates

    with holder_token(ctx, token, pin_file, pin_env, protected_auth) as s:
        sel = p11.KeySelector.parse(key)
        kid = s.key(sel).id
        mine = s.certificates(key_id=kid)
        if not mine:
            raise KeyNotFound(f"Key '{sel}' has no certificate on the token.")
        leaf_obj = max(mine, key=lambda c: c.not_after)
        certs = [x509.load_der_x509_certificate(leaf_obj.der)]
        if chain:
            pool = [x509.load_der_x509_certificate(c.der) for c in s.certificates() if c.is_ca]
            while True:
                issuer = next(
                    (p for p in pool if p.subject == certs[-1].issuer and p not in certs and p != certs[-1]), None
                )
                if issuer is None or certs[-1].issuer == certs[-1].subject:
                    break
                certs.append(issuer)
    if fmt is ExportFormat.DER and len(certs) > 1:
        raise UsageError("DER holds one certificate; use --format pem or p7b with --chain.")
    data = dump_certificates(certs, fmt.value)
    if output is None:
        if fmt is not ExportFormat.PEM:
            raise UsageError("Binary formats need --output FILE.")
        typer.echo(data.decode("ascii"), nl=False)
    else:
        output.write_bytes(data)
        err_console().print(f"Wrote {len(certs)} certificate(s) to {output}.", markup=False)
