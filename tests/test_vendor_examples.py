"""The vendors' own published examples, end to end: each goes through the full route (the webhook, signed or
tokened as the platform does → the platform's emulator answering with the vendor's example verbatim → the
Fullwhere emulator), and the customer Fullwhere holds is asserted field by field.

The examples are read from ``../shared/real_payloads/`` (beside the clone; its README gives each source) and
never copied into the project. Where a vendor publishes only the entity (Mews, TheFork, OPERA), the webhook
around it is ours, built from the documented notification shape: ids only.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from sandbox.emulators.fullwhere import IMPORT_FIELDS
from sandbox.platforms import mews, oracle, thefork
from tests.support.sandbox_bridge import SandboxBridge, sandbox_bridge

REAL_PAYLOADS = Path(__file__).resolve().parent.parent.parent / "shared" / "real_payloads"

pytestmark = pytest.mark.skipif(not REAL_PAYLOADS.is_dir(), reason=f"no vendor examples at {REAL_PAYLOADS}")


def vendor(name: str) -> Any:
    return json.loads((REAL_PAYLOADS / name).read_text(encoding="utf-8"))


def vendor_bytes(name: str) -> bytes:
    return (REAL_PAYLOADS / name).read_bytes()


# -- the bridge on the sandbox ---------------------------------------------------------------------

@pytest.fixture
def stack(sandbox, moto_endpoint, monkeypatch):
    with sandbox_bridge(sandbox, moto_endpoint, monkeypatch, "vendor") as bridge:
        yield bridge


def post(stack: SandboxBridge, platform: str, body: bytes, query: str):
    """``body`` posted as the platform posts it: none of these four signs, the URL carries our token."""
    return stack.client.http.post(f"/webhooks/{platform}?{query}", headers={"Content-Type": "application/json"},
                                  body=body)


def received(stack: SandboxBridge) -> list[dict[str, Any]]:
    """Every customer Fullwhere holds, reduced to the import fields that hold something. The stored view
    shows an unset opt-in as ``false``, so opt-ins are taken from the import bodies Fullwhere received:
    absent there (not stated) stays absent here, a sent ``false`` is kept."""
    sent = [request.body for request in stack.sandbox.fullwhere.requests if request.path == "/partners/customer"]
    customers = []
    for customer in stack.customers():
        kept = {name: customer[name] for name in IMPORT_FIELDS
                if name not in ("smsOptin", "emailOptin") and customer.get(name) not in (None, "", {})}
        for name in ("smsOptin", "emailOptin"):
            stated = [body[name] for body in sent if body.get(name) is not None
                      and (body.get("email"), body.get("phoneNumber")) == (customer["email"], customer["phoneNumber"])]
            if stated:
                kept[name] = customer[name]
        customers.append(kept)
    return customers


# -- Mews ---------------------------------------------------------------------------------------------

MEWS_CUSTOMER = {
    "firstName": "John", "lastName": "Smith", "displayName": "John Smith",
    "civility": "Mr.",  # Title "Mister"
    "language": "en",  # PreferredLanguageCode en-GB wins over LanguageCode en-US
    "email": "j.smith@example.com",
    # No phoneNumber: "00420123456789" reads as +420 123 456 789, a placeholder outside the Czech numbering
    # plan (no Czech number starts with 1): an invalid number is left out rather than stored.
    "emailOptin": True,  # "SendMarketingEmails" in Options; no SMS consent stated: smsOptin absent
    "mewsId": "fadd5bb6-b428-45d5-94f8-fd0d89fece6d",
    "metadata": {"source": "mews", "mewsEnterpriseId": mews.ENTERPRISE, "mewsNationality": "US",
                 "mewsLoyaltyCode": "LL810213", "mewsClassifications": "Returning"},
}


def mews_query(stack: SandboxBridge) -> str:
    return f"Token={stack.sandbox.environment()['MEWS_WEBHOOK_TOKEN']}"


def mews_answer(stack: SandboxBridge, path: str, ids_field: str, entity_id: str) -> Any:
    """What the emulator answers a Connector call for ``entity_id``, asked directly."""
    env = stack.sandbox.environment()
    body = {"ClientToken": env["MEWS_CLIENT_TOKEN"], "AccessToken": env["MEWS_ACCESS_TOKEN"], "Client": "test",
            "Limitation": {"Count": 10}, ids_field: [entity_id], "Extent": {"Customers": True}}
    return httpx.post(stack.sandbox.platforms["mews"].url + path, json=body).json()


def test_mews_customers_getall_example_is_imported_from_a_customer_added_webhook(stack):
    answer = vendor("mews/customers_getAll_response.json")
    [customer] = answer["Customers"]
    stack.sandbox.platforms["mews"].add_customer(mews.ENTERPRISE, customer)
    # The emulator answers customers/getAll with the vendor's response, byte for byte as JSON.
    assert mews_answer(stack, mews.CUSTOMERS_PATH, "CustomerIds", customer["Id"]) == answer

    body = json.dumps(mews.make_webhook(mews.ENTERPRISE, [("CustomerAdded", customer["Id"])])).encode()
    assert post(stack, "mews", body, mews_query(stack)).status_code == 200

    assert received(stack) == [MEWS_CUSTOMER]


def test_mews_reservations_getall_example_leads_to_its_customer(stack):
    [customer] = vendor("mews/customers_getAll_response.json")["Customers"]
    answer = vendor("mews/reservations_getAll_2023-06-06_response.json")
    [reservation] = answer["Reservations"]
    emulator = stack.sandbox.platforms["mews"]
    emulator.add_customer(mews.ENTERPRISE, customer)
    emulator.add_reservation(mews.ENTERPRISE, reservation)
    assert mews_answer(stack, mews.RESERVATIONS_PATH, "ReservationIds", reservation["Id"]) == answer
    assert reservation["AccountId"] == customer["Id"]  # the vendor's two examples are one guest
    before = (emulator.get_reservations_calls, emulator.get_customers_calls)

    body = json.dumps(mews.make_webhook(mews.ENTERPRISE, [("ServiceOrderUpdated", reservation["Id"])])).encode()
    assert post(stack, "mews", body, mews_query(stack)).status_code == 200

    assert received(stack) == [MEWS_CUSTOMER]
    # The bridge read the reservation, then its owner (AccountId).
    assert (emulator.get_reservations_calls - before[0], emulator.get_customers_calls - before[1]) == (1, 1)


def test_mews_integration_webhook_example_is_acknowledged_and_imports_nothing(stack):
    response = post(stack, "mews", vendor_bytes("mews/integration_webhook_created.json"), mews_query(stack))

    assert response.status_code == 200
    assert stack.customers() == []
    assert stack.sandbox.platforms["mews"].requests == []  # nothing to fetch: no guest in it
    assert stack.retry_jobs() == [] and stack.dead_letters() == []


def test_mews_integration_webhook_example_needs_the_token(stack):
    response = post(stack, "mews", vendor_bytes("mews/integration_webhook_created.json"), "Token=not-the-token")
    assert response.status_code == 401


# -- TheFork ------------------------------------------------------------------------------------------

THEFORK_UUID = "3fa85f64-5717-4562-b3fc-2c963f66afa6"  # the vendor's placeholder for every uuid
THEFORK_CUSTOMER = {
    # The vendor's example swaps them ("firstName": "Doe", "lastName": "John"): imported as given.
    "firstName": "Doe", "lastName": "John", "displayName": "Doe John",
    "language": "fr",  # locale fr_FR
    "email": "john@example.com",  # no phone in the example
    "emailOptin": True,  # optins.restaurantNewsletter true; no SMS consent documented
    "theForkId": THEFORK_UUID,
}


def thefork_query(stack: SandboxBridge) -> str:
    return f"token={stack.sandbox.environment()['THEFORK_WEBHOOK_TOKEN']}"


def thefork_answer(stack: SandboxBridge, collection: str, uuid: str) -> Any:
    env, emulator = stack.sandbox.environment(), stack.sandbox.platforms["thefork"]
    token = httpx.post(emulator.url + thefork.TOKEN_PATH, data={
        "client_id": env["THEFORK_CLIENT_ID"], "client_secret": env["THEFORK_CLIENT_SECRET"],
        "grant_type": "client_credentials", "audience": thefork.AUDIENCE}).json()["access_token"]
    return httpx.get(f"{emulator.api_url}/v1/{collection}/{uuid}", headers={"Authorization": f"Bearer {token}"}).json()


def test_thefork_customer_example_is_imported_from_a_customer_created_webhook(stack):
    customer = vendor("thefork/customer_vendor_example.json")
    stack.sandbox.platforms["thefork"].add_customer(customer)
    assert thefork_answer(stack, "customers", customer["customerUuid"]) == customer

    body = json.dumps({"entityType": "customer", "eventType": "customerCreated", "uuid": customer["customerUuid"],
                       "groupUuid": "c1fa3225-690d-4b86-b255-042b3c218b68"}).encode()
    assert post(stack, "thefork", body, thefork_query(stack)).status_code == 200

    assert received(stack) == [{**THEFORK_CUSTOMER, "metadata": {
        "source": "thefork", "theForkGroupUuid": "c1fa3225-690d-4b86-b255-042b3c218b68",
        "theForkOriginRestaurantUuid": "ddc14c13-98ce-4ece-9c82-98f84050f6f5"}}]


def test_thefork_reservation_example_leads_to_its_customer(stack):
    customer = vendor("thefork/customer_vendor_example.json")
    reservation = vendor("thefork/reservation_vendor_example.json")
    emulator = stack.sandbox.platforms["thefork"]
    emulator.add_customer(customer)
    emulator.add_reservation(reservation)
    assert thefork_answer(stack, "reservations", reservation["reservationUuid"]) == reservation

    body = json.dumps({"entityType": "reservation", "eventType": "reservationCreated",
                       "uuid": reservation["reservationUuid"], "restaurantUuid": reservation["restaurantUuid"]}).encode()
    assert post(stack, "thefork", body, thefork_query(stack)).status_code == 200

    assert received(stack) == [{**THEFORK_CUSTOMER, "metadata": {
        "source": "thefork", "theForkRestaurantUuid": THEFORK_UUID,
        "theForkOriginRestaurantUuid": "ddc14c13-98ce-4ece-9c82-98f84050f6f5",
        "theForkReservationUuid": THEFORK_UUID, "theForkReservationStatus": "RECORDED"}}]
    customer_lookups = emulator.requests_matching("GET", thefork.CUSTOMERS_PREFIX)
    assert [request.path for request in customer_lookups][-1] == thefork.CUSTOMERS_PREFIX + reservation["customerUuid"]


# -- SevenRooms ---------------------------------------------------------------------------------------

SEVENROOMS_ENVELOPE = "sevenrooms/webhook_envelope_with_vendor_reservation.json"
SEVENROOMS_RESERVATION = "ahhzfnNldmVucm9vbXMtc2VjdXJlLWRlbW9yIgsSFW5pZ2h0bG9vcF9SZXNlcnZhdGlvbhiAgNCa5ejgCgw"


def send_sevenrooms_example(stack: SandboxBridge) -> list[dict[str, Any]]:
    envelope = vendor(SEVENROOMS_ENVELOPE)
    # The envelope holds the vendor's "Get a Reservation" example, unchanged.
    assert envelope["entity"] == vendor("sevenrooms/reservation_entity_vendor_example.json")
    query = f"token={stack.sandbox.environment()['SEVENROOMS_WEBHOOK_SECRET']}"
    response = post(stack, "sevenrooms", vendor_bytes(SEVENROOMS_ENVELOPE), query)
    assert response.status_code == 200
    return received(stack)


def test_sevenrooms_reservation_example_is_imported(stack):
    [customer] = send_sevenrooms_example(stack)

    customer.pop("phoneNumber", None)  # asserted on its own below (the region of a national number)
    assert customer == {
        "firstName": "Jon", "lastName": "Snow", "displayName": "Jon Snow",
        "email": "jsnow@srdemo.com",
        # No client_id in the vendor's reservation: the client is neither fetched nor named (no sevenroomsId,
        # never the reservation's id in its place); so no language, salutation or marketing consent either.
        "metadata": {"source": "sevenrooms",
                     "sevenroomsVenueId": "ahhzfnNldmVucm9vbXMtc2VjdXJlLWRlbW9yHAsSD25pZ2h0bG9vcF9WZW51ZRiAgNCKuYezCgw",
                     "sevenroomsReservationId": SEVENROOMS_RESERVATION, "sevenroomsReferenceCode": "I9YJ5HC",
                     "sevenroomsReservationStatus": "Reserved"},
    }
    assert stack.sandbox.platforms["sevenrooms"].requests == []


def test_sevenrooms_reservation_example_phone_is_read_as_new_york(stack):
    # No country in the example: read by SEVENROOMS_FALLBACK_PHONE_REGION (US), tried after FR (docs/platforms.md).
    [customer] = send_sevenrooms_example(stack)
    assert customer.get("phoneNumber") == "+12125557056"


# -- OPERA Cloud --------------------------------------------------------------------------------------

OPERA_PROFILE_ID = "1280812"  # primaryKey of the vendor's NEW PROFILE and UPDATE PROFILE events


def pull_opera_examples(stack: SandboxBridge, profile: dict[str, Any]) -> None:
    ohip = stack.sandbox.platforms["oracle"]
    ohip.enqueue(oracle.HOTEL, *vendor("oracle/getBusinessEvents_example.json")["businessEventData"])
    ohip.add_profile(OPERA_PROFILE_ID, profile)
    stack.pull("oracle")
    stack.drain()
    assert ohip.queued(oracle.HOTEL) == 0
    # Only the two profile events name a profile to read; the reservation events are not fetched.
    assert {request.path for request in ohip.requests_matching("GET", oracle.PROFILES_PREFIX)} == {
        oracle.PROFILES_PREFIX + OPERA_PROFILE_ID}


def test_opera_business_events_with_the_anonymised_profile_example_import_nothing(stack):
    profile = vendor("oracle/getProfile_example.json")
    assert profile["profiles"]["profileInfo"][0]["profile"]["customer"]["anonymization"][
        "anonymizationStatus"] == "REQUESTED"

    pull_opera_examples(stack, profile)

    assert stack.customers() == []  # the guest asked to be forgotten
    assert stack.dead_letters() == [] and stack.retry_jobs() == []


def test_opera_profile_example_without_its_anonymisation_request_is_imported(stack):
    """The vendor's profile with only its anonymisation block removed: every other field as published."""
    profile = copy.deepcopy(vendor("oracle/getProfile_example.json"))
    del profile["profiles"]["profileInfo"][0]["profile"]["customer"]["anonymization"]

    pull_opera_examples(stack, profile)

    assert received(stack) == [{
        "firstName": "Thomas", "lastName": "Smith", "displayName": "Thomas Smith",
        "civility": "Mr.",  # namePrefix "a" is no civility; nameTitle "Mr" is
        "language": "en",  # customer.language "EN"
        "email": "eg@example.com",
        "phoneNumber": "+14155550100",  # "+1 415 555 0100" (its extension is not part of the number)
        "emailOptin": False, "smsOptin": False,  # privacyInfo allowEmail / allowSMS false: refusals
        # The example's profileIdList has no entry of type Profile: the event's primaryKey is the id.
        "oracleId": OPERA_PROFILE_ID,
        "metadata": {"source": "oracle", "oracleHotelId": oracle.HOTEL, "oracleEventType": "NEW PROFILE",
                     "oracleNationality": "US"},
    }]
