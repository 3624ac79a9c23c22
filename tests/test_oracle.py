"""OPERA Cloud end to end: the scheduled pull dequeues OHIP business events → CRM profile → Fullwhere,
with the position kept in DynamoDB (moto) and OHIP emulated over real HTTP."""

from __future__ import annotations

import copy
import json
import os

import pytest
from chalice.local import LambdaContext

from sandbox import aws as local_aws
from sandbox import platforms
from sandbox.emulators.base import Fault
from sandbox.platforms.oracle import OhipEmulator, make_event
from tests.conftest import fixture_json

CLIENT_ID, CLIENT_SECRET = "opera-client", "opera-client-secret-7c1"
APP_KEY = "41ecd082-8997-4c69-af34-2f72b83645ff"
OTHER_CLIENT_ID, OTHER_CLIENT_SECRET = "opera-client-b", "opera-client-b-secret-93e"
OTHER_APP_KEY = "5d1f2a3b-4c5d-4e6f-8a9b-0c1d2e3f4a5b"
ENTERPRISE, EXT_SYSTEM, HOTEL = "ENT123", "FULLWHERE", "HOTEL1"
PROFILE_ID = "1280812"  # primaryKey of the profile events in the documented sample
# businessEventId of the documented sample's four events, in queue order (NEW/UPDATE PROFILE, NEW/UPDATE RESERVATION).
SAMPLE_IDS = [item["businessEventId"]["id"] for item in fixture_json("oracle/business_events.json")["businessEventData"]]


@pytest.fixture(scope="module")
def ohip():
    server = OhipEmulator(clients={CLIENT_ID: CLIENT_SECRET, OTHER_CLIENT_ID: OTHER_CLIENT_SECRET},
                          app_keys={APP_KEY, OTHER_APP_KEY}, external_system_code=EXT_SYSTEM, enterprise_id=ENTERPRISE)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def opera(bridge, ohip):
    ohip.reset()  # the bridge fixture has already made the bridge forget its tokens
    bridge.configure(oracle_gateway_url=ohip.url, oracle_client_id=CLIENT_ID, oracle_client_secret=CLIENT_SECRET,
                     oracle_app_key=APP_KEY, oracle_enterprise_id=ENTERPRISE, oracle_external_system_code=EXT_SYSTEM,
                     oracle_hotel_ids=HOTEL)
    return ohip


def pull(bridge) -> dict:
    """Invoke the scheduled Lambda as EventBridge would, with a 60 s clock."""
    from app import app

    event = bridge.client.events.generate_cw_event("aws.events", "Scheduled Event", {}, [], region="eu-west-3")
    return app.handler_map["oracle_pull"](event, LambdaContext("oracle_pull", memory_size=512, max_runtime_ms=60_000))


def position(bridge, tenant: str = "default", hotel: str = HOTEL) -> dict:
    dynamodb = local_aws.client("dynamodb", bridge.endpoint)
    item = dynamodb.get_item(TableName=os.environ["IDENTITY_TABLE"], Key={"pk": {"S": f"position#oracle#{tenant}#{hotel}"}},
                             ConsistentRead=True).get("Item", {})
    return {
        "pending": [event["id"] for event in json.loads(item.get("pending", {}).get("S", "[]"))],
        "last_event_id": item.get("last_event_id", {}).get("S"),
        "handled": int(item.get("events_handled", {}).get("N", "0")),
        "leased": "lease_token" in item,
    }


def enqueue_sample(ohip) -> None:
    ohip.enqueue(HOTEL, *fixture_json("oracle/business_events.json")["businessEventData"])


def profile(profile_id: str = PROFILE_ID, **details) -> dict:
    body = copy.deepcopy(fixture_json("oracle/profile.json"))
    body["profileIdList"][0]["id"] = profile_id
    body["profileDetails"].update(details)
    return body


def test_profile_events_are_pulled_fetched_and_imported(bridge, opera):
    enqueue_sample(opera)
    opera.add_profile(PROFILE_ID, profile())

    summary = pull(bridge)

    [customer] = bridge.customers()
    assert customer["oracleId"] == PROFILE_ID
    assert (customer["firstName"], customer["lastName"], customer["displayName"]) == ("Thomas", "Smith", "Thomas Smith")
    assert (customer["civility"], customer["language"]) == ("Mr.", "en")
    assert customer["email"] == "eg@example.com"
    assert customer["phoneNumber"] == "+14155550100"
    assert (customer["emailOptin"], customer["smsOptin"]) == (True, False)  # optInEmail true, optInSms false
    assert customer["metadata"] == {"source": "oracle", "oracleHotelId": HOTEL, "oracleEventType": "NEW PROFILE",
                                    "oracleNationality": "US"}
    # NEW PROFILE and UPDATE PROFILE of the same profile: fetched once; the two reservation events ignored.
    assert opera.profile_calls == 1
    assert summary["read"] == 4 and summary["handled"] == 4
    assert summary["events_ignored"] == 2 and summary["events_duplicate"] == 1
    [profile_call] = opera.requests_matching("GET", f"/crm/v1/profiles/{PROFILE_ID}")
    assert profile_call.headers["x-hotelid"] == HOTEL and profile_call.headers["x-app-key"] == APP_KEY
    # Dequeued until OHIP answers 204 (empty queue).
    dequeues = opera.requests_matching("GET", "/int/v1/externalSystem/FULLWHERE/hotels/HOTEL1/businessEvents?limit=20")
    assert len(dequeues) == 2 and all(r.headers["authorization"].startswith("Bearer ") for r in dequeues)
    [token] = opera.requests_matching("POST", "/oauth/v1/tokens")
    assert token.headers["enterpriseid"] == ENTERPRISE and token.form()["scope"] == "urn:opc:hgbu:ws:__myscopes__"


def test_the_position_advances_and_a_second_run_reads_nothing_twice(bridge, opera):
    enqueue_sample(opera)
    opera.add_profile(PROFILE_ID, profile())
    pull(bridge)
    assert position(bridge) == {"pending": [], "last_event_id": SAMPLE_IDS[-1], "handled": 4, "leased": False}

    # The queue is empty now; then OPERA hands the same four events out again.
    assert pull(bridge)["handled"] == 0
    enqueue_sample(opera)
    summary = pull(bridge)

    assert summary["read"] == 4 and summary["duplicates"] == 4 and summary["handled"] == 0
    assert opera.profile_calls == 1 and bridge.fullwhere.import_count == 1
    assert position(bridge)["last_event_id"] == SAMPLE_IDS[-1]


def test_a_new_event_after_the_position_is_read(bridge, opera):
    enqueue_sample(opera)
    opera.add_profile(PROFILE_ID, profile())
    pull(bridge)

    opera.add_profile("1280999", profile("1280999", emails={"emailInfo": [
        {"email": {"emailAddress": "Jane@Example.com", "primaryInd": True}}]}, telephones={}))
    opera.enqueue(HOTEL, make_event("1971200", "UPDATE PROFILE", "1280999"))
    summary = pull(bridge)

    assert summary["read"] == 1 and summary["handled"] == 1
    assert sorted(c["email"] for c in bridge.customers()) == ["eg@example.com", "jane@example.com"]
    assert [r.path for r in opera.requests_matching("GET", "/crm/v1/profiles/")] == [
        f"/crm/v1/profiles/{PROFILE_ID}", "/crm/v1/profiles/1280999"]
    assert position(bridge)["last_event_id"] == "1971200"


def test_profile_fetch_failing_is_queued_for_retry_and_the_position_still_advances(bridge, opera):
    enqueue_sample(opera)
    opera.add_profile(PROFILE_ID, profile())
    opera.faults.always(Fault("status", status=503), path="/crm/v1/profiles/")

    pull(bridge)

    assert bridge.customers() == []
    [job] = bridge.retry_jobs()
    assert (job["platform"], job["stage"], job["tenant"]) == ("oracle", "fetch", "default")
    assert job["event"]["data"] == {"profile_id": PROFILE_ID, "hotel_id": HOTEL, "business_event_id": SAMPLE_IDS[0]}
    # The event is safe in the queue: the position moves on.
    assert position(bridge) == {"pending": [], "last_event_id": SAMPLE_IDS[-1], "handled": 4, "leased": False}

    opera.faults.clear()
    bridge.drain()
    assert [c["oracleId"] for c in bridge.customers()] == [PROFILE_ID]
    assert bridge.retry_jobs() == [] and bridge.dead_letters() == []


def test_fullwhere_down_and_queue_unreachable_keeps_the_position_before_the_event(bridge, opera):
    enqueue_sample(opera)
    opera.add_profile(PROFILE_ID, profile())
    bridge.fullwhere.faults.always(Fault("status", status=500))
    bridge.configure(aws_endpoint_url_sqs="http://127.0.0.1:9")

    summary = pull(bridge)

    assert summary["stuck"] == 1 and summary["handled"] == 0
    assert bridge.customers() == []
    # OPERA has dequeued them: the position item is where they are kept, the first one included.
    assert opera.queued(HOTEL) == 0
    assert position(bridge) == {"pending": SAMPLE_IDS, "last_event_id": None, "handled": 0, "leased": False}

    bridge.fullwhere.faults.clear()
    bridge.configure(aws_endpoint_url_sqs=bridge.endpoint)
    summary = pull(bridge)

    assert summary["handled"] == 4
    assert [c["oracleId"] for c in bridge.customers()] == [PROFILE_ID]
    assert position(bridge) == {"pending": [], "last_event_id": SAMPLE_IDS[-1], "handled": 4, "leased": False}


def test_position_store_unreachable_dequeues_nothing(bridge, opera):
    enqueue_sample(opera)
    bridge.configure(aws_endpoint_url_dynamodb="http://127.0.0.1:9")

    summary = pull(bridge)

    assert summary["hotels_failed"] == 1
    assert opera.queued(HOTEL) == 4 and opera.dequeue_calls == 0


def test_an_overlapping_run_cannot_take_the_position(bridge, opera):
    from chalicelib.handlers.scheduled_pulls import Position, PositionStore, position_key

    enqueue_sample(opera)
    opera.add_profile(PROFILE_ID, profile())
    store = PositionStore(os.environ["IDENTITY_TABLE"])
    key = position_key("default", HOTEL)
    assert store.acquire(key, "run-in-progress", 300) == Position()

    summary = pull(bridge)
    assert summary["hotels_busy"] == 1
    assert opera.dequeue_calls == 0 and bridge.customers() == []
    assert store.acquire(key, "a-third-run", 300) is None  # still held by the first run

    store.save(key, "run-in-progress", Position(), [], None, release=True)
    assert pull(bridge)["handled"] == 4
    assert len(bridge.customers()) == 1


def test_a_run_is_bounded_by_max_events_and_by_its_time_budget(bridge, opera):
    for n in range(5):
        opera.add_profile(f"90{n}", profile(f"90{n}", emails={"emailInfo": [{"email": {"emailAddress": f"g{n}@example.org"}}]}))
        opera.enqueue(HOTEL, make_event(f"E{n}", "NEW PROFILE", f"90{n}"))
    bridge.configure(oracle_pull_max_events=2)

    assert pull(bridge)["handled"] == 2
    assert opera.queued(HOTEL) == 3
    assert opera.requests_matching("GET", "/int/v1/")[0].query["limit"] == "2"
    assert len(bridge.customers()) == 2

    bridge.configure(oracle_pull_max_events=200, oracle_pull_budget_seconds=0.5)
    summary = pull(bridge)
    assert summary["hotels_deferred"] == 1 and opera.queued(HOTEL) == 3

    bridge.configure(oracle_pull_budget_seconds=60)
    assert pull(bridge)["handled"] == 3
    assert len(bridge.customers()) == 5 and position(bridge)["last_event_id"] == "E4"


def test_token_is_cached_across_runs_and_renewed_once_on_401(bridge, opera):
    opera.add_profile(PROFILE_ID, profile())
    for n in range(3):
        opera.enqueue(HOTEL, make_event(f"T{n}", "UPDATE PROFILE", PROFILE_ID))
        pull(bridge)
        if n == 1:
            opera.revoke_tokens()
    assert opera.token_requests == 2
    assert bridge.fullwhere.import_count == 3


def test_missing_profile_is_dead_lettered_and_the_position_advances(bridge, opera):
    opera.enqueue(HOTEL, make_event("M1", "NEW PROFILE", "404404"))
    pull(bridge)
    [letter] = bridge.dead_letters()
    assert letter["kind"] == "permanent" and "404" in letter["reason"]
    assert position(bridge)["last_event_id"] == "M1"


def test_anonymised_and_company_profiles_are_not_imported(bridge, opera):
    # Oracle's own getProfile example, verbatim: its guest has requested anonymisation.
    opera.add_profile("777", fixture_json("oracle/profile_spec_example.json"))
    opera.add_profile("778", profile("778", profileType="Company"))
    opera.enqueue(HOTEL, make_event("A1", "NEW PROFILE", "777"), make_event("A2", "NEW PROFILE", "778"))

    summary = pull(bridge)

    assert summary["handled"] == 2 and bridge.customers() == []
    assert bridge.retry_jobs() == [] and bridge.dead_letters() == []


def test_spec_example_shape_is_read_when_not_anonymised(bridge, opera):
    example = fixture_json("oracle/profile_spec_example.json")
    del example["profiles"]["profileInfo"][0]["profile"]["customer"]["anonymization"]
    opera.add_profile("779", example)
    opera.enqueue(HOTEL, make_event("S1", "NEW PROFILE", "779"))

    pull(bridge)

    [customer] = bridge.customers()
    # nameType "PRIMARY", namePrefix "a" (no civility) but nameTitle "Mr"; every privacy flag false.
    assert (customer["firstName"], customer["lastName"], customer["civility"]) == ("Thomas", "Smith", "Mr.")
    assert (customer["email"], customer["phoneNumber"]) == ("eg@example.com", "+14155550100")
    assert (customer["emailOptin"], customer["smsOptin"]) == (False, False)
    assert customer["oracleId"] == "779"  # the example's profileIdList has no Profile id: the event's primaryKey


def test_relay_email_incognito_name_national_phone_and_consent_veto(bridge, opera):
    opera.add_profile("880", profile(
        "880",
        customer={"personName": [{"givenName": "Incognito", "surname": "Alias", "nameType": "Incognito"},
                                 {"givenName": "Anna", "surname": "Martin", "nameType": "PRIMARY"}],
                  "language": "fr-FR", "nationality": "FR"},
        emails={"emailInfo": [{"email": {"emailAddress": "guest-8z1@guest.booking.com", "primaryInd": True}},
                              {"email": {"emailAddress": "anna.martin@example.fr", "orderSequence": 2}}]},
        telephones={"telephoneInfo": [{"telephone": {"phoneNumber": "01 99 00 00 00", "phoneTechType": "FAX"}},
                                      {"telephone": {"phoneNumber": "06 12 34 56 78", "phoneUseType": "MOBILE"}}]},
        privacyInfo={"optInEmail": True, "allowEmail": False, "optInSms": True},
    ))
    opera.enqueue(HOTEL, make_event("R1", "NEW PROFILE", "880"))

    pull(bridge)

    [customer] = bridge.customers()
    assert (customer["firstName"], customer["lastName"], customer["language"]) == ("Anna", "Martin", "fr")
    assert customer["email"] == "anna.martin@example.fr"  # the primary one is a Booking.com relay
    assert customer["phoneNumber"] == "+33612345678"  # national number read in the tenant's region; fax skipped
    assert (customer["emailOptin"], customer["smsOptin"]) == (False, True)  # allowEmail false vetoes optInEmail


def test_each_tenant_hotel_is_pulled_with_its_own_credentials(bridge, opera, tmp_path):
    tenants = tmp_path / "tenants.json"
    tenants.write_text(json.dumps({"tenants": [
        {"id": "hotel-paris", "fullwhere_api_key": "test-key", "fullwhere_api_secret": "test-secret",
         "platforms": {"oracle": {"accounts": {"PARIS1": {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
                                                          "app_key": APP_KEY}}}}},
        {"id": "hotel-lyon", "fullwhere_api_key": "tenant-b-key", "fullwhere_api_secret": "tenant-b-secret",
         "platforms": {"oracle": {"accounts": {"LYON1": {"client_id": OTHER_CLIENT_ID,
                                                         "client_secret": OTHER_CLIENT_SECRET,
                                                         "app_key": OTHER_APP_KEY}}}}},
    ]}))
    bridge.configure(tenants_file=tenants)
    opera.add_profile("1", profile("1", emails={"emailInfo": [{"email": {"emailAddress": "paris@example.com"}}]}))
    opera.add_profile("2", profile("2", emails={"emailInfo": [{"email": {"emailAddress": "lyon@example.com"}}]}))
    opera.enqueue("PARIS1", make_event("P1", "NEW PROFILE", "1", hotel_id="PARIS1"))
    opera.enqueue("LYON1", make_event("L1", "NEW PROFILE", "2", hotel_id="LYON1"))

    summary = pull(bridge)

    assert summary["hotels"] == 2 and summary["handled"] == 2
    assert [c["email"] for c in bridge.customers("test-key")] == ["paris@example.com"]
    assert [c["email"] for c in bridge.customers("tenant-b-key")] == ["lyon@example.com"]
    assert position(bridge, "hotel-paris", "PARIS1")["last_event_id"] == "P1"
    assert position(bridge, "hotel-lyon", "LYON1")["last_event_id"] == "L1"
    lyon_calls = opera.requests_matching("GET", "/int/v1/externalSystem/FULLWHERE/hotels/LYON1/")
    assert lyon_calls and all(r.headers["x-app-key"] == OTHER_APP_KEY for r in lyon_calls)


def test_scheduled_handler_through_the_chalice_test_client(bridge, opera):
    # The test client gives the handler Lambda's default 3 s clock: create the boto3 client first.
    assert pull(bridge)["handled"] == 0
    enqueue_sample(opera)
    opera.add_profile(PROFILE_ID, profile())
    event = bridge.client.events.generate_cw_event("aws.events", "Scheduled Event", {}, [])

    response = bridge.client.lambda_.invoke("oracle_pull", event)

    assert response.payload["status"] == "ok" and response.payload["handled"] == 4
    assert [c["oracleId"] for c in bridge.customers()] == [PROFILE_ID]


def test_nothing_is_pulled_without_hotels(bridge, opera):
    bridge.configure(oracle_hotel_ids=None)
    assert pull(bridge) == {"status": "ok", "hotels": 0}
    assert opera.requests == []


def test_opera_webhook_url_is_refused_because_events_are_pulled(bridge, opera):
    response = bridge.post("oracle", b'{"businessEventData": []}', {"Content-Type": "application/json"})
    assert response.status_code == 401
    assert response.json_body["error"] == "unauthorized" and "pulled" in response.json_body["reason"]
    assert bridge.customers() == [] and opera.requests == []


def test_opera_connector_has_no_request_to_sign(bridge, opera):

    with pytest.raises(NotImplementedError, match="pulled"):
        platforms.sign_for("oracle", b"{}", os.environ)
