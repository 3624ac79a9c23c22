"""Issue 12: a failure that is not the event's fault is held, never dead-lettered.

A refused key (Fullwhere's 401 or 403, a platform API refusing the bridge's credentials), a credential not
configured, an account no tenant lists yet: the webhook answers the platform's acknowledgement, the event waits
on the retry queue, a ``held`` line says why (``reason``, a metric dimension: HeldAlarm fires on it), and fixing
the configuration is the only step: the next drain imports the event, once. Also how the worker hands a job
back: a record it has no time for comes back after a delay, and a held job's retry is a new message, so that
SQS's redrive policy (maxReceiveCount) never moves a job held for days."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from chalicelib.handlers import retry_worker
from sandbox.aws import LambdaSqsPoller, client, queue_depth
from sandbox.emulators.base import Fault
from tests.conftest import (
    FULLWHERE_KEY,
    FULLWHERE_SECRET,
    MEWS_ACCESS_TOKEN,
    MEWS_ENTERPRISE,
    UBER_CLIENT_ID,
    Bridge,
    fixture_json,
)
from tests.support.log_leaks import bridge_log_lines
from tests.test_mews import CUSTOMER_ID, add_customer, webhook

UBER_ORDER = "63578c8b-9cd2-4c4f-91fc-315f575e6a78"  # fixtures ubereats/order.json and orders_notification.json
REVOKED_KEY, REVOKED_SECRET = "holds-revoked-key", "holds-revoked-secret-3b7e"


def logged(capsys) -> list[dict]:
    """The bridge's log and EMF metric lines written since the last read (an EMF line has no ``level``)."""
    return [json.loads(line) for line in bridge_log_lines(capsys.readouterr().out)]


def held_lines(lines: list[dict], reason: str) -> list[dict]:
    return [line for line in lines if line["outcome"] == "held" and "level" in line and line["reason"] == reason]


def held_counted(lines: list[dict], reason: str) -> int:
    """``Events`` of the EMF lines counting ``held`` for ``reason`` (the dimension HeldAlarm's metric sums)."""
    return sum(line.get("Events", 0) for line in lines
               if line["outcome"] == "held" and "level" not in line and line.get("reason") == reason)


def depths(bridge: Bridge) -> tuple[int, int]:
    return queue_depth(bridge.endpoint, bridge.retry_url), queue_depth(bridge.endpoint, bridge.dlq_url)


# -- each cause: held, then imported once it is fixed --------------------------------------------------

@dataclass
class Cause:
    reason: str  # the held line's reason
    stage: str  # where the job waits
    break_it: Callable[[Bridge, pytest.MonkeyPatch, object], None]
    send: Callable[[Bridge], object]
    fix: Callable[[Bridge, object], None]
    imported: Callable[[Bridge], list[str]]  # the platform ids of the customers where the event must land
    expected: str


def send_mews(bridge: Bridge):
    add_customer(bridge)
    return bridge.send_mews(webhook(("CustomerAdded", CUSTOMER_ID)))


def send_uber(bridge: Bridge):
    bridge.uber.add_order(fixture_json("ubereats/order.json"))
    return bridge.send_ubereats(fixture_json("ubereats/orders_notification.json"))


def mews_ids(api_key: str = FULLWHERE_KEY) -> Callable[[Bridge], list[str]]:
    return lambda bridge: [customer["mewsId"] for customer in bridge.customers(api_key)]


def revoke_fullwhere_key(bridge: Bridge, monkeypatch, tmp_path) -> None:
    # The bridge's own key, which Fullwhere then revokes: every import answers 401.
    monkeypatch.setitem(bridge.fullwhere.accounts, REVOKED_KEY, REVOKED_SECRET)
    bridge.configure(fullwhere_api_key=REVOKED_KEY, fullwhere_api_secret=REVOKED_SECRET)
    del bridge.fullwhere.accounts[REVOKED_KEY]


def tenants_document(path, enterprise: str) -> None:
    path.write_text(json.dumps({"tenants": [{
        "id": "hotel-b", "fullwhere_api_key": "tenant-b-key", "fullwhere_api_secret": "tenant-b-secret",
        "platforms": {"mews": {"accounts": {enterprise: {"access_token": MEWS_ACCESS_TOKEN}}}}}]}))


def unlisted_enterprise(bridge: Bridge, monkeypatch, tmp_path) -> None:
    tenants_document(tmp_path / "tenants.json", "another-enterprise")
    bridge.configure(tenants_file=tmp_path / "tenants.json")


def list_the_enterprise(bridge: Bridge, tmp_path) -> None:
    tenants_document(tmp_path / "tenants.json", MEWS_ENTERPRISE)
    bridge.configure()  # the bridge reads the tenants document again


CAUSES = [
    pytest.param(Cause(
        "credentials_rejected", "import", revoke_fullwhere_key, send_mews,
        # A new key is issued and set in the settings.
        lambda bridge, _: bridge.configure(fullwhere_api_key=FULLWHERE_KEY, fullwhere_api_secret=FULLWHERE_SECRET),
        mews_ids(), CUSTOMER_ID), id="fullwhere-401-revoked-key"),
    pytest.param(Cause(
        "credentials_rejected", "import",
        lambda bridge, monkeypatch, _: bridge.fullwhere.faults.always(Fault("status", status=403)), send_mews,
        lambda bridge, _: bridge.fullwhere.faults.clear(), mews_ids(), CUSTOMER_ID), id="fullwhere-403"),
    pytest.param(Cause(
        # Uber's token endpoint refuses the app's client id (the webhook, signed with the secret, still verifies).
        "credentials_rejected", "fetch",
        lambda bridge, monkeypatch, _: bridge.configure(ubereats_client_id="uber-client-mistyped"), send_uber,
        lambda bridge, _: bridge.configure(ubereats_client_id=UBER_CLIENT_ID),
        lambda bridge: [customer["ubereatsId"] for customer in bridge.customers()], UBER_ORDER),
        id="uber-token-endpoint-401"),
    pytest.param(Cause(
        "not_configured", "fetch",
        lambda bridge, monkeypatch, _: bridge.configure(mews_access_token=None), send_mews,
        lambda bridge, _: bridge.configure(mews_access_token=MEWS_ACCESS_TOKEN), mews_ids(), CUSTOMER_ID),
        id="mews-access-token-not-configured"),
    pytest.param(Cause(
        "unrouted", "fetch", unlisted_enterprise, send_mews, list_the_enterprise, mews_ids("tenant-b-key"),
        CUSTOMER_ID), id="enterprise-no-tenant-lists-yet"),
]


@pytest.mark.parametrize("cause", CAUSES)
def test_a_held_event_is_acknowledged_waits_on_the_retry_queue_and_is_imported_once_fixed(
        bridge, monkeypatch, tmp_path, capsys, cause):
    cause.break_it(bridge, monkeypatch, tmp_path)
    capsys.readouterr()

    response = cause.send(bridge)

    assert response.status_code == 200  # the platform's acknowledgement: the event is safe
    assert depths(bridge) == (1, 0)  # on the retry queue, not the dead-letter queue
    [job] = bridge.retry_jobs()
    assert job["stage"] == cause.stage
    lines = logged(capsys)
    [held] = held_lines(lines, cause.reason)
    assert held["level"] == "INFO" and held["detail"] and held["event_id"] == job["event_id"]
    assert held_counted(lines, cause.reason) == 1
    assert not any(line["outcome"] == "dead_lettered" for line in lines)

    # Until it is fixed, every attempt of the worker holds it again.
    assert bridge.poller.poll_once() == 1
    assert held_lines(logged(capsys), cause.reason)
    assert depths(bridge) == (1, 0) and cause.imported(bridge) == []

    cause.fix(bridge, tmp_path)
    bridge.drain()

    assert cause.imported(bridge) == [cause.expected]
    assert bridge.fullwhere.import_count == 1  # imported exactly once
    assert depths(bridge) == (0, 0)
    assert not any(line["outcome"] == "dead_lettered" for line in logged(capsys))


def test_the_unrouted_hold_is_routed_by_its_account_once_a_tenant_lists_it(bridge, tmp_path, capsys):
    """The job of an unrouted event names no tenant: the worker routes it again by its account on each attempt,
    so it lands in the account of the tenant that now lists it (and its log lines say which)."""
    unlisted_enterprise(bridge, None, tmp_path)
    assert send_mews(bridge).status_code == 200
    [job] = bridge.retry_jobs()
    assert job["tenant"] is None and job["event"]["account_id"] == MEWS_ENTERPRISE

    list_the_enterprise(bridge, tmp_path)
    capsys.readouterr()
    bridge.drain()

    [imported] = [line for line in logged(capsys) if line["outcome"] in ("imported", "merged") and "level" in line]
    assert imported["tenant"] == "hotel-b"
    assert mews_ids("tenant-b-key")(bridge) == [CUSTOMER_ID] and bridge.customers() == []


# -- how the worker hands a job back --------------------------------------------------------------------

def received(bridge: Bridge, wait: int = 0) -> list[dict]:
    return client("sqs", bridge.endpoint).receive_message(
        QueueUrl=bridge.retry_url, MaxNumberOfMessages=10, AttributeNames=["All"], WaitTimeSeconds=wait,
    ).get("Messages", [])


def as_lambda_event(messages: list[dict]) -> dict:
    return {"Records": [{"messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
                         "attributes": m["Attributes"]} for m in messages]}


def test_a_record_the_worker_has_no_time_for_comes_back_after_a_delay_not_at_once(bridge, monkeypatch):
    """Handed back at once, a record would meet the next invocation with no time either and go round; left
    alone, it would wait the whole visibility timeout (30 s here). It comes back after NO_TIME_DELAY_SECONDS."""
    assert retry_worker.NO_TIME_DELAY_SECONDS >= 1
    monkeypatch.setattr(retry_worker, "NO_TIME_DELAY_SECONDS", 2)  # the real 10 s, shortened for the test
    add_customer(bridge)
    bridge.fullwhere.faults.add(Fault("status", status=503), times=1)
    assert bridge.send_mews(webhook(("CustomerAdded", CUSTOMER_ID))).status_code == 200
    [message] = received(bridge)
    imports = len(bridge.fullwhere.requests_matching(path="/partners/customer"))

    no_time = (retry_worker.LAMBDA_SAFETY_SECONDS + 0.5) * 1000  # under LAMBDA_SAFETY_SECONDS + 1 s left
    answer = retry_worker.handle_batch(as_lambda_event([message]), remaining_ms=lambda: no_time)
    handed_back = time.monotonic()

    assert answer == {"batchItemFailures": [{"itemIdentifier": message["MessageId"]}]}
    assert len(bridge.fullwhere.requests_matching(path="/partners/customer")) == imports  # not attempted
    assert received(bridge) == []  # not visible again at once
    again = []
    while not again and time.monotonic() - handed_back < 10:
        again = received(bridge, wait=1)
    assert again, "the record did not come back"
    waited = time.monotonic() - handed_back
    assert 1 <= waited < 10, f"came back after {waited:.1f} s"
    [back] = again
    assert back["MessageId"] == message["MessageId"] and back["Body"] == message["Body"]  # as it was

    client("sqs", bridge.endpoint).change_message_visibility(
        QueueUrl=bridge.retry_url, ReceiptHandle=back["ReceiptHandle"], VisibilityTimeout=0)
    bridge.drain()
    assert [customer["mewsId"] for customer in bridge.customers()] == [CUSTOMER_ID]
    assert depths(bridge) == (0, 0)


def test_a_held_jobs_retry_is_a_new_message_so_its_receive_count_stays_1(bridge, tmp_path):
    """More attempts than the queue's maxReceiveCount (5 here): each one is a new message, received once, so
    the redrive policy never moves the held job to the dead-letter queue."""
    unlisted_enterprise(bridge, None, tmp_path)
    assert send_mews(bridge).status_code == 200
    seen: list[tuple[str, str, int]] = []

    def worker(event: dict):
        for record in event["Records"]:
            seen.append((record["messageId"], record["attributes"]["ApproximateReceiveCount"],
                         json.loads(record["body"])["attempt"]))
        return bridge.invoke_worker(event)

    poller = LambdaSqsPoller(bridge.retry_url, worker, endpoint_url=bridge.endpoint)
    for _ in range(7):
        assert poller.poll_once() == 1
    assert poller.failed == 0 and poller.deleted == 7  # every record answered done: replaced, not handed back

    assert [count for _, count, _ in seen] == ["1"] * 7
    assert len({message_id for message_id, _, _ in seen}) == 7
    assert [attempt for _, _, attempt in seen] == list(range(7))  # the job counts its attempts itself
    assert depths(bridge) == (1, 0)

    list_the_enterprise(bridge, tmp_path)
    bridge.drain()
    assert mews_ids("tenant-b-key")(bridge) == [CUSTOMER_ID]
    assert depths(bridge) == (0, 0)
