"""Enrollment over ACME (RFC 8555) with certbot's ``acme`` library; the key stays on the token.

``--ca acme+https://HOST/PATH`` names the directory ``https://HOST/PATH``. The library takes a
CSR (``new_order(csr_pem)``), which is what the token gives: the certificate key is never
handed to it. What this module adds around the library:

* **account** — an EC P-256 account key in ``STATE_DIR/acme/<hash of the directory URL>.key``
  (mode 0600, created on first use, never printed or journaled). An existing account is looked
  up by its key; a new one is registered with ``email`` and, when the server requires it, an
  external account binding (the HMAC key is a :class:`~tokenissue.credentials.Secret`).
* **challenges** — http-01 from a tiny built-in HTTP responder bound to ``http01_address``
  only while the order is being validated, or dns-01 through a user command (``dns_hook``)
  run with ``TOKENISSUE_ACME_ACTION=present|cleanup`` and the record in the environment.
* **polling** — the library sleeps a whole second between polls; this module polls the
  authorizations and the order itself, from 0.2 s doubling to at most 5 s, honouring
  Retry-After, within an overall deadline, and reports progress through a callback.
* **resuming** — the order URL is kept in ``STATE_DIR/acme/orders/`` under the request ID, so
  asking again with the same request ID (a resumed enrollment) picks up the same order and
  its certificate instead of ordering a second one — also after the certificate was issued,
  should the process die before the journal records it (the file is kept for 30 days).
* **bad nonces** — retried up to 8 times (the library retries once).
* **chain** — ACME servers send the chain without its root; the root is found among the
  ``roots`` given (``--ca-trust``) or the system's trust store and appended, and the
  certificate must certify the CSR's key.
* **renewal info** — :meth:`ACMEEnroller.renewal_window_start` reads RFC 9773 ARI when the
  directory offers ``renewalInfo``.

Exceptions (all :class:`tokenissue.errors.CAError`, exit status 6)::

    RequestRejected   the server refused (a problem document: its detail is in the message),
                      a challenge failed (the domain and the CA's detail), the order became
                      invalid, the certificate does not certify the CSR's key
    CAUnavailable     cannot connect, TLS not trusted, rate limited (with Retry-After), server
                      error, the deadline passed, the chain's root is unknown

requests, josepy and acme exceptions are translated at this boundary with the cause chained.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import hashlib
import http.server
import itertools
import json
import os
import shlex
import ssl
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final, cast

import requests
from acme import challenges, client, errors, messages
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from josepy.errors import DeserializationError
from josepy.jwa import ES256
from josepy.jwk import JWKEC

from .. import hooks
from ..credentials import IdentityProof
from ..errors import CAUnavailable, Remedy, RequestRejected, UsageError
from ..models import CertStatus, RevocationReason
from ..pkix.certs import load_certificates
from ..pkix.reasons import reason_code
from ..publickeys import same_public_key
from .acme_options import ACMEOptions, Challenge, directory_url
from .base import EnrollResult, retry_after_seconds

__all__ = ["ACMEEnroller", "renewal_info_id"]

FIRST_POLL: Final = 0.2
MAX_POLL: Final = 5.0
NETWORK_TIMEOUT: Final = 30
BAD_NONCE_RETRIES: Final = 8
ORDER_KEEP: Final = datetime.timedelta(days=30)
USER_AGENT: Final = "tokenissue"

# Problem types that say the server, not the request, is the trouble (RFC 8555 §6.7).
_UNAVAILABLE: Final = frozenset({"serverInternal", "badNonce"})


def renewal_info_id(cert: x509.Certificate) -> str:
    """The ARI certificate identifier (RFC 9773 §4.1): base64url(AKI keyIdentifier) "."
    base64url(DER serial number content octets), both unpadded."""
    try:
        aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
    except x509.ExtensionNotFound:
        aki = None
    if aki is None:
        raise UsageError("The certificate has no authority key identifier, which renewal info needs.")
    n = cert.serial_number
    serial = n.to_bytes(n.bit_length() // 8 + 1, "big")  # a leading 0 octet keeps it positive
    b64 = base64.urlsafe_b64encode
    return f"{b64(aki).decode().rstrip('=')}.{b64(serial).decode().rstrip('=')}"


class _Responder(http.server.ThreadingHTTPServer):
    """Serves /.well-known/acme-challenge/TOKEN → key authorization, and nothing else."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int]) -> None:
        self.answers: dict[str, bytes] = {}
        super().__init__(address, _ResponderHandler)


class _ResponderHandler(http.server.BaseHTTPRequestHandler):
    server: _Responder

    def do_GET(self) -> None:
        body = self.server.answers.get(self.path)
        self.send_response(200 if body is not None else 404)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body or b"")))
        self.end_headers()
        if body:
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return None  # The validator's requests are nobody's business on stderr.


class _Network(client.ClientNetwork):
    # The library retries badNonce once; a server may refuse any nonce (RFC 8555 §6.5), several in a row.
    # Overriding post() around the private _post_once is the only way to retry more: acme 5.x
    # takes no retry count, and _post_once is the one per-attempt call (post() itself is
    # "try once, on badNonce once more"). tests/interop/test_acme_resume.py runs it against a
    # Pebble that refuses 30 % of nonces (PEBBLE_WFE_NONCEREJECT), so a change in acme shows.
    def post(self, *args: Any, **kwargs: Any) -> requests.Response:
        for _ in range(BAD_NONCE_RETRIES):
            try:
                return self._post_once(*args, **kwargs)
            except messages.Error as e:
                if e.code != "badNonce":
                    raise
        return self._post_once(*args, **kwargs)


class ACMEEnroller:
    """An ACME server as a :class:`~tokenissue.enroll.base.Enroller`. Nothing touches the network
    before :meth:`check_profile`, :meth:`request` or :meth:`revoke` needs it."""

    needs_ca_pin = False

    def __init__(self, location: str, options: ACMEOptions) -> None:
        self.location = location
        self.url = directory_url(location)
        self.options = options
        self._client: client.ClientV2 | None = None
        self._jwk: JWKEC | None = None
        self._retry_after: str | None = None
        digest = hashlib.sha256(self.url.encode()).hexdigest()[:24]
        self._dir = options.state_dir / "acme"
        self._key_file = self._dir / f"{digest}.key"

    # -- the Enroller protocol -----------------------------------------------------------
    def identity_required(self, profile: str) -> bool:
        """ACME certifies domain names only: it never binds a person's registration number."""
        del profile
        return False

    def sign_only_required(self, profile: str) -> bool:
        """An ACME CA cannot see the key's attributes; the holder's --require-sign-only applies."""
        del profile
        return False

    def check_profile(self, profile: str) -> None:
        """The CA decides the profile; this connects and finds or registers the account now, so
        that an unreachable server, an untrusted TLS certificate or a missing external account
        binding are reported before a key is generated. For http-01 the responder's address
        is tried too."""
        del profile
        self._connect()
        if self.options.challenge is Challenge.HTTP_01:
            self._start_responder().server_close()
        elif not self.options.dns_hook:
            raise UsageError("dns-01 needs a hook, the command that publishes the TXT record.", remedy=Remedy.GIVE_DNS_HOOK)

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
        del profile, token_serial, key_id, label, replaces
        if identity is not None:
            raise UsageError("ACME has no way to give the CA a registration number; enroll at a CMP server or a local CA.")
        acme = self._connect()
        started = time.monotonic()
        deadline = started + self.options.timeout
        csr_pem = csr.public_bytes(serialization.Encoding.PEM)
        order = self._resume_order(acme, request_id, csr_pem)
        if order is None:
            with self._translate("the new order"):
                order = acme.new_order(csr_pem)
            self._save_order(request_id, str(order.uri))
            names = ", ".join(str(a.body.identifier.value) for a in order.authorizations)
            self.options.progress(f"ACME: order placed for {names}.")
        if order.body.status == messages.STATUS_PENDING:
            self._authorize(acme, order, deadline)
        body = self._finalize(acme, order, deadline)
        with self._translate("the certificate download"):
            pem = self._post_as_get(acme, str(body.certificate)).text
        certs = load_certificates(pem.encode())
        leaf, chain = certs[0], certs[1:]
        if not same_public_key(leaf.public_key(), csr.public_key()):
            raise RequestRejected("The ACME server issued a certificate for another key than the CSR's; it is not used.")
        chain = self._complete_chain(leaf, chain)
        self.options.progress(f"ACME: certificate issued in {time.monotonic() - started:.1f} s.")
        # The order file is kept: a crash before the journal records this certificate resumes
        # with the same request ID, and must fetch it from this order rather than order again.
        return EnrollResult(leaf, chain)

    def revoke(
        self, serial: int, reason: RevocationReason, *, cert: x509.Certificate | None = None, key: Any = None
    ) -> None:
        """Revoke with the account key (the account that ordered the certificate)."""
        del key
        if cert is None or cert.serial_number != serial:
            raise UsageError("Revoking at an ACME server needs the certificate itself (it is on the token).")
        if reason is RevocationReason.CERTIFICATE_HOLD:
            # RFC 8555 §7.6 has no way back: a hold asked of an ACME CA would be a revocation
            # for good that the holder's records called a suspension.
            raise UsageError(
                "An ACME CA cannot suspend a certificate, only revoke it for good; give another reason."
            )
        acme = self._connect()
        with self._translate("the revocation"):
            acme.revoke(cert, reason_code(reason))

    def status(self, serial: int) -> CertStatus | None:
        del serial
        return None  # ACME has no status query; the holder's record has to do.

    def close(self) -> None:
        if self._client is not None:
            self._client.net.session.close()
            self._client = None

    def __enter__(self) -> ACMEEnroller:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- renewal information (RFC 9773) --------------------------------------------------
    def renewal_window_start(self, cert: x509.Certificate) -> datetime.datetime | None:
        """When the CA suggests renewing ``cert`` (its ARI suggestedWindow.start), or None when
        the directory offers no renewalInfo. Read with an unauthenticated GET, as ARI is.

        Not certbot's ``ClientV2.renewal_time``: it answers with a random moment inside the
        window, drawn anew on each call, so ``status`` would say "due" on one run and not on the
        next; tokenissue renews from the window's start, a moment every run agrees on. The
        fetch and the parsing are acme's own (``net.get``, ``messages.RenewalInfo``).
        """
        acme = self._connect(account=False)
        try:
            base = acme.directory["renewalInfo"]
        except KeyError:
            return None
        with self._translate("the renewal information"):
            resp = acme.net.get(f"{str(base).rstrip('/')}/{renewal_info_id(cert)}", content_type="application/json")
            info = messages.RenewalInfo.from_json(resp.json())
        start: datetime.datetime = info.suggested_window.start
        return start if start.tzinfo else start.replace(tzinfo=datetime.UTC)

    # -- connection and account ------------------------------------------------------------
    def _connect(self, *, account: bool = True) -> client.ClientV2:
        if self._client is not None and (not account or self._client.net.account is not None):
            return self._client
        if self._client is None:
            self._jwk = JWKEC(key=self._account_key())
            # verify_ssl goes to requests as ``verify``, which also takes a CA bundle path.
            verify = cast(bool, str(self.options.tls_trust)) if self.options.tls_trust else True
            net = _Network(
                self._jwk, alg=ES256, verify_ssl=verify, user_agent=USER_AGENT, timeout=NETWORK_TIMEOUT
            )
            net.session.hooks["response"].append(self._remember_retry_after)
            with self._translate("the directory"):
                directory = client.ClientV2.get_directory(self.url, net)
            self._client = client.ClientV2(directory, net)
        if account:
            self._register(self._client)
        return self._client

    def _remember_retry_after(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        # The library's errors drop the headers; a rate limit's Retry-After is worth telling.
        self._retry_after = response.headers.get("Retry-After")

    def _register(self, acme: client.ClientV2) -> None:
        assert self._jwk is not None
        with self._translate("the account lookup"):
            try:
                acme.new_account(messages.NewRegistration(only_return_existing=True))
            except errors.ConflictError as e:
                # 200 with Location: this key's account exists; use it.
                acme.net.account = messages.RegistrationResource(uri=e.location, body=messages.Registration())
                return
            except messages.Error as e:
                if e.code != "accountDoesNotExist":
                    raise
        eab = None
        if acme.external_account_required() and self.options.eab is None:
            raise RequestRejected(
                f"The ACME server at {self.url} requires an external account binding.", remedy=Remedy.GIVE_EAB
            )
        if self.options.eab is not None:
            try:
                eab = messages.ExternalAccountBinding.from_data(
                    account_public_key=self._jwk.public_key(),
                    kid=self.options.eab.kid,
                    hmac_key=self.options.eab.hmac_key.reveal(),
                    directory=acme.directory,
                )
            except (ValueError, TypeError) as e:
                raise UsageError(
                    "The external account binding's HMAC key is not base64url.", remedy=Remedy.CHECK_EAB_HMAC
                ) from e
        reg = messages.NewRegistration.from_data(
            email=self.options.email, terms_of_service_agreed=True, external_account_binding=eab
        )
        with self._translate("the account registration"):
            acme.new_account(reg)
        self.options.progress(f"ACME: account registered at {self.url}.")

    def _account_key(self) -> ec.EllipticCurvePrivateKey:
        """This directory's account key, made on first use. It is a software key by design: it
        only signs ACME requests, and must not cost a token login or PIN on every poll."""
        self._dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            st = self._key_file.stat()
        except FileNotFoundError:
            key = ec.generate_private_key(ec.SECP256R1())
            pem = key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            tmp = self._key_file.with_suffix(f".tmp{os.getpid()}")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(pem)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self._key_file)
            (self._dir / f"{self._key_file.stem}.url").write_text(self.url + "\n")
            return key
        if st.st_mode & 0o077:
            raise UsageError(f"The ACME account key '{self._key_file}' is readable by others; chmod 600 it first.")
        loaded = serialization.load_pem_private_key(self._key_file.read_bytes(), password=None)
        if not isinstance(loaded, ec.EllipticCurvePrivateKey):
            raise UsageError(f"The ACME account key '{self._key_file}' is not an EC key.")
        return loaded

    # -- orders --------------------------------------------------------------------------
    def _order_file(self, request_id: str) -> Path:
        return self._dir / "orders" / (hashlib.sha256(f"{self.url} {request_id}".encode()).hexdigest()[:32] + ".json")

    def _save_order(self, request_id: str, url: str) -> None:
        f = self._order_file(request_id)
        f.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        oldest = time.time() - ORDER_KEEP.total_seconds()
        for old in f.parent.glob("*.json"):  # orders of long-finished enrollments
            with contextlib.suppress(OSError):
                if old.stat().st_mtime < oldest:
                    old.unlink()
        f.write_text(json.dumps({"order": url}))

    def _resume_order(self, acme: client.ClientV2, request_id: str, csr_pem: bytes) -> messages.OrderResource | None:
        """The order an earlier run placed for ``request_id``, if it can still lead to the
        certificate (pending, ready, processing or valid); else None, and a new one is placed."""
        try:
            url = str(json.loads(self._order_file(request_id).read_text())["order"])
        except (OSError, ValueError, KeyError):
            return None
        try:
            with self._translate("the earlier order"):
                body = messages.Order.from_json(self._post_as_get(acme, url).json())
                if body.status == messages.STATUS_INVALID:
                    return None
                authzs = [
                    messages.AuthorizationResource(
                        body=messages.Authorization.from_json(self._post_as_get(acme, a).json()), uri=a
                    )
                    for a in body.authorizations
                ]
        except RequestRejected:
            return None  # expired or unknown: order afresh
        self.options.progress(f"ACME: resuming the order placed earlier ({body.status.name}).")
        return messages.OrderResource(body=body, uri=url, authorizations=authzs, csr_pem=csr_pem)

    def _post_as_get(self, acme: client.ClientV2, url: str) -> requests.Response:
        response: requests.Response = acme.net.post(url, None, new_nonce_url=acme.directory["newNonce"])
        return response

    # -- challenges ------------------------------------------------------------------------
    def _authorize(self, acme: client.ClientV2, order: messages.OrderResource, deadline: float) -> None:
        todo = [a for a in order.authorizations if a.body.status == messages.STATUS_PENDING]
        if not todo:
            return
        want = self.options.challenge.value
        picked = []
        for authz in todo:
            domain = self._domain(authz)
            challb = next((c for c in authz.body.challenges if c.chall.typ == want), None)
            if challb is None:
                offered = ", ".join(sorted({c.chall.typ for c in authz.body.challenges})) or "none"
                raise RequestRejected(f"The ACME server offers no {want} challenge for {domain} (it offers: {offered}).")
            picked.append((authz, challb, domain))
        assert self._jwk is not None
        if self.options.challenge is Challenge.HTTP_01:
            responder = self._start_responder()
            thread = threading.Thread(target=responder.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
            thread.start()
            try:
                for _, challb, _ in picked:
                    chall = cast(challenges.HTTP01, challb.chall)
                    responder.answers[chall.path] = chall.validation(self._jwk).encode()
                self._answer_and_wait(acme, picked, deadline)
            finally:
                responder.shutdown()
                responder.server_close()
                thread.join(timeout=5)
            return
        published = []
        try:
            for _, challb, domain in picked:
                chall01 = cast(challenges.DNS01, challb.chall)
                # RFC 8555 §8.4: the record of "*.example.org" is _acme-challenge.example.org.
                record = (chall01.validation_domain_name(domain.removeprefix("*.")), chall01.validation(self._jwk))
                self.options.progress(f"ACME: publishing the TXT record {record[0]} (dns-01).")
                published.append((domain, *record))
                self._dns_hook("present", domain, *record)
            self._answer_and_wait(acme, picked, deadline)
        finally:
            for domain, name, value in published:
                with contextlib.suppress(RequestRejected):
                    self._dns_hook("cleanup", domain, name, value)

    @staticmethod
    def _domain(authz: messages.AuthorizationResource) -> str:
        name = str(authz.body.identifier.value)
        return f"*.{name}" if authz.body.wildcard else name

    def _start_responder(self) -> _Responder:
        host, port = self.options.http01_address
        try:
            return _Responder((host, port))
        except OSError as e:
            raise UsageError(
                f"Cannot listen on {host}:{port} for the http-01 challenge ({e.strerror}).",
                remedy=Remedy.HTTP_01_ADDRESS,
            ) from e

    def _dns_hook(self, action: str, domain: str, name: str, value: str) -> None:
        assert self.options.dns_hook is not None
        extra = {
            "TOKENISSUE_ACME_ACTION": action,
            "TOKENISSUE_ACME_DOMAIN": domain.removeprefix("*."),
            "TOKENISSUE_ACME_TXT_NAME": name,
            "TOKENISSUE_ACME_TXT_VALUE": value,
        }
        try:
            # The hook's output goes to stderr, so that --json output stays clean.
            proc = hooks.run(  # the holder's own command, with no secret in its environment
                shlex.split(self.options.dns_hook), extra_env=extra, stdout=sys.stderr, timeout=self.options.timeout
            )
        except (OSError, subprocess.TimeoutExpired, ValueError) as e:
            raise RequestRejected(f"The DNS hook command could not run for {domain} ({action}): {e}.") from e
        if proc.returncode != 0:
            raise RequestRejected(f"The DNS hook command failed for {domain} ({action}, exit status {proc.returncode}).")

    def _answer_and_wait(self, acme: client.ClientV2, picked: list[Any], deadline: float) -> None:
        assert self._jwk is not None
        for _, challb, domain in picked:
            self.options.progress(f"ACME: validating {domain} ({challb.chall.typ}).")
            with self._translate(f"the {challb.chall.typ} challenge for {domain}"):
                acme.answer_challenge(challb, challb.chall.response(self._jwk))
        for authz, challb, domain in picked:

            def poll(authz: messages.AuthorizationResource = authz) -> tuple[str, requests.Response, Any]:
                updated, response = acme.poll(authz)
                return updated.body.status.name, response, updated

            final = self._wait(poll, {"valid", "invalid", "deactivated", "expired", "revoked"}, f"validation of {domain}", deadline)[2]
            if final.body.status != messages.STATUS_VALID:
                detail = next((c.error for c in final.body.challenges if c.error is not None), None)
                why = _problem_text(detail) if detail is not None else f"the authorization is {final.body.status.name}"
                raise RequestRejected(f"The ACME server could not validate {domain} by {challb.chall.typ}: {why}.")

    # -- finalization and polling ---------------------------------------------------------
    def _finalize(self, acme: client.ClientV2, order: messages.OrderResource, deadline: float) -> messages.Order:
        url = str(order.uri)

        def poll() -> tuple[str, requests.Response, messages.Order]:
            response = self._post_as_get(acme, url)
            body = messages.Order.from_json(response.json())
            return body.status.name, response, body

        with self._translate("the order"):
            status, _, body = poll()
            if status in ("pending", "ready"):
                if status == "pending":
                    status, _, body = self._wait(poll, {"ready", "invalid", "valid", "processing"}, "the order", deadline)
                if status == "ready":
                    acme.begin_finalization(order)
                    self.options.progress("ACME: order finalized with the token-signed CSR.")
            body = self._wait(poll, {"valid", "invalid"}, "the certificate", deadline)[2]
        if body.status == messages.STATUS_INVALID or body.certificate is None:
            why = _problem_text(body.error) if body.error is not None else "no reason given"
            raise RequestRejected(f"The ACME server refused the order: {why}.")
        return cast(messages.Order, body)

    def _wait(self, poll: Callable[[], tuple[str, requests.Response, Any]], done: set[str], what: str, deadline: float) -> Any:
        """Poll until the status is in ``done``: first after 0.2 s, doubling up to 5 s, or as
        Retry-After says, never past the deadline. Returns what ``poll`` returned last."""
        delay = FIRST_POLL
        while True:
            with self._translate(what):
                result = poll()
            if result[0] in done:
                return result
            now = time.monotonic()
            if now >= deadline:
                raise CAUnavailable(
                    f"The ACME server did not finish {what} within {self.options.timeout:.0f} s; "
                    "run the same command again to pick up the order."
                )
            wait = retry_after_seconds(result[1].headers.get("Retry-After"), delay)
            self.options.progress(f"ACME: {what} is {result[0]}; asking again in {wait:.1f} s.")
            time.sleep(max(0.0, min(wait, deadline - now)))
            delay = min(delay * 2, MAX_POLL)

    # -- chain ----------------------------------------------------------------------------
    def _complete_chain(self, leaf: x509.Certificate, chain: list[x509.Certificate]) -> list[x509.Certificate]:
        """The chain with its root appended: ACME servers send it without (RFC 8555 §9.1)."""
        top = chain[-1] if chain else leaf
        if top.issuer == top.subject:
            return chain
        for root in itertools.chain(self.options.roots, _system_roots()):
            if root.subject == top.issuer and root.issuer == root.subject:
                try:
                    top.verify_directly_issued_by(root)
                except (ValueError, TypeError, InvalidSignature):
                    continue
                return [*chain, root]
        raise CAUnavailable(
            f"The certificate was issued but its chain ends at '{top.issuer.rfc4514_string()}', a root that is neither "
            "among the trusted roots given nor in the system's trust store.",
            remedy=Remedy.GIVE_CA_TRUST_AGAIN,
        )

    # -- errors ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def _translate(self, what: str) -> Iterator[None]:
        """requests / acme / josepy errors → one tokenissue error, cause chained."""
        try:
            yield
        except (RequestRejected, CAUnavailable, UsageError):
            raise
        except requests.exceptions.SSLError as e:
            raise CAUnavailable(
                f"The ACME server's TLS certificate at {self.url} is not trusted.", remedy=Remedy.GIVE_ACME_TRUST
            ) from e
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as e:
            raise CAUnavailable(f"Cannot reach the ACME server at {self.url} ({type(e).__name__}); is it running?") from e
        except messages.Error as e:
            if e.code == "rateLimited":
                after = f" retry after {self._retry_after}" if self._retry_after else " try again later"
                raise CAUnavailable(f"The ACME server is rate-limiting {what}: {_problem_text(e)};{after} (seconds or date).") from e
            if e.code in _UNAVAILABLE:
                raise CAUnavailable(f"The ACME server failed on {what}: {_problem_text(e)}; try again later.") from e
            raise RequestRejected(f"The ACME server refused {what}: {_problem_text(e)}.") from e
        except (errors.Error, DeserializationError, requests.exceptions.RequestException, ValueError, KeyError) as e:
            raise CAUnavailable(f"The ACME server gave an unusable answer to {what} ({type(e).__name__}).") from e


def _problem_text(problem: Any) -> str:
    detail = getattr(problem, "detail", None) or getattr(problem, "title", None) or getattr(problem, "description", None)
    code = getattr(problem, "code", None)
    text = str(detail or code or "no detail given").rstrip(".")
    return f"{text} ({code})" if code and detail else text


def _system_roots() -> Iterator[x509.Certificate]:
    """The system's trust store, read only when the given roots do not complete the chain."""
    cafile = ssl.get_default_verify_paths().cafile
    if not cafile:
        return
    try:
        with warnings.catch_warnings():
            # Some distribution roots have non-positive serials; cryptography warns, they still verify.
            warnings.simplefilter("ignore")
            yield from x509.load_pem_x509_certificates(Path(cafile).read_bytes())
    except (OSError, ValueError):
        return
