"""``tokenissue vid ...``: check a certificate's identity binding (a Korean VID).

The registration number is read as PINs are (--id-number-file, $TOKENISSUE_ID_NUMBER or a
hidden prompt), never from argv, and never printed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import UsageError
from ._common import (
    IdNumberFileOpt,
    IdNumberSource,
    JsonOpt,
    PinEnvOpt,
    PinFileOpt,
    ProtectedAuthOpt,
    TokenOptional,
    console,
    emit_json,
    holder_token,
)

app = typer.Typer(
    help="Korean identity binding (VID): check that a certificate belongs to the holder of a registration number.",
    no_args_is_help=True,
)


@app.command("verify")
def verify(
    ctx: typer.Context,
    token: TokenOptional = None,
    key: Annotated[
        str | None,
        typer.Option("--key", "-k", help="With --token: the key whose certificate to check (label, id:HEX or pkcs11: URI)."),
    ] = None,
    cert: Annotated[
        Path | None,
        typer.Option("--cert", help="Instead of a token: the certificate (PEM or DER), as a bank's server receives it."),
    ] = None,
    random_file: Annotated[
        Path | None,
        typer.Option("--random-file", help="With --cert: the holder's R, as raw octets (at least 20), as the holder's client sent it."),
    ] = None,
    id_number_file: IdNumberFileOpt = None,
    pin_file: PinFileOpt = None,
    pin_env: PinEnvOpt = None,
    protected_auth: ProtectedAuthOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Check that the certificate's VID is the one of this registration number and R.

    With --token and --key, the key's certificate and the R next to it are read from the
    token (the PIN is needed: R is private). With --cert and --random-file, the same check for a
    relying party that received them. Exit 0 when they match, 9 when they do not, 2 when the
    certificate binds no identity.
    """
    from .. import p11
    from ..identity import verify_vid, verify_vid_on_token
    from ..pkix.certs import fingerprint_sha256, load_certificates

    if (token is None) == (cert is None):
        raise UsageError("vid verify checks a token's certificate (--token and --key) or a file (--cert and --random-file).")
    numbers = IdNumberSource(id_number_file)
    if cert is not None:
        if random_file is None:
            raise UsageError("--cert needs --random-file, the R the holder's client sent.")
        try:
            certificate = load_certificates(cert.read_bytes())[0]
            random = random_file.read_bytes()
        except OSError as e:
            raise UsageError(f"Cannot read '{e.filename}': {e.strerror}.") from None
        real_name = verify_vid(certificate, numbers.get(), random)
    else:
        assert token is not None
        if key is None:
            raise UsageError("--token needs --key, the key whose certificate to check.")
        number = numbers.get()
        with holder_token(ctx, token, pin_file, pin_env, protected_auth) as s:
            certificate, real_name = verify_vid_on_token(s, p11.KeySelector.parse(key), number)
    result = {
        "match": True,
        "real_name": real_name,
        "serial": format(certificate.serial_number, "x"),
        "subject": certificate.subject.rfc4514_string(),
        "sha256": fingerprint_sha256(certificate),
    }
    if json_out:
        emit_json(result)
        return
    from rich.markup import escape

    console().print(
        f"VID matches: certificate {result['serial']} ([bold]{escape(real_name)}[/], {escape(str(result['subject']))}) "
        "belongs to the holder of this registration number."
    )
