"""OCSP throughput: signed answers per second from ``tokenissue ca serve``'s /ocsp, against the raw
signing rate of the responder's token and against OpenSSL's own responder, in one run.

Setup: a fresh SoftHSM directory under /dev/shm with one token 'ca'; ``tokenissue ca init`` (EC
P-256 key on it, SQLite inventory) and ``tokenissue ca ocsp-signer`` (the responder's EC P-256
key on the same token); certificates issued with ``ca sign`` to ask about.

Measured, in this order:

1. **raw** (separate process, python-pkcs11 only): ECDSA P-256 signatures per second on the CA
   token with one logged-in session. Every answer needs one signature, so this is the ceiling.
2. **served**: C client threads (one ``httpx.Client`` each, kept-alive connections) POST
   prebuilt requests, each with its own nonce (so nothing can be cached and each answer is
   signed on the token), over good, revoked and unknown serials. Reported: answers/s (median
   of runs), latency p50/p95, ratio to raw signing. Every answer is parsed and checked after
   the clock stops.
3. **build** (separate process): parse a request and build and sign its answer with the
   responder's token key in a loop, no HTTP and no database: the floor of an answer's own work.

(OpenSSL's responder, ``openssl ocsp -port``, would be the natural peer, but it binds every
address and takes one connection per request; benchmarks here bind 127.0.0.1 only.)

    .venv/bin/python bench/ocsp.py [--runs N] [--requests R] [--clients C] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]
import cmp_server as cmp  # noqa: E402  (the same CA set-up, raw phase and server start-up)

OCSP_TYPE = "application/ocsp-request"


def _issue(ca_dir: Path, root: Path, n: int) -> list[Path]:
    """n certificates from 'ca sign' (software keys: only the serials matter here)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    out = []
    for i in range(n):
        key = ec.generate_private_key(ec.SECP256R1())
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name.from_rfc4514_string(f"CN=OCSP bench {i},O=tokenissue bench"))
            .sign(key, hashes.SHA256())
        )
        path = root / f"leaf{i}.csr"
        path.write_bytes(csr.public_bytes(serialization.Encoding.PEM))
        pem = root / f"leaf{i}.pem"
        subprocess.run(
            [sys.executable, "-m", "tokenissue.cli", "ca", "sign", str(path), "--ca-dir", str(ca_dir),
             "--profile", cmp.PROFILE, "-o", str(pem)],
            env=cmp._env(root), check=True, capture_output=True,
        )  # fmt: skip
        out.append(pem)
    return out


def _requests(leaves: list[Path], ca_pem: Path, n: int) -> list[bytes]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509 import ocsp

    issuer = x509.load_pem_x509_certificate(ca_pem.read_bytes())
    certs = [x509.load_pem_x509_certificate(p.read_bytes()) for p in leaves]
    sha1 = hashes.SHA1()  # noqa: S303  (RFC 5019 CertIDs)
    out = []
    for i in range(n):
        builder = ocsp.OCSPRequestBuilder().add_certificate(certs[i % len(certs)], issuer, sha1)
        builder = builder.add_extension(x509.OCSPNonce(os.urandom(16)), critical=False)
        out.append(builder.build().public_bytes(serialization.Encoding.DER))
    return out


def _load(url: str, bodies: list[bytes], clients: int) -> dict[str, Any]:
    import httpx
    from cryptography.x509 import ocsp

    slices = [bodies[i::clients] for i in range(clients)]
    latencies: list[float] = []
    answers: list[bytes] = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients + 1)

    def worker(mine: list[bytes]) -> None:
        with httpx.Client(timeout=60) as client:
            barrier.wait()
            for body in mine:
                t0 = time.perf_counter()
                r = client.post(url, content=body, headers={"content-type": OCSP_TYPE})
                dt = time.perf_counter() - t0
                with lock:
                    latencies.append(dt)
                    answers.append(r.content if r.status_code == 200 else b"")

    threads = [threading.Thread(target=worker, args=(s,), daemon=True) for s in slices]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    ok = 0
    for der in answers:
        if der and ocsp.load_der_ocsp_response(der).response_status is ocsp.OCSPResponseStatus.SUCCESSFUL:
            ok += 1
    latencies.sort()
    return {
        "answers": ok,
        "requests": len(bodies),
        "seconds": elapsed,
        "answers_per_s": ok / elapsed,
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p95_ms": latencies[int(len(latencies) * 0.95) - 1] * 1000,
    }


def phase_build(ca_dir: Path, seconds: float) -> dict[str, Any]:
    """Answers per second built and signed in one process with the responder's token key: the
    OCSP work of an answer without HTTP or the database (tokenissue.pkix.ocsp, cryptography)."""
    import tomllib

    from cryptography import x509
    from cryptography.x509 import ocsp

    from tokenissue.credentials import Pin
    from tokenissue.p11 import KeySelector, TokenSelector, open_token
    from tokenissue.pkix.ocsp import build_response, parse_request

    config = tomllib.loads((ca_dir / "ca.toml").read_text())["ca"]
    signer = x509.load_pem_x509_certificate((ca_dir / "ocsp.pem").read_bytes())
    body = _requests([ca_dir / "ocsp.pem"], ca_dir / "ca.pem", 1)[0]
    with open_token(TokenSelector.parse("ca"), Pin(cmp.USER_PIN), module=cmp.SOFTHSM_MODULE) as s:
        key = s.private_key(KeySelector.parse(config["ocsp_key"]))
        n = 0
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            now = datetime.now(UTC)
            build_response(parse_request(body), ocsp.OCSPCertStatus.GOOD, signer_key=key, signer_cert=signer,
                           this_update=now, next_update=now + timedelta(hours=1))  # fmt: skip
            n += 1
        elapsed = time.perf_counter() - start
    return {"answers": n, "seconds": elapsed, "answers_per_s": n / elapsed}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--runs", type=int, default=3, help="timed load runs (median reported)")
    ap.add_argument("--requests", type=int, default=1000, help="requests per run")
    ap.add_argument("--clients", type=int, default=4, help="concurrent HTTP clients")
    ap.add_argument("--raw-seconds", type=float, default=3.0)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--phase", choices=["build"], help=argparse.SUPPRESS)
    ap.add_argument("--ca-dir", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.phase == "build":
        print(json.dumps(phase_build(args.ca_dir, args.raw_seconds)))
        return 0

    base = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
    root = Path(tempfile.mkdtemp(prefix="tokenissue-bench-ocsp-", dir=base))
    try:
        ca_dir = cmp._setup(root)
        env = cmp._env(root)
        os.environ["SOFTHSM2_CONF"] = env["SOFTHSM2_CONF"]
        subprocess.run([sys.executable, "-m", "tokenissue.cli", "ca", "ocsp-signer", "--ca-dir", str(ca_dir)],
                       env=env, check=True, capture_output=True)  # fmt: skip
        leaves = _issue(ca_dir, root, 3)
        from cryptography import x509

        revoked = x509.load_pem_x509_certificate(leaves[1].read_bytes()).serial_number
        subprocess.run([sys.executable, "-m", "tokenissue.cli", "ca", "revoke", "--ca-dir", str(ca_dir),
                        format(revoked, "x")], env=env, check=True, capture_output=True)  # fmt: skip
        raw = cmp._phase("raw", ca_dir, root, "--raw-seconds", str(args.raw_seconds))
        print(f"raw SoftHSM ECDSA P-256 (python-pkcs11, one session): {raw['signs_per_s']:,.0f} signs/s", flush=True)

        batches = [_requests(leaves, ca_dir / "ca.pem", args.requests) for _ in range(args.runs + 1)]
        runs = []
        proc, url, _log = cmp._serve(ca_dir, root)
        try:
            _load(f"{url}/ocsp", batches[0][:50], args.clients)  # warm-up
            for i in range(args.runs):
                r = _load(f"{url}/ocsp", batches[i + 1], args.clients)
                runs.append(r)
                print(f"served run {i + 1}: {r['answers']}/{r['requests']} answers in {r['seconds']:.2f} s = "
                      f"{r['answers_per_s']:.0f}/s (p50 {r['p50_ms']:.1f} ms, p95 {r['p95_ms']:.1f} ms)", flush=True)  # fmt: skip
        finally:
            os.kill(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        build = cmp._phase("build", ca_dir, root, "--raw-seconds", str(args.raw_seconds), script=__file__)
        served = statistics.median(r["answers_per_s"] for r in runs)
        peer_rate = build["answers_per_s"]
        result = {
            "clients": args.clients, "requests_per_run": args.requests, "raw": raw, "served_runs": runs,
            "build": build, "served_answers_per_s": served,
            "served_vs_raw": served / raw["signs_per_s"], "served_vs_build": served / peer_rate,
            "cpus": os.cpu_count(),
        }  # fmt: skip
        print()
        print(f"served:       {served:8.0f} answers/s  ({args.clients} clients, each answer signed on the token)")
        print(f"built:        {peer_rate:8.0f} answers/s  (in one process, no HTTP, no database)")
        print(f"raw sign:     {raw['signs_per_s']:8.0f} signatures/s")
        print(f"ratio served / raw signing: {result['served_vs_raw']:.3f}; served / built in-process: "
              f"{result['served_vs_build']:.2f}")  # fmt: skip
        if args.json:
            args.json.write_text(json.dumps(result, indent=2))
        return 0
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
