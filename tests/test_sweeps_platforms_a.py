"""Sweeps of Meta Lead Ads, TheFork and Deliveroo, each over real HTTP against its emulator: what a window lists
(and what it leaves out), paging to the end, each tenant's own list credentials only, the rate limits, and events
shaped as the webhook's, so that fetch and map import them unchanged (docs/platforms.md, each "Sweep")."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from chalicelib.connectors import get_connector
from chalicelib.connectors.base import Context, SweepWindow
from chalicelib.core.errors import BudgetExhausted, Held, RetryableError
from chalicelib.domain.tenants import Tenant, default_tenant
from chalicelib.infra.http import Deadline
from chalicelib.infra.settings import get_settings
from sandbox.emulators.base import Fault
from sandbox.platforms.deliveroo import DeliverooEmulator
from sandbox.platforms.meta import MetaGraphEmulator, graph_time
from sandbox.platforms.thefork import CUSTOMERS_LIST, TheForkEmulator
from tests.conftest import fixture_json, reset_bridge_state

NOW = datetime.now(timezone.utc).replace(microsecond=0)
WINDOW = SweepWindow(NOW - timedelta(minutes=25), NOW - timedelta(minutes=1))

APP_SECRET = "meta-app-secret-5c1e"
PAGE, PAGE_TOKEN = "123123123", "meta-page-token-77aa"
OTHER_PAGE, OTHER_PAGE_TOKEN = "987654321", "meta-page-token-other-31bf"

FORK_CLIENT, FORK_SECRET = "thefork-client", "thefork-client-secret-7d2e"
FORK_TENANT_CLIENT, FORK_TENANT_SECRET = "thefork-tenant-client", "thefork-tenant-secret-91ac"
GROUP, OTHER_GROUP = "c1fa3225-690d-4b86-b255-042b3c218b68", "0e4c1c7e-5d2b-4f0a-9d1e-3a7b2c6d8e90"
RESTAURANT = "565426e9-a7d9-4123-8d9b-94275483fcf9"

ROO_CLIENT, ROO_SECRET = "deliveroo-client", "deliveroo-api-secret-4b7e"
ROO_TENANT_CLIENT, ROO_TENANT_SECRET = "deliveroo-tenant-client", "deliveroo-tenant-secret-c2d9"
BRAND, OTHER_BRAND, SITE = "bistro-uk", "grill-uk", "1000"


@pytest.fixture(scope="module")
def graph():
    with MetaGraphEmulator(app_secret=APP_SECRET, page_tokens={PAGE: PAGE_TOKEN, OTHER_PAGE: OTHER_PAGE_TOKEN}) as server:
        yield server


@pytest.fixture(scope="module")
def fork():
    with TheForkEmulator(clients={FORK_CLIENT: FORK_SECRET, FORK_TENANT_CLIENT: FORK_TENANT_SECRET}) as server:
        yield server


@pytest.fixture(scope="module")
def roo():
    with DeliverooEmulator(clients={ROO_CLIENT: ROO_SECRET, ROO_TENANT_CLIENT: ROO_TENANT_SECRET}) as server:
        yield server


@pytest.fixture
def platforms(graph, fork, roo, monkeypatch):
    """The three platforms' settings pointing at their emulators, with the deployment's own (default tenant's)
    list credentials set, so that a test can show a named tenant never borrows them."""
    from chalicelib.connectors import deliveroo

    for server in (graph, fork, roo):
        server.reset()
    settings = {
        "META_APP_SECRET": APP_SECRET, "META_PAGE_ACCESS_TOKEN": PAGE_TOKEN, "META_GRAPH_URL": f"{graph.url}/v25.0",
        "THEFORK_CLIENT_ID": FORK_CLIENT, "THEFORK_CLIENT_SECRET": FORK_SECRET, "THEFORK_API_URL": fork.api_url,
        "THEFORK_AUTH_URL": fork.url,
        "DELIVEROO_CLIENT_ID": ROO_CLIENT, "DELIVEROO_CLIENT_SECRET": ROO_SECRET, "DELIVEROO_BRAND_ID": BRAND,
        "DELIVEROO_API_URL": roo.url, "DELIVEROO_AUTH_URL": roo.url,
    }
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    for name in ("TENANTS_FILE", "TENANTS_SECRET_ID", "SECRETS_ID"):
        monkeypatch.delenv(name, raising=False)
    reset_bridge_state()
    deliveroo._calls.clear()  # a container's count of recent calls does not survive between tests
    yield {"meta": graph, "thefork": fork, "deliveroo": roo}
    deliveroo._calls.clear()
    reset_bridge_state()


def tenant(platform: str, accounts: dict[str, dict[str, str]]) -> Tenant:
    return Tenant.model_validate({"id": "bistro", "fullwhere_api_key": "tenant-b-key",
                                  "fullwhere_api_secret": "tenant-b-secret",
                                  "platforms": {platform: {"accounts": accounts}}})


def context(owner: Tenant | None = None) -> Context:
    settings = get_settings()
    return Context(settings=settings, tenant=owner or default_tenant(settings), deadline=Deadline(20))


def sweep(platform: str, account: str, owner: Tenant | None = None, window: SweepWindow = WINDOW) -> list:
    events = get_connector(platform).sweep(account, window, context(owner))
    assert events is not None, f"{platform} cannot be swept"
    return list(events)


def raised(platform: str, account: str, owner: Tenant | None = None) -> tuple[list, Exception]:
    """The events a sweep yielded before it raised, and what it raised."""
    yielded: list = []
    with pytest.raises(Exception) as failure:
        for event in get_connector(platform).sweep(account, WINDOW, context(owner)):
            yielded.append(event)
    return yielded, failure.value


# -- Meta Lead Ads ---------------------------------------------------------------------------------

def lead(graph, lead_id: str, created: datetime, form: str = "555", page: str = PAGE) -> None:
    graph.add_lead(page, {"id": lead_id, "created_time": graph_time(created), "form_id": form, "field_data": [
        {"name": "email", "values": [f"lead{lead_id}@example.org"]}]})


def test_meta_lists_the_leads_each_form_of_the_page_got_within_the_window(platforms):
    graph = platforms["meta"]
    lead(graph, "1001", WINDOW.since)  # the first second is in
    lead(graph, "1002", WINDOW.since + timedelta(minutes=5), form="556")
    lead(graph, "1003", WINDOW.until - timedelta(seconds=1))
    lead(graph, "1000", WINDOW.since - timedelta(seconds=1))  # before: the webhook's, or an earlier sweep's
    lead(graph, "1004", WINDOW.until)  # the next window's
    lead(graph, "2001", WINDOW.since + timedelta(minutes=5), page=OTHER_PAGE)  # another Page's

    events = sweep("meta", PAGE)

    assert sorted(event.event_id for event in events) == ["1001", "1002", "1003"]
    by_id = {event.event_id: event for event in events}
    # Exactly what the leadgen webhook gives (its event id is the lead id), so fetch reads the lead as usual.
    assert by_id["1002"].kind == "leadgen" and by_id["1002"].account_id == PAGE
    assert by_id["1002"].data == {"leadgen_id": "1002", "page_id": PAGE, "form_id": "556"}
    assert by_id["1002"].guest_key == "lead:1002"
    [forms, *lists] = graph.requests
    assert forms.route == f"/v25.0/{PAGE}/leadgen_forms"
    assert sorted(r.route for r in lists) == ["/v25.0/555/leads", "/v25.0/556/leads"]
    filtering = json.loads(lists[0].query["filtering"])
    assert {(rule["field"], rule["operator"]) for rule in filtering} == {("time_created", "GREATER_THAN"),
                                                                        ("time_created", "LESS_THAN")}
    for request in graph.requests:  # the Page's token in the header, signed with the app secret, never in the URL
        assert request.headers["authorization"] == f"Bearer {PAGE_TOKEN}"
        assert request.query["appsecret_proof"] and PAGE_TOKEN not in request.path


def test_meta_reads_every_page_of_a_long_list(platforms):
    graph = platforms["meta"]
    for n in range(250):
        lead(graph, str(5000 + n), WINDOW.since + timedelta(seconds=n))

    events = sweep("meta", PAGE)

    assert sorted(event.event_id for event in events) == [str(5000 + n) for n in range(250)]
    pages = [r for r in graph.requests if r.route.endswith("/leads")]
    assert len(pages) == 3 and "after" not in pages[0].query and all("after" in r.query for r in pages[1:])


def test_meta_sweeps_a_named_tenants_page_with_its_own_token_only(platforms):
    graph = platforms["meta"]
    lead(graph, "3001", WINDOW.since + timedelta(minutes=1), page=OTHER_PAGE)
    lead(graph, "3002", WINDOW.since + timedelta(minutes=1))

    own = tenant("meta", {OTHER_PAGE: {"page_access_token": OTHER_PAGE_TOKEN}})
    assert [event.event_id for event in sweep("meta", OTHER_PAGE, own)] == ["3001"]
    assert {r.headers["authorization"] for r in graph.requests} == {f"Bearer {OTHER_PAGE_TOKEN}"}

    # A Page listed without its token is not swept with META_PAGE_ACCESS_TOKEN (set): held, and Graph not called.
    graph.reset()
    yielded, error = raised("meta", PAGE, tenant("meta", {PAGE: {}}))
    assert yielded == [] and isinstance(error, Held) and error.cause == "not_configured"
    assert graph.requests == []


def test_meta_stops_a_throttled_page_and_says_when_to_come_back(platforms):
    graph = platforms["meta"]
    lead(graph, "4001", WINDOW.since + timedelta(minutes=1))
    lead(graph, "4002", WINDOW.since + timedelta(minutes=1), form="556")
    graph.edge_call_limit, graph.regain_minutes = 2, 7  # the forms, then one form's leads

    yielded, error = raised("meta", PAGE)

    # Business Use Case throttling (code 80005): no Retry-After, the wait is in X-Business-Use-Case-Usage.
    assert type(error) is RetryableError and error.retry_after == 7 * 60
    assert len(yielded) == 1 and graph.list_calls == 3  # nothing more asked of the throttled Page


# -- TheFork ---------------------------------------------------------------------------------------

def customer(fork, uuid: str, changed: datetime, group: str = GROUP) -> None:
    fork.add_customer({**fixture_json("thefork/customer.json"), "customerUuid": uuid}, group=group, changed=changed)


def uuid_of(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012d}"


def test_thefork_lists_the_groups_customers_of_the_windows_days_then_each_is_fetched_as_its_webhook(platforms):
    fork = platforms["thefork"]
    window = SweepWindow(datetime(2026, 12, 1, 10, 0, tzinfo=timezone.utc), datetime(2026, 12, 1, 10, 25, tzinfo=timezone.utc))
    customer(fork, uuid_of(1), datetime(2026, 12, 1, 10, 5, tzinfo=timezone.utc))
    customer(fork, uuid_of(2), datetime(2026, 11, 30, 23, 0, tzinfo=timezone.utc))  # Dec 1 in Paris
    customer(fork, uuid_of(3), datetime(2026, 12, 2, 1, 0, tzinfo=timezone.utc))
    customer(fork, uuid_of(4), datetime(2026, 11, 29, 12, 0, tzinfo=timezone.utc))  # days before
    customer(fork, uuid_of(5), datetime(2026, 12, 1, 10, 5, tzinfo=timezone.utc), group=OTHER_GROUP)

    events = sweep("thefork", GROUP, window=window)

    assert sorted(event.event_id for event in events) == [f"customer/customerUpdated/{uuid_of(n)}" for n in (1, 2, 3)]
    [listing] = fork.requests_matching("GET", CUSTOMERS_LIST + "?")
    # Whole days, widened so that no restaurant's time zone loses one: 12 hours before, a day after.
    assert {key: listing.query[key] for key in ("groupUuid", "startDate", "endDate")} == {
        "groupUuid": GROUP, "startDate": "2026-11-30", "endDate": "2026-12-02"}
    event = next(event for event in events if event.data["uuid"] == uuid_of(1))
    assert (event.kind, event.account_id, event.guest_key) == ("customerUpdated", GROUP, f"customer:{uuid_of(1)}")
    # The data a customer webhook of the group gives: fetch reads the customer with the group's client.
    assert event.data == {"entity": "customer", "uuid": uuid_of(1), "groupUuid": GROUP, "restaurantUuid": None}
    fetched = get_connector("thefork").fetch(event, context())
    assert fetched["customer"]["customerUuid"] == uuid_of(1)


def test_thefork_reads_every_page_of_the_list(platforms):
    fork = platforms["thefork"]
    for n in range(2500):
        customer(fork, uuid_of(n), NOW - timedelta(minutes=5))

    events = sweep("thefork", GROUP)

    assert sorted(event.data["uuid"] for event in events) == sorted(uuid_of(n) for n in range(2500))
    pages = fork.requests_matching("GET", CUSTOMERS_LIST + "?")
    assert [r.query["page"] for r in pages] == ["1", "2", "3"] and {r.query["limit"] for r in pages} == {"1000"}


def test_thefork_lists_a_named_tenants_group_with_its_own_client_only(platforms):
    fork = platforms["thefork"]
    customer(fork, uuid_of(7), NOW - timedelta(minutes=5), group=OTHER_GROUP)
    fork.access[FORK_TENANT_CLIENT] = {OTHER_GROUP}  # the tenant's client sees its own group only
    own = {"client_id": FORK_TENANT_CLIENT, "client_secret": FORK_TENANT_SECRET}

    events = sweep("thefork", OTHER_GROUP, tenant("thefork", {OTHER_GROUP: own}))

    assert [event.data["uuid"] for event in events] == [uuid_of(7)]
    assert fork.token_clients() == [FORK_TENANT_CLIENT]
    # Its client cannot list another group: held until the configuration is fixed, never another client used.
    yielded, error = raised("thefork", GROUP, tenant("thefork", {GROUP: own}))
    assert yielded == [] and isinstance(error, Held) and error.cause == "credentials_rejected"
    # Listed without a client of its own: held, and TheFork not called, though THEFORK_CLIENT_ID is set.
    fork.reset()
    yielded, error = raised("thefork", GROUP, tenant("thefork", {GROUP: {}}))
    assert isinstance(error, Held) and error.cause == "not_configured" and fork.requests == []


def test_thefork_sweeps_groups_not_the_restaurants_that_name_their_group(platforms):
    connector = get_connector("thefork")
    own = {"client_id": FORK_TENANT_CLIENT, "client_secret": FORK_TENANT_SECRET}
    named = tenant("thefork", {GROUP: own, RESTAURANT: {**own, "group_uuid": GROUP}})
    assert connector.sweep_accounts(named) == [GROUP]


def test_thefork_honours_a_429(platforms):
    fork = platforms["thefork"]
    customer(fork, uuid_of(8), NOW - timedelta(minutes=5))
    fork.faults.add(Fault("status", status=429, retry_after=30), path=CUSTOMERS_LIST + "?")

    yielded, error = raised("thefork", GROUP)

    assert yielded == [] and type(error) is RetryableError and error.retry_after == 30
    assert len(fork.requests_matching("GET", CUSTOMERS_LIST + "?")) == 1


# -- Deliveroo -------------------------------------------------------------------------------------

def order(n: int, status: str = "placed", loyalty: bool = True) -> dict[str, Any]:
    body = fixture_json("deliveroo/order_new_loyalty.json")["body"]["order"]
    body.update(id=f"gb:order-{n}", status=status)
    if not loyalty:
        del body["customer"]["loyalty"]
    return body


def test_deliveroo_lists_the_loyalty_card_orders_of_the_window(platforms):
    roo = platforms["deliveroo"]
    inside = WINDOW.since + timedelta(minutes=3)
    roo.add_order(BRAND, SITE, order(1), inside)
    roo.add_order(BRAND, SITE, order(2, status="accepted"), inside)
    roo.add_order(BRAND, SITE, order(3, loyalty=False), inside)  # no card: not imported, so not listed
    roo.add_order(BRAND, SITE, order(4, status="rejected"), inside)  # never served
    roo.add_order(BRAND, SITE, order(5), WINDOW.since - timedelta(minutes=1))
    roo.add_order(BRAND, "2000", order(6), inside)  # another restaurant's

    events = sweep("deliveroo", SITE)

    # The event ids of the webhooks for these orders: order.new while placed, else the status update.
    assert [event.event_id for event in events] == ["gb:order-1/order.new/placed",
                                                    "gb:order-2/order.status_update/accepted"]
    assert events[0].account_id == SITE and events[0].guest_key == "order:gb:order-1"
    assert events[0].data["customer"]["loyalty"]["loyalty_id"] == "LOY-778899"
    [listing] = roo.requests_matching("GET", "/order/v2/")
    assert listing.route == f"/order/v2/brand/{BRAND}/restaurant/{SITE}/orders"
    assert listing.query == {"start_date": WINDOW.since.strftime("%Y-%m-%dT%H:%M:%SZ"),
                             "end_date": WINDOW.until.strftime("%Y-%m-%dT%H:%M:%SZ")}
    [token] = roo.requests_matching("POST", "/oauth2/token")
    assert token.headers["authorization"] == "Basic " + base64.b64encode(f"{ROO_CLIENT}:{ROO_SECRET}".encode()).decode()
    assert token.form() == {"grant_type": "client_credentials"}
    # What the webhook would have imported.
    assert get_connector("deliveroo").map(events[0].data, events[0], context()).deliverooId == "loyalty:LOY-778899"


def test_deliveroo_follows_the_next_cursor(platforms):
    roo = platforms["deliveroo"]
    for n in range(250):
        roo.add_order(BRAND, SITE, order(n), WINDOW.since + timedelta(seconds=n))

    events = sweep("deliveroo", SITE)

    assert len(events) == 250 and len({event.event_id for event in events}) == 250
    calls = roo.requests_matching("GET", "/order/v2/")
    assert len(calls) == 3 and "start_date" in calls[0].query
    assert all(set(call.query) == {"cursor"} for call in calls[1:])


def test_deliveroo_keeps_to_five_calls_a_minute_per_restaurant(platforms):
    roo = platforms["deliveroo"]
    for n in range(650):  # 7 pages
        roo.add_order(BRAND, SITE, order(n), WINDOW.since + timedelta(seconds=n))

    yielded, error = raised("deliveroo", SITE)

    # The sixth call is not made: the account stops, to come back when the oldest call is a minute old.
    assert type(error) is RetryableError and 55 < error.retry_after <= 60
    assert len(yielded) == 500 and len(roo.requests_matching("GET", "/order/v2/")) == 5
    # Another restaurant has its own five.
    roo.add_order(BRAND, "2000", order(9000), WINDOW.since + timedelta(minutes=1))
    assert len(sweep("deliveroo", "2000")) == 1


def test_deliveroo_honours_its_429(platforms):
    roo = platforms["deliveroo"]
    for n in range(150):
        roo.add_order(BRAND, SITE, order(n), WINDOW.since + timedelta(seconds=n))
    roo.calls_per_minute = 1  # another integration spent the restaurant's calls

    yielded, error = raised("deliveroo", SITE)

    assert type(error) is RetryableError and 0 < error.retry_after <= 60
    assert len(yielded) == 100 and len(roo.requests_matching("GET", "/order/v2/")) == 2


def test_deliveroo_lists_a_named_tenants_restaurant_with_its_own_client_only(platforms):
    roo = platforms["deliveroo"]
    roo.add_order(OTHER_BRAND, "3000", order(11), WINDOW.since + timedelta(minutes=1))
    roo.access[ROO_TENANT_CLIENT] = {OTHER_BRAND}
    own = {"client_id": ROO_TENANT_CLIENT, "client_secret": ROO_TENANT_SECRET, "brand_id": OTHER_BRAND}

    assert [event.event_id for event in sweep("deliveroo", "3000", tenant("deliveroo", {"3000": own}))] == [
        "gb:order-11/order.new/placed"]
    [token] = roo.requests_matching("POST", "/oauth2/token")
    assert base64.b64decode(token.headers["authorization"].split()[1]).decode().startswith(f"{ROO_TENANT_CLIENT}:")

    # Another brand's restaurant with this client: refused, held.
    yielded, error = raised("deliveroo", SITE, tenant("deliveroo", {SITE: {**own, "brand_id": BRAND}}))
    assert isinstance(error, Held) and error.cause == "credentials_rejected"
    # No client (or no brand) of its own: held, and Deliveroo not called, though DELIVEROO_CLIENT_ID is set.
    for entry in ({}, {"client_id": ROO_TENANT_CLIENT, "client_secret": ROO_TENANT_SECRET}):
        roo.reset()
        yielded, error = raised("deliveroo", SITE, tenant("deliveroo", {SITE: entry}))
        assert isinstance(error, Held) and error.cause == "not_configured" and roo.requests == []


def test_the_default_tenant_sweeps_the_accounts_its_settings_list(platforms, monkeypatch):
    monkeypatch.setenv("META_SWEEP_ACCOUNTS", f"{PAGE}, {OTHER_PAGE}")
    monkeypatch.setenv("THEFORK_SWEEP_ACCOUNTS", GROUP)
    monkeypatch.setenv("DELIVEROO_SWEEP_ACCOUNTS", f"{SITE},2000")
    reset_bridge_state()
    default = default_tenant(get_settings())

    assert get_connector("meta").sweep_accounts(default) == [PAGE, OTHER_PAGE]
    assert get_connector("thefork").sweep_accounts(default) == [GROUP]
    assert get_connector("deliveroo").sweep_accounts(default) == [SITE, "2000"]
    assert get_connector("deliveroo").sweep_reach == timedelta(days=30)


# -- every platform --------------------------------------------------------------------------------

@pytest.mark.parametrize("platform", ["meta", "thefork", "deliveroo"])
def test_each_page_is_asked_within_the_time_the_run_gives_now(platforms, platform):
    """The sweep run gives each batch of listed guests a fresh deadline (``context.deadline``): the next page is
    asked within it, not within the one the listing started with."""
    for n in range(1001 if platform == "thefork" else 101):  # one page more than the first
        moment = WINDOW.since + timedelta(seconds=n)
        if platform == "meta":
            lead(platforms["meta"], str(6000 + n), moment)
        elif platform == "thefork":
            customer(platforms["thefork"], uuid_of(n), moment)
        else:
            platforms["deliveroo"].add_order(BRAND, SITE, order(n), moment)
    account = {"meta": PAGE, "thefork": GROUP, "deliveroo": SITE}[platform]
    run = context()
    events = get_connector(platform).sweep(account, WINDOW, run)
    next(events)

    run.deadline = Deadline(0)
    with pytest.raises(BudgetExhausted):
        list(events)


# -- what a sweep yields, the pipeline imports as the webhook would --------------------------------

@pytest.mark.parametrize("platform", ["meta", "thefork", "deliveroo"])
def test_a_swept_guest_is_imported_by_the_pipeline_unchanged(bridge, platforms, platform, monkeypatch):
    from chalicelib.flow import dispatch

    for name, value in {"META_APP_SECRET": APP_SECRET, "META_PAGE_ACCESS_TOKEN": PAGE_TOKEN,
                        "META_GRAPH_URL": f"{platforms['meta'].url}/v25.0", "THEFORK_CLIENT_ID": FORK_CLIENT,
                        "THEFORK_CLIENT_SECRET": FORK_SECRET, "THEFORK_API_URL": platforms["thefork"].api_url,
                        "THEFORK_AUTH_URL": platforms["thefork"].url}.items():
        monkeypatch.setenv(name, value)
    reset_bridge_state()
    inside = WINDOW.since + timedelta(minutes=2)
    if platform == "meta":
        lead(platforms["meta"], "777", inside)
        account, id_field, expected = PAGE, "metaId", "lead:777"
    elif platform == "thefork":
        customer(platforms["thefork"], uuid_of(77), inside)
        account, id_field, expected = GROUP, "theForkId", uuid_of(77)
    else:
        platforms["deliveroo"].add_order(BRAND, SITE, order(77), inside)
        account, id_field, expected = SITE, "deliverooId", "loyalty:LOY-778899"

    [event] = sweep(platform, account)
    settings = get_settings()
    assert dispatch.first_attempt(get_connector(platform), event, default_tenant(settings), settings, Deadline(10))

    assert [c[id_field] for c in bridge.customers()] == [expected]
