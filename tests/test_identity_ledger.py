"""The identity ledger against DynamoDB (moto's server): claims are exclusive, imports are recorded once."""

from __future__ import annotations

import pytest

from chalicelib.core.errors import RetryableError
from chalicelib.domain.identity import Claim, IdentityLedger, KnownGuest


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


def test_interleaved_deliveries_import_once(ledger):
    """Two deliveries of one guest, both claiming before either records: only the first may import.

    (Interleaved in sequence rather than on threads: moto's server does not serialise conditional
    writes the way DynamoDB does, so a threaded version would test moto, not the bridge.)
    """
    first = ledger.claim("default#deliveroo#loyalty:1", "fp")
    with pytest.raises(RetryableError):
        ledger.claim("default#deliveroo#loyalty:1", "fp")
    ledger.record(first, "fp", "customer-1")
    assert ledger.claim("default#deliveroo#loyalty:1", "fp") == KnownGuest(customer_id="customer-1", unchanged=True)


def test_unreachable_dynamodb_is_retryable(bridge):
    bridge.configure(aws_endpoint_url_dynamodb="http://127.0.0.1:9")
    from chalicelib.infra.settings import get_settings

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
