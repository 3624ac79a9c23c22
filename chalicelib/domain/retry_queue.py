"""The retry queue and the dead-letter queue (SQS).

A :class:`RetryJob` is what is needed to resume an event at the stage that failed; a :class:`DeadLetter`
is what can never succeed, with its reason (docs/architecture.md, "The queues"). Both queues are reached
through boto3, imported only on these paths (:mod:`chalicelib.infra.aws`).
"""

from __future__ import annotations

import json
import math
import time
from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from chalicelib.core.errors import QueueUnavailable
from chalicelib.infra import aws
from chalicelib.infra.settings import get_settings

Stage = Literal["fetch", "import", "record"]
DeadLetterKind = Literal["permanent", "exhausted", "unrouted", "poisoned"]
MAX_DELAY_SECONDS = 900  # SQS DelaySeconds limit


class RetryJob(BaseModel):
    model_config = ConfigDict(extra="ignore", defer_build=True)

    version: int = 1
    platform: str
    tenant: str | None
    event_id: str
    stage: Stage
    event: dict[str, Any]
    payload: dict[str, Any] = Field(default_factory=dict)
    attempt: int = 0
    first_seen: float = Field(default_factory=time.time)
    last_error: str | None = None


class DeadLetter(BaseModel):
    model_config = ConfigDict(extra="ignore", defer_build=True)

    kind: DeadLetterKind
    reason: str
    dead_lettered_at: str = Field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    job: RetryJob | None = None
    # A message that could not be read as a job is kept verbatim, so nothing is lost.
    raw: str | None = None


def enqueue(job: RetryJob, delay_seconds: float = 0) -> None:
    """Send a job to the retry queue; :class:`QueueUnavailable` if SQS cannot take it."""
    url = get_settings().retry_queue_url
    if not url:
        raise QueueUnavailable("RETRY_QUEUE_URL is not configured")
    _send(url, job.model_dump_json(), {"platform": job.platform, "stage": job.stage},
          delay_seconds=_whole_seconds(delay_seconds, MAX_DELAY_SECONDS))


def dead_letter(letter: DeadLetter) -> None:
    """Send to the dead-letter queue with its reason; :class:`QueueUnavailable` if SQS cannot take it."""
    url = get_settings().dead_letter_queue_url
    if not url:
        raise QueueUnavailable("DEAD_LETTER_QUEUE_URL is not configured")
    attributes = {"kind": letter.kind, "reason": letter.reason[:256]}
    if letter.job is not None:
        attributes["platform"] = letter.job.platform
    _send(url, letter.model_dump_json(exclude_none=True), attributes)


def change_visibility(receipt_handle: str, seconds: float) -> None:
    """Hide a retry message for ``seconds`` (the backoff); SQS errors propagate to the caller."""
    url = get_settings().retry_queue_url
    aws.client("sqs").change_message_visibility(
        QueueUrl=url, ReceiptHandle=receipt_handle, VisibilityTimeout=_whole_seconds(seconds, 43200)
    )


def _whole_seconds(seconds: float, ceiling: int) -> int:
    # SQS counts whole seconds: round up, or a wait of 0.4 s would be no wait at all.
    return min(ceiling, max(0, math.ceil(seconds)))


def parse_job(body: str) -> RetryJob:
    """A retry job from a message body; also accepts a dead letter moved back by a redrive.

    A redrive (SQS's move task, or ``dlq redrive``) puts :class:`DeadLetter` messages back on the retry
    queue as they are: the job inside is resumed, and a ``poisoned`` letter's verbatim body is read again.
    """
    document = json.loads(body)
    if isinstance(document, dict) and "kind" in document and "reason" in document:
        letter = DeadLetter.model_validate(document)
        if letter.job is not None:
            return letter.job
        if letter.raw is not None:
            return parse_job(letter.raw)
    return RetryJob.model_validate(document)


def _send(url: str, body: str, attributes: dict[str, str], delay_seconds: int = 0) -> None:
    try:
        aws.client("sqs").send_message(
            QueueUrl=url,
            MessageBody=body,
            DelaySeconds=delay_seconds,
            MessageAttributes={
                key: {"DataType": "String", "StringValue": value} for key, value in attributes.items() if value
            },
        )
    except aws.aws_error_types() as exc:
        raise QueueUnavailable(f"SQS send failed ({type(exc).__name__})") from None
