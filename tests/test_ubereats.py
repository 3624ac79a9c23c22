"""Uber Eats end to end: thin signed notification → order fetched with a cached token → Fullwhere."""

from __future__ import annotations

from tests.conftest import fixture_json

STORE = "c7f1dc2f-5d3b-4a4e-9f6e-2a1b3c4d5e6f"
EATER = "63578c8b-9cd2-4c4f-91fc-315f575e6a78"


def notification_for(order_id: str, event_id: str) -> dict:
    notification = fixture_json("ubereats/orders_notification.json")
    notification["event_id"] = event_id
    notification["meta"]["resource_id"] = order_id
    notification["resource_href"] = f"https://api.uber.com/v2/eats/order/{order_id}"
    return notification


def order(order_id: str, eater_id: str = EATER) -> dict:
    document = fixture_json("ubereats/order.json")
    document["id"] = order_id
    document["eaters"][0]["id"] = eater_id
    return document


def test_notification_fetches_the_order_and_imports_the_eater(bridge):
    bridge.uber.add_order(fixture_json("ubereats/order.json"))

    response = bridge.send_ubereats(fixture_json("ubereats/orders_notification.json"))

    assert response.status_code == 200
    assert response.body == b""  # Uber expects an empty 200
    [customer] = bridge.customers()
    assert customer["ubereatsId"] == EATER
    assert (customer["firstName"], customer["lastName"]) == ("Larry", "S")
    # eater.phone is Uber's anonymized relay number: never imported.
    assert customer["phoneNumber"] is None
    assert customer["metadata"]["ubereatsOrderId"] == "f9f363d1-e1c2-4595-b477-c649845bc953"
    assert customer["metadata"]["ubereatsStoreId"] == STORE


def test_same_eater_ordering_twice_is_one_customer_and_one_token(bridge):
    bridge.uber.add_order(order("order-1"))
    bridge.uber.add_order(order("order-2"))

    assert bridge.send_ubereats(notification_for("order-1", "event-1")).status_code == 200
    assert bridge.send_ubereats(notification_for("order-2", "event-2")).status_code == 200

    assert [c["ubereatsId"] for c in bridge.customers()] == [EATER]
    assert bridge.fullwhere.import_count == 1
    assert bridge.uber.token_requests == 1  # cached: Uber allows 100 token requests an hour


def test_duplicate_delivery_is_one_customer(bridge):
    bridge.uber.add_order(fixture_json("ubereats/order.json"))
    notification = fixture_json("ubereats/orders_notification.json")
    for _ in range(3):
        assert bridge.send_ubereats(notification).status_code == 200
    assert len(bridge.customers()) == 1


def test_two_eaters_are_two_customers(bridge):
    bridge.uber.add_order(order("order-1", "eater-a"))
    bridge.uber.add_order(order("order-2", "eater-b"))
    bridge.send_ubereats(notification_for("order-1", "event-1"))
    bridge.send_ubereats(notification_for("order-2", "event-2"))
    assert sorted(c["ubereatsId"] for c in bridge.customers()) == ["eater-a", "eater-b"]


def test_group_order_with_ambiguous_orderer_is_not_imported(bridge):
    document = order("order-g")
    document["eaters"] = [{"id": "e1", "first_name": "Larry"}, {"id": "e2", "first_name": "Larry"}]
    bridge.uber.add_order(document)
    assert bridge.send_ubereats(notification_for("order-g", "event-g")).status_code == 200
    assert bridge.customers() == []


def test_forged_signature_is_refused(bridge):
    bridge.uber.add_order(fixture_json("ubereats/order.json"))
    response = bridge.send_ubereats(fixture_json("ubereats/orders_notification.json"), secret="wrong")
    assert response.status_code == 401
    assert bridge.customers() == []
    assert bridge.uber.token_requests == 0


def test_other_event_types_are_ignored(bridge):
    notification = fixture_json("ubereats/orders_notification.json")
    notification["event_type"] = "store.provisioned"
    assert bridge.send_ubereats(notification).status_code == 200
    assert bridge.uber.token_requests == 0


def test_order_unknown_to_uber_is_dead_lettered_with_the_reason(bridge):
    response = bridge.send_ubereats(fixture_json("ubereats/orders_notification.json"))
    assert response.status_code == 200
    [letter] = bridge.dead_letters()
    assert letter["kind"] == "permanent"
    assert "404" in letter["reason"]
    assert letter["job"]["platform"] == "ubereats"


def test_expired_token_is_renewed_once(bridge):
    bridge.uber.add_order(fixture_json("ubereats/order.json"))
    bridge.uber.add_order(order("order-2"))
    bridge.send_ubereats(fixture_json("ubereats/orders_notification.json"))
    bridge.uber.revoke_tokens() if hasattr(bridge.uber, "revoke_tokens") else bridge.uber.reset_tokens()
    assert bridge.send_ubereats(notification_for("order-2", "event-2")).status_code == 200
    assert bridge.uber.token_requests == 2
    assert len(bridge.customers()) == 1
