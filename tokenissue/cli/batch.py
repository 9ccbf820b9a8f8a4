"""``tokenissue batch enroll FILE.csv``: provision a tray of tokens, one CSV row per token."""

from __future__ import annotations

import csv
import json
import os
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..errors import Incomplete, TokenIssueError, UsageError
from ._common import (
    CaPinFileOpt,
    CaTrustOpt,
    JsonOpt,
    PinEnvOpt,
    PinFileOpt,
    ProtectedAuthOpt,
    emit_json,
    err_console,
    state,
    user_pin_source,
)
from ._enrolling import Enrollers, ca_enroller, holder_state, step_hook

if TYPE_CHECKING:
    from ..credentials import Pin, ProtectedAuth, Secret
    from ..fleet.batch import BatchRow, RowResult

app = typer.Typer(help="Work on many tokens at once.", no_args_is_help=True)


@app.command("enroll")
def enroll(
    ctx: typer.Context,
    csv_file: Annotated[
        Path,
        typer.Argument(
            help="CSV with a header row; columns token, subject (required), profile, key_type, label, san "
            "(';'-separated), ref (CMP). See docs/batch.md.",
            exists=True,
            dir_okay=False,
        ),
    ],
    ca: Annotated[
        str,
        typer.Option(
            "--ca",
            help="The CA for every row: a CA directory, or a CMP server cmp+http(s)://HOST/PATH "
            "(then each row needs a ref, and --auth-codes the codes).",
            envvar="TOKENISSUE_CA",
        ),
    ],
    profile: Annotated[str, typer.Option("--profile", "-p", help="Certificate type for rows without a profile.")] = "personal",
    results: Annotated[
        Path | None,
        typer.Option(
            "--results",
            "-o",
            help="Write one result per row here as it finishes (mode 0600): CSV, or JSON Lines when the name "
            "ends in .json or .jsonl.",
        ),
    ] = None,
    auth_codes: Annotated[
        Path | None,
        typer.Option(
            "--auth-codes",
            help="CMP: file of 'REF CODE' lines, one per registration (must be chmod 600); '#' starts a comment.",
        ),
    ] = None,
    ca_trust: CaTrustOpt = None,
    pin_file: PinFileOpt = None,
    pin_env: PinEnvOpt = None,
    protected_auth: ProtectedAuthOpt = False,
    ca_pin_file: CaPinFileOpt = None,
    jobs: Annotated[
        int,
        typer.Option(
            "--jobs",
            "-j",
            min=1,
            max=64,
            help="Enroll up to N tokens at the same time, each in its own worker process (tokens generate keys "
            "in parallel: worth it with a tray of smart cards). Rows naming the same token still run one "
            "after another.",
        ),
    ] = 1,
    json_out: JsonOpt = False,
) -> None:
    """Enroll every row: key on its token, CSR signed in it, certificate from the CA, written back.

    The whole file is checked before any token is touched.

    A failed row is reported and the batch goes on; a refused PIN stops it (each token would spend a try).

    Every row is journaled: after a crash or Ctrl-C, run the same command on the same file.
    Finished rows are reported already-done; interrupted ones finish with the same request to the CA.

    All tokens of a batch take the same user PIN. Exit status 8 when some rows did not finish.

    With --jobs N, N tokens are enrolled at once in worker processes; a refused PIN stops new rows,
    while the (at most N-1) rows already running finish.
    """
    from ..enroll import is_acme_location, is_cmp_location
    from ..fleet.batch import read_rows, run_batch

    try:
        text = csv_file.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"Cannot read {csv_file} as UTF-8 text ({e.__class__.__name__}).") from None
    rows = read_rows(text, default_profile=profile, source=str(csv_file))
    if results is not None and results.resolve() == csv_file.resolve():
        raise UsageError("--results must not be the batch file itself (it would be overwritten).")
    if results is not None and (results.is_dir() or not results.resolve().parent.is_dir()):
        raise UsageError(f"Cannot write the results to {results}: give a file in an existing directory.")
    if is_acme_location(ca):
        raise UsageError("Batch enrollment works with a CA directory or a CMP server, not ACME.")
    cmp = is_cmp_location(ca)
    codes: dict[str, Secret] = {}
    if cmp:
        no_ref = [r.line for r in rows if not r.ref]
        if no_ref:
            raise UsageError(f"Enrolling at a CMP server needs a ref on every row; lines {_lines(no_ref)} have none.")
        if auth_codes is None:
            raise UsageError("Enrolling at a CMP server needs --auth-codes, the file of 'REF CODE' lines.")
        refs = [r.ref for r in rows]
        twice = [r.line for r in rows if refs.count(r.ref) > 1]
        if twice:
            raise UsageError(f"A registration is good for one certificate; lines {_lines(twice)} share a ref.")
        codes = _read_codes(auth_codes)
        missing = [r.line for r in rows if r.ref not in codes]
        if missing:
            raise UsageError(f"--auth-codes has no code for the ref on lines {_lines(missing)}.")
    elif any(r.ref for r in rows):
        raise UsageError("The ref column is for CMP servers; this CA is a directory.")
    pin = user_pin_source(pin_file, pin_env, protected_auth).get()
    with ExitStack() as stack:
        db = stack.enter_context(holder_state(ctx))
        enrollers = stack.enter_context(
            Enrollers(lambda cmp_args: ca_enroller(ctx, ca, ca_pin_file, cmp_args), codes, ca_trust)
        )
        if not cmp:
            # A local CA knows its profiles: an unknown one is a fault of the file, found now.
            local = enrollers.get(rows[0])
            for name in sorted({r.profile for r in rows}):
                try:
                    local.check_profile(name)
                except TokenIssueError as e:
                    lines = [r.line for r in rows if r.profile == name]
                    raise UsageError(f"{csv_file}: lines {_lines(lines)}: {e.message.rstrip('.')}; nothing was done.") from None
        sink = stack.enter_context(_results_sink(results))
        view = stack.enter_context(_Progress(len(rows)))

        def on_result(result: RowResult) -> None:
            sink(result)
            view.done(result)

        if jobs > 1 and not _parallel_writers(ctx):
            # Every token of such a module is in one file that takes one writer at a time.
            err_console().print(
                "This PKCS#11 module keeps all its tokens in one store that takes one writer at a time "
                "(tpm2-pkcs11); the rows run one after the other instead of --jobs at once.", markup=False,
            )  # fmt: skip
            jobs = 1
        if jobs > 1:
            done = _run_parallel(ctx, rows, jobs, ca, pin, enrollers, codes, ca_trust, view.start, on_result)
        else:
            done = run_batch(
                rows, pin=pin, enroller_for=enrollers.get, holder=db, module=state(ctx).module,
                on_start=view.start, on_result=on_result, on_step=step_hook(),
            )  # fmt: skip
    counts = {s: sum(1 for r in done if r.status == s) for s in ("enrolled", "resumed", "already-done", "failed", "skipped")}
    if json_out:
        emit_json([r.as_json() for r in done])
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n or s in ("enrolled", "failed"))
    err_console().print(f"Batch of {len(rows)} row(s): {summary}." + (f" Results in {results}." if results else ""), markup=False)
    bad = [r for r in done if not r.ok]
    if bad:
        raise Incomplete(
            f"{len(bad)} of {len(done)} row(s) did not finish (first: line {bad[0].line}: {(bad[0].error or '').rstrip('.')}). "
            "Fix what they say and run the same command again; finished rows are kept."
        )


def _parallel_writers(ctx: typer.Context) -> bool:
    from .. import p11

    try:
        return bool(p11.load_module(state(ctx).module).quirks.concurrent_writers)
    except TokenIssueError:
        return True  # the module cannot even start: the rows will say so, one by one


def _run_parallel(
    ctx: typer.Context,
    rows: list[BatchRow],
    jobs: int,
    ca: str,
    pin: Pin | ProtectedAuth,
    enrollers: Enrollers,
    codes: dict[str, Secret],
    trust: Path | None,
    on_start: Any,
    on_result: Any,
) -> list[RowResult]:
    """``--jobs N``: the rows in N worker processes (tokenissue/fleet/parallel.py). Every secret
    is gathered here, once, and handed to the workers through their standard input."""
    from ..credentials import Pin
    from ..enroll.local import LocalCA
    from ..fleet.parallel import run_batch_parallel

    ca_pin = None
    if not codes:
        local = enrollers.get(rows[0])
        if isinstance(local, LocalCA):
            ca = local.location
            if local.needs_ca_pin:
                # Asked and checked now rather than when the first row reaches the CA: workers
                # cannot prompt, and N workers each trying a wrong PIN would spend N of the CA
                # token's tries.
                local.unlock()
                got = local.get_ca_pin()
                ca_pin = got.reveal() if isinstance(got, Pin) else None
    setup = {
        "state": str(state(ctx).state_dir / "state.db"),
        "ca": ca,
        "module": state(ctx).module,
        "pin": pin.reveal() if isinstance(pin, Pin) else None,
        "protected_auth": not isinstance(pin, Pin),
        "ca_pin": ca_pin,
        "codes": {ref: code.reveal() for ref, code in codes.items()},
        "trust_file": str(trust) if trust is not None else None,
    }
    return run_batch_parallel(
        rows, jobs=jobs, worker_command=[sys.executable, "-m", "tokenissue.cli._batch_worker"], setup=setup,
        module=state(ctx).module, on_start=on_start, on_result=on_result,
    )  # fmt: skip


def _lines(numbers: list[int]) -> str:
    shown = ", ".join(str(n) for n in numbers[:10])
    return shown + (f" and {len(numbers) - 10} more" if len(numbers) > 10 else "")


def _read_codes(path: Path) -> dict[str, Secret]:
    from ..credentials import Secret
    from ._common import read_secret_file

    if str(path) == "-":
        raise UsageError("--auth-codes needs a file (mode 0600), not standard input.")
    read_secret_file(path, "authorization codes")  # the mode check, and a readable first line
    codes: dict[str, Secret] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(None, 1)
        ref, code = (parts[0], parts[1]) if len(parts) == 2 else (line, "")
        if not code.strip():
            # The line is not echoed: it may hold a code.
            raise UsageError(f"{path} line {n} is not 'REF CODE' (a reference, spaces or a tab, the code).")
        if ref in codes:
            raise UsageError(f"{path} line {n}: ref {ref} appears twice.")
        codes[ref] = Secret(code.strip())
    return codes


@contextmanager
def _results_sink(path: Path | None) -> Iterator[Any]:
    """A function that appends one result to ``path`` and flushes it, so a crash keeps the rows
    already done; the file is (re)created 0600 for each run."""
    if path is None:
        yield lambda _result: None
        return
    from ..fleet.batch import FIELDS

    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError as e:
        raise UsageError(f"Cannot write the results to {path} ({e.strerror or e.__class__.__name__}).") from None
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
        as_json = path.suffix.lower() in (".json", ".jsonl")
        writer = None if as_json else csv.DictWriter(f, fieldnames=FIELDS)
        if writer is not None:
            writer.writeheader()

        def write(result: RowResult) -> None:
            if writer is None:
                f.write(json.dumps(result.as_json(), ensure_ascii=False) + "\n")
            else:
                writer.writerow(result.as_json())
            f.flush()
            os.fsync(f.fileno())

        yield write


class _Progress:
    """A progress bar on a terminal; one line per row otherwise (logs, CI)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.count = 0
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> _Progress:
        if sys.stderr.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                console=err_console(), transient=False,
            )  # fmt: skip
            self._bar.__enter__()
            self._task = self._bar.add_task("Enrolling", total=self.total)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)

    def start(self, row: BatchRow) -> None:
        if self._bar is not None:
            self._bar.update(self._task, description=f"line {row.line}: {row.token}")

    def done(self, result: RowResult) -> None:
        from rich.markup import escape

        self.count += 1
        colour = "green" if result.ok else "red"
        what = f"serial {result.serial}" if result.ok else escape(result.error or "")
        line = f"[{self.count}/{self.total}] line {result.line} {escape(result.token)}: [{colour}]{result.status}[/] {what}"
        if self._bar is not None:
            self._bar.console.print(line, highlight=False)
            self._bar.advance(self._task)
        else:
            err_console().print(line, highlight=False)

