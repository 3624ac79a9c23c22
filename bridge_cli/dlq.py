"""``dlq list`` and ``dlq redrive``: the dead-letter queue, read and moved back to the retry queue.

The queues are those of ``DEAD_LETTER_QUEUE_URL`` / ``RETRY_QUEUE_URL`` (or the options) with boto3's
usual configuration (credentials, ``AWS_REGION``, ``AWS_ENDPOINT_URL_SQS``), else the running local
stack's. Listing shows what a dead letter says about itself (kind, reason, platform, event id, when),
never the guest: reasons are scrubbed of anything that looks like an email or a phone number.

Redrive in AWS uses SQS's ``StartMessageMoveTask`` and follows it with ``ListMessageMoveTasks`` (Amazon SQS
API Reference); moto does not implement them, so the local stack's queues are redriven message by message.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from bridge_cli.common import CliError, console, local_stack

# start_message_move_task errors that mean "this endpoint cannot do it": move the messages one by one.
UNSUPPORTED_CODES = {"UnsupportedOperation", "AWS.SimpleQueueService.UnsupportedOperation", "InvalidAction",
                     "UnknownOperationException", "NotImplemented", "InternalFailure", "500", "501"}
LIST_VISIBILITY_SECONDS = 30


@dataclass
class Queues:
    sqs: Any
    dead_letter_url: str
    retry_url: str
    where: str
    local: bool


def queues(args) -> Queues:
    dead_letter_url = args.dead_letter_queue_url or os.environ.get("DEAD_LETTER_QUEUE_URL")
    if dead_letter_url:
        import boto3

        try:
            sqs = boto3.client("sqs")
        except Exception as exc:  # botocore's NoRegionError and the like: a configuration problem
            raise CliError(f"cannot use SQS ({type(exc).__name__}): configure AWS credentials and a region "
                           "(aws configure, or AWS_REGION)") from None
        retry_url = args.retry_queue_url or os.environ.get("RETRY_QUEUE_URL")
        if not retry_url:
            from chalicelib.core.names import RETRY_QUEUE_NAME

            retry_url = _call(sqs.get_queue_url, QueueName=RETRY_QUEUE_NAME)["QueueUrl"]
        return Queues(sqs, dead_letter_url, retry_url, "AWS", local=False)
    state = local_stack(required=False)
    if state is None:
        raise CliError("which dead-letter queue? Set DEAD_LETTER_QUEUE_URL (the stack's DeadLetterQueueUrl output) with "
                       "AWS credentials, or start the local stack with `make run`")
    from sandbox.aws import client

    aws = state["aws"]
    return Queues(client("sqs", aws["endpoint"]), aws["dead_letter_queue_url"], aws["retry_queue_url"],
                  f"the local stack (moto at {aws['endpoint']})", local=True)


def _call(method, **kwargs) -> Any:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return method(**kwargs)
    except ClientError as exc:
        error = exc.response.get("Error", {})
        raise CliError(f"SQS refused {exc.operation_name}: {error.get('Code')} {error.get('Message', '')}".strip()) from None
    except BotoCoreError as exc:
        raise CliError(f"SQS unreachable or not configured ({type(exc).__name__}: {exc})") from None


def _depth(q: Queues, url: str) -> int:
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    attributes = _call(q.sqs.get_queue_attributes, QueueUrl=url, AttributeNames=names)["Attributes"]
    return sum(int(attributes.get(name, 0)) for name in names)


def describe(message: dict[str, Any]) -> dict[str, str]:
    """What a dead letter says about itself: no guest data, reasons scrubbed. A bundle (the letters, or the
    jobs, of many events in one message) is shown by its number of events and its platform, never event by
    event; ``events`` says how many events a message holds, when known."""
    from chalicelib.domain import retry_queue
    from chalicelib.infra.logs import scrub

    row = {"kind": "", "reason": "", "platform": "", "event_id": "", "stage": "", "attempt": "", "when": "",
           "events": ""}
    sent = message.get("Attributes", {}).get("SentTimestamp")
    if sent:
        row["when"] = datetime.fromtimestamp(int(sent) / 1000, timezone.utc).isoformat(timespec="seconds")
    try:
        document = json.loads(message["Body"])
    except ValueError:
        document = None
    if not isinstance(document, dict):
        return {**row, "kind": "unreadable", "reason": "the message is not a JSON object"}
    job = document.get("job") if "kind" in document else document
    bundled = document.get("bundle") is not None
    if "kind" in document:
        row.update(kind=str(document.get("kind")), reason=scrub(str(document.get("reason", "")))[:200],
                   when=str(document.get("dead_lettered_at") or row["when"]))
    elif bundled:  # a bundle of jobs SQS's redrive policy moved (maxReceiveCount receives without success)
        row.update(kind="redrive policy", reason="received maxReceiveCount times (a bundle of jobs)")
    else:  # a bare job: SQS's redrive policy moved it (maxReceiveCount receives without success)
        row.update(kind="redrive policy", reason=scrub(f"received maxReceiveCount times; last error: "
                                                       f"{document.get('last_error') or 'none'}")[:200])
    if not bundled:
        if isinstance(job, dict):
            row.update(platform=str(job.get("platform") or ""), event_id=str(job.get("event_id") or ""),
                       stage=str(job.get("stage") or ""), attempt=str(job.get("attempt") or ""), events="1")
        return row
    # A bundle: its platform and count from the envelope (a bundle of jobs names its platform, the message's
    # attributes do when they were received), else from its jobs, unpacked within retry_queue's limit; of
    # each job only the platform, stage and attempt are read.
    attributes = message.get("MessageAttributes") or {}
    platform = str(document.get("platform") or (attributes.get("platform") or {}).get("StringValue") or "")
    count = document.get("events")
    try:
        jobs = retry_queue.parse_message(message["Body"])
    except Exception:  # unreadable inside: what the envelope says is all there is
        jobs = []
    if isinstance(jobs, list) and jobs:
        count = len(jobs)
        platform = ", ".join(sorted({job.platform for job in jobs}))
        attempts = sorted({job.attempt for job in jobs})
        row.update(stage=", ".join(sorted({job.stage for job in jobs})),
                   attempt=str(attempts[0]) if len(attempts) == 1 else f"{attempts[0]}–{attempts[-1]}")
    events = str(count) if isinstance(count, int) and not isinstance(count, bool) else ""
    row.update(platform=platform[:100], events=events, event_id=f"(a bundle of {events or 'several'} events)")
    return row


def list_(args) -> int:
    q = queues(args)
    depth = _depth(q, q.dead_letter_url)
    messages: dict[str, dict[str, Any]] = {}
    # Each received message is hidden while we read on (so the next receive returns others), then shown again.
    while len(messages) < min(args.limit, depth):
        batch = _call(q.sqs.receive_message, QueueUrl=q.dead_letter_url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                      VisibilityTimeout=LIST_VISIBILITY_SECONDS, AttributeNames=["All"]).get("Messages", [])
        if not batch:
            break
        for message in batch:
            messages.setdefault(message["MessageId"], message)
    _release(q, list(messages.values()))
    rows = [describe(message) for message in list(messages.values())[:args.limit]]
    if args.json:
        for row in rows:
            console.print(json.dumps(row), markup=False, soft_wrap=True)
        return 0
    console.print(f"{depth} message(s) in the dead-letter queue of {q.where}" + (f"; showing {len(rows)}" if depth > len(rows) else ""))
    if rows:
        table = Table()
        for column in ("Kind", "Reason", "Platform", "Event id", "Stage", "Attempt", "Dead-lettered at"):
            table.add_column(column, overflow="fold")
        for row in rows:
            table.add_row(row["kind"], row["reason"], row["platform"], row["event_id"], row["stage"], row["attempt"],
                          row["when"])
        console.print(table)
    return 0


def _release(q: Queues, messages: list[dict[str, Any]]) -> None:
    for start in range(0, len(messages), 10):
        entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0}
                   for i, m in enumerate(messages[start:start + 10])]
        _call(q.sqs.change_message_visibility_batch, QueueUrl=q.dead_letter_url, Entries=entries)


def redrive(args) -> int:
    q = queues(args)
    depth = _depth(q, q.dead_letter_url)
    if depth == 0:
        console.print(f"The dead-letter queue of {q.where} is empty: nothing to redrive.")
        return 0
    if not q.local and args.limit is None and _move_task(q, depth):
        return 0
    total = depth if args.limit is None else min(args.limit, depth)
    moved = _move_one_by_one(q, total)
    console.print(f"Moved {moved} message(s) from the dead-letter queue to the retry queue of {q.where}; "
                  "the retry worker takes them from there.")
    return 0


def _move_task(q: Queues, depth: int) -> bool:
    """SQS's own redrive (StartMessageMoveTask): True when it ran, False when the endpoint lacks it."""
    from botocore.exceptions import ClientError

    arn = lambda url: _call(q.sqs.get_queue_attributes, QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    source, destination = arn(q.dead_letter_url), arn(q.retry_url)
    try:
        q.sqs.start_message_move_task(SourceArn=source, DestinationArn=destination)
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code"))
        if code in UNSUPPORTED_CODES:
            console.print(f"[dim]This endpoint has no message move task ({code}): moving the messages one by one.[/dim]")
            return False
        raise CliError(f"SQS refused StartMessageMoveTask: {code}") from None
    console.print(f"Started SQS's message move task ({depth} message(s)) from the dead-letter queue to the retry queue.")
    with _progress() as progress:
        task = progress.add_task("redriving", total=depth)
        while True:
            tasks = _call(q.sqs.list_message_move_tasks, SourceArn=source, MaxResults=1).get("Results", [])
            current = tasks[0] if tasks else {}
            progress.update(task, completed=int(current.get("ApproximateNumberOfMessagesMoved", 0)),
                            total=int(current.get("ApproximateNumberOfMessagesToMove", depth) or depth))
            status = current.get("Status")
            if status in ("COMPLETED", "CANCELLED", "FAILED"):
                break
            time.sleep(2)
    if status != "COMPLETED":
        raise CliError(f"the move task ended {status}: {current.get('FailureReason', 'no reason given')}")
    console.print(f"Moved {current.get('ApproximateNumberOfMessagesMoved', 0)} message(s); the retry worker takes them from there.")
    return True


def _move_one_by_one(q: Queues, total: int) -> int:
    """Receive, send to the retry queue, then delete: a crash in between leaves a copy in both queues, which is
    harmless (the worker's imports are idempotent), never none."""
    moved = 0
    with _progress() as progress:
        task = progress.add_task("redriving", total=total)
        while moved < total:
            batch = _call(q.sqs.receive_message, QueueUrl=q.dead_letter_url, MaxNumberOfMessages=min(10, total - moved),
                          WaitTimeSeconds=1, VisibilityTimeout=60, MessageAttributeNames=["All"]).get("Messages", [])
            if not batch:
                break
            entries = [{"Id": str(i), "MessageBody": m["Body"], "MessageAttributes": m.get("MessageAttributes", {})}
                       for i, m in enumerate(batch)]
            sent = _call(q.sqs.send_message_batch, QueueUrl=q.retry_url, Entries=entries)
            done = [batch[int(entry["Id"])] for entry in sent.get("Successful", [])]
            if done:
                _call(q.sqs.delete_message_batch, QueueUrl=q.dead_letter_url,
                      Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)])
            moved += len(done)
            progress.update(task, completed=moved)
            if sent.get("Failed"):
                codes = sorted({entry.get("Code", "?") for entry in sent["Failed"]})
                raise CliError(f"the retry queue refused {len(sent['Failed'])} message(s) ({', '.join(codes)}); "
                               f"{moved} moved, the others stay in the dead-letter queue")
    return moved


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=True)
