"""The retry worker: consumes the retry queue (SQS → Lambda, batches of up to 10).

Each record resumes its job at its stage and is answered on its own in a partial batch response: deleted
once done or dead-lettered, handed back with a backoff when the failure can heal. A bundle (the many jobs
of one large webhook in one message) is worked through job by job the same way. What happens to each
kind of record: docs/architecture.md, "The retry worker".
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from chalicelib.connectors import get_connector
from chalicelib.core.errors import QueueUnavailable
from chalicelib.domain import retry_queue
from chalicelib.domain.retry_queue import DeadLetter, RetryJob
from chalicelib.domain.tenants import get_directory
from chalicelib.flow import dispatch
from chalicelib.infra.http import Deadline
from chalicelib.infra.logs import bind, log, log_context
from chalicelib.infra.settings import get_settings

# Time kept in reserve at the end of an invocation, so Lambda never kills the worker mid-record
# (a killed invocation fails the whole batch and costs every record a receive).
LAMBDA_SAFETY_SECONDS = 3.0
# Of a bundle's time, what is kept at the end to queue again the jobs that must come back.
BUNDLE_SEND_SECONDS = 2.0
# How long a record the invocation had no time to try waits before it is received again.
NO_TIME_DELAY_SECONDS = 10


def handle_batch(event: dict[str, Any], remaining_ms: Callable[[], float] | None = None) -> dict[str, list[dict[str, str]]]:
    """Handle a batch, its records concurrently (at most ``WORKER_CONCURRENCY`` at a time).

    Each record is answered on its own: the response lists exactly the records that must come back.
    ``remaining_ms`` is the Lambda context's clock, when there is one.
    """
    records = event.get("Records") or []
    if not records:
        return {"batchItemFailures": []}
    try:
        workers = max(1, min(len(records), get_settings().worker_concurrency))
    except Exception:  # a broken configuration: every record comes back, none is lost
        log("failed", "the retry worker cannot start", level=logging.ERROR, exc_info=True, records=len(records))
        return {"batchItemFailures": [{"itemIdentifier": record.get("messageId")} for record in records]}

    def handle(record: dict[str, Any]) -> bool:
        time_left = remaining_ms() / 1000 - LAMBDA_SAFETY_SECONDS if remaining_ms else None
        try:
            with log_context(message_id=record.get("messageId")):  # per thread: each record's lines say which
                return handle_record(record, time_left)
        except Exception:  # a bug or a broken configuration: this record comes back, the others stand
            log("failed", "unexpected error in the retry worker", level=logging.ERROR, exc_info=True,
                message_id=record.get("messageId"))
            return False

    if workers == 1:
        done = [handle(record) for record in records]
    else:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="retry") as pool:
            done = list(pool.map(handle, records))
    return {"batchItemFailures": [{"itemIdentifier": record["messageId"]}
                                  for record, ok in zip(records, done) if not ok]}


def handle_record(record: dict[str, Any], time_left: float | None = None) -> bool:
    """Handle one SQS record within ``time_left`` seconds; True when the message may be deleted."""
    if time_left is not None and time_left < 1:
        # Not enough time to try: hand the record back for a later invocation, after a short delay (never 0:
        # a record handed back at once to an invocation with no time either would go round forever).
        _delay_redelivery(record, NO_TIME_DELAY_SECONDS, {"message_id": record.get("messageId")})
        return False
    receive_count = int((record.get("attributes") or {}).get("ApproximateReceiveCount", 1))
    try:
        parsed = retry_queue.parse_message(record["body"])
    except Exception as exc:  # any unreadable body: keep it verbatim in the dead-letter queue
        return dispatch.dead_letter(DeadLetter(kind="poisoned", reason=f"unreadable retry job ({type(exc).__name__})",
                                               raw=str(record.get("body"))), {"message_id": record.get("messageId")})
    if isinstance(parsed, list):
        return _handle_bundle(parsed, record.get("messageId"), time_left)

    job = parsed
    attempt = job.attempt + receive_count
    fields = {"platform": job.platform, "tenant": job.tenant, "event_id": job.event_id, "attempt": attempt}
    bind(**fields)
    verdict = _attempt(job, attempt, fields, time_left)
    if not isinstance(verdict, dispatch.Retry):
        return verdict
    return _requeue(verdict, record, fields)


def _attempt(job: RetryJob, attempt: int, fields: dict[str, Any], time_left: float | None,
             sends: dispatch.Sends | None = None) -> bool | dispatch.Retry:
    """One later attempt of ``job`` within ``time_left`` seconds (see :func:`dispatch.later_attempt`)."""
    settings = get_settings()
    if job.dropped == "all":  # only its identity was kept: nothing left to run
        reason = "too large for a queue message: only the event's identity was kept"
        return dispatch.dead_letter(DeadLetter(kind="permanent", reason=reason, job=job), fields, sends=sends)
    connector = get_connector(job.platform)
    # Routed again on every attempt while no tenant lists its account (held as unrouted until one does).
    job, tenant = dispatch.route(job, get_directory())
    fields["tenant"] = job.tenant

    budget = settings.worker_call_timeout_seconds * 2
    if time_left is not None:
        budget = min(budget, time_left)
    # The room: what this invocation has left (or a minute, outside Lambda), for the rare long check.
    deadline = Deadline(budget, call_timeout=settings.worker_call_timeout_seconds,
                        room=time_left if time_left is not None else 60.0)
    return dispatch.later_attempt(connector, job, attempt, tenant, settings, deadline, fields, sends)


def _handle_bundle(jobs: list[RetryJob], message_id: str | None, time_left: float | None) -> bool:
    """The jobs of a bundle (a webhook of many events), each attempted as if it were a record of its own,
    ``WORKER_CONCURRENCY`` at a time. What must come back (a retry, a job there was no time for) and the dead
    letters go to the queues together at the end; True when all of it is there. False brings the whole bundle
    back: the jobs that were done are then done again, which is harmless (Fullwhere merges, the identity
    ledger deduplicates)."""
    settings = get_settings()
    ends_at = None if time_left is None else time.monotonic() + time_left
    sends = dispatch.Sends(deferred_reason="not attempted: the worker's invocation was ending")

    def one(job: RetryJob) -> None:
        left = None if ends_at is None else ends_at - time.monotonic() - BUNDLE_SEND_SECONDS
        if left is not None and left < 1:
            sends.defer(job.platform, job)  # no time to try it: back to the queue as it is
            return
        attempt = job.attempt + 1
        fields = {"platform": job.platform, "tenant": job.tenant, "event_id": job.event_id, "attempt": attempt}
        with log_context(message_id=message_id, **fields):
            try:
                verdict = _attempt(job, attempt, fields, left, sends)
            except Exception:  # a bug: this job comes back, the others stand
                log("failed", "unexpected error in the retry worker", level=logging.ERROR, exc_info=True)
                verdict = False
        if isinstance(verdict, dispatch.Retry):  # already logged as retried
            sends.retry(verdict.job, verdict.delay, fields, outcome=None, stage=verdict.job.stage,
                        reason=verdict.job.last_error)
        elif verdict is False:  # it comes back as it was
            sends.retry(job, 0, fields, outcome=None, reason="an unexpected error")

    workers = max(1, min(len(jobs), settings.worker_concurrency))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bundle") as pool:
        list(pool.map(one, jobs))
    if not sends.send(None if ends_at is None else ends_at - time.monotonic()):
        return False
    log("unbundled", events=len(jobs))
    return True


def _requeue(retry: dispatch.Retry, record: dict[str, Any], fields: dict[str, Any]) -> bool:
    """Replace the message by the job as it now is, delayed by its backoff: a new message starts its receive
    count and retention again, so a job held for days is never moved by the queue's redrive policy. When the
    queue cannot take it, the old message comes back after the backoff instead."""
    try:
        retry_queue.enqueue(retry.job, delay_seconds=retry.delay)
        return True
    except retry_queue.TooLarge as exc:
        if retry.progressed:  # its new stage holds more than a message can: it can never come back
            return dispatch.dead_letter(DeadLetter(kind="permanent", reason=exc.reason, job=retry.job), fields)
        _delay_redelivery(record, retry.delay, fields)  # it fitted as it came: it comes back as it came
        return False
    except QueueUnavailable:
        _delay_redelivery(record, retry.delay, fields)
        return False


def _delay_redelivery(record: dict[str, Any], delay: float, fields: dict[str, Any]) -> None:
    from chalicelib.infra import aws

    try:
        retry_queue.change_visibility(record["receiptHandle"], delay)
    except aws.aws_error_types() as exc:
        # The queue's own visibility timeout then decides when the record comes back.
        log("failed", level=logging.WARNING, reason=f"could not set backoff ({type(exc).__name__})", **fields)
