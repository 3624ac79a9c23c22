"""Where an event goes once the pipeline has run: imported, queued for retry, or dead-lettered.

The webhook handler and the scheduled pulls make an event's first attempt (:func:`first_attempt`);
the retry worker makes the later ones (:func:`later_attempt`). Both end the same way: the outcome is
logged, a permanent failure goes to the dead-letter queue with its reason, a failure that can heal goes
back to the retry queue. Only when neither queue can take the event is it reported unsafe, so that its
sender delivers it again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from chalicelib.connectors.base import Connector, Event
from chalicelib.core.errors import QueueUnavailable
from chalicelib.domain import retry_queue
from chalicelib.domain.retry_queue import DeadLetter, RetryJob
from chalicelib.domain.tenants import Tenant
from chalicelib.flow import pipeline
from chalicelib.infra.http import Deadline
from chalicelib.infra.logs import Stopwatch, log, log_context
from chalicelib.infra.settings import Settings


def first_attempt(connector: Connector, event: Event, tenant: Tenant, settings: Settings, deadline: Deadline) -> bool:
    """Run a new event; True when it is safe (imported, ignored, skipped, queued or dead-lettered)."""
    # Every line written for this event (the pipeline's too) names it and times it.
    with log_context(platform=connector.name, tenant=tenant.id, event_id=event.event_id, attempt=1):
        fields = {"platform": connector.name, "tenant": tenant.id, "event_id": event.event_id, "attempt": 1}
        watch = Stopwatch()
        try:
            outcome = pipeline.run(connector, event, tenant, settings, deadline)
        except pipeline.Interrupted as interrupted:
            job = RetryJob(platform=connector.name, tenant=tenant.id, event_id=event.event_id, stage=interrupted.stage,
                           event=event.to_dict(), payload=interrupted.payload, attempt=1,
                           last_error=interrupted.error.reason)
            if not interrupted.retryable:
                return dead_letter(DeadLetter(kind="permanent", reason=interrupted.error.reason, job=job),
                                   {**fields, "stage": interrupted.stage})
            try:
                # The first retry waits as long as the callee asked (Retry-After), or the doubt needs to settle.
                retry_queue.enqueue(job, delay_seconds=interrupted.error.retry_after or 0)
            except QueueUnavailable as exc:
                log("failed", level=logging.ERROR, stage=interrupted.stage,
                    reason=f"{interrupted.error.reason}; and {exc.reason}", **fields)
                return False
            log("queued", stage=interrupted.stage, reason=interrupted.error.reason, latency_ms=watch.ms(), **fields)
            return True
        log_outcome(outcome, watch, fields)
        return True


def unrouted(connector: Connector, event: Event) -> bool:
    """Dead-letter an event no tenant owns; False when the dead-letter queue cannot take it."""
    job = RetryJob(platform=connector.name, tenant=None, event_id=event.event_id, stage="fetch",
                   event=event.to_dict(), last_error="unrouted")
    return dead_letter(DeadLetter(kind="unrouted", reason="unrouted", job=job),
                       {"platform": connector.name, "event_id": event.event_id}, account_id=event.account_id)


@dataclass(frozen=True)
class Retry:
    """A later attempt failed in a way that can heal: resume ``job`` after ``delay`` seconds.
    ``progressed`` says the job moved on (a later stage, or further within one) and must replace the message."""

    job: RetryJob
    delay: float
    progressed: bool


def later_attempt(connector: Connector, job: RetryJob, attempt: int, tenant: Tenant, settings: Settings,
                  deadline: Deadline, fields: dict) -> bool | Retry:
    """Resume a queued job: True when it is safe now, False when it must come back as it is (it could not
    be dead-lettered), or a :class:`Retry` for the caller to schedule."""
    watch = Stopwatch()
    try:
        outcome = pipeline.run(connector, Event.from_dict(job.event), tenant, settings, deadline, job.stage, job.payload)
    except pipeline.Interrupted as interrupted:
        resumed = job.model_copy(update={"stage": interrupted.stage, "payload": interrupted.payload,
                                         "attempt": attempt, "last_error": interrupted.error.reason})
        if not interrupted.retryable:
            return dead_letter(DeadLetter(kind="permanent", reason=interrupted.error.reason, job=resumed), fields)
        if attempt >= settings.max_attempts:
            reason = f"retries exhausted after {attempt} attempts: {interrupted.error.reason}"
            return dead_letter(DeadLetter(kind="exhausted", reason=reason, job=resumed), fields)
        delay = backoff_seconds(attempt, settings, getattr(interrupted.error, "retry_after", None))
        log("retried", reason=interrupted.error.reason, stage=interrupted.stage, delay_s=round(delay, 1), **fields)
        progressed = interrupted.stage != job.stage or interrupted.payload != job.payload
        return Retry(resumed, delay, progressed)
    log_outcome(outcome, watch, fields)
    return True


def backoff_seconds(attempt: int, settings: Settings, retry_after: float | None = None) -> float:
    """Exponential backoff with jitter ("equal jitter": half fixed, half random), never below Retry-After."""
    import random

    ceiling = min(settings.retry_max_seconds, settings.retry_base_seconds * 2 ** max(0, attempt - 1))
    delay = ceiling / 2 + random.uniform(0, ceiling / 2)
    if retry_after:
        delay = max(delay, retry_after)
    return min(delay, settings.retry_max_seconds)


def dead_letter(letter: DeadLetter, fields: dict, **extra: object) -> bool:
    """Send to the dead-letter queue and log it; False (logged as failed) when the queue cannot take it."""
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
