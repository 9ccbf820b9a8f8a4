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

from support.softhsm import SoftHSM


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


# -- a truly unknown outcome: the CA may have issued, no answer came ------------------------------


@pytest.fixture
def answers_500() -> Iterator[str]:
    """A server that takes the whole request and answers HTTP 500 without a CMP message: the
    request may have been processed, so the outcome is unknown and the entry stays open."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length") or 0))
            self.send_response(500)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    srv = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield f"cmp+http://127.0.0.1:{srv.server_address[1]}/pkix/"
    finally:
        srv.shutdown()
        srv.server_close()


def _stuck(hsm: SoftHSM, url: str) -> str:
    """Enroll against ``url`` until the outcome is unknown; the entry's journal ID."""
    rc, said = _enroll(hsm, url)
    assert rc != 0 and "HTTP 500" in said, said
    [entry] = json.loads(hsm.run("journal", "list", "--json", check=True).stdout)
    assert entry["step"] == "csr" and entry["ca"] == url
    assert len(json.loads(hsm.run("keys", "list", "-t", "test", "--json", check=True).stdout)) == 1
    refused = hsm.run("journal", "abandon", entry["journal_id"])
    assert refused.returncode == 2 and "--remove-key" in refused.stderr and "--resume" in refused.stderr
    return str(entry["journal_id"])


def test_an_unknown_outcome_resumes_against_a_corrected_address(softhsm: SoftHSM, answers_500: str) -> None:
    """'enroll --resume --ca LOCATION' moves the entry to the right CA, which finishes it; the
    key is the one made for the first attempt, and the journal remembers the new address."""
    from support.lifecycle import make_token_ca

    _stuck(softhsm, answers_500)
    [key] = json.loads(softhsm.run("keys", "list", "-t", "test", "--json", check=True).stdout)
    ca = make_token_ca(softhsm)
    again = softhsm.run("enroll", "--resume", env={"TOKENISSUE_AUTH_CODE": "abcd-efgh-ijkl"})  # still unknown
    assert again.returncode != 0 and "HTTP 500" in again.stderr
    done = ca.run("enroll", "--resume", "--ca", str(ca.dir), "--json")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)  # one enrollment: one object
    assert out["resumed"] and out["key_id"] == key["id"], out
    assert json.loads(softhsm.run("journal", "list", "--json", check=True).stdout) == []
    listed = json.loads(ca.run("ca", "list", "--ca", str(ca.dir), "--json", check=True).stdout)
    assert [c["subject"] for c in listed if c["subject"].startswith("CN=Typo")] == ["CN=Typo,C=KR"]


def test_an_unknown_outcome_with_the_token_here_can_be_given_up_removing_its_key(softhsm: SoftHSM, answers_500: str) -> None:
    jid = _stuck(softhsm, answers_500)
    proc = softhsm.run("journal", "abandon", jid, "--remove-key")
    said = " ".join(proc.stdout.split())
    assert proc.returncode == 0, proc.stderr
    assert f"Ended enrollment {jid}" in said and "may have issued" in said and "key is removed" in said
    assert "revoke" in said and answers_500 in said
    _left_nothing(softhsm)


def test_resume_with_a_new_address_refuses_enrollments_of_several_cas(softhsm: SoftHSM, answers_500: str) -> None:
    from support.lifecycle import make_token_ca

    _stuck(softhsm, answers_500)
    ca = make_token_ca(softhsm)
    other = answers_500.replace("/pkix/", "/other/")
    proc = softhsm.run("enroll", "--token", "test", "--ca", other, "--ref", "1234567890", "--subject", "CN=Second,C=KR",
                       "--label", "second", env={"TOKENISSUE_AUTH_CODE": "abcd-efgh-ijkl"})  # fmt: skip
    assert proc.returncode != 0
    assert len(json.loads(softhsm.run("journal", "list", "--json", check=True).stdout)) == 2
    moved = ca.run("enroll", "--resume", "--ca", str(ca.dir))
    assert moved.returncode == 2 and "2 different CAs" in moved.stderr, moved.stderr
    assert {e["ca"] for e in json.loads(softhsm.run("journal", "list", "--json", check=True).stdout)} == {answers_500, other}
