"""Core token operations: tokenissue as whole fresh processes vs the stock tools.

Every measurement is one complete process (fork/exec, interpreter or binary start-up, module
load, C_Initialize, login, the operation, exit), timed from the parent with perf_counter around
``subprocess.run``. Commands in a group run INTERLEAVED, round by round (A, B, C, A, B, C, ...),
after one untimed warm-up round, so drift (page cache, CPU frequency, a filling token) hits
every contender alike. Reported: median ms per command and tokenissue/peer ratios.

SoftHSM runs from a fresh directory under /dev/shm (tmpfs: SoftHSM rewrites its object files
~60 times per keygen, so disk speed would otherwise dominate); it is removed afterwards.

Also measured, in one separate process: the python-pkcs11 in-process floor for keygen (one
logged-in session, N keygens, the same templates tokenissue uses), so the fixed per-process
cost of the CLI is visible as (CLI median - in-process median).

    .venv/bin/python bench/token_core.py [--runs N] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

SOFTHSM_MODULE = "/usr/lib/softhsm/libsofthsm2.so"
USER_PIN = "246810"
SO_PIN = "13579135"
TOKEN = "bench"
REPO = Path(__file__).resolve().parents[1]

Argv = list[str]


def _engine_so() -> str | None:
    for d in ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib"):
        p = Path(d) / "engines-3" / "pkcs11.so"
        if p.exists():
            return str(p)
    return None


def _tokenissue_argv() -> Argv:
    """The installed console script next to this interpreter (what users run), else -m."""
    script = Path(sys.executable).parent / "tokenissue"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "tokenissue.cli"]


@dataclass
class Contender:
    name: str
    argv: Callable[[int], Argv]  # run index -> argv (lets keygens use fresh labels)
    env: dict[str, str] | None = None
    samples: list[float] = field(default_factory=list)

    @property
    def median_ms(self) -> float:
        return statistics.median(self.samples) * 1000.0


@dataclass
class Group:
    """One operation: a tokenissue command and its peers, run interleaved."""

    op: str
    tokenissue: Contender
    peers: list[Contender]


class Bench:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.conf = root / "softhsm2.conf"
        self.out = root / "out"
        self.env = {
            k: v for k, v in os.environ.items()
            if not k.startswith("TOKENISSUE_") and k not in ("SOFTHSM2_CONF", "OPENSSL_CONF")
        }
        self.env.update({
            "SOFTHSM2_CONF": str(self.conf),
            "TOKENISSUE_MODULE": SOFTHSM_MODULE,
            "TOKENISSUE_PIN": USER_PIN,
            "TOKENISSUE_STATE_DIR": str(root / "state"),
            "PKCS11_PIN": USER_PIN,
            "GNUTLS_PIN": USER_PIN,
            "COLUMNS": "120",
            "LC_ALL": "C",
        })
        self.ti = _tokenissue_argv()

    # -- set-up -------------------------------------------------------------------------------
    def setup(self) -> None:
        (self.root / "tokens").mkdir(parents=True)
        self.out.mkdir()
        self.conf.write_text(
            f"directories.tokendir = {self.root / 'tokens'}\n"
            "objectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n"
        )
        self.run([*self.ti, "token", "init", "--label", TOKEN],
                 extra_env={"TOKENISSUE_SO_PIN": SO_PIN})
        # Keys the CSR benchmarks sign with (made by tokenissue; both tools use the same key).
        for kind, typ in (("ec", "ec-p256"), ("rsa", "rsa-2048")):
            self.run([*self.ti, "keys", "generate", "--token", TOKEN, "--label", f"csr-{kind}",
                      "--type", typ, "--id", f"c5{'01' if kind == 'ec' else '02'}"])
        engine = _engine_so()
        self.engine_cnf: Path | None = None
        if engine:
            self.engine_cnf = self.root / "engine.cnf"
            self.engine_cnf.write_text(
                "openssl_conf = openssl_init\n[openssl_init]\nengines = engine_section\n"
                "[engine_section]\npkcs11 = pkcs11_section\n[pkcs11_section]\n"
                f"engine_id = pkcs11\ndynamic_path = {engine}\nMODULE_PATH = {SOFTHSM_MODULE}\n"
                "init = 0\n[req]\ndistinguished_name = req_dn\n[req_dn]\n"
            )

    def run(self, argv: Sequence[str], extra_env: dict[str, str] | None = None) -> float:
        env = {**self.env, **(extra_env or {})}
        t0 = time.perf_counter()
        proc = subprocess.run(argv, env=env, capture_output=True, check=False)
        dt = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(
                f"{' '.join(argv)} exited {proc.returncode}:\n"
                f"{proc.stdout.decode(errors='replace')}{proc.stderr.decode(errors='replace')}"
            )
        return dt

    # -- the groups ---------------------------------------------------------------------------
    def groups(self) -> list[Group]:
        ti, py = self.ti, sys.executable
        p11 = ["pkcs11-tool", "--module", SOFTHSM_MODULE]
        p11tok = [*p11, "--token-label", TOKEN, "--login", "--pin", "env:PKCS11_PIN"]

        def floors() -> list[Contender]:  # fresh objects per group: samples are per group
            return [
                Contender("python -c pass", lambda i: [py, "-c", "pass"]),
                Contender("pkcs11-tool --show-info", lambda i: [*p11, "--show-info"]),
            ]

        groups = [
            Group("--version", Contender("tokenissue --version", lambda i: [*ti, "--version"]),
                  floors()),
            Group("--help", Contender("tokenissue --help", lambda i: [*ti, "--help"]), floors()),
        ]
        list_peers = [Contender("pkcs11-tool --list-token-slots",
                                lambda i: [*p11, "--list-token-slots"])]
        if shutil.which("p11tool"):
            list_peers.append(Contender("p11tool --list-tokens", lambda i: [
                "p11tool", "--provider", SOFTHSM_MODULE, "--list-tokens"]))
        groups.append(Group("tokens", Contender("tokenissue tokens", lambda i: [*ti, "tokens"]),
                            list_peers))
        # CSRs first, while the token holds only the two CSR keys.
        if self.engine_cnf is not None:
            for kind in ("ec", "rsa"):
                groups.append(Group(
                    f"csr {kind}",
                    Contender(f"tokenissue csr ({kind})", lambda i, k=kind: [
                        *ti, "csr", "--token", TOKEN, "--key", f"csr-{k}",
                        "--subject", "CN=bench,O=tokenissue",
                        "-o", str(self.out / f"ti-{k}-{i}.csr")]),
                    [Contender(f"openssl req -engine pkcs11 ({kind})", lambda i, k=kind: [
                        "openssl", "req", "-new",
                        "-engine", "pkcs11", "-keyform", "engine",
                        "-key", f"pkcs11:token={TOKEN};object=csr-{k};type=private",
                        "-passin", "env:PKCS11_PIN", "-sha256",
                        "-subj", "/O=tokenissue/CN=bench",
                        "-out", str(self.out / f"ossl-{k}-{i}.csr")],
                        # OPENSSL_CONF, not -config: the engine must be configured at start-up.
                        env={"OPENSSL_CONF": str(self.engine_cnf)})],
                ))
        for kind, ti_type, p11_type in (("ec-p256", "ec-p256", "EC:prime256v1"),
                                        ("rsa-2048", "rsa-2048", "RSA:2048")):
            groups.append(Group(
                f"keygen {kind}",
                Contender(f"tokenissue keys generate ({kind})", lambda i, k=kind, t=ti_type: [
                    *ti, "keys", "generate", "--token", TOKEN, "--label", f"ti-{k}-{i}",
                    "--type", t]),
                [Contender(f"pkcs11-tool --keypairgen ({p11_type})",
                           lambda i, k=kind, t=p11_type: [
                               *p11tok, "--keypairgen", "--key-type", t,
                               "--id", f"{0xB000 + i + (0 if k.startswith('ec') else 0x800):04x}",
                               "--label", f"p11-{k}-{i}", "--usage-sign"])],
            ))
        return groups

    def measure(self, group: Group, runs: int) -> None:
        contenders = [group.tokenissue, *group.peers]
        # One untimed warm-up round (index `runs`: its labels differ from the timed ones).
        for c in contenders:
            self.run(c.argv(runs), c.env)
        for i in range(runs):
            for c in contenders:
                c.samples.append(self.run(c.argv(i), c.env))

    # -- in-process floor ---------------------------------------------------------------------
    def inprocess_floor(self, runs: int) -> dict[str, float]:
        proc = subprocess.run([sys.executable, "-c", _FLOOR_SCRIPT, SOFTHSM_MODULE, TOKEN,
                               str(runs)], env=self.env, capture_output=True, text=True,
                              check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"in-process floor failed:\n{proc.stdout}{proc.stderr}")
        result: dict[str, float] = json.loads(proc.stdout)
        return result


# Runs in its own process (python-pkcs11 only, nothing of tokenissue): import + load, one
# logged-in session, `runs` keygens of each type with tokenissue's templates. Prints JSON (ms).
_FLOOR_SCRIPT = r"""
import json, os, statistics, sys, time
t0 = time.perf_counter()
import pkcs11
from pkcs11 import Attribute, KeyType, MechanismFlag
t1 = time.perf_counter()
lib = pkcs11.lib(sys.argv[1])
t2 = time.perf_counter()
token = lib.get_token(token_label=sys.argv[2])
session = token.open(rw=True, user_pin=os.environ["PKCS11_PIN"])
t3 = time.perf_counter()
runs = int(sys.argv[3])
priv_t = {Attribute.TOKEN: True, Attribute.PRIVATE: True, Attribute.SENSITIVE: True,
          Attribute.EXTRACTABLE: False, Attribute.SIGN: True, Attribute.DECRYPT: False,
          Attribute.UNWRAP: False, Attribute.DERIVE: False}
pub_t = {Attribute.TOKEN: True, Attribute.PRIVATE: False, Attribute.VERIFY: True,
         Attribute.ENCRYPT: False, Attribute.WRAP: False}
out = {"import_pkcs11_ms": (t1 - t0) * 1e3, "load_module_ms": (t2 - t1) * 1e3,
       "open_login_ms": (t3 - t2) * 1e3}
for name, kt, kw, extra in (
        ("ec-p256", KeyType.EC, {}, {Attribute.EC_PARAMS: bytes.fromhex("06082a8648ce3d030107")}),
        ("rsa-2048", KeyType.RSA, {"key_length": 2048}, {})):
    samples = []
    for i in range(runs):
        a = time.perf_counter()
        session.generate_keypair(kt, id=os.urandom(20), label=f"floor-{name}-{i}", store=True,
                                 capabilities=MechanismFlag.SIGN | MechanismFlag.VERIFY,
                                 public_template={**pub_t, **extra}, private_template=priv_t,
                                 **kw)
        samples.append(time.perf_counter() - a)
    out[f"keygen_{name}_ms"] = statistics.median(samples) * 1e3
session.close()
print(json.dumps(out))
"""


def _fmt_table(rows: list[dict[str, object]]) -> str:
    head = ("operation", "tokenissue ms", "peer", "peer ms", "ratio", "N")
    lines = [head]
    for r in rows:
        lines.append((str(r["operation"]), f"{r['tokenissue_ms']:.1f}", str(r["peer"]),
                      f"{r['peer_ms']:.1f}", f"{r['ratio']:.2f}x", str(r["runs"])))
    widths = [max(len(line[c]) for line in lines) for c in range(len(head))]
    out = []
    for n, line in enumerate(lines):
        out.append("| " + " | ".join(
            cell.ljust(widths[c]) if c in (0, 2) else cell.rjust(widths[c])
            for c, cell in enumerate(line)) + " |")
        if n == 0:
            out.append("|" + "|".join(
                "-" * (w + 1) + (":" if c not in (0, 2) else "-") for c, w in enumerate(widths))
                + "|")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=15, help="timed runs per command (default 15)")
    ap.add_argument("--json", type=Path, help="also save the results here")
    args = ap.parse_args(argv)
    if not Path(SOFTHSM_MODULE).exists():
        print(f"SoftHSM2 not installed ({SOFTHSM_MODULE}); run `make deps`", file=sys.stderr)
        return 2
    missing = [t for t in ("pkcs11-tool", "openssl") if not shutil.which(t)]
    if missing:
        print(f"missing tools: {', '.join(missing)}; run `make deps`", file=sys.stderr)
        return 2

    base = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())
    root = base / f"tokenissue-bench-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    root.mkdir(mode=0o700)
    started = time.perf_counter()
    try:
        bench = Bench(root)
        bench.setup()
        rows: list[dict[str, object]] = []
        raw: dict[str, dict[str, list[float]]] = {}
        for g in bench.groups():
            print(f"... {g.op}", file=sys.stderr, flush=True)
            bench.measure(g, args.runs)
            raw[g.op] = {c.name: [s * 1e3 for s in c.samples] for c in (g.tokenissue, *g.peers)}
            for p in g.peers:
                rows.append({
                    "operation": g.op, "tokenissue": g.tokenissue.name,
                    "tokenissue_ms": g.tokenissue.median_ms, "peer": p.name,
                    "peer_ms": p.median_ms, "ratio": g.tokenissue.median_ms / p.median_ms,
                    "runs": len(p.samples),
                })
        print("... in-process floor", file=sys.stderr, flush=True)
        floor = bench.inprocess_floor(args.runs)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    elapsed = time.perf_counter() - started

    load = os.getloadavg()
    print(f"\ntoken_core: SoftHSM on {base}, {args.runs} interleaved runs per command, "
          f"medians of whole processes (Python {platform.python_version()}, "
          f"{os.cpu_count()} CPUs, load average at end {load[0]:.2f})\n")
    print(_fmt_table(rows))
    by_op = {r["operation"]: r for r in rows}
    print("\npython-pkcs11 in-process floor (one process, one logged-in session):")
    print(f"  import pkcs11 {floor['import_pkcs11_ms']:.1f} ms, load module "
          f"{floor['load_module_ms']:.1f} ms, open+login {floor['open_login_ms']:.1f} ms")
    for kind in ("ec-p256", "rsa-2048"):
        k = floor[f"keygen_{kind}_ms"]
        cli = by_op.get(f"keygen {kind}")
        extra = ""
        if cli is not None:
            ti_ms = float(str(cli["tokenissue_ms"]))
            extra = f"; tokenissue CLI {ti_ms:.1f} ms -> fixed per-process cost {ti_ms - k:.1f} ms"
        if kind.startswith("rsa"):
            extra += " (RSA keygen time varies a lot: random prime search)"
        print(f"  keygen {kind}: {k:.1f} ms median{extra}")
    print(f"\n(total {elapsed:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps({
            "benchmark": "token_core", "runs": args.runs, "tmpfs": str(base),
            "python": platform.python_version(), "cpus": os.cpu_count(),
            "rows": rows, "inprocess_floor_ms": floor, "samples_ms": raw,
            "elapsed_s": elapsed, "loadavg_end": load,
        }, indent=2) + "\n")
        print(f"saved {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
