"""One sweep run: what each platform account changed since its cursor, read from the platform's list API and
sent through the same pipeline as its webhooks, so that a guest a platform gave up delivering is not lost.

Per run: the targets (tenant × platform × account) whose interval has passed are leased one at a time; each is
listed over ``[cursor - SWEEP_OVERLAP_SECONDS, now - SWEEP_SETTLE_SECONDS]`` (cut to the API's limits and to a
day at most); every listed guest is fetched and mapped, compared with what was last sent to Fullwhere (the sent
fingerprints), and only the new or changed ones go to :func:`~chalicelib.flow.dispatch.first_attempt` (import,
ledger, retry queue). The cursor moves past a window only once every guest of it is imported or on a queue. The
design and its costs: docs/architecture.md, "Sweeps"; docs/performance.md, "Sweeps".
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from chalicelib.connectors.base import Connector, Context, Event, SweepWindow
from chalicelib.core.errors import Held, PermanentError, RetryableError, SettingsError
from chalicelib.domain.fullwhere import CustomerImport
from chalicelib.domain.sweep_state import (
    CursorStore,
    LeaseLost,
    SentStore,
    cursor_key,
    sent_key,
)
from chalicelib.domain.tenants import Tenant, TenantDirectory
from chalicelib.flow import dispatch
from chalicelib.infra.http import Deadline
from chalicelib.infra.logs import Stopwatch, log
from chalicelib.infra.settings import Settings

# The longest window swept in one piece: the cursor moves after each piece, so a long backfill (or the first
# sweep after sweeps were off for weeks) progresses even when it cannot finish in one run.
LONGEST_PIECE = timedelta(days=1)
# Guests compared with the sent fingerprints at once (one BatchGetItem).
BATCH = 100
# Nothing (an account, a batch) is started with less than this left in the run.
MIN_STEP_SECONDS = 2.0
LEASE_MARGIN_SECONDS = 60.0
# The run's budget when the caller gives none (the command line).
DEFAULT_BUDGET_SECONDS = 240.0


@dataclass(frozen=True)
class Target:
    tenant: Tenant
    connector: Connector
    account_id: str
    minutes: int

    @property
    def key(self) -> str:
        return cursor_key(self.tenant.id, self.connector.name, self.account_id)

    def fields(self) -> dict[str, str]:
        return {"platform": self.connector.name, "tenant": self.tenant.id, "account_id": self.account_id}


def targets(connectors: Iterable[Connector | None], directory: TenantDirectory, settings: Settings,
            platforms: Iterable[str] = (), tenants: Iterable[str] = ()) -> list[Target]:
    """Every (tenant, platform, account) to sweep: sweepable platforms whose interval is not 0, the accounts
    each tenant's :meth:`~Connector.sweep_accounts` names; ``platforms``/``tenants`` narrow them."""
    wanted_platforms, wanted_tenants = set(platforms), set(tenants)
    found = []
    for connector in connectors:
        if connector is None or not connector.sweepable():
            continue
        if wanted_platforms and connector.name not in wanted_platforms:
            continue
        try:
            minutes = connector.sweep_minutes(settings)
        except SettingsError as exc:
            log("sweep_skipped", platform=connector.name, reason="misconfigured", detail=str(exc),
                level=logging.ERROR)
            continue
        if minutes <= 0:
            continue
        for tenant in directory.tenants():
            if wanted_tenants and tenant.id not in wanted_tenants:
                continue
            try:
                accounts = connector.sweep_accounts(tenant)
            except SettingsError as exc:
                log("sweep_skipped", platform=connector.name, tenant=tenant.id, reason="misconfigured",
                    detail=str(exc), level=logging.ERROR)
                continue
            found += [Target(tenant, connector, account, minutes) for account in accounts]
    return found


def run(connectors: Iterable[Connector | None], directory: TenantDirectory, settings: Settings, budget_seconds: float,
        *, since: datetime | None = None, platforms: Iterable[str] = (), tenants: Iterable[str] = (),
        force: bool = False) -> dict[str, Any]:
    """Sweep every due target within ``budget_seconds``; returns counts (no personal data). ``since``: backfill
    every target from then (the command line's ``--since``), whatever its cursor says; ``force``: due or not."""
    watch = Stopwatch()
    found = targets(connectors, directory, settings, platforms, tenants)
    if not found:
        return {"status": "ok", "accounts": 0}
    if not settings.identity_table:
        log("sweep_skipped", reason="misconfigured", level=logging.ERROR,
            detail="IDENTITY_TABLE is not configured: sweep cursors cannot be kept, nothing is swept")
        return {"status": "misconfigured", "accounts": len(found)}
    deadline = Deadline(max(0.0, budget_seconds))
    cursors, store = CursorStore(settings.identity_table), SentStore(settings.identity_table)
    totals: Counter[str] = Counter()
    try:
        known = cursors.read(target.key for target in found)
    except RetryableError as exc:
        log("sweep_skipped", reason="state_unavailable", detail=exc.reason, level=logging.ERROR)
        return {"status": "failed", "accounts": len(found)}
    now = time.time()
    due = [target for target in found
           if force or since is not None or known.get(target.key) is None
           or known[target.key].due(now, target.minutes)]
    totals["accounts_not_due"] = len(found) - len(due)
    # Start with a different account each run, so one busy account cannot starve the others of the budget.
    if due:
        start = random.randrange(len(due))
        due = due[start:] + due[:start]
    results: list[dict[str, Any]] = []
    for target in due:
        if deadline.remaining() < MIN_STEP_SECONDS:
            totals["accounts_deferred"] += 1
            continue
        try:
            counts = _sweep_target(target, settings, cursors, store, deadline, budget_seconds, since, results)
        except Exception as exc:  # a bug or an unforeseen answer must not stop the other accounts
            log("failed", level=logging.ERROR, exc_info=True, stage="sweep",
                reason=f"internal error ({type(exc).__name__})", **target.fields())
            counts = Counter(accounts_failed=1)
        totals.update(counts)
    summary = {"status": "ok", "accounts": len(found), **dict(totals)}
    log("sweep_finished", latency_ms=watch.ms(), **{key: value for key, value in summary.items() if key != "status"})
    return {**summary, "results": results}


def _sweep_target(target: Target, settings: Settings, cursors: CursorStore, store: SentStore, deadline: Deadline,
                  budget: float, since: datetime | None, results: list[dict[str, Any]]) -> Counter[str]:
    """Lease one account's cursor, sweep from it, move it, release it; one log line says what became of it."""
    fields = target.fields()
    token = uuid.uuid4().hex
    try:
        cursor = cursors.acquire(target.key, token, budget + LEASE_MARGIN_SECONDS)
    except RetryableError as exc:
        log("sweep_skipped", reason="state_unavailable", detail=exc.reason, level=logging.ERROR, **fields)
        results.append({**fields, "outcome": "sweep_skipped", "reason": "state_unavailable"})
        return Counter(accounts_failed=1)
    if cursor is None:
        log("sweep_skipped", reason="in_progress", detail="another run holds this account's cursor", **fields)
        results.append({**fields, "outcome": "sweep_skipped", "reason": "in_progress"})
        return Counter(accounts_busy=1)

    started = time.time()
    counts: Counter[str] = Counter()
    not_before: float | None = None
    leased = True  # until another run is found to hold the cursor
    try:
        line = _sweep_from(target, cursor.swept_until, since, started, settings, cursors, token, store, deadline,
                           counts)
    except Held as exc:
        # A tenant without list credentials (or whose credentials were refused) is simply not swept: said here,
        # on each of its runs, until its credentials are in the tenants document.
        line = ("sweep_skipped", logging.INFO, {"reason": exc.cause, "detail": exc.reason})
    except RetryableError as exc:
        if exc.retry_after:  # a 429's Retry-After (or a 503's): this account is not listed again before then
            not_before = time.time() + exc.retry_after
        line = ("sweep_skipped", logging.WARNING, {
            "reason": "rate_limited" if exc.retry_after or " 429" in exc.reason else "unavailable",
            "detail": exc.reason, "retry_after_s": round(exc.retry_after, 1) if exc.retry_after else None})
    except PermanentError as exc:
        line = ("sweep_skipped", logging.ERROR, {"reason": "refused", "detail": exc.reason})
    except LeaseLost:
        leased = False
        line = ("sweep_skipped", logging.WARNING, {"reason": "lease_lost",
                                                   "detail": "another run took this account's cursor"})
    finally:
        if leased:
            try:
                cursors.save(target.key, token, last_run=started, not_before=not_before, release=True)
            except (RetryableError, LeaseLost) as exc:
                reason = exc.reason if isinstance(exc, RetryableError) else "lease lost"
                log("failed", level=logging.ERROR, stage="sweep", reason=f"sweep cursor not released ({reason})",
                    **fields)
    outcome, level, extra = line
    log(outcome, level=level, **extra, **dict(counts), **fields)
    results.append({**fields, "outcome": outcome, **{key: value for key, value in extra.items() if value is not None},
                    **dict(counts)})
    counts[_ACCOUNT_COUNTS.get(outcome, "accounts_skipped")] += 1
    return counts


_ACCOUNT_COUNTS = {"swept": "accounts_swept", "sweep_incomplete": "accounts_incomplete"}


def _sweep_from(target: Target, swept_until: datetime | None, since: datetime | None, started: float,
                settings: Settings, cursors: CursorStore, token: str, store: SentStore, deadline: Deadline,
                counts: Counter[str]) -> tuple[str, int, dict[str, Any]]:
    """Sweep one leased account from its cursor (or ``since``); the log line that says what became of it."""
    now = datetime.fromtimestamp(started, timezone.utc)
    # Whole seconds: the cursor is then exactly the end the API was asked for (APIs take seconds).
    until = (now - timedelta(seconds=settings.sweep_settle_seconds)).replace(microsecond=0)
    overlap = timedelta(seconds=settings.sweep_overlap_seconds)
    first = since is None and swept_until is None
    # A first sweep starts now, reaching back only the overlap: turning sweeps on never sends Fullwhere the
    # platform's history (python -m bridge_cli sweep --since DATE does that, on purpose). It also proves, at once,
    # that the account's credentials can list.
    start = since if since is not None else (swept_until or until) - overlap
    reach = target.connector.sweep_reach
    if reach is not None and start < now - reach:
        log("sweep_reach_lost", level=logging.WARNING, window_since=_epoch(start), reach_since=_epoch(now - reach),
            detail=f"the API lists nothing older than {reach.days} days: what changed before cannot be swept",
            **target.fields())
        start = now - reach
    window: dict[str, Any] = {"window_since": _epoch(start), "window_until": _epoch(until)}
    if first:
        window["detail"] = "first sweep of this account: it starts now (a backfill: bridge_cli sweep --since)"
    if start >= until:  # nothing between the cursor and the settle time yet
        cursors.save(target.key, token, swept_until=until)
        return "swept", logging.DEBUG, {**window, "detail": "nothing to sweep yet"}
    longest = min(filter(None, [target.connector.sweep_max_interval, LONGEST_PIECE]))
    for piece in SweepWindow(start, until).chunks(longest):
        if deadline.remaining() < MIN_STEP_SECONDS:
            return "sweep_incomplete", logging.WARNING, {
                **window, "detail": "the run's time ran out: the next run continues from the cursor"}
        if not _sweep_piece(target, piece, settings, store, deadline, counts):
            return "sweep_incomplete", logging.WARNING, {
                **window, "detail": "not every guest listed is imported or queued: the window is swept again"}
        cursors.save(target.key, token, swept_until=piece.until)
        window["swept_until"] = _epoch(piece.until)
    return "swept", logging.INFO, window


def _sweep_piece(target: Target, window: SweepWindow, settings: Settings, store: SentStore, deadline: Deadline,
                 counts: Counter[str]) -> bool:
    """Sweep one window of one account; True when every guest listed in it is imported, queued or unchanged."""
    connector, tenant = target.connector, target.tenant
    context = Context(settings=settings, tenant=tenant, deadline=_call_deadline(settings, deadline))
    events = connector.sweep(target.account_id, window, context)
    if events is None:
        return True
    sends = dispatch.Sends()
    try:
        complete = _send_listed(target, events, context, settings, store, deadline, counts, sends)
    except BaseException:
        sends.send(max(1.0, deadline.remaining()))  # what was queued before the listing failed is kept
        raise
    return sends.send(max(1.0, deadline.remaining())) and complete


def _send_listed(target: Target, events: Iterator[Event], context: Context, settings: Settings, store: SentStore,
                 deadline: Deadline, counts: Counter[str], sends: dispatch.Sends) -> bool:
    """Compare each listed guest with what was last sent, and send the new and changed ones (into ``sends``);
    False when the run's time ran out before every one was."""
    connector, tenant = target.connector, target.tenant
    seen: set[str] = set()
    complete = True
    for batch in _batches(events, BATCH):
        context.deadline = _call_deadline(settings, deadline)  # the generator's next pages use it too
        prepared: list[tuple[Event, CustomerImport | None]] = []
        for event in batch:
            counts["listed"] += 1
            if event.guest_key is not None:
                if event.guest_key in seen:
                    continue
                seen.add(event.guest_key)
            customer = _prepare(connector, event, context, counts)
            if customer is not NOTHING:
                prepared.append((event, customer))
        keys = {id(event): _key(target, connector, customer) for event, customer in prepared if customer is not None}
        sent = store.fingerprints(key for key in keys.values() if key is not None)
        for event, customer in prepared:
            if deadline.remaining() < MIN_STEP_SECONDS:
                complete = False  # listed again by the next run: what is sent by then is unchanged, and skipped
                break
            event_deadline = _call_deadline(settings, deadline)
            if customer is None:  # fetching or mapping failed: the pipeline tries again, and queues it
                dispatch.first_attempt(connector, event, tenant, settings, event_deadline, sends)
                counts["sent"] += 1
                continue
            key = keys.get(id(event))
            if key is not None and sent.get(key) == customer.fingerprint():
                counts["unchanged"] += 1  # what the webhook (or an earlier sweep) sent: no Fullwhere call
                continue
            payload = customer.payload()
            # No record of ever sending this guest: once in Fullwhere, it is counted recovered.
            event.recovering = key is not None and key not in sent
            dispatch.first_attempt(connector, event, tenant, settings, event_deadline, sends,
                                   stage="import", payload={"customer": payload})
            counts["sent"] += 1
        if not complete:
            break
    return complete


# What _prepare answers for a listed item that has no guest to import.
NOTHING: Any = object()


def _prepare(connector: Connector, event: Event, context: Context, counts: Counter[str]) -> CustomerImport | None:
    """The customer the pipeline would send for ``event``; ``None`` when fetching or mapping it failed (the
    pipeline then runs it from the start, and queues or dead-letters it as a webhook's); :data:`NOTHING` for a
    listed item with nothing to import, counted here and not logged: a sweep lists it again every time."""
    try:
        guest = connector.fetch(event, context)
        if guest is None or isinstance(guest, str):
            counts["ignored"] += 1
            return NOTHING
        customer = connector.map(guest, event, context)
    except Exception:  # BridgeError, ValidationError, or a bug: the pipeline meets it again and classifies it
        return None
    if not customer.has_identity():
        counts["no_identity"] += 1
        return NOTHING
    return customer


def _key(target: Target, connector: Connector, customer: CustomerImport) -> str | None:
    ids = customer.platform_ids()
    if not ids:
        return None
    return sent_key(target.tenant.id, connector.name, ids.get(connector.id_field) or next(iter(ids.values())))


def _batches(events: Iterator[Event], size: int) -> Iterator[list[Event]]:
    batch: list[Event] = []
    for event in events:
        batch.append(event)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _call_deadline(settings: Settings, run: Deadline) -> Deadline:
    call = settings.worker_call_timeout_seconds
    return Deadline(min(call * 2, max(0.0, run.remaining() - 1.0)), call_timeout=call)


def _epoch(moment: datetime) -> float:
    # Times are logged as epoch seconds, like every line's ``ts``: a number is never mistaken for a phone number.
    return round(moment.timestamp(), 3)
