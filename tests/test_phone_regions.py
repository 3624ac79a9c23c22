"""Phone numbers written without their country code, over HTTP: each platform's country signal is tried
before the tenant's region and DEFAULT_PHONE_REGION (here FR); a number valid in no candidate region is
dropped (docs/platforms.md, "Phone numbers")."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sandbox.platforms.oracle import make_event
from tests.conftest import MEWS_ENTERPRISE, fixture_json
from tests.test_oracle import HOTEL, ohip, opera, profile, pull  # noqa: F401  (fixtures)
from tests.test_sevenrooms import (
    API_CLIENT_ID,
    API_CLIENT_SECRET,
    WEBHOOK_SECRET,
    reservation,
    send_with_token,
    sevenrooms,  # noqa: F401  (fixture)
)
from tests.test_thefork import CUSTOMER, add_customer, send, thefork, thefork_server  # noqa: F401  (fixtures)

VENDOR = Path(__file__).resolve().parents[2] / "shared" / "real_payloads"
# The vendors' examples live beside the project (CI copies shared/ there), never in it.
needs_vendor_examples = pytest.mark.skipif(not VENDOR.is_dir(), reason=f"no vendor examples at {VENDOR}")
GB_MOBILE, GB_E164 = "07911 123456", "+447911123456"  # invalid in FR and in the US
NOWHERE = "12345"  # valid in no region


@pytest.fixture(autouse=True)
def french_default(bridge):
    bridge.configure(default_phone_region="FR")


@pytest.fixture
def seven(bridge, sevenrooms):  # noqa: F811
    sevenrooms.reset()
    bridge.configure(sevenrooms_auth="token", sevenrooms_webhook_secret=WEBHOOK_SECRET,
                     sevenrooms_signature_encoding=None, sevenrooms_signature_header=None,
                     sevenrooms_client_id=API_CLIENT_ID, sevenrooms_client_secret=API_CLIENT_SECRET,
                     sevenrooms_api_url=sevenrooms.api_url, sevenrooms_sms_optin_is_marketing=None,
                     sevenrooms_fallback_phone_region=None)
    return sevenrooms


def phones(bridge) -> list[str | None]:
    return [customer.get("phoneNumber") for customer in bridge.customers()]


# -- SevenRooms ---------------------------------------------------------------------------------------

@needs_vendor_examples
def test_sevenrooms_vendor_example_keeps_its_new_york_number_with_the_default_region_fr(bridge, seven):
    """The example reservation carries no country, locale, currency or timezone, and no client_id to fetch:
    only SEVENROOMS_FALLBACK_PHONE_REGION (US by default), tried after FR, reads "212-555-7056"."""
    body = (VENDOR / "sevenrooms" / "webhook_envelope_with_vendor_reservation.json").read_bytes()

    assert send_with_token(bridge, body).status_code == 200

    [customer] = bridge.customers()
    assert (customer["email"], customer["phoneNumber"]) == ("jsnow@srdemo.com", "+12125557056")
    assert seven.requests == []  # no client_id: nothing fetched, the example alone decided


@needs_vendor_examples
def test_sevenrooms_vendor_example_loses_its_phone_without_the_fallback(bridge, seven):
    bridge.configure(sevenrooms_fallback_phone_region="none")
    body = (VENDOR / "sevenrooms" / "webhook_envelope_with_vendor_reservation.json").read_bytes()

    assert send_with_token(bridge, body).status_code == 200

    [customer] = bridge.customers()
    assert customer["email"] == "jsnow@srdemo.com" and customer.get("phoneNumber") is None


def test_sevenrooms_guest_country_reads_a_national_number(bridge, seven):
    assert send_with_token(bridge, reservation(client_id=None, country="GB", phone_number=GB_MOBILE)).status_code == 200
    assert phones(bridge) == [GB_E164]


def test_sevenrooms_fallback_never_rereads_a_number_the_default_region_accepts(bridge, seven):
    assert send_with_token(bridge, reservation(client_id=None, phone_number="06 12 34 56 78")).status_code == 200
    assert phones(bridge) == ["+33612345678"]


def test_sevenrooms_number_valid_nowhere_is_dropped(bridge, seven):
    assert send_with_token(bridge, reservation(client_id=None, country="GB", phone_number=NOWHERE)).status_code == 200
    [customer] = bridge.customers()
    assert customer["email"] and customer.get("phoneNumber") is None


# -- Mews ------------------------------------------------------------------------------------------------

def mews_guest(bridge, **overrides) -> None:
    customer_id = "c2f1d888-232e-49eb-87ac-5f75363af13b"
    bridge.mews.add_customer(MEWS_ENTERPRISE, {**fixture_json("mews/customer.json"), "Id": customer_id, **overrides})
    response = bridge.send_mews({"EnterpriseId": MEWS_ENTERPRISE, "IntegrationId": "c8bee838-7fb1-4f4e-8fac-ac87008b2f90",
                                 "Events": [{"Discriminator": "CustomerAdded", "Value": {"Id": customer_id}}]})
    assert response.status_code == 200


def test_mews_address_country_reads_a_national_number_before_the_nationality(bridge):
    address = {**fixture_json("mews/customer.json")["Address"], "CountryCode": "GB"}
    mews_guest(bridge, Phone=GB_MOBILE, NationalityCode="US", Address=address)
    assert phones(bridge) == [GB_E164]


def test_mews_nationality_alone_reads_a_national_number(bridge):
    mews_guest(bridge, Phone=GB_MOBILE, NationalityCode="GB", Address=None)
    assert phones(bridge) == [GB_E164]


def test_mews_number_valid_nowhere_is_dropped(bridge):
    address = {**fixture_json("mews/customer.json")["Address"], "CountryCode": "GB"}
    mews_guest(bridge, Phone=NOWHERE, NationalityCode="GB", Address=address)
    [customer] = bridge.customers()
    assert customer["email"] and customer.get("phoneNumber") is None


# -- TheFork ------------------------------------------------------------------------------------------

def thefork_guest(bridge, thefork_server, **overrides) -> None:  # noqa: F811
    add_customer(thefork_server, customerUuid=CUSTOMER, **overrides)
    response = send(bridge, {"entityType": "customer", "eventType": "customerCreated", "uuid": CUSTOMER})
    assert response.status_code == 200


def test_thefork_address_country_reads_a_national_number(bridge, thefork):  # noqa: F811
    thefork_guest(bridge, thefork, phone=GB_MOBILE, country="GB", locale="fr_FR")
    assert phones(bridge) == [GB_E164]


def test_thefork_locale_country_reads_a_national_number(bridge, thefork):  # noqa: F811
    thefork_guest(bridge, thefork, phone=GB_MOBILE, country=None, locale="en_GB")
    assert phones(bridge) == [GB_E164]


def test_thefork_number_valid_nowhere_is_dropped(bridge, thefork):  # noqa: F811
    thefork_guest(bridge, thefork, phone=NOWHERE, country="GB", locale="en_GB")
    [customer] = bridge.customers()
    assert customer["email"] and customer.get("phoneNumber") is None


# -- OPERA Cloud --------------------------------------------------------------------------------------

def opera_guest(bridge, opera, phone: str, addresses: list[dict], **customer) -> None:  # noqa: F811
    base = fixture_json("oracle/profile.json")["profileDetails"]["customer"]
    opera.add_profile("990", profile(
        "990", customer={**base, "nationality": None, "citizenCountry": None, **customer},
        addresses={"addressInfo": [{"address": address} for address in addresses]},
        telephones={"telephoneInfo": [{"telephone": {"phoneNumber": phone, "phoneUseType": "MOBILE"}}]}))
    opera.enqueue(HOTEL, make_event("P1", "NEW PROFILE", "990"))
    pull(bridge)


def test_opera_primary_address_country_reads_a_national_number(bridge, opera):  # noqa: F811
    addresses = [{"cityName": "Paris", "country": {"code": "FR"}},
                 {"cityName": "London", "country": {"code": "GB"}, "primaryInd": True}]
    opera_guest(bridge, opera, GB_MOBILE, addresses, nationality="US")
    assert phones(bridge) == [GB_E164]


def test_opera_number_valid_nowhere_is_dropped(bridge, opera):  # noqa: F811
    opera_guest(bridge, opera, NOWHERE, [{"country": {"code": "GB"}, "primaryInd": True}], nationality="GB")
    [customer] = bridge.customers()
    assert customer["email"] and customer.get("phoneNumber") is None


@needs_vendor_examples
def test_vendor_examples_carry_the_signals_the_docs_name():
    """docs/platforms.md names these fields as each platform's signal: the vendors' own examples have them."""
    mews = json.loads((VENDOR / "mews" / "customers_getAll_response.json").read_text())["Customers"][0]
    assert (mews["Address"]["CountryCode"], mews["NationalityCode"]) == ("GB", "US")
    fork = json.loads((VENDOR / "thefork" / "customer_vendor_example.json").read_text())
    assert (fork["country"], fork["locale"]) == ("FR", "fr_FR")
    opera_profile = json.loads((VENDOR / "oracle" / "getProfile_example.json").read_text())
    details = opera_profile["profiles"]["profileInfo"][0]["profile"]
    assert details["addresses"]["addressInfo"][0]["address"]["country"]["code"] == "US"
    seven = json.loads((VENDOR / "sevenrooms" / "reservation_entity_vendor_example.json").read_text())
    assert not {"country", "phone_number_locale", "currency", "timezone", "client_id"} & set(seven)
