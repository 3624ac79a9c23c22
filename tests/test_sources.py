"""Declarative sources: Como, Groupe Partouche, Chr365 and Zenchef connected by configuration alone."""

from __future__ import annotations

import json
import os
import time

import pytest

from chalicelib.core.errors import SettingsError
from chalicelib.domain.sources import SourcesSettings, load_sources
from sandbox import platforms
from sandbox.emulators.base import Fault
from sandbox.platforms.como import ComoEmulator, make_member
from tests.conftest import fixture_bytes
from tests.support.log_leaks import bridge_log_lines
from tests.support.signing import hmac_base64, hmac_hex, standard_webhooks_headers

COMO_SECRET = "como-hook-secret"
PARTOUCHE_TOKEN = "partouche-url-token"
CHR365_SECRET = "chr365-hmac-secret"
ZENCHEF_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
MEMBER_ID = "1d722661-0a94-4a36-8dea-ae23e5e3f440"


@pytest.fixture(scope="module")
def como():
    with ComoEmulator(api_key="como-key") as server:
        yield server


def sources_document(como_url: str) -> dict:
    return {"sources": [
        {"name": "como", "preset": "como",
         "auth": {"type": "hmac", "header": "X-Como-Signature", "secret_env": "COMO_WEBHOOK_SECRET"},
         "fetch": {"url": como_url + "/getMemberDetails?returnAssets=active"}},
        {"name": "partouche", "preset": "partouche",
         "auth": {"type": "token", "query": "token", "secret": PARTOUCHE_TOKEN}},
        {"name": "chr365", "preset": "chr365",
         "auth": {"type": "hmac", "header": "X-Chr365-Signature", "encoding": "base64", "prefix": "sha256=",
                  "signed": "{header:X-Chr365-Timestamp}.{body}", "secret": CHR365_SECRET}},
        {"name": "zenchef", "preset": "zenchef", "auth": {"type": "standard_webhooks", "secret": ZENCHEF_SECRET}},
    ]}


@pytest.fixture
def sources(bridge, como, tmp_path, monkeypatch):
    como.reset()
    path = tmp_path / "sources.json"
    path.write_text(json.dumps(sources_document(como.url)))
    for name, value in {"COMO_WEBHOOK_SECRET": COMO_SECRET, "COMO_API_KEY": "como-key",
                        "COMO_BRANCH_ID": "branch-1", "COMO_POS_ID": "pos-1"}.items():
        monkeypatch.setenv(name, value)
    bridge.configure(sources_file=path)
    return bridge


def send_como(bridge, body: bytes, secret: str = COMO_SECRET):
    return bridge.post("como", body, {"X-Como-Signature": hmac_hex(secret, body), "Content-Type": "application/json"})


def send_chr365(bridge, body: bytes, secret: str = CHR365_SECRET, timestamp: str = "1764150000"):
    signature = "sha256=" + hmac_base64(secret, timestamp.encode() + b"." + body)
    return bridge.post("chr365", body, {"X-Chr365-Signature": signature, "X-Chr365-Timestamp": timestamp})


def send_zenchef(bridge, body: bytes, secret: str = ZENCHEF_SECRET, timestamp: int | None = None):
    headers = standard_webhooks_headers(body, secret, "msg_2Lh9", int(time.time()) if timestamp is None else timestamp)
    return bridge.post("zenchef", body, headers)


# -- Como: HMAC + fetch of the member -------------------------------------------------------------

def test_como_push_fetches_the_member_and_maps_consent(sources, como):
    como.add_member(make_member(MEMBER_ID, allowEmail=False))

    response = send_como(sources, fixture_bytes("sources/como_member_event.json"))

    assert response.status_code == 200
    [customer] = sources.customers()
    assert customer["comoId"] == MEMBER_ID
    assert (customer["firstName"], customer["lastName"], customer["email"]) == ("Jane", "Smith", "jane@email.com")
    assert customer["metadata"]["source"] == "como" and customer["metadata"]["comoTags"] == "VIP,Vegetarian"
    sent = [r.body for r in sources.fullwhere.requests if r.path == "/partners/customer"][-1]
    assert (sent["emailOptin"], sent["smsOptin"]) == (False, True)  # allowEmail / allowSMS
    [call] = como.requests_matching(path="/getMemberDetails")
    assert call.body == {"customer": {"commonExtId": MEMBER_ID}}
    assert call.headers["x-branch-id"] == "branch-1" and call.headers["x-pos-id"] == "pos-1"


def test_como_fetch_failing_is_retried_through_the_queue(sources, como):
    como.add_member(make_member(MEMBER_ID))
    como.faults.add(Fault("status", status=503), times=1)

    assert send_como(sources, fixture_bytes("sources/como_member_event.json")).status_code == 200
    [job] = sources.retry_jobs()
    assert job["platform"] == "como" and job["stage"] == "fetch"

    sources.drain()
    assert [c["comoId"] for c in sources.customers()] == [MEMBER_ID]


def test_como_unknown_member_is_dead_lettered(sources, como):
    assert send_como(sources, fixture_bytes("sources/como_member_event.json")).status_code == 200
    [letter] = sources.dead_letters()
    assert letter["kind"] == "permanent" and "without a guest" in letter["reason"]


def test_como_forged_or_unsigned_is_401(sources, como):
    como.add_member(make_member(MEMBER_ID))
    body = fixture_bytes("sources/como_member_event.json")
    assert send_como(sources, body, secret="forged").status_code == 401
    assert sources.post("como", body).status_code == 401
    assert sources.customers() == [] and como.member_calls == 0


def test_como_secret_missing_from_the_environment_accepts_nothing_and_answers_503_misconfigured(sources, monkeypatch,
                                                                                               capsys):
    monkeypatch.delenv("COMO_WEBHOOK_SECRET")
    capsys.readouterr()
    response = send_como(sources, fixture_bytes("sources/como_member_event.json"), secret="")
    assert response.status_code == 503 and response.json_body["error"] == "misconfigured"
    logged = [json.loads(line) for line in bridge_log_lines(capsys.readouterr().out)]
    [line] = [line for line in logged if line["outcome"] == "misconfigured" and "level" in line]
    assert "the secret of source 'como' is not configured" in line["reason"]
    assert not any(line["outcome"] in ("verified", "acknowledged") for line in logged)
    assert sources.customers() == [] and sources.retry_jobs() == []


# -- Partouche: URL token, guest in the payload ---------------------------------------------------

def test_partouche_token_in_the_url(sources):
    body = fixture_bytes("sources/partouche_customer.json")
    assert sources.post("partouche", body, query=f"token={PARTOUCHE_TOKEN}").status_code == 200
    [customer] = sources.customers()
    assert customer["partoucheId"] == "883412"
    assert (customer["firstName"], customer["lastName"]) == ("Louis", "Garnier")
    assert customer["phoneNumber"] == "+33781223344" and customer["emailOptin"] is True
    assert sources.post("partouche", body, query="token=guess").status_code == 401
    assert sources.post("partouche", body).status_code == 401


# -- Chr365: base64 HMAC with a prefix over "timestamp.body", several customers per push ----------

def test_chr365_signed_template_and_several_customers(sources):
    body = fixture_bytes("sources/chr365_customers.json")
    assert send_chr365(sources, body).status_code == 200
    customers = {c["chr365Id"]: c for c in sources.customers()}
    assert set(customers) == {"c-1001", "c-1002"}
    assert customers["c-1001"]["phoneNumber"] == "+33611223344"
    assert customers["c-1001"]["email"] == "ines.roux@example.fr"  # "mail" key
    assert customers["c-1001"]["firstName"] == "Inès"


def test_chr365_signature_bound_to_its_timestamp(sources):
    body = fixture_bytes("sources/chr365_customers.json")
    signature = "sha256=" + hmac_base64(CHR365_SECRET, b"1764150000." + body)
    headers = {"X-Chr365-Signature": signature, "X-Chr365-Timestamp": "1764150001"}  # replayed, other timestamp
    assert sources.post("chr365", body, headers).status_code == 401
    assert sources.customers() == []


# -- Zenchef: Standard Webhooks, the second-hand booking shape ------------------------------------

def test_zenchef_booking_becomes_a_customer(sources):
    assert send_zenchef(sources, fixture_bytes("sources/zenchef_booking.json")).status_code == 200
    [customer] = sources.customers()
    assert customer["zenchefId"] == "cust-5521"
    assert customer["email"] == "camille.moreau@example.fr" and customer["phoneNumber"] == "+33623456789"
    assert customer["metadata"]["zenchefBookingId"] == "bk-7f3a91" and customer["metadata"]["zenchefPartySize"] == "4"


def test_zenchef_stale_timestamp_or_wrong_secret_is_401(sources):
    body = fixture_bytes("sources/zenchef_booking.json")
    assert send_zenchef(sources, body, timestamp=int(time.time()) - 3600).status_code == 401
    assert send_zenchef(sources, body, secret="whsec_" + "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB").status_code == 401
    assert sources.customers() == []


def test_zenchef_events_without_a_guest_to_import_are_ignored(sources):
    booking = json.loads(fixture_bytes("sources/zenchef_booking.json"))
    booking["event"] = "booking.canceled"
    assert send_zenchef(sources, json.dumps(booking).encode()).status_code == 200
    assert sources.customers() == []


def test_duplicate_delivery_is_one_customer(sources):
    body = fixture_bytes("sources/zenchef_booking.json")
    for _ in range(3):
        assert send_zenchef(sources, body).status_code == 200
    assert len(sources.customers()) == 1


def test_malformed_body_is_400(sources):
    response = sources.post("partouche", b'{"customers": "nope"}', query=f"token={PARTOUCHE_TOKEN}")
    assert response.status_code == 400


def test_sign_matches_verify_for_every_declared_scheme_it_can_produce(sources, como):

    como.add_member(make_member(MEMBER_ID))
    for name, fixture in (("como", "como_member_event"), ("partouche", "partouche_customer"),
                          ("zenchef", "zenchef_booking")):
        body = fixture_bytes(f"sources/{fixture}.json")
        headers, query = platforms.sign_for(name, body, os.environ)
        assert sources.post(name, body, headers, "&".join(f"{k}={v}" for k, v in query.items())).status_code == 200


def test_sources_appear_in_health(sources, capsys):
    # /health answers its status only; which platforms are configured is in its log line.
    assert sources.client.http.get("/health").json_body["status"] == "ok"
    [line] = [line for line in map(json.loads, bridge_log_lines(capsys.readouterr().out))
              if line.get("message") == "health"]
    assert {"zenchef", "como", "partouche", "chr365"} <= set(line["configured"])


# -- the document itself --------------------------------------------------------------------------

def _load(tmp_path, document, suffix=".json"):
    path = tmp_path / f"sources{suffix}"
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    return load_sources(SourcesSettings(file=str(path)))


@pytest.mark.parametrize(
    "entry, named",
    [
        ({"name": "x1", "preset": "zenchef"}, "sources.0.auth"),
        ({"name": "x1", "preset": "zenchef", "auth": {"type": "hmac", "header": "X", "secret": "s"},
          "mapping": {"email": "booking.[[email"}}, "sources.0.mapping.email"),
        ({"name": "x1", "preset": "zenchef", "auth": {"type": "token", "secret": "s"}}, "query or header"),
        ({"name": "x1", "auth": {"type": "none"}, "id_field": "myspaceId", "mapping": {}}, "sources.0.id_field"),
        ({"name": "x1", "preset": "nope", "auth": {"type": "none"}}, "unknown preset"),
        ({"name": "mews", "preset": "zenchef", "auth": {"type": "none"}}, "built-in"),
        ({"name": "x1", "preset": "zenchef", "auth": {"type": "hmac", "header": "X", "secret": "s", "signed": "{ts}"}},
         "sources.0.auth.hmac.signed"),
    ],
)
def test_bad_sources_document_is_rejected_naming_the_field(tmp_path, entry, named):
    with pytest.raises(SettingsError) as error:
        _load(tmp_path, {"sources": [entry]})
    assert named in str(error.value)
    assert '"s"' not in str(error.value)


def test_bad_sources_document_makes_webhooks_answer_503(bridge, tmp_path):
    path = tmp_path / "sources.json"
    path.write_text('{"sources": [{"name": "x1"}]}')
    bridge.configure(sources_file=path)
    response = bridge.post("x1", b"{}")
    assert response.status_code == 503


def test_yaml_document(tmp_path):
    [source] = _load(tmp_path, "sources:\n  - name: chr365\n    preset: chr365\n    auth: {type: none}\n", ".yaml")
    assert (source.name, source.id_field, source.auth.type) == ("chr365", "chr365Id", "none")


def test_unauthenticated_source_must_say_so(tmp_path):
    with pytest.raises(SettingsError, match="sources.0.auth"):
        _load(tmp_path, {"sources": [{"name": "open", "preset": "chr365"}]})
    [source] = _load(tmp_path, {"sources": [{"name": "open", "preset": "chr365", "auth": {"type": "none"}}]})
    assert source.auth.type == "none"
