"""``tokenissue certmonger-submit``: certmonger's CA helper for a tokenissue CA directory.

    getcert add-ca -c tokenissue -e 'tokenissue certmonger-submit --ca /srv/ca --ca-pin-file /etc/tokenissue/ca-pin'

The contract (operations, exit statuses) is in :mod:`tokenissue.enroll.certmonger`; this is the
skin that reads certmonger's environment and prints the answer.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from .. import __version__
from ._common import CaPinFileOpt, ca_pin_source, state


def certmonger_submit(
    ctx: typer.Context,
    ca: Annotated[Path, typer.Option("--ca", help="The CA directory on this machine that certifies certmonger's requests.")],
    profile: Annotated[str, typer.Option("--profile", help="Profile for requests that name none (getcert request -T PROFILE names one).")] = "tls-server",
    allow_profile: Annotated[list[str] | None, typer.Option("--allow-profile", help="A profile certmonger may ask for (repeat for more). Default: tls-server and tls-client, plus --profile; never offer a CA profile such as sub-ca to every getcert user.")] = None,
    ca_pin_file: CaPinFileOpt = None,
) -> None:
    """certmonger's CA helper: certmonger runs it with CERTMONGER_OPERATION and the request in its
    environment, and reads the certificate (or the reason) from its output and exit status:
    0 issued, 2 rejected, 3 CA unreachable (certmonger retries), 4 under-configured, 6 not supported.
    See docs/certmonger.md."""
    from ..ca.authority import CertificateAuthority
    from ..enroll.certmonger import DEFAULT_ALLOWED, CADirectoryFacts, run_operation
    from ..enroll.local import LocalCA

    module = state(ctx).module

    def open_enroller() -> LocalCA:
        enroller = LocalCA(ca, ca_pin=None, module=module)
        enroller.ca_pin_provider = lambda: ca_pin_source(ca_pin_file).get()
        return enroller

    def facts() -> CADirectoryFacts:
        with CertificateAuthority.open(ca, module=module) as authority:
            chain, names = authority.chain(), list(authority.profiles)
        return CADirectoryFacts(chain=chain, profiles=names)

    allowed = frozenset(allow_profile) if allow_profile else DEFAULT_ALLOWED
    answer = run_operation(
        os.environ, open_enroller, version=__version__, default_profile=profile, allowed_profiles=allowed, facts=facts
    )
    sys.stdout.write(answer.output)
    sys.stdout.flush()
    raise typer.Exit(int(answer.status))
