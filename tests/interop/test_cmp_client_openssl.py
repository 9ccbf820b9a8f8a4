"""Our CMP client with token keys against OpenSSL's CMP mock server (``openssl cmp -port``).

The mock server listens on all interfaces, so it runs in a private network namespace
(``unshare -n``, loopback only), and so must every client that talks to it: one shell script
per test session starts two mock servers in the namespace, runs the clients, and stops the
servers by PID. The script and its outputs stay in the test's directory.

* Mock A authenticates with PBM (``-srv_ref 1234 -srv_secret env:SECRET``).
* Mock B signs its answers (``-srv_cert``) and checks our signatures (``-srv_trusted``).

The mock never issues: it answers every request with its fixed ``-rsp_cert``, and our client
rejects a certificate that does not certify the requested key. So the certificates are
pre-issued by a software CA for keys generated on the token (``tokenissue keys generate``),
and the CSRs come from the token too (``tokenissue csr``). ``CMPEnroller`` is then driven
directly with the token keys: request (p10cr), renew (kur), revoke (rr). The full
``tokenissue enroll`` generates a new key, which the mock's certificate cannot match; here it
is run for what does not need a match (a wrong authorization code, an unreachable server, the
mock's certificate refused) and the end-to-end test runs against our own server.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from support.cli import USER_PIN
from support.openssl import has_openssl_cmp
from support.softhsm import SOFTHSM_MODULE, SoftHSM, make_softhsm
from support.software_ca import make_software_ca

REF = "1234"
SECRET = "mock-s3cret"
PORT_MAC = 18081
PORT_SIG = 18082


def _namespace_ok() -> bool:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return False
    try:
        proc = subprocess.run(
            ["unshare", "-n", "sh", "-c", "ip link set lo up"], capture_output=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(not Path(SOFTHSM_MODULE).exists(), reason="SoftHSM2 is not installed (make deps)"),
    pytest.mark.skipif(not has_openssl_cmp(), reason="openssl with the cmp command is not installed"),
    pytest.mark.skipif(not _namespace_ok(), reason="'unshare -n' is not permitted here (needs CAP_SYS_ADMIN or user namespaces)"),
]

# Runs inside the namespace with the token's environment; prints one JSON object of outcomes.
DRIVER = textwrap.dedent(
    """
    import json, os, sys
    from pathlib import Path
    from cryptography import x509
    from tokenissue import p11
    from tokenissue.cli._messages import say
    from tokenissue.credentials import Pin, Secret
    from tokenissue.errors import TokenIssueError
    from tokenissue.enroll.cmp import CMPEnroller
    from tokenissue.models import RevocationReason
    from tokenissue.pkix.csr import load_csr

    d = Path(sys.argv[1])
    ca = x509.load_pem_x509_certificate((d / "ca.pem").read_bytes())
    cert1 = x509.load_pem_x509_certificate((d / "cert1.pem").read_bytes())
    csr1, csr2 = load_csr((d / "k1.csr").read_bytes()), load_csr((d / "k2.csr").read_bytes())
    mac_url, sig_url = sys.argv[2], sys.argv[3]
    out = {}

    def outcome(name, fn):
        try:
            out[name] = {"ok": fn()}
        except Exception as e:
            # What the CLI prints: the library's sentence and, where it has one, its remedy.
            said = say(e) if isinstance(e, TokenIssueError) else str(e)
            out[name] = {"error": type(e).__name__, "message": said, "exit": getattr(e, "exit_code", None),
                         "failure_info": getattr(e, "failure_info", None)}

    def names(result):
        return {"serial": result.certificate.serial_number, "chain": [c.subject.rfc4514_string() for c in result.chain]}

    args = dict(profile="personal", token_serial=None, key_id=None, label=None)
    with p11.open_token(p11.TokenSelector(label="test"), Pin(os.environ["TOKENISSUE_PIN"]),
                        module=os.environ["TOKENISSUE_MODULE"]) as s:
        k1 = s.private_key(p11.KeySelector(label="k1"))
        k2 = s.private_key(p11.KeySelector(label="k2"))
        with CMPEnroller(mac_url, ref="1234", auth_code=Secret(os.environ["SECRET"]), trust=[ca]) as e:
            outcome("request", lambda: names(e.request(csr1, request_id="journal-1", **args)))
            outcome("request_again", lambda: names(e.request(csr1, request_id="journal-1", **args)))
            outcome("wrong_key", lambda: names(e.request(csr2, request_id="journal-2", **args)))
        with CMPEnroller(mac_url, ref="1234", auth_code=Secret("not-the-code"), trust=[ca]) as e:
            outcome("wrong_secret", lambda: names(e.request(csr1, request_id="journal-3", **args)))
        with CMPEnroller(mac_url, ref="1234", auth_code=Secret(os.environ["SECRET"])) as e:
            outcome("no_trust", lambda: names(e.request(csr1, request_id="journal-4", **args)))
        with CMPEnroller("cmp+http://127.0.0.1:9/pkix/", ref="1234", auth_code=Secret("x")) as e:
            outcome("down", lambda: names(e.request(csr1, request_id="journal-5", **args)))
        # The mock signs with srv.pem; its extraCerts leave out the root, so the CA comes from
        # trust (--ca-trust). The mock checks that kur and rr name its -rsp_cert (cert1) and
        # answers kur with it, so the renewal keeps the key (as 'renew' without --rekey does).
        with CMPEnroller(sig_url, trust=[ca]) as e:
            outcome("renew", lambda: names(e.renew(csr1, new_key=k1, current_cert=cert1, current_key=k1,
                                                   request_id="journal-6", **args)))
            outcome("revoke", lambda: e.revoke(cert1.serial_number, RevocationReason.SUPERSEDED, cert=cert1, key=k1))
    print(json.dumps(out))
    """
)

SCRIPT = textwrap.dedent(
    """
    set -u
    cd "$1"
    ip link set lo up
    openssl cmp -config "" -port {mac} -srv_ref {ref} -srv_secret env:SECRET \\
        -rsp_cert cert1.pem -rsp_capubs ca.pem >mock-mac.log 2>&1 &
    mac=$!
    openssl cmp -config "" -port {sig} -srv_cert srv.pem -srv_key srv.key -srv_untrusted ca.pem \\
        -srv_trusted ca.pem -rsp_cert cert1.pem >mock-sig.log 2>&1 &
    sig=$!
    up=
    for i in $(seq 300); do
        (exec 3<>/dev/tcp/127.0.0.1/{mac}) 2>/dev/null && (exec 3<>/dev/tcp/127.0.0.1/{sig}) 2>/dev/null && up=1 && break
        sleep 0.1
    done
    [ -n "$up" ] || {{ echo "the openssl cmp mock servers did not listen within 30 s" >&2; cat mock-*.log >&2; exit 1; }}
    "$PYTHON" driver.py "$1" cmp+http://127.0.0.1:{mac}/pkix/ cmp+http://127.0.0.1:{sig}/pkix/ >driver.json 2>driver.err
    # The full CLI. The mock's certificate is for key k1, never for the key enroll generates.
    export TOKENISSUE_AUTH_CODE="$SECRET"
    "$PYTHON" -m tokenissue.cli enroll --token test --ca cmp+http://127.0.0.1:{mac}/pkix/ --ref {ref} \\
        --subject CN=cli --label cli-mismatch --ca-trust ca.pem >cli-mismatch.out 2>cli-mismatch.err
    echo $? >cli-mismatch.rc
    TOKENISSUE_AUTH_CODE=wrong "$PYTHON" -m tokenissue.cli enroll --token test \\
        --ca cmp+http://127.0.0.1:{mac}/pkix/ --ref {ref} --subject CN=cli --label cli-wrong \\
        >cli-wrong.out 2>cli-wrong.err </dev/null
    echo $? >cli-wrong.rc
    "$PYTHON" -m tokenissue.cli enroll --token test --ca cmp+http://127.0.0.1:9/pkix/ --ref {ref} \\
        --subject CN=cli --label cli-down >cli-down.out 2>cli-down.err
    echo $? >cli-down.rc
    kill "$mac" "$sig"
    wait "$mac" "$sig" 2>/dev/null
    exit 0
    """
).format(mac=PORT_MAC, sig=PORT_SIG, ref=REF)


@dataclass
class Run:
    dir: Path
    hsm: SoftHSM
    cert1: x509.Certificate
    cert2: x509.Certificate
    ca: x509.Certificate
    outcomes: dict[str, Any]

    def cli(self, name: str) -> tuple[int, str]:
        rc = int((self.dir / f"cli-{name}.rc").read_text())
        return rc, (self.dir / f"cli-{name}.out").read_text() + (self.dir / f"cli-{name}.err").read_text()


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    d = tmp_path_factory.mktemp("cmp-mock")
    hsm = make_softhsm(d / "hsm")
    hsm.add_token("test")
    ca = make_software_ca(d / "ca", "CMP Mock Test CA")
    certs = []
    for label in ("k1", "k2"):
        hsm.run("keys", "generate", "--token", "test", "--label", label, "--type", "ec-p256", check=True)
        hsm.run("csr", "--token", "test", "--key", label, "--subject", f"CN={label}", "-o", str(d / f"{label}.csr"),
                check=True)  # fmt: skip
        public = x509.load_pem_x509_csr((d / f"{label}.csr").read_bytes()).public_key()
        certs.append(ca.issue(public, label))
    srv_key = ec.generate_private_key(ec.SECP256R1())
    (d / "srv.key").write_bytes(
        srv_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    (d / "srv.pem").write_bytes(_pem(ca.issue(srv_key.public_key(), "CMP mock server")))
    (d / "ca.pem").write_bytes(ca.pem)
    (d / "cert1.pem").write_bytes(_pem(certs[0]))
    (d / "cert2.pem").write_bytes(_pem(certs[1]))
    (d / "driver.py").write_text(DRIVER)
    (d / "run.sh").write_text(SCRIPT)
    env = {**hsm.env, "SECRET": SECRET, "PYTHON": sys.executable}
    proc = subprocess.run(
        ["unshare", "-n", "bash", str(d / "run.sh"), str(d)], env=env, capture_output=True, text=True,
        timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    raw = (d / "driver.json").read_text()
    assert raw, (d / "driver.err").read_text()
    return Run(d, hsm, certs[0], certs[1], ca.cert, json.loads(raw))


def test_request_p10cr_with_token_csr(run: Run) -> None:
    got = run.outcomes["request"]
    assert got == {"ok": {"serial": run.cert1.serial_number, "chain": ["CN=CMP Mock Test CA"]}}, got
    # Asking again with the same journal ID (a resumed enrollment) is answered the same.
    assert run.outcomes["request_again"] == got


def test_certificate_for_another_key_is_refused(run: Run) -> None:
    got = run.outcomes["wrong_key"]
    assert got["error"] == "CMPError" and got["failure_info"] == "badCertTemplate", got
    assert "issued a certificate for another key than the one requested; it was refused." in got["message"]


def test_wrong_secret_is_rejected_with_the_server_reason(run: Run) -> None:
    got = run.outcomes["wrong_secret"]
    assert got["error"] == "CMPError" and got["exit"] == 6, got
    # OpenSSL 3.0 reports a bad MAC as badRequest "wrong pbm value", MAC'd with the right secret,
    # which we cannot check: the text is shown as coming from an unauthenticated answer.
    assert "refused the request in an unauthenticated answer: badRequest (wrong pbm value)" in got["message"]
    assert "check --ref and the authorization code" in got["message"]
    assert "not-the-code" not in got["message"]


def test_no_root_without_trust(run: Run) -> None:
    # The mock sends caPubs only in an ip, never in a cp: without --ca-trust there is no root.
    got = run.outcomes["no_trust"]
    assert got["error"] == "RequestRejected" and "give the root with --ca-trust" in got["message"], got


def test_server_down_is_unavailable(run: Run) -> None:
    got = run.outcomes["down"]
    assert got["error"] == "CANotReached" and got["exit"] == 6, got
    assert got["message"].startswith("Cannot reach the CMP server at http://127.0.0.1:9/pkix/")


def test_renew_kur_signed_by_the_current_token_key(run: Run) -> None:
    got = run.outcomes["renew"]
    assert got == {"ok": {"serial": run.cert1.serial_number, "chain": ["CN=CMP Mock Test CA"]}}, got
    log = (run.dir / "mock-sig.log").read_text()
    assert "error" not in log.lower(), log


def test_revoke_rr_signed_by_the_token_key(run: Run) -> None:
    assert run.outcomes["revoke"] == {"ok": None}, run.outcomes["revoke"]


def test_cli_enroll_refuses_the_mock_certificate_and_removes_the_key(run: Run) -> None:
    rc, out = run.cli("mismatch")
    assert rc == 6, out
    assert "issued a certificate for another key than the one requested" in out
    assert SECRET not in out
    labels = {k["label"] for k in json.loads(run.hsm.run("keys", "list", "-t", "test", "--json", check=True).stdout)}
    assert "cli-mismatch" not in labels and {"k1", "k2"} <= labels


def test_cli_enroll_wrong_code(run: Run) -> None:
    rc, out = run.cli("wrong")
    assert rc == 6, out
    assert "wrong pbm value" in out and "check --ref and the authorization code" in out
    assert "Traceback" not in out


def test_cli_enroll_server_down(run: Run) -> None:
    rc, out = run.cli("down")
    assert rc == 6, out
    assert "Cannot reach the CMP server at http://127.0.0.1:9/pkix/" in out
    assert "Traceback" not in out and USER_PIN not in out
