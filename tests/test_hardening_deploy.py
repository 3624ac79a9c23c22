"""Issue 11, the deployment's side: /health tells strangers nothing but its status, and replayed
deliveries do what docs/reliability.md ("Replayed deliveries") says. The packaged template's checks
(log retention, logs permission, throttling, message size) are in tests/test_package.py, which builds it once.
"""

from __future__ import annotations

import json

import httpx
import pytest

from chalicelib import __version__
from sandbox.platforms.zelty import ZeltyEmulator
from tests.conftest import DELIVEROO_SECRET, UBER_CLIENT_SECRET, fixture_bytes, fixture_json
from tests.support.signing import deliveroo_headers

ZELTY_SECRET = "zelty-secret-key-7c41"
ZELTY_API_KEY = "zelty-api-key-19ab"


def _lines(capsys) -> list[dict]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]


def _health_lines(lines: list[dict]) -> list[dict]:
    return [line for line in lines if line.get("outcome") == "health" and "_aws" not in line]


def _counted(lines: list[dict], outcome: str) -> int:
    return sum(line["Events"] for line in lines if "_aws" in line and line["outcome"] == outcome and "Events" in line)


# -- /health ------------------------------------------------------------------------------------

def test_health_answers_status_and_version_only_and_logs_the_details(bridge, capsys):
    bridge.configure(ubereats_client_secret=None)
    capsys.readouterr()

    response = bridge.client.http.get("/health")

    assert response.status_code == 200
    assert response.json_body == {"status": "ok", "version": __version__}
    lines = _lines(capsys)
    [line] = _health_lines(lines)
    assert line["status"] == "ok" and line["level"] == "INFO" and line["version"] == __version__
    assert {"deliveroo", "mews"} <= set(line["configured"]) and "ubereats" in line["unconfigured"]
    assert not set(line["configured"]) & set(line["unconfigured"])
    assert (line["retry_queue"], line["dead_letter_queue"], line["identity_ledger"]) == (True, True, True)
    assert _counted(lines, "health") == 1  # the line is a metric too (EMF, written when the invocation ends)
    text = json.dumps(line)
    for secret in (DELIVEROO_SECRET, UBER_CLIENT_SECRET, "test-secret"):
        assert secret not in text


@pytest.mark.parametrize("fault", ["sources_field", "setting"])
def test_misconfigured_health_names_nothing_and_logs_the_file_and_field(bridge, capsys, tmp_path, fault):
    if fault == "sources_field":
        path = tmp_path / "hidden-sources.json"
        path.write_text(json.dumps({"sources": [{"name": "open", "preset": "chr365"}]}))  # no auth
        bridge.configure(sources_file=path)
        named = ("hidden-sources.json", "sources.0.auth")
    else:
        bridge.configure(inline_budget_seconds="soon")
        named = ("INLINE_BUDGET_SECONDS",)
    capsys.readouterr()

    response = bridge.client.http.get("/health")

    assert response.status_code == 200
    assert response.json_body == {"status": "misconfigured", "version": __version__}
    lines = _lines(capsys)
    [line] = _health_lines(lines)
    assert line["status"] == "misconfigured" and line["level"] == "ERROR"
    assert all(part in line["reason"] for part in named), line["reason"]
    assert "soon" not in line["reason"]  # the setting, never its value
    assert _counted(lines, "health") == 1


# -- replayed deliveries (docs/reliability.md, "Replayed deliveries") ------------------------------

@pytest.fixture(scope="module")
def zelty():
    server = ZeltyEmulator(api_key=ZELTY_API_KEY)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def zelty_delivery(bridge, zelty):
    """A genuine signed Zelty v2 delivery (body and headers), exactly as Zelty sent it."""
    zelty.reset()
    registration = {"order.ended": {"target": "https://bridge.example.com/webhooks/zelty", "version": "v2"},
                    "secret_key": ZELTY_SECRET}
    response = httpx.post(f"{zelty.url}/webhooks", json=registration,
                          headers={"Authorization": f"Bearer {ZELTY_API_KEY}"})
    assert response.status_code == 200, response.text
    bridge.configure(zelty_webhook_secret=ZELTY_SECRET)
    _, body, headers = zelty.delivery(fixture_json("zelty/order_ended.json"))
    return body, headers


def _imports(bridge) -> int:
    return sum(1 for request in bridge.fullwhere.requests if request.path == "/partners/customer")


def test_a_replayed_signed_zelty_delivery_is_imported_again_and_merged_into_one_customer(bridge, zelty_delivery):
    body, headers = zelty_delivery

    assert [bridge.post("zelty", body, headers).status_code for _ in range(2)] == [200, 200]

    assert _imports(bridge) == 2  # not deduplicated by the bridge...
    [customer] = bridge.customers()  # ...Fullwhere merges the guest on its email/phone pair
    assert customer["zeltyId"] == "4821907" and customer["email"] == "camille.durand@example.fr"


def test_a_replay_after_the_guest_was_erased_from_fullwhere_creates_it_again(bridge, zelty_delivery):
    """The risk docs/reliability.md accepts: nothing remembers the delivery once Fullwhere forgot the guest."""
    body, headers = zelty_delivery
    assert bridge.post("zelty", body, headers).status_code == 200
    bridge.fullwhere.reset_state()  # the guest is erased from Fullwhere

    assert bridge.post("zelty", body, headers).status_code == 200
    [customer] = bridge.customers()
    assert customer["zeltyId"] == "4821907"


def test_a_replayed_contactless_deliveroo_delivery_is_a_ledger_no_op(bridge, capsys):
    body = fixture_bytes("deliveroo/order_new_loyalty.json")  # a loyalty card, no email, a relay phone
    headers = deliveroo_headers(body, DELIVEROO_SECRET, guid="5e0f7b5c-replayed")  # the same delivery twice
    capsys.readouterr()

    assert [bridge.post("deliveroo", body, headers).status_code for _ in range(2)] == [200, 200]

    assert _imports(bridge) == 1 and bridge.fullwhere.import_count == 1
    [customer] = bridge.customers()
    assert customer["deliverooId"] == "loyalty:LOY-778899"
    outcomes = [(line["outcome"], line.get("reason")) for line in _lines(capsys)
                if line.get("platform") == "deliveroo" and "_aws" not in line
                and line["outcome"] in ("imported", "duplicate")]
    assert outcomes == [("imported", None), ("duplicate", "already imported")]
