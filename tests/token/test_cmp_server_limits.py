"""Time limits of `ca serve`: a client that trickles its request body (slowloris) is cut off.

The body must arrive within ``body_timeout``; the answer is an HTTP 408 carrying a CMP error,
and the CA is not touched.
"""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import AsyncIterator

import httpx
from cmp_server_support import in_process_app, response_of, snapshot
from conftest import SoftHSM
from lifecycle_support import make_token_ca


def test_a_trickled_body_is_cut_off_with_408(session_softhsm: SoftHSM) -> None:
    ca = make_token_ca(session_softhsm)
    app, _log = in_process_app(session_softhsm, ca, body_timeout=0.5)
    before = snapshot(ca.dir)

    async def trickle() -> AsyncIterator[bytes]:
        yield b"\x30\x82"
        await asyncio.sleep(5)  # far past the limit: the server must not wait for this
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
        resp = asyncio.run(asyncio.wait_for(run(), timeout=4))
    assert resp.status_code == 408
    assert response_of(resp.content).body_type == "error"
    assert snapshot(ca.dir) == before
