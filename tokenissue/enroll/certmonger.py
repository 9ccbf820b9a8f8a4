"""certmonger's CA helper contract, served by any enroller (a CA directory, a CMP server).

certmonger (``getcert add-ca -c NAME -e 'tokenissue certmonger-submit --ca ...'``) runs the
helper with the operation in ``CERTMONGER_OPERATION`` and the request in the environment, and
reads the answer from its standard output and exit status (certmonger's doc/submit.txt):

======================================  ==================================================
SUBMIT, POLL                            ``CERTMONGER_CSR`` (PEM) certified under
                                        ``CERTMONGER_CA_PROFILE`` (else the default
                                        profile); with ``CERTMONGER_CERTIFICATE`` (the
                                        certificate being renewed, when this CA issued it
                                        and it is valid) recorded as its renewal. Output:
                                        the certificate (PEM), exit 0. The same CSR asked
                                        again gets the same certificate.
IDENTIFY                                what this helper is, exit 0
FETCH-ROOTS                             the CA's root and chain as nickname/PEM blocks
                                        (a CA directory only: read from this machine, so
                                        authenticated; a remote CA: exit 6)
GET-SUPPORTED-TEMPLATES                 the profile names, one per line (a CA directory)
GET-DEFAULT-TEMPLATE                    the default profile
GET-NEW/RENEW-REQUEST-REQUIREMENTS      nothing: the CSR is all a request needs
anything else                           exit 6 (not supported)
======================================  ==================================================

Exit statuses: 0 issued, 2 rejected (the CA refused: profile, names, key), 3 unreachable (the
CA or its token or database cannot be reached now; certmonger tries again later), 4
under-configured (no CSR, no CA PIN, no such CA directory, an unexpected failure), 6 not supported. This helper never
asks certmonger to wait (1, 5): a tokenissue CA answers at once. The message for 2, 3 and 4 is
one sentence on standard output, as certmonger shows it in ``getcert list``.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ..errors import (
    CAUnavailable,
    ConfigError,
    PinError,
    TokenError,
    TokenIssueError,
    UsageError,
)
from ..inventory import InventoryUnavailable
from ..models import CertStatus
from .base import Enroller

__all__ = ["DEFAULT_ALLOWED", "DEFAULT_PROFILE", "Answer", "Exit", "run_operation"]

DEFAULT_PROFILE = "tls-server"
#: What the helper certifies unless its command line allows more.
DEFAULT_ALLOWED = frozenset({"tls-server", "tls-client"})


class Exit(enum.IntEnum):
    """certmonger's helper exit statuses (doc/submit.txt)."""

    ISSUED = 0
    WAIT = 1
    REJECTED = 2
    UNREACHABLE = 3
    UNDERCONFIGURED = 4
    WAIT_WITH_DELAY = 5
    UNSUPPORTED = 6


@dataclass(frozen=True)
class Answer:
    status: Exit
    output: str = ""


@dataclass(frozen=True)
class CADirectoryFacts:
    """What a CA on this machine can tell certmonger beyond certificates."""

    chain: list[x509.Certificate]  #: the CA certificate first, its root last
    profiles: list[str]


def run_operation(
    env: Mapping[str, str],
    open_enroller: Callable[[], Enroller],
    *,
    version: str,
    default_profile: str = DEFAULT_PROFILE,
    allowed_profiles: frozenset[str] = DEFAULT_ALLOWED,
    facts: Callable[[], CADirectoryFacts] | None = None,
) -> Answer:
    """Answer one certmonger operation; never raises (every failure is an exit status).

    ``open_enroller`` opens the CA (only SUBMIT and POLL call it); ``facts`` reads a CA
    directory's chain and profiles (None for a remote CA). Only ``allowed_profiles`` are
    offered and certified: whoever may run ``getcert request -T`` must not get a sub-CA."""
    operation = env.get("CERTMONGER_OPERATION", "SUBMIT")  # unset: SUBMIT, as certmonger suggests
    try:
        if operation in ("SUBMIT", "POLL"):
            return _submit(env, open_enroller, default_profile, allowed_profiles | {default_profile})
        if operation == "IDENTIFY":
            return Answer(Exit.ISSUED, f"tokenissue {version}\n")
        if operation in ("GET-NEW-REQUEST-REQUIREMENTS", "GET-RENEW-REQUEST-REQUIREMENTS"):
            return Answer(Exit.ISSUED, "")
        if operation == "GET-DEFAULT-TEMPLATE":
            return Answer(Exit.ISSUED, default_profile + "\n")
        if operation == "GET-SUPPORTED-TEMPLATES" and facts is not None:
            offered = allowed_profiles | {default_profile}
            return Answer(Exit.ISSUED, "".join(p + "\n" for p in facts().profiles if p in offered))
        if operation == "FETCH-ROOTS" and facts is not None:
            return Answer(Exit.ISSUED, _roots(facts().chain))
    except TokenIssueError as e:
        return _refusal(e)
    except Exception as e:  # never a traceback and exit 1, which certmonger reads as "wait"
        return Answer(Exit.UNDERCONFIGURED, f"The helper failed unexpectedly ({type(e).__name__}).\n")
    return Answer(Exit.UNSUPPORTED, "")


def _submit(
    env: Mapping[str, str], open_enroller: Callable[[], Enroller], default_profile: str, allowed: frozenset[str]
) -> Answer:
    pem = env.get("CERTMONGER_CSR", "").strip()
    if not pem:
        return Answer(Exit.UNDERCONFIGURED, "certmonger gave no signing request (CERTMONGER_CSR is empty).\n")
    try:
        csr = x509.load_pem_x509_csr(pem.encode("ascii", errors="replace"))
    except ValueError:
        return Answer(Exit.REJECTED, "The signing request is not a PEM PKCS#10 request.\n")
    profile = env.get("CERTMONGER_CA_PROFILE", "").strip() or default_profile
    if profile not in allowed:
        return Answer(Exit.REJECTED, f"Profile '{profile}' is not offered to certmonger by this CA's helper.\n")
    enroller = open_enroller()
    try:
        enroller.check_profile(profile)
        replaces = _renewed(env.get("CERTMONGER_CERTIFICATE", ""), enroller)
        # One certificate per request: the same CSR for the same renewal (or first issue) gets
        # the same answer, but renewing again with the same key is a new request.
        old = env.get("CERTMONGER_CERTIFICATE", "").strip().encode()
        seed = b"|".join([csr.public_bytes(serialization.Encoding.DER), hashlib.sha256(old).digest(), profile.encode()])
        request_id = "certmonger-" + hashlib.sha256(seed).hexdigest()[:32]
        result = enroller.request(
            csr, profile=profile, request_id=request_id, token_serial=None, key_id=None, label=None, replaces=replaces
        )
    except TokenIssueError as e:
        return _refusal(e)
    finally:
        enroller.close()
    return Answer(Exit.ISSUED, result.certificate.public_bytes(serialization.Encoding.PEM).decode("ascii"))


def _renewed(pem: str, enroller: Enroller) -> int | None:
    """The serial of the certificate certmonger is renewing, if this CA says it is valid."""
    if not pem.strip():
        return None
    try:
        old = x509.load_pem_x509_certificate(pem.strip().encode("ascii", errors="replace"))
    except ValueError:
        return None
    if old.not_valid_after_utc < datetime.now(UTC):
        return None
    return old.serial_number if enroller.status(old.serial_number) is CertStatus.VALID else None


def _roots(chain: list[x509.Certificate]) -> str:
    """FETCH-ROOTS' format: the root's nickname and PEM; then, when there are chain
    certificates (an intermediate CA) and no other roots, two blank lines and theirs."""

    def block(cert: x509.Certificate) -> str:
        cns = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        nickname = str(cns[0].value) if cns else cert.subject.rfc4514_string()
        return nickname + "\n" + cert.public_bytes(serialization.Encoding.PEM).decode("ascii")

    root, intermediates = chain[-1], chain[:-1]
    out = block(root)
    if intermediates:
        out += "\n\n" + "\n".join(block(c) for c in intermediates)
    return out


def _refusal(e: TokenIssueError) -> Answer:
    message = e.message.rstrip() + "\n"
    if isinstance(e, (CAUnavailable, TokenError, InventoryUnavailable)):
        return Answer(Exit.UNREACHABLE, message)  # certmonger asks again later
    if isinstance(e, (ConfigError, PinError, UsageError)):
        return Answer(Exit.UNDERCONFIGURED, message)
    return Answer(Exit.REJECTED, message)
