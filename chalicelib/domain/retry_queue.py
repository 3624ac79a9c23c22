"""The retry queue and the dead-letter queue (SQS).

A :class:`RetryJob` is what is needed to resume an event at the stage that failed; a :class:`DeadLetter`
is what can never succeed, with its reason (docs/architecture.md, "The queues"). Both queues are reached
through boto3, imported only on these paths (:mod:`chalicelib.infra.aws`).

Every message is kept under SQS's size limit, and many jobs at once travel together: an :class:`Outbox`
sends a webhook's jobs and dead letters in a few calls, as bundles when there are many, within a time
limit (docs/architecture.md, "The queues").
"""

from __future__ import annotations

import base64
import json
import math
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from chalicelib.core.errors import PermanentError, QueueUnavailable
from chalicelib.infra import aws
from chalicelib.infra.settings import get_settings

Stage = Literal["fetch", "import", "record"]
DeadLetterKind = Literal["permanent", "exhausted", "unrouted", "poisoned"]
MAX_DELAY_SECONDS = 900  # SQS DelaySeconds limit
# SQS's limit on one message, its body and attributes (names, types, values) together; the queues state it
# (deploy/resources.yaml, MaximumMessageSize). SendMessageBatch takes at most 10 messages, and at most this
# many bytes in all.
MAX_MESSAGE_BYTES = 256 * 1024
MAX_BATCH_MESSAGES = 10
# A packed bundle is never unpacked beyond this (a few thousand events make a few megabytes).
MAX_UNPACKED_BYTES = 64 * 1024 * 1024
# Below this much time left, a send is not started: it could not be confirmed in time.
MINIMUM_SEND_SECONDS = 0.05
_IDENTITY_CHARS = 300  # what a job kept to its identity keeps of each id


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
    # A job too large for a message as it is travels with its event and payload compressed here (zlib, then
    # base64; ``event`` and ``payload`` are then empty), and is unpacked when read.
    packed: str | None = None
    # What was left out so that the job fits a message: the event's data ("data"), which no stage after
    # fetch reads; or everything but the job's identity ("all"): such a job is a dead letter that can never run.
    dropped: Literal["data", "all"] | None = None


class DeadLetter(BaseModel):
    model_config = ConfigDict(extra="ignore", defer_build=True)

    kind: DeadLetterKind
    reason: str
    dead_lettered_at: str = Field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    job: RetryJob | None = None
    # A message that could not be read as a job is kept verbatim, so nothing is lost (compressed in
    # ``raw_packed`` when it would not fit otherwise).
    raw: str | None = None
    raw_packed: str | None = None
    # Many jobs dead-lettered together for the same kind and reason: packed like a :class:`JobBundle`.
    bundle: str | None = None
    events: int | None = None


class JobBundle(BaseModel):
    """Many jobs in one message (``bundle``: their list, packed): what a webhook of thousands of events
    leaves to the queue. The worker hands each job back to the queue as a message of its own."""

    model_config = ConfigDict(extra="ignore", defer_build=True)

    platform: str
    events: int
    bundle: str


class TooLarge(PermanentError):
    """A job that cannot fit in a message even compressed, and whose stage still needs all it holds."""


# -- one message at a time ---------------------------------------------------------------------------

def enqueue(job: RetryJob, delay_seconds: float = 0) -> None:
    """Send a job to the retry queue; :class:`QueueUnavailable` if SQS cannot take it, :class:`TooLarge` if
    it cannot fit in a message."""
    url = get_settings().retry_queue_url
    if not url:
        raise QueueUnavailable("RETRY_QUEUE_URL is not configured")
    attributes = _job_attributes(job)
    _send(url, encode_job(job, attributes), attributes, delay_seconds=_whole_seconds(delay_seconds, MAX_DELAY_SECONDS))


def dead_letter(letter: DeadLetter) -> None:
    """Send to the dead-letter queue with its reason; :class:`QueueUnavailable` if SQS cannot take it."""
    url = get_settings().dead_letter_queue_url
    if not url:
        raise QueueUnavailable("DEAD_LETTER_QUEUE_URL is not configured")
    attributes = _letter_attributes(letter)
    _send(url, encode_letter(letter, attributes), attributes)


def change_visibility(receipt_handle: str, seconds: float) -> None:
    """Hide a retry message for ``seconds`` (the backoff); SQS errors propagate to the caller."""
    url = get_settings().retry_queue_url
    aws.client("sqs").change_message_visibility(
        QueueUrl=url, ReceiptHandle=receipt_handle, VisibilityTimeout=_whole_seconds(seconds, 43200)
    )


def _whole_seconds(seconds: float, ceiling: int) -> int:
    # SQS counts whole seconds: round up, or a wait of 0.4 s would be no wait at all.
    return min(ceiling, max(0, math.ceil(seconds)))


def parse_message(body: str) -> RetryJob | list[RetryJob]:
    """What a retry message holds: one job, or the jobs of a bundle (a list). Also reads a dead letter
    moved back by a redrive.

    A redrive (SQS's move task, or ``dlq redrive``) puts :class:`DeadLetter` messages back on the retry
    queue as they are: the job (or jobs) inside is resumed, and a ``poisoned`` letter's verbatim body is
    read again.
    """
    document = json.loads(body)
    if isinstance(document, dict) and "kind" in document and "reason" in document:
        return _redriven(_letter_jobs(DeadLetter.model_validate(document)))
    if isinstance(document, dict) and "bundle" in document:
        return _bundled_jobs(JobBundle.model_validate(document).bundle)
    return _unpacked(RetryJob.model_validate(document))


def _letter_jobs(letter: DeadLetter) -> RetryJob | list[RetryJob]:
    if letter.bundle is not None:
        return _bundled_jobs(letter.bundle)
    if letter.job is not None:
        return _unpacked(letter.job)
    if letter.raw_packed is not None:
        return parse_message(_unpack_text(letter.raw_packed))
    if letter.raw is not None:
        return parse_message(letter.raw)
    raise ValueError("a dead letter without a job")


def _redriven(jobs: RetryJob | list[RetryJob]) -> RetryJob | list[RetryJob]:
    # A redriven job starts a new retry horizon: its cause was fixed now, not when it was first seen.
    now = time.time()
    if isinstance(jobs, list):
        return [job.model_copy(update={"first_seen": now}) for job in jobs]
    return jobs.model_copy(update={"first_seen": now})


def parse_job(body: str) -> RetryJob:
    """The one job of a message (a bundle is refused: use :func:`parse_message`)."""
    parsed = parse_message(body)
    if isinstance(parsed, list):
        raise ValueError(f"a bundle of {len(parsed)} jobs, not one job")
    return parsed


def _send(url: str, body: str, attributes: dict[str, str], delay_seconds: int = 0) -> None:
    try:
        aws.client("sqs").send_message(QueueUrl=url, MessageBody=body, DelaySeconds=delay_seconds,
                                       MessageAttributes=_sqs_attributes(attributes))
    except aws.aws_error_types() as exc:
        raise QueueUnavailable(f"SQS send failed ({type(exc).__name__})") from None


# -- fitting a message -------------------------------------------------------------------------------

def message_bytes(body: str, attributes: dict[str, str]) -> int:
    """What SQS counts against its limit: the body's UTF-8 bytes plus each attribute's name, type and value."""
    size = len(body.encode("utf-8", "surrogatepass"))
    for name, value in attributes.items():
        if value:
            size += len(name.encode()) + len("String") + len(value.encode("utf-8", "surrogatepass"))
    return size


def encode_job(job: RetryJob, attributes: dict[str, str]) -> str:
    """The message body of ``job``, under the size limit: as it is, else packed, else (from the import
    stage on) without the event's data; :class:`TooLarge` when none of these fits."""
    body = ""
    for form in _job_forms(job, runnable=True):
        body = _dumps(_job_document(form))
        if message_bytes(body, attributes) <= MAX_MESSAGE_BYTES:
            return body
    raise TooLarge(f"too large for a queue message: {message_bytes(body, attributes)} bytes even compressed, "
                   f"SQS takes {MAX_MESSAGE_BYTES}")


def encode_letter(letter: DeadLetter, attributes: dict[str, str]) -> str:
    """The message body of ``letter``, always under the size limit: its job (or verbatim body) is packed
    when needed and, as a last resort, cut down (the reason then says so)."""
    if letter.job is not None:
        forms = ({**_letter_document(letter), "job": _job_document(form)} for form in _job_forms(letter.job, runnable=False))
    elif letter.raw is not None:
        forms = _raw_forms(letter, attributes)
    else:
        forms = iter([_letter_document(letter)])
    body = ""
    for document in forms:
        body = _dumps(document)
        if message_bytes(body, attributes) <= MAX_MESSAGE_BYTES:
            return body
    return body  # only a letter with neither job nor raw gets here, and it is small


def _job_forms(job: RetryJob, runnable: bool) -> Iterator[RetryJob]:
    yield job
    whole = {"event": job.event, "payload": job.payload}
    yield job.model_copy(update={"event": {}, "payload": {}, "packed": _pack(whole)})
    if job.stage != "fetch":
        # From the import stage on, the pipeline reads the payload only: the event's data can go.
        slim = {"event": {**job.event, "data": {}}, "payload": job.payload}
        yield job.model_copy(update={"event": {}, "payload": {}, "packed": _pack(slim), "dropped": "data"})
    if not runnable:
        yield _identity_only(job)


def _identity_only(job: RetryJob) -> RetryJob:
    """The job reduced to what identifies its event: for a dead letter, the one form that always fits."""
    def short(value: Any) -> str | None:
        return value[:_IDENTITY_CHARS] if isinstance(value, str) else None

    event = {"event_id": short(job.event.get("event_id")) or short(job.event_id) or "", "kind": short(job.event.get("kind")) or "",
             "account_id": short(job.event.get("account_id")), "data": {}, "guest_key": short(job.event.get("guest_key"))}
    return job.model_copy(update={"event_id": short(job.event_id) or "", "event": event, "payload": {}, "packed": None,
                                  "dropped": "all", "last_error": short(job.last_error)})


def _raw_forms(letter: DeadLetter, attributes: dict[str, str]) -> Iterator[dict[str, Any]]:
    document = _letter_document(letter)
    yield document
    raw = document.pop("raw")
    yield {**document, "raw_packed": _pack_text(raw)}
    # Incompressible and too large: keep as much of it as fits, and say so.
    document["reason"] = f"{letter.reason} (its body cut to fit a queue message)"
    keep = len(raw)
    while keep > 0:
        keep = int(keep * MAX_MESSAGE_BYTES / message_bytes(_dumps({**document, "raw": raw[:keep]}), attributes) * 0.98)
        candidate = {**document, "raw": raw[:keep]}
        if message_bytes(_dumps(candidate), attributes) <= MAX_MESSAGE_BYTES:
            yield candidate
            return
    yield document


def _job_document(job: RetryJob) -> dict[str, Any]:
    document = job.model_dump(mode="json")
    for name in ("packed", "dropped"):
        if document.get(name) is None:
            document.pop(name, None)
    return document


def _letter_document(letter: DeadLetter) -> dict[str, Any]:
    document = letter.model_dump(mode="json", exclude={"job"}, exclude_none=True)
    if letter.job is not None:
        document["job"] = _job_document(letter.job)  # tenant None kept: a job needs the field
    return document


def _job_attributes(job: RetryJob) -> dict[str, str]:
    return {"platform": job.platform, "stage": job.stage}


def _letter_attributes(letter: DeadLetter) -> dict[str, str]:
    attributes = {"kind": letter.kind, "reason": letter.reason[:256]}
    if letter.job is not None:
        attributes["platform"] = letter.job.platform
    return attributes


def _sqs_attributes(attributes: dict[str, str]) -> dict[str, dict[str, str]]:
    return {key: {"DataType": "String", "StringValue": value} for key, value in attributes.items() if value}


def _dumps(document: Any) -> str:
    text = json.dumps(document, ensure_ascii=False, separators=(",", ":"))
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: escaped, it is plain ASCII JSON that reads back the same
        text = json.dumps(document, separators=(",", ":"))
    return text


def _pack(document: Any) -> str:
    return _pack_text(_dumps(document))


def _pack_text(text: str) -> str:
    return base64.b64encode(zlib.compress(text.encode("utf-8", "surrogatepass"), 6)).decode("ascii")


def _unpack(packed: str) -> Any:
    return json.loads(_unpack_text(packed))


def _unpack_text(packed: str) -> str:
    inflater = zlib.decompressobj()
    raw = inflater.decompress(base64.b64decode(packed, validate=True), MAX_UNPACKED_BYTES)
    if inflater.unconsumed_tail:
        raise ValueError("packed content larger than the bridge ever packs")
    return raw.decode("utf-8", "surrogatepass")


def _unpacked(job: RetryJob) -> RetryJob:
    if job.packed is None:
        return job
    whole = _unpack(job.packed)
    return job.model_copy(update={"event": whole["event"], "payload": whole["payload"], "packed": None})


def _bundled_jobs(packed: str) -> list[RetryJob]:
    documents = _unpack(packed)
    if not isinstance(documents, list):
        raise ValueError("a bundle holds a list of jobs")
    return [_unpacked(RetryJob.model_validate(document)) for document in documents]


def _packed_groups(documents: list[dict[str, Any]], wrap: Callable[[str, int], str],
                   attributes: dict[str, str]) -> list[tuple[int, int, str | None]]:
    """Consecutive groups of ``documents`` whose packed list, wrapped, fits a message: (start, end, body);
    body is None for a lone document too large even so."""
    groups: list[tuple[int, int, str | None]] = []

    def pack(start: int, end: int) -> None:
        body = wrap(_pack(documents[start:end]), end - start)
        size = message_bytes(body, attributes)
        if size <= MAX_MESSAGE_BYTES:
            groups.append((start, end, body))
        elif end - start == 1:
            groups.append((start, end, None))
        else:  # split in as many parts as the size says, with room to spare
            parts = max(2, min(end - start, math.ceil(size / (MAX_MESSAGE_BYTES * 0.9))))
            step = math.ceil((end - start) / parts)
            for first in range(start, end, step):
                pack(first, min(end, first + step))

    if documents:
        pack(0, len(documents))
    return groups


def _bundle_wrapper(platform: str) -> Callable[[str, int], str]:
    return lambda packed, count: _dumps(JobBundle(platform=platform, events=count, bundle=packed).model_dump(mode="json"))


def _letter_bundle_wrapper(kind: str, reason: str) -> Callable[[str, int], str]:
    return lambda packed, count: _dumps(_letter_document(DeadLetter(kind=kind, reason=reason, bundle=packed, events=count)))


# -- many messages at once ---------------------------------------------------------------------------

@dataclass(eq=False)
class Outgoing:
    """One job or dead letter handed to an :class:`Outbox`, and what became of it once sent: ``sent``, or
    ``problem`` says why not. A job too large for a message is dead-lettered instead: ``letter`` is set."""

    job: RetryJob | None = None
    letter: DeadLetter | None = None
    delay: int = 0
    sent: bool = False
    problem: str | None = None
    # The job as the plain document it is sent as, when it was built as one (see :meth:`Outbox.retry`).
    document: dict[str, Any] | None = None

    def job_document(self) -> dict[str, Any]:
        return self.document if self.document is not None else _job_document(self.job)

    def as_job(self) -> RetryJob:
        if self.job is None:
            self.job = RetryJob.model_validate(self.document)
        return self.job


@dataclass(eq=False)
class _Message:
    url: str
    body: str
    attributes: dict[str, str]
    delay: int
    items: list[Outgoing]

    @property
    def size(self) -> int:
        return message_bytes(self.body, self.attributes)


@dataclass
class Outbox:
    """Jobs and dead letters sent together, in as few SQS calls as they fit (SendMessageBatch), and, when
    there are more than one call's worth, as bundles: a webhook of thousands of events costs a few calls."""

    items: list[Outgoing] = field(default_factory=list)

    def retry(self, job: RetryJob | dict[str, Any], delay_seconds: float = 0) -> Outgoing:
        """Queue ``job``: a :class:`RetryJob`, or the document of one (what its ``model_dump(mode="json")``
        gives), the cheaper when thousands of events are deferred at once."""
        item = Outgoing(delay=_whole_seconds(delay_seconds, MAX_DELAY_SECONDS))
        if isinstance(job, RetryJob):
            item.job = job
        else:
            item.document = job
        self.items.append(item)
        return item

    def dead_letter(self, letter: DeadLetter) -> Outgoing:
        item = Outgoing(letter=letter)
        self.items.append(item)
        return item

    def send(self, seconds: float | None = None, bundle: bool = True) -> None:
        """Send everything, each item then ``sent`` or with its ``problem``. With ``seconds``, what is not
        confirmed sent by then is reported unsent (an SQS call that hangs cannot hold the caller past it:
        the calls run in a thread of their own). ``bundle=False`` sends each job as a message of its own."""
        settings = get_settings()
        messages = self._jobs(settings.retry_queue_url, bundle)
        messages += self._letters(settings.dead_letter_queue_url, bundle)
        if seconds is None:
            _deliver(messages, None, threading.Lock(), [False])
            return
        lock, closed = threading.Lock(), [False]
        sender = threading.Thread(target=_deliver, args=(messages, time.monotonic() + seconds, lock, closed),
                                  name="outbox", daemon=True)
        sender.start()
        sender.join(max(0.0, seconds))
        with lock:
            closed[0] = True  # a send confirmed after this no longer counts: the caller has answered
            for item in self.items:
                if not item.sent and item.problem is None:
                    item.problem = "SQS did not confirm the send in time"

    def _jobs(self, url: str | None, bundle: bool) -> list[_Message]:
        jobs = [item for item in self.items if item.letter is None]
        if jobs and not url:
            for item in jobs:
                item.problem = "RETRY_QUEUE_URL is not configured"
            return []
        messages: list[_Message] = []
        single: list[Outgoing] = []
        if bundle and len(jobs) > MAX_BATCH_MESSAGES:
            by_delay: dict[int, list[Outgoing]] = {}
            for item in jobs:
                by_delay.setdefault(item.delay, []).append(item)
            for delay, group in by_delay.items():
                platform = group[0].job_document()["platform"]
                attributes = {"platform": platform, "stage": "bundle"}
                wrap = _bundle_wrapper(platform)
                for start, end, body in _packed_groups([item.job_document() for item in group], wrap, attributes):
                    if body is None:
                        single += group[start:end]
                    else:
                        messages.append(_Message(url, body, attributes, delay, group[start:end]))
        else:
            single = jobs
        for item in single:
            job = item.as_job()
            attributes = _job_attributes(job)
            try:
                messages.append(_Message(url, encode_job(job, attributes), attributes, item.delay, [item]))
            except TooLarge as exc:
                item.letter = DeadLetter(kind="permanent", reason=exc.reason, job=job)
        return messages

    def _letters(self, url: str | None, bundle: bool) -> list[_Message]:
        letters = [item for item in self.items if item.letter is not None and item.problem is None]
        if letters and not url:
            for item in letters:
                item.problem = "DEAD_LETTER_QUEUE_URL is not configured"
            return []
        messages: list[_Message] = []
        single: list[Outgoing] = []
        if bundle and len(letters) > MAX_BATCH_MESSAGES:
            by_reason: dict[tuple[str, str], list[Outgoing]] = {}
            for item in letters:
                if item.letter.job is None:
                    single.append(item)
                else:
                    by_reason.setdefault((item.letter.kind, item.letter.reason), []).append(item)
            for (kind, reason), group in by_reason.items():
                attributes = {"kind": kind, "reason": reason[:256], "platform": group[0].letter.job.platform}
                wrap = _letter_bundle_wrapper(kind, reason)
                documents = [_job_document(item.letter.job) for item in group]
                for start, end, body in _packed_groups(documents, wrap, attributes):
                    if body is None:
                        single += group[start:end]
                    else:
                        messages.append(_Message(url, body, attributes, 0, group[start:end]))
        else:
            single = letters
        for item in single:
            attributes = _letter_attributes(item.letter)
            messages.append(_Message(url, encode_letter(item.letter, attributes), attributes, 0, [item]))
        return messages


def _deliver(messages: list[_Message], ends_at: float | None, lock: threading.Lock, closed: list[bool]) -> None:
    """Send ``messages`` in as few calls as SQS allows, settling each item (never raises: it may run in a
    thread nobody waits for)."""
    def settle(message: _Message, problem: str | None) -> None:
        with lock:
            if closed[0]:
                return
            for item in message.items:
                if problem is None:
                    item.sent = True
                else:
                    item.problem = problem

    for call in _calls(messages):
        if ends_at is not None and ends_at - time.monotonic() < MINIMUM_SEND_SECONDS:
            for message in call:
                settle(message, "no time left to send it")
            continue
        try:
            sqs = aws.client("sqs")
            if len(call) == 1:
                [message] = call
                sqs.send_message(QueueUrl=message.url, MessageBody=message.body, DelaySeconds=message.delay,
                                 MessageAttributes=_sqs_attributes(message.attributes))
                settle(message, None)
                continue
            answer = sqs.send_message_batch(QueueUrl=call[0].url, Entries=[
                {"Id": str(index), "MessageBody": message.body, "DelaySeconds": message.delay,
                 "MessageAttributes": _sqs_attributes(message.attributes)} for index, message in enumerate(call)])
            for success in answer.get("Successful") or []:
                settle(call[int(success["Id"])], None)
            for failure in answer.get("Failed") or []:
                settle(call[int(failure["Id"])], f"SQS refused it ({str(failure.get('Code'))[:80]})")
        except Exception as exc:  # boto3's errors, or anything else: these messages are simply not sent
            for message in call:
                settle(message, f"SQS send failed ({type(exc).__name__})")
    with lock:  # an entry SQS neither accepted nor refused (a malformed answer) was not sent
        if not closed[0]:
            for message in messages:
                for item in message.items:
                    if not item.sent and item.problem is None:
                        item.problem = "SQS did not confirm the send"


def _calls(messages: list[_Message]) -> Iterator[list[_Message]]:
    """Messages grouped into SendMessageBatch calls: one queue each, at most 10 messages and 256 KiB."""
    by_url: dict[str, list[_Message]] = {}
    for message in messages:
        by_url.setdefault(message.url, []).append(message)
    for group in by_url.values():
        call: list[_Message] = []
        size = 0
        for message in group:
            if call and (len(call) == MAX_BATCH_MESSAGES or size + message.size > MAX_MESSAGE_BYTES):
                yield call
                call, size = [], 0
            call.append(message)
            size += message.size
        if call:
            yield call
