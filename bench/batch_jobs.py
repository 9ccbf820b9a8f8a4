"""``tokenissue batch enroll --jobs N`` against ``--jobs 1``: whole commands, same tray size.

Each round makes fresh SoftHSM tokens (tmpfs) for every contender, then times the real CLI
(``python -m tokenissue.cli batch enroll FILE --ca DIR --jobs N``) from start to exit, the
contenders interleaved round by round. Run for EC P-256 keys (a row is ~15 ms of tokenissue's
own work) and RSA-2048 keys (the token's key generation dominates, as on a smart card).
Reported: median seconds per batch and the speed-up of each --jobs N over --jobs 1.

    .venv/bin/python bench/batch_jobs.py [--tokens 12] [--runs 3] [--jobs 2 4] [--json FILE]
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
import time
from pathlib import Path

# The same SoftHSM set-up as bench/batch.py (this directory is on sys.path when run as a script).
from batch import _env
from batch import _make_tokens as _tokens


def _cli(root: Path, *args: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "tokenissue.cli", *args], env=_env(root), check=True, capture_output=True)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=12, help="tokens per batch (default 12)")
    ap.add_argument("--runs", type=int, default=3, help="rounds (default 3)")
    ap.add_argument("--jobs", type=int, nargs="+", default=[2], help="--jobs values to compare with 1 (default 2)")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args(argv)
    if shutil.which("softhsm2-util") is None:
        print("softhsm2-util is not installed (apt-get install softhsm2)", file=sys.stderr)
        return 2
    base = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
    figures: dict[str, dict[str, float]] = {}
    print(f"batch enroll --jobs: {args.tokens} tokens per batch, median of {args.runs} rounds, {os.cpu_count()} CPUs\n")
    print(f"  {'key type':<10}{'--jobs':>7}{'s/batch':>10}{'speed-up':>10}")
    for key_type in ("ec-p256", "rsa-2048"):
        root = Path(tempfile.mkdtemp(prefix="tokenissue-bench-jobs-", dir=base))
        try:
            (root / "tokens").mkdir()
            (root / "softhsm2.conf").write_text(
                f"directories.tokendir = {root / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n"
            )
            _tokens(root, ["ca"])
            _cli(root, "ca", "init", "--ca", str(root / "ca"), "--token", "ca", "--subject", "CN=Bench Jobs CA")
            samples: dict[int, list[float]] = {j: [] for j in [1, *args.jobs]}
            for r in range(args.runs + 1):  # round 0 warms the bytecode and page caches
                for jobs in samples:
                    labels = [f"r{r}j{jobs}-{i:03d}" for i in range(args.tokens)]
                    _tokens(root, labels)
                    csv_file = root / f"r{r}j{jobs}.csv"
                    csv_file.write_text("token,subject,key_type\n" + "".join(f"{t},CN={t},{key_type}\n" for t in labels))
                    took = _cli(root, "batch", "enroll", str(csv_file), "--ca", str(root / "ca"), "--jobs", str(jobs))
                    if r:
                        samples[jobs].append(took)
        finally:
            shutil.rmtree(root, ignore_errors=True)
        med = {j: statistics.median(v) for j, v in samples.items()}
        figures[key_type] = {f"jobs_{j}_s": round(m, 3) for j, m in med.items()}
        for j, m in med.items():
            print(f"  {key_type:<10}{j:>7}{m:>10.2f}{med[1] / m:>9.2f}x")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
