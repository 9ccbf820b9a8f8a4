"""CA fleet throughput: certificates per second from ``tokenissue ca serve`` on SQLite vs PostgreSQL, 1 vs 2 replicas.

Setup: a fresh SoftHSM directory under /dev/shm with one token 'ca' holding two EC P-256 CA keys
(``tokenissue ca init`` twice): one CA with its SQLite inventory ca.db in its CA directory
(synchronous=FULL), one with ``--db postgresql://...`` on a throwaway PostgreSQL this script
starts (Debian's server binaries; data directory under /dev/shm, unix socket only, fsync and
synchronous_commit at their defaults, i.e. on). Both databases are on tmpfs, so fsync is nearly
free for both: this measures CPU cost, not disk durability.

Measured, in one run:

* **raw** (separate process, python-pkcs11 only, ``cmp_server.phase_raw``): ECDSA P-256
  signatures per second on the CA token with one logged-in session, SHA-256 on the host +
  CKM_ECDSA. The ceiling: every certificate costs one CA signature. Measured before and after
  the served runs; the ratios use the mean of the two.
* **served**, the configurations
  (a) SQLite inventory, 1 replica;
  (b) PostgreSQL, 1 replica;
  (c) PostgreSQL, 2 replicas (two ``ca serve`` processes on different ports of 127.0.0.1, same CA
  directory, same SoftHSM token directory; each client thread sends its requests to the two in
  turn, like a round-robin load balancer);
  (d) SQLite, 2 replicas is skipped: SQLite is one file on one host, not a shared inventory.
  C client threads (``httpx``, one connection per replica each) post prebuilt p10cr requests,
  each for its own registration (PBM with 500 iterations, implicitConfirm, so one round trip is
  one certificate), built before the clock starts and checked after it stops (as in
  ``cmp_server.py``, whose functions this reuses). The configurations are interleaved: run 1 of
  a, b, c, then run 2 of a, b, c, ...; all servers stay up throughout (idle ones cost nothing).
  Reported per configuration: the median over runs of certificates/s, of p50 and of p95 latency,
  the ratio certificates/s ÷ raw signatures/s, and for (c) the ratio to (b). Also, from /proc,
  the CPU time per certificate of the serving replicas, of this process (the client threads), of
  PostgreSQL, and of the rest of the machine (other processes: a busy machine shows there), and
  how busy all CPUs were, over each timed run plus the response check right after it.

Without PostgreSQL server binaries (TOKENISSUE_PG_BIN, else the newest /usr/lib/postgresql/*/bin),
only (a) runs, and the output says why. Temporary directories, servers and PostgreSQL are removed
or stopped (by PID / pg_ctl) at the end, also on error, Ctrl-C or SIGTERM.

    .venv/bin/python bench/ca_fleet.py [--requests N] [--clients C] [--runs R] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
import cmp_server

PG_DATABASE = "tokenissue_bench"
PG_START_TIMEOUT = 30
SKIP_D = "(d) SQLite, 2 replicas: skipped — SQLite is one file on one host; replicas need a shared inventory"


# -- PostgreSQL (as tests/support/postgres.py starts it, but with fsync on) ----------------------


def _pg_bin() -> Path:
    if os.environ.get("TOKENISSUE_PG_BIN"):
        return Path(os.environ["TOKENISSUE_PG_BIN"])
    found = sorted(
        (p for p in Path("/usr/lib/postgresql").glob("*/bin") if p.parent.name.isdigit()),
        key=lambda p: int(p.parent.name),
    )
    return found[-1] if found else Path("/usr/lib/postgresql/15/bin")


def _pg_user() -> str | None:
    """Who runs PostgreSQL: as root, the 'postgres' system user (initdb refuses root)."""
    return "postgres" if os.geteuid() == 0 else None


def _run(cmd: list[str], user: str | None, timeout: float) -> subprocess.CompletedProcess[str]:
    if user is not None:
        cmd = ["runuser", "-u", user, "--", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


class Postgres:
    """A throwaway server: data dir and unix socket in one directory on tmpfs, no TCP."""

    def __init__(self, bin_dir: Path, root: Path, user: str | None) -> None:
        self.bin, self.root, self.user = bin_dir, root, user
        self.data = root / "data"
        self.settings: dict[str, str] = {}  #: the durability settings it runs with, as SHOWn

    def url(self, database: str) -> str:
        return f"postgresql://postgres@/{database}?host={self.root}"

    def version(self) -> str:
        out = _run([str(self.bin / "postgres"), "--version"], None, 10)
        return out.stdout.strip()

    def stop(self) -> None:
        # pg_ctl finds the postmaster (and its PID) through data/postmaster.pid.
        if (self.data / "postmaster.pid").exists():
            _run(
                [str(self.bin / "pg_ctl"), "-D", str(self.data), "stop", "-m", "fast", "-w", "-t", "30"], self.user, 40
            )
        shutil.rmtree(self.root, ignore_errors=True)


def _start_pg() -> tuple[Postgres | None, str]:
    """Start the server; (server, "") or (None, why not)."""
    bin_dir = _pg_bin()
    missing = [b for b in ("initdb", "pg_ctl", "postgres") if not (bin_dir / b).is_file()]
    if missing:
        return None, f"PostgreSQL server binaries not found in {bin_dir}: {', '.join(missing)}"
    user = _pg_user()
    if user is not None:
        try:
            pw = pwd.getpwnam(user)
        except KeyError:
            return None, "running as root and there is no 'postgres' system user to run PostgreSQL as"
        if shutil.which("runuser") is None:
            return None, "running as root and runuser is missing"
    base = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
    root = Path(tempfile.mkdtemp(prefix="tokenissue-bench-pg-", dir=base))
    if user is not None:
        os.chown(root, pw.pw_uid, pw.pw_gid)
    pg = Postgres(bin_dir, root, user)
    ok = False
    try:
        # --no-sync only skips initdb's own final fsync; the server runs with fsync=on.
        init = _run(
            [str(bin_dir / "initdb"), "-D", str(pg.data), "-A", "trust", "-U", "postgres",
             "--no-locale", "-E", "UTF8", "--no-sync"],
            user, 60,
        )  # fmt: skip
        if init.returncode != 0:
            return None, f"initdb failed: {init.stderr.strip()[-500:]}"
        log = root / "server.log"
        options = f"-c listen_addresses='' -c unix_socket_directories='{root}'"
        try:
            start = _run(
                [str(bin_dir / "pg_ctl"), "-D", str(pg.data), "-l", str(log), "-w", "-t", str(PG_START_TIMEOUT),
                 "-o", options, "start"],
                user, PG_START_TIMEOUT + 10,
            )  # fmt: skip
            started, why = start.returncode == 0, (start.stderr.strip() or start.stdout.strip())
        except subprocess.TimeoutExpired:
            started, why = False, "timed out"
        if not started:
            tail = log.read_text(errors="replace")[-800:] if log.exists() else ""
            return None, f"PostgreSQL did not start within {PG_START_TIMEOUT} s: {why} {tail}".strip()
        import psycopg

        with psycopg.connect(host=str(root), user="postgres", dbname="postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{PG_DATABASE}"'.encode())  # fixed name, no input
            settings = {
                name: conn.execute(f"SHOW {name}".encode()).fetchone()[0]  # type: ignore[index]
                for name in ("fsync", "synchronous_commit", "full_page_writes", "wal_sync_method")
            }
        pg.settings = settings
        ok = True
        return pg, ""
    finally:
        if not ok:
            pg.stop()


# -- servers and load ---------------------------------------------------------------------------


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def _outcomes(answers: list[tuple[int, bytes]]) -> Counter[str]:
    """What came back: 'certificate', 'refused:<failInfo>', 'HTTP <status>' or 'unparsable'."""
    from tokenissue.protocols.cmp import decode_message, parse_response

    out: Counter[str] = Counter()
    for status, der in answers:
        if status != 200:
            out[f"HTTP {status}"] += 1
            continue
        try:
            resp = parse_response(decode_message(der))
        except Exception:
            out["unparsable"] += 1
            continue
        if resp.certificate is not None:
            out["certificate"] += 1
        else:
            info = ",".join(resp.status.failure_info) if resp.status is not None else "?"
            out[f"refused:{info}"] += 1
    return out


def _issued_lines(log: Path) -> int:
    """p10cr requests a replica answered with 200, from its JSON access log."""
    n = 0
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            n += entry.get("cmp_body") == "p10cr" and entry.get("status") == 200
    return n


def _proc_ticks(pid: int | str) -> int:
    """CPU time (user + system, all threads) a process has used, in clock ticks; 0 without /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)


def _system_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of all CPUs since boot; (0, 0) without /proc."""
    try:
        cpu = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:8]]
    except OSError:
        return 0, 0
    return sum(cpu) - cpu[3] - cpu[4], sum(cpu)  # idle and iowait are not busy


def _pg_pids(pg: Postgres | None) -> list[int]:
    """The postmaster (first line of data/postmaster.pid) and its children (backends, workers)."""
    if pg is None:
        return []
    try:
        postmaster = int((pg.data / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return []
    pids = [postmaster]
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid == postmaster:
                pids.append(int(d.name))
    return pids


def _cpu_snapshot(pids: list[int], pg: Postgres | None) -> dict[str, Any]:
    """Clock ticks so far: the serving replicas, this process (the client threads), PostgreSQL's
    processes alive now, and all CPUs busy / in total (from /proc/stat)."""
    busy, total = _system_ticks()
    return {
        "servers": sum(_proc_ticks(pid) for pid in pids),
        "client": _proc_ticks("self"),
        "pg": {pid: _proc_ticks(pid) for pid in _pg_pids(pg)},
        "busy": busy,
        "total": total,
    }


def _cpu_use(before: dict[str, Any], after: dict[str, Any], certs: int) -> dict[str, float]:
    """CPU ms per certificate: replicas, clients, PostgreSQL (backends that lived through the
    run), and the rest of the machine (kernel outside process context, other users' processes)."""
    tick_ms = 1000 / os.sysconf("SC_CLK_TCK")
    d = {k: after[k] - before[k] for k in ("servers", "client", "busy", "total")}
    pg = sum(t - before["pg"].get(pid, t) for pid, t in after["pg"].items())
    n = max(certs, 1)
    return {
        "cpu_busy": d["busy"] / d["total"] if d["total"] else 0.0,
        "server_cpu_ms": d["servers"] * tick_ms / n,
        "client_cpu_ms": d["client"] * tick_ms / n,
        "pg_cpu_ms": pg * tick_ms / n,
        "other_cpu_ms": max(d["busy"] - d["servers"] - d["client"] - pg, 0) * tick_ms / n,
    }


def _median(runs: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(r[key] for r in runs))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--requests", type=int, default=300, help="certificates per run and configuration")
    ap.add_argument("--clients", type=int, default=16, help="concurrent HTTP client threads")
    ap.add_argument("--runs", type=int, default=3, help="timed runs per configuration (median reported)")
    ap.add_argument("--raw-seconds", type=float, default=3.0, help="length of each raw signing measurement")
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args(argv)

    def on_sigterm(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)  # unwinds through the finally blocks below

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    t_start = time.monotonic()
    load_start = os.getloadavg()
    base = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
    root = Path(tempfile.mkdtemp(prefix="tokenissue-bench-fleet-", dir=base))
    pg: Postgres | None = None
    procs: list[subprocess.Popen[bytes]] = []
    try:
        cmp_server._init_token(root)
        os.environ["SOFTHSM2_CONF"] = cmp_server._env(root)["SOFTHSM2_CONF"]
        sqlite_ca = cmp_server._init_ca(root, root / "ca-sqlite")
        pg, pg_why = _start_pg()
        pg_ca = None
        if pg is not None:
            pg_ca = cmp_server._init_ca(
                root, root / "ca-pg", "--db", pg.url(PG_DATABASE), "--label", "tokenissue-ca-pg"
            )
            print(f"PostgreSQL: {pg.version()}, data dir on {base or 'disk'}, unix socket only, "
                  f"settings {pg.settings}", flush=True)  # fmt: skip
        else:
            print(f"PostgreSQL skipped: {pg_why}", flush=True)

        raw_args = ("--raw-seconds", str(args.raw_seconds))
        raw_before = cmp_server._phase("raw", sqlite_ca, root, *raw_args)
        print(f"raw SoftHSM ECDSA P-256 (python-pkcs11, one session): {raw_before['signs_per_s']:,.0f} signs/s",
              flush=True)  # fmt: skip

        # Requests for every run, built and registered before any clock starts.
        warm_n = max(args.clients * 2, 8)
        t0 = time.monotonic()
        configs: list[dict[str, Any]] = [
            {"key": "a", "name": "(a) SQLite, 1 replica", "inventory": "sqlite", "replicas": 1, "ca": sqlite_ca},
        ]
        if pg_ca is not None:
            configs += [
                {"key": "b", "name": "(b) PostgreSQL, 1 replica", "inventory": "postgresql", "replicas": 1, "ca": pg_ca},
                {"key": "c", "name": "(c) PostgreSQL, 2 replicas", "inventory": "postgresql", "replicas": 2, "ca": pg_ca},
            ]  # fmt: skip
        for c in configs:
            c["warmup"] = cmp_server._requests(c["ca"], warm_n, f"{c['key']}-warm")
            c["batches"] = [
                cmp_server._requests(c["ca"], args.requests, f"{c['key']}-run{i}") for i in range(args.runs)
            ]
            c["runs"] = []
            c["outcomes"] = Counter()
        print(f"built {sum(len(c['warmup']) + args.requests * args.runs for c in configs)} requests "
              f"in {time.monotonic() - t0:.0f} s", flush=True)  # fmt: skip

        # Servers: one on the SQLite CA; two on the PostgreSQL CA (b uses the first alone).
        proc, sqlite_url, _ = cmp_server._serve(sqlite_ca, root, "serve-sqlite.log")
        procs.append(proc)
        pid_of = {sqlite_url: proc.pid}
        configs[0]["urls"] = [sqlite_url]
        pg_logs: list[Path] = []
        if pg_ca is not None:
            pg_urls = []
            for i in (1, 2):
                proc, url, log = cmp_server._serve(pg_ca, root, f"serve-pg-{i}.log")
                procs.append(proc)
                pid_of[url] = proc.pid
                pg_urls.append(url)
                pg_logs.append(log)
            configs[1]["urls"] = pg_urls[:1]
            configs[2]["urls"] = pg_urls

        for c in configs:  # warm-up, not reported
            _, answers = cmp_server._load_answers(c["urls"], c["warmup"], args.clients)
            c["outcomes"].update(_outcomes(answers))
        split = [0 for _ in pg_logs]  # (c)'s timed certificates per replica
        for i in range(args.runs):
            for c in configs:
                before = [_issued_lines(log) for log in pg_logs] if c["replicas"] == 2 else []
                pids = [pid_of[u] for u in c["urls"]]
                cpu_before = _cpu_snapshot(pids, pg)
                r, answers = cmp_server._load_answers(c["urls"], c["batches"][i], args.clients)
                r.update(_cpu_use(cpu_before, _cpu_snapshot(pids, pg), r["certs"]))
                if before:
                    # A replica writes its access-log line just after answering: give it a moment.
                    deadline = time.monotonic() + 2
                    while True:
                        after = [_issued_lines(log) for log in pg_logs]
                        if sum(after) - sum(before) >= r["certs"] or time.monotonic() > deadline:
                            break
                        time.sleep(0.05)
                    split = [n + a - b for n, a, b in zip(split, after, before, strict=True)]
                outcomes = _outcomes(answers)
                c["outcomes"].update(outcomes)
                r["outcomes"] = dict(outcomes)
                c["runs"].append(r)
                print(f"run {i + 1} {c['name']:<27}: {r['certs']}/{r['requests']} certificates in {r['seconds']:.2f} s "
                      f"= {r['certs_per_s']:.1f}/s (p50 {r['p50_ms']:.0f} ms, p95 {r['p95_ms']:.0f} ms)", flush=True)  # fmt: skip
        _stop(procs)
        procs = []

        raw_after = cmp_server._phase("raw", sqlite_ca, root, *raw_args)
        raw = (raw_before["signs_per_s"] + raw_after["signs_per_s"]) / 2
        load_end = os.getloadavg()

        for c in configs:
            c["certs_per_s"] = _median(c["runs"], "certs_per_s")
            c["p50_ms"] = _median(c["runs"], "p50_ms")
            c["p95_ms"] = _median(c["runs"], "p95_ms")
            c["vs_raw"] = c["certs_per_s"] / raw
            for k in ("cpu_busy", "server_cpu_ms", "client_cpu_ms", "pg_cpu_ms", "other_cpu_ms"):
                c[k] = _median(c["runs"], k)
        if pg_ca is not None:
            configs[2]["vs_pg_1_replica"] = configs[2]["certs_per_s"] / configs[1]["certs_per_s"]

        print()
        print(f"ca_fleet: {args.clients} clients, {args.requests} certificates per run, median of {args.runs} runs, "
              f"{os.cpu_count()} CPUs, load avg (1 min) {load_start[0]:.2f} -> {load_end[0]:.2f}")  # fmt: skip
        print(f"raw CA-token signing (ceiling): {raw:,.0f} signs/s "
              f"(before {raw_before['signs_per_s']:,.0f}, after {raw_after['signs_per_s']:,.0f})")  # fmt: skip
        print()
        print("| configuration              | certs/s | p50 ms | p95 ms | ÷ raw signs/s | vs PG 1 replica | answers |")
        print("|----------------------------|--------:|-------:|-------:|--------------:|----------------:|---------|")
        for c in configs:
            vs = f"{c['vs_pg_1_replica']:.2f}x" if "vs_pg_1_replica" in c else ""
            got = ", ".join(f"{k} {v}" for k, v in sorted(c["outcomes"].items()))
            print(f"| {c['name']:<26} | {c['certs_per_s']:7.1f} | {c['p50_ms']:6.0f} | {c['p95_ms']:6.0f} | "
                  f"{c['vs_raw']:13.4f} | {vs:>15} | {got} |")  # fmt: skip
        if pg_ca is None:
            print(f"| (b), (c) PostgreSQL        | skipped: {pg_why} |")
        print(f"| {SKIP_D} |")
        print()
        print(f"CPU during the timed runs (medians; {os.cpu_count()} CPUs; ms of CPU time per certificate):")
        print("| configuration              | CPUs busy | ca serve | clients | PostgreSQL | rest of the machine |")
        print("|----------------------------|----------:|---------:|--------:|-----------:|--------------------:|")
        for c in configs:
            print(f"| {c['name']:<26} | {c['cpu_busy']:9.0%} | {c['server_cpu_ms']:8.1f} | {c['client_cpu_ms']:7.1f} | "
                  f"{c['pg_cpu_ms']:10.1f} | {c['other_cpu_ms']:19.1f} |")  # fmt: skip
        print(
            "  clients = this process's threads; rest = kernel outside process context and other processes on the machine"
        )
        print()
        print("answers: every response of the warm-up and timed runs, checked after the clock stopped")
        if pg_ca is not None:
            print(f"(c) timed p10cr answered 200 per replica (access logs): {split[0]} + {split[1]}")
        where = "on tmpfs (/dev/shm)" if base is not None else "on disk (no /dev/shm)"
        if pg_ca is not None:
            print(f"both inventories {where}: SQLite synchronous=FULL, PostgreSQL fsync=on (fsync is nearly free "
                  "on tmpfs); the ca serve processes, PostgreSQL and the client threads share the CPUs")  # fmt: skip
        else:
            print(
                f"SQLite inventory {where}, synchronous=FULL; the ca serve process and the client threads share the CPUs"
            )
        print(f"(total {time.monotonic() - t_start:.0f} s)")

        if args.json:
            keep = (
                "name",
                "inventory",
                "replicas",
                "runs",
                "certs_per_s",
                "p50_ms",
                "p95_ms",
                "vs_raw",
                "vs_pg_1_replica",
                "cpu_busy",
                "server_cpu_ms",
                "client_cpu_ms",
                "pg_cpu_ms",
                "other_cpu_ms",
            )
            result = {
                "clients": args.clients,
                "requests_per_run": args.requests,
                "runs": args.runs,
                "cpus": os.cpu_count(),
                "loadavg_1min": [load_start[0], load_end[0]],
                "raw": {"before": raw_before, "after": raw_after, "signs_per_s": raw},
                "configurations": {
                    c["key"]: {**{k: c[k] for k in keep if k in c}, "outcomes": dict(c["outcomes"])} for c in configs
                },
                "skipped": {"d": SKIP_D, **({} if pg_ca is not None else {"b": pg_why, "c": pg_why})},
                "postgresql": (
                    {"version": pg.version(), "settings": pg.settings, "tmpfs": base is not None}
                    if pg is not None
                    else None
                ),
                "pg_replica_split": split if pg_ca is not None else None,
            }
            args.json.write_text(json.dumps(result, indent=2))
        return 0
    finally:
        _stop(procs)
        if pg is not None:
            pg.stop()
        shutil.rmtree(root, ignore_errors=True)
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
