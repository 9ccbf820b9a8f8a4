"""Batch provisioning: one CSV row per token, each enrolled like ``tokenissue enroll`` would.

The file is read and checked whole before any token is touched, so a typo on line 90 does
not stop a tray half-way. Then each row runs through :func:`tokenissue.lifecycle.enroll`,
which journals every step: a batch that dies (power cut, Ctrl-C, a pulled token) is
resumed by running the same command on the same file. Rows that finished are recognised
and reported ``already-done`` without touching the CA; a row that was cut short continues
where it stopped, with the same request ID, so nothing is issued twice.

A failed row is reported and the batch goes on, with one exception: a PIN a token refuses
stops the batch. All tokens of a batch take the same PIN, so the next token would refuse it
too, and every refusal spends one of that token's few tries.

CSV columns (a header row is required; names are case-insensitive)::

    token     label, serial:XXXX or pkcs11: URI of the token          (required)
    subject   RFC 4514 subject, UTF-8                                  (required)
    profile   certificate type (default: the batch's --profile)
    key_type  ec-p256 (default), ec-p384, rsa-2048, rsa-3072, rsa-4096, ed25519
    label     key and certificate label (default: PROFILE-DATE-RANDOM)
    san       subject alternative names separated by ';' (dns:..;email:..)
    ref       CMP only: the reference that goes with the row's authorization code

Lines starting with ``#`` and empty lines are skipped; no cell may hold a line break.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ..credentials import Pin, ProtectedAuth
from ..enroll.base import Enroller
from ..errors import PinError, TokenIssueError, TokenNotFound, UsageError, stops_a_run
from ..inventory import Inventory
from ..lifecycle import EnrollOutcome, EnrollParams, enroll
from ..models import KeyType, StepHook, no_step
from ..p11 import TokenSelector, load_module
from ..pkix.names import parse_san, parse_subject

__all__ = ["COLUMNS", "FIELDS", "BatchRow", "RowResult", "present_tokens", "read_rows", "run_batch", "stopped_by"]

COLUMNS = ("token", "subject", "profile", "key_type", "label", "san", "ref")
_REQUIRED = ("token", "subject")
_MAX_ROWS = 100_000
_SHOWN_ERRORS = 10
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class BatchRow:
    line: int  #: line number in the file (the header is line 1), for messages
    token: str
    subject: str
    profile: str
    key_type: str = KeyType.EC_P256.value
    label: str | None = None
    san: tuple[str, ...] = ()
    ref: str | None = None

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> BatchRow:
        return cls(**{**d, "san": tuple(d.get("san", ()))})


@dataclass
class RowResult:
    """What became of one row; ``status`` is enrolled, resumed, already-done, failed or skipped."""

    line: int
    token: str
    subject: str
    profile: str
    status: str
    token_serial: str | None = None
    serial: str | None = None
    not_after: str | None = None
    key_id: str | None = None
    label: str | None = None
    journal_id: str | None = None
    error: str | None = None
    exit_code: int = 0
    #: A token (the row's, or the CA's) refused the PIN: the batch stops, see :func:`run_batch`.
    pin_refused: bool = field(default=False, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return self.status in ("enrolled", "resumed", "already-done")

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        del out["pin_refused"]
        return out

    def to_wire(self) -> dict[str, Any]:
        """Everything, ``pin_refused`` included: what a batch worker process reports."""
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> RowResult:
        return cls(**d)

    @classmethod
    def of(cls, row: BatchRow, status: str, **kw: Any) -> RowResult:
        return cls(line=row.line, token=row.token, subject=row.subject, profile=row.profile, status=status, **kw)


#: The columns of a results file, in order.
FIELDS = tuple(f.name for f in fields(RowResult) if f.name != "pin_refused")


def read_rows(text: str, *, default_profile: str, source: str = "the batch file") -> list[BatchRow]:
    """Parse and check every row; UsageError naming the lines at fault when any is wrong."""
    # A comment is a line that starts with '#' as written (a quoted "#3" is a label); blanked
    # rather than dropped, so that line numbers stay those of the file.
    lines = text.removeprefix("\ufeff").splitlines()
    uncommented = "\n".join("" if raw.startswith("#") else raw for raw in lines)
    reader = csv.reader(io.StringIO(uncommented, newline=""), strict=True)
    header: list[str] | None = None
    rows: list[BatchRow] = []
    errors: list[str] = []
    seen: dict[tuple[object, ...], int] = {}
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            raise UsageError(f"{source} line {reader.line_num} is not valid CSV ({e}); nothing was done.") from None
        line = reader.line_num
        if not cells or not any(c.strip() for c in cells):
            continue
        if any(_CONTROL.search(c) for c in cells):
            # A stray quote makes the CSV reader swallow the next lines into one cell: that
            # row would silently vanish. No field of a row may span lines.
            errors.append(f"line {line}: a cell holds a line break or control character (an unclosed quote?)")
            continue
        if header is None:
            header = [c.strip().lower().replace("-", "_") for c in cells]
            unknown = [c for c in header if c not in COLUMNS]
            missing = [c for c in _REQUIRED if c not in header]
            if unknown or missing or len(set(header)) != len(header):
                raise UsageError(
                    f"{source}: the header must name the columns ({', '.join(COLUMNS)}; token and subject "
                    f"required, each once){_listing(' unknown', unknown)}{_listing(' missing', missing)}."
                )
            continue
        if len(rows) >= _MAX_ROWS:
            raise UsageError(f"{source} has more than {_MAX_ROWS} rows; split it.")
        if len(cells) != len(header):
            errors.append(f"line {line}: {len(cells)} cells for {len(header)} columns")
            continue
        values = {k: v.strip() for k, v in zip(header, cells, strict=True)}
        try:
            row = _row(line, values, default_profile)
        except UsageError as e:
            errors.append(f"line {line}: {e.message.rstrip('.')}")
            continue
        key = (row.token, row.subject, row.profile, row.key_type, row.label, row.san, row.ref)
        if key in seen:
            errors.append(
                f"line {line}: repeats line {seen[key]} (give each row its own label to put two such certificates on one token)"
            )
            continue
        seen[key] = line
        rows.append(row)
    if header is None:
        raise UsageError(f"{source} is empty; it needs a header row and one row per token.")
    if errors:
        more = f" (and {len(errors) - _SHOWN_ERRORS} more)" if len(errors) > _SHOWN_ERRORS else ""
        raise UsageError(f"{source} has errors; nothing was done: " + "; ".join(errors[:_SHOWN_ERRORS]) + more + ".")
    if not rows:
        raise UsageError(f"{source} has a header but no rows.")
    return rows


def _listing(what: str, names: list[str]) -> str:
    return f";{what}: {', '.join(names)}" if names else ""


def _row(line: int, values: dict[str, str], default_profile: str) -> BatchRow:
    for name in _REQUIRED:
        if not values.get(name):
            raise UsageError(f"the {name} is empty")
    TokenSelector.parse(values["token"])
    parse_subject(values["subject"])
    san = tuple(s.strip() for s in values.get("san", "").split(";") if s.strip())
    parse_san(list(san))
    key_type = values.get("key_type") or KeyType.EC_P256.value
    try:
        KeyType(key_type)
    except ValueError:
        raise UsageError(f"unknown key type '{key_type}' (one of {', '.join(k.value for k in KeyType)})") from None
    return BatchRow(
        line=line,
        token=values["token"],
        subject=values["subject"],
        profile=values.get("profile") or default_profile,
        key_type=key_type,
        label=values.get("label") or None,
        san=san,
        ref=values.get("ref") or None,
    )


def run_batch(
    rows: list[BatchRow],
    *,
    pin: Pin | ProtectedAuth | None,
    enroller_for: Callable[[BatchRow], Enroller],
    holder: Inventory,
    module: str | None = None,
    on_start: Callable[[BatchRow], None] | None = None,
    on_result: Callable[[RowResult], None] | None = None,
    on_step: StepHook | None = None,
    present: dict[str, str] | None = None,
) -> list[RowResult]:
    """Enroll every row in order; one result per row, also passed to ``on_result`` as it comes.

    ``enroller_for`` gives the CA for a row (the CLI caches one per CA location). Errors of
    a row are caught and reported; other exceptions (bugs, KeyboardInterrupt) propagate, and
    the rows finished so far have been reported through ``on_result`` already. ``present``
    maps a row's token to its serial when the caller has listed the tokens already (see
    :func:`present_tokens`).
    """
    results: list[RowResult] = []
    stopped: str | None = None
    if present is None:
        present = present_tokens(rows, module)
    for row in rows:
        if stopped is not None:
            result = RowResult.of(row, "skipped", error=stopped, exit_code=PinError.exit_code)
        else:
            if on_start is not None:
                on_start(row)
            result = _one(
                row, present.get(row.token), pin=pin, enroller_for=enroller_for, holder=holder, module=module,
                on_step=on_step,
            )  # fmt: skip
            if result.pin_refused:
                # Every token gets the same PIN (and the CA token the same CA PIN): each further
                # try would only spend a try, and tokens lock after a few.
                stopped = stopped_by(result)
        results.append(result)
        if on_result is not None:
            on_result(result)
    return results


def stopped_by(result: RowResult) -> str:
    """What the rows not tried after ``result`` (a PIN refused) say about it."""
    return (
        f"Not tried: line {result.line} had a PIN refused ({(result.error or '').rstrip('.')}); fix the PIN "
        "and run the batch again (stopped so the other tokens do not spend a PIN try each)."
    )


def present_tokens(rows: Sequence[BatchRow], module: str | None) -> dict[str, str]:
    """Each row's token identity (its serial, or a pkcs11: URI where serials repeat), from one listing of the tokens present when the batch starts
    (listing every slot per row is most of the time with a full tray). Tokens named more than
    once, or not present yet, are left to the row, which looks again (and reports ambiguity)."""
    try:
        tokens = load_module(module).tokens()
    except TokenIssueError:
        return {}
    out = {}
    for name in {r.token for r in rows}:
        selector = TokenSelector.parse(name)
        found = [t.name for t in tokens if selector.matches(t.label, t.serial, t.manufacturer, t.model)]
        if len(found) == 1:
            out[name] = found[0]
    return out


def _one(
    row: BatchRow,
    serial: str | None,
    *,
    pin: Pin | ProtectedAuth | None,
    enroller_for: Callable[[BatchRow], Enroller],
    holder: Inventory,
    module: str | None,
    on_step: StepHook | None,
) -> RowResult:
    token_serial = None
    try:
        # By label (or URI) once, with the ambiguity check; then by identity (the serial, where
        # serials tell tokens apart), which is cheaper to find again and cannot drift to another
        # token labelled the same.
        if serial is not None:
            try:
                load_module(module).token_info(TokenSelector.from_identity(serial))
            except TokenNotFound:
                serial = None  # gone since the batch started; another may carry its label now
        token_serial = serial or load_module(module).token_info(TokenSelector.parse(row.token)).name
        selector = TokenSelector.from_identity(token_serial)
        enroller = enroller_for(row)
        enroller.check_profile(row.profile)
        params = EnrollParams(
            token_serial=token_serial, subject=row.subject, profile=row.profile, key_type=row.key_type,
            ca=enroller.location, label=row.label, san=row.san, ref=row.ref,
        )  # fmt: skip
        out = enroll(
            params, token=selector, pin=pin, enroller=enroller, holder=holder, module=module,
            on_step=on_step or no_step,
        )  # fmt: skip
    except TokenIssueError as e:
        return RowResult.of(
            row, "failed", token_serial=token_serial, error=e.message, exit_code=e.exit_code,
            pin_refused=stops_a_run(e),
        )  # fmt: skip
    return _done(row, out)


def _done(row: BatchRow, out: EnrollOutcome) -> RowResult:
    status = "already-done" if out.already_done else ("resumed" if out.resumed else "enrolled")
    return RowResult.of(
        row, status, token_serial=out.token_serial, serial=format(out.certificate.serial_number, "x"),
        not_after=out.certificate.not_valid_after_utc.isoformat(), key_id=out.key_id.hex(), label=out.label,
        journal_id=out.journal_id,
    )  # fmt: skip
