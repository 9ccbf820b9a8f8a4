"""A small HTTP forward proxy for interop tests: it relays every request to one upstream and
records, per request, the method, path, query, request and answer content types and bodies.

Used to see exactly what a third-party SCEP client (certmonger's scep-submit, micromdm's
scepclient) sends. Run it in a thread (``recording(upstream)``) or as a script:
``python -m support.recording_proxy UPSTREAM_URL PORT DUMP_DIR``.
"""

from __future__ import annotations

import json
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit


@dataclass
class Exchange:
    method: str
    path: str
    query: dict[str, list[str]]
    request_type: str | None
    request_body: bytes
    status: int
    answer_type: str | None
    answer_body: bytes

    def summary(self) -> dict[str, object]:
        q = {k: (v if k != "message" or len(v[0]) < 40 else [f"<{len(v[0])} chars>"]) for k, v in self.query.items()}
        return {"method": self.method, "path": self.path, "query": q, "request_type": self.request_type,
                "request_len": len(self.request_body), "status": self.status, "answer_type": self.answer_type,
                "answer_len": len(self.answer_body)}  # fmt: skip


@dataclass
class Recorder:
    upstream: str
    exchanges: list[Exchange] = field(default_factory=list)
    dump: Path | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, ex: Exchange) -> None:
        with self.lock:
            self.exchanges.append(ex)
            n = len(self.exchanges)
        if self.dump is not None:
            self.dump.mkdir(parents=True, exist_ok=True)
            (self.dump / f"{n:03d}.json").write_text(json.dumps(ex.summary(), indent=1))
            (self.dump / f"{n:03d}.request.bin").write_bytes(ex.request_body)
            (self.dump / f"{n:03d}.answer.bin").write_bytes(ex.answer_body)
            if "message" in ex.query:
                (self.dump / f"{n:03d}.message.txt").write_text(ex.query["message"][0])


def _handler(rec: Recorder) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _relay(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            url = rec.upstream.rstrip("/") + self.path
            req = urllib.request.Request(url, data=body if self.command == "POST" else None, method=self.command)  # noqa: S310 - a test's own http upstream
            if self.headers.get("Content-Type"):
                req.add_header("Content-Type", self.headers["Content-Type"])
            try:
                with urllib.request.urlopen(req, timeout=60) as r:  # noqa: S310 - a test's own upstream
                    status, ctype, answer = r.status, r.headers.get("Content-Type"), r.read()
            except urllib.error.HTTPError as e:
                status, ctype, answer = e.code, e.headers.get("Content-Type"), e.read()
            parts = urlsplit(self.path)
            rec.add(Exchange(self.command, parts.path, parse_qs(parts.query), self.headers.get("Content-Type"), body,
                             status, ctype, answer))  # fmt: skip
            self.send_response(status)
            if ctype:
                self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        do_GET = do_POST = _relay

    return Handler


@contextmanager
def recording(upstream: str, dump: Path | None = None) -> Iterator[tuple[str, Recorder]]:
    """Start a proxy on 127.0.0.1 (a free port); yields its base URL and the recorder."""
    rec = Recorder(upstream, dump=dump)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(rec))
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", rec
    finally:
        server.shutdown()
        server.server_close()


if __name__ == "__main__":
    upstream, port, dump = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    srv = ThreadingHTTPServer(("127.0.0.1", port), _handler(Recorder(upstream, dump=dump)))
    srv.serve_forever()
