"""Deliveroo end to end: signed fixtures → bridge → Fullwhere emulator."""

from __future__ import annotations

import json

from tests.conftest import fixture_bytes, fixture_json


def test_order_with_loyalty_card_becomes_one_customer_without_the_relay_phone(bridge):
    response = bridge.send_deliveroo(fixture_bytes("deliveroo/order_new_loyalty.json"))

    assert response.status_code == 200
    [customer] = bridge.customers()
    assert customer["deliverooId"] == "loyalty:LOY-778899"
    assert (customer["firstName"], customer["lastName"], customer["displayName"]) == ("Omid", "M.", "Omid M.")
    # The relay line "+44 20 3699 9999" must never reach the CRM as the guest's phone.
    assert customer["phoneNumber"] is None
    assert customer["email"] is None
    assert customer["metadata"]["source"] == "deliveroo"
    assert customer["metadata"]["deliverooOrderId"] == "gb:5f0c1d2e-3a4b-4c5d-8e9f-0a1b2c3d4e5f"


def test_status_updates_and_redeliveries_of_the_same_order_make_no_new_customer(bridge):
    assert bridge.send_deliveroo(fixture_bytes("deliveroo/order_new_loyalty.json")).status_code == 200
    assert bridge.send_deliveroo(fixture_bytes("deliveroo/order_new_loyalty.json")).status_code == 200
    assert bridge.send_deliveroo(fixture_bytes("deliveroo/order_status_update.json")).status_code == 200

    assert len(bridge.customers()) == 1
    assert bridge.fullwhere.import_count == 1


def test_restaurant_delivered_order_takes_the_name_from_delivery(bridge):
    assert bridge.send_deliveroo(fixture_bytes("deliveroo/restaurant_fulfilled.json")).status_code == 200

    [customer] = bridge.customers()
    assert customer["deliverooId"] == "loyalty:LOY-112233"
    assert customer["firstName"] == "Omid"
    assert customer["phoneNumber"] is None


def test_diner_without_loyalty_card_has_no_identity_and_is_not_imported(bridge, capsys):
    response = bridge.send_deliveroo(fixture_bytes("deliveroo/order_new.json"))

    assert response.status_code == 200
    assert bridge.customers() == []
    outcomes = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert any(line["outcome"] == "skipped" and line.get("reason") == "no_identity" for line in outcomes)


def test_legacy_new_order_is_verified_with_its_own_separator(bridge):
    body = fixture_bytes("deliveroo/legacy_new_order.json")
    assert bridge.send_deliveroo(body, legacy=True).status_code == 200
    [customer] = bridge.customers()
    assert customer["deliverooId"] == "loyalty:LOY-445566"


def test_legacy_separator_cannot_sign_a_current_event(bridge):
    response = bridge.send_deliveroo(fixture_bytes("deliveroo/order_new_loyalty.json"), legacy=True)
    assert response.status_code == 401
    assert bridge.customers() == []


def test_forged_signature_is_refused_and_imports_nothing(bridge):
    response = bridge.send_deliveroo(fixture_bytes("deliveroo/order_new_loyalty.json"), secret="not-the-secret")
    assert response.status_code == 401
    assert response.json_body["error"] == "unauthorized"
    assert bridge.customers() == []


def test_signature_headers_are_read_case_insensitively(bridge):
    from tests.support.signing import deliveroo_headers

    body = fixture_bytes("deliveroo/order_new_loyalty.json")
    headers = {key.lower(): value for key, value in deliveroo_headers(body, "deliveroo-webhook-secret").items()}
    headers["x-deliveroo-hmac-sha256"] = headers["x-deliveroo-hmac-sha256"].upper()
    assert bridge.post("deliveroo", body, headers).status_code == 200
    assert len(bridge.customers()) == 1


def test_rider_events_are_acknowledged_and_ignored(bridge):
    response = bridge.send_deliveroo({"event": "rider.status_update", "body": {"order_id": "x", "riders": []}})
    assert response.status_code == 200
    assert bridge.customers() == []


def test_rejected_order_is_not_imported(bridge):
    payload = fixture_json("deliveroo/order_status_update.json")
    payload["order"]["status"] = "rejected"
    assert bridge.send_deliveroo(payload).status_code == 200
    assert bridge.customers() == []


def test_order_without_id_is_malformed(bridge):
    response = bridge.send_deliveroo({"event": "order.new", "body": {"order": {"customer": {}}}})
    assert response.status_code == 400
    assert "order" in response.json_body["reason"]
