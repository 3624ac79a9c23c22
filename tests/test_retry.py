"""Failures that heal are retried from the queue; failures that cannot are dead-lettered with a reason;
and when neither the import nor the queue works, the platform is told to deliver again."""

from __future__ import annotations

import json
from datetime import datetime

from sandbox.emulators.base import Fault
from tests.conftest import fixture_bytes, fixture_json
from tests.test_mews import CUSTOMER_ID, add_customer, webhook


def test_fullwhere_down_queues_the_job_and_the_worker_imports_it_after_recovery(bridge):
    add_customer(bridge)
    bridge.fullwhere.faults.always(Fault("status", status=503))

    response = bridge.send_mews(webhook(("CustomerAdded", CUSTOMER_ID)))

    assert response.status_code == 200  # acknowledged: the event is safe in the queue
    [job] = bridge.retry_jobs()
    assert job["stage"] == "import"  # the guest was fetched and mapped: resume at the import
    assert job["platform"] == "mews" and job["tenant"] == "default"
    assert job["attempt"] == 1 and "503" in job["last_error"]
    assert bridge.customers() == []

    bridge.fullwhere.faults.clear()
    calls_before = bridge.mews.get_customers_calls
    bridge.drain()

    [customer] = bridge.customers()
    assert customer["mewsId"] == CUSTOMER_ID
    assert bridge.mews.get_customers_calls == calls_before  # not fetched again
    assert bridge.retry_jobs() == [] and bridge.dead_letters() == []


def test_platform_api_down_queues_at_the_fetch_stage(bridge):
    bridge.uber.add_order(fixture_json("ubereats/order.json"))
    bridge.uber.faults.add(Fault("drop"), times=1, path="/v2/eats/order")

    assert bridge.send_ubereats(fixture_json("ubereats/orders_notification.json")).status_code == 200
    [job] = bridge.retry_jobs()
    assert job["stage"] == "fetch"

    bridge.drain()
    assert [c["ubereatsId"] for c in bridge.customers()] == ["63578c8b-9cd2-4c4f-91fc-315f575e6a78"]


def test_rate_limit_retry_after_is_honoured_as_the_backoff(bridge):
    add_customer(bridge)
    bridge.fullwhere.faults.add(Fault("status", status=503))
    bridge.send_mews(webhook(("CustomerAdded", CUSTOMER_ID)))
    bridge.fullwhere.faults.always(Fault("status", status=429, retry_after=120))

    assert bridge.poller.poll_once() == 1  # the worker tries, Fullwhere says 429
    assert bridge.poller.poll_once() == 0  # hidden for Retry-After, not redelivered at once
    assert bridge.retry_jobs() == []  # invisible, yet not lost:
    from sandbox.aws import queue_depth

    assert queue_depth(bridge.endpoint, bridge.retry_url) == 1


def test_rate_limit_met_inline_delays_the_first_retry(bridge):
    add_customer(bridge)
    bridge.fullwhere.faults.always(Fault("status", status=429, retry_after=120))
    bridge.send_mews(webhook(("CustomerAdded", CUSTOMER_ID)))

    assert bridge.poller.poll_once() == 0  # delayed by Retry-After, not delivered to the worker at once
    from sandbox.aws import client

    attributes = client("sqs", bridge.endpoint).get_queue_attributes(
        QueueUrl=bridge.retry_url, AttributeNames=["ApproximateNumberOfMessagesDelayed"])["Attributes"]
    assert attributes["ApproximateNumberOfMessagesDelayed"] == "1"


def test_permanent_fullwhere_rejection_is_dead_lettered_with_fullwhere_reason(bridge):
    add_customer(bridge)
    bridge.fullwhere.faults.add(Fault("status", status=400, body='{"message":["email must be an email"]}'), times=1)

    assert bridge.send_mews(webhook(("CustomerAdded", CUSTOMER_ID))).status_code == 200

    [letter] = bridge.dead_letters()
    assert letter["kind"] == "permanent"
    assert "400" in letter["reason"] and "email must be an email" in letter["reason"]
    assert letter["job"]["stage"] == "import"
    assert letter["job"]["payload"]["customer"]["mewsId"] == CUSTOMER_ID
    assert bridge.retry_jobs() == []


def test_fullwhere_down_and_sqs_unreachable_answers_503(bridge):
    add_customer(bridge)
    bridge.fullwhere.faults.always(Fault("status", status=502))
    bridge.configure(aws_endpoint_url_sqs="http://127.0.0.1:9")  # nothing listens on the discard port

    response = bridge.send_mews(webhook(("CustomerAdded", CUSTOMER_ID)))

    assert response.status_code == 503
    assert bridge.customers() == []


def test_sqs_unreachable_does_not_matter_when_the_import_succeeds(bridge):
    add_customer(bridge)
    bridge.configure(aws_endpoint_url_sqs="http://127.0.0.1:9")
    assert bridge.send_mews(webhook(("CustomerAdded", CUSTOMER_ID))).status_code == 200
    assert len(bridge.customers()) == 1


def test_a_failure_past_the_retry_horizon_is_dead_lettered_as_exhausted_with_the_last_error(bridge):
    """Retried (not dead-lettered) while the event is younger than RETRY_HORIZON_HOURS, then dead-lettered
    ``exhausted`` with its last error. The horizon is 1.8 s here, so the worker's retries outlast it."""
    horizon_hours = 0.0005
    bridge.configure(retry_horizon_hours=horizon_hours)
    add_customer(bridge)
    bridge.fullwhere.faults.always(Fault("status", status=500))
    bridge.send_mews(webhook(("CustomerAdded", CUSTOMER_ID)))

    bridge.drain()

    [letter] = bridge.dead_letters()
    assert letter["kind"] == "exhausted"
    assert "h after it was first seen (RETRY_HORIZON_HOURS)" in letter["reason"]
    assert "500" in letter["reason"]
    job = letter["job"]
    assert job["attempt"] >= 2  # retried by the worker before giving up
    given_up_at = datetime.fromisoformat(letter["dead_lettered_at"]).timestamp()
    assert given_up_at >= job["first_seen"] + horizon_hours * 3600 - 1  # not before the horizon (whole seconds)
    assert bridge.retry_jobs() == [] and bridge.customers() == []


def test_inline_budget_spent_defers_the_rest_to_the_queue(bridge):
    add_customer(bridge)
    bridge.configure(inline_budget_seconds="0.5")
    bridge.mews.faults.add(Fault("delay", seconds=1.5), times=1)

    response = bridge.send_mews(webhook(("CustomerAdded", CUSTOMER_ID)))

    assert response.status_code == 200
    [job] = bridge.retry_jobs()
    assert job["stage"] == "fetch" and "timed out" in job["last_error"]
    bridge.drain()
    assert len(bridge.customers()) == 1


def test_poisoned_message_is_dead_lettered_verbatim(bridge):
    from sandbox.aws import client

    client("sqs", bridge.endpoint).send_message(QueueUrl=bridge.retry_url, MessageBody="{not a job")
    bridge.drain()
    [letter] = bridge.dead_letters()
    assert letter["kind"] == "poisoned" and letter["raw"] == "{not a job"


def test_partial_batch_failure_reports_only_the_failing_record(bridge):
    """One batch with a healthy job and one whose platform API keeps failing: only the latter comes back."""
    add_customer(bridge)
    bridge.uber.add_order(fixture_json("ubereats/order.json"))
    bridge.fullwhere.faults.add(Fault("status", status=503), times=1)
    bridge.uber.faults.add(Fault("drop"), times=1, path="/v2/eats/order")
    bridge.send_mews(webhook(("CustomerAdded", CUSTOMER_ID)))
    bridge.send_ubereats(fixture_json("ubereats/orders_notification.json"))
    assert sorted(job["stage"] for job in bridge.retry_jobs()) == ["fetch", "import"]

    bridge.uber.faults.always(Fault("status", status=500))
    assert bridge.poller.poll_once() == 2
    assert [c["mewsId"] for c in bridge.customers()] == [CUSTOMER_ID]
    assert len(bridge.retry_jobs()) == 1
    bridge.uber.faults.clear()
    bridge.drain()
    assert len(bridge.customers()) == 2


def test_deliveroo_guest_ledger_failure_is_retried(bridge):
    bridge.configure(aws_endpoint_url_dynamodb="http://127.0.0.1:9")
    assert bridge.send_deliveroo(fixture_bytes("deliveroo/order_new_loyalty.json")).status_code == 200
    [job] = bridge.retry_jobs()
    assert "identity ledger unavailable" in job["last_error"]
    bridge.configure(aws_endpoint_url_dynamodb=bridge.endpoint)
    bridge.drain()
    assert [c["deliverooId"] for c in bridge.customers()] == ["loyalty:LOY-778899"]


def test_worker_hands_back_records_it_has_no_time_for(bridge):
    """Near the Lambda timeout, records are returned untouched instead of being cut off mid-import."""
    from chalicelib.handlers.retry_worker import handle_batch

    add_customer(bridge)
    bridge.fullwhere.faults.add(Fault("status", status=503), times=1)
    bridge.send_mews(webhook(("CustomerAdded", CUSTOMER_ID)))

    from sandbox.aws import client

    sqs = client("sqs", bridge.endpoint)
    messages = sqs.receive_message(QueueUrl=bridge.retry_url, AttributeNames=["All"])["Messages"]
    event = {"Records": [{"messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
                          "attributes": m["Attributes"]} for m in messages]}
    imports_before = len(bridge.fullwhere.requests_matching(path="/partners/customer"))
    assert handle_batch(event, remaining_ms=lambda: 2500) == {"batchItemFailures": [{"itemIdentifier": messages[0]["MessageId"]}]}
    assert len(bridge.fullwhere.requests_matching(path="/partners/customer")) == imports_before  # not attempted
    assert handle_batch(event, remaining_ms=lambda: 60_000) == {"batchItemFailures": []}
    assert len(bridge.customers()) == 1


def test_a_batch_is_processed_concurrently_and_exactly_the_failed_jobs_are_queued_again(bridge):
    """Ten jobs against a Fullwhere answering in 300 ms finish in far less than ten times that, and exactly
    the jobs that really failed are queued again, each as a new message (the batch reports no failure: every
    record is done, imported or replaced)."""
    import time as clock

    from chalicelib.handlers.retry_worker import handle_batch
    from sandbox.aws import client

    for index in range(10):
        add_customer(bridge, f"cust-{index}", Email=f"guest{index}@example.org", Phone=None)
    bridge.fullwhere.faults.always(Fault("status", status=503))
    for index in range(10):
        bridge.send_mews(webhook(("CustomerAdded", f"cust-{index}")))
    bridge.fullwhere.faults.clear()
    bridge.fullwhere.faults.add(Fault("status", status=500), times=3)  # three of the ten fail again
    bridge.fullwhere.latency = 0.3

    sqs = client("sqs", bridge.endpoint)
    messages = []
    while len(messages) < 10:
        messages += sqs.receive_message(QueueUrl=bridge.retry_url, MaxNumberOfMessages=10,
                                        AttributeNames=["All"])["Messages"]
    event = {"Records": [{"messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
                          "attributes": m["Attributes"]} for m in messages]}
    started = clock.monotonic()
    failures = handle_batch(event)["batchItemFailures"]
    elapsed = clock.monotonic() - started

    assert failures == [] and len(bridge.customers()) == 7
    sqs.delete_message_batch(QueueUrl=bridge.retry_url, Entries=[  # as Lambda does with a batch's done records
        {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)])
    imported = {c["mewsId"] for c in bridge.customers()}
    requeued = [json.loads(m["Body"]) for m in sqs.receive_message(
        QueueUrl=bridge.retry_url, MaxNumberOfMessages=10, VisibilityTimeout=0).get("Messages", [])]
    failed_jobs = {job["event"]["data"]["customer_id"] for job in requeued}
    assert len(requeued) == 3 and all(job["attempt"] == 2 and "500" in job["last_error"] for job in requeued)
    assert failed_jobs.isdisjoint(imported) and len(failed_jobs | imported) == 10
    assert elapsed < 1.5, f"10 records took {elapsed:.2f}s: not processed concurrently"


def test_dead_letters_moved_back_by_a_redrive_are_resumed(bridge):
    """A redrive moves dead letters back as they are: the worker resumes the job inside."""
    from sandbox.aws import client

    add_customer(bridge)
    bridge.fullwhere.faults.add(Fault("status", status=400, body="temporary validation bug"), times=1)
    bridge.send_mews(webhook(("CustomerAdded", CUSTOMER_ID)))
    sqs = client("sqs", bridge.endpoint)
    [message] = sqs.receive_message(QueueUrl=bridge.dlq_url)["Messages"]
    assert json.loads(message["Body"])["kind"] == "permanent"

    sqs.send_message(QueueUrl=bridge.retry_url, MessageBody=message["Body"])  # what the move task does
    sqs.delete_message(QueueUrl=bridge.dlq_url, ReceiptHandle=message["ReceiptHandle"])
    bridge.drain()

    assert [c["mewsId"] for c in bridge.customers()] == [CUSTOMER_ID]
    assert bridge.dead_letters() == []
