"""The HTTP contract every platform sees: 404, 413, 400 with a reason, 401, 503, health."""

from __future__ import annotations

import json

import pytest

from sandbox.aws import queue_depth
from tests.conftest import DELIVEROO_SECRET, MEWS_WEBHOOK_TOKEN, UBER_CLIENT_SECRET, fixture_json
from tests.support.log_leaks import bridge_log_lines


def test_unknown_platform_is_404_json(bridge):
    response = bridge.post("myspace", b"{}", {"Content-Type": "application/json"})
    assert response.status_code == 404
    assert response.json_body == {"error": "unknown_platform", "reason": "no connector for platform 'myspace'"}


@pytest.mark.parametrize("platform", ["deliveroo", "ubereats", "mews"])
def test_body_over_256_kib_is_413_before_anything_else(bridge, platform):
    response = bridge.post(platform, b"{" + b" " * (256 * 1024) + b"}", {"Content-Type": "application/json"})
    assert response.status_code == 413
    assert response.json_body["error"] == "too_large"


def test_body_of_exactly_256_kib_is_not_too_large(bridge):
    body = b'{"event":"rider.status_update"}'
    body = body + b" " * (256 * 1024 - len(body))
    assert bridge.send_deliveroo(body).status_code == 200


@pytest.mark.parametrize(
    "body, reason",
    [
        (b"", "empty body"),
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe{}", "not valid UTF-8"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'"just a string"', "Deliveroo webhook"),
        (b'{"event": ["order.new"], "body": null}', "event"),
    ],
)
def test_malformed_signed_body_is_400_with_a_reason(bridge, body, reason):
    response = bridge.send_deliveroo(body)
    assert response.status_code == 400
    assert response.json_body["error"] == "malformed"
    assert reason in response.json_body["reason"]
    assert bridge.customers() == []


def test_malformed_mews_body_is_400(bridge):
    response = bridge.send_mews(b'{"EnterpriseId": "e", "Events": "not a list"}')
    assert response.status_code == 400
    assert "Events" in response.json_body["reason"]


def test_malformed_ubereats_body_is_400(bridge):
    response = bridge.send_ubereats({"event_type": "orders.notification", "meta": {}})
    assert response.status_code == 400
    assert "event_id" in response.json_body["reason"]


@pytest.mark.parametrize("platform", ["deliveroo", "ubereats", "mews"])
def test_unsigned_request_is_401(bridge, platform):
    response = bridge.post(platform, b'{"event": "order.new"}', {"Content-Type": "application/json"})
    assert response.status_code == 401
    assert response.json_body["error"] == "unauthorized"


def test_signature_is_checked_before_the_body_is_parsed(bridge):
    """A forged malformed body gets 401, not 400: nothing about parsing is revealed to a forger."""
    response = bridge.post("ubereats", b"{not json", {"X-Uber-Signature": "00" * 32})
    assert response.status_code == 401


def test_platform_without_a_configured_secret_answers_503_misconfigured_and_imports_nothing(bridge, capsys):
    """Nothing can be verified without the secret: nothing is accepted, and the platform is told to deliver
    again (503) while the operator, alerted by the ``misconfigured`` line and metric, sets it."""
    bridge.configure(deliveroo_webhook_secret=None)
    capsys.readouterr()
    response = bridge.send_deliveroo(fixture_json("deliveroo/order_new_loyalty.json"), secret="")
    assert response.status_code == 503
    assert response.json_body["error"] == "misconfigured"
    assert "DELIVEROO_WEBHOOK_SECRET" not in response.body.decode()  # which setting: in the logs only
    lines = [json.loads(line) for line in bridge_log_lines(capsys.readouterr().out)]
    [logged] = [line for line in lines if line["outcome"] == "misconfigured" and "level" in line]
    assert logged["level"] == "ERROR" and logged["status"] == 503
    assert "DELIVEROO_WEBHOOK_SECRET is not configured" in logged["reason"]
    assert [line["Events"] for line in lines if line["outcome"] == "misconfigured" and "level" not in line] == [1]
    assert not any(line["outcome"] in ("verified", "acknowledged") for line in lines)
    assert bridge.customers() == []
    assert queue_depth(bridge.endpoint, bridge.retry_url) == 0 and queue_depth(bridge.endpoint, bridge.dlq_url) == 0


def test_health_answers_status_and_version_only(bridge):
    """Unauthenticated: which platforms are configured is in the log line (tests/test_hardening_deploy.py)."""
    bridge.configure(ubereats_client_secret=None)
    response = bridge.client.http.get("/health")
    assert response.status_code == 200
    body = response.json_body
    assert set(body) == {"status", "version"}
    assert body["status"] == "ok" and body["version"]
    text = json.dumps(body)
    for secret in (DELIVEROO_SECRET, UBER_CLIENT_SECRET, MEWS_WEBHOOK_TOKEN, "test-secret"):
        assert secret not in text


def test_invalid_settings_answer_503_so_the_platform_retries(bridge):
    bridge.configure(inline_budget_seconds="soon")
    response = bridge.send_deliveroo({"event": "rider.status_update"})
    assert response.status_code == 503
    assert response.json_body["error"] == "misconfigured"
    assert "soon" not in response.body.decode()


def test_get_on_a_platform_without_handshake_is_405(bridge):
    response = bridge.client.http.get("/webhooks/deliveroo")
    assert response.status_code == 405
    assert bridge.client.http.get("/webhooks/myspace").status_code == 404
