"""The retry worker: consumes the retry queue (SQS → Lambda, batches of up to 10).

Each record resumes its job at its stage and is answered on its own in a partial batch response: deleted
once done or dead-lettered, handed back with a backoff when the failure can heal. What happens to each
kind of record: docs/architecture.md, "The retry worker".
"""

from __future__ import annotations

import logging
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


def handle_batch(event: dict[str, Any], remaining_ms: Callable[[], float] | None = None) -> dict[str, list[dict[str, str]]]:
    """Handle a batch, its records concurrently (at most ``WORKER_CONCURRENCY`` at a time).

    Each record is answered on its own: the response lists exactly the records that must come back.
    ``remaining_ms`` is the Lambda context's clock, when there is one.
    """
    records = event.get("Records") or []
    if not records:
        return {"batchItemFailures": []}
    workers = max(1, min(len(records), get_settings().worker_concurrency))

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
    settings = get_settings()
    budget = settings.worker_call_timeout_seconds * 2
    if time_left is not None:
        if time_left < 1:
            # Not enough time to try: hand the record back at once for the next invocation.
            _delay_redelivery(record, 0, {"message_id": record.get("messageId")})
            return False
        budget = min(budget, time_left)
    receive_count = int((record.get("attributes") or {}).get("ApproximateReceiveCount", 1))
    try:
        job = retry_queue.parse_job(record["body"])
    except Exception as exc:  # any unreadable body: keep it verbatim in the dead-letter queue
        return dispatch.dead_letter(DeadLetter(kind="poisoned", reason=f"unreadable retry job ({type(exc).__name__})",
                                       raw=str(record.get("body"))[:200_000]), {"message_id": record.get("messageId")})

    attempt = job.attempt + receive_count
    fields = {"platform": job.platform, "tenant": job.tenant, "event_id": job.event_id, "attempt": attempt}
    bind(**fields)
    connector = get_connector(job.platform)
    tenant = get_directory().get(job.tenant) if job.tenant else None
    if connector is None or tenant is None:
        what = "platform" if connector is None else "tenant"
        return dispatch.dead_letter(DeadLetter(kind="unrouted", reason=f"{what} of this job is no longer configured", job=job), fields)

    # The room: what this invocation has left (or a minute, outside Lambda), for the rare long check.
    deadline = Deadline(budget, call_timeout=settings.worker_call_timeout_seconds,
                        room=time_left if time_left is not None else 60.0)
    verdict = dispatch.later_attempt(connector, job, attempt, tenant, settings, deadline, fields)
    if not isinstance(verdict, dispatch.Retry):
        return verdict
    if verdict.progressed:
        return _requeue(verdict.job, verdict.delay, record, fields)
    _delay_redelivery(record, verdict.delay, fields)
    return False


def _requeue(job: RetryJob, delay: float, record: dict[str, Any], fields: dict[str, Any]) -> bool:
    """Replace the message by a job at its new stage; keep the old one if that fails."""
    try:
        retry_queue.enqueue(job, delay_seconds=delay)
        return True
    except QueueUnavailable:
        _delay_redelivery(record, delay, fields)
        return False


def _delay_redelivery(record: dict[str, Any], delay: float, fields: dict[str, Any]) -> None:
    from chalicelib.infra import aws

    try:
        retry_queue.change_visibility(record["receiptHandle"], delay)
    except aws.aws_error_types() as exc:
        # The queue's own visibility timeout then decides when the record comes back.
        log("failed", level=logging.WARNING, reason=f"could not set backoff ({type(exc).__name__})", **fields)
