"""The ASGI app: CMP over HTTP (RFC 6712) plus the CA certificate, the CRL and a health check.

Routes::

    POST {cmp_path}             application/pkixcmp in and out; also {cmp_path} without the
                                trailing slash and {cmp_path}<label> (RFC 9483 §3.6 style)
    POST /ocsp                  application/ocsp-request in, application/ocsp-response out
    GET  /ocsp/{base64 request} the same, RFC 5019 §5 (cacheable: Cache-Control, Expires, ETag)
    GET  /scep?operation=GetCACaps, GetCACert, PKIOperation; POST /scep?operation=PKIOperation: SCEP
                                (RFC 8894, :mod:`.scep_service`); also at /scep/pkiclient.exe
    GET  /.well-known/est/cacerts, csrattrs; POST simpleenroll, simplereenroll: EST (RFC 7030,
                                see :mod:`.est_service`), over HTTPS only
    GET  /ca.pem                the CA certificate and its issuers (PEM)
    GET  /crl.pem               the CA directory's current crl.pem (404 when none was published)
    GET  /health                {"status": "ok", "database": "ok", "ca": subject, "not_after": ISO
                                time}; 503 {"status": "unavailable", ...} while the database
                                cannot be reached (for a load balancer's readiness check)
    GET  /metrics               counters in the Prometheus text format (see :mod:`.metrics`)

Transport checks happen before any CMP parsing: a wrong Content-Type gets 415, a body over
``max_body`` octets 413 (the body is read incrementally and reading stops at the limit;
Content-Length is not trusted), each with an unprotected CMP error body so CMP clients can show
a reason. Past ``max_concurrent`` CMP requests in progress, the next one is not read: it gets
503 with Retry-After and a CMP systemUnavail error, which CMP clients and load balancers take as
"repeat the same message later" (load shedding that a client can tell from a failure, and that
the access log records, unlike a bare 503 from the HTTP server). The CMP work runs in a worker thread (:class:`~.cmp_service.CMPService` is
synchronous and talks to the token and the database).

Slow clients. A request holds one of the ``max_concurrent`` slots only once its whole body has
arrived, so bodies that trickle in (slowloris) cannot fill the slots and starve everyone else.
The whole body must arrive within ``body_timeout`` seconds of the headers (a CMP message is one
small DER blob that clients send with the headers; 64 KiB in 5 s is 13 kB/s, so this is also
the minimum body rate); past it the answer is 408 with ``Connection: close``. Headers and
connections are guarded below the app by :func:`http_protocol`, the uvicorn protocol that
``ca serve`` runs: request headers within ``header_timeout`` seconds of the connection (or of the
previous answer on a kept-alive connection), at most ``max_per_client`` connections (hence
requests in flight, HTTP/1.1 has one per connection) from one client address, and a connection
whose request body was left unread by an answer is closed rather than kept alive.

The CA key stays logged in on its token while the app runs: the lifespan holds one
``ca.signing_key(pin)`` open (the PKCS#11 session is re-entrant and reference-counted), so no
request logs in. Each request writes one JSON line to the access log (stderr by default) with
time, client, method, path, status, bytes in and out, milliseconds, and for CMP the body type,
transactionID, reference and failure info; never a code, PIN or key material.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import ssl
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from datetime import UTC, datetime
from email.utils import format_datetime
from functools import partial
from pathlib import Path
from typing import Any, TextIO

import anyio
import h11
from cryptography.x509.ocsp import OCSPResponseStatus
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from uvicorn.protocols.http.h11_impl import H11Protocol

from ..ca.authority import CRL_FILE, CertificateAuthority
from ..ca.ocsp import OCSPAnswer, OCSPResponder
from ..ca.registration import RegistrationAuthority
from ..credentials import Pin, ProtectedAuth
from ..inventory import InventoryUnavailable
from ..models import StepHook
from ..pkix.certs import dump_certificates
from ..pkix.ocsp import error_response
from ..protocols.cmp import FailureInfo, build_error, encode_message
from .cmp_service import CMPService
from .est_service import ESTService
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from .metrics import Metrics
from .scep_service import SCEPService

__all__ = ["CMP_CONTENT_TYPE", "create_app", "http_protocol"]

CMP_CONTENT_TYPE = "application/pkixcmp"
OCSP_REQUEST_TYPE = "application/ocsp-request"
OCSP_RESPONSE_TYPE = "application/ocsp-response"
#: Seconds a client or load balancer should wait before repeating a request answered with 503.
RETRY_AFTER_S = 2
_LOG_KEY = "tokenissue.access"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class _Runtime:
    """What the lifespan opens and the handlers use."""

    service: CMPService
    ca: CertificateAuthority
    ocsp: OCSPResponder
    est: ESTService
    scep: SCEPService


#: Headers for an answer sent before the request body was read to its end: the rest of the body
#: may still be on its way, so the connection cannot carry another request.
_CLOSE = {"Connection": "close"}


def _cmp_error(
    status: int, failure: FailureInfo, text: str, fields: dict[str, Any], headers: dict[str, str] | None = None
) -> Response:
    fields["failure_info"] = failure
    body = encode_message(build_error(None, failure, text))
    return Response(body, status_code=status, media_type=CMP_CONTENT_TYPE, headers=headers)


async def _read_limited(request: Request, limit: int) -> bytes | None:
    """The body, or None as soon as it grows past ``limit`` (the rest is never read)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(
    ca_dir: Path,
    *,
    ca_pin: Pin | ProtectedAuth | None,
    module: str | None = None,
    cmp_path: str = "/pkix/",
    max_body: int = 64 * 1024,
    max_concurrent: int = 256,
    access_log: TextIO | None = None,
    body_timeout: float = 5.0,
    on_step: StepHook | None = None,
    ocsp_pin: Pin | ProtectedAuth | None = None,
    scep_pin: Pin | ProtectedAuth | None = None,
) -> Starlette:
    """The CMP server for the CA in ``ca_dir``; ``access_log`` defaults to stderr.

    Requests are limited to ``max_body`` octets and ``body_timeout`` seconds for the whole body
    to arrive; at most ``max_concurrent`` CMP requests whose body has arrived are in progress at
    once (the rest are answered 503 at once); a body still arriving holds no slot.
    ``on_step`` is the crash tests' fault-injection point, passed to :class:`CMPService`.
    ``ocsp_pin`` is the PIN of the OCSP signer's token when ca.toml puts its key on a token other
    than the CA's (see :mod:`tokenissue.ca.ocsp`); without a signer, /ocsp answers unauthorized.
    ``scep_pin`` is the same for the SCEP RA's key (:mod:`tokenissue.ca.scep`).
    """
    base = "/" + cmp_path.strip("/") + "/" if cmp_path.strip("/") else "/"
    runtime = _Runtime()
    in_progress = 0  # CMP, OCSP and EST requests admitted and not yet answered (the event loop is one thread)
    cmp_threads = anyio.CapacityLimiter(4)
    ocsp_threads = anyio.CapacityLimiter(4)
    metrics = Metrics(routes=lambda path: _OTHER_ROUTES.get(path) or (
        "ocsp" if path.startswith("/ocsp/") else
        "cmp" if path.startswith(base) or path == base.rstrip("/") else "other"
    ))  # fmt: skip
    busy_text = f"The CA is busy; send the same message again in {RETRY_AFTER_S} s."

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            ca = stack.enter_context(CertificateAuthority.open(ca_dir, module=module))
            pin = ca_pin if ca.needs_pin else None
            # One logged-in CA session for the server's lifetime; every signature reuses it.
            key = stack.enter_context(ca.signing_key(pin))
            runtime.ca = ca
            runtime.ocsp = OCSPResponder(ca, pin, ocsp_pin)
            stack.callback(runtime.ocsp.close)
            runtime.est = ESTService(ca, RegistrationAuthority(ca), pin, ca_key=key)
            runtime.scep = SCEPService(ca, RegistrationAuthority(ca), pin, ca_key=key, ra_pin=scep_pin)
            stack.callback(runtime.scep.close)
            runtime.service = CMPService(
                ca, RegistrationAuthority(ca), pin, ca_key=key, max_size=max_body, on_step=on_step
            )
            yield

    async def cmp_endpoint(request: Request) -> Response:
        nonlocal in_progress
        fields: dict[str, Any] = request.scope[_LOG_KEY]
        fields["cmp"] = True  # counted as a CMP message in the metrics (not a 404/405 on the path)
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != CMP_CONTENT_TYPE:
            return _cmp_error(415, "badDataFormat", f"Send CMP messages as {CMP_CONTENT_TYPE}.", fields, _CLOSE)
        if in_progress >= max_concurrent:
            # Busy already: not worth reading the body.
            return _shed(fields, _CLOSE)
        try:
            # A client that trickles its body (slowloris) must not hold a connection for long,
            # and while its body is arriving it holds no slot: only the connection.
            body = await asyncio.wait_for(_read_limited(request, max_body), timeout=body_timeout)
        except ClientDisconnect:
            # The client left before its message arrived: nothing to answer, and not a 500.
            fields["failure_info"] = "clientDisconnected"
            return Response(status_code=499)
        except TimeoutError:
            fields["slow_body"] = True
            text = f"The CMP message did not arrive within {body_timeout:g} s."
            return _cmp_error(408, "badRequest", text, fields, _CLOSE)
        if body is None:
            return _cmp_error(413, "badRequest", f"The CMP message exceeds {max_body} bytes.", fields, _CLOSE)
        fields["bytes_in"] = len(body)
        if in_progress >= max_concurrent:
            return _shed(fields)
        in_progress += 1
        try:
            return await _handle(body, fields)
        finally:
            in_progress -= 1

    def _shed(fields: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
        fields["shed"] = True
        return _cmp_error(503, "systemUnavail", busy_text, fields, {"Retry-After": str(RETRY_AFTER_S), **(headers or {})})

    async def _handle(body: bytes, fields: dict[str, Any]) -> Response:
        # CMP work has threads of its own (it is serialised on the token anyway), so a queue of
        # CMP requests never holds up /health, /ca.pem or /crl.pem, which share anyio's pool.
        status, der, service_fields = await anyio.to_thread.run_sync(runtime.service.handle, body, limiter=cmp_threads)
        fields.update(service_fields)
        headers = {"Retry-After": str(RETRY_AFTER_S)} if status == 503 else None
        return Response(der, status_code=status, media_type=CMP_CONTENT_TYPE, headers=headers)

    async def ocsp_post(request: Request) -> Response:
        fields: dict[str, Any] = request.scope[_LOG_KEY]
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != OCSP_REQUEST_TYPE:
            fields["ocsp"] = "content-type"
            return _ocsp_error(415, _CLOSE)
        body = await _receive(request, _OCSP_MAX_BODY, fields)
        if isinstance(body, int):
            return Response(status_code=499) if body == 499 else _ocsp_error(body, _CLOSE)
        return await _ocsp_admitted(body, fields, cacheable=False)

    async def ocsp_get(request: Request) -> Response:
        # RFC 5019 §5: the DER request, base64, URL-encoded, after the responder's path. The
        # server has percent-decoded the path already; base64's '/' may stand as it is.
        fields: dict[str, Any] = request.scope[_LOG_KEY]
        encoded = request.scope["path"].removeprefix("/ocsp/")
        try:
            der = base64.b64decode(encoded, validate=True)
        except ValueError:
            fields["ocsp"] = "malformed"
            return _ocsp_response(OCSPAnswer(error_response(OCSPResponseStatus.MALFORMED_REQUEST)), cacheable=False)
        return await _ocsp_admitted(der, fields, cacheable=True)

    async def _ocsp_admitted(der: bytes, fields: dict[str, Any], *, cacheable: bool) -> Response:
        # Past --max-concurrent (CMP, OCSP and EST together) an OCSP request is shed with
        # tryLater, HTTP 503 and Retry-After, as CMP's are with systemUnavail.
        nonlocal in_progress
        if in_progress >= max_concurrent:
            fields["shed"] = True
            body = error_response(OCSPResponseStatus.TRY_LATER)
            return Response(body, status_code=503, media_type=OCSP_RESPONSE_TYPE, headers={"Retry-After": str(RETRY_AFTER_S)})
        in_progress += 1
        try:
            answer = await anyio.to_thread.run_sync(runtime.ocsp.respond, der, fields, limiter=ocsp_threads)
        finally:
            in_progress -= 1
        return _ocsp_response(answer, cacheable=cacheable)

    async def _receive(request: Request, limit: int, fields: dict[str, Any]) -> bytes | int:
        """The whole body of an OCSP or EST request, or the HTTP status that ends it: 499 (the
        client left), 408 (not within ``body_timeout``), 413 (over ``limit`` octets)."""
        try:
            body = await asyncio.wait_for(_read_limited(request, limit), timeout=body_timeout)
        except ClientDisconnect:
            return 499
        except TimeoutError:
            fields["slow_body"] = True
            return 408
        if body is None:
            fields["too_large"] = True
            return 413
        fields["bytes_in"] = len(body)
        return body

    async def est_cacerts(request: Request) -> Response:
        return _est_plain_http(request) or _est_reply(runtime.est.cacerts())

    async def est_csrattrs(request: Request) -> Response:
        # Nothing is asked beyond what the profile checks (§4.5.2).
        return _est_plain_http(request) or Response(status_code=204)

    def _est_plain_http(request: Request) -> Response | None:
        if request.url.scheme == "https":
            return None
        request.scope[_LOG_KEY]["est_error"] = 403
        return PlainTextResponse("EST needs TLS: this server takes EST requests over HTTPS only.\n", status_code=403)

    async def est_enroll(request: Request) -> Response:
        fields: dict[str, Any] = request.scope[_LOG_KEY]
        fields["est"] = request.url.path.rsplit("/", 1)[-1]
        refused = _est_plain_http(request)
        if refused is not None:
            return refused
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != EST_CSR_TYPE:
            fields["est_error"] = 415
            return PlainTextResponse(f"Send the request as {EST_CSR_TYPE} (base64 DER).\n", status_code=415, headers=_CLOSE)
        body = await _receive(request, max_body, fields)
        if isinstance(body, int):
            text = {408: f"The request did not arrive within {body_timeout:g} s.", 413: f"The request exceeds {max_body} bytes."}
            return Response(status_code=499) if body == 499 else PlainTextResponse(text[body] + "\n", status_code=body,
                                                                                   headers=_CLOSE)  # fmt: skip
        if fields["est"] == "simpleenroll":
            work = partial(runtime.est.simpleenroll, body, request.headers.get("authorization"), fields)
        else:
            work = partial(runtime.est.simplereenroll, body, _client_certificate(request.scope), fields)
        return await _admitted(work, fields)

    async def _admitted(work: Callable[[], tuple[int, bytes, dict[str, str]]], fields: dict[str, Any]) -> Response:
        """An EST or SCEP request past --max-concurrent is shed (503 + Retry-After + a sentence);
        else it runs in a worker thread, as a CMP request does."""
        nonlocal in_progress
        if in_progress >= max_concurrent:
            fields["shed"] = True
            return PlainTextResponse(busy_text.replace("message", "request") + "\n", status_code=503,
                                     headers={"Retry-After": str(RETRY_AFTER_S)})  # fmt: skip
        in_progress += 1
        try:
            return _est_reply(await anyio.to_thread.run_sync(work, limiter=cmp_threads))
        finally:
            in_progress -= 1

    async def scep_endpoint(request: Request) -> Response:
        # RFC 8894 §4.1: GET ?operation=GetCACaps|GetCACert|PKIOperation&message=..., and POST
        # ?operation=PKIOperation with the DER pkiMessage as the body.
        fields: dict[str, Any] = request.scope[_LOG_KEY]
        operation = request.query_params.get("operation", "")
        fields["scep_op"] = operation[:32]
        if operation == "GetCACaps":
            return _est_reply(runtime.scep.get_ca_caps())
        if operation == "GetCACert":
            return _est_reply(runtime.scep.get_ca_cert())
        if operation != "PKIOperation":
            return PlainTextResponse("Ask for operation GetCACaps, GetCACert or PKIOperation.\n", status_code=400)
        if request.method == "POST":
            body = await _receive(request, max_body, fields)
            if isinstance(body, int):
                return Response(status_code=499) if body == 499 else PlainTextResponse(
                    f"The pkiMessage did not arrive whole (HTTP {body}).\n", status_code=body, headers=_CLOSE)  # fmt: skip
        else:
            try:
                # A client that does not percent-encode its '+' has it read as a space.
                message = request.query_params.get("message", "").replace(" ", "+")
                body = base64.b64decode(b"".join(message.encode().split()), validate=True)
            except (binascii.Error, ValueError):
                return PlainTextResponse("The message parameter is not base64.\n", status_code=400)
        return await _admitted(partial(runtime.scep.pki_operation, body, fields), fields)

    async def ca_pem(request: Request) -> Response:
        return Response(dump_certificates(runtime.ca.chain(), "pem"), media_type="application/x-pem-file")

    async def crl_pem(request: Request) -> Response:
        path = runtime.ca.dir / CRL_FILE
        try:
            data = await run_in_threadpool(path.read_bytes)
        except FileNotFoundError:
            return PlainTextResponse("No CRL has been published yet.\n", status_code=404)
        return Response(data, media_type="application/x-pem-file")

    async def health(request: Request) -> Response:
        # Readiness for a load balancer: this replica can serve only while its database answers.
        cert = runtime.ca.certificate
        doc: dict[str, Any] = {"ca": cert.subject.rfc4514_string(), "not_after": cert.not_valid_after_utc.isoformat()}
        try:
            await run_in_threadpool(runtime.ca.inventory.ping)
        except InventoryUnavailable:
            return JSONResponse(
                {"status": "unavailable", "database": "unreachable", **doc},
                status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)},
            )  # fmt: skip
        return JSONResponse({"status": "ok", "database": "ok", **doc})

    async def metrics_text(request: Request) -> Response:
        not_after = runtime.ca.certificate.not_valid_after_utc.timestamp()
        text = metrics.render(in_progress=in_progress, ca_not_after=not_after)
        return Response(text, media_type=METRICS_CONTENT_TYPE)

    cmp_paths = dict.fromkeys([base, base.rstrip("/") or "/", base + "{label}"])
    routes = [Route(p, cmp_endpoint, methods=["POST"]) for p in cmp_paths]
    routes += [
        Route("/ocsp", ocsp_post, methods=["POST"]),
        Route("/ocsp/", ocsp_post, methods=["POST"]),
        Route("/ocsp/{request:path}", ocsp_get, methods=["GET"]),
        Route("/.well-known/est/cacerts", est_cacerts, methods=["GET"]),
        Route("/.well-known/est/csrattrs", est_csrattrs, methods=["GET"]),
        Route("/.well-known/est/simpleenroll", est_enroll, methods=["POST"]),
        Route("/.well-known/est/simplereenroll", est_enroll, methods=["POST"]),
        Route("/scep", scep_endpoint, methods=["GET", "POST"]),
        Route("/scep/pkiclient.exe", scep_endpoint, methods=["GET", "POST"]),
        Route("/ca.pem", ca_pem, methods=["GET"]),
        Route("/crl.pem", crl_pem, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/metrics", metrics_text, methods=["GET"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.router.redirect_slashes = False
    app.add_middleware(_AccessLog, stream=access_log, observe=metrics.observe)
    return app


#: Route names for the metrics' labels (any other path is "other"; the CMP paths are "cmp").
_OTHER_ROUTES = {"/ca.pem": "ca", "/crl.pem": "crl", "/health": "health", "/metrics": "metrics", "/ocsp": "ocsp",
                 "/scep": "scep", "/scep/pkiclient.exe": "scep",
                 **{f"/.well-known/est/{op}": "est" for op in ("cacerts", "csrattrs", "simpleenroll", "simplereenroll")}}
EST_CSR_TYPE = "application/pkcs10"


def _est_reply(reply: tuple[int, bytes, dict[str, str]]) -> Response:
    status, body, headers = reply
    media = headers.pop("Content-Type", None)
    return Response(body, status_code=status, media_type=media, headers=headers)


def _client_certificate(scope: Scope) -> bytes | None:
    """The TLS client certificate (DER) that :func:`http_protocol` put into the ASGI scope's
    ``tls`` extension, or None."""
    chain = scope.get("extensions", {}).get("tls", {}).get("client_cert_chain") or []
    if not chain:
        return None
    return ssl.PEM_cert_to_DER_cert(chain[0])


#: An OCSP request for one certificate is about 100 octets; a signed one with its chain a few KB.
_OCSP_MAX_BODY = 16 * 1024


def _ocsp_error(status: int, headers: dict[str, str] | None = None) -> Response:
    """An HTTP error that OCSP clients can still read: malformedRequest as the body."""
    body = error_response(OCSPResponseStatus.MALFORMED_REQUEST)
    return Response(body, status_code=status, media_type=OCSP_RESPONSE_TYPE, headers=headers)


def _ocsp_response(answer: OCSPAnswer, *, cacheable: bool) -> Response:
    """An OCSP answer; a signed one to a GET without a nonce carries RFC 5019 §6.2's cache
    headers, valid until its nextUpdate (a nonce makes an answer for one request only)."""
    headers: dict[str, str] = {}
    if answer.this_update is not None and answer.next_update is not None:
        if cacheable and not answer.nonce:
            max_age = max(0, int((answer.next_update - datetime.now(UTC)).total_seconds()))
            headers = {
                "Cache-Control": f"max-age={max_age}, public, no-transform, must-revalidate",
                "Last-Modified": format_datetime(answer.this_update, usegmt=True),
                "Expires": format_datetime(answer.next_update, usegmt=True),
                "ETag": '"' + hashlib.sha256(answer.der).hexdigest()[:32] + '"',
            }
        else:
            headers = {"Cache-Control": "no-store"}
    return Response(answer.der, media_type=OCSP_RESPONSE_TYPE, headers=headers)


class _AccessLog:
    """Pure ASGI middleware: one JSON line per HTTP request.

    The line is written just before the last byte of the answer is handed on, so a client that
    has its answer finds the line already there (a test, or a log shipper reading behind it).
    A request that ends without an answer (the app raised, the client left) is logged after.
    """

    def __init__(
        self, app: ASGIApp, stream: TextIO | None = None, observe: Callable[[dict[str, Any]], None] | None = None
    ) -> None:
        self.app = app
        self.stream = stream
        self.observe = observe

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        fields: dict[str, Any] = {}
        scope[_LOG_KEY] = fields
        seen: dict[str, Any] = {"status": 500, "out": 0, "logged": False}

        def log() -> None:
            if seen["logged"]:
                return
            seen["logged"] = True
            client = scope.get("client")
            line = {
                "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
                "client": client[0] if client else None,
                "method": scope.get("method"),
                "path": scope.get("path"),
                "status": seen["status"],
                "bytes_in": fields.pop("bytes_in", 0),
                "bytes_out": seen["out"],
                "ms": round((time.perf_counter() - start) * 1000, 1),
                **fields,
            }
            if self.observe is not None:
                self.observe(line)
            stream = self.stream or sys.stderr
            try:
                stream.write(json.dumps(line, ensure_ascii=False, default=str) + "\n")
                stream.flush()
            except (OSError, ValueError):  # a closed stderr must not take the request down
                pass

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                seen["status"] = int(message["status"])
            elif message["type"] == "http.response.body":
                seen["out"] += len(message.get("body", b""))
                if not message.get("more_body", False):
                    log()
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            log()


#: Seconds a connection may take to send a request's headers, from its start or from the end of
#: the previous answer (uvicorn itself has no such limit: a connection that sends nothing, or a
#: header line now and then, would be kept for ever and count against ``limit_concurrency``).
HEADER_TIMEOUT_S = 5.0
#: Connections one client address may hold at once (0: no limit).
MAX_PER_CLIENT = 32


def http_protocol(*, header_timeout: float = HEADER_TIMEOUT_S, max_per_client: int = MAX_PER_CLIENT) -> type[H11Protocol]:
    """uvicorn's h11 protocol with the guards a public CA server needs (pass it as ``http=``).

    * Request headers must be complete within ``header_timeout`` seconds of the connection's start
      or of the previous answer; otherwise the connection is closed. (h11 caps their size:
      ``h11_max_incomplete_event_size``, 16 KiB by default.)
    * One client address holds at most ``max_per_client`` connections (0: no limit); a
      connection past it is closed at once, before anything is read. HTTP/1.1 carries one
      request at a time per connection, so this also limits that client's requests in flight,
      whether their headers, their body or their CMP work is under way.
    * An answer sent before the request body was read to its end (408, 413, 415, 503, a 404 or
      405 that never reads it) closes the connection instead of keeping it alive for the rest of a
      body that may never come.

    Behind a load balancer or reverse proxy every client has the proxy's address: limit per
    client there and give ``max_per_client=0`` here.
    """
    open_per_client: Counter[str] = Counter()

    class GuardedH11Protocol(H11Protocol):
        _header_timer: asyncio.TimerHandle | None = None
        _counted: str | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._with_tls_extension(transport)
            address = self.client[0] if self.client else None
            if max_per_client and address is not None:
                if open_per_client[address] >= max_per_client:
                    transport.close()  # nothing read, nothing answered: the cheapest refusal
                    return
                open_per_client[address] += 1
                self._counted = address
            self._arm_header_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm_header_timer()
            if self._counted is not None:
                open_per_client[self._counted] -= 1
                if open_per_client[self._counted] <= 0:
                    del open_per_client[self._counted]
                self._counted = None
            super().connection_lost(exc)

        def handle_events(self) -> None:
            super().handle_events()
            if self.conn.their_state is not h11.IDLE:
                self._disarm_header_timer()  # the request line and headers are in

        def on_response_complete(self) -> None:
            # Armed first: the base class may go on to parse a pipelined request at once.
            self._arm_header_timer()
            super().on_response_complete()
            if not self.transport.is_closing() and self.conn.their_state is h11.SEND_BODY:
                # The answer went out before the body was read: the rest of it may trickle in
                # for ever, and the connection cannot carry another request anyway.
                self._close()

        def _with_tls_extension(self, transport: asyncio.Transport) -> None:
            # uvicorn does not fill in the ASGI TLS extension: the client certificate (EST's
            # re-enrollment is authorized by it) goes into every request's scope from here.
            ssl_object = transport.get_extra_info("ssl_object")
            if ssl_object is None:
                return
            der = ssl_object.getpeercert(binary_form=True)
            tls = {"client_cert_chain": [ssl.DER_cert_to_PEM_cert(der)] if der else [], "tls_version": None}
            inner = self.app

            async def app_with_tls(scope: Scope, receive: Receive, send: Send) -> None:
                if scope["type"] == "http":
                    scope.setdefault("extensions", {})["tls"] = tls
                await inner(scope, receive, send)

            self.app = app_with_tls

        def _arm_header_timer(self) -> None:
            self._disarm_header_timer()
            self._header_timer = self.loop.call_later(header_timeout, self._header_deadline)

        def _disarm_header_timer(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _header_deadline(self) -> None:
            self._header_timer = None
            if self.conn.their_state is h11.IDLE and (self.cycle is None or self.cycle.response_complete):
                self._close()

        def _close(self) -> None:
            self._disarm_header_timer()
            if not self.transport.is_closing():
                with suppress(h11.LocalProtocolError):
                    self.conn.send(h11.ConnectionClosed())
                self.transport.close()

    return GuardedH11Protocol
