"""``bridge_cli dlq redrive`` for each kind of dead letter: moved back to the retry queue, then imported by the
worker once its cause is fixed, and given a fresh retry horizon.

The tool runs in a subprocess, as an operator types it, against this test's queues on moto (through
``DEAD_LETTER_QUEUE_URL``, ``RETRY_QUEUE_URL`` and boto3's endpoint settings). moto has no
``StartMessageMoveTask``: the tool then moves the messages one by one, which is what is tested here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from chalicelib.connectors import get_connector
from chalicelib.connectors.base import WebhookRequest
from chalicelib.domain.retry_queue import DeadLetter, RetryJob
from sandbox.aws import aws_env, client, queue_depth
from sandbox.emulators.base import Fault
from tests.conftest import MEWS_ACCESS_TOKEN, MEWS_ENTERPRISE, ROOT, Bridge
from tests.test_mews import CUSTOMER_ID, add_customer, webhook


def redrive(bridge: Bridge) -> subprocess.CompletedProcess:
    """``python -m bridge_cli dlq redrive`` on this test's queues; the dead-letter queue is then empty."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
    environment.update(aws_env(bridge.endpoint), DEAD_LETTER_QUEUE_URL=bridge.dlq_url,
                       RETRY_QUEUE_URL=bridge.retry_url, COLUMNS="200")
    environment.pop("LOCAL_STACK_DIR", None)
    result = subprocess.run([sys.executable, "-m", "bridge_cli", "dlq", "redrive"], cwd=ROOT, env=environment,
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "moving the messages one by one" in result.stdout  # moto's fallback, not SQS's move task
    assert "Moved 1 message(s)" in result.stdout, result.stdout
    assert queue_depth(bridge.endpoint, bridge.dlq_url) == 0
    assert queue_depth(bridge.endpoint, bridge.retry_url) == 1
    return result


def dead_letters(bridge: Bridge) -> list[dict]:
    return [json.loads(m["Body"]) for m in client("sqs", bridge.endpoint).receive_message(
        QueueUrl=bridge.dlq_url, MaxNumberOfMessages=10, VisibilityTimeout=0).get("Messages", [])]


def imported_once(bridge: Bridge, api_key: str = "test-key") -> None:
    assert [customer["mewsId"] for customer in bridge.customers(api_key)] == [CUSTOMER_ID]
    assert bridge.fullwhere.import_count == 1
    assert queue_depth(bridge.endpoint, bridge.retry_url) == 0 and queue_depth(bridge.endpoint, bridge.dlq_url) == 0


def mews_job(tenant: str | None, **fields) -> RetryJob:
    """The job of a Mews CustomerAdded event, at its fetch stage."""
    body = json.dumps(webhook(("CustomerAdded", CUSTOMER_ID))).encode()
    event = get_connector("mews").parse(WebhookRequest("mews", body, {})).events[0]
    return RetryJob(platform="mews", tenant=tenant, event_id=event.event_id, stage="fetch", event=event.to_dict(),
                    **fields)


def put_dead_letter(bridge: Bridge, body: str) -> None:
    client("sqs", bridge.endpoint).send_message(QueueUrl=bridge.dlq_url, MessageBody=body)


def test_a_permanent_dead_letter_is_redriven_and_imported_once_its_cause_is_fixed(bridge):
    add_customer(bridge)
    # Fullwhere refuses the guest once (say a validation bug on its side, fixed since).
    bridge.fullwhere.faults.add(Fault("status", status=400, body='{"message":["email must be an email"]}'), times=1)
    assert bridge.send_mews(webhook(("CustomerAdded", CUSTOMER_ID))).status_code == 200
    [letter] = dead_letters(bridge)
    assert letter["kind"] == "permanent" and letter["job"]["stage"] == "import"

    redrive(bridge)
    bridge.drain()

    imported_once(bridge)


def test_an_exhausted_dead_letter_is_redriven_with_a_fresh_retry_horizon(bridge):
    """Dead-lettered after the horizon (1.8 s here). Redriven, it may fail once more without going straight
    back: its horizon starts again when it is read back."""
    bridge.configure(retry_horizon_hours=0.0005)
    add_customer(bridge)
    bridge.fullwhere.faults.always(Fault("status", status=503))
    assert bridge.send_mews(webhook(("CustomerAdded", CUSTOMER_ID))).status_code == 200
    bridge.drain()
    [letter] = dead_letters(bridge)
    assert letter["kind"] == "exhausted"
    first_seen = letter["job"]["first_seen"]
    assert time.time() - first_seen >= 0.0005 * 3600  # past the horizon as it stands

    redrive(bridge)
    bridge.fullwhere.faults.clear()
    bridge.fullwhere.faults.add(Fault("status", status=503), times=1)  # Fullwhere fails once more
    assert bridge.poller.poll_once() == 1

    assert queue_depth(bridge.endpoint, bridge.dlq_url) == 0  # retried, not exhausted again
    [job] = bridge.retry_jobs()
    assert job["first_seen"] > first_seen + 0.0005 * 3600 - 1  # a fresh horizon
    bridge.drain()
    imported_once(bridge)


def test_a_legacy_unrouted_dead_letter_is_redriven_and_routed_to_the_tenant_listing_it_now(bridge, tmp_path):
    """Before issue 12 an event no tenant owned was dead-lettered ``unrouted`` with no tenant. Once a tenant
    lists its account, the redriven job is routed by that account."""
    tenants = tmp_path / "tenants.json"
    tenants.write_text(json.dumps({"tenants": [{
        "id": "hotel-b", "fullwhere_api_key": "tenant-b-key", "fullwhere_api_secret": "tenant-b-secret",
        "platforms": {"mews": {"accounts": {MEWS_ENTERPRISE: {"access_token": MEWS_ACCESS_TOKEN}}}}}]}))
    bridge.configure(tenants_file=tenants)
    add_customer(bridge)
    job = mews_job(tenant=None, last_error="unrouted")
    put_dead_letter(bridge, DeadLetter(kind="unrouted", reason="unrouted", job=job).model_dump_json())

    redrive(bridge)
    bridge.drain()

    imported_once(bridge, "tenant-b-key")
    assert bridge.customers("test-key") == []


def test_a_poisoned_dead_letter_whose_raw_body_is_a_job_is_redriven_and_imported(bridge):
    """A message the worker once could not read is kept verbatim; redriven after the bug is fixed, the job
    inside is run."""
    add_customer(bridge)
    raw = mews_job(tenant="default").model_dump_json()
    put_dead_letter(bridge, DeadLetter(kind="poisoned", reason="unreadable retry job (ValidationError)",
                                       raw=raw).model_dump_json())

    redrive(bridge)
    bridge.drain()

    imported_once(bridge)
