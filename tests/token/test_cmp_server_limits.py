"""Limits of `ca serve`: a client that trickles its request body (slowloris) is cut off, and
requests past ``max_concurrent`` are shed with an answer a CMP client can act on.

The body must arrive within ``body_timeout``; the answer is an HTTP 408 carrying a CMP error,
and the CA is not touched. A request over the concurrency limit gets 503, Retry-After and CMP
systemUnavail at once, and the same message sent again later is served. OCSP and EST share the
limit and are shed in their own forms.
"""

from __future__ import annotations

import asyncio
import json
import threading
import warnings
from collections.abc import AsyncIterator

import httpx
from cryptography.hazmat.primitives import hashes, serialization

from tokenissue.pkix.ocsp import issuer_hashes
from tokenissue.protocols.cmp import build_ir

from support.cmp_server import in_process_app, new_key, register, response_of, snapshot
from support.lifecycle import make_token_ca
from support.softhsm import SoftHSM

SHA1 = hashes.SHA1()  # noqa: S303  (RFC 5019 CertIDs)


def test_a_trickled_body_is_cut_off_with_408(session_softhsm: SoftHSM) -> None:
    ca = make_token_ca(session_softhsm)
    app, _log = in_process_app(session_softhsm, ca, body_timeout=0.5)
    before = snapshot(ca.dir)

    async def trickle() -> AsyncIterator[bytes]:
        yield b"\x30\x82"
        await asyncio.sleep(120)  # far past the limit: the server must not wait for this
        yield b"\x00"

    async def run() -> httpx.Response:
        # ASGITransport does not run the app's lifespan, which opens the CA: run it here.
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://ca") as client:
                return await client.post(
                    "/pkix/", content=trickle(), headers={"content-type": "application/pkixcmp"}
                )

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        # Generous for a slow machine, and still far short of the trickle's 120 s.
        resp = asyncio.run(asyncio.wait_for(run(), timeout=60))
    assert resp.status_code == 408
    assert response_of(resp.content).body_type == "error"
    assert snapshot(ca.dir) == before


def test_requests_past_max_concurrent_are_shed_with_503_and_served_when_repeated(session_softhsm: SoftHSM) -> None:
    ca = make_token_ca(session_softhsm)
    first, second = (register(ca.dir, f"CN=Shed {i},O=tokenissue tests") for i in (1, 2))
    # The first request stops inside the CA (after its code is reserved) until released, so it is
    # in progress for certain when the second arrives.
    inside, release = threading.Event(), threading.Event()

    def hold(step: str) -> None:
        if step == "after-reserve" and not release.is_set():
            inside.set()
            assert release.wait(60)

    app, log = in_process_app(session_softhsm, ca, max_concurrent=1, on_step=hold)
    msgs = [r.protect(build_ir(r.subject, None, new_key())) for r in (first, second)]
    headers = {"content-type": "application/pkixcmp"}

    async def run() -> tuple[httpx.Response, httpx.Response, httpx.Response, str]:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://ca") as client:
                held = asyncio.create_task(client.post("/pkix/", content=msgs[0], headers=headers))
                assert await asyncio.to_thread(inside.wait, 60)
                shed = await client.post("/pkix/", content=msgs[1], headers=headers)
                release.set()
                done = await held
                again = await client.post("/pkix/", content=msgs[1], headers=headers)
                metrics = (await client.get("/metrics")).text
                return done, shed, again, metrics

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        done, shed, again, metrics = asyncio.run(asyncio.wait_for(run(), timeout=120))
    assert shed.status_code == 503
    assert shed.headers["retry-after"] == "2"
    refusal = response_of(shed.content)
    assert refusal.status is not None and refusal.status.failure_info == ("systemUnavail",), refusal
    assert "busy" in (refusal.status.text or "")
    # Both enrollments were served in the end, the shed one by repeating the same message.
    for resp in (done, again):
        assert resp.status_code == 200
        served = response_of(resp.content)
        assert served.body_type == "ip" and served.certificate is not None, served.status
    lines = [json.loads(line) for line in log.getvalue().splitlines()]
    assert [(line["status"], line.get("shed", False)) for line in lines[:3]] == [(503, True), (200, False), (200, False)]
    assert "\ntokenissue_cmp_shed_total 1\n" in metrics
    assert "\ntokenissue_certificates_issued_total 2\n" in metrics


def test_ocsp_est_and_scep_share_the_limit_and_are_shed_in_their_own_form(session_softhsm: SoftHSM) -> None:
    """--max-concurrent counts CMP, OCSP, EST and SCEP together: while a CMP request holds the
    one slot, an OCSP request gets HTTP 503 with tryLater, an EST and a SCEP PKIOperation 503 with
    a sentence, all with Retry-After; afterwards all are answered."""
    from cryptography.x509 import ocsp

    ca = make_token_ca(session_softhsm)
    ca.run("ca", "ocsp-signer", "--ca", str(ca.dir), check=True)
    ca.run("ca", "scep-ra", "--ca", str(ca.dir), check=True)
    holder = register(ca.dir, "CN=Slot Holder,O=tokenissue tests")
    inside, release = threading.Event(), threading.Event()

    def hold(step: str) -> None:
        if step == "after-reserve" and not release.is_set():
            inside.set()
            assert release.wait(60)

    app, _log = in_process_app(session_softhsm, ca, max_concurrent=1, on_step=hold)
    msg = holder.protect(build_ir(holder.subject, None, new_key()))
    issuer = ca.certificate
    ocsp_req = ocsp.OCSPRequestBuilder().add_certificate_by_hash(
        *issuer_hashes(issuer, SHA1), serial_number=12345, algorithm=SHA1
    ).build().public_bytes(serialization.Encoding.DER)

    scep_op = {"operation": "PKIOperation"}

    async def run() -> tuple[httpx.Response, ...]:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="https://ca") as client:
                held = asyncio.create_task(client.post("/pkix/", content=msg, headers={"content-type": "application/pkixcmp"}))
                assert await asyncio.to_thread(inside.wait, 60)
                ocsp_shed = await client.post("/ocsp", content=ocsp_req, headers={"content-type": "application/ocsp-request"})
                est_shed = await client.post("/.well-known/est/simpleenroll", content=b"MII",
                                             headers={"content-type": "application/pkcs10"})  # fmt: skip
                scep_shed = await client.post("/scep", params=scep_op, content=b"\x30\x00")
                release.set()
                assert (await held).status_code == 200
                ocsp_after = await client.post("/ocsp", content=ocsp_req, headers={"content-type": "application/ocsp-request"})
                est_after = await client.post("/.well-known/est/simpleenroll", content=b"MII",
                                              headers={"content-type": "application/pkcs10"})  # fmt: skip
                scep_after = await client.post("/scep", params=scep_op, content=b"\x30\x00")
                return ocsp_shed, est_shed, ocsp_after, est_after, scep_shed, scep_after

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ocsp_shed, est_shed, ocsp_after, est_after, scep_shed, scep_after = asyncio.run(asyncio.wait_for(run(), timeout=120))
    assert (ocsp_shed.status_code, ocsp_shed.headers["retry-after"]) == (503, "2")
    assert ocsp.load_der_ocsp_response(ocsp_shed.content).response_status is ocsp.OCSPResponseStatus.TRY_LATER
    assert (est_shed.status_code, est_shed.headers["retry-after"]) == (503, "2") and "busy" in est_shed.text
    assert ocsp.load_der_ocsp_response(ocsp_after.content).certificate_status is ocsp.OCSPCertStatus.UNKNOWN
    assert est_after.status_code == 401  # answered now: it carried no credentials
    assert (scep_shed.status_code, scep_shed.headers["retry-after"]) == (503, "2") and "busy" in scep_shed.text
    assert scep_after.status_code == 400 and "pkiMessage" in scep_after.text  # answered now: not a pkiMessage
