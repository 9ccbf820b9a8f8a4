"""Batch provisioning in one process vs the raw python-pkcs11 floor, on the same kind of tokens.

Setup: one SoftHSM directory under /dev/shm (tmpfs) holding a CA token ('ca', EC P-256 CA key
made by ``tokenissue ca init``) and 2×N fresh user tokens: N for the batch, N for the floor,
so each side starts every token empty.

Measured, each in its own child process (imports and C_Initialize are outside the clock):

* **floor** — python-pkcs11 alone, per token: open a session and log in, generate an EC P-256
  key pair (the attributes tokenissue uses), one ECDSA signature with it (the CSR), create a
  certificate object (a real certificate's DER), close. The least any tool must do per token.
* **floor + CA** — the floor plus one ECDSA signature on the CA token per row (the
  certificate's signature), the least a tool with its CA key on a token must do.
* **batch** — :func:`tokenissue.fleet.run_batch` over N rows, one per token, exactly as
  ``tokenissue batch enroll`` runs it: journaled steps in the holder's SQLite state
  (synchronous=FULL), CSR built and signed in the token, the built-in CA (key on the 'ca'
  token, SQLite inventory) checks the profile and issues, proof of possession and chain
  verification, certificate and CA certificate written to the token, CA record and audit entry.

Reported: ms per token (median of runs) and the ratios floor / batch and (floor + CA) / batch
(1.0 = as fast as the floor; the issue's target is >= 0.9 against the floor). Then one batch
under cProfile, its self time bucketed: token (python-pkcs11 + tokenissue.p11), database
(SQLAlchemy + sqlite3 + tokenissue.inventory), X.509 (cryptography), other.

    .venv/bin/python bench/batch.py [--tokens N] [--runs R] [--json FILE]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SOFTHSM_MODULE = "/usr/lib/softhsm/libsofthsm2.so"
USER_PIN = "246810"
SO_PIN = "13579135"
REPO = Path(__file__).resolve().parent.parent


def _env(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENISSUE_")}
    env.update(
        SOFTHSM2_CONF=str(root / "softhsm2.conf"), TOKENISSUE_MODULE=SOFTHSM_MODULE, TOKENISSUE_PIN=USER_PIN,
        TOKENISSUE_CA_PIN=USER_PIN, TOKENISSUE_STATE_DIR=str(root / "state"), PYTHONPATH=str(REPO),
    )  # fmt: skip
    return env


def _make_tokens(root: Path, labels: list[str]) -> None:
    env = _env(root)
    for label in labels:
        subprocess.run(
            ["softhsm2-util", "--init-token", "--free", "--label", label, "--so-pin", SO_PIN, "--pin", USER_PIN],
            env=env, check=True, capture_output=True,
        )  # fmt: skip


def setup(root: Path, n: int, round_no: int) -> tuple[list[str], list[str]]:
    """Fresh tokens for one round; the CA is made on the first round."""
    batch = [f"b{round_no:02d}-{i:03d}" for i in range(n)]
    floor = [f"f{round_no:02d}-{i:03d}" for i in range(n)]
    if round_no == 0:
        (root / "tokens").mkdir(parents=True)
        (root / "softhsm2.conf").write_text(
            f"directories.tokendir = {root / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n"
        )
        _make_tokens(root, ["ca"])
        subprocess.run(
            [sys.executable, "-m", "tokenissue.cli", "ca", "init", "--ca", str(root / "ca"), "--token", "ca",
             "--subject", "CN=Bench Batch CA,O=tokenissue bench"],
            env=_env(root), check=True, capture_output=True,
        )  # fmt: skip
    _make_tokens(root, batch + floor)
    return batch, floor


# -- the contenders (run in a child: python bench/batch.py --child KIND ROOT LABELS...) -------
def child_floor(root: Path, labels: list[str], with_ca: bool) -> float:
    import pkcs11
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
    from pkcs11.constants import CertificateType
    from pkcs11.util.ec import encode_named_curve_parameters

    lib = pkcs11.lib(SOFTHSM_MODULE)
    ca_cert = x509.load_pem_x509_certificate((root / "ca" / "ca.pem").read_bytes())
    der = ca_cert.public_bytes(serialization.Encoding.DER)
    digest = hashes.Hash(hashes.SHA256())
    digest.update(der)
    tbs_hash = digest.finalize()
    params = encode_named_curve_parameters("secp256r1")
    ca_session = ca_key = None
    if with_ca:
        ca_session = lib.get_token(token_label="ca").open(user_pin=USER_PIN)
        ca_key = ca_session.get_key(object_class=ObjectClass.PRIVATE_KEY)
    tokens = [lib.get_token(token_label=label) for label in labels]
    start = time.perf_counter()
    for i, token in enumerate(tokens):
        with token.open(rw=True, user_pin=USER_PIN) as s:
            ec = s.create_domain_parameters(KeyType.EC, {Attribute.EC_PARAMS: params}, local=True)
            kid = os.urandom(20)
            _pub, priv = ec.generate_keypair(
                store=True,
                public_template={Attribute.ID: kid, Attribute.LABEL: f"k{i}", Attribute.VERIFY: True},
                private_template={
                    Attribute.ID: kid, Attribute.LABEL: f"k{i}", Attribute.SIGN: True, Attribute.SENSITIVE: True,
                    Attribute.EXTRACTABLE: False, Attribute.DECRYPT: False, Attribute.UNWRAP: False,
                    Attribute.DERIVE: False, Attribute.SIGN_RECOVER: False,
                },
            )  # fmt: skip
            priv.sign(tbs_hash, mechanism=Mechanism.ECDSA)  # the CSR's signature
            if ca_key is not None:
                ca_key.sign(tbs_hash, mechanism=Mechanism.ECDSA)  # the certificate's signature
            s.create_object({
                Attribute.CLASS: ObjectClass.CERTIFICATE, Attribute.CERTIFICATE_TYPE: CertificateType.X_509,
                Attribute.TOKEN: True, Attribute.PRIVATE: False, Attribute.ID: kid, Attribute.LABEL: f"k{i}",
                Attribute.VALUE: der, Attribute.SUBJECT: ca_cert.subject.public_bytes(),
            })  # fmt: skip
    elapsed = time.perf_counter() - start
    if ca_session is not None:
        ca_session.close()
    return elapsed


def child_batch(root: Path, labels: list[str], profile_out: Path | None) -> float:
    from tokenissue import p11
    from tokenissue.credentials import Pin
    from tokenissue.enroll.local import LocalCA
    from tokenissue.fleet import run_batch
    from tokenissue.fleet.batch import read_rows
    from tokenissue.inventory import Inventory

    text = "token,subject\n" + "".join(f'{t},"CN=Holder {t},O=Example Bank"\n' for t in labels)
    rows = read_rows(text, default_profile="personal")
    p11.load_module(SOFTHSM_MODULE).tokens()  # C_Initialize outside the clock, as for the floor
    (root / "state").mkdir(exist_ok=True)
    local = LocalCA(root / "ca", ca_pin=Pin(USER_PIN), module=SOFTHSM_MODULE)
    with Inventory.open(root / "state" / "state.db") as db:
        profiler = cProfile.Profile() if profile_out else None
        start = time.perf_counter()
        if profiler:
            profiler.enable()
        results = run_batch(rows, pin=Pin(USER_PIN), enroller_for=lambda _r: local, holder=db, module=SOFTHSM_MODULE)
        if profiler:
            profiler.disable()
        elapsed = time.perf_counter() - start
    local.close()
    bad = [r for r in results if not r.ok]
    if bad:
        raise SystemExit(f"batch rows failed: {bad[:3]}")
    if profiler and profile_out:
        profiler.dump_stats(str(profile_out))
    return elapsed


def _child(kind: str, root: Path, labels: list[str], extra: list[str] | None = None) -> float:
    out = subprocess.run(
        [sys.executable, __file__, *(extra or []), "--child", kind, str(root), *labels],
        env=_env(root), check=True, capture_output=True, text=True,
    )  # fmt: skip
    return float(out.stdout.strip().splitlines()[-1])


BUCKETS = (
    ("token", ("pkcs11", "tokenissue/p11")),
    ("database", ("sqlalchemy", "sqlite3", "tokenissue/inventory", "alembic")),
    ("X.509 (cryptography)", ("cryptography",)),
)


def buckets(profile: Path) -> dict[str, float]:
    stats = pstats.Stats(str(profile))
    out = dict.fromkeys([b for b, _ in BUCKETS] + ["other"], 0.0)
    for (filename, _line, _func), (_cc, _nc, tt, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        name = filename.replace("\\", "/")
        for bucket, needles in BUCKETS:
            if any(n in name for n in needles):
                out[bucket] += tt
                break
        else:
            out["other"] += tt
    total = sum(out.values()) or 1.0
    return {k: round(100 * v / total, 1) for k, v in out.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=20, help="tokens per side per round (default 20)")
    ap.add_argument("--runs", type=int, default=3, help="rounds, interleaved (default 3)")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    ap.add_argument("--profile-out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        kind, root, *labels = args.child
        if kind == "batch":
            print(child_batch(Path(root), labels, args.profile_out))
        else:
            print(child_floor(Path(root), labels, with_ca=kind == "floor+ca"))
        return 0
    if shutil.which("softhsm2-util") is None:
        print("softhsm2-util is not installed (apt-get install softhsm2)", file=sys.stderr)
        return 2
    base = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
    root = Path(tempfile.mkdtemp(prefix="tokenissue-bench-batch-", dir=base))
    samples: dict[str, list[float]] = {"floor": [], "floor+ca": [], "batch": []}
    try:
        for r in range(args.runs + 1):  # round 0 warms caches (bytecode, page cache) and is dropped
            batch_tokens, floor_tokens = setup(root, args.tokens, r)
            half = len(floor_tokens) // 2
            t_floor = _child("floor", root, floor_tokens[:half]) / max(half, 1)
            t_floor_ca = _child("floor+ca", root, floor_tokens[half:]) / max(len(floor_tokens) - half, 1)
            t_batch = _child("batch", root, batch_tokens) / len(batch_tokens)
            if r:
                samples["floor"].append(t_floor)
                samples["floor+ca"].append(t_floor_ca)
                samples["batch"].append(t_batch)
        med = {k: statistics.median(v) * 1000 for k, v in samples.items()}
        prof_tokens, _ = setup(root, args.tokens, args.runs + 1)
        prof = root / "batch.prof"
        _child("batch", root, prof_tokens, [f"--profile-out={prof}"])
        split = buckets(prof)
    finally:
        if os.environ.get("BENCH_KEEP_PROFILE") and (root / "batch.prof").exists():
            shutil.copy(root / "batch.prof", os.environ["BENCH_KEEP_PROFILE"])
        shutil.rmtree(root, ignore_errors=True)
    figures = {
        "tokens_per_round": args.tokens, "rounds": args.runs, "ms_per_token": {k: round(v, 2) for k, v in med.items()},
        "ratio_floor_over_batch": round(med["floor"] / med["batch"], 3),
        "ratio_floor_ca_over_batch": round(med["floor+ca"] / med["batch"], 3),
        "batch_profile_self_time_pct": split,
    }  # fmt: skip
    print(f"Batch provisioning, {args.tokens} tokens per round, median of {args.runs} rounds (SoftHSM on tmpfs)\n")
    print(f"  {'contender':<34}{'ms/token':>10}")
    print(f"  {'floor: python-pkcs11 login+keygen+sign+create':<34}{med['floor']:>10.2f}")
    print(f"  {'floor + CA-token signature':<34}{med['floor+ca']:>10.2f}")
    print(f"  {'tokenissue run_batch':<34}{med['batch']:>10.2f}")
    print(f"\n  ratio floor / batch        = {figures['ratio_floor_over_batch']:.3f}  (target >= 0.9)")
    print(f"  ratio (floor + CA) / batch = {figures['ratio_floor_ca_over_batch']:.3f}")
    print("\n  batch self time: " + ", ".join(f"{k} {v}%" for k, v in split.items()))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
