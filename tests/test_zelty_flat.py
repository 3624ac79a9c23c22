"""Zelty orders that carry their customer flat (fields of the order, no ``customer`` object), over HTTP:
read only when no nested customer exists, relay contacts still dropped, ZELTY_CUSTOMER_PATHS still rules."""

from __future__ import annotations

import json

from tests import test_zelty
from tests.conftest import fixture_json
from tests.test_zelty import imports_sent, nothing_happened, send

# The Zelty emulator and the bridge registered with it, as tests/test_zelty.py sets them up.
zelty, zb = test_zelty.zelty, test_zelty.zb

ORDER_ID = "88213457"


def flat_order(event_name: str = "order.ended", **fields) -> dict:
    """The captured order_ended sample with its customer object replaced by fields on the order."""
    document = fixture_json("zelty/order_ended.json")
    document["event_name"] = event_name
    document["data"].pop("customer")
    document["data"].update(fields)
    return document


FLAT = {"customer_id": 5120033, "first_name": " Léa ", "last_name": "Martin",
        "email": "Lea.Martin@Example.fr", "phone": "06 12 34 56 78"}


def test_flat_customer_on_the_order_is_imported_with_its_zelty_id(zb):
    response = send(zb, flat_order(**FLAT))

    assert response.status_code == 200
    [customer] = zb.customers()
    assert customer["zeltyId"] == "5120033"  # customer_id, never the order's own id
    assert (customer["firstName"], customer["lastName"], customer["displayName"]) == ("Léa", "Martin", "Léa Martin")
    assert (customer["email"], customer["phoneNumber"]) == ("lea.martin@example.fr", "+33612345678")
    [sent] = imports_sent(zb)
    assert not {"smsOptin", "emailOptin"} & set(sent)  # an order states no consent: left null
    assert sent["metadata"] == {"source": "zelty", "zeltyRestaurantId": "10445", "zeltyBrandId": "1",
                                "zeltyOrderId": ORDER_ID}


def test_nested_customer_wins_and_the_order_fields_are_not_mixed_in(zb):
    document = fixture_json("zelty/order_ended.json")
    document["data"].update({"customer_id": 1, "first_name": "Someone", "email": "someone@example.fr",
                             "phone": "0611111111"})
    assert send(zb, document).status_code == 200
    [sent] = imports_sent(zb)
    assert (sent["zeltyId"], sent["firstName"], sent["email"], sent["phoneNumber"]) == (
        "4821907", "Camille", "camille.durand@example.fr", "+33698765432")
    assert sent["smsOptin"] is True and sent["metadata"]["zeltyOrderCount"] == "12"


def test_flat_delivery_platform_order_imports_no_relay_contact(zb):
    assert send(zb, flat_order(**FLAT, source="Deliveroo")).status_code == 200
    [customer] = zb.customers()
    assert customer["zeltyId"] == "5120033" and customer["firstName"] == "Léa"
    assert customer["email"] is None and customer["phoneNumber"] is None
    [sent] = imports_sent(zb)
    assert not {"email", "phoneNumber", "smsOptin", "emailOptin"} & set(sent)
    assert customer["metadata"]["zeltyChannel"] == "deliveroo"


def test_order_without_any_customer_is_ignored(zb, capsys):
    assert send(zb, flat_order()).status_code == 200
    assert nothing_happened(zb)
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"')]
    assert any(line.get("event_type") == "order.ended:no-customer" for line in lines)


def test_flat_name_only_guest_is_skipped_for_lack_of_identity(zb, capsys):
    assert send(zb, flat_order(first_name="Léa")).status_code == 200
    assert zb.customers() == [] and imports_sent(zb) == []
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert any(line.get("outcome") == "skipped" and line.get("reason") == "no_identity" for line in lines)
    [emf] = [line for line in lines if "_aws" in line and line["outcome"] == "skipped"]
    assert (emf["platform"], emf["reason"], emf["Events"]) == ("zelty", "no_identity", 1)


def test_customer_paths_setting_renames_or_turns_off_the_flat_shape(zb):
    zb.configure(zelty_customer_paths=json.dumps(
        {"flat": {"events": {"order.ended": "data"}, "fields": {"id": "client_id", "email": "client_email"}}}))
    document = flat_order(**FLAT, client_id="c-9", client_email="Client@Example.fr")
    assert send(zb, document).status_code == 200
    [sent] = imports_sent(zb)
    # Only the configured keys are read: the default first_name/phone keys are not.
    assert (sent["zeltyId"], sent["email"]) == ("c-9", "client@example.fr")
    assert "firstName" not in sent and "phoneNumber" not in sent

    zb.configure(zelty_customer_paths=json.dumps({"flat": None}))
    assert send(zb, flat_order(**FLAT) | {"event_id": "another-event"}).status_code == 200
    assert len(imports_sent(zb)) == 1 and [c["zeltyId"] for c in zb.customers()] == ["c-9"]  # the first order's only


def test_invalid_flat_section_answers_503_and_names_the_setting(zb, capsys):
    zb.configure(zelty_customer_paths=json.dumps({"flat": {"events": {"order.*": "data"},
                                                           "fields": {"nom": "x-private-marker"}}}))
    assert send(zb, flat_order(**FLAT)).status_code == 503
    logged = capsys.readouterr().out
    assert "ZELTY_CUSTOMER_PATHS" in logged and "x-private-marker" not in logged
    assert nothing_happened(zb)
