"""Scheduled pulls: OPERA Cloud business events, dequeued from OHIP by the ``oracle_pull`` Lambda.

Every run visits each hotel configured for ``oracle`` within a time budget and an event allowance. OHIP's
dequeue is destructive, so each hotel's position (a DynamoDB item leased to one run at a time) keeps the
events not yet safe; the design and its bounds: docs/platforms.md, "Oracle OPERA Cloud" ("The position").
"""

from __future__ import annotations

import json
import logging
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from chalicelib.connectors import get_connector
from chalicelib.connectors.oracle import (
    MAX_DEQUEUE,
    OhipCredentials,
    OracleSettings,
    dequeue_events,
    pipeline_event,
    profile_events,
)
from chalicelib.core.errors import BridgeError, RetryableError, SettingsError
from chalicelib.domain.sweep_state import IdentityTable, LeaseLost
from chalicelib.domain.tenants import Tenant, TenantDirectory, credentials_for, get_directory
from chalicelib.flow import dispatch
from chalicelib.infra.http import Deadline
from chalicelib.infra.logs import Stopwatch, log
from chalicelib.infra.settings import Settings, get_settings, settings_of

PLATFORM = "oracle"
# Time kept back from the Lambda's remaining time, so the last position write always happens.
LAMBDA_SAFETY_SECONDS = 1.0
# Nothing (a dequeue, an event) is started with less than this left in the run.
MIN_STEP_SECONDS = 0.5
LEASE_MARGIN_SECONDS = 60.0
RECENT_IDS = 200


def position_key(tenant_id: str, hotel_id: str) -> str:
    return f"position#{PLATFORM}#{tenant_id}#{hotel_id}"


@dataclass(frozen=True)
class PullTarget:
    tenant: Tenant
    hotel_id: str
    credentials: OhipCredentials


@dataclass
class Position:
    pending: list[dict[str, str]] = field(default_factory=list)
    recent: list[str] = field(default_factory=list)
    last_event_id: str | None = None
    last_event_at: str | None = None


def handle(remaining_ms: Callable[[], float] | None = None) -> dict[str, Any]:
    """One scheduled run over every configured hotel; returns counts (no personal data)."""
    watch = Stopwatch()
    try:
        settings = get_settings()
        oracle = settings_of(OracleSettings)
        directory = get_directory()
    except SettingsError as exc:
        log("failed", platform=PLATFORM, reason=str(exc), level=logging.ERROR)
        return {"status": "misconfigured"}
    targets = pull_targets(directory, oracle)
    if not targets:
        return {"status": "ok", "hotels": 0}
    if not settings.identity_table:
        log("failed", platform=PLATFORM, level=logging.ERROR,
            reason="IDENTITY_TABLE is not configured: the OPERA position cannot be kept, nothing is pulled")
        return {"status": "misconfigured", "hotels": len(targets)}

    budget = oracle.pull_budget_seconds
    if remaining_ms is not None:
        budget = min(budget, remaining_ms() / 1000 - LAMBDA_SAFETY_SECONDS)
    run = Deadline(max(0.0, budget))
    # Start with a different hotel each run, so a busy hotel cannot starve the others of the budget.
    start = random.randrange(len(targets))
    targets = targets[start:] + targets[:start]

    totals: Counter[str] = Counter()
    allowance = oracle.pull_max_events
    for target in targets:
        if allowance <= 0 or run.remaining() < MIN_STEP_SECONDS:
            totals["hotels_deferred"] += 1
            continue
        try:
            counts = pull_hotel(target, settings, oracle, directory, run, allowance, budget)
        except Exception as exc:  # a bug or an unforeseen answer must not stop the other hotels
            log("failed", level=logging.ERROR, exc_info=True, platform=PLATFORM, tenant=target.tenant.id,
                hotel_id=target.hotel_id, reason=f"internal error ({type(exc).__name__})")
            counts = Counter(hotels_failed=1, handled=0)
        allowance -= counts["handled"]
        totals.update(counts)
    summary = {"status": "ok", "hotels": len(targets), **dict(totals)}
    log("pull_finished", platform=PLATFORM, latency_ms=watch.ms(),
        **{key: value for key, value in summary.items() if key != "status"})
    return summary


def pull_targets(directory: TenantDirectory, settings: OracleSettings) -> list[PullTarget]:
    """Every (tenant, hotel) to poll, with that hotel's OHIP credentials."""
    targets = []
    for tenant in directory.tenants():
        if tenant.owns_every_account:
            hotels = [hotel.strip() for hotel in (settings.hotel_ids or "").split(",") if hotel.strip()]
        else:
            accounts = tenant.platforms.get(PLATFORM)
            hotels = sorted(accounts.accounts) if accounts else []
        for hotel in dict.fromkeys(hotels):
            credentials = OhipCredentials.resolve(settings, credentials_for(tenant, PLATFORM, hotel))
            targets.append(PullTarget(tenant=tenant, hotel_id=hotel, credentials=credentials))
    return targets


def pull_hotel(target: PullTarget, settings: Settings, oracle: OracleSettings, directory: TenantDirectory,
               run: Deadline, allowance: int, budget: float) -> Counter[str]:
    """Pull one hotel within the run's deadline and ``allowance`` events; returns counts."""
    fields = {"platform": PLATFORM, "tenant": target.tenant.id, "hotel_id": target.hotel_id}
    counts: Counter[str] = Counter(handled=0)
    missing = target.credentials.missing(pulling=True)
    if missing:
        log("failed", level=logging.ERROR, reason=f"OPERA Cloud is not configured for this hotel ({', '.join(missing)})",
            **fields)
        counts["hotels_failed"] += 1
        return counts

    store = PositionStore(settings.identity_table)
    key = position_key(target.tenant.id, target.hotel_id)
    token = uuid.uuid4().hex
    try:
        position = store.acquire(key, token, budget + LEASE_MARGIN_SECONDS)
    except RetryableError as exc:
        # Without the position nothing may be dequeued: OPERA keeps the events until the next run.
        log("failed", level=logging.ERROR, reason=exc.reason, **fields)
        counts["hotels_failed"] += 1
        return counts
    if position is None:
        log("skipped", reason="another run holds this hotel's position", **fields)
        counts["hotels_busy"] += 1
        return counts

    handler = _EventRunner(target, settings, oracle, directory, run)
    handled_ids: list[str] = []
    last: dict[str, str] | None = None
    try:
        while True:
            stop = False
            if not position.pending:
                want = min(MAX_DEQUEUE, allowance - counts["handled"])
                if want <= 0 or run.remaining() < MIN_STEP_SECONDS:
                    break
                try:
                    batch = dequeue_events(target.credentials, target.hotel_id, want, handler.deadline())
                except BridgeError as exc:
                    log("failed", level=logging.WARNING, reason=exc.reason, stage="dequeue", **fields)
                    counts["dequeue_failures"] += 1
                    break
                if not batch:
                    break
                counts["read"] += len(batch)
                known = set(position.recent) | set(handled_ids)
                fresh = []
                for pulled in batch:
                    if pulled["id"] in known:
                        log("duplicate", event_id=f"{target.hotel_id}/{pulled['id']}",
                            reason="business event already handled", **fields)
                        counts["duplicates"] += 1
                    else:
                        known.add(pulled["id"])
                        fresh.append(pulled)
                position.pending = fresh
                try:
                    # OPERA no longer has these events: keep them before doing anything else.
                    store.save(key, token, position, [], None)
                except (RetryableError, LeaseLost) as exc:
                    reason = exc.reason if isinstance(exc, RetryableError) else "lease lost"
                    log("failed", level=logging.ERROR, reason=f"dequeued events not persisted ({reason}); "
                        "handling them now, then stopping", **fields)
                    stop = True

            while position.pending:
                if run.remaining() < MIN_STEP_SECONDS or counts["handled"] >= allowance:
                    stop = True
                    break
                pulled = position.pending[0]
                if not handler.run(pulled):
                    # Neither imported nor queued: the position must not move past this event.
                    counts["stuck"] += 1
                    stop = True
                    break
                position.pending.pop(0)
                handled_ids.append(pulled["id"])
                last = pulled
                counts["handled"] += 1
            if stop:
                break
            if handled_ids or last:
                try:
                    position = _advance(store, key, token, position, handled_ids, last)
                except (RetryableError, LeaseLost) as exc:
                    reason = exc.reason if isinstance(exc, RetryableError) else "lease lost"
                    log("failed", level=logging.ERROR, reason=f"position not advanced ({reason})", **fields)
                    break
                handled_ids, last = [], None
    finally:
        try:
            store.save(key, token, position, handled_ids, last, release=True)
        except (RetryableError, LeaseLost) as exc:
            reason = exc.reason if isinstance(exc, RetryableError) else "lease lost"
            # The events handled since the last write will be handled again (imports are idempotent).
            log("failed", level=logging.ERROR, reason=f"position not saved ({reason})", **fields)
            counts["position_failures"] += 1
    counts.update({f"events_{status}": n for status, n in handler.outcomes.items()})
    counts["pending"] += len(position.pending)
    log("pulled", read=counts["read"], handled=counts["handled"], pending=len(position.pending), **fields)
    return counts


def _advance(store: "PositionStore", key: str, token: str, position: Position,
             handled_ids: list[str], last: dict[str, str] | None) -> Position:
    store.save(key, token, position, handled_ids, last)
    position.recent = (position.recent + handled_ids)[-RECENT_IDS:]
    if last:
        position.last_event_id, position.last_event_at = last["id"], last.get("at")
    return position


class _EventRunner:
    """Runs one dequeued event the way a webhook runs its events."""

    def __init__(self, target: PullTarget, settings: Settings, oracle: OracleSettings, directory: TenantDirectory,
                 run: Deadline):
        self.target = target
        self.settings = settings
        self.directory = directory
        self.run_deadline = run
        self.connector = get_connector(PLATFORM)
        self.imported_actions = profile_events(oracle)
        self.seen_guests: set[str] = set()
        self.outcomes: Counter[str] = Counter()

    def deadline(self) -> Deadline:
        call = self.settings.worker_call_timeout_seconds
        return Deadline(min(call * 2, max(0.0, self.run_deadline.remaining())), call_timeout=call)

    def run(self, pulled: dict[str, str]) -> bool:
        """True when the event is safe: imported, ignored, queued or dead-lettered."""
        hotel = self.target.hotel_id
        if pulled.get("action") not in self.imported_actions or not pulled.get("key"):
            log("ignored", platform=PLATFORM, tenant=self.target.tenant.id, event_id=f"{hotel}/{pulled['id']}",
                event_type=(pulled.get("action") or "?")[:80], reason="event type not imported")
            self.outcomes["ignored"] += 1
            return True
        event = pipeline_event(pulled, hotel)
        if event.guest_key in self.seen_guests:
            log("duplicate", platform=PLATFORM, tenant=self.target.tenant.id, event_id=event.event_id,
                reason="same profile earlier in this run")
            self.outcomes["duplicate"] += 1
            return True
        self.seen_guests.add(event.guest_key)
        tenant = self.directory.route(PLATFORM, hotel)
        if tenant is None:  # the tenants document changed under us
            sends = dispatch.Sends()
            dispatch.unrouted(self.connector, event, self.settings, sends)
            safe = sends.send()
        else:
            safe = dispatch.first_attempt(self.connector, event, tenant, self.settings, self.deadline())
        self.outcomes["safe" if safe else "unsafe"] += 1
        return safe


class PositionStore(IdentityTable):
    """The per-hotel position items in the identity table (DynamoDB, partition key ``pk``)."""

    unavailable = "position store unavailable"

    def acquire(self, key: str, token: str, lease_seconds: float) -> Position | None:
        """Lease the position to this run and read it; ``None`` when another run holds it."""
        item = self._lease(key, token, lease_seconds, time.time(), also_set=", leased_at = :now")
        if item is None:
            return None
        return Position(
            pending=_json_list(item.get("pending")),
            recent=[str(value) for value in _json_list(item.get("recent_ids"))],
            last_event_id=item.get("last_event_id", {}).get("S"),
            last_event_at=item.get("last_event_at", {}).get("S"),
        )

    def save(self, key: str, token: str, position: Position, handled_ids: list[str],
             last: dict[str, str] | None, release: bool = False) -> None:
        """Write the pending events and advance past ``handled_ids``, if this run still holds the lease."""
        recent = (position.recent + handled_ids)[-RECENT_IDS:]
        sets = ["pending = :pending", "recent_ids = :recent", "updated_at = :now",
                "events_handled = if_not_exists(events_handled, :zero) + :handled"]
        values: dict[str, Any] = {
            ":pending": {"S": json.dumps(position.pending, separators=(",", ":"))},
            ":recent": {"S": json.dumps(recent, separators=(",", ":"))},
            ":now": {"N": repr(time.time())},
            ":zero": {"N": "0"},
            ":handled": {"N": str(len(handled_ids))},
            ":token": {"S": token},
        }
        if last:
            sets += ["last_event_id = :last_id", "last_event_at = :last_at"]
            values[":last_id"] = {"S": last["id"]}
            values[":last_at"] = {"S": last.get("at") or ""}
        expression = "SET " + ", ".join(sets)
        if release:
            expression += " REMOVE lease_token, lease_until"
        self._call("update_item", TableName=self._table, Key={"pk": {"S": key}}, UpdateExpression=expression,
                   ConditionExpression="lease_token = :token", ExpressionAttributeValues=values)



def _json_list(attribute: dict[str, Any] | None) -> list[Any]:
    if not attribute or "S" not in attribute:
        return []
    try:
        value = json.loads(attribute["S"])
    except ValueError:
        return []
    return value if isinstance(value, list) else []
