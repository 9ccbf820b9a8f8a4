"""One client cannot stall `ca serve` (slowloris), against the real server on 127.0.0.1.

A flood of 300 connections from one client that send their headers and 3 body bytes, then
stall (and are opened again whenever the server closes them), used to hold every one of the
``--max-concurrent`` slots for 30 s, so everybody's CMP requests got 503. Now a body still
arriving holds no slot, the body must arrive within 5 s, one client address holds at most
``--max-per-client`` connections, and headers must arrive within 5 s; an honest client keeps
being served throughout.

The honest client connects from 127.0.0.2 (Linux routes all of 127.0.0.0/8 to the loopback, so
a socket bound to 127.0.0.2 reaches a server listening on 127.0.0.1 only): the server sees two
client addresses, as it would two hosts. The flood is bounded in count and time.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from urllib.parse import urlsplit

import httpx

from tokenissue.protocols.cmp import ID_IT_CA_CERTS, build_genm, build_ir, encode_message

from support.cmp_server import CMP_TYPE, new_key, register, response_of, served
from support.lifecycle import make_token_ca
from support.softhsm import SoftHSM

HONEST = "127.0.0.2"
FLOOD = 300
FLOOD_SECONDS = 10.0
MAX_OPENS = 3000  # the flood never opens more connections than this in all
REOPEN = 20  # connections reopened per round (0.2 s or more) once the first FLOOD are open
STALL = (
    b"POST /pkix/ HTTP/1.1\r\nHost: ca\r\nContent-Type: application/pkixcmp\r\n"
    b"Content-Length: 1000\r\n\r\n\x30\x82\x03"
)


def _port(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None
    return port


def _stalled(port: int, data: bytes) -> socket.socket | None:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(2)
    try:
        s.connect(("127.0.0.1", port))
        s.sendall(data)
    except OSError:
        s.close()
        return None
    s.setblocking(False)
    return s


def _closed_by_server(s: socket.socket) -> bool:
    try:
        s.recv(4096)
    except BlockingIOError:
        return False
    except OSError:
        return True
    return True  # readable: an answer (408) or EOF; either way the server is done with it


class _Flood:
    """FLOOD stalled connections from 127.0.0.1, each reopened when the server drops it."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.stop = threading.Event()
        self.opens = 0
        self.dropped = 0
        self.peak = 0
        self.ended = 0.0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        socks: list[socket.socket] = []
        deadline = time.monotonic() + FLOOD_SECONDS + 30
        try:
            while not self.stop.is_set() and time.monotonic() < deadline and self.opens < MAX_OPENS:
                # All FLOOD at first, then at most REOPEN per round (a bounded pace).
                budget = FLOOD if not self.opens else REOPEN
                while len(socks) < FLOOD and self.opens < MAX_OPENS and budget and not self.stop.is_set():
                    budget -= 1
                    self.opens += 1
                    s = _stalled(self.port, STALL)
                    if s is not None:
                        socks.append(s)
                readable, _, _ = select.select(socks, [], [], 0.2) if socks else ([], [], [])
                for s in readable:
                    if _closed_by_server(s):
                        self.dropped += 1
                        socks.remove(s)
                        s.close()
                self.peak = max(self.peak, len(socks))
                time.sleep(0.2)
        finally:
            self.ended = time.monotonic()
            for s in socks:
                s.close()


def test_a_flood_of_stalled_bodies_does_not_stop_an_honest_client(session_softhsm: SoftHSM) -> None:
    ca = make_token_ca(session_softhsm)
    reg = register(ca.dir, "CN=Honest During Flood,O=tokenissue tests")
    genm = encode_message(build_genm([ID_IT_CA_CERTS]))
    headers = {"content-type": CMP_TYPE}
    with served(ca) as server:
        flood = _Flood(_port(server.url))
        flood.thread.start()
        transport = httpx.HTTPTransport(local_address=HONEST)
        timings: list[float] = []
        failures: list[str] = []
        try:
            with httpx.Client(transport=transport, base_url=server.url, timeout=10) as honest:
                time.sleep(1.0)  # let the flood build up first
                end = time.monotonic() + FLOOD_SECONDS
                while time.monotonic() < end:
                    start = time.monotonic()
                    try:
                        r = honest.post("/pkix/", content=genm, headers=headers)
                        if r.status_code != 200 or response_of(r.content).body_type != "genp":
                            failures.append(f"genm got HTTP {r.status_code}")
                    except httpx.HTTPError as e:
                        failures.append(f"genm failed: {e!r}")
                    timings.append(time.monotonic() - start)
                    time.sleep(0.3)
                # A real enrollment in the middle of the flood, too.
                start = time.monotonic()
                r = honest.post("/pkix/", content=reg.protect(build_ir(reg.subject, None, new_key())), headers=headers)
                enroll_s = time.monotonic() - start
                flood_alive = flood.thread.is_alive()
        finally:
            flood.stop.set()
            flood.thread.join(30)
        assert not failures, failures[:5]
        assert r.status_code == 200 and response_of(r.content).body_type == "ip", r.status_code
        assert max(timings) < 3.0 and enroll_s < 5.0, (max(timings), enroll_s)
        # The flood really was one: hundreds of stalled connections, dropped by the server.
        assert flood_alive and flood.opens >= FLOOD and flood.dropped > 0, (flood.opens, flood.dropped)
        log = server.access_log()
    assert not [e for e in log if e.get("client") == HONEST and e.get("status") != 200]
    print(f"honest genm max {max(timings):.2f}s over {len(timings)}; ir {enroll_s:.2f}s; flood opened {flood.opens}, dropped {flood.dropped}")


def test_slow_headers_slow_bodies_and_idle_connections_are_closed_within_seconds(session_softhsm: SoftHSM) -> None:
    ca = make_token_ca(session_softhsm)
    with served(ca) as server:
        port = _port(server.url)
        slow = {
            "nothing sent": _stalled(port, b""),
            "half the headers": _stalled(port, b"POST /pkix/ HTTP/1.1\r\nHost: ca\r\n"),
            "3 body bytes": _stalled(port, STALL),
            "a body to a GET route": _stalled(port, STALL.replace(b"/pkix/", b"/health")),
        }
        open_since = time.monotonic()
        closed_after: dict[str, float] = {}
        try:
            while len(closed_after) < len(slow) and time.monotonic() - open_since < 12:
                for name, s in slow.items():
                    if name not in closed_after and s is not None and _eof_or_answer(s):
                        closed_after[name] = time.monotonic() - open_since
                time.sleep(0.1)
        finally:
            for s in slow.values():
                if s is not None:
                    s.close()
    # Deadlines of 5 s, with slack for a loaded machine; never the old 30 s or for ever.
    assert set(closed_after) == set(slow), closed_after
    assert max(closed_after.values()) < 9.0, closed_after


def _eof_or_answer(s: socket.socket) -> bool:
    """True once the server closed the connection (after an answer such as 408, or none)."""
    try:
        while True:
            chunk = s.recv(4096)
            if chunk == b"":
                return True
    except BlockingIOError:
        return False
    except OSError:
        return True


def test_one_client_address_holds_at_most_max_per_client_connections(session_softhsm: SoftHSM) -> None:
    ca = make_token_ca(session_softhsm)
    with served(ca, "--max-per-client", "4") as server:
        port = _port(server.url)
        socks = [_stalled(port, STALL) for _ in range(10)]
        try:
            time.sleep(1.0)  # well within the 5 s body deadline
            alive = [s for s in socks if s is not None and not _eof_or_answer(s)]
            assert len(alive) == 4, len(alive)
            # Another address is not affected.
            with httpx.Client(transport=httpx.HTTPTransport(local_address=HONEST), timeout=10) as other:
                assert other.get(f"{server.url}/health").status_code == 200
        finally:
            for s in socks:
                if s is not None:
                    s.close()
