"""Issue 11, items 5 and 7: what the bridge puts in the URLs it calls.

- A platform credential never travels in a URL, and no request line of the HTTP client reaches the logs with
  a query string: Meta's Page token goes in the ``Authorization`` header, and httpx's "HTTP Request: GET <url>"
  line is kept out of the output (and stripped of its query if someone turns it back on).
- An id from a payload placed in a URL path is refused when it could walk that path (``..``, ``a/b``): the
  event is dead-lettered with the reason (or the webhook answered 400 where the parser already refuses it),
  and the platform's API receives no request for it, with or without our credential.

Everything runs over real HTTP: the bridge through Chalice's test client, the sandbox's platform emulators
(which record what they receive) and moto's server as SQS and DynamoDB.
"""

from __future__ import annotations

import logging
import sys
import uuid

import pytest

from sandbox import platforms
from sandbox.platforms import meta as sandbox_meta
from sandbox.platforms import oracle as sandbox_oracle
from tests.support.sandbox_bridge import SandboxBridge, sandbox_bridge

PAGE_TOKEN = sandbox_meta.SECRETS["meta_page_token"]
APP_SECRET = sandbox_meta.SECRETS["meta_app_secret"]
REFUSED = "is not a usable id for the API's URL"

_guests = iter(range(1, 1_000_000))


@pytest.fixture
def stack(sandbox, moto_endpoint, monkeypatch):
    with sandbox_bridge(sandbox, moto_endpoint, monkeypatch, "urls") as bridge:
        yield bridge


def printed_again(capsys) -> tuple[str, str]:
    """The test's stdout and stderr so far, written back so that the log scan of tests/conftest.py sees them."""
    captured = capsys.readouterr()
    sys.stdout.write(captured.out)
    sys.stderr.write(captured.err)
    return captured.out, captured.err


def meta_lead(stack: SandboxBridge) -> str:
    """Sends the sandbox's sample lead, signed; returns its lead id once it is imported."""
    n = next(_guests)
    response = stack.send("meta", sandbox_meta.SAMPLE.build(stack.sandbox, n))
    assert response.status_code == 200, response.body[:300]
    [customer] = stack.customers()
    assert customer["metaId"] == sandbox_meta.SAMPLE.guest_id(n)
    return customer["metadata"]["metaLeadId"]


def credentials_in(text: str) -> list[str]:
    """The Page token, the appsecret_proof or a query string of a Graph URL, wherever they appear in ``text``."""
    from chalicelib.core.signatures import hmac_sha256_hex

    proof = hmac_sha256_hex(APP_SECRET, PAGE_TOKEN.encode())
    found = [value for value in (PAGE_TOKEN, proof, "access_token=", "appsecret_proof=") if value in text]
    return found + [line for line in text.splitlines() if "/v25.0/" in line and "?" in line.split("/v25.0/", 1)[1]]


# -- item 5: credentials in URLs, and URLs in logs ---------------------------------------------------

def test_meta_sends_the_page_token_in_the_authorization_header_and_no_credential_in_the_url(stack):
    lead_id = meta_lead(stack)

    graph = stack.sandbox.platforms["meta"]
    [read] = graph.requests_matching("GET")
    assert read.route == f"/v25.0/{lead_id}"
    assert read.headers["authorization"] == f"Bearer {PAGE_TOKEN}"
    assert "access_token" not in read.query and PAGE_TOKEN not in read.path
    # appsecret_proof has no header form in Graph: it stays a parameter, and must not reach any log (below).
    assert set(read.query) == {"fields", "appsecret_proof"}


@pytest.mark.parametrize("level", ["INFO", "DEBUG"])
def test_no_output_holds_the_page_token_or_a_credentialed_query(stack, caplog, capsys, level):
    # As `make run` (chalice local) and Lambda do: the root logger prints what it gets, at the bridge's level.
    stack.configure(LOG_LEVEL=level)
    caplog.set_level(getattr(logging, level))
    printer = logging.StreamHandler(sys.stdout)
    complainer = logging.StreamHandler(sys.stderr)
    root = logging.getLogger()
    root.addHandler(printer)
    root.addHandler(complainer)
    try:
        meta_lead(stack)
    finally:
        root.removeHandler(printer)
        root.removeHandler(complainer)

    out, err = printed_again(capsys)
    assert '"platform": "meta"' in out, "the bridge logged nothing: the scan below would prove nothing"
    records = "\n".join(f"{record.name}: {record.getMessage()}" for record in caplog.records)
    assert credentials_in(out) == [] and credentials_in(err) == [] and credentials_in(records) == []


def test_the_http_clients_request_line_has_no_query_even_when_its_logger_is_turned_up(stack, caplog):
    # Someone debugging a call lowers httpx's own logger: its request lines come back, without their query.
    caplog.set_level(logging.DEBUG, logger="httpx")
    meta_lead(stack)

    lines = [record.getMessage() for record in caplog.records if record.name == "httpx"]
    graph_lines = [line for line in lines if "HTTP Request: GET" in line and "/v25.0/" in line]
    assert graph_lines, lines
    assert all("?" not in line for line in lines), lines
    assert credentials_in("\n".join(lines)) == []


# -- item 7: ids from payloads placed in URL paths ---------------------------------------------------

def _ubereats(stack: SandboxBridge, bad: str) -> dict:
    payload = platforms.module("ubereats").SAMPLE.build(stack.sandbox, next(_guests))
    payload["meta"]["resource_id"] = bad
    payload["resource_href"] = f"https://api.uber.com/v2/eats/order/{bad}"
    return payload


def _meta(stack: SandboxBridge, bad: str) -> dict:
    payload = sandbox_meta.SAMPLE.build(stack.sandbox, next(_guests))
    payload["entry"][0]["changes"][0]["value"]["leadgen_id"] = bad
    return payload


def _sevenrooms(stack: SandboxBridge, bad: str) -> dict:
    payload = platforms.module("sevenrooms").SAMPLE.build(stack.sandbox, next(_guests))
    payload["entity"]["client_id"] = bad
    return payload


def _thefork(stack: SandboxBridge, bad: str) -> dict:
    return {**platforms.module("thefork").SAMPLE.build(stack.sandbox, next(_guests)), "uuid": bad}


# platform → (the webhook with a bad id, what the reason names, the routes a request may take there)
WEBHOOKS = {
    "ubereats": (_ubereats, "Uber Eats order id", ("/oauth/v2/token",)),
    "meta": (_meta, "Meta leadgen_id", ()),
    "sevenrooms": (_sevenrooms, "SevenRooms client id", ("/2_4/auth",)),
    "thefork": (_thefork, "uuid", ("/oauth/token",)),
}
BAD_IDS = ["..", "a/b"]


def assert_no_call_for_the_bad_id(emulator, token_routes: tuple[str, ...]) -> None:
    """Only token requests reached the platform: no read of any path, the walked one or the intended one."""
    received = [(request.method, request.route) for request in emulator.requests]
    assert all(method == "POST" and route in token_routes for method, route in received), received


@pytest.mark.parametrize("bad", BAD_IDS, ids=["dot-dot", "slash"])
@pytest.mark.parametrize("platform", list(WEBHOOKS))
def test_a_signed_webhook_whose_id_would_walk_the_path_is_refused_and_nothing_is_fetched(stack, platform, bad):
    build, named, token_routes = WEBHOOKS[platform]
    response = stack.send(platform, build(stack, bad))

    assert response.status_code in (200, 400), response.body[:300]
    assert_no_call_for_the_bad_id(stack.sandbox.platforms[platform], token_routes)
    if response.status_code == 400:  # refused by the parser (TheFork's uuid must look like one)
        assert response.json_body["error"] == "malformed" and response.json_body["reason"]
        assert stack.dead_letters() == []
    else:
        [letter] = stack.dead_letters()
        assert letter["kind"] == "permanent" and letter["job"]["platform"] == platform
        assert letter["reason"] == f"{named} {REFUSED}", letter["reason"]
    assert stack.retry_jobs() == [] and stack.customers() == []


@pytest.mark.parametrize("bad", BAD_IDS, ids=["dot-dot", "slash"])
def test_a_pulled_opera_event_whose_profile_id_would_walk_the_path_is_dead_lettered(stack, bad):
    ohip = stack.sandbox.platforms["oracle"]
    ohip.enqueue(sandbox_oracle.HOTEL, sandbox_oracle.make_event(
        f"evt-{uuid.uuid4().hex[:8]}", "NEW PROFILE", bad, hotel_id=sandbox_oracle.HOTEL))

    stack.pull("oracle")

    # The dequeue happened (that is how the event arrived); no profile was read, here or anywhere else.
    received = [(request.method, request.route) for request in ohip.requests]
    events_route = f"/int/v1/externalSystem/{sandbox_oracle.SYSTEM}/hotels/{sandbox_oracle.HOTEL}/businessEvents"
    assert ("GET", events_route) in received
    assert all(route in ("/oauth/v1/tokens", events_route) for _, route in received), received
    [letter] = stack.dead_letters()
    assert letter["kind"] == "permanent" and letter["job"]["platform"] == "oracle"
    assert letter["reason"] == f"OPERA profile id {REFUSED}", letter["reason"]
    assert stack.retry_jobs() == [] and stack.customers() == []


def test_ids_that_cannot_walk_a_path_still_reach_the_api(stack):
    """The refusal is narrow: a real id with characters a path must escape (here a space and a ``%``) is sent,
    quoted as one segment, and the platform's answer decides."""
    payload = _ubereats(stack, "order 100%")
    assert stack.send("ubereats", payload).status_code == 200
    [letter] = stack.dead_letters()
    assert "Uber Eats API answered 404" in letter["reason"]
    reads = stack.sandbox.platforms["ubereats"].requests_matching("GET")
    assert [request.path for request in reads] == ["/v2/eats/order/order%20100%25"]
