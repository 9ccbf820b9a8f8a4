"""Run every benchmark in bench/ (``make bench``), each in its own fresh process.

    .venv/bin/python bench/run.py [--runs N] [--json-dir DIR] [--only NAME ...]

Each benchmark is a module in this directory with a ``main(argv)`` taking ``--runs`` and
``--json``; it is started as ``python bench/NAME.py`` so that nothing one benchmark loads
(python-pkcs11, SoftHSM) leaks into the next. Exit status: 0 if every benchmark succeeded.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# Add new benchmarks here, in the order they should run.
BENCHMARKS = ["token_core", "tokens", "enroll", "cmp_server", "ca_fleet", "batch", "batch_jobs", "acme", "ocsp"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Run the tokenissue benchmarks.")
    ap.add_argument("--runs", type=int, help="timed runs per command (each benchmark's default)")
    ap.add_argument("--json-dir", type=Path, help="save each benchmark's results as DIR/NAME.json")
    ap.add_argument("--only", nargs="+", choices=BENCHMARKS, help="run only these benchmarks")
    args = ap.parse_args(argv)

    failed = []
    for name in args.only or BENCHMARKS:
        cmd = [sys.executable, str(HERE / f"{name}.py")]
        if args.runs is not None:
            cmd += ["--runs", str(args.runs)]
        if args.json_dir is not None:
            args.json_dir.mkdir(parents=True, exist_ok=True)
            cmd += ["--json", str(args.json_dir / f"{name}.json")]
        print(f"== {name}: {' '.join(cmd)}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.run(cmd, check=False).returncode
        print(f"== {name}: exit {rc} after {time.perf_counter() - t0:.0f} s\n", flush=True)
        if rc != 0:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
