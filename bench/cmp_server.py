"""CMP server throughput: certificates per second from ``tokenissue ca serve`` vs raw token signing.

Setup: a fresh SoftHSM directory under /dev/shm with one token 'ca'; ``tokenissue ca init``
(EC P-256 CA key on that token, SQLite inventory in the CA directory, synchronous=FULL).

Measured, in this order:

1. **raw** (separate process, python-pkcs11 only): ECDSA P-256 signatures per second on the CA
   token with one logged-in session — SHA-256 on the host, CKM_ECDSA on the token, as
   tokenissue signs on SoftHSM. This is the ceiling: every certificate needs one CA signature.
2. **served** (``tokenissue ca serve`` subprocess on 127.0.0.1, uvicorn, one worker): C
   concurrent clients (threads, one ``httpx.Client`` each) post prebuilt p10cr requests,
   each for its own registration (PBM, 500 iterations like OpenSSL's client, implicitConfirm so
   one round trip is one certificate). Reported: certificates/s (median of runs), latency
   p50/p95, and the ratio to the raw signing rate. Requests are built before the clock starts;
   responses are checked after it stops.
3. **in-process** (separate process): the same requests through ``CMPService.handle`` directly
   (no HTTP), once plain (rate) and once under cProfile, whose self-times are bucketed:
   token (python-pkcs11 + tokenissue.p11), PBM hashing, database (SQLAlchemy + sqlite3 +
   tokenissue.inventory), ASN.1 (pyasn1), X.509 (cryptography), other Python.

    .venv/bin/python bench/cmp_server.py [--runs N] [--requests R] [--clients C] [--json FILE]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

SOFTHSM_MODULE = "/usr/lib/softhsm/libsofthsm2.so"
USER_PIN = "246810"
SO_PIN = "13579135"
HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CA_SUBJECT = "CN=Bench CMP CA,O=tokenissue bench"
PROFILE = "personal"
CMP_TYPE = "application/pkixcmp"


def _env(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENISSUE_")}
    env.update(
        {
            "SOFTHSM2_CONF": str(root / "softhsm2.conf"),
            "TOKENISSUE_MODULE": SOFTHSM_MODULE,
            "TOKENISSUE_CA_PIN": USER_PIN,
            "PYTHONPATH": str(REPO),
        }
    )
    return env


def _init_token(root: Path) -> None:
    """A SoftHSM config and token directory under ``root`` with one token 'ca'."""
    (root / "tokens").mkdir(parents=True)
    (root / "softhsm2.conf").write_text(
        f"directories.tokendir = {root / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n"
    )
    subprocess.run(
        ["softhsm2-util", "--init-token", "--free", "--label", "ca", "--so-pin", SO_PIN, "--pin", USER_PIN],
        env=_env(root), check=True, capture_output=True,
    )  # fmt: skip


def _init_ca(root: Path, ca_dir: Path, *extra: str) -> Path:
    """``tokenissue ca init`` in ``ca_dir``, EC P-256 key on the token 'ca' (``extra``: e.g. --db, --label)."""
    subprocess.run(
        [sys.executable, "-m", "tokenissue.cli", "ca", "init", "--ca", str(ca_dir), "--token", "ca",
         "--subject", CA_SUBJECT, "--type", "ec-p256", *extra],
        env=_env(root), check=True, capture_output=True,
    )  # fmt: skip
    return ca_dir


def _setup(root: Path) -> Path:
    _init_token(root)
    return _init_ca(root, root / "ca")


def _requests(ca_dir: Path, n: int, tag: str) -> list[bytes]:
    """n p10cr requests, each with its own registration, PBM-protected with its code."""
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

    from tokenissue.ca.authority import CertificateAuthority
    from tokenissue.ca.registration import RegistrationAuthority
    from tokenissue.pkix.csr import build_csr
    from tokenissue.protocols.cmp import MessageHeader, SharedSecret, build_p10cr, encode_message, protect_pbm

    out = []
    with CertificateAuthority.open(ca_dir, module=SOFTHSM_MODULE) as ca:
        ra = RegistrationAuthority(ca)
        for i in range(n):
            reg, code = ra.register(f"CN=Bench {tag} {i},O=tokenissue bench", PROFILE)
            csr = build_csr(ec.generate_private_key(ec.SECP256R1()), x509.Name.from_rfc4514_string(reg.subject))
            msg = build_p10cr(csr, header=MessageHeader(implicit_confirm=True))
            out.append(encode_message(protect_pbm(msg, SharedSecret.from_text(code.reveal()), sender_kid=reg.ref.encode(), iterations=500)))
    return out


# -- phase 1: raw signing rate -----------------------------------------------------------------


def phase_raw(ca_dir: Path, seconds: float) -> dict[str, Any]:
    import hashlib
    import tomllib

    import pkcs11
    from pkcs11 import Mechanism, ObjectClass

    config = tomllib.loads((ca_dir / "ca.toml").read_text())
    key_id = bytes.fromhex(str(config["ca"]["key"]).removeprefix("id:"))
    lib = pkcs11.lib(SOFTHSM_MODULE)
    token = lib.get_token(token_label="ca")
    with token.open(user_pin=USER_PIN) as session:
        key = session.get_key(object_class=ObjectClass.PRIVATE_KEY, id=key_id)
        data = os.urandom(600)  # about a TBSCertificate
        n = 0
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            key.sign(hashlib.sha256(data + n.to_bytes(4, "big")).digest(), mechanism=Mechanism.ECDSA)
            n += 1
        elapsed = time.perf_counter() - start
    return {"signs": n, "seconds": elapsed, "signs_per_s": n / elapsed}


# -- phase 3: in-process handle() with a profile -----------------------------------------------

_BUCKETS = [
    ("token", ("tokenissue/p11/", "pkcs11")),
    ("PBM hashing", ("_pbm_key", "_hashlib", "hmac.py", "hashlib")),
    ("database", ("sqlalchemy", "sqlite3", "tokenissue/inventory/")),
    ("ASN.1 (pyasn1)", ("pyasn1",)),
    ("X.509 (cryptography)", ("cryptography",)),
]


def _bucket(file: str, func: str) -> str:
    where = f"{file}:{func}"
    for name, needles in _BUCKETS:
        if any(n in where for n in needles):
            return name
    return "other Python"


def phase_inprocess(ca_dir: Path, n: int) -> dict[str, Any]:
    from tokenissue.ca.authority import CertificateAuthority
    from tokenissue.ca.registration import RegistrationAuthority
    from tokenissue.credentials import Pin
    from tokenissue.server.cmp_service import CMPService

    plain = _requests(ca_dir, n, "plain")
    profiled = _requests(ca_dir, n, "profiled")
    pin = Pin(USER_PIN)
    with CertificateAuthority.open(ca_dir, module=SOFTHSM_MODULE) as ca, ca.signing_key(pin) as key:
        service = CMPService(ca, RegistrationAuthority(ca), pin, ca_key=key)
        start = time.perf_counter()
        for der in plain:
            status, _, fields = service.handle(der)
            assert status == 200 and "failure_info" not in fields, fields
        elapsed = time.perf_counter() - start
        profiler = cProfile.Profile()
        profiler.enable()
        for der in profiled:
            service.handle(der)
        profiler.disable()
    stats = pstats.Stats(profiler)
    totals: dict[str, float] = {}
    for (file, _line, func), (_cc, _nc, tottime, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        bucket = _bucket(file, func)
        totals[bucket] = totals.get(bucket, 0.0) + tottime
    whole = sum(totals.values())
    return {
        "certs": n,
        "seconds": elapsed,
        "certs_per_s": n / elapsed,
        "ms_per_cert": elapsed / n * 1000,
        "profile_share": {k: round(v / whole, 3) for k, v in sorted(totals.items(), key=lambda kv: -kv[1])},
        "profile_ms_per_cert": {k: round(v / n * 1000, 2) for k, v in sorted(totals.items(), key=lambda kv: -kv[1])},
    }


# -- phase 2: over HTTP ------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _load(url: str, bodies: list[bytes], clients: int) -> dict[str, Any]:
    return _load_answers([url], bodies, clients)[0]


def _load_answers(urls: list[str], bodies: list[bytes], clients: int) -> tuple[dict[str, Any], list[tuple[int, bytes]]]:
    """Post ``bodies`` from ``clients`` threads; with several ``urls`` each thread sends its
    requests to them in turn (round robin, thread i starting at urls[i % len(urls)]), keeping one
    connection to each. The figures, and every (HTTP status, body) received."""
    import httpx

    slices = [bodies[i::clients] for i in range(clients)]
    latencies: list[float] = []
    answers: list[tuple[int, bytes]] = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients + 1)

    def worker(first: int, mine: list[bytes]) -> None:
        pool = [httpx.Client(timeout=60) for _ in urls]
        try:
            for url, client in zip(urls, pool, strict=True):
                client.get(f"{url}/health")  # connect before the clock starts
            barrier.wait()
            for j, body in enumerate(mine):
                k = (first + j) % len(urls)
                t0 = time.perf_counter()
                r = pool[k].post(f"{urls[k]}/pkix/", content=body, headers={"content-type": CMP_TYPE})
                dt = time.perf_counter() - t0
                with lock:
                    latencies.append(dt)
                    answers.append((r.status_code, r.content))
        finally:
            for client in pool:
                client.close()

    threads = [threading.Thread(target=worker, args=(i, s), daemon=True) for i, s in enumerate(slices)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start

    from tokenissue.protocols.cmp import decode_message, parse_response

    issued = sum(1 for status, der in answers if status == 200 and parse_response(decode_message(der)).certificate)
    latencies.sort()
    result = {
        "certs": issued,
        "requests": len(bodies),
        "seconds": elapsed,
        "certs_per_s": issued / elapsed,
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p95_ms": latencies[int(len(latencies) * 0.95) - 1] * 1000,
    }
    return result, answers


def _serve(ca_dir: Path, root: Path, log_name: str = "serve.log") -> tuple[subprocess.Popen[bytes], str, Path]:
    import httpx

    port = _free_port()
    log = root / log_name
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tokenissue.cli", "ca", "serve", "--ca", str(ca_dir),
             # every bench client is 127.0.0.1: lift the per-address cap, as behind a load balancer
             "--listen", f"127.0.0.1:{port}", "--max-per-client", "0"],
            env=_env(root), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"ca serve exited {proc.returncode}: {log.read_text()}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return proc, url, log
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"ca serve did not start: {log.read_text()}")
        time.sleep(0.1)


def _phase(name: str, ca_dir: Path, root: Path, *args: str, script: str = __file__) -> dict[str, Any]:
    """Run ``script --phase NAME`` (this benchmark's, or another's that shares its set-up) in a
    process of its own; its last line of output, as JSON."""
    out = subprocess.run(
        [sys.executable, script, "--phase", name, "--ca-dir", str(ca_dir), *args],
        env=_env(root), check=False, capture_output=True, text=True,
    )  # fmt: skip
    if out.returncode != 0:
        raise SystemExit(f"phase {name} failed:\n{out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--runs", type=int, default=3, help="timed load runs over HTTP (median reported)")
    ap.add_argument("--requests", type=int, default=200, help="certificates per run")
    ap.add_argument("--clients", type=int, default=4, help="concurrent HTTP clients")
    ap.add_argument("--raw-seconds", type=float, default=3.0)
    ap.add_argument("--inprocess", type=int, default=150, help="certificates in the in-process phase")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--phase", choices=["raw", "inprocess"], help=argparse.SUPPRESS)
    ap.add_argument("--ca-dir", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.phase == "raw":
        print(json.dumps(phase_raw(args.ca_dir, args.raw_seconds)))
        return 0
    if args.phase == "inprocess":
        print(json.dumps(phase_inprocess(args.ca_dir, args.inprocess)))
        return 0

    base = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
    root = Path(tempfile.mkdtemp(prefix="tokenissue-bench-cmp-", dir=base))
    try:
        ca_dir = _setup(root)
        os.environ.update({k: v for k, v in _env(root).items() if k == "SOFTHSM2_CONF"})
        raw = _phase("raw", ca_dir, root, "--raw-seconds", str(args.raw_seconds))
        print(f"raw SoftHSM ECDSA P-256 (python-pkcs11, one session): {raw['signs_per_s']:,.0f} signs/s", flush=True)

        batches = [_requests(ca_dir, args.requests, f"run{i}") for i in range(args.runs + 1)]
        proc, url, log = _serve(ca_dir, root)
        try:
            _load(url, batches[0][: max(args.clients * 2, 8)], args.clients)  # warm-up, not reported
            runs = []
            for i in range(args.runs):
                r = _load(url, batches[i + 1], args.clients)
                runs.append(r)
                print(f"served run {i + 1}: {r['certs']}/{r['requests']} certificates in {r['seconds']:.2f} s = "
                      f"{r['certs_per_s']:.1f}/s (p50 {r['p50_ms']:.1f} ms, p95 {r['p95_ms']:.1f} ms)", flush=True)  # fmt: skip
        finally:
            os.kill(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        served_rate = statistics.median(r["certs_per_s"] for r in runs)
        log_lines = sum(1 for line in log.read_text().splitlines() if line.startswith("{"))

        inproc = _phase("inprocess", ca_dir, root, "--inprocess", str(args.inprocess))
        result = {
            "clients": args.clients,
            "requests_per_run": args.requests,
            "raw": raw,
            "served_runs": runs,
            "served_certs_per_s": served_rate,
            "served_vs_raw": served_rate / raw["signs_per_s"],
            "inprocess": inproc,
            "access_log_lines": log_lines,
            "cpus": os.cpu_count(),
        }
        print()
        print(f"served:     {served_rate:8.1f} certificates/s  ({args.clients} clients, median of {args.runs} runs)")
        print(f"in-process: {inproc['certs_per_s']:8.1f} certificates/s  (CMPService.handle, no HTTP)")
        print(f"raw sign:   {raw['signs_per_s']:8.0f} signatures/s")
        print(f"ratio served / raw signing: {result['served_vs_raw']:.4f} "
              f"(1 certificate = 1 CA signature; {raw['signs_per_s'] / served_rate:.0f}x headroom)")  # fmt: skip
        print("where an in-process certificate's time goes (cProfile self-time, ms per certificate):")
        for k, v in inproc["profile_ms_per_cert"].items():
            print(f"  {k:<22} {v:7.2f} ms  {inproc['profile_share'][k]:6.1%}")
        if args.json:
            args.json.write_text(json.dumps(result, indent=2))
        return 0
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
