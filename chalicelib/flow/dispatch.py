"""Where an event goes once the pipeline has run: imported, queued for retry, or dead-lettered.

The webhook handler and the scheduled pulls make an event's first attempt (:func:`first_attempt`);
the retry worker makes the later ones (:func:`later_attempt`). Both end the same way: the outcome is
logged, a permanent failure goes to the dead-letter queue with its reason, a failure that can heal goes
back to the retry queue until the retry horizon (``RETRY_HORIZON_HOURS``) has passed since the event was
first seen. A failure that is the bridge's own configuration (:class:`~chalicelib.core.errors.Held`: a
refused key, a missing credential, an account no tenant lists yet) is retried the same way and logged
``held`` with its cause, which raises an alarm. Only when neither queue can take the event is it reported
unsafe, so that its sender delivers it again.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from chalicelib.connectors.base import Connector, Event
from chalicelib.core.errors import Held, QueueUnavailable
from chalicelib.domain import retry_queue
from chalicelib.domain.retry_queue import DeadLetter, RetryJob
from chalicelib.domain.tenants import Tenant, TenantDirectory
from chalicelib.flow import pipeline
from chalicelib.infra.http import Deadline
from chalicelib.infra.logs import Stopwatch, log, log_context
from chalicelib.infra.settings import Settings


def first_attempt(connector: Connector, event: Event, tenant: Tenant, settings: Settings, deadline: Deadline,
                  sends: Sends | None = None, stage: str = "fetch", payload: dict | None = None) -> bool:
    """Run a new event; True when it is safe (imported, ignored, skipped, queued or dead-lettered).

    With ``sends`` (a webhook's), what the event leaves to a queue waits there, to be sent and logged
    with the other events' by :meth:`Sends.send`, whose answer then says whether they are all safe.
    ``stage``/``payload``: where to start, when the caller already fetched and mapped the guest (a sweep).
    """
    own = sends is None
    sends = Sends() if sends is None else sends
    # Every line written for this event (the pipeline's too) names it and times it.
    with log_context(platform=connector.name, tenant=tenant.id, event_id=event.event_id, attempt=1):
        fields = {"platform": connector.name, "tenant": tenant.id, "event_id": event.event_id, "attempt": 1}
        watch = Stopwatch()
        try:
            outcome = pipeline.run(connector, event, tenant, settings, deadline, stage, payload)
        except pipeline.Interrupted as interrupted:
            job = RetryJob(platform=connector.name, tenant=tenant.id, event_id=event.event_id, stage=interrupted.stage,
                           event=event.to_dict(), payload=interrupted.payload, attempt=1,
                           last_error=interrupted.error.reason)
            if not interrupted.retryable:
                sends.dead_letter(DeadLetter(kind="permanent", reason=interrupted.error.reason, job=job),
                                  {**fields, "stage": interrupted.stage})
            elif isinstance(interrupted.error, Held):
                sends.retry(job, backoff_seconds(1, settings, interrupted.error.retry_after), fields, outcome="held",
                            stage=interrupted.stage, **held_fields(interrupted.error), latency_ms=watch.ms())
            else:
                # The first retry waits as long as the callee asked (Retry-After), or the doubt needs to settle.
                sends.retry(job, interrupted.error.retry_after or 0, fields, stage=interrupted.stage,
                            reason=interrupted.error.reason, latency_ms=watch.ms())
            return sends.send() if own else True
        log_outcome(outcome, watch, fields)
        return True


def unrouted(connector: Connector, event: Event, settings: Settings, sends: Sends) -> None:
    """Hold an event no tenant owns yet: the retry worker routes it again by its account id on every attempt,
    so adding the account to the tenants document is the only step (see :func:`first_attempt` for ``sends``)."""
    held = Held("no tenant lists this account yet", "unrouted")
    job = RetryJob(platform=connector.name, tenant=None, event_id=event.event_id, stage="fetch",
                   event=event.to_dict(), last_error=held.reason)
    sends.retry(job, backoff_seconds(1, settings), {"platform": connector.name, "event_id": event.event_id},
                outcome="held", stage="fetch", account_id=event.account_id, **held_fields(held))


def held_fields(error: Held) -> dict[str, str]:
    # ``reason`` is the cause (a bounded metric dimension); the sentence says what to fix.
    return {"reason": error.cause, "detail": error.reason}


def defer(connector: Connector, event: Event, tenant: Tenant, sends: Sends, first_seen: float) -> None:
    """Queue an event without trying it: its webhook has no time left to (its first attempt is the worker's)."""
    # The job's document, built directly (no model, no copy): a webhook may defer tens of thousands of events
    # in the time left to answer, and a RetryJob costs several times more than the rest.
    sends.defer(connector.name, {
        "version": 1, "platform": connector.name, "tenant": tenant.id, "event_id": event.event_id, "stage": "fetch",
        "event": {"event_id": event.event_id, "kind": event.kind, "account_id": event.account_id, "data": event.data,
                  "guest_key": event.guest_key},
        "payload": {}, "attempt": 0, "first_seen": first_seen, "last_error": DEFERRED})


DEFERRED = "not attempted inline: the time budget was spent"


class Sends:
    """What several events leave to the queues (one webhook's, one bundle's): sent together once every event
    has had its turn (a few SQS calls for thousands of events: :class:`~chalicelib.domain.retry_queue.Outbox`),
    then logged event by event, as if each had been sent on its own. Safe to fill from several threads."""

    def __init__(self, deferred_reason: str = DEFERRED) -> None:
        self.outbox = retry_queue.Outbox()
        self._deferred_reason = deferred_reason
        self._lock = threading.Lock()
        self._notes: list[tuple[retry_queue.Outgoing, str | None, dict, dict]] = []
        self._deferred: list[retry_queue.Outgoing] = []
        self._platform = ""

    def retry(self, job: RetryJob, delay_seconds: float, fields: dict, outcome: str | None = "queued",
              **extra: object) -> None:
        """Queue ``job``; logged as ``outcome`` once sent (None: not logged, the caller already said it)."""
        with self._lock:
            self._notes.append((self.outbox.retry(job, delay_seconds), outcome, fields, extra))

    def dead_letter(self, letter: DeadLetter, fields: dict, **extra: object) -> None:
        with self._lock:
            self._notes.append((self.outbox.dead_letter(letter), "dead_lettered", fields, extra))

    def defer(self, platform: str, job: RetryJob | dict) -> None:
        """Queue a job that was not tried at all (or its document); the deferred are logged in one line."""
        with self._lock:
            self._platform = platform
            self._deferred.append(self.outbox.retry(job))

    def send(self, seconds: float | None = None) -> bool:
        """Send everything within ``seconds``; True when all of it is on a queue (each event is logged
        ``queued``, ``dead_lettered`` or ``failed``; the deferred ones in one line)."""
        if not self.outbox.items:
            return True
        self.outbox.send(seconds)
        safe = True
        for item, outcome, fields, extra in self._notes:
            if item.sent and item.letter is not None:
                log("dead_lettered", kind=item.letter.kind, reason=item.letter.reason,
                    **{key: value for key, value in extra.items() if key not in ("reason", "latency_ms")}, **fields)
            elif item.sent:
                if outcome:
                    log(outcome, **extra, **fields)
            else:
                why = item.letter.reason if item.letter is not None else extra.get("reason")
                log("failed", level=logging.ERROR, stage=extra.get("stage") or fields.get("stage"),
                    reason=f"{why}; and {item.problem}", **{k: v for k, v in fields.items() if k != "stage"})
                safe = False
        return self._log_deferred() and safe

    def _log_deferred(self) -> bool:
        if not self._deferred:
            return True
        platform = self._platform
        unsent = [item for item in self._deferred if not item.sent]
        for item in self._deferred:
            if item.sent and item.letter is not None:  # too large for a message: dead-lettered instead
                job = item.letter.job
                log("dead_lettered", kind=item.letter.kind, reason=item.letter.reason, platform=platform,
                    tenant=job.tenant, event_id=job.event_id, attempt=job.attempt + 1)
        queued = len(self._deferred) - len(unsent)
        if queued:
            log("deferred", platform=platform, events=queued, reason=self._deferred_reason)
        if unsent:
            log("failed", level=logging.ERROR, platform=platform, events=len(unsent),
                reason=f"{self._deferred_reason}; and {unsent[0].problem}")
        return not unsent


@dataclass(frozen=True)
class Retry:
    """A later attempt failed in a way that can heal: resume ``job`` after ``delay`` seconds.
    ``progressed`` says the job moved on (a later stage, or further within one) and must replace the message."""

    job: RetryJob
    delay: float
    progressed: bool


def later_attempt(connector: Connector | None, job: RetryJob, attempt: int, tenant: Tenant | None, settings: Settings,
                  deadline: Deadline, fields: dict, sends: Sends | None = None) -> bool | Retry:
    """Resume a queued job: True when it is safe now, False when it must come back as it is (it could not
    be dead-lettered), or a :class:`Retry` for the caller to schedule. With ``sends``, a dead letter waits
    there (see :class:`Sends`). Without a connector (its platform or source is no longer configured) or a
    tenant (no tenant lists its account yet), the job is held."""
    watch = Stopwatch()
    try:
        if connector is None:
            raise pipeline.Interrupted(Held("the platform of this job is not configured", "not_configured"),
                                       job.stage, job.payload)
        if tenant is None:
            raise pipeline.Interrupted(Held("no tenant lists this account yet", "unrouted"), job.stage, job.payload)
        outcome = pipeline.run(connector, Event.from_dict(job.event), tenant, settings, deadline, job.stage, job.payload)
    except pipeline.Interrupted as interrupted:
        error = interrupted.error
        resumed = job.model_copy(update={"stage": interrupted.stage, "payload": interrupted.payload,
                                         "attempt": attempt, "last_error": error.reason})
        if not interrupted.retryable:
            return dead_letter(DeadLetter(kind="permanent", reason=error.reason, job=resumed), fields, sends=sends)
        held_for = time.time() - job.first_seen
        if held_for >= settings.retry_horizon_hours * 3600:
            reason = (f"still failing {held_for / 3600:.1f} h after it was first seen (RETRY_HORIZON_HOURS), "
                      f"{attempt} attempts: {error.reason}")
            return dead_letter(DeadLetter(kind="exhausted", reason=reason, job=resumed), fields, sends=sends)
        delay = backoff_seconds(attempt, settings, getattr(error, "retry_after", None))
        if isinstance(error, Held):
            log("held", stage=interrupted.stage, delay_s=round(delay, 1), **held_fields(error), **fields)
        else:
            log("retried", reason=error.reason, stage=interrupted.stage, delay_s=round(delay, 1), **fields)
        progressed = interrupted.stage != job.stage or interrupted.payload != job.payload
        return Retry(resumed, delay, progressed)
    log_outcome(outcome, watch, fields)
    return True


def route(job: RetryJob, directory: TenantDirectory) -> tuple[RetryJob, Tenant | None]:
    """The job's tenant; a job no tenant owned yet (or whose tenant is gone) is routed again by its account."""
    tenant = directory.get(job.tenant) if job.tenant else None
    if tenant is None:
        tenant = directory.route(job.platform, (job.event or {}).get("account_id"))
        if tenant is not None:
            job = job.model_copy(update={"tenant": tenant.id})
    return job, tenant


# The exponent's cap: beyond it the delay is RETRY_MAX_SECONDS anyway (and a float would overflow).
_MAX_DOUBLINGS = 30


def backoff_seconds(attempt: int, settings: Settings, retry_after: float | None = None) -> float:
    """Exponential backoff with jitter ("equal jitter": half fixed, half random) up to ``RETRY_MAX_SECONDS``,
    never below the callee's Retry-After (a 429's wait is honoured even beyond that cap, up to the longest
    delay a message can have)."""
    import random

    doublings = min(_MAX_DOUBLINGS, max(0, attempt - 1))
    ceiling = min(settings.retry_max_seconds, settings.retry_base_seconds * 2 ** doublings)
    delay = ceiling / 2 + random.uniform(0, ceiling / 2)
    if retry_after:
        delay = max(delay, retry_after)
    return min(delay, retry_queue.MAX_DELAY_SECONDS)


def dead_letter(letter: DeadLetter, fields: dict, sends: Sends | None = None, **extra: object) -> bool:
    """Send to the dead-letter queue and log it; False (logged as failed) when the queue cannot take it.
    With ``sends``, the letter waits there (True: :meth:`Sends.send` has the last word)."""
    if sends is not None:
        sends.dead_letter(letter, fields, **extra)
        return True
    try:
        retry_queue.dead_letter(letter)
    except QueueUnavailable as exc:
        log("failed", level=logging.ERROR, reason=f"{letter.reason}; and {exc.reason}", **fields)
        return False
    log("dead_lettered", kind=letter.kind, reason=letter.reason, **extra, **fields)
    return True


def log_outcome(outcome: pipeline.Outcome, watch: Stopwatch, fields: dict) -> None:
    log(outcome.status, reason=outcome.reason, customer_id=outcome.customer_id, created=outcome.created,
        latency_ms=watch.ms(), **fields)
