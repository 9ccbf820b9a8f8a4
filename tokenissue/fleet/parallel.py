"""Batch provisioning with several worker processes: tokens of a tray enrolled side by side.

A token does its slow work (key generation: seconds for RSA on a smart card) inside itself,
and one process can talk to only one token at a time (python-pkcs11 is not thread-safe,
so every PKCS#11 call of a process holds one lock). Worker processes let a tray's tokens
generate their keys at the same time.

Each worker is a separate Python process running ``worker_command`` (the CLI passes
``python -m tokenissue.cli._batch_worker``). The protocol is JSON lines on its pipes:

* parent → worker, first line: the setup (the state database, the CA, the module, the PINs
  and authorization codes). Secrets travel only through this pipe, never argv or the
  environment.
* parent → worker, then: one group of rows (all rows naming one token, in file order) per
  line. Rows of one token never run in two workers at once.
* worker → parent: one result per row, as it finishes.

Every row is journaled in the one holder state database (SQLite serialises the writers), so
the guarantees of :func:`~tokenissue.fleet.batch.run_batch` hold: a worker that dies mid-row
(killed, a crash) leaves its row failed with a sentence saying so, and the same command run
again finishes it without issuing twice. A refused PIN stops the dispatch of further tokens;
rows already running in other workers finish (so up to ``jobs - 1`` more tokens may spend a
PIN try, which the documentation states).
"""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from typing import IO, Any

from ..errors import PinError, TokenIssueError
from .batch import BatchRow, RowResult, present_tokens, stopped_by

__all__ = ["run_batch_parallel"]

#: How long a worker may take to exit once its input is closed (it only closes its files).
_EXIT_WAIT_S = 30


@dataclass
class _Worker:
    proc: subprocess.Popen[str]
    #: Rows sent and not yet answered, in the order the worker runs them.
    pending: list[BatchRow] = field(default_factory=list)

    @property
    def idle(self) -> bool:
        return not self.pending

    def send(self, message: object) -> None:
        stdin = self.proc.stdin
        assert stdin is not None
        stdin.write(json.dumps(message) + "\n")
        stdin.flush()


def _groups(rows: Sequence[BatchRow], present: Mapping[str, str]) -> list[list[BatchRow]]:
    """Rows grouped by token (by serial where the token was found, else as written), groups in
    the order of their first row, rows of a group in file order."""
    groups: dict[str, list[BatchRow]] = {}
    for row in rows:
        groups.setdefault(present.get(row.token, row.token), []).append(row)
    return list(groups.values())


def run_batch_parallel(
    rows: Sequence[BatchRow],
    *,
    jobs: int,
    worker_command: Sequence[str],
    setup: Mapping[str, Any],
    module: str | None = None,
    env: Mapping[str, str] | None = None,
    on_start: Callable[[BatchRow], None] | None = None,
    on_result: Callable[[RowResult], None] | None = None,
) -> list[RowResult]:
    """Enroll ``rows`` in up to ``jobs`` worker processes; one result per row, in file order.

    ``setup`` is the worker's first line (see the module docstring); it may hold secrets and
    is written only to the workers' standard input.
    """
    present = present_tokens(rows, module)
    todo = _groups(rows, present)
    found: dict[int, RowResult] = {}
    results: queue.Queue[tuple[_Worker, str | None]] = queue.Queue()
    workers: dict[int, _Worker] = {}
    stopped: str | None = None

    def record(result: RowResult) -> None:
        nonlocal stopped
        found[result.line] = result
        if result.pin_refused and stopped is None:
            stopped = stopped_by(result)
        if on_result is not None:
            on_result(result)

    def start() -> _Worker:
        proc = subprocess.Popen(
            list(worker_command), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, encoding="utf-8",
            env=None if env is None else dict(env), bufsize=1,
        )  # fmt: skip
        worker = _Worker(proc)
        assert proc.stdout is not None
        threading.Thread(target=_read_lines, args=(worker, proc.stdout, results), daemon=True).start()
        return worker

    def retire(slot: int) -> None:
        """The worker in ``slot`` died (killed, or a crash it could not report): its rows did
        not finish. Their journal entries let the same command finish them."""
        worker = workers.pop(slot)
        code = worker.proc.wait()
        for row in worker.pending:
            record(RowResult.of(
                row, "failed", exit_code=1,
                error=f"The worker process enrolling this row stopped (exit status {code}) before it finished; "
                "run the same command again to finish it.",
            ))  # fmt: skip

    previous = _terminate_as_exit()
    clean = False
    try:
        while True:
            for slot in range(jobs):
                worker = workers.get(slot)
                if stopped is not None or not todo or (worker is not None and not worker.idle):
                    continue
                fresh = worker is None
                if worker is None:
                    worker = workers[slot] = start()
                group = todo.pop(0)
                worker.pending = list(group)
                try:
                    if fresh:
                        worker.send(dict(setup))
                    worker.send([_row_json(r, present.get(r.token)) for r in group])
                except OSError:  # it died since its last answer: its pipe is closed
                    retire(slot)
                    continue
                if on_start is not None:
                    on_start(group[0])
            if not any(not w.idle for w in workers.values()):
                if todo and stopped is None:
                    continue  # a worker died as it was handed its group: start another
                break
            worker, line = results.get()
            owner = next((k for k, w in workers.items() if w is worker), None)
            if owner is None:
                continue  # the end of a worker already retired
            if line is None:
                retire(owner)
                continue
            result = RowResult.from_json(json.loads(line))
            worker.pending = [r for r in worker.pending if r.line != result.line]
            record(result)
            if not worker.idle and on_start is not None:
                on_start(worker.pending[0])
        clean = True
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        for worker in workers.values():
            if worker.proc.stdin is not None:
                with suppress(OSError):  # a worker that died has closed its end
                    worker.proc.stdin.close()
            if not clean:
                # Interrupted (Ctrl-C, SIGTERM) or a bug here: stop the workers too rather than
                # leave them enrolling unseen. A row cut short is finished by the next run.
                with suppress(OSError):
                    worker.proc.terminate()
        for worker in workers.values():
            try:
                worker.proc.wait(timeout=_EXIT_WAIT_S)
            except subprocess.TimeoutExpired:
                worker.proc.kill()
                worker.proc.wait()
    for group in todo:
        for row in group:
            if row.line not in found:
                record(RowResult.of(row, "skipped", error=stopped, exit_code=PinError.exit_code))
    return [found[r.line] for r in rows]


def _terminate_as_exit() -> Any:
    """Make SIGTERM end this process through its ``finally`` blocks (exit status 143), so the
    workers are stopped with it; returns the handler to restore, or None off the main thread."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    return signal.signal(signal.SIGTERM, handler)


def _read_lines(worker: _Worker, stream: IO[str], out: queue.Queue[tuple[_Worker, str | None]]) -> None:
    for line in stream:
        if line.strip():
            out.put((worker, line))
    out.put((worker, None))


def _row_json(row: BatchRow, serial: str | None) -> dict[str, Any]:
    return {"row": row.as_json(), "serial": serial}


def worker_rows(message: Sequence[Mapping[str, Any]]) -> list[tuple[BatchRow, str | None]]:
    """The rows of one group as the worker receives them (see :func:`run_batch_parallel`)."""
    try:
        return [(BatchRow.from_json(m["row"]), m.get("serial")) for m in message]
    except (KeyError, TypeError, ValueError) as e:
        raise TokenIssueError(f"The batch worker received a malformed row ({e.__class__.__name__}).") from None
