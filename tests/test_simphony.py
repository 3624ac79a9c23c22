"""Simphony STS Gen2 notifications: Digest/Key-Id verified on the raw body, acknowledged, nothing imported."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os

import pytest

from sandbox import platforms
from tests.conftest import fixture_bytes

KEY_ID = "6f1c2d3e-4a5b-4c6d-8e7f-90a1b2c3d4e5"
KEY = "c2ltcGhvbnktdGVzdC1rZXktMzItYnl0ZXMtbG9uZyEh"  # Base64 of a 33-byte key ("Min 32bytes encoded as Base64")
OLD_KEY_ID = "0b9a8c7d-6e5f-4a3b-9c2d-1e0f9a8b7c6d"
OLD_KEY = base64.b64encode(b"the previous simphony key, 32+ bytes").decode()
NOTIFICATION = "simphony/check_notification.json"


def digest(key_b64: str, body: bytes) -> str:
    """Simphony's scheme: Base64(HMAC-SHA256(key = Base64-decoded hmacKey, message = the body))."""
    return base64.b64encode(hmac.new(base64.b64decode(key_b64), body, hashlib.sha256).digest()).decode()


@pytest.fixture
def simphony(bridge):
    bridge.configure(simphony_hmac_keys=json.dumps({KEY_ID: KEY, OLD_KEY_ID: OLD_KEY}))
    return bridge


def send(bridge, body: bytes, headers: dict[str, str]):
    return bridge.post("simphony", body, {"Content-Type": "application/json", **headers})


def test_valid_digest_is_acknowledged_and_imports_nothing(simphony, capsys):
    body = fixture_bytes(NOTIFICATION)

    response = send(simphony, body, {"Key-Id": KEY_ID, "Digest": digest(KEY, body)})

    assert response.status_code == 200 and response.body == b""
    assert simphony.customers() == [] and simphony.fullwhere.requests == []
    assert simphony.retry_jobs() == [] and simphony.dead_letters() == []
    logged = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"ts"')]
    assert [(line["outcome"], line.get("event_type")) for line in logged if line["outcome"] == "ignored"] == [
        ("ignored", "CheckNotification")]


def test_every_configured_key_is_accepted_during_a_rotation(simphony):
    body = fixture_bytes(NOTIFICATION)
    assert send(simphony, body, {"Key-Id": OLD_KEY_ID, "Digest": digest(OLD_KEY, body)}).status_code == 200


@pytest.mark.parametrize("headers", [
    pytest.param({"Key-Id": KEY_ID, "Digest": digest(KEY, b"another body")}, id="forged-digest"),
    pytest.param({"Key-Id": KEY_ID, "Digest": digest(OLD_KEY, fixture_bytes(NOTIFICATION))}, id="other-key-digest"),
    pytest.param({"Key-Id": "unknown-key", "Digest": digest(KEY, fixture_bytes(NOTIFICATION))}, id="unknown-key-id"),
    pytest.param({"Key-Id": KEY_ID}, id="missing-digest"),
    pytest.param({"Digest": digest(KEY, fixture_bytes(NOTIFICATION))}, id="missing-key-id"),
])
def test_forged_or_missing_credentials_are_401(simphony, headers):
    response = send(simphony, fixture_bytes(NOTIFICATION), headers)
    assert response.status_code == 401 and response.json_body["error"] == "unauthorized"
    assert simphony.customers() == [] and simphony.fullwhere.requests == []


def test_digest_is_checked_on_the_raw_bytes(simphony):
    body = fixture_bytes(NOTIFICATION)
    reserialised = json.dumps(json.loads(body)).encode()
    assert send(simphony, reserialised, {"Key-Id": KEY_ID, "Digest": digest(KEY, body)}).status_code == 401


def test_malformed_signed_body_is_400(simphony):
    body = b'{"messages": [{"id": "1"}]}'
    response = send(simphony, body, {"Key-Id": KEY_ID, "Digest": digest(KEY, body)})
    assert response.status_code == 400
    assert response.json_body["error"] == "malformed" and "messageType" in response.json_body["reason"]


def test_unconfigured_keys_accept_nothing_and_answer_503_misconfigured(bridge, capsys):
    bridge.configure(simphony_hmac_keys=None)
    body = fixture_bytes(NOTIFICATION)
    capsys.readouterr()
    response = send(bridge, body, {"Key-Id": KEY_ID, "Digest": digest(KEY, body)})
    assert response.status_code == 503 and response.json_body["error"] == "misconfigured"
    logged = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"ts"')]
    [line] = [line for line in logged if line["outcome"] == "misconfigured"]
    assert "SIMPHONY_HMAC_KEYS is not configured" in line["reason"]
    assert not any(line["outcome"] in ("verified", "acknowledged") for line in logged)


def test_keys_that_are_not_a_json_object_of_base64_are_503(bridge):
    body = fixture_bytes(NOTIFICATION)
    for keys in ("not json", json.dumps({KEY_ID: "%%% not base64 %%%"})):
        bridge.configure(simphony_hmac_keys=keys)
        response = send(bridge, body, {"Key-Id": KEY_ID, "Digest": digest(KEY, body)})
        assert response.status_code == 503 and response.json_body["error"] == "misconfigured"


def test_connector_signs_requests_the_way_it_verifies_them(simphony):

    body = fixture_bytes(NOTIFICATION)
    headers, query = platforms.sign_for("simphony", body, os.environ)
    assert query == {} and headers["Key-Id"] == KEY_ID and headers["Digest"] == digest(KEY, body)
    assert simphony.client.http.post("/webhooks/simphony", headers=headers, body=body).status_code == 200
