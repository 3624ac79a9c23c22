"""Local AWS for tests: a moto server, the bridge's queues and table, and a
stand-in for Lambda's SQS event source mapping (docs/operations.md, "Local stack and tools").

moto runs in-process, so its state is shared with any @mock_aws in the same
process; call reset_moto() between tests that need a clean slate.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.request
from typing import Any, Callable

import boto3
from moto.server import ThreadedMotoServer

REGION = "eu-west-3"

LambdaHandler = Callable[[dict[str, Any]], Any]


def start_moto(port: int = 0) -> tuple[ThreadedMotoServer, str]:
    """Start a moto server on loopback (``port`` 0: a free one); returns (server, endpoint_url)."""
    # Port 0 lets the OS pick: no race with another process grabbing a probed port.
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    return server, f"http://{host}:{port}"


def stop_moto(server: ThreadedMotoServer) -> None:
    server.stop()


def reset_moto(endpoint_url: str) -> None:
    """Wipe every moto backend (queues, tables, secrets)."""
    request = urllib.request.Request(f"{endpoint_url}/moto-api/reset", method="POST", data=b"")
    urllib.request.urlopen(request, timeout=10).close()


def aws_env(endpoint_url: str) -> dict[str, str]:
    """Environment variables that point boto3 (in the app or a subprocess) at moto."""
    return {
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_ENDPOINT_URL_SQS": endpoint_url,
        "AWS_ENDPOINT_URL_DYNAMODB": endpoint_url,
        # botocore derives the name from the service id "Secrets Manager".
        "AWS_ENDPOINT_URL_SECRETS_MANAGER": endpoint_url,
    }


def client(service: str, endpoint_url: str) -> Any:
    """A boto3 client for `service` on moto, independent of the process environment."""
    return boto3.client(
        service,
        endpoint_url=endpoint_url,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def create_queues(
    endpoint_url: str, name: str, max_receive_count: int = 3, visibility_timeout: int = 30,
    dead_letter_name: str | None = None, retention: int | None = None, dead_letter_retention: int = 1209600,
) -> tuple[str, str]:
    """Create the dead-letter queue (`<name>-dlq` unless named) and `<name>` redriving to it, as the AWS
    stack does; returns (queue_url, dlq_url). ``retention``: the retry queue's MessageRetentionPeriod in
    seconds (None: SQS's default, 4 days)."""
    sqs = client("sqs", endpoint_url)
    dlq_url = sqs.create_queue(QueueName=dead_letter_name or f"{name}-dlq",
                               Attributes={"MessageRetentionPeriod": str(dead_letter_retention)})["QueueUrl"]
    dlq_arn = _queue_arn(sqs, dlq_url)
    redrive = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(max_receive_count)}
    attributes = {"RedrivePolicy": json.dumps(redrive), "VisibilityTimeout": str(visibility_timeout)}
    if retention is not None:
        attributes["MessageRetentionPeriod"] = str(retention)
    queue_url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    return queue_url, dlq_url


def create_identity_table(endpoint_url: str, name: str) -> None:
    """The identity ledger table: partition key pk = "tenant#platform#platform_customer_id"."""
    dynamodb = client("dynamodb", endpoint_url)
    dynamodb.create_table(
        TableName=name,
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )


def queue_messages(endpoint_url: str, queue_url: str, max: int = 10) -> list[Any]:
    """Peek at up to `max` (<= 10) messages, returning JSON-parsed bodies (raw text if not JSON).

    VisibilityTimeout=0 leaves them visible, but a peek is still a receive: it
    raises ApproximateReceiveCount, which on a queue with a redrive policy moves
    messages towards the DLQ. Prefer queue_depth() on source queues.
    """
    sqs = client("sqs", endpoint_url)
    response = sqs.receive_message(
        QueueUrl=queue_url, MaxNumberOfMessages=min(max, 10), VisibilityTimeout=0, WaitTimeSeconds=0
    )
    return [_parse(message["Body"]) for message in response.get("Messages", [])]


def queue_depth(endpoint_url: str, queue_url: str) -> int:
    """Messages visible, in flight and delayed."""
    sqs = client("sqs", endpoint_url)
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
             "ApproximateNumberOfMessagesDelayed"]
    attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=names)["Attributes"]
    return sum(int(attributes.get(name, 0)) for name in names)


class LambdaSqsPoller:
    """Stands in for a Lambda SQS event source mapping with ReportBatchItemFailures.

    The handler gets the Lambda SQS event and returns the partial batch response.
    As in AWS: if it raises, or returns a malformed response, the whole batch
    fails and nothing is deleted (messages come back after the visibility timeout);
    otherwise every message not listed in batchItemFailures is deleted.
    """

    def __init__(
        self,
        queue_url: str,
        handler: LambdaHandler,
        batch_size: int = 10,
        endpoint_url: str | None = None,
    ):
        if not 1 <= batch_size <= 10:
            raise ValueError("batch_size must be 1..10 (one ReceiveMessage call per invocation)")
        if endpoint_url is None:
            raise ValueError("endpoint_url is required (the moto server URL)")
        self.queue_url = queue_url
        self.handler = handler
        self.batch_size = batch_size
        self.sqs = client("sqs", endpoint_url)
        self.queue_arn = _queue_arn(self.sqs, queue_url)
        self.invocations = 0
        self.deleted = 0
        self.failed = 0
        self.errors: list[BaseException] = []  # handler exceptions, kept for assertions

    def poll_once(self, wait_seconds: int = 0) -> int:
        """One receive + one invocation. Returns the number of records handled."""
        messages = self.sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=self.batch_size,
            WaitTimeSeconds=wait_seconds,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        if not messages:
            return 0
        event = {"Records": [self._record(message) for message in messages]}
        self.invocations += 1
        try:
            response = self.handler(event)
        except Exception as err:  # Lambda would log and retry the whole batch
            self.errors.append(err)
            self.failed += len(messages)
            return len(messages)
        failed_ids = _failed_ids(response, {m["MessageId"] for m in messages})
        if failed_ids is None:  # malformed response: complete failure
            self.failed += len(messages)
            return len(messages)
        to_delete = [m for m in messages if m["MessageId"] not in failed_ids]
        if to_delete:
            result = self.sqs.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(to_delete)],
            )
            # A delete can fail (e.g. receipt handle expired): that message comes back.
            self.deleted += len(result.get("Successful", []))
        self.failed += len(failed_ids)
        return len(messages)

    def drain(self, timeout: float = 10.0, idle_polls: int = 2) -> int:
        """Poll until `idle_polls` consecutive empty polls or `timeout`; returns records handled.

        Failed messages are invisible until their visibility timeout, so a drain
        normally ends before they come back.
        """
        deadline = time.monotonic() + timeout
        total, idle = 0, 0
        while idle < idle_polls and time.monotonic() < deadline:
            handled = self.poll_once(wait_seconds=0)
            total += handled
            if handled:
                idle = 0
            else:
                idle += 1
                time.sleep(0.05)
        return total

    def _record(self, message: dict[str, Any]) -> dict[str, Any]:
        return {
            "messageId": message["MessageId"],
            "receiptHandle": message["ReceiptHandle"],
            "body": message["Body"],
            "attributes": dict(message.get("Attributes", {})),
            "messageAttributes": {
                name: _lambda_attribute(value) for name, value in message.get("MessageAttributes", {}).items()
            },
            "md5OfBody": message["MD5OfBody"],
            "md5OfMessageAttributes": message.get("MD5OfMessageAttributes"),
            "eventSource": "aws:sqs",
            "eventSourceARN": self.queue_arn,
            "awsRegion": REGION,
        }


def _failed_ids(response: Any, batch_ids: set[str]) -> set[str] | None:
    """Item identifiers from a partial batch response; None when AWS would treat the
    response as malformed (whole batch failed)."""
    if response is None:
        return set()
    if not isinstance(response, dict):
        return None
    failures = response.get("batchItemFailures")
    if failures is None:
        return set()
    if not isinstance(failures, list):
        return None
    ids = set()
    for failure in failures:
        identifier = failure.get("itemIdentifier") if isinstance(failure, dict) else None
        if not isinstance(identifier, str) or identifier not in batch_ids:
            return None
        ids.add(identifier)
    return ids


def _lambda_attribute(value: dict[str, Any]) -> dict[str, Any]:
    # SQS API attribute (StringValue/BinaryValue/DataType) -> Lambda event shape.
    attribute: dict[str, Any] = {
        "stringListValues": [],
        "binaryListValues": [],
        "dataType": value["DataType"],
    }
    if "StringValue" in value:
        attribute["stringValue"] = value["StringValue"]
    if "BinaryValue" in value:
        attribute["binaryValue"] = base64.b64encode(value["BinaryValue"]).decode()
    return attribute


def _queue_arn(sqs: Any, queue_url: str) -> str:
    return sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]


def _parse(body: str) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return body
