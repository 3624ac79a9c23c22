"""Meta Lead Ads end to end: GET handshake; signed leadgen webhook → lead read from the Graph API → Fullwhere."""

from __future__ import annotations

import hashlib
import hmac
import json
import os

import pytest

from sandbox import platforms
from sandbox.emulators.base import Fault
from sandbox.platforms.meta import MetaGraphEmulator
from tests.conftest import fixture_bytes, fixture_json
from tests.support.log_leaks import bridge_log_lines

APP_SECRET = "meta-app-secret-5c1e"
VERIFY_TOKEN = "meatyhamhock"  # the sample value of Meta's getting-started page
PAGE_ID = "123123123"  # value.page_id of the webhook sample (its entry id, 153125381133, differs)
PAGE_TOKEN = "meta-page-token-77aa"
OTHER_PAGE, OTHER_PAGE_TOKEN = "987654321", "meta-page-token-other-31bf"
JOE_LEAD, ELODIE_LEAD = "123123123123", "123123123124"


@pytest.fixture(scope="module")
def graph():
    emulator = MetaGraphEmulator(app_secret=APP_SECRET, page_tokens={PAGE_ID: PAGE_TOKEN, OTHER_PAGE: OTHER_PAGE_TOKEN})
    emulator.start()
    yield emulator
    emulator.stop()


@pytest.fixture
def meta(bridge, graph):
    graph.reset()
    bridge.configure(meta_app_secret=APP_SECRET, meta_verify_token=VERIFY_TOKEN, meta_page_access_token=PAGE_TOKEN,
                     meta_graph_url=f"{graph.url}/v25.0", meta_consent_checkboxes=None, meta_field_aliases=None)
    return bridge


def signed(body: bytes, secret: str = APP_SECRET) -> dict[str, str]:
    """Meta's scheme: ``sha256=`` + hex HMAC-SHA256 of the raw body keyed with the App Secret."""
    return {"Content-Type": "application/json",
            "X-Hub-Signature-256": "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()}


def send(bridge, payload, secret: str = APP_SECRET):
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return bridge.post("meta", body, signed(body, secret))


def webhook(*leads: tuple[str, str], obj: str = "page") -> dict:
    """A leadgen notification in the documented shape, one change per (page id, lead id)."""
    return {"object": obj, "entry": [{"id": page, "time": 1764000000, "changes": [{"field": "leadgen", "value": {
        "leadgen_id": lead, "page_id": page, "form_id": "555", "adgroup_id": "666", "ad_id": "666",
        "created_time": 1764000000}}]} for page, lead in leads]}


def add_lead(graph, lead_id: str, field_data: list[dict], page: str = PAGE_ID, **extra) -> None:
    graph.add_lead(page, {"id": lead_id, "created_time": "2026-11-26T10:00:00+0000", "form_id": "555",
                          "field_data": field_data, **extra})


def add_fixture_leads(graph) -> None:
    graph.add_lead(PAGE_ID, fixture_json("meta/lead.json"))
    graph.add_lead(PAGE_ID, fixture_json("meta/lead_custom_form.json"))


def by_lead(bridge, api_key: str = "test-key") -> dict[str, dict]:
    return {c["metadata"]["metaLeadId"]: c for c in bridge.customers(api_key)}


def logged(capsys, outcome: str) -> list[dict]:
    """The log lines of one outcome written since the last read (not the metric lines counting them)."""
    return [line for line in map(json.loads, bridge_log_lines(capsys.readouterr().out))
            if line["outcome"] == outcome and "level" in line]


def sent_bodies(bridge) -> list[dict]:
    return [r.body for r in bridge.fullwhere.requests if r.path == "/partners/customer"]


# -- the verification handshake ---------------------------------------------------------------------

def handshake(bridge, query: str):
    return bridge.client.http.get(f"/webhooks/meta?{query}" if query else "/webhooks/meta")


def test_handshake_echoes_the_challenge_as_plain_text(meta):
    response = handshake(meta, "hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token=meatyhamhock")
    assert response.status_code == 200
    assert response.body == b"1158201444"
    assert response.headers["Content-Type"] == "text/plain"


@pytest.mark.parametrize("query", [
    "hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token=guess",
    "hub.mode=subscribe&hub.challenge=1158201444",
    "hub.mode=unsubscribe&hub.challenge=1158201444&hub.verify_token=meatyhamhock",
    "hub.mode=subscribe&hub.verify_token=meatyhamhock",
    "",
])
def test_handshake_without_the_right_token_mode_and_challenge_is_403(meta, query):
    response = handshake(meta, query)
    assert response.status_code == 403
    assert b"1158201444" not in response.body


def test_handshake_is_403_when_no_verify_token_is_configured(meta):
    meta.configure(meta_verify_token=None)
    assert handshake(meta, "hub.mode=subscribe&hub.challenge=1&hub.verify_token=").status_code == 403
    assert handshake(meta, "hub.mode=subscribe&hub.challenge=1&hub.verify_token=None").status_code == 403


# -- end to end -------------------------------------------------------------------------------------

def test_documented_webhook_imports_both_leads(meta, graph):
    add_fixture_leads(graph)

    response = send(meta, fixture_bytes("meta/leadgen_webhook.json"))

    assert response.status_code == 200 and response.body == b""
    customers = by_lead(meta)
    assert set(customers) == {JOE_LEAD, ELODIE_LEAD}
    joe, elodie = customers[JOE_LEAD], customers[ELODIE_LEAD]
    # Standard keys; full_name split because first_name/last_name are absent.
    assert (joe["firstName"], joe["lastName"], joe["displayName"]) == ("Joe", "Example", "Joe Example")
    assert joe["email"] == "joe@example.com" and joe["phoneNumber"] is None
    assert joe["metaId"] == f"lead:{JOE_LEAD}"
    assert joe["metadata"] == {"source": "meta", "metaLeadId": JOE_LEAD, "metaPageId": PAGE_ID,
                               "metaFormId": "12312312312", "metaAdId": "12312312312",
                               "metaAdgroupId": "12312312312", "metaLeadCreatedTime": "2015-02-28T08:49:14+0000"}
    # A French form with its own keys: Prénom, nom, numéro_de_téléphone, Courriel.
    assert (elodie["firstName"], elodie["lastName"]) == ("Élodie", "Dupré")
    assert elodie["email"] == "elodie.dupre@exemple.fr"
    assert elodie["phoneNumber"] == "+33612345678"
    assert elodie["metaId"] == f"lead:{ELODIE_LEAD}"
    # No consent checkbox is configured: the opt-ins stay null, not false.
    assert all("emailOptin" not in body and "smsOptin" not in body for body in sent_bodies(meta))
    # Each lead is read with the Page token (in the Authorization header, never the URL), an appsecret_proof
    # and the lead-level fields.
    reads = graph.requests_matching("GET", "/v25.0/")
    assert sorted(r.route for r in reads) == [f"/v25.0/{JOE_LEAD}", f"/v25.0/{ELODIE_LEAD}"]
    proof = hmac.new(APP_SECRET.encode(), PAGE_TOKEN.encode(), hashlib.sha256).hexdigest()
    assert all(r.headers["authorization"] == f"Bearer {PAGE_TOKEN}" and "access_token" not in r.query
               and r.query["appsecret_proof"] == proof for r in reads)
    assert "custom_disclaimer_responses" in reads[0].query["fields"].split(",")


def test_configured_consent_checkboxes_become_opt_ins(meta, graph):
    add_fixture_leads(graph)
    meta.configure(meta_consent_checkboxes=json.dumps({"emailOptin": ["Optional_1"], "smsOptin": ["optional_2"]}))

    assert send(meta, fixture_bytes("meta/leadgen_webhook.json")).status_code == 200

    sent = {body["metadata"]["metaLeadId"]: body for body in sent_bodies(meta)}
    # "1": checked; "": left unchecked, an explicit no.
    assert (sent[ELODIE_LEAD]["emailOptin"], sent[ELODIE_LEAD]["smsOptin"]) == (True, False)
    assert by_lead(meta)[ELODIE_LEAD]["emailOptin"] is True
    # Joe's form had no such checkbox: nothing stated, nothing sent (null, not false).
    assert "emailOptin" not in sent[JOE_LEAD] and "smsOptin" not in sent[JOE_LEAD]


def test_localised_and_custom_keys(meta, graph):
    meta.configure(meta_field_aliases=json.dumps({"phone_number": ["Numéro WhatsApp"]}))
    # Spanish keys; the phone under a custom question named in META_FIELD_ALIASES, read in the lead's country.
    add_lead(graph, "201", [{"name": "Nombre", "values": ["Lucía"]}, {"name": "Apellidos", "values": ["García López"]},
                            {"name": "correo_electrónico", "values": ["LUCIA@EXAMPLE.ES"]},
                            {"name": "country", "values": ["ES"]},
                            {"name": "numéro_whatsapp", "values": ["871 23 45 67"]}])
    # An email question whose key no alias knows: the only email-shaped answer is taken.
    add_lead(graph, "202", [{"name": "full_name", "values": ["  Anna   Maria Rossi "]},
                            {"name": "эл._адрес", "values": ["anna@example.it"]},
                            {"name": "città", "values": ["Roma"]}])
    # Two email-shaped answers under unknown keys: ambiguous, none is taken (and no phone: not imported).
    add_lead(graph, "203", [{"name": "your_email?", "values": ["a@example.com"]},
                            {"name": "friend_email?", "values": ["b@example.com"]}])

    assert send(meta, webhook((PAGE_ID, "201"), (PAGE_ID, "202"), (PAGE_ID, "203"))).status_code == 200

    customers = by_lead(meta)
    assert set(customers) == {"201", "202"}
    lucia, anna = customers["201"], customers["202"]
    assert (lucia["firstName"], lucia["lastName"], lucia["email"]) == ("Lucía", "García López", "lucia@example.es")
    assert lucia["phoneNumber"] == "+34871234567"  # not a French number: read in the lead's country
    assert (anna["firstName"], anna["lastName"], anna["email"]) == ("Anna", "Maria Rossi", "anna@example.it")


def test_lead_without_email_or_phone_is_skipped(meta, graph):
    add_lead(graph, "301", [{"name": "full_name", "values": ["Jane Nobody"]}, {"name": "phone_number", "values": ["12"]}])

    assert send(meta, webhook((PAGE_ID, "301"))).status_code == 200

    assert meta.customers() == [] and meta.fullwhere.import_count == 0
    assert meta.retry_jobs() == [] and meta.dead_letters() == []


def test_duplicate_delivery_is_one_customer_per_lead(meta, graph):
    add_fixture_leads(graph)
    body = fixture_bytes("meta/leadgen_webhook.json")
    for _ in range(3):
        assert send(meta, body).status_code == 200
    # The same lead twice in one delivery is read once.
    assert send(meta, webhook((PAGE_ID, JOE_LEAD), (PAGE_ID, JOE_LEAD))).status_code == 200

    assert sorted(by_lead(meta)) == [JOE_LEAD, ELODIE_LEAD]
    assert len(meta.customers()) == 2
    assert graph.lead_reads == 7


# -- refused and ignored ----------------------------------------------------------------------------

def test_forged_missing_or_unprefixed_signature_is_401_and_imports_nothing(meta, graph):
    add_fixture_leads(graph)
    body = fixture_bytes("meta/leadgen_webhook.json")
    digest = hmac.new(APP_SECRET.encode(), body, hashlib.sha256).hexdigest()

    attempts = [
        send(meta, body, secret="forged"),
        meta.post("meta", body, {"Content-Type": "application/json"}),
        meta.post("meta", body, {"X-Hub-Signature-256": digest}),  # no sha256= prefix
        meta.post("meta", body, {"X-Hub-Signature-256": "sha1=" + digest}),
        meta.post("meta", body, {"X-Hub-Signature": "sha1=" + hmac.new(APP_SECRET.encode(), body, hashlib.sha1).hexdigest()}),
    ]

    assert [r.status_code for r in attempts] == [401] * 5
    assert all(r.json_body["error"] == "unauthorized" for r in attempts)
    assert meta.customers() == [] and graph.lead_reads == 0


def test_unset_app_secret_accepts_nothing_and_answers_503_so_meta_delivers_again(meta, graph, capsys):
    add_fixture_leads(graph)
    meta.configure(meta_app_secret=None)
    capsys.readouterr()
    response = send(meta, fixture_bytes("meta/leadgen_webhook.json"))
    assert response.status_code == 503 and response.json_body["error"] == "misconfigured"
    assert [line["reason"] for line in logged(capsys, "misconfigured")] == ["META_APP_SECRET is not configured"]
    assert meta.customers() == [] and graph.lead_reads == 0 and meta.retry_jobs() == []


def test_changes_and_objects_without_a_lead_are_ignored(meta, graph):
    feed = {"object": "page", "entry": [{"id": PAGE_ID, "time": 1764000000, "changes": [
        {"field": "feed", "value": {"item": "status", "verb": "add"}}]}]}
    messaging = {"object": "page", "entry": [{"id": PAGE_ID, "time": 1764000000, "messaging": [{}]}]}
    instagram = {"object": "instagram", "entry": [{"id": "1", "time": 1764000000, "changes": [{"field": "comments"}]}]}
    no_lead_id = {"object": "page", "entry": [{"id": PAGE_ID, "changes": [{"field": "leadgen", "value": {"page_id": PAGE_ID}}]}]}

    for payload in (feed, messaging, instagram, no_lead_id):
        response = send(meta, payload)
        assert response.status_code == 200 and response.body == b""

    assert meta.customers() == [] and graph.lead_reads == 0 and meta.dead_letters() == []


@pytest.mark.parametrize("body", [
    b"not json",
    b'{"entry": []}',
    b'{"object": "page", "entry": {"id": "1"}}',
    b'{"object": "page", "entry": [{"id": "1", "changes": [{"field": "leadgen", "value": "123"}]}]}',
])
def test_malformed_body_is_400_with_a_reason(meta, graph, body):
    response = send(meta, body)
    assert response.status_code == 400
    assert response.json_body["error"] == "malformed" and response.json_body["reason"]
    assert graph.lead_reads == 0


def test_connector_signs_requests_the_way_it_verifies_them(meta, graph):

    add_fixture_leads(graph)
    body = fixture_bytes("meta/leadgen_webhook.json")
    headers, query = platforms.sign_for("meta", body, os.environ)
    assert query == {}
    assert headers == {"X-Hub-Signature-256": signed(body)["X-Hub-Signature-256"]}
    assert meta.post("meta", body, headers).status_code == 200
    assert len(meta.customers()) == 2


# -- the fetch failing --------------------------------------------------------------------------------

def test_graph_outage_queues_the_lead_and_the_worker_imports_it(meta, graph):
    add_fixture_leads(graph)
    graph.faults.always(Fault("status", status=503))

    assert send(meta, webhook((PAGE_ID, JOE_LEAD))).status_code == 200
    assert meta.customers() == []
    [job] = meta.retry_jobs()
    assert (job["platform"], job["stage"], job["event_id"]) == ("meta", "fetch", JOE_LEAD)

    graph.faults.clear()
    meta.drain()

    assert list(by_lead(meta)) == [JOE_LEAD]
    assert meta.retry_jobs() == [] and meta.dead_letters() == []


def test_graph_throttling_answered_as_400_is_retried(meta, graph):
    add_fixture_leads(graph)
    graph.faults.add(Fault("status", status=400, body=json.dumps(
        {"error": {"message": "(#4) Application request limit reached", "type": "OAuthException", "code": 4,
                   "is_transient": True, "fbtrace_id": "AbC"}})))

    assert send(meta, webhook((PAGE_ID, JOE_LEAD))).status_code == 200
    [job] = meta.retry_jobs()
    assert "temporary error code 4" in job["last_error"]

    meta.drain()
    assert list(by_lead(meta)) == [JOE_LEAD] and meta.dead_letters() == []


def test_lead_unknown_to_meta_is_dead_lettered_with_graphs_reason(meta, graph):
    assert send(meta, webhook((PAGE_ID, "404404"))).status_code == 200
    [letter] = meta.dead_letters()
    assert letter["kind"] == "permanent" and letter["job"]["platform"] == "meta"
    assert "Meta Graph API answered 400" in letter["reason"] and "does not exist" in letter["reason"]
    assert meta.retry_jobs() == [] and meta.customers() == []


def test_revoked_page_token_is_held_until_a_new_one_is_set(meta, graph, capsys):
    """Graph answers a revoked token with HTTP 400 and error code 190: the lead waits on the retry queue
    (credentials_rejected), and is imported once the Page access token is replaced."""
    add_fixture_leads(graph)
    meta.configure(meta_page_access_token="revoked-token")
    capsys.readouterr()
    assert send(meta, webhook((PAGE_ID, JOE_LEAD))).status_code == 200
    [held] = logged(capsys, "held")
    assert held["reason"] == "credentials_rejected" and "error code 190" in held["detail"]
    [job] = meta.retry_jobs()
    assert job["event_id"] == JOE_LEAD and "error code 190" in job["last_error"]
    assert "revoked-token" not in json.dumps(job) and meta.dead_letters() == []

    meta.configure(meta_page_access_token=PAGE_TOKEN)
    meta.drain()
    assert list(by_lead(meta)) == [JOE_LEAD]
    assert meta.retry_jobs() == [] and meta.dead_letters() == []


# -- tenants ------------------------------------------------------------------------------------------

def test_each_page_uses_its_tenant_and_its_own_page_token(meta, graph, tmp_path):
    tenants = tmp_path / "tenants.json"
    tenants.write_text(json.dumps({"tenants": [
        {"id": "bistro", "fullwhere_api_key": "test-key", "fullwhere_api_secret": "test-secret",
         "platforms": {"meta": {"accounts": {PAGE_ID: {"page_access_token": PAGE_TOKEN}}}}},
        {"id": "hotel", "fullwhere_api_key": "tenant-b-key", "fullwhere_api_secret": "tenant-b-secret",
         "platforms": {"meta": {"accounts": {OTHER_PAGE: {"page_access_token": OTHER_PAGE_TOKEN}}}}},
    ]}))
    meta.configure(tenants_file=tenants, meta_page_access_token=None)
    add_fixture_leads(graph)
    add_lead(graph, "401", [{"name": "email", "values": ["guest@hotel.example"]}], page=OTHER_PAGE)
    # value.page_id routes the lead (the entry id of this sample is another id, 153125381133).
    payload = fixture_json("meta/leadgen_webhook.json")
    payload["entry"][0]["changes"] = payload["entry"][0]["changes"][:1]
    unrouted = webhook(("555000555", "999"))

    assert send(meta, payload).status_code == 200
    assert send(meta, webhook((OTHER_PAGE, "401"))).status_code == 200
    assert send(meta, unrouted).status_code == 200

    assert list(by_lead(meta, "test-key")) == [JOE_LEAD]
    assert list(by_lead(meta, "tenant-b-key")) == ["401"]
    # The page no tenant lists is held (unrouted), neither imported nor dead-lettered.
    [job] = meta.retry_jobs()
    assert job["tenant"] is None and job["event"]["account_id"] == "555000555"
    assert meta.dead_letters() == []


def test_a_listed_page_without_a_token_is_held_until_its_token_is_listed(meta, graph, tmp_path, capsys):
    tenants = tmp_path / "tenants.json"
    tenants.write_text(json.dumps({"tenants": [{"id": "bistro", "fullwhere_api_key": "test-key",
                                               "fullwhere_api_secret": "test-secret",
                                               "platforms": {"meta": {"accounts": {PAGE_ID: {}}}}}]}))
    meta.configure(tenants_file=tenants)  # META_PAGE_ACCESS_TOKEN is for the default tenant only
    add_fixture_leads(graph)
    capsys.readouterr()

    assert send(meta, webhook((PAGE_ID, JOE_LEAD))).status_code == 200

    [held] = logged(capsys, "held")
    assert held["reason"] == "not_configured" and "no Page access token" in held["detail"]
    [job] = meta.retry_jobs()
    assert job["tenant"] == "bistro" and "no Page access token" in job["last_error"]
    assert meta.dead_letters() == [] and graph.lead_reads == 0

    listed = {"meta": {"accounts": {PAGE_ID: {"page_access_token": PAGE_TOKEN}}}}
    tenants.write_text(json.dumps({"tenants": [{"id": "bistro", "fullwhere_api_key": "test-key",
                                               "fullwhere_api_secret": "test-secret", "platforms": listed}]}))
    meta.configure()  # the tenants document is read again
    meta.drain()
    assert list(by_lead(meta)) == [JOE_LEAD]
    assert meta.retry_jobs() == [] and meta.dead_letters() == []


# -- mapping details ----------------------------------------------------------------------------------

def test_name_splitting_and_key_folding():
    from chalicelib.connectors.meta import _key, checkbox_consent, split_full_name

    assert split_full_name("  Jean-Pierre   de la Fontaine ") == ("Jean-Pierre", "de la Fontaine")
    assert split_full_name("Cher") == ("Cher", None) and split_full_name("  ") == (None, None)
    assert [_key(k) for k in ("E-mail", "Prénom", "Numéro de téléphone", "PHONE_NUMBER", "эл._адрес")] == [
        "e_mail", "prenom", "numero_de_telephone", "phone_number", "эл_адрес"]
    responses = [{"checkbox_key": "news", "is_checked": "1"}, {"checkbox_key": "sms", "is_checked": ""},
                 {"checkbox_key": "odd", "is_checked": "maybe"}]
    assert checkbox_consent(responses, ["news"]) is True
    assert checkbox_consent(responses, ["sms"]) is False
    assert checkbox_consent(responses, ["sms", "news"]) is True
    assert checkbox_consent(responses, ["odd"]) is None and checkbox_consent(responses, ["absent"]) is None
    assert checkbox_consent(None, ["news"]) is None and checkbox_consent(responses, None) is None


def test_invalid_json_settings_name_the_setting_not_the_value():
    from chalicelib.connectors.meta import MetaSettings
    from chalicelib.core.errors import SettingsError
    from chalicelib.infra.settings import load_settings

    for name, value in (("META_FIELD_ALIASES", "{nope"), ("META_FIELD_ALIASES", '{"gender": ["sexe"]}'),
                        ("META_CONSENT_CHECKBOXES", '{"email": ["x"]}')):
        with pytest.raises(SettingsError) as error:
            load_settings({name: value}, MetaSettings)
        assert name in str(error.value) and value not in str(error.value)
    assert load_settings({}, MetaSettings).graph_url == "https://graph.facebook.com/v25.0"
