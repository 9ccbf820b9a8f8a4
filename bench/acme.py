"""ACME issuance: `tokenissue enroll --ca acme+https://...` vs certbot in --csr mode, on one Pebble.

Pebble and pebble-challtestsrv run on 127.0.0.1 (tests/support/acme.py; PEBBLE_VA_NOSLEEP=1,
real http-01 validation). Both contenders are whole fresh processes timed from here around
``subprocess.run``, run INTERLEAVED (tokenissue, peer, tokenissue, ...) after one untimed
warm-up round, which also registers each one's ACME account and fills a bytecode cache
(PYTHONPYCACHEPREFIX in the bench directory, PYTHONDONTWRITEBYTECODE dropped) for both:

* ``tokenissue enroll -t bench --domain bench.example --ca acme+https://... --http-01-address
  127.0.0.1:PORT`` — key generated on a SoftHSM token (/dev/shm), CSR signed in the token, the
  ACME order with tokenissue's built-in http-01 responder, certificate + chain written to the token.
* peer: ``certbot certonly --csr FILE --standalone`` (certbot's own http-01 server), with a
  CSR made beforehand by a software key (certbot never sees a token). certbot is installed with
  pip into a separate venv (``--certbot-venv``, default /tmp/tokenissue-bench-certbot), never
  into the project's. If that fails, the peer is the acme library's own flow (``new_order``,
  ``standalone`` http-01 server, ``poll_and_finalize``) in a fresh process, and the output says so.

Reported: the median ms of each and the ratio tokenissue / peer (lower is better).

    .venv/bin/python bench/acme.py [--runs N] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from support.acme import CHALLTESTSRV, PEBBLE, Pebble, run_pebble  # noqa: E402
from support.servers import free_port  # noqa: E402

SOFTHSM_MODULE = "/usr/lib/softhsm/libsofthsm2.so"
USER_PIN = "246810"
SO_PIN = "13579135"
DOMAIN = "bench.example"

# The peer when certbot cannot be installed: the acme library's example flow, software key.
LIB_FLOW = textwrap.dedent(
    """
    import sys, threading
    from acme import challenges, client, messages, standalone
    from cryptography.hazmat.primitives.asymmetric import ec
    import josepy as jose
    directory_url, csr_file, port, trust = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    key = jose.JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
    net = client.ClientNetwork(key, alg=jose.ES256, verify_ssl=trust, user_agent="bench")
    acme = client.ClientV2(client.ClientV2.get_directory(directory_url, net), net)
    acme.new_account(messages.NewRegistration.from_data(terms_of_service_agreed=True))
    order = acme.new_order(open(csr_file, "rb").read())
    resources = set()
    for authz in order.authorizations:
        chall = next(c for c in authz.body.challenges if isinstance(c.chall, challenges.HTTP01))
        response, validation = chall.response_and_validation(key)
        resources.add(standalone.HTTP01RequestHandler.HTTP01Resource(chall=chall.chall, response=response, validation=validation))
    servers = standalone.HTTP01DualNetworkedServers(("127.0.0.1", port), resources)
    servers.serve_forever()
    try:
        for authz in order.authorizations:
            chall = next(c for c in authz.body.challenges if isinstance(c.chall, challenges.HTTP01))
            acme.answer_challenge(chall, chall.chall.response(key))
        order = acme.poll_and_finalize(order)
    finally:
        servers.shutdown_and_server_close()
    assert "BEGIN CERTIFICATE" in order.fullchain_pem
    """
)


def _run(argv: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False, timeout=300)
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:3])}... exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return dt


def _certbot(venv: Path) -> Path | None:
    exe = venv / "bin" / "certbot"
    if exe.exists():
        return exe
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=120)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "certbot"], check=True, capture_output=True, timeout=600)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as e:
        print(f"certbot could not be installed into {venv} ({e}); the peer is the acme library's flow.", file=sys.stderr)
        return None
    return exe if exe.exists() else None


def _softhsm(root: Path) -> dict[str, str]:
    (root / "tokens").mkdir(parents=True)
    conf = root / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {root / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENISSUE_") and k != "PYTHONDONTWRITEBYTECODE"}
    env.update(SOFTHSM2_CONF=str(conf), TOKENISSUE_MODULE=SOFTHSM_MODULE, TOKENISSUE_PIN=USER_PIN,
               TOKENISSUE_STATE_DIR=str(root / "state"), PYTHONPYCACHEPREFIX=str(root / "pycache"))  # fmt: skip
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", "bench", "--so-pin", SO_PIN, "--pin", USER_PIN],
                   env=env, check=True, capture_output=True)  # fmt: skip
    return env


def _csr(root: Path) -> Path:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, DOMAIN)]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(DOMAIN)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    f = root / "peer.csr"
    f.write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    return f


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5, help="timed issuances per contender (default 5)")
    ap.add_argument("--json", type=Path, help="also save the results here")
    ap.add_argument("--certbot-venv", type=Path, default=Path(tempfile.gettempdir()) / "tokenissue-bench-certbot")
    args = ap.parse_args(argv)
    if not PEBBLE.exists() or not CHALLTESTSRV.exists() or not Path(SOFTHSM_MODULE).exists():
        print("acme: pebble or softhsm2 is not installed (make deps); skipped.")
        return 0
    certbot = _certbot(args.certbot_venv)
    base = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())
    root = base / f"tokenissue-bench-acme-{uuid.uuid4().hex[:8]}"
    root.mkdir(mode=0o700)
    try:
        env = _softhsm(root / "hsm")
        csr = _csr(root)
        with run_pebble(root / "pebble") as p:
            ti = _tokenissue(p, env)
            peer, peer_name = _peer(p, root, csr, certbot)
            ti_ms, peer_ms = [], []
            ti(0)
            peer(0)  # warm-up: accounts, bytecode caches
            for i in range(1, args.runs + 1):
                ti_ms.append(ti(i) * 1000)
                peer_ms.append(peer(i) * 1000)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    t, q = statistics.median(ti_ms), statistics.median(peer_ms)
    print(f"ACME issuance on Pebble (real http-01), {args.runs} runs, median ms:")
    print(f"  tokenissue enroll (token key)   {t:8.0f}")
    print(f"  {peer_name:<31} {q:8.0f}")
    print(f"  ratio tokenissue / peer         {t / q:8.2f}x")
    if args.json:
        args.json.write_text(json.dumps({"runs": args.runs, "peer": peer_name, "tokenissue_ms": ti_ms,
                                         "peer_ms": peer_ms, "median_tokenissue_ms": t, "median_peer_ms": q,
                                         "ratio": t / q}, indent=2))  # fmt: skip
    return 0


def _tokenissue(p: Pebble, env: dict[str, str]) -> object:
    script = Path(sys.executable).parent / "tokenissue"
    exe = [str(script)] if script.exists() else [sys.executable, "-m", "tokenissue.cli"]

    def run(i: int) -> float:
        return _run([*exe, "enroll", "-t", "bench", "--domain", DOMAIN, "--label", f"acme-{i}", "--ca", p.location,
                     "--acme-trust", str(p.trust), "--ca-trust", str(p.dir / "root.pem"),
                     "--http-01-address", p.http01_address, "--json"], env)  # fmt: skip

    from cryptography.hazmat.primitives import serialization

    (p.dir / "root.pem").write_bytes(p.root().public_bytes(serialization.Encoding.PEM))
    return run


def _peer(p: Pebble, root: Path, csr: Path, certbot: Path | None) -> tuple[object, str]:
    # Bytecode is cached (after the warm-up) for the peer as for tokenissue, as in a wheel install.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(REQUESTS_CA_BUNDLE=str(p.trust), PYTHONPYCACHEPREFIX=str(root / "pycache"))
    if certbot is not None:
        cb = root / "certbot"

        def run_certbot(i: int) -> float:
            out = cb / f"out-{i}"
            return _run([str(certbot), "certonly", "--non-interactive", "--agree-tos", "--register-unsafely-without-email",
                         "--server", p.directory, "--csr", str(csr), "--standalone", "--http-01-address", "127.0.0.1",
                         "--http-01-port", str(p.http_port), "--config-dir", str(cb / "config"), "--work-dir",
                         str(cb / "work"), "--logs-dir", str(cb / "logs"), "--cert-path", f"{out}-cert.pem",
                         "--chain-path", f"{out}-chain.pem", "--fullchain-path", f"{out}-fullchain.pem"], env)  # fmt: skip

        return run_certbot, "certbot certonly --csr"
    flow = root / "lib_flow.py"
    flow.write_text(LIB_FLOW)

    def run_lib(i: int) -> float:
        return _run([sys.executable, str(flow), p.directory, str(csr), str(p.http_port), str(p.trust)], env)

    return run_lib, "acme library example flow"


if __name__ == "__main__":
    del free_port
    sys.exit(main())
