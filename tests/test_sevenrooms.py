"""SevenRooms end to end: reservation/client webhook (URL token or HMAC) → client fetched for language,
salutation and consent → Fullwhere."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os

import pytest

from sandbox import platforms
from sandbox.emulators.base import Fault
from sandbox.platforms.sevenrooms import AUTH_PATH, CLIENTS_PREFIX, SevenRoomsEmulator
from tests.conftest import FULLWHERE_KEY, fixture_bytes, fixture_json

WEBHOOK_SECRET = "sevenrooms-hook-secret-5b1e"
TENANT_WEBHOOK_SECRET = "sevenrooms-hook-secret-5b1e-winterfell"  # a tenant's own (tenants document)
API_CLIENT_ID, API_CLIENT_SECRET = "sevenrooms-api-client", "sevenrooms-api-secret-c07d"
SIGNATURE_HEADER = "X-SevenRooms-Signature"

JON = "ahhzfnNldmVucm9vbXMtc2VjdXJlLWRlbW9yHQsSEG5pZ2h0bG9vcF9DbGllbnQYgICQ6pOQ2QoM"
ARYA = "ahhzfnNldmVucm9vbXMtc2VjdXJlLWRlbW9yHQsSEG5pZ2h0bG9vcF9DbGllbnQYgICw6PS_1AoM"
VENUE = "ahhzfnNldmVucm9vbXMtc2VjdXJlLWRlbW9yHAsSD25pZ2h0bG9vcF9WZW51ZRiAgNCKuYezCgw"
VENUE_GROUP = "ahhzfnNldmVucm9vbXMtc2VjdXJlLWRlbW9yIQsSFG5pZ2h0bG9vcF9WZW51ZUdyb3VwGICA0Ip4wgoM"


@pytest.fixture(scope="module")
def sevenrooms():
    server = SevenRoomsEmulator(client_id=API_CLIENT_ID, client_secret=API_CLIENT_SECRET)
    server.start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def configured(bridge, sevenrooms):
    sevenrooms.reset()
    bridge.configure(  # also forgets every cached token
        sevenrooms_auth="token", sevenrooms_webhook_secret=WEBHOOK_SECRET, sevenrooms_signature_encoding=None,
        sevenrooms_signature_header=None, sevenrooms_client_id=API_CLIENT_ID,
        sevenrooms_client_secret=API_CLIENT_SECRET, sevenrooms_api_url=sevenrooms.api_url,
        sevenrooms_sms_optin_is_marketing=None,
    )


# -- sending, the way SevenRooms would (our own implementation of both schemes) ---------------------

def body_of(payload) -> bytes:
    return payload if isinstance(payload, bytes) else json.dumps(payload).encode()


def send_with_token(bridge, payload, token: str | None = WEBHOOK_SECRET):
    return bridge.post("sevenrooms", body_of(payload), {"Content-Type": "application/json"},
                       query=f"token={token}" if token is not None else "")


def send_signed(bridge, payload, secret: str = WEBHOOK_SECRET, encoding: str = "hex", header: str = SIGNATURE_HEADER):
    body = body_of(payload)
    digest = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    signature = digest.hex() if encoding == "hex" else base64.b64encode(digest).decode()
    return bridge.post("sevenrooms", body, {"Content-Type": "application/json", header: signature})


def add_jon(sevenrooms, **overrides) -> dict:
    client = {**fixture_json("sevenrooms/client.json")["data"], **overrides}
    sevenrooms.add_client(client)
    return client


def reservation(**entity_overrides) -> dict:
    payload = fixture_json("sevenrooms/reservation_created.json")
    payload["entity"].update(entity_overrides)
    return payload


def sent_bodies(bridge) -> list[dict]:
    return [r.body for r in bridge.fullwhere.requests if r.path == "/partners/customer"]


# -- end to end ---------------------------------------------------------------------------------

def test_reservation_is_imported_with_the_client_fetched_for_language_salutation_and_consent(bridge, sevenrooms):
    add_jon(sevenrooms)

    response = send_with_token(bridge, fixture_bytes("sevenrooms/reservation_created.json"))

    assert response.status_code == 200 and response.body == b""
    [customer] = bridge.customers()
    assert customer["sevenroomsId"] == JON
    assert (customer["firstName"], customer["lastName"], customer["displayName"]) == ("Jon", "Snow", "Jon Snow")
    assert customer["email"] == "jsnow@srdemo.com"
    assert customer["phoneNumber"] == "+12125557056"  # "212-555-7056", read with the client's phone locale US
    assert (customer["language"], customer["civility"]) == ("en", "Mr.")
    assert customer["emailOptin"] is True  # the client's marketing_optin
    # reservation_sms_opt_in is consent to reservation SMS, not marketing: smsOptin is left null.
    assert "smsOptin" not in sent_bodies(bridge)[-1]
    assert customer["metadata"] == {
        "source": "sevenrooms", "sevenroomsVenueId": VENUE, "sevenroomsVenueGroupId": VENUE_GROUP,
        "sevenroomsReservationId": "ahhzfnNldmVucm9vbXMtc2VjdXJlLWRlbW9yIgsSFW5pZ2h0bG9vcF9SZXNlcnZhdGlvbhiAgNCa5ejgCgw",
        "sevenroomsReferenceCode": "I9YJ5HC", "sevenroomsReservationStatus": "RESERVED", "sevenroomsVip": "false",
        "sevenroomsReservationSmsOptIn": "true",
    }
    [lookup] = sevenrooms.requests_matching("GET", CLIENTS_PREFIX)
    assert lookup.path == CLIENTS_PREFIX + JON
    assert lookup.headers["authorization"] != "" and not lookup.headers["authorization"].startswith("Bearer")


def test_client_record_wins_over_the_reservation_copy(bridge, sevenrooms):
    add_jon(sevenrooms, email="JON.SNOW@Winterfell.example", salutation="mrs", preferred_language_code="fr-FR")
    send_with_token(bridge, reservation())
    [customer] = bridge.customers()
    assert customer["email"] == "jon.snow@winterfell.example"
    assert (customer["civility"], customer["language"]) == ("Mrs.", "fr")


def test_client_entity_is_imported_directly_under_its_documented_aliases(bridge, sevenrooms):
    response = send_with_token(bridge, fixture_bytes("sevenrooms/client_updated.json"))

    assert response.status_code == 200
    [customer] = bridge.customers()
    assert customer["sevenroomsId"] == ARYA
    assert (customer["firstName"], customer["lastName"]) == ("Arya", "Stark")  # firstname / lastname
    assert customer["email"] == "arya.stark@srdemo.com"
    assert customer["phoneNumber"] == "+442079460958"
    assert (customer["civility"], customer["language"]) == ("Ms.", "en")
    assert customer["emailOptin"] is False  # marketing_optin false: an explicit refusal
    assert customer["metadata"]["sevenroomsVenueGroupId"] == VENUE_GROUP
    assert sevenrooms.requests == []  # the client entity carries language and salutation: no fetch


def test_client_entity_without_language_or_salutation_is_completed_by_the_fetch(bridge, sevenrooms):
    payload = fixture_json("sevenrooms/client_updated.json")
    del payload["entity"]["salutation"], payload["entity"]["preferred_language_code"]
    sevenrooms.add_client({"id": ARYA, "salutation": "Miss", "preferred_language_code": "es"})
    assert send_with_token(bridge, payload).status_code == 200
    [customer] = bridge.customers()
    assert (customer["civility"], customer["language"], customer["firstName"]) == ("Miss", "es", "Arya")


def test_an_array_of_envelopes_is_accepted(bridge, sevenrooms):
    add_jon(sevenrooms)

    response = send_with_token(bridge, fixture_bytes("sevenrooms/batch.json"))

    assert response.status_code == 200
    customers = {c["sevenroomsId"]: c for c in bridge.customers()}
    assert set(customers) == {JON, ARYA}
    assert customers[JON]["metadata"]["sevenroomsReservationStatus"] == "COMPLETE"
    assert customers[ARYA]["emailOptin"] is True  # marketing_opt_in, the other documented spelling
    assert customers[ARYA]["phoneNumber"] == "+442079460958"


def test_deleted_and_other_entities_are_acknowledged_and_ignored(bridge, sevenrooms, capsys):
    add_jon(sevenrooms)
    deleted = reservation()
    deleted["event_type"] = "deleted"
    soft_deleted = reservation(deleted="2019-04-11T22:00:00")
    soft_deleted["event_type"] = "updated"
    venue = {"entity": {"id": VENUE, "name": "Demo"}, "entity_type": "venue", "event_type": "updated", "updates": []}
    unknown = reservation()
    unknown["event_type"] = "archived"

    for payload in (deleted, [soft_deleted, venue], unknown):
        assert send_with_token(bridge, payload).status_code == 200

    assert bridge.customers() == [] and sevenrooms.requests == []
    assert bridge.retry_jobs() == [] and bridge.dead_letters() == []
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"ts"')]
    ignored = [line for line in lines if line["outcome"] == "ignored"]
    assert sorted(line["event_type"] for line in ignored) == [
        "reservation.archived", "reservation.deleted", "reservation.deleted", "venue.updated"]


# -- authentication -----------------------------------------------------------------------------

def test_wrong_then_missing_token_is_401_and_imports_nothing(bridge, sevenrooms):
    add_jon(sevenrooms)
    body = fixture_bytes("sevenrooms/reservation_created.json")
    for token in ("forged-token", None, ""):
        response = send_with_token(bridge, body, token=token)
        assert response.status_code == 401 and response.json_body["error"] == "unauthorized"
    assert bridge.customers() == [] and bridge.fullwhere.requests == [] and sevenrooms.requests == []
    # Checked before the body is parsed: a forger learns nothing about parsing.
    assert send_with_token(bridge, b"{not json", token="forged-token").status_code == 401


@pytest.mark.parametrize("encoding", ["hex", "base64"])
def test_hmac_mode_accepts_a_signed_body_and_refuses_forged_or_missing_signatures(bridge, sevenrooms, encoding):
    bridge.configure(sevenrooms_auth="hmac", sevenrooms_signature_encoding=encoding)
    add_jon(sevenrooms)
    body = fixture_bytes("sevenrooms/reservation_created.json")

    assert send_signed(bridge, body, secret="forged", encoding=encoding).status_code == 401
    assert bridge.post("sevenrooms", body, {"Content-Type": "application/json"}).status_code == 401
    # In HMAC mode the URL token is not a credential.
    assert send_with_token(bridge, body).status_code == 401
    assert bridge.customers() == []

    assert send_signed(bridge, body, encoding=encoding).status_code == 200
    assert [c["sevenroomsId"] for c in bridge.customers()] == [JON]


def test_hmac_mode_reads_the_configured_header_and_tolerates_a_sha256_prefix(bridge, sevenrooms):
    bridge.configure(sevenrooms_auth="HMAC", sevenrooms_signature_header="X-Webhook-Signature")
    add_jon(sevenrooms)
    body = fixture_bytes("sevenrooms/reservation_created.json")
    assert send_signed(bridge, body).status_code == 401  # signed, but in another header
    signature = "sha256=" + hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest().upper()
    assert bridge.post("sevenrooms", body, {"X-Webhook-Signature": signature}).status_code == 200
    assert len(bridge.customers()) == 1


@pytest.mark.parametrize("mode", ["token", "hmac"])
def test_unconfigured_connector_accepts_nothing_and_asks_for_redelivery(bridge, sevenrooms, mode, capsys):
    # Nothing is forged, the bridge lacks its secret: 503 keeps the event at SevenRooms until it is set.
    bridge.configure(sevenrooms_auth=mode, sevenrooms_webhook_secret=None)
    add_jon(sevenrooms)
    body = fixture_bytes("sevenrooms/reservation_created.json")
    for response in (send_with_token(bridge, body, token=""), send_signed(bridge, body, secret="")):
        assert response.status_code == 503 and response.json_body["error"] == "misconfigured"
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    misconfigured = [line for line in lines if line.get("outcome") == "misconfigured" and "level" in line]
    assert len(misconfigured) == 2
    assert all("SEVENROOMS_WEBHOOK_SECRET is not configured" in line["reason"] for line in misconfigured)
    assert bridge.customers() == []
    from chalicelib.connectors import get_connector

    assert get_connector("sevenrooms").configured() is False


def test_unknown_auth_mode_is_a_settings_error_answered_503(bridge):
    bridge.configure(sevenrooms_auth="basic")
    response = send_with_token(bridge, fixture_bytes("sevenrooms/reservation_created.json"))
    assert response.status_code == 503 and response.json_body["error"] == "misconfigured"


@pytest.mark.parametrize("mode", ["token", "hmac"])
def test_connector_signs_requests_the_way_it_verifies_them(bridge, sevenrooms, mode):

    bridge.configure(sevenrooms_auth=mode, sevenrooms_signature_encoding="base64")
    add_jon(sevenrooms)
    body = fixture_bytes("sevenrooms/reservation_created.json")
    headers, query = platforms.sign_for("sevenrooms", body, os.environ)
    assert bool(query) == (mode == "token") and bool(headers) == (mode == "hmac")
    path = "/webhooks/sevenrooms" + ("?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else "")
    assert bridge.client.http.post(path, headers=headers, body=body).status_code == 200
    assert len(bridge.customers()) == 1


# -- bad input ----------------------------------------------------------------------------------

MALFORMED = [
    (b"<xml/>", "not valid JSON"),
    (b'"created"', "object or an array"),
    (b'{"entity_type": "reservation", "event_type": "created"}', "entity: Field required"),
    (b'{"entity": "Jon", "entity_type": "reservation", "event_type": "created"}', "entity: Input should be a valid dict"),
    (b'[{"entity": {"id": "r1"}, "entity_type": "reservation", "event_type": "created"}, 7]', "item 1"),
    (b'{"entity": {"first_name": "x"}, "entity_type": "reservation", "event_type": "created"}', "no id"),
]


def test_malformed_body_is_400_with_a_reason(bridge):
    for body, reason in MALFORMED:
        response = send_with_token(bridge, body)
        assert response.status_code == 400, body
        assert response.json_body["error"] == "malformed" and reason in response.json_body["reason"], body
    assert bridge.customers() == [] and bridge.fullwhere.requests == []


# -- the fetch ----------------------------------------------------------------------------------

def test_client_fetch_failing_queues_the_event_and_the_worker_imports_it_once_sevenrooms_recovers(bridge, sevenrooms):
    add_jon(sevenrooms)
    sevenrooms.faults.always(Fault("status", status=503, retry_after=0), path=CLIENTS_PREFIX)

    assert send_with_token(bridge, fixture_bytes("sevenrooms/reservation_created.json")).status_code == 200

    assert bridge.customers() == []  # not imported half-enriched
    [job] = bridge.retry_jobs()
    assert (job["platform"], job["stage"]) == ("sevenrooms", "fetch")
    assert "SevenRooms API answered 503" in job["last_error"]

    sevenrooms.faults.clear()
    bridge.drain()

    [customer] = bridge.customers()
    assert (customer["sevenroomsId"], customer["language"], customer["civility"]) == (JON, "en", "Mr.")
    assert bridge.retry_jobs() == [] and bridge.dead_letters() == []


def test_token_endpoint_down_is_retried_too(bridge, sevenrooms):
    add_jon(sevenrooms)
    sevenrooms.faults.add(Fault("drop"), path=AUTH_PATH)
    assert send_with_token(bridge, reservation()).status_code == 200
    [job] = bridge.retry_jobs()
    assert job["stage"] == "fetch" and "SevenRooms auth endpoint" in job["last_error"]
    bridge.drain()
    assert [c["sevenroomsId"] for c in bridge.customers()] == [JON]


def test_token_is_cached_and_renewed_once_when_refused(bridge, sevenrooms):
    add_jon(sevenrooms)
    for _ in range(2):
        assert send_with_token(bridge, reservation()).status_code == 200
    assert (sevenrooms.token_requests, sevenrooms.client_requests) == (1, 2)
    assert sevenrooms.requests_matching("POST", AUTH_PATH)[0].form() == {
        "client_id": API_CLIENT_ID, "client_secret": API_CLIENT_SECRET}

    sevenrooms.revoke_tokens()
    assert send_with_token(bridge, reservation()).status_code == 200
    assert (sevenrooms.token_requests, sevenrooms.client_requests) == (2, 3)
    assert len(bridge.customers()) == 1 and bridge.retry_jobs() == []


def test_wrong_api_credentials_are_held_with_the_reason_until_corrected(bridge, sevenrooms):
    bridge.configure(sevenrooms_client_secret="not-the-secret")
    add_jon(sevenrooms)
    assert send_with_token(bridge, reservation()).status_code == 200
    [job] = bridge.retry_jobs()
    assert "SevenRooms auth endpoint refused the bridge's credentials (401)" in job["last_error"]
    assert bridge.dead_letters() == [] and bridge.customers() == []

    bridge.configure(sevenrooms_client_secret=API_CLIENT_SECRET)
    bridge.drain()
    assert [c["sevenroomsId"] for c in bridge.customers()] == [JON]
    assert bridge.retry_jobs() == [] and bridge.dead_letters() == []


def test_client_unknown_to_sevenrooms_is_dead_lettered(bridge, sevenrooms):
    assert send_with_token(bridge, reservation()).status_code == 200
    [letter] = bridge.dead_letters()
    assert letter["kind"] == "permanent" and "SevenRooms API answered 404" in letter["reason"]
    assert letter["job"]["platform"] == "sevenrooms" and letter["job"]["event"]["account_id"] == VENUE
    assert bridge.customers() == []


def test_without_api_credentials_the_webhook_fields_are_imported_as_they_are(bridge, sevenrooms):
    bridge.configure(sevenrooms_client_id=None, sevenrooms_client_secret=None)
    assert send_with_token(bridge, reservation()).status_code == 200
    [customer] = bridge.customers()
    assert (customer["sevenroomsId"], customer["email"], customer["firstName"]) == (JON, "jsnow@srdemo.com", "Jon")
    # No country anywhere: not valid in FR, read by SEVENROOMS_FALLBACK_PHONE_REGION (US), tried last.
    assert customer["phoneNumber"] == "+12125557056"
    assert customer["language"] is None and customer["civility"] is None
    assert "emailOptin" not in sent_bodies(bridge)[-1]  # consent lives on the client record only
    assert sevenrooms.requests == []


def test_half_configured_api_credentials_are_held_until_completed(bridge, sevenrooms):
    bridge.configure(sevenrooms_client_secret=None)
    add_jon(sevenrooms)
    assert send_with_token(bridge, reservation()).status_code == 200
    [job] = bridge.retry_jobs()
    assert "SEVENROOMS_CLIENT_ID / SEVENROOMS_CLIENT_SECRET" in job["last_error"]
    assert bridge.dead_letters() == [] and bridge.customers() == [] and sevenrooms.requests == []

    bridge.configure(sevenrooms_client_secret=API_CLIENT_SECRET)
    bridge.drain()
    assert [c["sevenroomsId"] for c in bridge.customers()] == [JON]
    assert bridge.retry_jobs() == [] and bridge.dead_letters() == []


# -- mapping decisions --------------------------------------------------------------------------

def test_duplicate_delivery_is_one_customer(bridge, sevenrooms):
    add_jon(sevenrooms)
    for _ in range(3):
        assert send_with_token(bridge, fixture_bytes("sevenrooms/reservation_created.json")).status_code == 200
    assert [c["sevenroomsId"] for c in bridge.customers()] == [JON]


def test_reservation_sms_opt_in_fills_sms_optin_only_when_configured_as_marketing(bridge, sevenrooms):
    add_jon(sevenrooms)
    bridge.configure(sevenrooms_sms_optin_is_marketing="true")
    send_with_token(bridge, reservation(reservation_sms_opt_in=False))
    assert "smsOptin" not in sent_bodies(bridge)[-1]  # false may mean "not asked": never sent
    send_with_token(bridge, reservation(reservation_sms_opt_in=True))
    assert sent_bodies(bridge)[-1]["smsOptin"] is True
    [customer] = bridge.customers()
    assert customer["smsOptin"] is True


def test_marketing_optin_false_without_an_opt_out_is_not_stated(bridge, sevenrooms):
    add_jon(sevenrooms, marketing_optin=False, marketing_optints=None)
    send_with_token(bridge, reservation())
    assert "emailOptin" not in sent_bodies(bridge)[-1]
    bridge.fullwhere.reset()
    add_jon(sevenrooms, marketing_optin=False, marketing_opt_out_ts="2020-01-01T00:00:00")
    send_with_token(bridge, reservation())
    assert sent_bodies(bridge)[-1]["emailOptin"] is False


def test_private_contact_details_are_not_imported_and_the_guest_is_kept_once_by_the_ledger(bridge, sevenrooms):
    add_jon(sevenrooms, is_contact_private=True)
    for _ in range(2):
        assert send_with_token(bridge, reservation()).status_code == 200
    [customer] = bridge.customers()
    assert customer["sevenroomsId"] == JON
    assert customer["email"] is None and customer["phoneNumber"] is None
    assert customer["firstName"] == "Jon"
    assert bridge.fullwhere.import_count == 1


def test_reservation_without_a_client_id_is_imported_by_its_contact_without_fetch(bridge, sevenrooms):
    assert send_with_token(bridge, reservation(client_id=None, phone_number="+1 212 555 7056")).status_code == 200
    [customer] = bridge.customers()
    assert customer["sevenroomsId"] is None and customer["phoneNumber"] == "+12125557056"
    assert sevenrooms.requests == []


# -- tenants ------------------------------------------------------------------------------------

def test_venue_routes_to_its_tenant_with_that_accounts_api_credentials(bridge, sevenrooms, tmp_path):
    tenants = tmp_path / "tenants.json"
    tenants.write_text(json.dumps({"tenants": [{
        "id": "winterfell", "fullwhere_api_key": "tenant-b-key", "fullwhere_api_secret": "tenant-b-secret",
        "phone_region": "US",
        "platforms": {"sevenrooms": {"webhook_secret": TENANT_WEBHOOK_SECRET, "accounts": {
            VENUE: {"client_id": API_CLIENT_ID, "client_secret": API_CLIENT_SECRET},
            VENUE_GROUP: {"client_id": API_CLIENT_ID, "client_secret": API_CLIENT_SECRET}}}}}]}))
    # The settings' credentials are wrong: the account's own must be the ones used.
    bridge.configure(tenants_file=tenants, sevenrooms_client_secret="not-the-secret")
    add_jon(sevenrooms)

    # The tenant's venues send with the tenant's own token; the deployment's opens none of its venues.
    assert send_with_token(bridge, reservation()).status_code == 401
    assert send_with_token(bridge, reservation(), token=TENANT_WEBHOOK_SECRET).status_code == 200
    # A client entity has no venue: it routes by its venue group.
    client_updated = fixture_bytes("sevenrooms/client_updated.json")
    assert send_with_token(bridge, client_updated, token=TENANT_WEBHOOK_SECRET).status_code == 200

    assert bridge.customers(FULLWHERE_KEY) == []
    assert sorted(c["sevenroomsId"] for c in bridge.customers("tenant-b-key")) == sorted([JON, ARYA])
    assert bridge.dead_letters() == []


def test_a_tenants_venue_without_its_own_api_client_is_held_not_fetched_with_the_deployments(
        bridge, sevenrooms, tmp_path):
    tenants = tmp_path / "tenants.json"
    tenants.write_text(json.dumps({"tenants": [{
        "id": "winterfell", "fullwhere_api_key": "tenant-b-key", "fullwhere_api_secret": "tenant-b-secret",
        "platforms": {"sevenrooms": {"webhook_secret": TENANT_WEBHOOK_SECRET, "accounts": {VENUE: {}}}}}]}))
    bridge.configure(tenants_file=tenants)  # SEVENROOMS_CLIENT_ID/SECRET are set, and valid
    add_jon(sevenrooms)

    assert send_with_token(bridge, reservation(), token=TENANT_WEBHOOK_SECRET).status_code == 200

    assert sevenrooms.requests == [] and bridge.customers("tenant-b-key") == []
    [job] = bridge.retry_jobs()
    assert "tenants document" in job["last_error"] and "SEVENROOMS_CLIENT_ID" in job["last_error"]


def test_unknown_venue_is_not_accepted_since_no_tenants_secret_can_verify_it(bridge, sevenrooms, tmp_path):
    tenants = tmp_path / "tenants.json"
    tenants.write_text(json.dumps({"tenants": [{
        "id": "other", "fullwhere_api_key": "tenant-b-key", "fullwhere_api_secret": "tenant-b-secret",
        "platforms": {"sevenrooms": {"webhook_secret": TENANT_WEBHOOK_SECRET, "accounts": {"another-venue": {}}}}}]}))
    bridge.configure(tenants_file=tenants)
    add_jon(sevenrooms)

    for token in (WEBHOOK_SECRET, TENANT_WEBHOOK_SECRET):
        response = send_with_token(bridge, reservation(), token=token)
        # 503: SevenRooms keeps it and delivers it again, until the venue is listed with its secret.
        assert response.status_code == 503 and response.json_body["error"] == "unknown_account"

    assert bridge.dead_letters() == [] and bridge.retry_jobs() == []
    assert sevenrooms.requests == [] and bridge.customers("tenant-b-key") == []


def test_retry_jobs_carry_only_the_fields_the_mapping_reads(bridge, sevenrooms):
    sevenrooms.faults.always(Fault("status", status=500), path=CLIENTS_PREFIX)
    payload = reservation(notes="allergic to direwolves", custom_fields=[{"name": "x", "value": "y"}])
    send_with_token(bridge, payload)
    [job] = bridge.retry_jobs()
    entity = job["event"]["data"]["entity"]
    assert "notes" not in entity and "custom_fields" not in entity and "user" not in entity
    assert entity["client_id"] == JON and entity["venue_id"] == VENUE

