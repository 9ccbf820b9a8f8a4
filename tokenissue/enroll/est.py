"""An EST server (RFC 7030) as the holder sees it: ``est+https://HOST[:PORT]``.

Enrollment is ``simpleenroll``: the CSR (signed on the token) goes base64 over HTTPS with the
registration's reference and authorization code as HTTP Basic credentials (§3.2.3); the answer
is a certs-only CMS with the certificate. The chain comes from ``cacerts`` on the same
verified TLS connection, and the certificate must verify against it (and end in a ``--ca-trust``
root when one is given). The TLS server certificate is checked against ``--ca-trust`` when
given, else the system's trust store.

Not done over EST, each with one sentence: renewal (``simplereenroll`` is authorized by TLS
client authentication with the current certificate's key, which lives on the token, and
Python's TLS cannot sign with a token key; curl with OpenSSL's PKCS#11 engine can, see
docs/est.md), revocation and status (EST has neither).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs7

from ..credentials import IdentityProof
from ..errors import CANotReached, CAOutcomeUnknown, CAUnavailable, Remedy, RequestRejected, UsageError
from ..models import CertStatus, RevocationReason
from ..pkix.certs import verify_chain
from ..publickeys import same_public_key
from .base import EnrollResult, canonical_auth_code, tls_verify

if TYPE_CHECKING:
    from .base import AuthCodeSource

__all__ = ["ESTEnroller"]

CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 60.0
_MAX_ANSWER = 256 * 1024


class ESTEnroller:
    """See the module's description. ``location`` is ``est+https://HOST[:PORT][/LABEL]``."""

    needs_ca_pin = False

    def __init__(
        self,
        location: str,
        *,
        ref: str | None = None,
        auth_code: AuthCodeSource | None = None,
        trust: Sequence[x509.Certificate] = (),
    ) -> None:
        url = httpx.URL(location.removeprefix("est+"))
        if url.scheme != "https" or not url.host:
            raise UsageError(f"'{location}' is not an EST URL like est+https://HOST:PORT (EST needs TLS).")
        label = url.path.strip("/")
        self.location = location
        self.base = str(url.copy_with(path="/.well-known/est/" + (label + "/" if label else ""), query=None))
        self._ref, self._auth_code, self._trust = ref, auth_code, list(trust)
        verify = tls_verify(self._trust)
        timeout = httpx.Timeout(connect=CONNECT_TIMEOUT, read=READ_TIMEOUT, write=READ_TIMEOUT, pool=CONNECT_TIMEOUT)
        self._client = httpx.Client(timeout=timeout, verify=verify, follow_redirects=False)

    # -- the Enroller interface -------------------------------------------------------------
    def request(
        self,
        csr: x509.CertificateSigningRequest,
        *,
        profile: str,
        request_id: str,
        token_serial: str | None,
        key_id: bytes | None,
        label: str | None,
        replaces: int | None = None,
        identity: IdentityProof | None = None,
    ) -> EnrollResult:
        """simpleenroll with the reference and code; the CA's registration decides the profile."""
        del profile, request_id, token_serial, key_id, label, replaces  # the registration fixes them
        if identity is not None:
            raise UsageError("EST cannot carry the registration number confidentially; enroll over CMP.")
        if not self._ref:
            raise UsageError(f"Enrolling at the EST server {self.base} needs the reference the CA gave with the "
                             "authorization code.", remedy=Remedy.GIVE_REF)  # fmt: skip
        code = self._auth_code() if callable(self._auth_code) else self._auth_code
        if code is None:
            raise UsageError(f"Enrolling at the EST server {self.base} needs the authorization code.",
                             remedy=Remedy.GIVE_AUTH_CODE)  # fmt: skip
        body = base64.encodebytes(csr.public_bytes(serialization.Encoding.DER))
        answer = self._call(
            "POST", "simpleenroll", content=body, headers={"Content-Type": "application/pkcs10"},
            auth=httpx.BasicAuth(self._ref, canonical_auth_code(code).reveal()),
        )  # fmt: skip
        certs = _certs_only(answer, self.base)
        mine = [c for c in certs if same_public_key(c.public_key(), csr.public_key())]
        if len(mine) != 1:
            raise CAUnavailable(f"The EST server at {self.base} answered without a certificate for this request's key.")
        chain = _certs_only(self._call("GET", "cacerts"), self.base)
        try:
            path = verify_chain(mine[0], [*chain, *self._trust])
        except RequestRejected as e:
            raise CAUnavailable(f"The certificate from the EST server at {self.base} does not verify: {e.message}") from None
        if self._trust and not any(path[-1] == t for t in self._trust):
            raise CAUnavailable(f"The certificate from the EST server at {self.base} does not end in a root you trust.",
                                remedy=Remedy.GIVE_CA_TRUST)  # fmt: skip
        return EnrollResult(mine[0], path[1:])

    def identity_required(self, profile: str) -> bool:
        return False  # the server refuses profiles that need it (EST cannot carry the number)

    def check_profile(self, profile: str) -> None:
        return None  # the registration fixes the profile; the server decides

    def sign_only_required(self, profile: str) -> bool:
        return False

    def renew(self, csr: x509.CertificateSigningRequest, **kw: Any) -> EnrollResult:
        raise UsageError(
            "Renewing over EST needs TLS client authentication with the token key, which this client cannot do; "
            "renew over CMP at the same CA (cmp+https://HOST:PORT/pkix/), or with curl and OpenSSL's PKCS#11 engine "
            "(docs/est.md)."
        )

    def revoke(self, serial: int, reason: RevocationReason, *, cert: x509.Certificate | None = None, key: Any = None) -> None:
        raise UsageError(f"EST has no revocation; revoke certificate {serial:x} over CMP or ask the CA's operator.")

    def status(self, serial: int) -> CertStatus | None:
        return None  # EST has no status request

    def close(self) -> None:
        self._client.close()

    # -- HTTP ------------------------------------------------------------------------------
    def _call(self, method: str, op: str, **kw: Any) -> bytes:
        url = self.base + op
        try:
            with self._client.stream(method, url, **kw) as response:
                body = b""
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > _MAX_ANSWER:
                        raise CAUnavailable(f"The EST server at {self.base} sent an answer larger than {_MAX_ANSWER} bytes.")
        except httpx.ConnectError as e:
            if "CERTIFICATE_VERIFY_FAILED" in str(e):
                raise CANotReached(f"The TLS certificate of the EST server at {self.base} is not trusted.",
                                   remedy=Remedy.GIVE_CA_TRUST) from e  # fmt: skip
            raise CANotReached(f"Cannot reach the EST server at {self.base}; check the URL and that the server runs.") from e
        except httpx.ConnectTimeout as e:
            raise CANotReached(f"Cannot reach the EST server at {self.base}: no connection in time.") from e
        except httpx.TransportError as e:
            raise CAOutcomeUnknown(f"The EST server at {self.base} did not answer; run the same command again "
                                   "(the same CSR gets the same certificate).") from e  # fmt: skip
        if response.status_code == 200:
            return body
        text = _sentence(body) or f"HTTP {response.status_code}"
        if response.status_code in (400, 401, 403, 404, 415):
            raise RequestRejected(f"The EST server at {self.base} refused the request: {text}")
        raise CAUnavailable(f"The EST server at {self.base} could not answer (HTTP {response.status_code}): {text}")


def _certs_only(body: bytes, where: str) -> list[x509.Certificate]:
    try:
        certs = pkcs7.load_der_pkcs7_certificates(base64.b64decode(b"".join(body.split()), validate=True))
    except (binascii.Error, ValueError):
        raise CAUnavailable(f"The EST server at {where} answered with something that is not a certs-only CMS.") from None
    return list(certs)


def _sentence(body: bytes) -> str:
    """The server's error text, printable characters only and at most one line of it."""
    text = body.decode("utf-8", errors="replace").strip().splitlines()
    line = text[0] if text else ""
    return "".join(ch for ch in line if ch.isprintable())[:300]
