"""Several Fullwhere accounts in one deployment: routing, per-account credentials, validation."""

from __future__ import annotations

import json

import pytest

from chalicelib.core.errors import SettingsError
from chalicelib.domain.tenants import load_directory
from chalicelib.infra.settings import Settings
from tests.conftest import MEWS_ACCESS_TOKEN, MEWS_ENTERPRISE, fixture_bytes, fixture_json
from tests.test_mews import CUSTOMER_ID, add_customer, webhook

TWO_TENANTS = {
    "tenants": [
        {
            "id": "hotel-a",
            "fullwhere_api_key": "test-key",
            "fullwhere_api_secret": "test-secret",
            "platforms": {"mews": {"accounts": {MEWS_ENTERPRISE: {"access_token": MEWS_ACCESS_TOKEN}}}},
        },
        {
            "id": "bistro-b",
            "fullwhere_api_key": "tenant-b-key",
            "fullwhere_api_secret": "tenant-b-secret",
            "phone_region": "GB",
            "platforms": {
                "deliveroo": {"accounts": {"1000": {}}},
                "ubereats": {"accounts": {"c7f1dc2f-5d3b-4a4e-9f6e-2a1b3c4d5e6f": {}}},
            },
        },
    ]
}


@pytest.fixture
def two_tenants(bridge, tmp_path):
    path = tmp_path / "tenants.json"
    path.write_text(json.dumps(TWO_TENANTS))
    # Only the tenants document holds credentials now: the default tenant's must not be used.
    bridge.configure(tenants_file=path, fullwhere_api_key=None, fullwhere_api_secret=None, mews_access_token=None)
    return bridge


def test_each_event_lands_in_its_own_tenants_fullwhere_account(two_tenants):
    bridge = two_tenants
    add_customer(bridge)
    bridge.uber.add_order(fixture_json("ubereats/order.json"))

    assert bridge.send_mews(webhook(("CustomerAdded", CUSTOMER_ID))).status_code == 200
    assert bridge.send_ubereats(fixture_json("ubereats/orders_notification.json")).status_code == 200
    assert bridge.send_deliveroo(fixture_bytes("deliveroo/order_new_loyalty.json")).status_code == 200

    assert [c["mewsId"] for c in bridge.customers("test-key")] == [CUSTOMER_ID]
    tenant_b = bridge.customers("tenant-b-key")
    assert sorted(c["metadata"]["source"] for c in tenant_b) == ["deliveroo", "ubereats"]


def test_mews_access_token_comes_from_the_enterprise_entry(two_tenants):
    bridge = two_tenants
    add_customer(bridge)
    bridge.send_mews(webhook(("CustomerAdded", CUSTOMER_ID)))
    [call] = [r for r in bridge.mews.requests if r.path.endswith("customers/getAll")]
    assert call.body["AccessToken"] == MEWS_ACCESS_TOKEN


def test_event_for_an_account_nobody_owns_is_dead_lettered_unrouted(two_tenants):
    bridge = two_tenants
    payload = fixture_json("deliveroo/order_new_loyalty.json")
    payload["body"]["order"]["location_id"] = "9999"
    assert bridge.send_deliveroo(payload).status_code == 200
    [letter] = bridge.dead_letters()
    assert letter["kind"] == "unrouted"
    assert letter["job"]["event"]["account_id"] == "9999"
    assert bridge.customers("test-key") == [] and bridge.customers("tenant-b-key") == []


def test_unrouted_event_with_the_dead_letter_queue_unreachable_is_503(two_tenants):
    bridge = two_tenants
    bridge.configure(aws_endpoint_url_sqs="http://127.0.0.1:9")
    payload = fixture_json("deliveroo/order_new_loyalty.json")
    payload["body"]["order"]["location_id"] = "9999"
    assert bridge.send_deliveroo(payload).status_code == 503


def _settings(tmp_path, document) -> Settings:
    path = tmp_path / "tenants.json"
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    return Settings(tenants_file=str(path))


@pytest.mark.parametrize(
    "document, message",
    [
        ("{nope", "not valid JSON"),
        ({"tenants": []}, "tenants"),
        ({"tenants": [{"id": "a"}]}, "fullwhere_api_key"),
        ({"tenants": [{"id": "a", "fullwhere_api_key": "k", "fullwhere_api_secret": "s", "platforms": {"myspace": {}}}]},
         "unknown platform"),
        ({"tenants": [{"id": "a", "fullwhere_api_key": "k", "fullwhere_api_secret": "s"},
                      {"id": "a", "fullwhere_api_key": "k2", "fullwhere_api_secret": "s2"}]}, "unique"),
        ({"tenants": [{"id": "a", "fullwhere_api_key": "k", "fullwhere_api_secret": "s",
                       "platforms": {"deliveroo": {"accounts": {"1": {}}}}},
                      {"id": "b", "fullwhere_api_key": "k2", "fullwhere_api_secret": "s2",
                       "platforms": {"deliveroo": {"accounts": {"1": {}}}}}]}, "listed by both"),
    ],
)
def test_invalid_tenants_document_fails_with_a_clear_message(tmp_path, document, message):
    with pytest.raises(SettingsError) as error:
        load_directory(_settings(tmp_path, document))
    assert message in str(error.value)
    assert "tenants" in str(error.value).lower()


def test_secret_values_never_appear_in_validation_errors(tmp_path):
    document = {"tenants": [{"id": "bad id with spaces", "fullwhere_api_key": "k", "fullwhere_api_secret": "s3cr3t-value"}]}
    with pytest.raises(SettingsError) as error:
        load_directory(_settings(tmp_path, document))
    assert "s3cr3t-value" not in str(error.value)


def test_tenants_document_from_secrets_manager(bridge):
    from sandbox.aws import client

    client("secretsmanager", bridge.endpoint).create_secret(Name="bridge/tenants", SecretString=json.dumps(TWO_TENANTS))
    bridge.configure(tenants_secret_id="bridge/tenants", fullwhere_api_key=None)
    add_customer(bridge)
    assert bridge.send_mews(webhook(("CustomerAdded", CUSTOMER_ID))).status_code == 200
    assert len(bridge.customers("test-key")) == 1
