"""Issue 11, declarative sources: a webhook's values are data, never a template, a path or a key.

- an id holding ``${NAME}`` travels as those characters: no environment variable reaches a platform's API
  through it (the body, the path, the query or a header of the fetch);
- a fetch's ``${NAME}`` may not name the bridge's own variables (``AWS_*``, ``FULLWHERE_*``, a built-in
  platform's) nor a webhook secret: refused when the sources document loads;
- an id that could walk the fetch URL's path (``..``, ``/``, ...) is dead-lettered and no request leaves;
- a Standard Webhooks secret that decodes to no usable key is refused at load, naming the source, and a
  signature made with an empty key never verifies.
"""

from __future__ import annotations

import json
import time
from urllib.parse import unquote

import pytest

from chalicelib.core.errors import SettingsError
from chalicelib.core.signatures import standard_webhooks_valid
from chalicelib.domain.sources import SourcesSettings, load_sources
from sandbox.emulators.base import Request
from sandbox.platforms.como import ComoEmulator, make_member
from tests.conftest import FULLWHERE_SECRET, fixture_bytes
from tests.support.signing import hmac_hex, standard_webhooks_headers

COMO_SECRET = "como-hook-secret"
COMO_API_KEY = "como-api-key-4b7e1c"
AWS_SECRET = "aws-secret-canary-9d2f51"  # moto takes any credentials: a value no request may ever carry
ZENCHEF_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
# What the finding's attacker sends as the member's id.
HOSTILE_ID = "${FULLWHERE_API_SECRET}:${AWS_SECRET_ACCESS_KEY}:${COMO_API_KEY}"
SECRETS = (FULLWHERE_SECRET, AWS_SECRET, COMO_API_KEY)


@pytest.fixture(scope="module")
def como():
    with ComoEmulator(api_key=COMO_API_KEY) as server:
        # A member API addressed by path (GET /members/<id>), for the sources whose fetch URL holds {id}.
        def member_by_path(request: Request):
            wanted = unquote(request.route.removeprefix("/members/"))
            member = server._members.get(wanted)
            return (200, member) if member else (404, {"status": "error"})

        server.route_prefix("GET", "/members/", member_by_path)
        yield server


def como_source(como_url: str) -> dict:
    return {"name": "como", "preset": "como",
            "auth": {"type": "hmac", "header": "X-Como-Signature", "secret_env": "COMO_WEBHOOK_SECRET"},
            "fetch": {"url": como_url + "/getMemberDetails?returnAssets=active"}}


def path_source(como_url: str, name: str = "members") -> dict:
    """Unauthenticated (anyone may post to it), the id in the fetch URL's path and query and in a header."""
    return {"name": name, "auth": {"type": "none"}, "id_field": "comoId",
            "fetch": {"id": "memberId", "url": como_url + "/members/{id}?lookup={id}",
                      "headers": {"X-Api-Key": "${COMO_API_KEY}", "X-Member": "{id}"}},
            "mapping": {"id": "commonExtId", "firstName": "firstName", "lastName": "lastName", "email": "email"}}


@pytest.fixture
def configure(bridge, como, tmp_path, monkeypatch):
    como.reset()
    for name, value in {"COMO_WEBHOOK_SECRET": COMO_SECRET, "COMO_API_KEY": COMO_API_KEY,
                        "COMO_BRANCH_ID": "branch-1", "COMO_POS_ID": "pos-1", "AWS_SECRET_ACCESS_KEY": AWS_SECRET}.items():
        monkeypatch.setenv(name, value)

    def write(*sources: dict):
        path = tmp_path / "sources.json"
        path.write_text(json.dumps({"sources": list(sources)}))
        bridge.configure(sources_file=path)
        return bridge

    return write


def send_como(bridge, payload: dict):
    body = json.dumps(payload).encode()
    return bridge.post("como", body, {"X-Como-Signature": hmac_hex(COMO_SECRET, body), "Content-Type": "application/json"})


def leaks(requests: list[Request]) -> list[str]:
    """Where a secret appears in what the platform received; ``X-Api-Key`` is the one header meant to carry
    ``COMO_API_KEY`` (the operator's template), and must carry it alone."""
    found = []
    for request in requests:
        places = {"path": unquote(request.path), "body": request.raw.decode("utf-8", "replace"),
                  **{f"header {name}": value for name, value in request.headers.items() if name != "x-api-key"}}
        if "x-api-key" in request.headers and request.headers["x-api-key"] != COMO_API_KEY:
            places["header x-api-key"] = request.headers["x-api-key"]
        found += [f"{place} of {request.method} {request.route}" for place, text in places.items()
                  if any(secret in text for secret in SECRETS)]
    return found


# -- finding 1: a webhook's id is never expanded -----------------------------------------------------

def test_como_id_holding_placeholders_travels_literally_and_expands_nothing(configure, como):
    bridge = configure(como_source(como.url))
    como.add_member(make_member(HOSTILE_ID))

    response = send_como(bridge, {"event": "member.updated", "id": "evt-1", "commonExtId": HOSTILE_ID})

    assert response.status_code == 200
    assert leaks(como.requests) == []
    [call] = como.requests_matching(path="/getMemberDetails")
    assert call.body == {"customer": {"commonExtId": HOSTILE_ID}}  # the characters, as sent
    assert call.headers["x-api-key"] == COMO_API_KEY  # the operator's own placeholder still works
    assert [c["comoId"] for c in bridge.customers()] == [HOSTILE_ID]


def test_id_in_the_fetch_path_query_and_header_travels_literally(configure, como):
    bridge = configure(path_source(como.url))
    como.add_member(make_member(HOSTILE_ID))

    response = bridge.post("members", json.dumps({"memberId": HOSTILE_ID}).encode())

    assert response.status_code == 200
    assert leaks(como.requests) == []
    [call] = como.requests_matching(path="/members/")
    assert unquote(call.route) == f"/members/{HOSTILE_ID}" and "%24%7B" in call.route  # one quoted segment
    assert call.query == {"lookup": HOSTILE_ID}
    assert call.headers["x-member"] == HOSTILE_ID and call.headers["x-api-key"] == COMO_API_KEY
    assert [c["comoId"] for c in bridge.customers()] == [HOSTILE_ID]


# -- finding 7 (declarative): an id that could walk the fetch URL's path ----------------------------

@pytest.mark.parametrize("member_id", ["..", ".", "...", " .. ", "../getMemberDetails", "a\\b"])
def test_id_that_could_walk_the_fetch_path_is_dead_lettered_and_no_request_leaves(configure, como, member_id):
    bridge = configure(path_source(como.url))

    response = bridge.post("members", json.dumps({"memberId": member_id}).encode())

    assert response.status_code == 200  # accepted: the event is dead-lettered, with its reason
    assert como.requests == []
    [letter] = bridge.dead_letters()
    assert letter["kind"] == "permanent"
    assert letter["reason"] == "members: the value at 'memberId' is not a usable id for the API's URL"
    assert bridge.retry_jobs() == [] and bridge.customers() == []


def test_id_that_would_break_a_header_is_dead_lettered_and_no_request_leaves(configure, como):
    source = path_source(como.url, name="lookup")
    source["fetch"]["url"] = como.url + "/members/known?lookup={id}"  # the id only in the query and a header
    bridge = configure(source)

    # (Line breaks never get this far: ids are cleaned of control characters.)
    response = bridge.post("lookup", json.dumps({"memberId": "membre-é"}).encode())

    assert response.status_code == 200
    assert como.requests == []
    [letter] = bridge.dead_letters()
    assert letter["kind"] == "permanent" and letter["reason"] == "the id at 'memberId' is not usable in the X-Member header"


# -- ${NAME}: only the source's own variables --------------------------------------------------------

@pytest.mark.parametrize("variable", ["AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "FULLWHERE_API_SECRET",
                                      "MEWS_ACCESS_TOKEN", "UBEREATS_CLIENT_SECRET", "COMO_WEBHOOK_SECRET"])
def test_a_fetch_may_not_name_the_bridges_variables_or_a_webhook_secret(configure, como, tmp_path, variable):
    members = path_source(como.url)
    members["fetch"]["headers"]["X-Extra"] = f"Bearer ${{{variable}}}"
    document = {"sources": [como_source(como.url), members]}

    with pytest.raises(SettingsError) as error:
        load(tmp_path, document)
    assert "'members'" in str(error.value) and variable in str(error.value)
    assert AWS_SECRET not in str(error.value) and FULLWHERE_SECRET not in str(error.value)

    bridge = configure(*document["sources"])
    response = bridge.post("members", json.dumps({"memberId": "m-1"}).encode())
    assert response.status_code == 503 and response.json_body["error"] == "misconfigured"
    assert como.requests == []


@pytest.mark.parametrize("url", ["https://{id}.members.example/api", "https://members.example{id}/api",
                                 "${COMO_BASE_URL}{id}", "${COMO_BASE_URL}.{id}/members"])
def test_the_id_may_not_choose_the_fetch_host(tmp_path, como, url):
    source = path_source(como.url)
    source["fetch"]["url"] = url
    with pytest.raises(SettingsError, match=r"sources\.0\.fetch\.url: .*never in its host"):
        load(tmp_path, {"sources": [source]})
    source["fetch"]["url"] = "${COMO_BASE_URL}/members/{id}"  # after the host: fine
    assert load(tmp_path, {"sources": [source]})[0].fetch.url == "${COMO_BASE_URL}/members/{id}"


# -- finding 6: a Standard Webhooks secret that decodes to no usable key -----------------------------

def zenchef_source(auth: dict) -> dict:
    return {"name": "zenchef", "preset": "zenchef", "auth": {"type": "standard_webhooks", **auth}}


def load(tmp_path, document: dict):
    path = tmp_path / "loaded-sources.json"
    path.write_text(json.dumps(document))
    return load_sources(SourcesSettings(file=str(path)))


@pytest.mark.parametrize("secret", ["whsec_", "whsec_!!!!", "whsec_c2hvcnQ=", ""])
@pytest.mark.parametrize("declared", ["inline", "environment"])
def test_standard_webhooks_secret_without_a_usable_key_is_refused_at_load(bridge, tmp_path, monkeypatch, secret,
                                                                           declared):
    monkeypatch.setenv("ZENCHEF_WEBHOOK_SECRET", secret)
    auth = {"secret": secret} if declared == "inline" else {"secret_env": "ZENCHEF_WEBHOOK_SECRET"}
    document = {"sources": [zenchef_source(auth)]}
    if secret == "" and declared == "environment":
        # An unset secret is "not configured" (401 for everything), as for every scheme.
        [source] = load(tmp_path, document)
        assert source.auth.secret_value() is None
        return

    with pytest.raises(SettingsError) as error:
        load(tmp_path, document)
    assert "source 'zenchef': its Standard Webhooks secret" in str(error.value)
    assert "!!!!" not in str(error.value) and "c2hvcnQ" not in str(error.value)

    # Over HTTP: a delivery signed with the empty key an attacker can compute gets 503, never imported.
    path = tmp_path / "sources.json"
    path.write_text(json.dumps(document))
    bridge.configure(sources_file=path)
    body = fixture_bytes("sources/zenchef_booking.json")
    response = bridge.post("zenchef", body, standard_webhooks_headers(body, "whsec_", "msg_1", int(time.time())))
    assert response.status_code == 503 and response.json_body["error"] == "misconfigured"
    assert bridge.customers() == []


@pytest.mark.parametrize("secret", ["whsec_", "whsec_!!!!", "!!!!", "whsec_c2hvcnQ="])
def test_a_signature_made_with_an_empty_or_short_key_never_verifies(secret):
    body = b'{"event": "booking.created"}'
    now = int(time.time())
    # Signed with the key lenient base64 makes of the secret: empty (b""), or b"short".
    forged = standard_webhooks_headers(body, secret, "msg_1", now)
    assert not standard_webhooks_valid(secret, forged, body, 300)
    genuine = standard_webhooks_headers(body, ZENCHEF_SECRET, "msg_1", now)
    assert standard_webhooks_valid(ZENCHEF_SECRET, genuine, body, 300)


# -- the signed template: request values are data there too ------------------------------------------

def test_signed_template_signs_a_header_as_sent_never_expanding_it(configure):
    source = {"name": "signedtpl", "preset": "chr365", "auth": {
        "type": "hmac", "header": "X-Signature", "secret": "signed-template-secret-5e1",
        "signed": "{header:X-Timestamp}.{query:n}.{body}"}}
    bridge = configure(source)
    body = fixture_bytes("sources/chr365_customers.json")
    timestamp = "{query:n}"  # a header value that looks like a slot of the template
    signature = hmac_hex("signed-template-secret-5e1", timestamp.encode() + b".abc." + body)
    headers = {"X-Signature": signature, "X-Timestamp": timestamp}

    assert bridge.post("signedtpl", body, headers, query="n=abc").status_code == 200
    # What the old two-pass rendering signed ("abc.abc.<body>") is not what the sender signed.
    forged = {"X-Signature": hmac_hex("signed-template-secret-5e1", b"abc.abc." + body), "X-Timestamp": timestamp}
    assert bridge.post("signedtpl", body, forged, query="n=abc").status_code == 401
