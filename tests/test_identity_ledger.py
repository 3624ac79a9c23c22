"""The identity ledger against DynamoDB (moto's server): claims are exclusive, imports are recorded once."""

from __future__ import annotations

import threading

import pytest

from chalicelib.errors import RetryableError
from chalicelib.identity import Claim, IdentityLedger, KnownGuest


@pytest.fixture
def ledger(bridge):
    from chalicelib.settings import get_settings

    return IdentityLedger(get_settings().identity_table)


def test_first_claim_wins_and_a_concurrent_one_must_retry(ledger):
    first = ledger.claim("default#ubereats#eater-1", "fp1")
    assert isinstance(first, Claim)
    with pytest.raises(RetryableError, match="concurrent"):
        ledger.claim("default#ubereats#eater-1", "fp1")


def test_recorded_guest_is_known_and_unchanged_or_changed(ledger):
    claim = ledger.claim("default#ubereats#eater-2", "fp1")
    ledger.record(claim, "fp1", "customer-42")
    assert ledger.claim("default#ubereats#eater-2", "fp1") == KnownGuest(customer_id="customer-42", unchanged=True)
    assert ledger.claim("default#ubereats#eater-2", "fp2") == KnownGuest(customer_id="customer-42", unchanged=False)


def test_released_claim_can_be_taken_again(ledger):
    claim = ledger.claim("default#mews#m-1", "fp")
    ledger.release(claim)
    assert isinstance(ledger.claim("default#mews#m-1", "fp"), Claim)


def test_only_one_of_many_simultaneous_claims_succeeds(ledger):
    results: list[object] = []

    def attempt():
        try:
            results.append(ledger.claim("default#deliveroo#loyalty:1", "fp"))
        except RetryableError as exc:
            results.append(exc)

    threads = [threading.Thread(target=attempt) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(isinstance(r, Claim) for r in results) == 1
    assert sum(isinstance(r, RetryableError) for r in results) == 7


def test_unreachable_dynamodb_is_retryable(bridge):
    bridge.configure(aws_endpoint_url_dynamodb="http://127.0.0.1:9")
    from chalicelib.settings import get_settings

    with pytest.raises(RetryableError, match="identity ledger unavailable"):
        IdentityLedger(get_settings().identity_table).claim("default#mews#x", "fp")


def test_without_identity_table_contactless_guests_are_skipped_and_counted(bridge, capsys):
    import json

    from tests.test_mews import CUSTOMER_ID, add_customer, webhook

    bridge.configure(identity_table=None)
    add_customer(bridge, Email=None, Phone=None)
    assert bridge.send_mews(webhook(("CustomerAdded", CUSTOMER_ID))).status_code == 200
    assert bridge.customers() == []
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert any(l["outcome"] == "skipped" and l["reason"] == "no_contact_and_no_identity_table" for l in lines)


def test_changed_contactless_guest_is_not_sent_again(bridge):
    """Fullwhere cannot merge a guest without email/phone: a re-send would create a second customer."""
    from tests.test_mews import CUSTOMER_ID, add_customer, webhook

    add_customer(bridge, Email=None, Phone=None)
    bridge.send_mews(webhook(("CustomerAdded", CUSTOMER_ID)))
    add_customer(bridge, Email=None, Phone=None, LastName="Smythe")  # the profile changed in Mews
    bridge.send_mews(webhook(("CustomerUpdated", CUSTOMER_ID)))
    [customer] = bridge.customers()
    assert customer["lastName"] == "Smith"
    assert bridge.fullwhere.import_count == 1
