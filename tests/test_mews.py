"""Mews end to end: URL-token webhook with ids → customers/getAll or reservations/getAll → Fullwhere."""

from __future__ import annotations

import json

from sandbox.platforms.mews import make_reservation
from tests.conftest import MEWS_ACCESS_TOKEN, MEWS_ENTERPRISE, fixture_json

CUSTOMER_ID = "c2f1d888-232e-49eb-87ac-5f75363af13b"


def add_customer(bridge, customer_id: str = CUSTOMER_ID, **overrides) -> dict:
    customer = {**fixture_json("mews/customer.json"), "Id": customer_id, **overrides}
    bridge.mews.add_customer(MEWS_ENTERPRISE, customer)
    return customer


def webhook(*events: tuple[str, str]) -> dict:
    return {
        "EnterpriseId": MEWS_ENTERPRISE,
        "IntegrationId": "c8bee838-7fb1-4f4e-8fac-ac87008b2f90",
        "Events": [{"Discriminator": d, "Value": {"Id": i}} for d, i in events],
    }


def test_customer_added_is_fetched_and_mapped(bridge):
    add_customer(bridge)

    response = bridge.send_mews(webhook(("CustomerAdded", CUSTOMER_ID)))

    assert response.status_code == 200
    [customer] = bridge.customers()
    assert customer["mewsId"] == CUSTOMER_ID
    assert customer["email"] == "j.smith@example.com"
    assert customer["phoneNumber"] == "+420601123456"
    assert customer["civility"] == "Mr."
    assert customer["language"] == "en"  # PreferredLanguageCode en-GB wins over LanguageCode en-US
    assert customer["emailOptin"] is True  # "SendMarketingEmails" in Options
    sent = [r.body for r in bridge.fullwhere.requests if r.path == "/partners/customer"][-1]
    assert "smsOptin" not in sent  # Mews states no SMS consent: left null, not false
    assert (customer["firstName"], customer["lastName"], customer["displayName"]) == ("John", "Smith", "John Smith")
    assert customer["metadata"]["mewsEnterpriseId"] == MEWS_ENTERPRISE


def test_added_and_updated_in_one_message_fetch_the_customer_once(bridge):
    add_customer(bridge)

    response = bridge.send_mews(webhook(("CustomerAdded", CUSTOMER_ID), ("CustomerUpdated", CUSTOMER_ID)))

    assert response.status_code == 200
    assert bridge.mews.get_customers_calls == 1
    assert len(bridge.customers()) == 1


def test_documented_sample_with_no_content_type(bridge):
    """Mews' own sample: a reservation, a customer added, another updated, and events we don't import."""
    add_customer(bridge, "c2f1d888-232e-49eb-87ac-5f75363af13b", Email="first@example.com")
    add_customer(bridge, "b3ce0fd7-a715-4bfc-969e-ef7a4822963c", Email="second@example.com", Phone=None)
    bridge.mews.add_reservation(MEWS_ENTERPRISE, make_reservation(
        "bfee2c44-1f84-4326-a862-5289598f6e2d", "c2f1d888-232e-49eb-87ac-5f75363af13b"))

    body = (bridge_fixture := fixture_json("mews/general_webhook.json"))
    assert bridge_fixture["EnterpriseId"] == MEWS_ENTERPRISE
    response = bridge.send_mews(body, content_type=None)

    assert response.status_code == 200
    assert sorted(c["email"] for c in bridge.customers()) == ["first@example.com", "second@example.com"]


def test_any_declared_content_type_is_accepted(bridge):
    add_customer(bridge)
    response = bridge.send_mews(webhook(("CustomerUpdated", CUSTOMER_ID)), content_type="text/plain; charset=utf-8")
    assert response.status_code == 200
    assert len(bridge.customers()) == 1


def test_ota_relay_email_is_not_imported(bridge):
    add_customer(bridge, Email="guest-8z1@guest.booking.com", HasOtaEmail=True)
    assert bridge.send_mews(webhook(("CustomerAdded", CUSTOMER_ID))).status_code == 200
    [customer] = bridge.customers()
    assert customer["email"] is None
    assert customer["phoneNumber"] == "+420601123456"


def test_reservation_owned_by_a_company_imports_nothing(bridge):
    bridge.mews.add_reservation(MEWS_ENTERPRISE, make_reservation("res-1", "company-1", account_type="Company"))
    assert bridge.send_mews(webhook(("ServiceOrderUpdated", "res-1"))).status_code == 200
    assert bridge.customers() == []


def test_wrong_or_missing_token_is_refused(bridge):
    add_customer(bridge)
    assert bridge.send_mews(webhook(("CustomerAdded", CUSTOMER_ID)), token="guess").status_code == 401
    assert bridge.post("mews", b'{"EnterpriseId": "x", "Events": []}').status_code == 401
    assert bridge.customers() == []
    assert bridge.mews.get_customers_calls == 0


def test_token_never_appears_in_logs(bridge, capsys):
    from tests.conftest import MEWS_WEBHOOK_TOKEN

    add_customer(bridge)
    bridge.send_mews(webhook(("CustomerAdded", CUSTOMER_ID)))
    bridge.send_mews(webhook(("CustomerAdded", CUSTOMER_ID)), token="wrong-token-value")
    out = capsys.readouterr().out
    assert MEWS_WEBHOOK_TOKEN not in out and "wrong-token-value" not in out
    assert "j.smith@example.com" not in out and "601123456" not in out


def test_contactless_guest_is_kept_once_by_the_ledger(bridge):
    add_customer(bridge, Email=None, Phone=None)
    for _ in range(2):
        assert bridge.send_mews(webhook(("CustomerUpdated", CUSTOMER_ID))).status_code == 200
    [customer] = bridge.customers()
    assert customer["mewsId"] == CUSTOMER_ID
    assert bridge.fullwhere.import_count == 1


def test_unknown_enterprise_is_held_as_unrouted_until_a_tenant_lists_it(bridge, tmp_path):
    def listing(enterprise: str, access_token: str) -> str:
        return json.dumps({"tenants": [{"id": "hotel", "fullwhere_api_key": "test-key",
                                        "fullwhere_api_secret": "test-secret", "platforms": {
                                            "mews": {"accounts": {enterprise: {"access_token": access_token}}}}}]})

    tenants = tmp_path / "tenants.json"
    tenants.write_text(listing("another-enterprise", "x"))
    bridge.configure(tenants_file=tenants)
    add_customer(bridge)

    assert bridge.send_mews(webhook(("CustomerAdded", CUSTOMER_ID))).status_code == 200

    assert bridge.customers() == [] and bridge.dead_letters() == []
    [job] = bridge.retry_jobs()
    assert job["tenant"] is None and job["event"]["account_id"] == MEWS_ENTERPRISE

    tenants.write_text(listing(MEWS_ENTERPRISE, MEWS_ACCESS_TOKEN))
    bridge.configure()  # the tenants document is read again
    bridge.drain()
    assert [customer["mewsId"] for customer in bridge.customers()] == [CUSTOMER_ID]
    assert bridge.retry_jobs() == [] and bridge.dead_letters() == []
