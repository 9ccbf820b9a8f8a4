"""The --jobs dispatcher (tokenissue/fleet/parallel.py) against stand-in workers: the worker
protocol and process handling only. Real enrollments in worker processes are tested on SoftHSM
in tests/fleet/test_batch.py."""

from __future__ import annotations

import sys
from pathlib import Path

from tokenissue.fleet.batch import read_rows
from tokenissue.fleet.parallel import run_batch_parallel

# Answers one group, closes its input and exits: the next group the parent sends finds a
# closed pipe (found by review: that BrokenPipeError escaped and lost the other results).
ONE_GROUP = """
import json, os, sys
sys.stdin.readline()  # the setup
group = json.loads(sys.stdin.readline())
for m in group:
    r = m["row"]
    print(json.dumps({"line": r["line"], "token": r["token"], "subject": r["subject"], "profile": r["profile"],
                      "status": "enrolled", "serial": "ab"}), flush=True)
os.close(0)
"""


def test_a_worker_that_exits_between_groups_fails_nothing_it_finished(tmp_path: Path) -> None:
    worker = tmp_path / "worker.py"
    worker.write_text(ONE_GROUP)
    rows = read_rows("token,subject\n" + "".join(f"absent-{i},CN=r{i}\n" for i in range(4)), default_profile="personal")
    seen = []
    results = run_batch_parallel(
        rows, jobs=1, worker_command=[sys.executable, str(worker)], setup={"pin": "not-used"},
        module="/nonexistent/module.so", on_result=seen.append,
    )  # fmt: skip
    assert [r.line for r in results] == [2, 3, 4, 5]
    assert sorted(r.line for r in seen) == [2, 3, 4, 5]  # every row reported once
    for r in results:
        assert r.status in ("enrolled", "failed"), r
        if r.status == "failed":
            assert "worker process" in (r.error or "")
    assert results[0].status == "enrolled"


def test_a_worker_that_dies_at_once_fails_its_rows_with_a_sentence(tmp_path: Path) -> None:
    rows = read_rows("token,subject\nabsent-1,CN=r1\nabsent-2,CN=r2\n", default_profile="personal")
    results = run_batch_parallel(
        rows, jobs=2, worker_command=[sys.executable, "-c", "import sys; sys.exit(3)"], setup={},
        module="/nonexistent/module.so",
    )  # fmt: skip
    assert [r.status for r in results] == ["failed", "failed"]
    assert all("stopped (exit status 3)" in (r.error or "") for r in results)
