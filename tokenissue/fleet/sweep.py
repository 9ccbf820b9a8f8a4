"""The CA's expiry sweep: certificates about to expire, each notified (a hook command) or
renewed on its token when that token is present (an administrator's tray, a server's HSM).

Run it daily (cron, a systemd timer). A certificate that a newer one already replaces is not
due: it was renewed or re-issued, and the holder has the new one (:func:`superseded`). A sweep is safe to repeat: a renewal
cut short is resumed from the journal by the next sweep, and a finished one takes the
certificate out of the next sweep's list.

Hook commands are split like a shell would split them (``shlex``) but run without a shell,
once per certificate, with the certificate (PEM) on standard input, an environment of only
PATH, HOME, USER, LOGNAME, LANG, LC_*, TZ, TMPDIR and SHELL from the sweep's, and::

    TOKENISSUE_SERIAL        hex serial            TOKENISSUE_SUBJECT       RFC 4514 subject
    TOKENISSUE_NOT_AFTER     ISO 8601 UTC          TOKENISSUE_DAYS_LEFT     whole days left
    TOKENISSUE_PROFILE       certificate type      TOKENISSUE_TOKEN_SERIAL  token, when known
    TOKENISSUE_SHA256        fingerprint           TOKENISSUE_SWEEP_ACTION  due, renewed, failed
                                                                            or token-absent

Exit status 0 means notified; anything else is reported as a failed notification.

A suspended certificate (on hold: its token went missing) that expires within the window is
listed with the action ``suspended`` and left alone: not renewed, and no hook is run, since
its holder has said the token is not at hand. Restored, it is swept like any other.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from .. import hooks
from ..ca.authority import CertificateAuthority
from ..ca.profiles import Profile
from ..credentials import Pin, ProtectedAuth
from ..enroll.base import Enroller
from ..errors import KeyNotFound, TokenIssueError, TokenNotFound, stops_a_run
from ..inventory import Inventory
from ..lifecycle import certificate_status, enroll, entry_params, renewal_params
from ..models import CertRecord, CertStatus, StepHook, no_step
from ..p11 import TokenSelector, load_module, open_token
from ..pkix.certs import dump_certificates, load_certificates
from ..publickeys import certificate_spki

__all__ = [
    "HOOK_TIMEOUT_S",
    "Renewing",
    "SweepAction",
    "SweepItem",
    "due",
    "profile_window",
    "renewer",
    "resume_renewals",
    "run_hook",
    "run_sweep",
    "superseded",
    "sweep",
]

HOOK_TIMEOUT_S = 60
# What a holder still has: a suspended certificate is on hold, not replaced or given up.
_CURRENT = (CertStatus.VALID, CertStatus.SUSPENDED)


class SweepAction(enum.StrEnum):
    """What the sweep did with a certificate; the value is what hooks and --json see."""

    DUE = "due"  #: due, and only told (no --renew)
    RENEWED = "renewed"
    FAILED = "failed"
    TOKEN_ABSENT = "token-absent"  # noqa: S105 (not a secret) --renew, but its token is not here
    SUSPENDED = "suspended"  #: on hold at the CA: skipped, neither renewed nor notified


@dataclass
class SweepItem:
    record: CertRecord
    days_left: int
    #: due (listed only), renewed, failed or token-absent
    action: SweepAction = SweepAction.DUE
    detail: str | None = None
    new_serial: int | None = None
    #: None: no hook; True/False: the hook ran and succeeded / failed
    notified: bool | None = None
    #: A token refused the PIN here: no further renewal is tried.
    pin_refused: bool = False

    @property
    def ok(self) -> bool:
        """Nothing left for a person to do: renewed, or listed / holder notified successfully."""
        if self.notified is False:
            return False
        return self.action in (SweepAction.DUE, SweepAction.RENEWED, SweepAction.SUSPENDED) or (
            self.action is SweepAction.TOKEN_ABSENT and self.notified is True
        )


Window = timedelta | Callable[[CertRecord], timedelta]


def profile_window(profiles: Mapping[str, Profile]) -> Callable[[CertRecord], timedelta]:
    """Each certificate's renewal window from its profile's ``renew_before_days``; for a profile
    the CA no longer has, the same default a profile gets (30 days, or a third of the lifetime
    when that is shorter)."""

    def window(record: CertRecord) -> timedelta:
        profile = profiles.get(record.profile)
        if profile is not None:
            return timedelta(days=profile.renew_before_days)
        return min(timedelta(days=30), (record.not_after - record.not_before) / 3)

    return window


def due(
    records: list[CertRecord], within: Window, *, now: datetime | None = None, skip: frozenset[int] = frozenset()
) -> list[CertRecord]:
    """Valid (or suspended) certificates expiring within ``within`` (one time for all, or each
    certificate's own, such as its profile's renew_before_days) that nothing has superseded,
    and whose serial is not in ``skip`` (successors issued moments ago). See :func:`superseded`.
    A suspended one is listed so the sweep can say it skipped it."""
    now = now or datetime.now(UTC)
    replaced = superseded(records) | skip
    window = within if callable(within) else (lambda _r: within)
    return sorted(
        (r for r in records
         if r.status in _CURRENT and r.serial not in replaced and r.not_after <= now + window(r)),
        key=lambda r: r.not_after,
    )  # fmt: skip


def superseded(records: list[CertRecord]) -> set[int]:
    """Serials of the certificates in ``records`` that a valid newer one supersedes: the holder
    has moved on, so they are not due however soon they expire.

    - What a valid certificate ``replaces``, and what that one replaces, and so on back. A
      revoked link does not break the chain: a renewal revoked later and re-issued with
      ``renew --rekey`` left the holder with its re-issue, not with what it renewed.
    - An older certificate for the same key (SubjectPublicKeyInfo), subject and profile as a
      valid one: renewed or re-issued where no ``replaces`` was recorded.

    A revoked certificate at the head of a chain supersedes nothing: a renewal the holder
    rejected (or an administrator revoked before any re-issue) leaves the holder with the old one.
    """
    by_serial = {r.serial: r for r in records}
    out: set[int] = set()
    for head in records:
        if head.status not in _CURRENT:
            continue
        link = head.replaces
        while link is not None and link not in out and link != head.serial:
            out.add(link)
            older = by_serial.get(link)
            link = older.replaces if older is not None else None
    newest: dict[tuple[bytes, str, str], CertRecord] = {}
    for r in records:
        if r.status not in _CURRENT:
            continue
        spki = certificate_spki(r.der)
        if spki is None:
            continue
        k = (spki, r.subject, r.profile)
        other = newest.get(k)
        if other is None:
            newest[k] = r
            continue
        older, newer = sorted((other, r), key=lambda c: (c.not_before, c.not_after))
        out.add(older.serial)
        newest[k] = newer
    return out


def sweep(
    records: list[CertRecord],
    *,
    within: Window,
    hook: str | None = None,
    renew: Callable[[CertRecord], int] | None = None,
    on_item: Callable[[SweepItem], None] | None = None,
    now: datetime | None = None,
    skip: frozenset[int] = frozenset(),
) -> list[SweepItem]:
    """Sweep ``records`` (the CA's inventory): renew what ``renew`` can (it returns the new
    serial, raises TokenNotFound when the token is not here), then run ``hook`` for each."""
    if hook is not None:
        hooks.split(hook)  # a malformed hook fails before anything is renewed
    now = now or datetime.now(UTC)
    items = []
    stopped: str | None = None
    for rec in due(records, within, now=now, skip=skip):
        item = SweepItem(rec, int((rec.not_after - now).total_seconds() // 86400))
        if rec.status is CertStatus.SUSPENDED:
            since = f" since {rec.revoked_at:%Y-%m-%d %H:%M} UTC" if rec.revoked_at else ""
            item.action = SweepAction.SUSPENDED
            item.detail = f"Suspended{since}: not renewed or notified until the CA restores it (or revokes it for good)."
            items.append(item)
            if on_item is not None:
                on_item(item)
            continue
        if renew is not None and stopped is not None:
            item.action, item.detail = SweepAction.FAILED, stopped
        elif renew is not None:
            try:
                item.new_serial = renew(rec)
                item.action = SweepAction.RENEWED
            except TokenNotFound as e:
                item.action, item.detail = SweepAction.TOKEN_ABSENT, e.message
            except TokenIssueError as e:
                item.action, item.detail = SweepAction.FAILED, e.message
                if stops_a_run(e):
                    # The same PIN goes to every token (and the CA PIN to the CA token at every
                    # renewal): one more try each would only spend tries, and lock tokens.
                    item.pin_refused = True
                    stopped = f"Not renewed: a PIN was refused ({e.message.rstrip('.')}); no other token was tried."
        if hook is not None:
            item.notified, why = run_hook(hook, item)
            if why:
                item.detail = f"{item.detail}; {why}" if item.detail else why
        items.append(item)
        if on_item is not None:
            on_item(item)
    return items


def run_hook(hook: str, item: SweepItem) -> tuple[bool, str | None]:
    """Run the hook for one item; (succeeded, why not)."""
    rec = item.record
    # An allowlisted environment: the sweep's own may hold PINs (--pin-env names any variable),
    # database passwords and the like, none of which is the hook's business.
    extra = {
        "TOKENISSUE_SERIAL": format(rec.serial, "x"),
        "TOKENISSUE_SUBJECT": rec.subject,
        "TOKENISSUE_NOT_AFTER": rec.not_after.isoformat(),
        "TOKENISSUE_DAYS_LEFT": str(item.days_left),
        "TOKENISSUE_PROFILE": rec.profile,
        "TOKENISSUE_TOKEN_SERIAL": rec.token_serial or "",
        "TOKENISSUE_SHA256": rec.sha256,
        "TOKENISSUE_SWEEP_ACTION": str(item.action),
    }
    pem = dump_certificates(load_certificates(rec.der), "pem")
    why = hooks.run_checked(hooks.split(hook), extra_env=extra, input=pem, timeout=HOOK_TIMEOUT_S)
    return why is None, why


def renewer(
    *,
    enroller: Enroller,
    pin: Callable[[], Pin | ProtectedAuth | None],
    holder: Inventory,
    module: str | None = None,
    rekey: bool = False,
    on_step: StepHook | None = None,
) -> Callable[[CertRecord], int]:
    """A ``renew`` for :func:`sweep`: renew a record's certificate on its token, when present.

    The token is found by the serial the CA recorded at enrollment, the certificate on it by
    its serial; the renewal is the holder's (``tokenissue renew``), journaled in ``holder``, with
    the same key unless ``rekey``. ``pin`` is called only once a token is present.
    """

    def renew(rec: CertRecord) -> int:
        if rec.token_serial is None:
            raise TokenNotFound("The CA did not record which token holds this key; notify its holder.")
        selector = TokenSelector.from_identity(rec.token_serial)
        try:
            load_module(module).token_info(selector)
        except TokenNotFound:
            raise TokenNotFound(f"Token {rec.token_serial} is not present; notify its holder or insert it.") from None
        with open_token(selector, pin(), module=module) as s:
            reports = [r for r in certificate_status(s, holder) if r.cert.serial == rec.serial]
        if not reports:
            raise KeyNotFound(f"Certificate {rec.serial:x} is not on token {rec.token_serial} (with its key) any more.")
        params = renewal_params(
            reports[0], token_serial=rec.token_serial, rekey=rekey, ca=enroller.location, profile=rec.profile
        )
        out = enroll(params, token=selector, pin=pin(), enroller=enroller, holder=holder, module=module,
                     on_step=on_step or no_step)  # fmt: skip
        return out.certificate.serial_number

    return renew


def resume_renewals(
    records: list[CertRecord],
    *,
    enroller: Enroller,
    pin: Callable[[], Pin | ProtectedAuth | None],
    holder: Inventory,
    module: str | None = None,
    now: datetime | None = None,
) -> list[SweepItem]:
    """Finish the renewals an earlier sweep left half-done (a full token, a token pulled out,
    a crash), before sweeping: the CA counts a certificate as replaced once it has issued its
    successor, so :func:`due` no longer lists it even if the successor never reached the token.

    One item per unfinished renewal at this CA: ``renewed`` (with the new serial) or ``failed``
    / ``token-absent`` with the reason. Stops at a refused PIN, like :func:`sweep`.
    """
    now = now or datetime.now(UTC)
    by_serial = {r.serial: r for r in records}
    items: list[SweepItem] = []
    for entry in holder.journal_open("enroll"):
        params = entry_params(entry)
        old = by_serial.get(int(params.replaces, 16)) if params.replaces else None
        if old is None or params.ca != enroller.location:
            continue
        item = SweepItem(old, int((old.not_after - now).total_seconds() // 86400))
        selector = TokenSelector.from_identity(params.token_serial)
        try:
            load_module(module).token_info(selector)
            out = enroll(params, token=selector, pin=pin(), enroller=enroller, holder=holder, module=module,
                         journal_id=entry.id)  # fmt: skip
            item.action, item.new_serial = SweepAction.RENEWED, out.certificate.serial_number
            item.detail = "an interrupted renewal, finished now"
        except TokenNotFound:
            item.action, item.detail = SweepAction.TOKEN_ABSENT, f"Token {params.token_serial} is not present; its renewal is half-done."
        except TokenIssueError as e:
            item.action, item.detail, item.pin_refused = SweepAction.FAILED, e.message, stops_a_run(e)
        items.append(item)
        if item.pin_refused:
            break
    return items


@dataclass(frozen=True)
class Renewing:
    """How :func:`run_sweep` renews: the holder's side of a renewal (see :func:`renewer`)."""

    enroller: Enroller  #: the CA swept, as an enroller
    pin: Callable[[], Pin | ProtectedAuth | None]  #: asked once a token is present
    holder: Inventory  #: the holder's records and journal
    module: str | None = None
    rekey: bool = False
    on_step: StepHook | None = None


def run_sweep(
    ca: CertificateAuthority,
    *,
    within: timedelta | Callable[[CertRecord], timedelta] | None = None,
    hook: str | None = None,
    renewing: Renewing | None = None,
) -> list[SweepItem]:
    """The expiry sweep of ``ca`` (``ca list --due``): what expires within ``within`` (each
    certificate's profile window when None) is reported, renewed with ``renewing`` where its
    token is here, and told to ``hook``.

    Renewals an earlier sweep left half-done are finished first (:func:`resume_renewals`), and
    their successors, issued moments ago, are not swept. A refused PIN stops the renewals.
    """
    records = ca.list()
    renew_one = None
    resumed: list[SweepItem] = []
    if renewing is not None:
        r = renewing
        resumed = resume_renewals(records, enroller=r.enroller, pin=r.pin, holder=r.holder, module=r.module)
        if not any(i.pin_refused for i in resumed):  # a PIN was refused: no token gets another wrong try
            renew_one = renewer(
                enroller=r.enroller, pin=r.pin, holder=r.holder, module=r.module, rekey=r.rekey, on_step=r.on_step
            )  # fmt: skip
        records = ca.list()  # renewals just finished have replaced their certificates
    fresh = frozenset(i.new_serial for i in resumed if i.new_serial is not None)
    window = within if within is not None else profile_window(ca.profiles)
    return resumed + sweep(records, within=window, hook=hook, renew=renew_one, skip=fresh)
