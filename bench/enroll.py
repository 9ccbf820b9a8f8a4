"""Enrollment: `tokenissue enroll` (fresh process) vs the classic shell pipeline, on SoftHSM.

One enrollment = key pair generated on the token, CSR signed by that key, certificate issued
by a CA, certificate written next to the key, result checked. Two contenders, run
INTERLEAVED round by round (tokenissue, pipeline, import floor, tokenissue, pipeline, ...)
after one untimed warm-up round, each timed from this process around ``subprocess.run``:

* ``tokenissue enroll --token holder --ca CA_DIR --subject ... --profile tls-client
  --type ec-p256|rsa-2048 --san dns:... --json`` — the venv's console script, a fresh process
  every time. The CA (``tokenissue ca init``, EC P-256) keeps its key on its OWN SoftHSM token;
  the holder's journal/inventory is ``TOKENISSUE_STATE_DIR/state.db``.
* ``bench/classic_pipeline.sh issue --key ec|rsa`` — pkcs11-tool keygen → ``openssl req
  -engine pkcs11`` → ``openssl x509 -req`` with a file CA → ``pkcs11-tool --write-object`` →
  ``pkcs11-tool -O`` + ``openssl verify``, on a token of its own.
* floor: ``python -c "import typer, pkcs11, sqlalchemy, cryptography.x509"`` (interpreter +
  the heavy third-party imports every enroll pays), interleaved in the same rounds.

Every case (ec-p256, rsa-2048) gets FRESH SoftHSM directories under /dev/shm (tmpfs): one
holding the CA token + the holder token for tokenissue, one holding the pipeline's token
(made by ``classic_pipeline.sh init``), so neither starts with the other case's objects. Both
tokens still fill up during a case (3 objects per enrollment: private key, public key,
certificate; tokenissue also writes the CA certificate once); object counts are reported.

Every Python process gets PYTHONPYCACHEPREFIX=<bench dir>/pycache (and no
PYTHONDONTWRITEBYTECODE), filled by the warm-up round: bytecode is cached as in a wheel
install, and nothing is written into the repository.

Also measured, in one separate process: the IN-PROCESS loop — N enrollments per key type
through ``tokenissue.lifecycle.enroll`` in ONE process (one Inventory, one LocalCA enroller,
as ``tokenissue/cli/lifecycle.py`` calls it), i.e. the per-enrollment cost without process
start-up, imports or C_Initialize.

    .venv/bin/python bench/enroll.py [--runs N] [--json FILE]
"""

from __future__ import annotations

import argparse
import csv
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
from dataclasses import dataclass, field
from pathlib import Path

SOFTHSM_MODULE = "/usr/lib/softhsm/libsofthsm2.so"
USER_PIN = "246810"
SO_PIN = "13579135"
HERE = Path(__file__).resolve().parent
PIPELINE = HERE / "classic_pipeline.sh"
PROFILE = "tls-client"
IMPORT_FLOOR = "import typer, pkcs11, sqlalchemy, cryptography.x509"
# What any Python enroll must import at least (token + X.509): the lower bound for a fresh process.
MIN_FLOOR = "import pkcs11, cryptography.x509"
TARGET_RATIO = 0.5  # the issue: EC P-256 fresh-process enroll <= 0.5x the pipeline
CASES = (("ec-p256", "ec"), ("rsa-2048", "rsa"))


def _tokenissue_argv() -> list[str]:
    """The installed console script next to this interpreter (what users run), else -m."""
    script = Path(sys.executable).parent / "tokenissue"
    return [str(script)] if script.exists() else [sys.executable, "-m", "tokenissue.cli"]


PYCACHE: Path | None = None  # set in main(): bytecode cache of every Python process we start


def _base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TOKENISSUE_", "PKCS11_")) and k not in (
               "SOFTHSM2_CONF", "OPENSSL_CONF", "BASE", "TOKEN_LABEL", "KEY", "P11_MODULE",
               "PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")}
    env.update({"LC_ALL": "C", "COLUMNS": "120"})
    if PYCACHE is not None:
        # Cached bytecode, as an installed wheel has: with PYTHONDONTWRITEBYTECODE=1 (set in
        # some shells here) the editable tokenissue package is compiled from source on every
        # run (+~65 ms). The cache lives in the bench dir, so nothing is written to the repo.
        env["PYTHONPYCACHEPREFIX"] = str(PYCACHE)
    return env


def _softhsm_dir(root: Path) -> Path:
    (root / "tokens").mkdir(parents=True)
    conf = root / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {root / 'tokens'}\nobjectstore.backend = file\n"
                    "log.level = ERROR\nslots.removable = false\n")
    return conf


def _objects(root: Path) -> int:
    """Objects on every token under root/tokens (SoftHSM file backend: one .object each)."""
    return sum(1 for p in (root / "tokens").glob("*/*.object") if p.name != "token.object")


def _run(argv: list[str], env: dict[str, str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}")
    return dt, proc.stdout


@dataclass
class Case:
    key_type: str  # tokenissue --type
    kind: str  # classic_pipeline.sh --key
    root: Path
    ti: list[str] = field(default_factory=_tokenissue_argv)
    ti_samples: list[float] = field(default_factory=list)
    pipe_samples: list[float] = field(default_factory=list)
    floor_samples: list[float] = field(default_factory=list)
    min_samples: list[float] = field(default_factory=list)
    objects: dict[str, int] = field(default_factory=dict)
    steps: dict[str, float] = field(default_factory=dict)
    loads: list[float] = field(default_factory=list)

    def setup(self) -> None:
        base = _base_env()
        # tokenissue side: one SoftHSM dir with the CA token and the holder token.
        tdir = self.root / "ti"
        conf = _softhsm_dir(tdir)
        self.ti_env = {**base, "SOFTHSM2_CONF": str(conf), "TOKENISSUE_MODULE": SOFTHSM_MODULE,
                       "TOKENISSUE_PIN": USER_PIN, "TOKENISSUE_CA_PIN": USER_PIN,
                       "TOKENISSUE_STATE_DIR": str(tdir / "state")}
        for label in ("ca", "holder"):
            _run([*self.ti, "token", "init", "--label", label],
                 {**self.ti_env, "TOKENISSUE_SO_PIN": SO_PIN})
        self.ca_dir = tdir / "ca"
        _run([*self.ti, "ca", "init", "--ca", str(self.ca_dir), "--token", "ca",
              "--subject", "CN=tokenissue bench CA,O=tokenissue"], self.ti_env)
        # pipeline side: its own SoftHSM dir, token and file CA (classic_pipeline.sh init).
        self.pipe_base = self.root / "pipe"
        self.pipe_env = {**base, "BASE": str(self.pipe_base), "TOKEN_LABEL": "classic",
                         "PKCS11_PIN": USER_PIN, "PKCS11_SO_PIN": SO_PIN,
                         "P11_MODULE": SOFTHSM_MODULE}
        _run(["bash", str(PIPELINE), "init"], self.pipe_env)
        self.times = self.root / "pipeline-steps.csv"
        self.objects = {"tokenissue_start": _objects(tdir), "pipeline_start": _objects(self.pipe_base)}

    def ti_argv(self, i: int) -> list[str]:
        cn = f"ti-{self.kind}-{i}"
        return [*self.ti, "enroll", "--token", "holder", "--ca", str(self.ca_dir),
                "--subject", f"CN={cn},O=tokenissue", "--profile", PROFILE,
                "--type", self.key_type, "--san", f"dns:{cn}.example.test", "--json"]

    def pipe_argv(self, i: int, timed: bool) -> list[str]:
        cn = f"classic-{self.kind}-{i}"
        argv = ["bash", str(PIPELINE), "issue", "--key", self.kind, "--cn", cn,
                "--san", f"DNS:{cn}.example.test", "-q"]
        return [*argv, "--times", str(self.times)] if timed else argv

    def run_ti(self, i: int) -> float:
        dt, out = _run(self.ti_argv(i), self.ti_env)
        got = json.loads(out)  # sanity check, outside the timed region
        if got["subject"] != f"CN=ti-{self.kind}-{i},O=tokenissue" or got["resumed"]:
            raise RuntimeError(f"unexpected enroll result: {got}")
        return dt

    def measure(self, runs: int) -> None:
        floor = [sys.executable, "-c", IMPORT_FLOOR]
        min_floor = [sys.executable, "-c", MIN_FLOOR]
        # Untimed warm-up round (creates the holder's state.db, fills the bytecode cache).
        self.run_ti(runs)
        _run(self.pipe_argv(runs, timed=False), self.pipe_env)
        _run(floor, _base_env())
        _run(min_floor, _base_env())
        for i in range(runs):
            self.ti_samples.append(self.run_ti(i))
            self.pipe_samples.append(_run(self.pipe_argv(i, timed=True), self.pipe_env)[0])
            self.floor_samples.append(_run(floor, _base_env())[0])
            self.min_samples.append(_run(min_floor, _base_env())[0])
            self.loads.append(os.getloadavg()[0])
        self.objects["tokenissue_end"] = _objects(self.root / "ti")
        self.objects["pipeline_end"] = _objects(self.pipe_base)
        with self.times.open() as f:
            rows = list(csv.DictReader(f))
        for step in ("keygen", "csr", "sign", "write", "verify", "total"):
            self.steps[step] = statistics.median(int(r[f"{step}_us"]) for r in rows) / 1e3


def _ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1e3


# -- in-process loop ------------------------------------------------------------------------
# Runs in its own process with the SoftHSM env of a fresh dir (CA token + holder token, CA
# initialised): N enrollments per key type through tokenissue.lifecycle.enroll, exactly as
# tokenissue/cli/lifecycle.py wires it (one Inventory state db, one LocalCA enroller with the
# CA PIN, TokenSelector by label, PIN from the environment). Prints JSON (ms).
_INPROCESS = r"""
import json, os, statistics, sys, time
from pathlib import Path
t0 = time.perf_counter()
from tokenissue import p11
from tokenissue.credentials import Pin
from tokenissue.enroll import open_enroller
from tokenissue.inventory import Inventory
from tokenissue.lifecycle import EnrollParams, enroll
t1 = time.perf_counter()
ca_dir, runs, profile, mod = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
state_dir = Path(os.environ["TOKENISSUE_STATE_DIR"])
state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
sel = p11.TokenSelector.parse("holder")
pin = Pin(os.environ["TOKENISSUE_PIN"])
out = {"import_ms": (t1 - t0) * 1e3}
with Inventory.open(state_dir / "state.db") as db:
    t2 = time.perf_counter()
    serial = p11.load_module(mod).token_info(sel).serial
    enroller = open_enroller(ca_dir, ca_pin=Pin(os.environ["TOKENISSUE_CA_PIN"]), module=mod)
    enroller.check_profile(profile)
    t3 = time.perf_counter()
    out["open_db_ms"] = (t2 - t1) * 1e3  # a new db: includes the migrations
    out["module_and_ca_open_ms"] = (t3 - t2) * 1e3
    try:
        for kt in ("ec-p256", "rsa-2048"):
            samples = []
            for i in range(runs + 1):  # the first one is a warm-up
                cn = f"inproc-{kt}-{i}"
                params = EnrollParams(token_serial=serial, subject=f"CN={cn},O=tokenissue",
                                      profile=profile, key_type=kt, ca=enroller.location,
                                      san=(f"dns:{cn}.example.test",))
                a = time.perf_counter()
                res = enroll(params, token=sel, pin=pin, enroller=enroller, holder=db, module=mod)
                dt = time.perf_counter() - a
                assert not res.resumed
                if i:
                    samples.append(dt)
            out[f"{kt}_ms"] = statistics.median(samples) * 1e3
            out[f"{kt}_samples_ms"] = [s * 1e3 for s in samples]
    finally:
        enroller.close()
print(json.dumps(out))
"""


def inprocess_loop(root: Path, runs: int) -> dict[str, object]:
    ti = _tokenissue_argv()
    conf = _softhsm_dir(root)
    env = {**_base_env(), "SOFTHSM2_CONF": str(conf), "TOKENISSUE_MODULE": SOFTHSM_MODULE,
           "TOKENISSUE_PIN": USER_PIN, "TOKENISSUE_CA_PIN": USER_PIN,
           "TOKENISSUE_STATE_DIR": str(root / "state")}
    for label in ("ca", "holder"):
        _run([*ti, "token", "init", "--label", label], {**env, "TOKENISSUE_SO_PIN": SO_PIN})
    _run([*ti, "ca", "init", "--ca", str(root / "ca"), "--token", "ca",
          "--subject", "CN=tokenissue bench CA,O=tokenissue"], env)
    _, out = _run([sys.executable, "-c", _INPROCESS, str(root / "ca"), str(runs), PROFILE,
                   SOFTHSM_MODULE], env)
    result: dict[str, object] = json.loads(out)
    result["objects_end"] = _objects(root)
    return result


# -- report ---------------------------------------------------------------------------------
def _table(head: tuple[str, ...], lines: list[tuple[str, ...]], left: tuple[int, ...] = (0,)) -> str:
    rows = [head, *lines]
    w = [max(len(r[c]) for r in rows) for c in range(len(head))]
    out = []
    for n, r in enumerate(rows):
        out.append("| " + " | ".join(x.ljust(w[c]) if c in left else x.rjust(w[c])
                                     for c, x in enumerate(r)) + " |")
        if n == 0:
            out.append("|" + "|".join("-" * (w[c] + 1) + ("-" if c in left else ":")
                                      for c in range(len(head))) + "|")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10, help="timed runs per case (default 10)")
    ap.add_argument("--json", type=Path, help="also save the results here")
    args = ap.parse_args(argv)
    if not Path(SOFTHSM_MODULE).exists():
        print(f"SoftHSM2 not installed ({SOFTHSM_MODULE}); run `make deps`", file=sys.stderr)
        return 2
    missing = [t for t in ("pkcs11-tool", "openssl", "bash") if not shutil.which(t)]
    if missing:
        print(f"missing tools: {', '.join(missing)}; run `make deps`", file=sys.stderr)
        return 2

    base = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())
    root = base / f"tokenissue-bench-enroll-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    root.mkdir(mode=0o700)
    global PYCACHE
    PYCACHE = root / "pycache"
    load_start = os.getloadavg()
    started = time.perf_counter()
    cases: list[Case] = []
    try:
        for key_type, kind in CASES:
            print(f"... {key_type}: fresh tokens, CA init", file=sys.stderr, flush=True)
            case = Case(key_type, kind, root / kind)
            case.setup()
            print(f"... {key_type}: {args.runs} interleaved rounds", file=sys.stderr, flush=True)
            case.measure(args.runs)
            cases.append(case)
        print("... in-process loop", file=sys.stderr, flush=True)
        inproc = inprocess_loop(root / "inprocess", args.runs)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    elapsed = time.perf_counter() - started
    load_end = os.getloadavg()
    loads = [x for c in cases for x in c.loads]

    print(f"\nenroll: SoftHSM on {base}, {args.runs} interleaved rounds per case after 1 warm-up, "
          f"medians of whole processes (Python {platform.python_version()}, {os.cpu_count()} CPUs)")
    print(f"load average (1 min): start {load_start[0]:.2f}, end {load_end[0]:.2f}, "
          f"during rounds {min(loads):.2f}-{max(loads):.2f}\n")
    rows: list[dict[str, object]] = []
    for c in cases:
        rows.append({
            "case": c.key_type, "tokenissue_ms": _ms(c.ti_samples), "pipeline_ms": _ms(c.pipe_samples),
            "ratio": _ms(c.ti_samples) / _ms(c.pipe_samples), "runs": len(c.ti_samples),
            # median of the per-round ratios: robust when the load changes during the case
            "paired_ratio": statistics.median(t / p for t, p in zip(c.ti_samples, c.pipe_samples, strict=True)),
            "import_floor_ms": _ms(c.floor_samples), "min_floor_ms": _ms(c.min_samples),
            "tokenissue_minus_floor_ms": _ms(c.ti_samples) - _ms(c.floor_samples),
            "inprocess_ms": float(str(inproc[f"{c.key_type}_ms"])),
            "pipeline_steps_ms": c.steps, "objects": c.objects,
        })
    print(_table(("case", "tokenissue ms", "pipeline ms", "ratio", "per-round ratio", "N"), [
        (str(r["case"]), f"{r['tokenissue_ms']:.1f}", f"{r['pipeline_ms']:.1f}",
         f"{r['ratio']:.2f}x", f"{r['paired_ratio']:.2f}x", str(r["runs"])) for r in rows]))
    print("  ratio = tokenissue median / pipeline median; per-round ratio = median of the N "
          "tokenissue/pipeline ratios of one round each")
    print("\nfloors (same run):")
    print(_table(("case", "tokenissue ms", "import floor ms", "tokenissue - floor", "minimal floor ms",
                  "in-process enroll ms"), [
        (str(r["case"]), f"{r['tokenissue_ms']:.1f}", f"{r['import_floor_ms']:.1f}",
         f"{r['tokenissue_minus_floor_ms']:.1f}", f"{r['min_floor_ms']:.1f}",
         f"{r['inprocess_ms']:.1f}") for r in rows]))
    print(f"  import floor = fresh `python -c \"{IMPORT_FLOOR}\"`; minimal floor = fresh "
          f"`python -c \"{MIN_FLOOR}\"`; both interleaved in the same rounds")
    print(f"  in-process = one process, {args.runs} enrollments per type via tokenissue.lifecycle.enroll "
          f"(imports {inproc['import_ms']:.0f} ms, new state db + migrations {inproc['open_db_ms']:.0f} ms, "
          f"module + CA open {inproc['module_and_ca_open_ms']:.0f} ms, paid once)")
    for r in rows:
        fixed = float(str(r["tokenissue_ms"])) - float(str(r["inprocess_ms"]))
        print(f"  {r['case']}: fresh-process enroll - in-process enroll = {fixed:.0f} ms of per-process cost")
    print("\npipeline step medians (ms, from classic_pipeline.sh --times):")
    for c in cases:
        print(f"  {c.key_type}: " + ", ".join(f"{k} {v:.1f}" for k, v in c.steps.items()))
    print("\ntoken objects (fresh tokens per case; +3 per enrollment, tokenissue +1 CA cert):")
    for c in cases:
        o = c.objects
        print(f"  {c.key_type}: tokenissue dir (CA + holder tokens) {o['tokenissue_start']} -> "
              f"{o['tokenissue_end']}, pipeline token {o['pipeline_start']} -> {o['pipeline_end']}")
    print(f"  in-process holder + CA tokens at end: {inproc['objects_end']}")
    ec = rows[0]
    met = float(str(ec["ratio"])) <= TARGET_RATIO
    print(f"\ntarget: EC P-256 fresh-process enroll <= {TARGET_RATIO}x the pipeline: "
          f"{'MET' if met else 'NOT MET'} ({float(str(ec['ratio'])):.2f}x; target = "
          f"{TARGET_RATIO * float(str(ec['pipeline_ms'])):.0f} ms, minimal floor + in-process enroll = "
          f"{float(str(ec['min_floor_ms'])) + float(str(ec['inprocess_ms'])):.0f} ms)")
    print(f"(total {elapsed:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps({
            "benchmark": "enroll", "runs": args.runs, "tmpfs": str(base),
            "python": platform.python_version(), "cpus": os.cpu_count(), "rows": rows,
            "samples_ms": {c.key_type: {"tokenissue": [s * 1e3 for s in c.ti_samples],
                                        "pipeline": [s * 1e3 for s in c.pipe_samples],
                                        "import_floor": [s * 1e3 for s in c.floor_samples],
                                        "minimal_floor": [s * 1e3 for s in c.min_samples]}
                           for c in cases},
            "inprocess": inproc, "target_ratio": TARGET_RATIO, "target_met": met,
            "loadavg_start": load_start, "loadavg_end": load_end, "loadavg_rounds": loads,
            "elapsed_s": elapsed,
        }, indent=2) + "\n")
        print(f"saved {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
