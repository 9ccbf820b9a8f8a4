"""A mistyped or unreachable CMP URL is a definite failure: nothing was issued, so the key is
removed and the journal entry ended (it used to stay "maybe (CA asked)", retried by every
'enroll --resume' against the same wrong URL, and 'journal abandon' refused it while the token
was present)."""

from __future__ import annotations

import http.server
import json
import socket
import threading
from collections.abc import Iterator

import pytest
from conftest import SoftHSM


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def not_found_server() -> Iterator[str]:
    """An HTTP server on 127.0.0.1 that answers 404 to everything (a wrong path on a web server)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length") or 0))
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    srv = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"cmp+http://127.0.0.1:{srv.server_address[1]}/wrong/path/"
    finally:
        srv.shutdown()
        srv.server_close()


def _enroll(hsm: SoftHSM, url: str) -> tuple[int, str]:
    proc = hsm.run("enroll", "--token", "test", "--ca", url, "--ref", "1234567890", "--subject", "CN=Typo,C=KR",
                   env={"TOKENISSUE_AUTH_CODE": "abcd-efgh-ijkl"})  # fmt: skip
    return proc.returncode, " ".join(proc.stderr.split())


def _left_nothing(hsm: SoftHSM) -> None:
    assert json.loads(hsm.run("keys", "list", "-t", "test", "--json", check=True).stdout) == []
    assert json.loads(hsm.run("journal", "list", "--json", check=True).stdout) == []
    resumed = hsm.run("enroll", "--resume")
    assert resumed.returncode == 0 and "No unfinished enrollment" in resumed.stdout, resumed.stdout + resumed.stderr


def test_refused_connection_leaves_no_key_and_no_entry(softhsm: SoftHSM) -> None:
    rc, said = _enroll(softhsm, f"cmp+http://127.0.0.1:{_free_port()}/pkix/")
    assert rc == 6 and "Cannot reach the CMP server" in said, said
    _left_nothing(softhsm)


def test_a_404_from_a_wrong_path_leaves_no_key_and_no_entry(softhsm: SoftHSM, not_found_server: str) -> None:
    rc, said = _enroll(softhsm, not_found_server)
    assert rc == 6 and "HTTP 404" in said and "check the URL" in said, said
    _left_nothing(softhsm)
