"""``tokenissue batch enroll``: a tray of real SoftHSM tokens provisioned from one CSV file.

Checked after every run, from the tokens and the CA's inventory, not from what the command
says: each finished row has exactly one private key and its certificate on its token; the CA
recorded exactly one certificate per finished row; no enrollment is left open in the journal
once the batch has finished it. Faults: a missing token, a bad file, a wrong PIN, the process
killed mid-row, a token pulled out (its SoftHSM directory moved away) between issuance and
write-back, a full token.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tokenissue.credentials import Pin

from support.cli import USER_PIN
from support.lifecycle import TokenCA, add_token_fast, make_token_ca, token_dir
from support.softhsm import SOFTHSM_MODULE, SoftHSM

pytestmark = pytest.mark.slow

TRAY = ("tray-01", "tray-02", "tray-03")


@pytest.fixture
def tray(softhsm: SoftHSM) -> TokenCA:
    ca = make_token_ca(softhsm)
    for label in TRAY:
        add_token_fast(softhsm, label)
    return ca


def _csv(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def _rows(*extra: dict[str, str]) -> list[dict[str, str]]:
    names = ("홍길동", "김철수", "이영희")
    base = [{"token": t, "subject": f"CN={n},O=Example Bank,C=KR", "profile": "", "key_type": ""} for t, n in zip(TRAY, names, strict=True)]
    base[1]["profile"], base[1]["key_type"] = "personal-banking", "rsa-2048"
    return [*base, *extra]


def _batch(ca: TokenCA, csv_file: Path, *extra: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return ca.run("batch", "enroll", str(csv_file), "--ca", str(ca.dir), *extra, env=env)


def _results(path: Path) -> list[dict[str, Any]]:
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _token_state(ca: TokenCA, token: str) -> tuple[int, list[str]]:
    """(private keys on the token, serials of end-entity certificates with their key)."""
    keys = ca.private_keys(token)
    certs = [c["serial"] for c in ca.token_certs(token) if not c["ca"] and c["has_key"]]
    return len(keys), certs


def _open_journal(ca: TokenCA) -> list[Any]:
    from tokenissue.inventory import Inventory

    with Inventory.open(ca.hsm.root / "state" / "state.db") as db:
        return db.journal_open("enroll")


def test_tray_enrolls_reports_and_reruns_idempotently(tray: TokenCA, tmp_path: Path) -> None:
    rows = _rows({"token": "tray-99", "subject": "CN=Absent,O=Example Bank,C=KR", "profile": "", "key_type": ""})
    src = _csv(tmp_path / "tray.csv", rows)
    out = tmp_path / "results.csv"
    first = _batch(tray, src, "--results", str(out))
    assert first.returncode == 8, first.stderr  # one row failed, the others finished
    assert "line 5" in first.stderr and "No token 'tray-99' found" in first.stderr
    assert out.stat().st_mode & 0o777 == 0o600
    results = _results(out)
    assert [r["status"] for r in results] == ["enrolled", "enrolled", "enrolled", "failed"]
    assert results[3]["exit_code"] == "4"
    issued = {r["serial"] for r in tray.issued()}
    assert issued == {r["serial"] for r in results[:3]}
    for label, r in zip(TRAY, results, strict=False):
        n_keys, certs = _token_state(tray, label)
        assert (n_keys, certs) == (1, [r["serial"]])
    # The RSA row got an RSA key, the banking row its profile; checked by openssl, not by us.
    leaf = tmp_path / "kim.pem"
    tray.export(results[1]["label"], leaf, token="tray-02")
    from support.openssl import openssl

    text = openssl("x509", "-in", str(leaf), "-noout", "-text").stdout
    assert "rsaEncryption" in text and "2048 bit" in text
    assert tray.verify(leaf).returncode == 0

    # Same file again: nothing new at the CA, finished rows say so, JSON on stdout.
    again = _batch(tray, src, "--json")
    assert again.returncode == 8
    doc = json.loads(again.stdout)
    assert [r["status"] for r in doc] == ["already-done"] * 3 + ["failed"]
    assert {r["serial"] for r in tray.issued()} == issued
    assert _open_journal(tray) == []


def test_a_bad_file_is_refused_before_any_token_is_touched(tray: TokenCA, tmp_path: Path) -> None:
    rows = _rows(
        {"token": "tray-01", "subject": "CN=Bad Type,O=Example Bank,C=KR", "profile": "", "key_type": "dsa-1024"},
        {"token": "tray-02", "subject": "not a subject", "profile": "", "key_type": ""},
    )
    rows.append(dict(rows[0]))  # an exact repeat of line 2
    res = _batch(tray, _csv(tmp_path / "bad.csv", rows))
    assert res.returncode == 2, res.stderr
    for line in ("line 5", "line 6", "line 7: repeats line 2"):
        assert line in res.stderr, res.stderr
    assert "nothing was done" in res.stderr
    assert all(_token_state(tray, t) == (0, []) for t in TRAY)
    assert tray.issued() == []
    unknown = _rows()
    unknown[2]["profile"] = "no-such-profile"
    res = _batch(tray, _csv(tmp_path / "profile.csv", unknown))
    assert res.returncode == 2 and "lines 4:" in res.stderr and "nothing was done" in res.stderr, res.stderr
    assert all(_token_state(tray, t) == (0, []) for t in TRAY)
    header = _batch(tray, _csv(tmp_path / "header.csv", [{"token": "tray-01", "subjekt": "CN=x"}]))
    assert header.returncode == 2 and "unknown: subjekt" in header.stderr and "missing: subject" in header.stderr


def test_a_refused_pin_stops_the_batch(tray: TokenCA, tmp_path: Path) -> None:
    res = _batch(tray, _csv(tmp_path / "tray.csv", _rows()), "--json", env={"TOKENISSUE_PIN": "000000"})
    assert res.returncode == 8
    doc = json.loads(res.stdout)
    assert [(r["status"], r["exit_code"]) for r in doc] == [("failed", 5), ("skipped", 5), ("skipped", 5)]
    assert "do not spend a PIN try" in doc[1]["error"]
    assert "000000" not in res.stdout + res.stderr


def test_killed_mid_row_the_same_command_finishes_without_issuing_twice(tray: TokenCA, tmp_path: Path) -> None:
    src = _csv(tmp_path / "tray.csv", _rows())
    out = tmp_path / "results.jsonl"
    # SIGKILL right after the CA issued row 1's certificate, before it reached the token.
    killed = _batch(tray, src, "--results", str(out), env={"TOKENISSUE_FAILPOINT": "issued-recorded"})
    assert killed.returncode == -9, killed.stderr
    assert out.read_text() == ""  # no row had finished
    assert len(tray.issued()) == 1
    assert len(_open_journal(tray)) == 1
    done = _batch(tray, src, "--results", str(out))
    assert done.returncode == 0, done.stderr
    assert [r["status"] for r in _results(out)] == ["resumed", "enrolled", "enrolled"]
    assert len(tray.issued()) == 3  # row 1 was not issued again
    assert all(_token_state(tray, t)[0] == 1 for t in TRAY)
    assert _open_journal(tray) == []


def _run_in_process(hsm: SoftHSM, ca: TokenCA, rows: list[Any], on_step: Any = None) -> list[Any]:
    from tokenissue.enroll.local import LocalCA
    from tokenissue.fleet import run_batch
    from tokenissue.inventory import Inventory

    (hsm.root / "state").mkdir(exist_ok=True)
    local = LocalCA(ca.dir, ca_pin=Pin(USER_PIN), module=SOFTHSM_MODULE)
    try:
        with Inventory.open(hsm.root / "state" / "state.db") as db:
            return run_batch(
                rows, pin=Pin(USER_PIN), enroller_for=lambda _row: local, holder=db, module=SOFTHSM_MODULE, on_step=on_step
            )
    finally:
        local.close()


def test_token_pulled_between_issuance_and_write_back(session_softhsm: SoftHSM, tmp_path: Path) -> None:
    from tokenissue import p11
    from tokenissue.fleet import read_rows

    hsm = session_softhsm
    ca = make_token_ca(hsm)
    for label in TRAY:
        add_token_fast(hsm, label)
    p11.load_module(SOFTHSM_MODULE).refresh()
    text = (_csv(tmp_path / "tray.csv", _rows())).read_text(encoding="utf-8")
    rows = read_rows(text, default_profile="personal")
    victim = token_dir(hsm, "tray-02")
    away = tmp_path / "pulled-token"
    seen: list[str] = []

    def pull_at_row_2(step: str) -> None:
        seen.append(step)
        if step == "issued-recorded" and seen.count("issued-recorded") == 2:
            shutil.move(str(victim), str(away))  # the token leaves the reader

    results = _run_in_process(hsm, ca, rows, on_step=pull_at_row_2)
    assert [r.status for r in results] == ["enrolled", "failed", "enrolled"], [r.error for r in results]
    assert "went away" in (results[1].error or ""), results[1].error
    assert len(ca.records()) == 3  # row 2's certificate was issued, and is not lost:
    shutil.move(str(away), str(victim))  # plugged in again
    again = _run_in_process(hsm, ca, rows)
    assert [r.status for r in again] == ["already-done", "resumed", "already-done"], [r.error for r in again]
    assert len(ca.records()) == 3  # ... it was written back, not issued again
    assert again[1].serial in {format(r.serial, "x") for r in ca.records()}
    assert _token_state(ca, "tray-02") == (1, [again[1].serial])
    assert _open_journal(ca) == []


def test_a_full_token_fails_its_row_cleanly_and_finishes_once_freed(tray: TokenCA, tmp_path: Path) -> None:
    """The token's directory on a tiny tmpfs, so key generation hits a full device."""
    hsm = tray.hsm
    victim = token_dir(hsm, "tray-02")
    saved = tmp_path / "tray-02-saved"
    shutil.copytree(victim, saved)
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12k,mode=0700", "tmpfs", str(victim)],
                           capture_output=True, text=True, check=False)  # fmt: skip
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {mount.stderr.strip()}")
    try:
        shutil.copytree(saved, victim, dirs_exist_ok=True)
        src = _csv(tmp_path / "tray.csv", _rows())
        res = _batch(tray, src, "--json")
        assert res.returncode == 8, res.stderr
        doc = json.loads(res.stdout)
        assert [r["status"] for r in doc] == ["enrolled", "failed", "enrolled"]
        assert "may be full" in doc[1]["error"], doc[1]["error"]
        assert _token_state(tray, "tray-02") == (0, [])  # no key left behind without its certificate
        # ... nor half a key pair: pkcs11-tool (OpenSC) sees no object at all on the token.
        objects = subprocess.run(
            ["pkcs11-tool", "--module", SOFTHSM_MODULE, "--token-label", "tray-02", "--login", "--pin", USER_PIN, "-O"],
            capture_output=True, text=True, env=hsm.env, check=False,
        )  # fmt: skip
        assert objects.returncode == 0 and "Object" not in objects.stdout, objects.stdout + objects.stderr
        assert len(tray.issued()) == 2
        # Free the space: the token moves back to the roomy directory, as if emptied.
        shutil.copytree(victim, saved, dirs_exist_ok=True)
    finally:
        subprocess.run(["umount", str(victim)], check=False)
    shutil.copytree(saved, victim, dirs_exist_ok=True)
    res = _batch(tray, src, "--json")
    assert res.returncode == 0, res.stderr
    assert [r["status"] for r in json.loads(res.stdout)] == ["already-done", "enrolled", "already-done"]
    assert _token_state(tray, "tray-02")[0] == 1 and len(tray.issued()) == 3


def test_batch_over_cmp_with_a_code_per_row(tray: TokenCA, tmp_path: Path) -> None:
    from support.cmp_server import register, served

    regs = [register(tray.dir, f"CN=Holder {i},O=Example Bank,C=KR") for i in range(2)]
    codes = tmp_path / "codes.txt"
    # A space or a tab between reference and code, as people write them.
    codes.write_text("# ref code\n" + "".join(f"{r.ref}{sep}{r.code.reveal()}\n" for r, sep in zip(regs, (" ", "\t"), strict=True)))
    codes.chmod(0o600)
    rows = [
        {"token": t, "subject": f"CN=Holder {i},O=Example Bank,C=KR", "ref": r.ref}
        for i, (t, r) in enumerate(zip(TRAY[:2], regs, strict=True))
    ]
    src = _csv(tmp_path / "cmp.csv", rows)
    with served(tray) as server:
        url = f"cmp+{server.url}/pkix/"
        trust = ["--ca-trust", str(tray.pem)]
        loose = codes.with_name("loose.txt")
        loose.write_text(codes.read_text())
        loose.chmod(0o644)
        refused = tray.run("batch", "enroll", str(src), "--ca", url, "--auth-codes", str(loose), *trust)
        assert refused.returncode == 5 and "chmod 600" in refused.stderr
        broken = codes.with_name("broken.txt")
        broken.write_text(f"{regs[0].code.reveal()}\n")  # a code without its reference
        broken.chmod(0o600)
        refused = tray.run("batch", "enroll", str(src), "--ca", url, "--auth-codes", str(broken), *trust)
        assert refused.returncode == 2 and "line 1 is not 'REF CODE'" in refused.stderr, refused.stderr
        assert regs[0].code.reveal() not in refused.stdout + refused.stderr
        res = tray.run("batch", "enroll", str(src), "--ca", url, "--auth-codes", str(codes), *trust, "--json")
        assert res.returncode == 0, res.stderr
        doc = json.loads(res.stdout)
        assert [r["status"] for r in doc] == ["enrolled", "enrolled"]
        again = tray.run("batch", "enroll", str(src), "--ca", url, "--auth-codes", str(codes), *trust, "--json")
        assert [r["status"] for r in json.loads(again.stdout)] == ["already-done", "already-done"]
    for r in regs:
        assert r.code.reveal() not in res.stdout + res.stderr + again.stdout + again.stderr
    issued = {r["serial"] for r in tray.issued()}
    assert issued == {r["serial"] for r in doc}
    assert all(_token_state(tray, t)[0] == 1 for t in TRAY[:2])

    # --jobs: the worker gets the code through its pipe and enrolls over CMP the same way.
    third = register(tray.dir, "CN=Holder 2,O=Example Bank,C=KR")
    codes.write_text(f"{third.ref} {third.code.reveal()}\n")
    src = _csv(tmp_path / "cmp3.csv", [{"token": TRAY[2], "subject": "CN=Holder 2,O=Example Bank,C=KR", "ref": third.ref}])
    with served(tray) as server:
        url = f"cmp+{server.url}/pkix/"
        res = tray.run("batch", "enroll", str(src), "--ca", url, "--auth-codes", str(codes), *trust, "--jobs", "2", "--json")
    assert res.returncode == 0, res.stderr
    [row] = json.loads(res.stdout)
    assert row["status"] == "enrolled"
    assert _token_state(tray, TRAY[2]) == (1, [row["serial"]])
    assert third.code.reveal() not in res.stdout + res.stderr


def test_progress_bar_on_a_terminal(tray: TokenCA, tmp_path: Path) -> None:
    """On a terminal (script(1) gives the command a pty) the batch draws a rich progress bar
    that ends at done/total; the per-row lines are printed above it."""
    if shutil.which("script") is None:
        pytest.skip("script(1) from util-linux is not installed")
    import shlex
    import sys

    src = _csv(tmp_path / "tray.csv", _rows())
    argv = [sys.executable, "-m", "tokenissue.cli", "batch", "enroll", str(src), "--ca", str(tray.dir)]
    proc = subprocess.run(
        ["script", "-qec", shlex.join(argv), "/dev/null"],
        capture_output=True, text=True, timeout=300, check=False, env={**tray.hsm.env, **tray.env, "TERM": "xterm"},
    )  # fmt: skip
    import re

    out = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", proc.stdout)  # colours and cursor moves
    assert proc.returncode == 0, out
    assert "Enrolling" in out and "3/3" in out and "━" in out, out
    assert out.count("enrolled serial") == 3, out


# -- --jobs: worker processes -------------------------------------------------------------
def test_jobs_enroll_the_tray_in_parallel_and_keep_one_token_to_one_worker(tray: TokenCA, tmp_path: Path) -> None:
    # Two rows name tray-01: they must run one after another in one worker (a token never
    # serves two processes' enrollments at once), the others side by side.
    extra = {"token": "tray-01", "subject": "CN=Second,O=Example Bank,C=KR", "profile": "", "key_type": "", "label": "second"}
    rows = _rows(extra)
    rows[0]["label"] = "first"
    for r in rows[1:3]:
        r["label"] = ""
    src = _csv(tmp_path / "tray.csv", rows)
    out = tmp_path / "results.jsonl"
    res = _batch(tray, src, "--jobs", "3", "--results", str(out), "--json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert [r["line"] for r in doc] == [2, 3, 4, 5]  # file order on stdout, whatever the finishing order
    assert [r["status"] for r in doc] == ["enrolled"] * 4
    assert out.stat().st_mode & 0o777 == 0o600
    assert sorted(r["line"] for r in _results(out)) == [2, 3, 4, 5]
    issued = [r["serial"] for r in tray.issued()]
    assert sorted(issued) == sorted(r["serial"] for r in doc)  # one certificate per row, none twice
    n_keys, certs = _token_state(tray, "tray-01")
    assert n_keys == 2 and sorted(certs) == sorted([doc[0]["serial"], doc[3]["serial"]])
    for label, r in zip(TRAY[1:], doc[1:3], strict=True):
        assert _token_state(tray, label) == (1, [r["serial"]])
    assert USER_PIN not in res.stdout + res.stderr
    again = _batch(tray, src, "--jobs", "3", "--json")
    assert again.returncode == 0, again.stderr
    assert [r["status"] for r in json.loads(again.stdout)] == ["already-done"] * 4
    assert sorted(r["serial"] for r in tray.issued()) == sorted(issued)
    assert _open_journal(tray) == []


def test_jobs_a_killed_worker_fails_its_row_and_the_rerun_finishes_it(tray: TokenCA, tmp_path: Path) -> None:
    src = _csv(tmp_path / "tray.csv", _rows())
    # Every worker SIGKILLs itself right after journaling an issuance: the CA has issued, the
    # token does not have the certificate yet.
    killed = _batch(tray, src, "--jobs", "2", "--json", env={"TOKENISSUE_FAILPOINT": "issued-recorded"})
    assert killed.returncode == 8, killed.stderr
    doc = json.loads(killed.stdout)
    assert [r["status"] for r in doc] == ["failed"] * 3
    assert all("worker process" in r["error"] and "run the same command again" in r["error"] for r in doc)
    issued = sorted(r["serial"] for r in tray.issued())
    assert len(issued) == 3
    assert len(_open_journal(tray)) == 3
    again = _batch(tray, src, "--jobs", "2", "--json")
    assert again.returncode == 0, again.stderr
    done = json.loads(again.stdout)
    assert [r["status"] for r in done] == ["resumed"] * 3
    assert sorted(r["serial"] for r in done) == issued  # the same certificates, nothing issued twice
    assert sorted(r["serial"] for r in tray.issued()) == issued
    for label, r in zip(TRAY, done, strict=True):
        assert _token_state(tray, label) == (1, [r["serial"]])
    assert _open_journal(tray) == []


def test_jobs_a_refused_pin_stops_dispatching(tray: TokenCA, tmp_path: Path) -> None:
    extra = [{"token": f"tray-0{i}", "subject": f"CN=Extra {i},O=Example Bank,C=KR", "profile": "", "key_type": ""} for i in (4, 5)]
    for row in extra:
        add_token_fast(tray.hsm, row["token"])
    res = _batch(tray, _csv(tmp_path / "tray.csv", _rows(*extra)), "--jobs", "2", "--json", env={"TOKENISSUE_PIN": "000000"})
    assert res.returncode == 8
    doc = json.loads(res.stdout)
    tried = [r for r in doc if r["status"] == "failed"]
    # Only the rows already running when the first refusal came back spend a try: at most one
    # per worker.
    assert 1 <= len(tried) <= 2, doc
    assert all(r["exit_code"] == 5 for r in tried)
    assert [r["status"] for r in doc if r not in tried] == ["skipped"] * (5 - len(tried))
    assert "000000" not in res.stdout + res.stderr
    assert tray.issued() == []


def test_two_runs_of_one_batch_at_once_enroll_each_row_once(tray: TokenCA, tmp_path: Path) -> None:
    """Found by review: an operator (or cron) starting the same batch twice used to enroll rows
    twice and leave keys without certificates. Each enrollment now holds its token's lock."""
    for label in ("tray-04", "tray-05", "tray-06"):
        add_token_fast(tray.hsm, label)
    rows = [{"token": f"tray-0{i}", "subject": f"CN=Twice {i},O=Example Bank,C=KR"} for i in range(1, 7)]
    src = _csv(tmp_path / "tray.csv", rows)
    cmd = [sys.executable, "-m", "tokenissue.cli", "batch", "enroll", str(src), "--ca", str(tray.dir), "--json"]
    env = {**tray.hsm.env, **tray.env}
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
    docs = [json.loads(out) for out, _ in outs]
    for line in range(2, 8):
        statuses = sorted(next(r["status"] for r in doc if r["line"] == line) for doc in docs)
        assert statuses == ["already-done", "enrolled"], (line, statuses)
    issued = tray.issued()
    assert len(issued) == 6, issued
    for i in range(1, 7):
        n_keys, certs = _token_state(tray, f"tray-0{i}")
        assert n_keys == 1 and len(certs) == 1, (i, n_keys, certs)
    assert _open_journal(tray) == []


def test_an_unwritable_results_file_is_refused_before_anything_is_done(tray: TokenCA, tmp_path: Path) -> None:
    src = _csv(tmp_path / "tray.csv", _rows())
    for bad in (tmp_path / "no-such-dir" / "out.csv", tmp_path):
        res = _batch(tray, src, "--results", str(bad))
        assert res.returncode == 2, res.stderr
        assert "Cannot write the results" in res.stderr and "Traceback" not in res.stderr
    assert tray.issued() == []


def test_jobs_check_the_ca_pin_once_before_any_worker_starts(tray: TokenCA, tmp_path: Path) -> None:
    """Found by review: each worker logged in to the CA token itself, so a wrong CA PIN spent
    one of the CA token's few tries per worker."""
    res = _batch(tray, _csv(tmp_path / "tray.csv", _rows()), "--jobs", "3", env={"TOKENISSUE_CA_PIN": "000000"})
    assert res.returncode == 5, res.stderr
    assert "'ca'" in res.stderr and "refused" in res.stderr
    assert all(_token_state(tray, t) == (0, []) for t in TRAY)  # no row was started
    assert "000000" not in res.stdout + res.stderr


def test_jobs_sigterm_stops_the_workers_and_the_rerun_finishes(tray: TokenCA, tmp_path: Path) -> None:
    import signal
    import time

    labels = [f"term-{i}" for i in range(6)]
    for label in labels:
        add_token_fast(tray.hsm, label)
    rows = [{"token": t, "subject": f"CN={t},O=Example Bank,C=KR", "key_type": "rsa-2048"} for t in labels]
    src = _csv(tmp_path / "term.csv", rows)
    cmd = [sys.executable, "-m", "tokenissue.cli", "batch", "enroll", str(src), "--ca", str(tray.dir), "--jobs", "2"]
    proc = subprocess.Popen(cmd, env={**tray.hsm.env, **tray.env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    first = proc.stderr.readline()  # the first finished row: the workers are busy with others
    assert "enrolled" in first, first
    children = subprocess.run(["ps", "-o", "pid=,args=", "--ppid", str(proc.pid)], capture_output=True, text=True).stdout
    workers = [int(line.split()[0]) for line in children.splitlines() if "_batch_worker" in line]
    assert len(workers) == 2, children
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err

    def alive(pid: int) -> bool:
        try:
            return "_batch_worker" in Path(f"/proc/{pid}/cmdline").read_text(errors="replace")
        except FileNotFoundError:
            return False

    deadline = time.monotonic() + 10  # the batch waits for its workers; this is slack only
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(alive(pid) for pid in workers), "a worker outlived the batch"
    again = _batch(tray, src, "--json")
    assert again.returncode == 0, again.stderr
    done = json.loads(again.stdout)
    assert {r["status"] for r in done} <= {"enrolled", "resumed", "already-done"}
    issued = [r for r in tray.issued() if r["subject"].startswith("CN=term-")]
    assert sorted(r["serial"] for r in issued) == sorted(r["serial"] for r in done)  # one each
    for label, r in zip(labels, done, strict=True):
        assert _token_state(tray, label) == (1, [r["serial"]])
    assert _open_journal(tray) == []
