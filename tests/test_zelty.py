"""Zelty end to end: v2 webhook signed with the secret we registered → customer in the webhook → Fullwhere."""

from __future__ import annotations

import hashlib
import hmac
import json
import os

import httpx
import pytest

from sandbox import platforms
from sandbox.emulators.base import Fault
from sandbox.platforms.zelty import ZeltyEmulator
from tests.conftest import fixture_bytes, fixture_json

SECRET = "zelty-secret-key-7c41"
API_KEY = "zelty-api-key-19ab"
TARGET = "https://bridge.example.com/webhooks/zelty"
EVENTS = ("order.ended", "order.status.update", "customer.created", "customer.deleted",
          "dish.availability_update", "till.close")
ORDER_CUSTOMER_ID = "4821907"


@pytest.fixture(scope="module")
def zelty():
    server = ZeltyEmulator(api_key=API_KEY)
    server.start()
    yield server
    server.stop()


def register(zelty: ZeltyEmulator, version: str, secret: str = SECRET) -> None:
    """What the operator does once: POST /webhooks with our target, the version and our secret."""
    body = {name: {"target": TARGET, "version": version} for name in EVENTS} | {"secret_key": secret}
    response = httpx.post(f"{zelty.url}/webhooks", json=body, headers={"Authorization": f"Bearer {API_KEY}"})
    assert response.status_code == 200, response.text


@pytest.fixture
def zb(bridge, zelty):
    """The bridge with ZELTY_WEBHOOK_SECRET set, and Zelty registered to send v2 webhooks to it."""
    zelty.reset()
    register(zelty, "v2")
    bridge.configure(zelty_webhook_secret=SECRET)
    bridge.zelty = zelty
    return bridge


def send(bridge, payload, event_name: str | None = None, headers: dict | None = None):
    target, body, signed = bridge.zelty.delivery(payload, event_name)
    assert target.endswith("/webhooks/zelty")
    return bridge.post("zelty", body, headers if headers is not None else signed)


def order(customer=None, event_name: str = "order.ended", **envelope) -> dict:
    document = fixture_json("zelty/order_ended.json")
    document["event_name"] = event_name
    if customer is not None:
        document["data"]["customer"] = customer
    document.update(envelope)
    return document


def imports_sent(bridge) -> list[dict]:
    return [r.body for r in bridge.fullwhere.requests if r.path == "/partners/customer"]


def nothing_happened(bridge) -> bool:
    return (bridge.customers() == [] and bridge.fullwhere.requests == []
            and bridge.retry_jobs() == [] and bridge.dead_letters() == [])


# -- the guest ----------------------------------------------------------------------------------

def test_order_ended_imports_the_customer_it_carries(zb):
    response = send(zb, fixture_json("zelty/order_ended.json"))

    assert response.status_code == 200
    [customer] = zb.customers()
    assert customer["zeltyId"] == ORDER_CUSTOMER_ID
    assert (customer["firstName"], customer["lastName"], customer["displayName"]) == ("Camille", "Durand", "Camille Durand")
    assert customer["email"] == "camille.durand@example.fr"
    assert customer["phoneNumber"] == "+33698765432"
    assert (customer["smsOptin"], customer["emailOptin"]) == (True, False)  # Zelty's own flags, false included
    assert customer["metadata"] == {
        "source": "zelty", "zeltyRestaurantId": "10445", "zeltyBrandId": "1", "zeltyOrderId": "88213457",
        "zeltyOrderCount": "12", "zeltyTurnover": "18640",
    }
    [sent] = imports_sent(zb)
    assert "Paris" not in json.dumps(sent)  # addresses are not imported


def test_customer_event_carries_the_customer_in_data(zb):
    assert send(zb, fixture_json("zelty/customer_created.json")).status_code == 200
    [customer] = zb.customers()
    assert customer["zeltyId"] == "4821910"
    assert (customer["email"], customer["phoneNumber"]) == ("hugo.bernard@example.fr", "+33781234567")
    assert (customer["smsOptin"], customer["emailOptin"]) == (False, True)
    assert "zeltyOrderId" not in customer["metadata"]


def test_opt_ins_only_where_stated_and_bad_contacts_dropped(zb):
    customer = {"id": 77, "fname": "Camille", "mail": "not-an-email", "phone": "12", "sms_optin": "1"}
    assert send(zb, order(customer)).status_code == 200
    [sent] = imports_sent(zb)
    assert sent["smsOptin"] is True  # "1" is Zelty stating consent
    assert "emailOptin" not in sent  # no mail_optin: not stated, left null rather than false
    assert "email" not in sent and "phoneNumber" not in sent
    assert sent["zeltyId"] == "77"


def test_relayed_delivery_platform_order_imports_no_contact(zb):
    document = order()
    document["data"]["source"] = "Uber Eats"
    assert send(zb, document).status_code == 200
    [customer] = zb.customers()
    assert customer["zeltyId"] == ORDER_CUSTOMER_ID and customer["firstName"] == "Camille"
    assert customer["email"] is None and customer["phoneNumber"] is None
    [sent] = imports_sent(zb)
    assert not {"email", "phoneNumber", "smsOptin", "emailOptin"} & set(sent)  # consent given on Uber's relay
    assert customer["metadata"]["zeltyChannel"] == "ubereats"


# -- authentication -----------------------------------------------------------------------------

def test_forged_signature_is_refused(zb):
    target, body, headers = zb.zelty.delivery(fixture_json("zelty/order_ended.json"))
    forged = hmac.new(b"forged", body, hashlib.sha256).hexdigest()
    assert zb.post("zelty", body, {**headers, "x-zelty-hmac-sha256": forged}).status_code == 401
    # A genuine signature does not carry over to an altered body.
    tampered = body.replace(b"Camille.Durand@Example.fr", b"attacker@example.fr")
    assert zb.post("zelty", tampered, headers).status_code == 401
    assert nothing_happened(zb)


def test_unsigned_v1_webhook_is_refused_and_says_why(zb):
    register(zb.zelty, "v1")  # v1 deliveries arrive bare: anyone could have sent them
    _, _, headers = zb.zelty.delivery(fixture_json("zelty/order_ended.json"))
    assert "x-zelty-hmac-sha256" not in headers

    response = send(zb, fixture_json("zelty/order_ended.json"))

    assert response.status_code == 401
    assert "v2" in response.json_body["reason"]
    assert nothing_happened(zb)


def test_secret_not_configured_accepts_nothing_and_answers_503_misconfigured(zb, capsys):
    zb.configure(zelty_webhook_secret=None)
    capsys.readouterr()
    response = send(zb, fixture_json("zelty/order_ended.json"))
    assert response.status_code == 503 and response.json_body["error"] == "misconfigured"
    logged = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"ts"')]
    assert ["ZELTY_WEBHOOK_SECRET is not configured" in line["reason"] for line in logged
            if line["outcome"] == "misconfigured"] == [True]
    assert nothing_happened(zb)


def test_connector_signs_requests_the_way_it_verifies_them(zb):

    body = fixture_bytes("zelty/order_ended.json")
    headers, query = platforms.sign_for("zelty", body, os.environ)
    assert query == {}
    assert zb.post("zelty", body, headers).status_code == 200
    assert [c["zeltyId"] for c in zb.customers()] == [ORDER_CUSTOMER_ID]


# -- what is not imported -----------------------------------------------------------------------

def test_events_without_a_customer_are_acknowledged_and_ignored(zb):
    till = zb.zelty.envelope("till.close", {"id": 551, "closed_at": "2026-08-28T23:10:00Z"})
    for payload in (fixture_json("zelty/dish_availability_update.json"), till):
        response = send(zb, payload)
        assert response.status_code == 200 and response.body == b""
    assert nothing_happened(zb)


def test_order_without_a_customer_object_is_ignored(zb):
    for customer in (None, 4821907, {}):  # absent, a bare id, empty
        document = order(event_name="order.status.update")
        document["data"]["customer"] = customer
        assert send(zb, document).status_code == 200
    assert nothing_happened(zb)


def test_customer_deletion_never_imports_the_customer(zb):
    document = fixture_json("zelty/customer_created.json") | {"event_name": "customer.deleted"}
    assert send(zb, document).status_code == 200
    assert nothing_happened(zb)


# -- delivery guarantees ------------------------------------------------------------------------

def test_fullwhere_failing_queues_the_event_and_it_is_imported_after_drain(zb):
    zb.fullwhere.faults.always(Fault("status", status=503, retry_after=0))
    assert send(zb, fixture_json("zelty/order_ended.json")).status_code == 200  # else Zelty retries forever
    assert zb.customers() == []
    [job] = zb.retry_jobs()
    assert (job["platform"], job["stage"]) == ("zelty", "import")

    zb.fullwhere.faults.clear()
    zb.drain()

    assert [c["zeltyId"] for c in zb.customers()] == [ORDER_CUSTOMER_ID]
    assert zb.retry_jobs() == [] and zb.dead_letters() == []


def test_duplicate_delivery_is_one_customer(zb):
    document = fixture_json("zelty/order_ended.json")
    for _ in range(3):
        assert send(zb, document).status_code == 200
    assert [c["zeltyId"] for c in zb.customers()] == [ORDER_CUSTOMER_ID]


def test_customer_with_only_an_id_is_imported_once_across_orders(zb):
    customer = {"id": 990, "fname": "Camille", "name": "Durand"}
    assert send(zb, order(customer, "order.status.update")).status_code == 200
    assert send(zb, order(customer, "order.ended", event_id="another-event")).status_code == 200
    assert [c["zeltyId"] for c in zb.customers()] == ["990"]
    assert zb.fullwhere.import_count == 1  # the identity ledger turns the repeat into a no-op


def test_malformed_body_is_400_with_a_reason(zb):
    bodies = (b"not json", b'[{"event_name": "order.ended"}]', b'{"event_id": "e1", "data": {}}',
              b'{"event_id": "e1", "event_name": ""}', b'{"event_id": "e1", "event_name": "order.ended", "restaurant_id": {}}')
    for body in bodies:
        response = send(zb, body, event_name="order.ended")
        assert response.status_code == 400, body
        assert response.json_body["error"] == "malformed" and response.json_body["reason"]
    assert nothing_happened(zb)


# -- configuration ------------------------------------------------------------------------------

def test_customer_paths_setting_moves_the_customer_and_renames_its_fields(zb):
    zb.configure(zelty_customer_paths=json.dumps({
        "events": {"order.ended": ["data.client", "data.customer"]},
        "fields": {"id": "uid", "first_name": "first_name", "email": "email", "phone": ["mobile", "contact.phone"]},
    }))
    document = order()
    document["data"].pop("customer")
    document["data"]["client"] = {"uid": "c-1", "first_name": "Camille", "email": "Camille.Durand@Example.fr",
                                  "contact": {"phone": "0698765432"}, "sms_optin": True}
    assert send(zb, document).status_code == 200
    [sent] = imports_sent(zb)
    assert (sent["zeltyId"], sent["firstName"], sent["email"], sent["phoneNumber"]) == (
        "c-1", "Camille", "camille.durand@example.fr", "+33698765432")
    assert "smsOptin" not in sent  # sms_optin is not in the configured fields
    # The events section replaced the defaults: customer.created is no longer imported.
    assert send(zb, fixture_json("zelty/customer_created.json")).status_code == 200
    assert len(imports_sent(zb)) == 1


def test_invalid_customer_paths_answer_503_and_name_the_setting(zb, capsys):
    zb.configure(zelty_customer_paths='{"fields": {"nom": "x-private-marker"}}')
    response = send(zb, fixture_json("zelty/order_ended.json"))
    assert response.status_code == 503  # Zelty delivers again once the setting is fixed
    logged = capsys.readouterr().out
    assert "ZELTY_CUSTOMER_PATHS" in logged and "x-private-marker" not in logged
    assert nothing_happened(zb)


# -- tenants ------------------------------------------------------------------------------------

def test_restaurant_routes_the_event_and_brand_is_the_fallback(zb, tmp_path):
    # Each brand registers the webhook with its own tenant's secret_key (docs/platforms.md, Zelty).
    bistro_secret, group_secret = "zelty-secret-key-7c41-bistro", "zelty-secret-key-7c41-group"
    tenants = {"tenants": [
        {"id": "bistro", "fullwhere_api_key": "test-key", "fullwhere_api_secret": "test-secret",
         "platforms": {"zelty": {"webhook_secret": bistro_secret, "accounts": {"10445": {}}}}},
        {"id": "group-b", "fullwhere_api_key": "tenant-b-key", "fullwhere_api_secret": "tenant-b-secret",
         "platforms": {"zelty": {"webhook_secret": group_secret, "accounts": {"7": {}}}}},
    ]}
    path = tmp_path / "tenants.json"
    path.write_text(json.dumps(tenants))
    zb.configure(tenants_file=path)

    register(zb.zelty, "v2", bistro_secret)
    assert send(zb, order()).status_code == 200
    register(zb.zelty, "v2", group_secret)
    brand_level = order({"id": 555, "mail": "hugo.bernard@example.fr"}, restaurant_id=None, brand_id=7)
    assert send(zb, brand_level).status_code == 200
    assert [c["zeltyId"] for c in zb.customers("test-key")] == [ORDER_CUSTOMER_ID]
    assert [c["zeltyId"] for c in zb.customers("tenant-b-key")] == ["555"]

    # An unknown restaurant's webhooks cannot be verified: no tenant's secret is its own. Nothing is accepted or
    # queued, customer or not, and the answer is 503, so that Zelty keeps them and delivers them again until the
    # restaurant is listed (the onboarding race of issue 12).
    for body in (order(restaurant_id=999), fixture_json("zelty/dish_availability_update.json") | {"restaurant_id": 999}):
        response = send(zb, body)
        assert response.status_code == 503 and response.json_body["error"] == "unknown_account"
    assert zb.dead_letters() == [] and zb.retry_jobs() == []


def test_registration_refuses_version_2_written_without_the_v(zelty):
    """Integrators report that Zelty wants "v2", not "2": the emulator holds the operator to it."""
    zelty.reset()
    register(zelty, "v2")
    body = {"order.ended": {"target": TARGET, "version": "2"}, "secret_key": SECRET}
    response = httpx.post(f"{zelty.url}/webhooks", json=body, headers={"Authorization": f"Bearer {API_KEY}"})
    assert response.status_code == 400
    listed = httpx.get(f"{zelty.url}/webhooks", headers={"Authorization": f"Bearer {API_KEY}"}).json()
    assert listed["webhooks"]["order.ended"]["version"] == "v2"
    assert listed["secret_key"] == "****"
