"""The same promises, checked for every connector with its documented payload and real signing scheme."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

import pytest

from sandbox import platforms
from sandbox.emulators.base import Fault
from tests.conftest import MEWS_ENTERPRISE, fixture_bytes, fixture_json


@dataclass(frozen=True)
class Scenario:
    platform: str
    id_field: str
    guest_id: str
    prepare: Callable  # puts the guest where the platform's API would have it
    send: Callable  # sends the signed webhook
    forge: Callable  # sends it with a wrong secret/token
    malformed: Callable  # sends a correctly signed body that is not the platform's shape


def _mews_webhook():
    return {"EnterpriseId": MEWS_ENTERPRISE, "Events": [
        {"Discriminator": "CustomerAdded", "Value": {"Id": "c2f1d888-232e-49eb-87ac-5f75363af13b"}}]}


SCENARIOS = [
    Scenario(
        "deliveroo", "deliverooId", "loyalty:LOY-778899",
        prepare=lambda bridge: None,
        send=lambda bridge: bridge.send_deliveroo(fixture_bytes("deliveroo/order_new_loyalty.json")),
        forge=lambda bridge: bridge.send_deliveroo(fixture_bytes("deliveroo/order_new_loyalty.json"), secret="forged"),
        malformed=lambda bridge: bridge.send_deliveroo(b'{"body": {"order": {}}}'),
    ),
    Scenario(
        "ubereats", "ubereatsId", "63578c8b-9cd2-4c4f-91fc-315f575e6a78",
        prepare=lambda bridge: bridge.uber.add_order(fixture_json("ubereats/order.json")),
        send=lambda bridge: bridge.send_ubereats(fixture_json("ubereats/orders_notification.json")),
        forge=lambda bridge: bridge.send_ubereats(fixture_json("ubereats/orders_notification.json"), secret="forged"),
        malformed=lambda bridge: bridge.send_ubereats(b'[{"event_type": "orders.notification"}]'),
    ),
    Scenario(
        "mews", "mewsId", "c2f1d888-232e-49eb-87ac-5f75363af13b",
        prepare=lambda bridge: bridge.mews.add_customer(MEWS_ENTERPRISE, fixture_json("mews/customer.json")),
        send=lambda bridge: bridge.send_mews(_mews_webhook()),
        forge=lambda bridge: bridge.send_mews(_mews_webhook(), token="forged"),
        malformed=lambda bridge: bridge.send_mews(b'{"Events": [{"Discriminator": "CustomerAdded"}]}'),
    ),
]


@pytest.fixture(params=SCENARIOS, ids=[s.platform for s in SCENARIOS])
def scenario(request, bridge) -> Scenario:
    request.param.prepare(bridge)
    return request.param


def imported_ids(bridge, scenario) -> list:
    return [customer[scenario.id_field] for customer in bridge.customers()]


def test_webhook_becomes_a_customer_with_the_platform_id(bridge, scenario):
    response = scenario.send(bridge)
    assert response.status_code == 200
    assert imported_ids(bridge, scenario) == [scenario.guest_id]
    assert bridge.customers()[0]["metadata"]["source"] == scenario.platform


def test_fullwhere_failing_queues_the_job_and_the_worker_imports_it_once_it_recovers(bridge, scenario):
    bridge.fullwhere.faults.always(Fault("status", status=503, retry_after=0))
    assert scenario.send(bridge).status_code == 200
    assert bridge.customers() == []
    [job] = bridge.retry_jobs()
    assert job["platform"] == scenario.platform and job["stage"] == "import"

    bridge.fullwhere.faults.clear()
    bridge.drain()

    assert imported_ids(bridge, scenario) == [scenario.guest_id]
    assert bridge.retry_jobs() == [] and bridge.dead_letters() == []


def test_permanent_rejection_lands_in_the_dead_letter_queue_with_the_reason(bridge, scenario):
    bridge.fullwhere.faults.always(Fault("status", status=400, body='{"message":"phoneNumber must be valid"}'))
    assert scenario.send(bridge).status_code == 200
    [letter] = bridge.dead_letters()
    assert letter["kind"] == "permanent"
    assert letter["reason"] == 'Fullwhere answered 400: {"message":"phoneNumber must be valid"}'
    assert letter["job"]["platform"] == scenario.platform
    assert bridge.retry_jobs() == []


def test_fullwhere_down_and_sqs_unreachable_is_503(bridge, scenario):
    bridge.fullwhere.faults.always(Fault("status", status=500))
    bridge.configure(aws_endpoint_url_sqs="http://127.0.0.1:9")
    assert scenario.send(bridge).status_code == 503
    assert bridge.customers() == []


def test_forged_request_is_401_and_imports_nothing(bridge, scenario):
    response = scenario.forge(bridge)
    assert response.status_code == 401
    assert bridge.customers() == [] and bridge.fullwhere.requests == []


def test_malformed_body_is_400_with_a_reason(bridge, scenario):
    response = scenario.malformed(bridge)
    assert response.status_code == 400
    assert response.json_body["error"] == "malformed" and response.json_body["reason"]
    assert bridge.customers() == []


def test_duplicate_delivery_is_one_customer(bridge, scenario):
    for _ in range(3):
        assert scenario.send(bridge).status_code == 200
    assert imported_ids(bridge, scenario) == [scenario.guest_id]


def test_connector_signs_requests_the_way_it_verifies_them(bridge, scenario):
    """``sign`` (used by the command-line tools) must produce what the platform would send."""

    body = fixture_bytes({"deliveroo": "deliveroo/order_new_loyalty.json", "ubereats": "ubereats/orders_notification.json",
                          "mews": "mews/general_webhook.json"}[scenario.platform])
    headers, query = platforms.sign_for(scenario.platform, body, os.environ)
    path = f"/webhooks/{scenario.platform}" + ("?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else "")
    assert bridge.client.http.post(path, headers=headers, body=body).status_code == 200
