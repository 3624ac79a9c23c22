"""TheFork end to end: URL-token webhook with ids → customer (or reservation, then customer) fetched with a
cached Auth0 token → Fullwhere."""

from __future__ import annotations

import json
import os
import time

import pytest

from sandbox import platforms
from sandbox.emulators.base import Fault
from sandbox.platforms.thefork import CUSTOMERS_PREFIX, TOKEN_PATH, TheForkEmulator
from tests.conftest import fixture_bytes, fixture_json

WEBHOOK_TOKEN = "thefork-url-token-NN8ul7c3"
CLIENT_ID, CLIENT_SECRET = "thefork-client", "thefork-client-secret-7d2e"
TENANT_CLIENT_ID, TENANT_CLIENT_SECRET = "thefork-tenant-client", "thefork-tenant-secret-91ac"
CUSTOMER = "d7b2f4a1-3c8e-4f5d-9a2b-1e6c8f3d5a7b"
GROUP = "c1fa3225-690d-4b86-b255-042b3c218b68"
RESTAURANT = "565426e9-a7d9-4123-8d9b-94275483fcf9"
RESERVATION = "a288660b-94e9-4702-936f-9c7caec0cdd4"


@pytest.fixture(scope="module")
def thefork_server():
    server = TheForkEmulator(clients={CLIENT_ID: CLIENT_SECRET, TENANT_CLIENT_ID: TENANT_CLIENT_SECRET})
    server.start()
    yield server
    server.stop()


@pytest.fixture
def thefork(bridge, thefork_server):
    from chalicelib.connectors import thefork as connector_module

    thefork_server.reset()
    bridge.configure(
        thefork_webhook_token=WEBHOOK_TOKEN,
        thefork_client_id=CLIENT_ID,
        thefork_client_secret=CLIENT_SECRET,
        thefork_api_url=thefork_server.api_url,
        thefork_auth_url=thefork_server.url,
    )
    connector_module._tokens.clear()  # a container's token cache does not survive between tests
    yield thefork_server
    connector_module._tokens.clear()


def send(bridge, payload, token: str | None = WEBHOOK_TOKEN):
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    query = f"token={token}" if token is not None else ""
    return bridge.post("thefork", body, {"Content-Type": "application/json"}, query=query)


def add_customer(thefork, **overrides) -> dict:
    customer = {**fixture_json("thefork/customer.json"), **overrides}
    thefork.add_customer(customer)
    return customer


def sent_imports(bridge) -> list[dict]:
    return [r.body for r in bridge.fullwhere.requests if r.path == "/partners/customer" and r.method == "POST"]


# -- end to end ------------------------------------------------------------------------------------


def test_customer_created_is_fetched_and_mapped(bridge, thefork):
    add_customer(thefork)

    response = send(bridge, fixture_bytes("thefork/customer_created.json"))

    assert response.status_code == 200
    assert json.loads(response.body) == {"data": {}}
    assert response.headers["Content-Type"] == "application/json"
    [customer] = bridge.customers()
    assert customer["theForkId"] == CUSTOMER
    assert (customer["firstName"], customer["lastName"], customer["displayName"]) == ("Camille", "Durand", "Camille Durand")
    assert customer["email"] == "camille.durand@exemple.fr"
    assert customer["phoneNumber"] == "+33671234589"  # "06 71 23 45 89" read in France
    assert customer["language"] == "fr"  # locale fr_FR
    assert customer["civility"] == "Mrs."
    assert customer["emailOptin"] is True  # optins.restaurantNewsletter
    assert "smsOptin" not in sent_imports(bridge)[-1]  # no SMS consent documented: left null
    assert customer["metadata"] == {
        "source": "thefork", "theForkGroupUuid": GROUP, "theForkOriginRestaurantUuid": RESTAURANT, "theForkVip": "true",
    }
    # Allergies, notes and other health-adjacent fields never leave TheFork.
    assert "seafood" not in json.dumps(sent_imports(bridge))


def test_token_request_is_form_encoded_client_credentials_for_the_api_audience(bridge, thefork):
    add_customer(thefork)
    send(bridge, fixture_bytes("thefork/customer_created.json"))

    [token_request] = thefork.requests_matching("POST", TOKEN_PATH)
    assert token_request.headers["content-type"].startswith("application/x-www-form-urlencoded")
    assert token_request.form() == {
        "audience": "https://api.thefork.io", "grant_type": "client_credentials",
        "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
    }
    [api_call] = thefork.requests_matching("GET", CUSTOMERS_PREFIX)
    assert api_call.route == f"/manager/v1/customers/{CUSTOMER}"
    assert api_call.headers["authorization"].startswith("Bearer ")


def test_reservation_created_fetches_the_reservation_then_its_customer(bridge, thefork):
    add_customer(thefork)
    thefork.add_reservation(fixture_json("thefork/reservation.json"))

    response = send(bridge, fixture_bytes("thefork/reservation_created.json"))

    assert response.status_code == 200
    [customer] = bridge.customers()
    assert customer["theForkId"] == CUSTOMER
    assert customer["metadata"]["theForkReservationUuid"] == RESERVATION
    assert customer["metadata"]["theForkRestaurantUuid"] == RESTAURANT
    assert customer["metadata"]["theForkReservationChannel"] == "TheFork"
    assert customer["metadata"]["theForkReservationStatus"] == "RECORDED"
    calls = [r.route for r in thefork.requests if r.method == "GET"]
    assert calls == [f"/manager/v1/reservations/{RESERVATION}", f"/manager/v1/customers/{CUSTOMER}"]


def test_walk_in_reservation_has_no_customer_and_imports_nothing(bridge, thefork):
    reservation = {**fixture_json("thefork/reservation.json"), "customerUuid": None, "reservationChannel": "Walk-in"}
    thefork.add_reservation(reservation)

    response = send(bridge, fixture_bytes("thefork/reservation_created.json"))

    assert response.status_code == 200
    assert bridge.customers() == []
    assert thefork.requests_matching("GET", CUSTOMERS_PREFIX) == []
    assert bridge.retry_jobs() == [] and bridge.dead_letters() == []


def test_older_payload_without_group_or_restaurant_is_accepted(bridge, thefork):
    """The older version of TheFork's page shows only entityType, uuid and eventType."""
    add_customer(thefork)
    thefork.add_reservation({**fixture_json("thefork/reservation.json"), "reservationUuid": "645aed28-67a5-4765-93f9-862c5697650c"})

    assert send(bridge, fixture_bytes("thefork/reservation_created_legacy.json")).status_code == 200

    [customer] = bridge.customers()
    assert customer["theForkId"] == CUSTOMER
    assert "theForkGroupUuid" not in customer["metadata"]


def test_customer_updated_with_the_reservation_of_the_same_guest_is_one_customer(bridge, thefork):
    add_customer(thefork)
    thefork.add_reservation(fixture_json("thefork/reservation.json"))
    updated = {**fixture_json("thefork/customer_created.json"), "eventType": "customerUpdated"}

    assert send(bridge, fixture_bytes("thefork/customer_created.json")).status_code == 200
    assert send(bridge, updated).status_code == 200
    assert send(bridge, fixture_bytes("thefork/reservation_created.json")).status_code == 200

    assert [c["theForkId"] for c in bridge.customers()] == [CUSTOMER]


# -- authentication --------------------------------------------------------------------------------


def test_forged_then_missing_token_is_401_and_imports_nothing(bridge, thefork):
    add_customer(thefork)
    body = fixture_bytes("thefork/customer_created.json")

    forged = send(bridge, body, token="NN8ul7c3wRE0hYP2XPOhyYDRQnyHFMJq")
    missing = send(bridge, body, token=None)

    assert forged.status_code == 401 and forged.json_body["error"] == "unauthorized"
    assert missing.status_code == 401 and missing.json_body["error"] == "unauthorized"
    assert send(bridge, body, token="").status_code == 401
    assert bridge.customers() == [] and thefork.requests == []


def test_unset_webhook_token_accepts_nothing_and_answers_503_misconfigured(bridge, thefork, capsys):
    bridge.configure(thefork_webhook_token=None)
    add_customer(thefork)
    capsys.readouterr()
    for token in ("", WEBHOOK_TOKEN):
        response = send(bridge, fixture_bytes("thefork/customer_created.json"), token=token)
        assert response.status_code == 503 and response.json_body["error"] == "misconfigured"
    logged = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"ts"')]
    assert ["THEFORK_WEBHOOK_TOKEN is not configured" in line["reason"] for line in logged
            if line["outcome"] == "misconfigured"] == [True, True]
    assert bridge.customers() == [] and thefork.requests == [] and bridge.retry_jobs() == []


def test_tokens_and_guest_data_never_appear_in_logs(bridge, thefork, capsys):
    add_customer(thefork)
    send(bridge, fixture_bytes("thefork/customer_created.json"))
    send(bridge, fixture_bytes("thefork/customer_created.json"), token="wrong-token-value-42")
    out = capsys.readouterr().out
    assert '"outcome": "imported"' in out
    for secret in (WEBHOOK_TOKEN, "wrong-token-value-42", CLIENT_SECRET, "camille.durand@exemple.fr", "671234589", "Durand"):
        assert secret not in out


def test_connector_signs_requests_the_way_it_verifies_them(bridge, thefork):

    add_customer(thefork)
    body = fixture_bytes("thefork/customer_created.json")
    headers, query = platforms.sign_for("thefork", body, os.environ)
    path = "/webhooks/thefork?" + "&".join(f"{k}={v}" for k, v in query.items())
    assert bridge.client.http.post(path, headers=headers, body=body).status_code == 200
    assert len(bridge.customers()) == 1


# -- events we don't import, malformed bodies ------------------------------------------------------


@pytest.mark.parametrize("payload", [
    fixture_json("thefork/review_rating_created.json"),
    {**fixture_json("thefork/review_rating_created.json"), "eventType": "reviewValidityChanged"},
    {"entityType": "restaurant", "eventType": "restaurantUpdated", "uuid": RESTAURANT},
], ids=["reviewRatingCreated", "reviewValidityChanged", "unknown"])
def test_events_without_a_guest_are_acknowledged_and_ignored(bridge, thefork, payload, capsys):
    response = send(bridge, payload)

    assert response.status_code == 200
    assert json.loads(response.body) == {"data": {}}
    assert '"outcome": "ignored"' in capsys.readouterr().out
    assert thefork.requests == [] and bridge.customers() == []


@pytest.mark.parametrize("body", [
    b"not json",
    b"",
    b'[{"entityType": "customer", "eventType": "customerCreated", "uuid": "d7b2f4a1"}]',
    b'{"entityType": "customer", "eventType": "customerCreated"}',
    b'{"entityType": "customer", "eventType": "customerCreated", "uuid": "../reservations/x"}',
    b'{"entityType": "review", "eventType": "customerCreated", "uuid": "d7b2f4a1-3c8e-4f5d-9a2b-1e6c8f3d5a7b"}',
], ids=["not-json", "empty", "array", "no-uuid", "uuid-with-path", "entity-mismatch"])
def test_malformed_body_is_400_with_a_reason(bridge, thefork, body):
    response = send(bridge, body)

    assert response.status_code == 400
    assert response.json_body["error"] == "malformed" and response.json_body["reason"]
    assert thefork.requests == [] and bridge.customers() == []


# -- fetch failures, retries, dead letters ---------------------------------------------------------


def test_api_failing_queues_the_fetch_and_the_worker_imports_once_it_recovers(bridge, thefork):
    add_customer(thefork)
    thefork.faults.always(Fault("status", status=503), path=CUSTOMERS_PREFIX)

    assert send(bridge, fixture_bytes("thefork/customer_created.json")).status_code == 200
    assert bridge.customers() == []
    [job] = bridge.retry_jobs()
    assert job["platform"] == "thefork" and job["stage"] == "fetch"
    assert job["last_error"] == "TheFork API answered 503"

    thefork.faults.clear()
    bridge.drain()

    assert [c["theForkId"] for c in bridge.customers()] == [CUSTOMER]
    assert bridge.retry_jobs() == [] and bridge.dead_letters() == []
    assert thefork.token_requests == 1  # the worker reused the container's token


def test_rate_limited_token_endpoint_is_retried(bridge, thefork):
    add_customer(thefork)
    thefork.faults.add(Fault("status", status=429, retry_after=0), path=TOKEN_PATH)

    assert send(bridge, fixture_bytes("thefork/customer_created.json")).status_code == 200
    [job] = bridge.retry_jobs()
    assert job["stage"] == "fetch" and "token endpoint answered 429" in job["last_error"]

    bridge.drain()
    assert len(bridge.customers()) == 1


def test_unknown_customer_is_dead_lettered_with_the_reason(bridge, thefork):
    assert send(bridge, fixture_bytes("thefork/customer_created.json")).status_code == 200

    [letter] = bridge.dead_letters()
    assert letter["kind"] == "permanent"
    assert "404" in letter["reason"] and "CUSTOMER_NOT_FOUND" in letter["reason"]
    assert bridge.retry_jobs() == []


def test_unknown_reservation_is_dead_lettered(bridge, thefork):
    assert send(bridge, fixture_bytes("thefork/reservation_created.json")).status_code == 200
    [letter] = bridge.dead_letters()
    assert letter["kind"] == "permanent" and "RESERVATION_NOT_FOUND" in letter["reason"]


def test_missing_api_credentials_are_held_until_configured(bridge, thefork):
    bridge.configure(thefork_client_secret=None)
    add_customer(thefork)

    assert send(bridge, fixture_bytes("thefork/customer_created.json")).status_code == 200

    [job] = bridge.retry_jobs()
    assert job["last_error"] == "TheFork client id or secret not configured"
    assert bridge.dead_letters() == [] and thefork.requests == []

    bridge.configure(thefork_client_secret=CLIENT_SECRET)
    bridge.drain()
    assert [c["theForkId"] for c in bridge.customers()] == [CUSTOMER]
    assert bridge.retry_jobs() == [] and bridge.dead_letters() == []


# -- the token's lifetime --------------------------------------------------------------------------


def test_duplicate_delivery_is_one_customer_and_one_token(bridge, thefork):
    add_customer(thefork)
    for _ in range(3):
        assert send(bridge, fixture_bytes("thefork/customer_created.json")).status_code == 200

    assert [c["theForkId"] for c in bridge.customers()] == [CUSTOMER]
    assert thefork.token_requests == 1  # TheFork: never request a token before the previous one expires
    assert len(thefork.requests_matching("GET", CUSTOMERS_PREFIX)) == 3


def test_token_is_renewed_once_it_expires(bridge, thefork):
    thefork.token_ttl = 1
    add_customer(thefork)
    send(bridge, fixture_bytes("thefork/customer_created.json"))
    send(bridge, fixture_bytes("thefork/customer_created.json"))
    assert thefork.token_requests == 1

    time.sleep(1.0)
    send(bridge, fixture_bytes("thefork/customer_created.json"))
    assert thefork.token_requests == 2


def test_revoked_token_is_renewed_once(bridge, thefork):
    add_customer(thefork)
    send(bridge, fixture_bytes("thefork/customer_created.json"))
    thefork.revoke_tokens()

    assert send(bridge, fixture_bytes("thefork/customer_created.json")).status_code == 200

    assert thefork.token_requests == 2
    assert bridge.dead_letters() == [] and bridge.retry_jobs() == []


# -- mapping details -------------------------------------------------------------------------------


def test_newsletter_false_or_absent_leaves_the_email_optin_null(bridge, thefork):
    add_customer(thefork, optins={"restaurantNewsletter": False})
    send(bridge, fixture_bytes("thefork/customer_created.json"))
    other = {**fixture_json("thefork/customer_created.json"), "uuid": "e1c4a2b3-0000-4000-8000-000000000001"}
    add_customer(thefork, customerUuid=other["uuid"], email="other@example.org", phone=None, optins=None)
    send(bridge, other)

    imports = sent_imports(bridge)
    assert len(imports) == 2
    assert all("emailOptin" not in body and "smsOptin" not in body for body in imports)


def test_contact_fields_are_cleaned_or_dropped(bridge, thefork):
    add_customer(thefork, email="not an email", phone="+44 20 7946 0958", locale="en_GB", civility="mr_and_mrs",
                 firstName="  Camille ", lastName=None)
    send(bridge, fixture_bytes("thefork/customer_created.json"))

    [body] = sent_imports(bridge)
    assert body["phoneNumber"] == "+442079460958"
    assert body["language"] == "en"
    assert "email" not in body and "civility" not in body and "lastName" not in body  # two people: no civility
    assert body["displayName"] == "Camille"


def test_local_number_is_read_in_the_guest_country_when_not_valid_in_the_tenant_region(bridge, thefork):
    add_customer(thefork, phone="030 901820", locale="de_DE", country="DE")
    send(bridge, fixture_bytes("thefork/customer_created.json"))
    [body] = sent_imports(bridge)
    assert body["phoneNumber"] == "+4930901820"


def test_contactless_guest_is_kept_once_by_the_ledger(bridge, thefork):
    add_customer(thefork, email=None, phone=None)
    for _ in range(2):
        assert send(bridge, fixture_bytes("thefork/customer_created.json")).status_code == 200

    [customer] = bridge.customers()
    assert customer["theForkId"] == CUSTOMER
    assert bridge.fullwhere.import_count == 1


def test_civility_codes():
    from chalicelib.connectors.thefork import civility

    assert [civility(v) for v in ("mr", "MRS", "ms", "mx", "doctor", "Dr.", "professor")] == [
        "Mr.", "Mrs.", "Ms.", "Mx.", "Dr.", "Dr.", "Prof."]
    assert [civility(v) for v in ("mr_and_mrs", "company", "duchess", "", None, 3)] == [None] * 6


# -- tenants ---------------------------------------------------------------------------------------


def write_tenants(tmp_path, accounts: dict) -> str:
    tenants = tmp_path / "tenants.json"
    tenants.write_text(json.dumps({"tenants": [{
        "id": "bistro", "fullwhere_api_key": "test-key", "fullwhere_api_secret": "test-secret",
        "platforms": {"thefork": {"accounts": accounts}},
    }]}))
    return str(tenants)


def test_restaurant_then_group_route_events_to_their_tenant_with_its_own_api_client(bridge, thefork, tmp_path):
    own = {"client_id": TENANT_CLIENT_ID, "client_secret": TENANT_CLIENT_SECRET}
    bridge.configure(tenants_file=write_tenants(tmp_path, {RESTAURANT: own, GROUP: own}))
    add_customer(thefork)
    thefork.add_reservation(fixture_json("thefork/reservation.json"))

    assert send(bridge, fixture_bytes("thefork/reservation_created.json")).status_code == 200  # restaurantUuid
    assert send(bridge, fixture_bytes("thefork/customer_created.json")).status_code == 200  # groupUuid only

    assert [c["theForkId"] for c in bridge.customers()] == [CUSTOMER]
    assert thefork.token_clients() == [TENANT_CLIENT_ID]  # one token, the tenant's client
    assert bridge.dead_letters() == []


def test_unlisted_restaurant_is_held_as_unrouted_until_a_tenant_lists_it(bridge, thefork, tmp_path):
    bridge.configure(tenants_file=write_tenants(tmp_path, {GROUP: {}}))
    thefork.add_reservation(fixture_json("thefork/reservation.json"))
    add_customer(thefork)

    assert send(bridge, fixture_bytes("thefork/reservation_created.json")).status_code == 200

    assert bridge.customers() == [] and thefork.requests == [] and bridge.dead_letters() == []
    [job] = bridge.retry_jobs()
    assert job["tenant"] is None
    assert job["event"]["account_id"] == RESTAURANT  # restaurantUuid wins over groupUuid

    own = {"client_id": TENANT_CLIENT_ID, "client_secret": TENANT_CLIENT_SECRET}
    write_tenants(tmp_path, {GROUP: {}, RESTAURANT: own})
    bridge.configure()  # the tenants document is read again
    bridge.drain()
    assert [c["theForkId"] for c in bridge.customers()] == [CUSTOMER]
    assert thefork.token_clients() == [TENANT_CLIENT_ID]
    assert bridge.retry_jobs() == [] and bridge.dead_letters() == []
