"""Property-based tests of every connector's parser and mapper, with payloads shaped like each platform's.

For any body, ``connector.parse`` returns events the retry queue can carry, or refuses the body with a
clean 400 (OPERA Cloud: 401, it accepts no webhook). For any guest record, ``connector.map`` returns a
customer the Fullwhere partner API accepts (checked by the Fullwhere emulator's own validation, written
independently of the bridge's model). Never an unexpected exception: that would be a 500, or a job
retried until it is dead-lettered.

The documents start from what each platform really sends (the sandbox's samples, the fixtures, and the
guest records the sandbox's API emulators answer), then values are replaced with hostile text, numbers
where strings belong (and the other way round), empty values, arbitrary JSON, or deleted
(tests/support/fuzz.py). Example counts: the ``fast`` profile by default, ``HYPOTHESIS_PROFILE=long``
for a thousand per property.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sandbox.emulators.fullwhere import validate_import
from sandbox.platforms.meta import PAGE as META_PAGE
from sandbox.platforms.mews import ENTERPRISE as MEWS_ENTERPRISE
from sandbox.platforms.oracle import HOTEL as ORACLE_HOTEL
from sandbox.samples import SAMPLES, fixture
from sandbox.stack import Sandbox
from tests.conftest import reset_bridge_state
from tests.support.fuzz import json_values, shaped_like

FIXTURES = Path(__file__).parent / "fixtures"
# The fixtures of each platform (every documented shape: other event types, arrays, legacy versions).
FIXTURE_DIRS = {"deliveroo": "deliveroo", "ubereats": "ubereats", "mews": "mews", "thefork": "thefork", "meta": "meta",
                "sevenrooms": "sevenrooms", "zelty": "zelty", "simphony": "simphony", "oracle": "oracle"}
SOURCE_FIXTURES = {"como": "sources/como_member_event.json", "partouche": "sources/partouche_customer.json",
                   "chr365": "sources/chr365_customers.json", "zenchef": "sources/zenchef_booking.json"}
PLATFORMS = list(SAMPLES)  # every connector, OPERA Cloud and the declarative sources included
MAPPED = [platform for platform in PLATFORMS if SAMPLES[platform].imports]  # Simphony maps nothing


@pytest.fixture
def bridge_settings(sandbox, monkeypatch):
    for key in ("TENANTS_FILE", "TENANTS_SECRET_ID", "SECRETS_ID", "SOURCES_SECRET_ID"):
        monkeypatch.delenv(key, raising=False)
    for key, value in sandbox.environment().items():
        monkeypatch.setenv(key, value)
    reset_bridge_state()
    yield sandbox
    reset_bridge_state()


def platform_documents(sandbox: Sandbox, platform: str) -> list[Any]:
    """What the platform sends: the sandbox's sample webhook and every fixture of the platform."""
    documents = []
    sample = SAMPLES[platform].build(sandbox, 1)
    if sample is not None:
        documents.append(sample)
    if platform in SOURCE_FIXTURES:
        documents.append(fixture(SOURCE_FIXTURES[platform]))
    if platform in FIXTURE_DIRS:
        documents += [json.loads(path.read_text(encoding="utf-8"))
                      for path in sorted((FIXTURES / FIXTURE_DIRS[platform]).glob("*.json"))]
    return documents


def parse(platform: str, body: bytes):
    from chalicelib.connectors import get_connector
    from chalicelib.connectors.base import WebhookRequest

    return get_connector(platform).parse(WebhookRequest(platform=platform, body=body, headers={}, query={}))


def check_parse(platform: str, body: bytes) -> None:
    """The property: queue-able events, or a clean refusal."""
    from chalicelib.connectors.base import Event
    from chalicelib.core.errors import RejectedRequest

    try:
        parsed = parse(platform, body)
    except RejectedRequest as refused:
        assert refused.status == (401 if platform == "oracle" else 400)
        assert refused.reason and isinstance(refused.reason, str)
        return
    assert all(isinstance(kind, str) for kind in parsed.ignored)
    for event in parsed.events:
        assert isinstance(event.event_id, str) and event.event_id
        assert event.account_id is None or isinstance(event.account_id, str)
        assert event.guest_key is None or isinstance(event.guest_key, str)
        carried = json.loads(json.dumps(event.to_dict()))  # what a retry job carries through SQS
        assert Event.from_dict(carried).event_id == event.event_id


@pytest.mark.parametrize("platform", PLATFORMS)
def test_parser_returns_queueable_events_or_a_clean_400(bridge_settings, platform):
    documents = platform_documents(bridge_settings, platform)

    @given(document=shaped_like(*documents))
    def property_holds(document):
        check_parse(platform, json.dumps(document).encode())

    property_holds()


@given(body=st.one_of(st.binary(max_size=200), st.text(max_size=200).map(str.encode),
                      json_values.map(lambda value: json.dumps(value).encode())))
def test_any_bytes_are_parsed_or_refused_cleanly_by_every_parser(bridge_settings, body):
    for platform in PLATFORMS:
        check_parse(platform, body)


# -- mappers ------------------------------------------------------------------------------------------

_genuine: dict[str, tuple[Any, dict[str, Any]]] = {}


def genuine_guest(sandbox: Sandbox, platform: str) -> tuple[Any, dict[str, Any]]:
    """A real event of the platform and the guest record its fetch returns from the sandbox's emulator."""
    if platform not in _genuine:
        from chalicelib.connectors import get_connector
        from chalicelib.connectors.oracle import pipeline_event, pulled_event
        from sandbox.platforms.oracle import make_event

        connector = get_connector(platform)
        if platform == "oracle":
            SAMPLES["oracle"].build(sandbox, 1)
            profile_id = SAMPLES["oracle"].guest_id(1)
            event = pipeline_event(pulled_event(make_event("e-1", "NEW PROFILE", profile_id, hotel_id=ORACLE_HOTEL),
                                                ORACLE_HOTEL), ORACLE_HOTEL)
        else:
            [event, *_] = parse(platform, json.dumps(SAMPLES[platform].build(sandbox, 1)).encode()).events
        guest = connector.fetch(event, context_for(platform, event))
        assert isinstance(guest, dict), platform
        _genuine[platform] = (event, guest)
    return _genuine[platform]


def context_for(platform: str, event: Any):
    from chalicelib.connectors.base import Context
    from chalicelib.domain.tenants import get_directory
    from chalicelib.infra.http import Deadline
    from chalicelib.infra.settings import get_settings

    return Context(settings=get_settings(), tenant=get_directory().route(platform, event.account_id),
                   deadline=Deadline(10))


def check_map(platform: str, event: Any, guest: dict[str, Any]) -> None:
    """The property: a customer Fullwhere accepts, built without an exception."""
    from chalicelib.connectors import get_connector
    from chalicelib.domain.fullwhere.models import CustomerImport

    customer = get_connector(platform).map(guest, event, context_for(platform, event))
    assert isinstance(customer, CustomerImport)
    payload = customer.payload()
    assert validate_import(payload) == [], payload
    assert isinstance(customer.has_identity(), bool)
    assert (payload.get("metadata") or {}).get("source") == platform


# Platforms whose guest comes from their API: where the record is in the fetched guest, its id (kept, so
# the fetch finds the mutated record) and how the sandbox's emulator is given it.
API_RECORDS: dict[str, tuple[Callable[[dict], dict], str | None, Callable[[Sandbox, dict], None]]] = {
    "ubereats": (lambda guest: guest, "id", lambda sandbox, record: sandbox.platforms["ubereats"].add_order(record)),
    "mews": (lambda guest: guest, "Id",
             lambda sandbox, record: sandbox.platforms["mews"].add_customer(MEWS_ENTERPRISE, record)),
    "thefork": (lambda guest: guest["customer"], "customerUuid",
                lambda sandbox, record: sandbox.platforms["thefork"].add_customer(record)),
    "meta": (lambda guest: guest, "id", lambda sandbox, record: sandbox.platforms["meta"].add_lead(META_PAGE, record)),
    "sevenrooms": (lambda guest: guest["client"], "id",
                   lambda sandbox, record: sandbox.platforms["sevenrooms"].add_client(record)),
    "oracle": (lambda guest: guest, None,
               lambda sandbox, record: sandbox.platforms["oracle"].add_profile(SAMPLES["oracle"].guest_id(1), record)),
    "como": (lambda guest: guest, "commonExtId", lambda sandbox, record: sandbox.platforms["como"].add_member(record)),
}


def takes_guest_from_the_webhook(platform: str) -> bool:
    """No fetch: the guest is the event's data, which the connector's own parser built."""
    from chalicelib.connectors import get_connector
    from chalicelib.connectors.base import Connector
    from chalicelib.connectors.declarative import DeclarativeConnector

    connector = get_connector(platform)
    if isinstance(connector, DeclarativeConnector):
        return connector.source.fetch is None
    return type(connector).fetch is Connector.fetch


def test_every_fetching_connector_has_its_api_record_fuzzed(bridge_settings):
    assert {platform for platform in MAPPED if not takes_guest_from_the_webhook(platform)} == set(API_RECORDS)


@pytest.mark.parametrize("platform", MAPPED)
def test_mapper_builds_a_customer_fullwhere_accepts(bridge_settings, platform):
    """Any record the platform's API may answer (fetched over HTTP from its emulator) is imported as a
    valid customer, or ends cleanly: a retryable or permanent error (queued, or dead-lettered with the
    reason), or no guest. For platforms whose webhook carries the guest: any body the parser accepts."""
    from chalicelib.connectors import get_connector
    from chalicelib.core.errors import BridgeError, RejectedRequest

    sandbox = bridge_settings
    event, guest = genuine_guest(sandbox, platform)
    check_map(platform, event, guest)  # the genuine record first

    if takes_guest_from_the_webhook(platform):
        @given(document=shaped_like(*platform_documents(sandbox, platform)))
        def property_holds(document):
            try:
                parsed = parse(platform, json.dumps(document).encode())
            except RejectedRequest:
                return  # refused at the door (the parser's own property)
            for parsed_event in parsed.events:
                check_map(platform, parsed_event, parsed_event.data)
    else:
        extract, key, seed = API_RECORDS[platform]
        genuine = extract(guest)

        @given(record=shaped_like(genuine).filter(lambda value: isinstance(value, dict)))
        def property_holds(record):
            if key:
                record[key] = genuine[key]
            seed(sandbox, record)
            try:
                fetched = get_connector(platform).fetch(event, context_for(platform, event))
            except BridgeError as error:
                assert error.reason and isinstance(error.reason, str)
                return
            if fetched is not None:
                check_map(platform, event, fetched)

    property_holds()
