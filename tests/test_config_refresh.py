"""Configuration that follows its source: the settings (with the ``SECRETS_ID`` secret), the tenants document and
the sources document are read again after ``CONFIG_REFRESH_SECONDS``, without a new container; an invalid new
version is refused (``config_refused``) and the last valid one keeps serving.

The refresh is timed by ``chalicelib.infra.settings.clock``, which these tests move instead of sleeping."""

from __future__ import annotations

import json
import threading
import uuid

import pytest

from chalicelib.connectors.deliveroo import DeliverooSettings
from chalicelib.core.errors import SettingsError
from chalicelib.domain.sources import get_sources
from chalicelib.domain.tenants import get_directory
from chalicelib.infra import aws, metrics
from chalicelib.infra import settings as settings_module
from chalicelib.infra.settings import Refreshed, get_settings, settings_of
from sandbox.aws import client
from tests.conftest import (
    DELIVEROO_SECRET,
    FULLWHERE_KEY,
    FULLWHERE_SECRET,
    MEWS_ACCESS_TOKEN,
    MEWS_ENTERPRISE,
    fixture_bytes,
    fixture_json,
    reset_bridge_state,
)
from tests.support.log_leaks import bridge_log_lines
from tests.test_mews import CUSTOMER_ID, add_customer, webhook

INTERVAL = 60
PARTOUCHE_TOKEN = "partouche-url-token"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(bridge, monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(settings_module, "clock", fake)
    reset_bridge_state()  # nothing is left timed by the real clock
    return fake


def lines(capsys, outcome: str) -> list[dict]:
    """The log lines of one outcome written since the last call (not the metric lines counting them)."""
    return [line for line in map(json.loads, bridge_log_lines(capsys.readouterr().out))
            if line["outcome"] == outcome and "level" in line]


def counted(outcome: str) -> int:
    return sum(count for (_, name, _), count in metrics.pending().items() if name == outcome)


def create_secret(bridge, document: dict) -> str:
    name = f"bridge/{uuid.uuid4().hex[:10]}"
    client("secretsmanager", bridge.endpoint).create_secret(Name=name, SecretString=json.dumps(document))
    return name


def put_secret(bridge, name: str, document: dict | str) -> None:
    text = document if isinstance(document, str) else json.dumps(document)
    client("secretsmanager", bridge.endpoint).put_secret_value(SecretId=name, SecretString=text)


# -- settings and the SECRETS_ID secret ------------------------------------------------------------

def test_a_key_rotated_in_the_settings_secret_is_used_after_the_interval(bridge, clock):
    name = create_secret(bridge, {"FULLWHERE_API_KEY": FULLWHERE_KEY, "FULLWHERE_API_SECRET": FULLWHERE_SECRET})
    bridge.configure(secrets_id=name, fullwhere_api_key=None, fullwhere_api_secret=None,
                     config_refresh_seconds=INTERVAL)
    add_customer(bridge)
    assert bridge.send_mews(webhook(("CustomerAdded", CUSTOMER_ID))).status_code == 200
    assert len(bridge.customers(FULLWHERE_KEY)) == 1

    put_secret(bridge, name, {"FULLWHERE_API_KEY": "tenant-b-key", "FULLWHERE_API_SECRET": "tenant-b-secret"})
    clock.advance(INTERVAL - 1)
    assert bridge.send_mews(webhook(("CustomerUpdated", CUSTOMER_ID))).status_code == 200
    assert bridge.customers("tenant-b-key") == []  # still the key read a minute ago

    clock.advance(2)
    assert bridge.send_mews(webhook(("CustomerUpdated", CUSTOMER_ID))).status_code == 200
    assert len(bridge.customers("tenant-b-key")) == 1  # the default tenant follows its rotated key
    assert get_settings().fullwhere_api_key == "tenant-b-key"


def test_a_platform_secret_rotated_in_the_settings_secret_is_checked_after_the_interval(bridge, clock):
    name = create_secret(bridge, {"DELIVEROO_WEBHOOK_SECRET": DELIVEROO_SECRET})
    bridge.configure(secrets_id=name, deliveroo_webhook_secret=None, config_refresh_seconds=INTERVAL)
    payload = fixture_json("deliveroo/order_new_loyalty.json")
    assert bridge.send_deliveroo(payload).status_code == 200

    put_secret(bridge, name, {"DELIVEROO_WEBHOOK_SECRET": "deliveroo-rotated-secret"})
    clock.advance(INTERVAL / 2)
    assert bridge.send_deliveroo(payload, secret="deliveroo-rotated-secret").status_code == 401

    clock.advance(INTERVAL)
    assert bridge.send_deliveroo(payload, secret="deliveroo-rotated-secret").status_code == 200
    assert bridge.send_deliveroo(payload).status_code == 401
    assert settings_of(DeliverooSettings).webhook_secret == "deliveroo-rotated-secret"


def test_an_invalid_new_settings_secret_is_refused_and_the_last_valid_settings_kept(bridge, clock, capsys):
    name = create_secret(bridge, {"FULLWHERE_API_KEY": FULLWHERE_KEY, "FULLWHERE_API_SECRET": FULLWHERE_SECRET,
                                  "DELIVEROO_WEBHOOK_SECRET": DELIVEROO_SECRET})
    bridge.configure(secrets_id=name, fullwhere_api_key=None, fullwhere_api_secret=None,
                     deliveroo_webhook_secret=None, inline_budget_seconds=None, config_refresh_seconds=INTERVAL)
    before = get_settings()
    assert settings_of(DeliverooSettings).webhook_secret == DELIVEROO_SECRET
    capsys.readouterr()

    # One bad value refuses its group only; the Deliveroo group of the same document is valid and follows it.
    put_secret(bridge, name, {"FULLWHERE_API_KEY": "tenant-b-key", "FULLWHERE_API_SECRET": "tenant-b-secret",
                              "INLINE_BUDGET_SECONDS": "-4", "DELIVEROO_WEBHOOK_SECRET": "deliveroo-rotated-secret"})
    clock.advance(INTERVAL + 1)
    assert get_settings() is before
    assert settings_of(DeliverooSettings).webhook_secret == "deliveroo-rotated-secret"
    [refused] = lines(capsys, "config_refused")
    assert (refused["level"], refused["document"]) == ("ERROR", "settings")
    assert "INLINE_BUDGET_SECONDS" in refused["reason"] and "-4" not in refused["reason"]
    assert "tenant-b" not in json.dumps(refused)
    assert counted("config_refused") == 1

    # Not JSON at all: every group keeps its version, and nothing crashes.
    put_secret(bridge, name, "{not json")
    clock.advance(INTERVAL + 1)
    assert get_settings() is before
    assert settings_of(DeliverooSettings).webhook_secret == "deliveroo-rotated-secret"
    [refused] = lines(capsys, "config_refused")
    assert "not valid JSON" in refused["reason"]
    add_customer(bridge)
    assert bridge.send_mews(webhook(("CustomerAdded", CUSTOMER_ID))).status_code == 200
    assert len(bridge.customers(FULLWHERE_KEY)) == 1

    # Fixed: the next refresh takes it.
    put_secret(bridge, name, {"FULLWHERE_API_KEY": "tenant-b-key", "FULLWHERE_API_SECRET": "tenant-b-secret"})
    clock.advance(INTERVAL + 1)
    assert get_settings().fullwhere_api_key == "tenant-b-key"


def test_secrets_manager_unreachable_keeps_the_last_valid_settings(bridge, clock, capsys, monkeypatch):
    name = create_secret(bridge, {"FULLWHERE_API_KEY": FULLWHERE_KEY, "FULLWHERE_API_SECRET": FULLWHERE_SECRET})
    bridge.configure(secrets_id=name, fullwhere_api_key=None, fullwhere_api_secret=None,
                     config_refresh_seconds=INTERVAL)
    before = get_settings()
    capsys.readouterr()

    monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", "http://127.0.0.1:9")  # an outage
    aws.reset_clients()
    clock.advance(INTERVAL + 1)
    assert get_settings() is before
    add_customer(bridge)
    assert bridge.send_mews(webhook(("CustomerAdded", CUSTOMER_ID))).status_code == 200
    assert len(bridge.customers(FULLWHERE_KEY)) == 1
    [unreachable] = lines(capsys, "config_unreachable")
    assert (unreachable["level"], unreachable["document"]) == ("WARNING", "settings")
    assert name in unreachable["reason"]

    monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", bridge.endpoint)
    aws.reset_clients()
    put_secret(bridge, name, {"FULLWHERE_API_KEY": "tenant-b-key", "FULLWHERE_API_SECRET": "tenant-b-secret"})
    clock.advance(INTERVAL + 1)
    assert get_settings().fullwhere_api_key == "tenant-b-key"


def test_the_refresh_interval_follows_the_settings_it_is_part_of(bridge, clock, capsys):
    name = create_secret(bridge, {"CONFIG_REFRESH_SECONDS": str(INTERVAL), "DEFAULT_PHONE_REGION": "FR"})
    bridge.configure(secrets_id=name)
    assert get_settings().config_refresh_seconds == INTERVAL

    put_secret(bridge, name, {"CONFIG_REFRESH_SECONDS": "600", "DEFAULT_PHONE_REGION": "GB"})
    clock.advance(INTERVAL + 1)
    assert (get_settings().config_refresh_seconds, get_settings().default_phone_region) == (600, "GB")

    put_secret(bridge, name, {"CONFIG_REFRESH_SECONDS": "-1", "DEFAULT_PHONE_REGION": "ES"})
    clock.advance(INTERVAL + 1)
    assert get_settings().default_phone_region == "GB"  # read 61 s ago: fresh for 600 s now
    clock.advance(600)
    assert get_settings().default_phone_region == "GB"  # refused: a negative interval
    assert "CONFIG_REFRESH_SECONDS" in lines(capsys, "config_refused")[0]["reason"]


# -- the tenants document ----------------------------------------------------------------------------

HOTEL_A = {"id": "hotel-a", "fullwhere_api_key": FULLWHERE_KEY, "fullwhere_api_secret": FULLWHERE_SECRET,
           "platforms": {"mews": {"accounts": {MEWS_ENTERPRISE: {"access_token": MEWS_ACCESS_TOKEN}}}}}
BISTRO_B = {"id": "bistro-b", "fullwhere_api_key": "tenant-b-key", "fullwhere_api_secret": "tenant-b-secret",
            "platforms": {"deliveroo": {"accounts": {"1000": {}}}}}


@pytest.fixture
def tenants_file(bridge, clock, tmp_path):
    path = tmp_path / "tenants.json"
    path.write_text(json.dumps({"tenants": [HOTEL_A]}))
    bridge.configure(tenants_file=path, fullwhere_api_key=None, fullwhere_api_secret=None, mews_access_token=None,
                     config_refresh_seconds=INTERVAL)
    return path


def test_a_tenant_added_to_the_tenants_file_routes_after_the_interval(bridge, clock, tenants_file):
    assert get_directory().route("deliveroo", "1000") is None
    tenants_file.write_text(json.dumps({"tenants": [HOTEL_A, BISTRO_B]}))

    clock.advance(INTERVAL - 1)
    assert get_directory().route("deliveroo", "1000") is None
    clock.advance(2)
    assert get_directory().route("deliveroo", "1000").id == "bistro-b"
    assert bridge.send_deliveroo(fixture_bytes("deliveroo/order_new_loyalty.json")).status_code == 200
    assert [c["metadata"]["source"] for c in bridge.customers("tenant-b-key")] == ["deliveroo"]


def test_an_invalid_tenants_document_is_refused_and_the_old_one_keeps_routing(bridge, clock, tenants_file, capsys):
    before = get_directory()
    capsys.readouterr()
    # A duplicated tenant id, with a secret that must not reach the logs.
    leaked = {**BISTRO_B, "id": "hotel-a", "fullwhere_api_secret": "s3cr3t-never-logged"}
    tenants_file.write_text(json.dumps({"tenants": [HOTEL_A, leaked]}))
    clock.advance(INTERVAL + 1)

    assert get_directory() is before
    assert get_directory().route("mews", MEWS_ENTERPRISE).id == "hotel-a"
    [refused] = lines(capsys, "config_refused")
    assert (refused["level"], refused["document"]) == ("ERROR", "tenants")
    assert "tenants document" in refused["reason"] and "unique" in refused["reason"]
    assert "s3cr3t-never-logged" not in json.dumps(refused)
    assert counted("config_refused") == 1

    # Not read again on every event: one line per interval, and events keep being imported.
    add_customer(bridge)
    assert bridge.send_mews(webhook(("CustomerAdded", CUSTOMER_ID))).status_code == 200
    assert len(bridge.customers(FULLWHERE_KEY)) == 1
    assert lines(capsys, "config_refused") == []

    tenants_file.unlink()  # unreadable is refused the same way
    clock.advance(INTERVAL + 1)
    assert get_directory() is before
    assert "cannot read TENANTS_FILE" in lines(capsys, "config_refused")[0]["reason"]
    tenants_file.write_bytes(b"\xff\xfe{}")
    clock.advance(INTERVAL + 1)
    assert get_directory() is before
    assert "not UTF-8" in lines(capsys, "config_refused")[0]["reason"]

    tenants_file.write_text(json.dumps({"tenants": [HOTEL_A, BISTRO_B]}))
    clock.advance(INTERVAL + 1)
    assert get_directory().route("deliveroo", "1000").id == "bistro-b"


def test_a_first_load_that_fails_still_raises(bridge, clock, tmp_path, capsys):
    path = tmp_path / "tenants.json"
    path.write_text('{"tenants": []}')
    bridge.configure(tenants_file=path, config_refresh_seconds=INTERVAL)
    with pytest.raises(SettingsError, match="tenants"):
        get_directory()
    # There is no last valid version: the next use tries again, without waiting for the interval.
    path.write_text(json.dumps({"tenants": [HOTEL_A]}))
    assert get_directory().route("mews", MEWS_ENTERPRISE).id == "hotel-a"
    assert lines(capsys, "config_refused") == []


# -- the sources document ----------------------------------------------------------------------------

PARTOUCHE = {"name": "partouche", "preset": "partouche", "auth": {"type": "token", "query": "token",
                                                                  "secret": PARTOUCHE_TOKEN}}
CHR365 = {"name": "chr365", "preset": "chr365", "auth": {"type": "none"}}


def test_a_sources_document_changed_is_followed_and_an_invalid_one_refused(bridge, clock, tmp_path, capsys):
    path = tmp_path / "sources.json"
    path.write_text(json.dumps({"sources": [PARTOUCHE]}))
    bridge.configure(sources_file=path, config_refresh_seconds=INTERVAL)
    partouche = fixture_bytes("sources/partouche_customer.json")
    chr365 = fixture_bytes("sources/chr365_customers.json")
    assert bridge.post("partouche", partouche, query=f"token={PARTOUCHE_TOKEN}").status_code == 200
    assert bridge.post("chr365", chr365).status_code == 404

    path.write_text(json.dumps({"sources": [PARTOUCHE, CHR365]}))
    clock.advance(INTERVAL - 1)
    assert bridge.post("chr365", chr365).status_code == 404
    clock.advance(2)
    assert bridge.post("chr365", chr365).status_code == 200
    assert sorted(c.get("chr365Id") or "" for c in bridge.customers()) == ["", "c-1001", "c-1002"]

    served = get_sources()
    capsys.readouterr()
    path.write_text(json.dumps({"sources": [PARTOUCHE, {**CHR365, "id_field": "myspaceId"}]}))
    clock.advance(INTERVAL + 1)
    assert bridge.post("partouche", partouche, query=f"token={PARTOUCHE_TOKEN}").status_code == 200
    assert bridge.post("chr365", chr365).status_code == 200
    assert get_sources() is served
    [refused] = lines(capsys, "config_refused")
    assert (refused["level"], refused["document"]) == ("ERROR", "sources")
    assert "sources.1.id_field" in refused["reason"] and PARTOUCHE_TOKEN not in json.dumps(refused)

    # The same document again keeps its objects (and the connectors built from them).
    path.write_text(json.dumps({"sources": [PARTOUCHE, CHR365]}))
    clock.advance(INTERVAL + 1)
    assert get_sources() is served


# -- the hot path ---------------------------------------------------------------------------------

def test_nothing_is_read_again_before_the_interval_and_each_document_once_after(bridge, clock, monkeypatch):
    settings_secret = create_secret(bridge, {"FULLWHERE_API_KEY": FULLWHERE_KEY,
                                             "FULLWHERE_API_SECRET": FULLWHERE_SECRET})
    tenants_secret = create_secret(bridge, {"tenants": [HOTEL_A]})
    sources_secret = create_secret(bridge, {"sources": [PARTOUCHE]})
    bridge.configure(secrets_id=settings_secret, tenants_secret_id=tenants_secret, sources_secret_id=sources_secret,
                     fullwhere_api_key=None, fullwhere_api_secret=None, mews_access_token=None,
                     config_refresh_seconds=INTERVAL)
    reads: list[str] = []
    read_secret = aws.read_secret

    def counting(secret_id: str) -> str:
        reads.append(secret_id)
        return read_secret(secret_id)

    monkeypatch.setattr(aws, "read_secret", counting)
    add_customer(bridge)
    assert bridge.send_mews(webhook(("CustomerAdded", CUSTOMER_ID))).status_code == 200
    assert sorted(reads) == sorted([settings_secret, tenants_secret, sources_secret])

    reads.clear()
    for _ in range(3):
        clock.advance(INTERVAL / 4)
        assert bridge.send_mews(webhook(("CustomerUpdated", CUSTOMER_ID))).status_code == 200
        get_settings(), settings_of(DeliverooSettings), get_directory(), get_sources()
    assert reads == []

    clock.advance(INTERVAL / 4)
    assert bridge.send_mews(webhook(("CustomerUpdated", CUSTOMER_ID))).status_code == 200
    get_settings(), settings_of(DeliverooSettings), get_directory(), get_sources()
    # One read of the settings secret serves every group of settings.
    assert sorted(reads) == sorted([settings_secret, tenants_secret, sources_secret])


def test_zero_reads_again_on_every_use(bridge, clock, tmp_path):
    path = tmp_path / "tenants.json"
    path.write_text(json.dumps({"tenants": [HOTEL_A]}))
    bridge.configure(tenants_file=path, config_refresh_seconds=0)
    assert get_directory().route("deliveroo", "1000") is None
    path.write_text(json.dumps({"tenants": [HOTEL_A, BISTRO_B]}))
    assert get_directory().route("deliveroo", "1000").id == "bistro-b"


def test_while_one_thread_reads_a_document_again_the_others_keep_the_last_version(bridge, clock):
    release, started = threading.Event(), threading.Event()
    versions = iter(["first", "second"])

    def load(_basis: object) -> str:
        value = next(versions)
        if value == "second":
            started.set()
            assert release.wait(10)
        return value

    document = Refreshed("test", load)
    basis = object()
    assert document.get(basis) == "first"
    clock.advance(get_settings().config_refresh_seconds + 1)
    reader = threading.Thread(target=document.get, args=(basis,))
    reader.start()
    assert started.wait(10)
    assert document.get(basis) == "first"  # not blocked behind the reader
    release.set()
    reader.join(10)
    assert document.get(basis) == "second"


def test_an_unexpected_failure_of_a_refresh_is_refused_too_naming_only_its_type(bridge, clock, capsys):
    versions = iter(["first"])

    def load(_basis: object) -> str:
        for value in versions:
            return value
        raise RuntimeError("a message that could quote s3cr3t-never-logged")

    document = Refreshed("test", load)
    basis = object()
    assert document.get(basis) == "first"
    clock.advance(get_settings().config_refresh_seconds + 1)
    assert document.get(basis) == "first"
    [refused] = lines(capsys, "config_refused")
    assert refused["reason"] == "RuntimeError while reading the test"
