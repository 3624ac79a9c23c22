"""Imports in doubt: a guest without email or phone whose import went out and whose answer was lost.

Fullwhere cannot merge such a guest, so importing it again after an import that did land would make a
second customer. The ledger keeps the claim ``in_doubt``, and the retry worker looks for the guest in
Fullwhere's customer list (after ``IN_DOUBT_SETTLE_SECONDS``) before importing it again. All of it over
real HTTP (the Fullwhere emulator, faults included) and moto's SQS and DynamoDB.
"""

from __future__ import annotations

import json
import time
from collections import Counter

import httpx
import pytest

from chalicelib.core.errors import BridgeError, OutcomeUnknown, PermanentError, RetryableError
from chalicelib.domain.fullwhere.client import list_items
from chalicelib.domain.identity import Claim, InDoubt, KnownGuest
from chalicelib.infra.http import Deadline, raise_for_status, send
from sandbox import aws as local_aws
from sandbox.emulators.base import Fault
from sandbox.scenarios import closed_port
from tests.conftest import fixture_bytes

LOYALTY = "loyalty:LOY-778899"  # the diner of deliveroo/order_new_loyalty.json: no email, relay phone only
LEDGER_KEY = f"default#deliveroo#{LOYALTY}"
LIST_PATH = "/partners/customer/list"


def settle_queue(bridge, timeout: float = 20.0) -> None:
    """Run the worker until the retry queue is empty, backoffs included (a drain stops at the first wait)."""
    # Empty twice, 1.5 s apart: a job delayed by a second (the settle time rounded up) may not be counted
    # yet by moto's attributes when the machine is loaded.
    end, empty_since = time.monotonic() + timeout, None
    while time.monotonic() < end:
        bridge.drain(timeout=2)
        if local_aws.queue_depth(bridge.endpoint, bridge.retry_url) == 0:
            empty_since = empty_since or time.monotonic()
            if time.monotonic() - empty_since >= 1.5:
                return
        else:
            empty_since = None
        time.sleep(0.1)
    raise AssertionError("the retry queue did not empty")


def loyalty_customers(bridge) -> Counter:
    return Counter(customer["deliverooId"] for customer in bridge.customers() if customer["deliverooId"])


def log_lines(capsys) -> list[dict]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"ts"')]


def ledger_item(bridge) -> dict:
    from chalicelib.infra.settings import get_settings

    dynamodb = local_aws.client("dynamodb", bridge.endpoint)
    item = dynamodb.get_item(TableName=get_settings().identity_table, Key={"pk": {"S": LEDGER_KEY}})["Item"]
    return {name: next(iter(value.values())) for name, value in item.items()}


def list_calls(bridge) -> int:
    return len(bridge.fullwhere.requests_matching("POST", LIST_PATH))


def test_contactless_guest_whose_import_lands_after_a_timeout_is_imported_once(bridge, capsys):
    # 150 customers already: the late import is the 151st, on the list's second page.
    for n in range(150):
        bridge.fullwhere.add_customer("test-key", email=f"guest{n}@example.org")
    bridge.configure(inline_budget_seconds="1", worker_call_timeout_seconds="1", in_doubt_settle_seconds="2")
    # Whichever call meets the slow answer (inline, or the worker's) times out; Fullwhere stores it after.
    bridge.fullwhere.faults.add(Fault("delay", seconds=1.8))
    assert bridge.send_deliveroo(fixture_bytes("deliveroo/order_new_loyalty.json")).status_code == 200
    settle_queue(bridge)

    assert loyalty_customers(bridge) == {LOYALTY: 1}
    assert bridge.fullwhere.import_count == 1  # the late one; never sent again
    assert list_calls(bridge) == 2
    [landed] = [line for line in log_lines(capsys) if line.get("reason") == "earlier_import_landed"]
    [customer] = bridge.fullwhere.find("test-key", deliverooId=LOYALTY)
    assert landed["outcome"] == "imported" and landed["customer_id"] == customer["id"]
    item = ledger_item(bridge)
    assert item["state"] == "imported" and item["customer_id"] == customer["id"]
    assert "claim" not in item and "doubted_at" not in item
    # The next order of the same diner is a duplicate, as for any known guest.
    assert bridge.send_deliveroo(fixture_bytes("deliveroo/order_new_loyalty.json")).status_code == 200
    assert bridge.fullwhere.import_count == 1 and bridge.retry_jobs() == []


@pytest.mark.parametrize("fault", [Fault("status", status=500), Fault("status", status=502), Fault("drop")],
                         ids=["500", "502", "dropped"])
def test_contactless_import_whose_answer_is_lost_is_looked_up_then_imported_once(bridge, capsys, fault):
    bridge.configure(in_doubt_settle_seconds="0.5")
    bridge.fullwhere.faults.add(fault)  # these do not store the guest
    assert bridge.send_deliveroo(fixture_bytes("deliveroo/order_new_loyalty.json")).status_code == 200
    assert ledger_item(bridge)["state"] == "in_doubt"
    settle_queue(bridge)

    assert loyalty_customers(bridge) == {LOYALTY: 1}
    assert list_calls(bridge) == 1
    lines = log_lines(capsys)
    assert any(line["outcome"] == "queued" and line["reason"].endswith("the import is in doubt") for line in lines)
    assert any(line["outcome"] == "imported" and line.get("reason") == "earlier_import_had_not_landed" for line in lines)
    assert ledger_item(bridge)["state"] == "imported"
    assert bridge.dead_letters() == []


@pytest.mark.parametrize("fault", [Fault("status", status=503), Fault("status", status=429, retry_after=0)],
                         ids=["503", "429"])
def test_refused_contactless_import_is_retried_without_a_lookup(bridge, fault):
    bridge.fullwhere.faults.add(fault)
    assert bridge.send_deliveroo(fixture_bytes("deliveroo/order_new_loyalty.json")).status_code == 200
    assert ledger_item(bridge)["state"] == "released"
    settle_queue(bridge)
    assert loyalty_customers(bridge) == {LOYALTY: 1}
    assert list_calls(bridge) == 0


def test_nothing_is_read_or_sent_again_before_the_import_in_doubt_settles(bridge, capsys):
    bridge.configure(in_doubt_settle_seconds="30")
    bridge.fullwhere.faults.add(Fault("status", status=500))
    bridge.send_deliveroo(fixture_bytes("deliveroo/order_new_loyalty.json"))
    bridge.send_deliveroo(fixture_bytes("deliveroo/order_new_loyalty.json"))  # delivered again meanwhile
    assert bridge.drain(timeout=1) == 0  # both wait in the queue for the doubt to settle

    first, again = [line for line in log_lines(capsys) if line["outcome"] == "queued"]
    assert first["reason"].endswith("the import is in doubt")
    assert "checked once it has settled" in again["reason"]
    assert list_calls(bridge) == 0 and bridge.fullwhere.import_count == 0
    attributes = local_aws.client("sqs", bridge.endpoint).get_queue_attributes(
        QueueUrl=bridge.retry_url, AttributeNames=["ApproximateNumberOfMessagesDelayed"])["Attributes"]
    assert attributes["ApproximateNumberOfMessagesDelayed"] == "2"  # waiting, not lost


def test_claim_of_a_holder_that_died_mid_import_is_checked_not_imported_again(bridge, capsys):
    """A Lambda killed during the import leaves its claim ``importing``; after STALE_CLAIM_SECONDS it is in
    doubt like a lost answer. Its import had landed here: the new order finds it, inline never reads the list."""
    from chalicelib.domain.identity import STALE_CLAIM_SECONDS
    from chalicelib.infra.settings import get_settings

    table = get_settings().identity_table
    local_aws.client("dynamodb", bridge.endpoint).put_item(TableName=table, Item={
        "pk": {"S": LEDGER_KEY}, "state": {"S": "importing"}, "claim": {"S": "dead-holder"},
        "claimed_at": {"N": repr(time.time() - STALE_CLAIM_SECONDS - 60)}, "pending_fingerprint": {"S": "fp-then"}})
    landed = bridge.fullwhere.add_customer("test-key", deliverooId=LOYALTY, firstName="Sam")

    assert bridge.send_deliveroo(fixture_bytes("deliveroo/order_new_loyalty.json")).status_code == 200
    assert list_calls(bridge) == 0  # a platform is waiting: the lookup is the worker's
    [queued] = [line for line in log_lines(capsys) if line["outcome"] == "queued"]
    assert "checked from the retry queue" in queued["reason"]
    settle_queue(bridge)

    assert loyalty_customers(bridge) == {LOYALTY: 1} and bridge.fullwhere.import_count == 0
    item = ledger_item(bridge)
    assert (item["state"], item["customer_id"], item["fingerprint"]) == ("imported", landed["id"], "fp-then")


def test_unreadable_customer_list_dead_letters_the_guest_and_imports_nothing(bridge):
    bridge.configure(in_doubt_settle_seconds="0")
    bridge.fullwhere.faults.add(Fault("status", status=500))
    bridge.fullwhere.faults.always(Fault("malformed", body='{"rows": "not a list"}'), path=LIST_PATH)
    bridge.send_deliveroo(fixture_bytes("deliveroo/order_new_loyalty.json"))
    settle_queue(bridge)

    assert loyalty_customers(bridge) == {}
    [letter] = bridge.dead_letters()
    assert letter["kind"] == "permanent" and "shape the bridge cannot read" in letter["reason"]
    assert letter["job"]["stage"] == "import"  # redrivable once the list is readable
    assert ledger_item(bridge)["state"] == "in_doubt"


def test_a_list_longer_than_one_invocation_is_read_over_several_without_starting_over(bridge):
    from chalicelib.handlers.retry_worker import handle_batch

    for n in range(250):  # three pages; the late import is the 251st customer, on the third
        bridge.fullwhere.add_customer("test-key", email=f"guest{n}@example.org")
    bridge.configure(inline_budget_seconds="1", in_doubt_settle_seconds="2")
    bridge.fullwhere.faults.add(Fault("delay", seconds=1.8))
    assert bridge.send_deliveroo(fixture_bytes("deliveroo/order_new_loyalty.json")).status_code == 200
    bridge.fullwhere.latency = 0.5  # a page takes 0.5 s, and each invocation has 1.3 s left
    short_lived = local_aws.LambdaSqsPoller(bridge.retry_url, lambda event: handle_batch(event, lambda: 4300),
                                            endpoint_url=bridge.endpoint)
    end = time.monotonic() + 30
    while local_aws.queue_depth(bridge.endpoint, bridge.retry_url) and time.monotonic() < end:
        short_lived.drain(timeout=2)

    assert loyalty_customers(bridge) == {LOYALTY: 1} and bridge.fullwhere.import_count == 1
    pages = [request.body["page"] for request in bridge.fullwhere.requests_matching("POST", LIST_PATH)]
    assert pages == sorted(pages) and pages[-1] == 3 and pages.count(1) == 1  # resumed, never restarted
    assert short_lived.invocations >= 2 and bridge.dead_letters() == []


def test_a_lookup_resumes_only_the_read_of_the_same_doubt(bridge):
    from chalicelib.domain.tenants import get_directory
    from chalicelib.flow.pipeline import _fullwhere, _look_up
    from chalicelib.infra.settings import get_settings

    target = bridge.fullwhere.add_customer("test-key", deliverooId=LOYALTY)  # first customer: page 1
    for n in range(250):
        bridge.fullwhere.add_customer("test-key", email=f"guest{n}@example.org")
    settings = get_settings()
    fullwhere = _fullwhere(get_directory().get("default"), settings)
    doubt = InDoubt(holder="claim-now", key=LEDGER_KEY, since=0)

    def look_up(progress: dict) -> dict | None:
        payload = {"lookup": progress}
        found = _look_up(fullwhere, "deliverooId", LOYALTY, doubt, settings, Deadline(10), payload)
        assert "lookup" not in payload  # a finished read leaves no progress behind
        return found

    assert look_up({"doubt": "claim-now", "page": 3}) is None  # resumed at page 3: page 1 is not read again
    assert look_up({"doubt": "an-older-claim", "page": 3})["id"] == target["id"]  # another doubt: from page 1


def test_garbled_customer_list_is_read_again(bridge):
    bridge.configure(in_doubt_settle_seconds="0")
    bridge.fullwhere.faults.add(Fault("status", status=500))
    bridge.fullwhere.faults.add(Fault("malformed"), path=LIST_PATH)  # a 200 that is not JSON, once
    bridge.send_deliveroo(fixture_bytes("deliveroo/order_new_loyalty.json"))
    settle_queue(bridge)
    assert loyalty_customers(bridge) == {LOYALTY: 1} and bridge.dead_letters() == []
    assert list_calls(bridge) == 2


def test_customer_list_longer_than_the_limit_dead_letters_the_guest(bridge):
    for n in range(100):
        bridge.fullwhere.add_customer("test-key", email=f"guest{n}@example.org")
    bridge.configure(in_doubt_settle_seconds="0", fullwhere_list_max_pages="1")
    bridge.fullwhere.faults.add(Fault("drop"))
    bridge.send_deliveroo(fixture_bytes("deliveroo/order_new_loyalty.json"))
    settle_queue(bridge)

    assert loyalty_customers(bridge) == {}
    [letter] = bridge.dead_letters()
    assert letter["kind"] == "permanent" and "FULLWHERE_LIST_MAX_PAGES" in letter["reason"]


def test_guest_with_an_email_is_never_looked_up(bridge):
    """Fullwhere merges on email/phone: a lost answer is simply retried."""
    from tests.test_mews import CUSTOMER_ID, add_customer, webhook

    bridge.configure(in_doubt_settle_seconds="0")
    add_customer(bridge)
    bridge.fullwhere.faults.add(Fault("status", status=500))
    assert bridge.send_mews(webhook(("CustomerAdded", CUSTOMER_ID))).status_code == 200
    settle_queue(bridge)
    assert len(bridge.customers()) == 1 and list_calls(bridge) == 0


# -- the pieces, one by one ------------------------------------------------------------------------

def test_ledger_settles_a_doubt_once(ledger):
    claim = ledger.claim("default#ubereats#eater-9", "fp1")
    ledger.doubt(claim)
    doubt = ledger.claim("default#ubereats#eater-9", "fp2")
    assert isinstance(doubt, InDoubt) and doubt.holder == claim.token and 0 <= doubt.age() < 5
    retaken = ledger.retake(doubt, "fp2")
    assert isinstance(retaken, Claim) and retaken.token != claim.token
    # A second delivery that saw the same doubt loses: the guest is being imported by the first.
    with pytest.raises(RetryableError, match="concurrent"):
        ledger.retake(doubt, "fp2")
    with pytest.raises(RetryableError, match="concurrent"):
        ledger.landed(doubt, "customer-1")
    ledger.record(retaken, "fp2", "customer-2")
    assert ledger.claim("default#ubereats#eater-9", "fp2") == KnownGuest(customer_id="customer-2", unchanged=True)


def test_ledger_records_a_landed_doubt_as_what_was_sent_then(ledger):
    claim = ledger.claim("default#ubereats#eater-10", "sent-then")
    ledger.doubt(claim)
    doubt = ledger.claim("default#ubereats#eater-10", "sent-now")
    ledger.landed(doubt, "customer-7")
    assert ledger.claim("default#ubereats#eater-10", "sent-then") == KnownGuest(customer_id="customer-7", unchanged=True)


def test_a_doubt_written_by_hand_without_its_fingerprint_still_settles(bridge, ledger):
    from chalicelib.infra.settings import get_settings

    local_aws.client("dynamodb", bridge.endpoint).put_item(TableName=get_settings().identity_table, Item={
        "pk": {"S": "default#ubereats#eater-12"}, "state": {"S": "in_doubt"}, "claim": {"S": "by-hand"},
        "doubted_at": {"N": "0"}})
    ledger.landed(ledger.claim("default#ubereats#eater-12", "fp"), "customer-8")
    assert ledger.claim("default#ubereats#eater-12", "fp") == KnownGuest(customer_id="customer-8", unchanged=False)


def test_doubt_of_a_claim_taken_over_changes_nothing(ledger):
    claim = ledger.claim("default#ubereats#eater-11", "fp")
    ledger.release(claim)
    ledger.doubt(claim)  # not ours any more: no effect, no error
    assert isinstance(ledger.claim("default#ubereats#eater-11", "fp"), Claim)


def test_only_lost_answers_are_outcome_unknown(bridge):
    fullwhere = bridge.fullwhere
    deadline = Deadline(5, call_timeout=0.5)
    url = fullwhere.url + "/partners/customer"

    def classify(fault: Fault | None = None, target: str = url) -> type:
        if fault:
            fullwhere.faults.add(fault)
        try:
            raise_for_status(send("POST", target, deadline, what="Fullwhere", json={}), "Fullwhere")
        except BridgeError as exc:
            return type(exc)
        return type(None)

    assert classify(Fault("delay", seconds=1.5)) is OutcomeUnknown  # read timeout
    assert classify(Fault("drop")) is OutcomeUnknown
    for status in (500, 502, 504):
        assert classify(Fault("status", status=status)) is OutcomeUnknown, status
    for status in (503, 429, 408):
        assert classify(Fault("status", status=status)) is RetryableError, status
    assert classify(Fault("status", status=400)) is PermanentError
    closed = httpx.URL(url).copy_with(port=closed_port())
    assert classify(target=str(closed)) is RetryableError  # connection refused: nothing was sent


def test_stretched_deadline_is_the_invocations_room_and_none_inline():
    assert Deadline(1).stretched() is None
    room = Deadline(1, room=30).stretched()
    assert room is not None and 29 < room.remaining() <= 30
    assert Deadline(5, room=2).stretched().remaining() > 4  # never shorter than the budget itself


@pytest.mark.parametrize("body, expected", [
    ([{"id": "a"}], [{"id": "a"}]),
    ({"data": [{"id": "a"}], "total": 1}, [{"id": "a"}]),
    ({"items": []}, []),
    ({"customers": [{"id": "b"}]}, [{"id": "b"}]),
    ({"results": [{"id": "c"}], "data": "not a list"}, [{"id": "c"}]),
    ({"rows": [{"id": "a"}]}, None),
    ([1, 2], None),
    (None, None),
    ("text", None),
])
def test_list_items_reads_the_known_envelopes_only(body, expected):
    assert list_items(body) == expected
