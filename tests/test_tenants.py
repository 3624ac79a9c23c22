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


def test_event_for_an_account_nobody_owns_is_held_unrouted_on_the_retry_queue(two_tenants):
    bridge = two_tenants
    payload = fixture_json("deliveroo/order_new_loyalty.json")
    payload["body"]["order"]["location_id"] = "9999"
    assert bridge.send_deliveroo(payload).status_code == 200
    [job] = bridge.retry_jobs()
    assert job["tenant"] is None and job["event"]["account_id"] == "9999"
    assert bridge.dead_letters() == []
    assert bridge.customers("test-key") == [] and bridge.customers("tenant-b-key") == []


def test_unrouted_event_with_the_retry_queue_unreachable_is_503(two_tenants):  # held needs the queue
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


# -- tenants are walls: webhook secrets and credentials (docs/platforms.md, "Webhook secrets") ---------------

def _tenant(platforms: dict) -> dict:
    return {"tenants": [{"id": "a", "fullwhere_api_key": "k", "fullwhere_api_secret": "s", "platforms": platforms}]}


@pytest.mark.parametrize(
    "platforms, message",
    [
        ({"deliveroo": {"webhook_secret": "hook-value-0c2a", "accounts": {"1": {}}}}, "one per integration"),
        ({"meta": {"webhook_secret": "hook-value-0c2a"}}, "one per integration"),
        ({"simphony": {"webhook_secret": "hook-value-0c2a"}}, "takes hmac_keys"),
        ({"zelty": {"hmac_keys": {"kid": "aG9vay12YWx1ZS0wYzJh"}}}, "takes webhook_secret"),
        ({"simphony": {"hmac_keys": {"kid-1": "hook-value-0c2a!"}}}, "Key-Id 'kid-1' is not Base64"),
        ({"zelty": {"webhook_secret": ""}}, "webhook_secret"),
    ],
)
def test_a_webhook_secret_only_where_the_platform_takes_one_and_in_its_form(tmp_path, platforms, message):
    with pytest.raises(SettingsError) as error:
        load_directory(_settings(tmp_path, _tenant(platforms)))
    assert message in str(error.value)
    assert "hook-value-0c2a" not in str(error.value)


def test_a_standard_webhooks_sources_tenant_secret_must_be_a_usable_key(tmp_path, monkeypatch):
    import base64

    from tests.conftest import reset_bridge_state

    good = "whsec_" + base64.b64encode(b"a-zenchef-tenant-key-of-24").decode()
    sources = tmp_path / "sources.json"
    sources.write_text(json.dumps({"sources": [
        {"name": "zenchef", "preset": "zenchef", "auth": {"type": "standard_webhooks", "secret": good}}]}))
    monkeypatch.setenv("SOURCES_FILE", str(sources))
    reset_bridge_state()
    try:
        directory = load_directory(_settings(tmp_path, _tenant({"zenchef": {"webhook_secret": good}})))
        assert directory.get("a").own_webhook_secret("zenchef") == good
        with pytest.raises(SettingsError) as error:  # an empty key: anyone could sign with it
            load_directory(_settings(tmp_path, _tenant({"zenchef": {"webhook_secret": "whsec_"}})))
        assert "zenchef webhook_secret" in str(error.value) and "bytes" in str(error.value)
    finally:
        reset_bridge_state()


def test_a_named_tenant_without_its_own_secret_or_credentials_never_gets_the_deployments(tmp_path):
    from chalicelib.domain.tenants import credentials_for, default_tenant, lends_settings

    directory = load_directory(_settings(tmp_path, _tenant({"zelty": {"accounts": {"10445": {}}},
                                                            "thefork": {"accounts": {"r1": {"client_id": "own"}}}})))
    tenant = directory.get("a")
    with pytest.raises(SettingsError, match="tenant 'a' has no webhook_secret for zelty"):
        tenant.own_webhook_secret("zelty")
    # Its credentials are its account's alone; the default tenant's may fall back to the settings.
    own = credentials_for(tenant, "thefork", "r1")
    assert own == {"client_id": "own"} and not lends_settings(own)
    assert not lends_settings(credentials_for(tenant, "thefork", "unlisted"))
    assert lends_settings(credentials_for(default_tenant(Settings()), "thefork", "r1"))


def test_health_counts_a_per_account_platform_configured_once_each_tenant_listing_it_has_its_own_secret(
        bridge, tmp_path):
    from chalicelib.connectors import get_connector

    def configure(zelty_block: dict) -> None:
        path = tmp_path / "walls.json"
        path.write_text(json.dumps(_tenant({"zelty": zelty_block, "deliveroo": {"accounts": {"1": {}}}})))
        bridge.configure(tenants_file=path, zelty_webhook_secret="zelty-deployment-secret-5e1d")

    configure({"accounts": {"10445": {}}})
    # The deployment's ZELTY_WEBHOOK_SECRET is set, but opens no tenant's restaurant.
    assert get_connector("zelty").configured() is False
    assert get_connector("deliveroo").configured() is True  # one secret per integration: the deployment's
    configure({"webhook_secret": "zelty-tenant-secret-8f0a", "accounts": {"10445": {}}})
    assert get_connector("zelty").configured() is True
