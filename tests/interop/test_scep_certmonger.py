"""certmonger (Debian 0.79.17) enrolls and renews over SCEP (RFC 8894) at /scep on `ca serve`:
the real daemon on a private socket, in a private mount namespace as in
test_certmonger_daemon.py, its RSA key made by certmonger through NSS on a SoftHSM token, the
challenge the registration's REFERENCE:CODE given in a file (``getcert request -l``).

What certmonger 0.79.17 does, as captured against micromdm's scepserver and this server with
tests/support/recording_proxy.py:

* ``getcert add-scep-ca -u URL``: GET URL?operation=GetCACaps&message=0, then
  GET URL?operation=GetCACert&message=0 (with application/x-x509-ca-cert and one certificate it
  then walks message=1, 2, ... Dogtag-style until it sees a duplicate). The RA is the certificate
  with keyEncipherment (or dataEncipherment) in its key usage; the CA the other.
* Every submission: GET ...GetCACaps&message=0, then GET URL?operation=PKIOperation&message=
  <base64, URL-encoded>. Always GET, even when POSTPKIOperation is offered.
* pkiMessage: SignedData, digest SHA-256 (if "SHA-256" is offered; else SHA-512/SHA-1/MD5),
  signatureAlgorithm rsaEncryption; signed attributes messageType, contentType, signingTime,
  senderNonce (16 bytes), messageDigest, transactionID (a decimal string). EnvelopedData to the
  RA only: keyEncryptionAlgorithm rsaEncryption (NULL parameters), content AES-256-CBC when
  "AES" is offered (else DES3 if offered, else single DES).
* Enrollment: PKCSReq (19) signed with a self-signed certificate of the new key; the CSR carries
  challengePassword. Renewal (``getcert resubmit``): PKCSReq (19) again, not RenewalReq (17),
  signed with the issued certificate and its key, and the CSR carries the same challenge again.
* CertRep: must verify with the RA and CA certificates from GetCACert, recipientNonce must
  equal its senderNonce, transactionID must equal its own; PENDING -> it polls with
  GetCertInitial (20); FAILURE -> CA_REJECTED with the failInfo's text in ca-error.
* With the key in NSS, certmonger decrypts the CertRep's content key itself and refuses an
  EnvelopedData whose keyEncryptionAlgorithm has no parameters ("PKCS#7 recipient info is
  missing parameters"): rsaEncryption must carry an explicit NULL.

"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from support.cli import USER_PIN
from support.cmp_server import Served, register, served, snapshot
from support.lifecycle import TokenCA, make_token_ca
from support.recording_proxy import Recorder, recording
from support.softhsm import SOFTHSM_MODULE, SoftHSM

SOFTHSM_DEFAULT_CONF = Path("/etc/softhsm/softhsm2.conf")
SUBJECT = "CN=scep host,O=tokenissue tests,C=KR"
_MISSING = [
    t for t in ("certmonger", "getcert", "certutil", "modutil", "unshare", "openssl") if shutil.which(t) is None
]
pytestmark = [
    pytest.mark.skipif(bool(_MISSING), reason=f"not installed: {', '.join(_MISSING)}"),
    pytest.mark.skipif(
        not Path("/usr/lib/certmonger/scep-submit").exists(), reason="certmonger's scep-submit is missing"
    ),
    pytest.mark.skipif(os.geteuid() != 0, reason="a private mount namespace needs root"),
    pytest.mark.skipif(not SOFTHSM_DEFAULT_CONF.exists(), reason="SoftHSM's default configuration file is missing"),
]
#: Terminal states of a request as `getcert list` shows them.
DONE = "MONITORING|CA_REJECTED|CA_UNREACHABLE|CA_UNCONFIGURED|NEED_GUIDANCE"


@dataclass
class Certmonger:
    """A private certmonger: state directories, an NSS database with the SoftHSM module, PIN file."""

    d: Path
    hsm: SoftHSM

    @property
    def nss(self) -> str:
        return f"sql:{self.d}/nss"

    @property
    def pin(self) -> Path:
        return self.d / "pin"

    def challenge(self, name: str, value: str) -> Path:
        f = self.d / f"challenge-{name}"
        f.write_text(value + "\n")
        f.chmod(0o600)
        return f

    def run(self, body: str) -> subprocess.CompletedProcess[str]:
        """Run ``body`` (bash) with the daemon up, in a private mount namespace; the daemon is
        stopped by its PID when the script ends."""
        d = self.d
        script = f"""set -e
mount --bind {self.hsm.conf} {SOFTHSM_DEFAULT_CONF}
unset SOFTHSM2_CONF
export CERTMONGER_CONFIG_DIR={d}/cfg CERTMONGER_REQUESTS_DIR={d}/req CERTMONGER_CAS_DIR={d}/cas
export CERTMONGER_TMPDIR={d}/tmp CERTMONGER_LOCAL_CA_DIR={d}/local CERTMONGER_PVT_ADDRESS=unix:path={d}/sock
certmonger -n -L -P {d}/sock -d 3 > {d}/certmonger.log 2>&1 &
echo $! > {d}/certmonger.pid
trap 'kill $(cat {d}/certmonger.pid)' EXIT
for i in $(seq 1 50); do [ -S {d}/sock ] && break; sleep 0.1; done
wait_done() {{ for i in $(seq 1 120); do getcert list -i "$1" | grep -qE "status: ({DONE})" && break; sleep 0.5; done; }}
{body}
"""
        proc = subprocess.run(["unshare", "--mount", "bash", "-c", script], env=self.hsm.env, capture_output=True,
                              text=True, timeout=300, check=False)  # fmt: skip
        if proc.returncode != 0 and ("Operation not permitted" in proc.stderr or "ermission denied" in proc.stderr):
            pytest.skip(f"no private mount namespace here: {proc.stderr.strip()}")
        return proc

    def log(self) -> str:
        f = self.d / "certmonger.log"
        return f.read_text(errors="replace") if f.exists() else ""

    def add_ca(self, url: str) -> str:
        return f"getcert add-scep-ca -c tokenissue -u {url}/scep\nfor i in $(seq 1 60); do getcert list-cas -c tokenissue | grep -q 'SCEP CA certificate' && break; sleep 0.5; done\ngetcert list-cas -c tokenissue"

    def request(self, nick: str, challenge: Path) -> str:
        return (f"getcert request -c tokenissue -d {self.nss} -n {nick} -t test -p {self.pin} -N '{SUBJECT}' "
                f"-l {challenge} -I {nick}\nwait_done {nick}\ngetcert list -i {nick}")  # fmt: skip

    def export(self, nick: str, out: str) -> str:
        return f"certutil -L -d {self.nss} -h test -n test:{nick} -a -f {self.pin} > {self.d}/{out}"

    def wait_renewed(self, nick: str, first: str, out: str) -> str:
        """Wait until the certificate in the database is no longer ``first`` (right after
        ``getcert resubmit`` the request still says MONITORING), then keep it as ``out``."""
        return (f"for i in $(seq 1 120); do {self.export(nick, out)}; cmp -s {self.d}/{first} {self.d}/{out} || break; "
                f"getcert list -i {nick} | grep -q ca-error: && break; sleep 0.5; done\nwait_done {nick}")  # fmt: skip


@pytest.fixture
def certmonger(softhsm: SoftHSM) -> Certmonger:
    d = Path(softhsm.root) / "certmonger"
    for sub in ("cfg", "req", "cas", "tmp", "local", "nss"):
        (d / sub).mkdir(parents=True)
    cm = Certmonger(d, softhsm)
    cm.pin.write_text(USER_PIN + "\n")
    cm.pin.chmod(0o600)
    env = softhsm.env
    subprocess.run(["certutil", "-N", "-d", cm.nss, "--empty-password"], env=env, check=True, capture_output=True)
    subprocess.run(["modutil", "-dbdir", cm.nss, "-add", "softhsm", "-libfile", SOFTHSM_MODULE, "-force"],
                   env=env, check=True, capture_output=True, input=b"\n")  # fmt: skip
    return cm


@pytest.fixture
def scep(softhsm: SoftHSM) -> Iterator[tuple[TokenCA, Served, x509.Certificate]]:
    ca = make_token_ca(softhsm)
    proc = ca.run("ca", "scep-ra", "--ca-dir", str(ca.dir))
    assert proc.returncode == 0, proc.stderr
    ra = x509.load_pem_x509_certificate((ca.dir / "scep-ra.pem").read_bytes())
    with served(ca) as server:
        yield ca, server, ra


def _scep_requests(rec: Recorder) -> list[tuple[str, str | None]]:
    return [(e.method, (e.query.get("operation") or [None])[0]) for e in rec.exchanges if e.path == "/scep"]


def _certrep_envelope(answer: bytes, tmp: Path) -> str:
    """`openssl cms -cmsout -print` of the EnvelopedData inside a CertRep (not decrypted)."""
    (tmp / "certrep.der").write_bytes(answer)
    subprocess.run(["openssl", "cms", "-verify", "-noverify", "-inform", "DER", "-in", str(tmp / "certrep.der"),
                    "-out", str(tmp / "envelope.der")], check=True, capture_output=True)  # fmt: skip
    return subprocess.run(["openssl", "cms", "-cmsout", "-print", "-inform", "DER", "-in", str(tmp / "envelope.der")],
                          check=True, capture_output=True, text=True).stdout  # fmt: skip


def test_certmonger_enrolls_with_the_code_and_renews(
    scep: tuple[TokenCA, Served, x509.Certificate], certmonger: Certmonger, tmp_path: Path
) -> None:
    ca, server, _ra = scep
    reg = register(ca.dir, SUBJECT, "tls-client")
    challenge = certmonger.challenge("host", f"{reg.ref}:{reg.code.reveal()}")
    with recording(server.url) as (url, rec):
        body = "\n".join([certmonger.add_ca(url), certmonger.request("host", challenge), certmonger.export("host", "first.pem"),
                          "getcert resubmit -i host", certmonger.wait_renewed("host", "first.pem", "second.pem"),
                          "getcert list -i host"])  # fmt: skip
        proc = certmonger.run(body)
    out = proc.stdout + proc.stderr + certmonger.log()[-20000:] + server.stderr()
    assert proc.returncode == 0, out
    assert proc.stdout.count("status: MONITORING") == 2, out
    # list-cas shows the CA certificate certmonger took from GetCACert (it keeps the RA, the
    # one with keyEncipherment, as the encryption certificate, and does not list it).
    assert ca.certificate.fingerprint(hashes.SHA1()).hex().upper() in proc.stdout.replace(" ", ""), proc.stdout  # noqa: S303 - getcert prints SHA-1 thumbprints

    first = x509.load_pem_x509_certificate((certmonger.d / "first.pem").read_bytes())
    second = x509.load_pem_x509_certificate((certmonger.d / "second.pem").read_bytes())
    assert first.issuer == second.issuer == ca.certificate.subject
    assert first.subject == second.subject == x509.Name.from_rfc4514_string(SUBJECT)
    assert second.serial_number != first.serial_number and first.public_key() == second.public_key(), out
    records = {r.serial: r for r in ca.records()}
    assert records[first.serial_number].profile == "tls-client"
    # certmonger renews with PKCSReq (19) signed by the issued certificate, its CSR carrying the
    # already-used challenge again: the server must take that as a renewal, not a reused code.
    assert records[second.serial_number].replaces == first.serial_number
    regs = ca.json("ra", "list", "--ca-dir", str(ca.dir))
    assert [r["status"] for r in regs if r["ref"] == reg.ref] == ["used"]

    # What certmonger sent: GET only, GetCACaps before every PKIOperation, no GetCACert walk
    # (the answer is application/x-x509-ca-ra-cert).
    ops = _scep_requests(rec)
    assert {m for m, _ in ops} == {"GET"}, ops
    assert ops.count(("GET", "PKIOperation")) == 2, ops
    assert all(ops[i - 1] == ("GET", "GetCACaps") for i, op in enumerate(ops) if op[1] == "PKIOperation"), ops
    cacert = [e for e in rec.exchanges if e.query.get("operation") == ["GetCACert"]]
    assert cacert and cacert[0].answer_type == "application/x-x509-ca-ra-cert"
    assert len(cacert) == 1 or all(e.query.get("message") == ["0"] for e in cacert), [e.summary() for e in cacert]
    pki = [e for e in rec.exchanges if e.query.get("operation") == ["PKIOperation"]]
    assert all(e.answer_type == "application/x-pki-message" for e in pki)
    # The CertRep's key transport must say rsaEncryption with NULL parameters, or certmonger's
    # NSS path refuses it.
    envelope = _certrep_envelope(pki[0].answer_body, tmp_path)
    assert "rsaEncryption" in envelope and "parameter: NULL" in envelope, envelope

    # The key was made on the token by certmonger through NSS; the certificate is next to it.
    keys = json.loads(certmonger.hsm.run("keys", "list", "-t", "test", "--json", env={"TOKENISSUE_PIN": USER_PIN},
                                         check=True).stdout)  # fmt: skip
    [key] = [k for k in keys if k["has_certificate"]]
    assert key["born_on_token"] and key["never_extractable"] and not key["extractable"]
    lines = [line for line in server.access_log() if line.get("scep")]
    assert [line["scep"] for line in lines] == ["pkcs_req", "pkcs_req"], lines
    assert "replaces" not in lines[0] and lines[1]["replaces"] == format(first.serial_number, "x")


def test_a_wrong_code_is_rejected(
    scep: tuple[TokenCA, Served, x509.Certificate], certmonger: Certmonger, tmp_path: Path
) -> None:
    ca, server, _ = scep
    reg = register(ca.dir, SUBJECT, "tls-client")
    before = snapshot(ca.dir)
    challenge = certmonger.challenge("host", f"{reg.ref}:AAAA-BBBB-CCCC-DDDD")
    proc = certmonger.run("\n".join([certmonger.add_ca(server.url), certmonger.request("host", challenge)]))
    out = proc.stdout + proc.stderr + certmonger.log()[-20000:] + server.stderr()
    assert proc.returncode == 0, out
    # FAILURE in the CertRep: certmonger stops (CA_REJECTED), the failInfo's text in ca-error.
    assert "status: CA_REJECTED" in proc.stdout, out
    assert "ca-error:" in proc.stdout, out
    assert snapshot(ca.dir)["certs"] == before["certs"]
    assert "AAAA" not in server.stderr()  # the typed code is never logged
    (line,) = [entry for entry in server.access_log() if entry.get("scep")]
    assert line["auth"] == "wrong-code" and line["ref_failures"] == 1, line


def test_a_used_code_is_rejected(
    scep: tuple[TokenCA, Served, x509.Certificate], certmonger: Certmonger, tmp_path: Path
) -> None:
    ca, server, _ = scep
    reg = register(ca.dir, SUBJECT, "tls-client")
    challenge = certmonger.challenge("one", f"{reg.ref}:{reg.code.reveal()}")
    # Two requests with the same code, each with its own key: the first is issued, the second
    # (a new key, not signed with an issued certificate: not a renewal) is refused.
    body = "\n".join([certmonger.add_ca(server.url), certmonger.request("one", challenge),
                      certmonger.request("two", challenge)])  # fmt: skip
    before = snapshot(ca.dir)
    proc = certmonger.run(body)
    out = proc.stdout + proc.stderr + certmonger.log()[-20000:] + server.stderr()
    assert proc.returncode == 0, out
    statuses = [line.strip() for line in proc.stdout.splitlines() if line.strip().startswith("status:")]
    assert statuses == ["status: MONITORING", "status: CA_REJECTED"], out
    assert len(snapshot(ca.dir)["certs"]) == len(before["certs"]) + 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
