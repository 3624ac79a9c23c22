"""Sweeps of SevenRooms (reservations export), Uber Eats (a store's orders list) and a declarative source's declared
list call, each over real HTTP against its emulator: what a window lists, page after page, with the account's own
credentials only, as the events the webhook would have delivered (so fetch and map read them unchanged)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from chalicelib.core.errors import Held, PermanentError, RetryableError
from sandbox.emulators.base import Fault
from sandbox.platforms.declarative import CUSTOMERS_PATH, ListApiEmulator
from sandbox.platforms.sevenrooms import EXPORT_PATH, SevenRoomsEmulator
from sandbox.platforms.ubereats import make_order
from tests.conftest import fixture_json

API_CLIENT_ID, API_CLIENT_SECRET = "sevenrooms-api-client", "sevenrooms-api-secret-c07d"
TENANT_CLIENT_ID, TENANT_CLIENT_SECRET = "winterfell-api-client", "winterfell-api-secret-77aa"
VENUE = "ahhzfnNldmVucm9vbXMtc2VjdXJlLWRlbW9yHAsSD25pZ2h0bG9vcF9WZW51ZRiAgNCKuYezCgw"
VENUE_GROUP = "ahhzfnNldmVucm9vbXMtc2VjdXJlLWRlbW9yIQsSFG5pZ2h0bG9vcF9WZW51ZUdyb3VwGICA0Ip4wgoM"
OTHER_VENUE = "venue-of-another-group"
STORE = "c7f1dc2f-5d3b-4a4e-9f6e-2a1b3c4d5e6f"
OTHER_STORE = "0b7e5a4c-0000-4000-8000-000000000002"
SHOP_KEY, TENANT_SHOP_KEY = "shop-key-of-the-deployment", "shop-key-of-winterfell"

SINCE = datetime(2026, 12, 1, 10, 0, tzinfo=timezone.utc)
UNTIL = SINCE + timedelta(minutes=30)


def window():
    from chalicelib.connectors.base import SweepWindow

    return SweepWindow(SINCE, UNTIL)


def at(minutes: float) -> datetime:
    """A time ``minutes`` after the window's start (negative: before it)."""
    return SINCE + timedelta(minutes=minutes)


def context(tenant_id: str | None = None):
    from chalicelib.connectors.base import Context
    from chalicelib.domain.tenants import get_directory
    from chalicelib.infra.http import Deadline
    from chalicelib.infra.settings import get_settings

    tenants = get_directory().tenants()
    tenant = next(t for t in tenants if t.id == tenant_id) if tenant_id else tenants[0]
    return Context(settings=get_settings(), tenant=tenant, deadline=Deadline(20))


def connector(platform: str):
    from chalicelib.connectors import get_connector

    return get_connector(platform)


def write_tenants(tmp_path, platforms: dict) -> str:
    path = tmp_path / "tenants.json"
    path.write_text(json.dumps({"tenants": [{
        "id": "winterfell", "fullwhere_api_key": "tenant-b-key", "fullwhere_api_secret": "tenant-b-secret",
        "platforms": platforms}]}))
    return str(path)


# -- SevenRooms -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sevenrooms():
    server = SevenRoomsEmulator(client_id=API_CLIENT_ID, client_secret=API_CLIENT_SECRET)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def sevenrooms_bridge(bridge, sevenrooms):
    sevenrooms.reset()
    sevenrooms.client_id, sevenrooms.client_secret = API_CLIENT_ID, API_CLIENT_SECRET
    bridge.configure(sevenrooms_webhook_secret="sevenrooms-hook", sevenrooms_client_id=API_CLIENT_ID,
                     sevenrooms_client_secret=API_CLIENT_SECRET, sevenrooms_api_url=sevenrooms.api_url,
                     sevenrooms_sweep_accounts=VENUE)
    return bridge


def reservation(n: int, updated: datetime, created: datetime | None = None, venue: str = VENUE, **fields) -> dict:
    entity = fixture_json("sevenrooms/reservation_created.json")["entity"]
    entity.update(id=f"reservation-{n}", client_id=f"client-{n}", venue_id=venue, first_name=f"Guest{n}",
                  email=f"guest{n}@sevenrooms.example", phone_number=None,
                  created=(created or updated).replace(tzinfo=None).isoformat(),
                  updated=updated.replace(tzinfo=None).isoformat(), **fields)
    return entity


def webhook_event(entity: dict, event_type: str):
    """The event SevenRooms' webhook gives for ``entity`` (parsed by the connector, as the route does)."""
    from chalicelib.connectors.base import WebhookRequest

    body = json.dumps({"entity": entity, "entity_type": "reservation", "event_type": event_type, "updates": []})
    [event] = connector("sevenrooms").parse(WebhookRequest("sevenrooms", body.encode(), {})).events
    return event


def test_sevenrooms_sweep_lists_the_windows_reservations_as_the_webhook_sent_them(sevenrooms_bridge, sevenrooms):
    created = reservation(1, updated=at(5) + timedelta(milliseconds=1), created=at(5))  # new, unchanged since
    changed = reservation(2, updated=at(12), created=at(-600))  # booked last week, changed in the window
    for entity in (created, changed,
                   reservation(3, updated=at(-1)),  # before the window
                   reservation(4, updated=at(31)),  # after it: the next window's
                   reservation(5, updated=at(7), deleted=at(7).replace(tzinfo=None).isoformat()),  # erased
                   reservation(6, updated=at(8), venue=OTHER_VENUE)):  # another venue
        sevenrooms.add_reservation(entity)

    events = list(connector("sevenrooms").sweep(VENUE, window(), context()))

    # The same events the webhook gave: same event id, kind, account, guest key and data.
    assert [e.to_dict() for e in events] == [webhook_event(created, "created").to_dict(),
                                             webhook_event(changed, "updated").to_dict()]
    [request] = sevenrooms.requests_matching("GET", EXPORT_PATH)
    assert request.query["venue_id"] == VENUE and request.query["updated_since"] == "2026-12-01T10:00:00"


def test_a_swept_reservation_is_fetched_and_mapped_as_the_webhooks(sevenrooms_bridge, sevenrooms):
    entity = reservation(1, updated=at(3))
    sevenrooms.add_reservation(entity)
    sevenrooms.add_client({**fixture_json("sevenrooms/client.json")["data"], "id": "client-1",
                           "email": "guest1@sevenrooms.example", "phone_number": None})
    sevenrooms_connector, ctx = connector("sevenrooms"), context()

    [swept] = sevenrooms_connector.sweep(VENUE, window(), ctx)
    received = webhook_event(entity, "created")

    customers = [sevenrooms_connector.map(sevenrooms_connector.fetch(event, ctx), event, ctx)
                 for event in (swept, received)]
    assert customers[0] == customers[1]
    assert customers[0].sevenroomsId == "client-1" and customers[0].language == "en"  # the client was fetched


def test_sevenrooms_sweep_pages_with_the_exports_cursor(sevenrooms_bridge, sevenrooms, monkeypatch):
    from chalicelib.connectors import sevenrooms as module

    monkeypatch.setattr(module, "EXPORT_PAGE_LIMIT", 2)
    for n in range(5):
        sevenrooms.add_reservation(reservation(n, updated=at(n)))

    events = list(connector("sevenrooms").sweep(VENUE, window(), context()))

    assert [e.data["entity"]["id"] for e in events] == [f"reservation-{n}" for n in range(5)]
    pages = sevenrooms.requests_matching("GET", EXPORT_PATH)
    assert [page.query.get("cursor") for page in pages] == [None, "2", "4"]
    assert {page.query["limit"] for page in pages} == {"2"} and sevenrooms.token_requests == 1


def test_a_tenants_venue_is_swept_with_its_own_api_client_and_one_without_is_not(
        sevenrooms_bridge, sevenrooms, tmp_path):
    # The emulator only knows the tenant's client: the deployment's (valid elsewhere) must never be used for it.
    sevenrooms.client_id, sevenrooms.client_secret = TENANT_CLIENT_ID, TENANT_CLIENT_SECRET
    sevenrooms_bridge.configure(tenants_file=write_tenants(tmp_path, {"sevenrooms": {
        "webhook_secret": "winterfell-hook", "accounts": {
            VENUE: {"client_id": TENANT_CLIENT_ID, "client_secret": TENANT_CLIENT_SECRET},
            OTHER_VENUE: {},  # no API client of its own
            VENUE_GROUP: {"client_id": TENANT_CLIENT_ID, "client_secret": TENANT_CLIENT_SECRET, "sweep_by": "none"},
        }}}))
    sevenrooms.add_reservation(reservation(1, updated=at(1)))
    sevenrooms.add_reservation(reservation(2, updated=at(2), venue=OTHER_VENUE))
    sevenrooms_connector, ctx = connector("sevenrooms"), context("winterfell")

    # The venue group marked "sweep_by": "none" is left out (its venues are swept one by one).
    assert sevenrooms_connector.sweep_accounts(ctx.tenant) == sorted([VENUE, OTHER_VENUE])
    assert [e.data["entity"]["id"] for e in sevenrooms_connector.sweep(VENUE, window(), ctx)] == ["reservation-1"]

    sevenrooms.reset()
    with pytest.raises(Held) as held:
        list(sevenrooms_connector.sweep(OTHER_VENUE, window(), ctx))
    assert held.value.cause == "not_configured" and "tenants document" in held.value.reason
    assert sevenrooms.requests == []  # not listed, not even a token asked for


def test_without_any_api_client_sevenrooms_is_not_swept_and_says_why(sevenrooms_bridge, sevenrooms):
    sevenrooms_bridge.configure(sevenrooms_client_id=None, sevenrooms_client_secret=None)

    with pytest.raises(Held) as held:
        list(connector("sevenrooms").sweep(VENUE, window(), context()))

    assert held.value.cause == "not_configured" and "cannot be listed" in held.value.reason
    assert sevenrooms.requests == []


def test_a_venue_group_is_swept_by_venue_group_id(sevenrooms_bridge, sevenrooms):
    sevenrooms_bridge.configure(sevenrooms_sweep_by="venue_group_id", sevenrooms_sweep_accounts=VENUE_GROUP)
    sevenrooms.add_reservation({**reservation(1, updated=at(1)), "venue_group_id": VENUE_GROUP})
    sevenrooms_connector = connector("sevenrooms")

    assert sevenrooms_connector.sweep_accounts(context().tenant) == [VENUE_GROUP]
    [event] = sevenrooms_connector.sweep(VENUE_GROUP, window(), context())

    assert event.account_id == VENUE  # routed by its venue, as the webhook is
    [request] = sevenrooms.requests_matching("GET", EXPORT_PATH)
    assert request.query["venue_group_id"] == VENUE_GROUP and "venue_id" not in request.query


def test_sevenrooms_rate_limit_stops_the_account_with_retry_after(sevenrooms_bridge, sevenrooms):
    sevenrooms.add_reservation(reservation(1, updated=at(1)))
    sevenrooms.faults.add(Fault("status", status=429, retry_after=42), path=EXPORT_PATH)

    with pytest.raises(RetryableError) as limited:
        list(connector("sevenrooms").sweep(VENUE, window(), context()))

    assert limited.value.retry_after == 42


def test_an_export_path_of_none_turns_the_sevenrooms_sweep_off(sevenrooms_bridge, sevenrooms):
    sevenrooms_bridge.configure(sevenrooms_reservations_export_path="none")
    assert connector("sevenrooms").sweep_accounts(context().tenant) == []
    assert connector("sevenrooms").sweep(VENUE, window(), context()) is None
    assert sevenrooms.requests == []


# -- Uber Eats --------------------------------------------------------------------------------------

def add_order(bridge, n: int, placed: datetime, store: str = STORE) -> dict:
    order = make_order(f"order-{n}", store, f"eater-{n}", first_name=f"Guest{n}")
    order["placed_at"] = placed.strftime("%Y-%m-%dT%H:%M:%SZ")
    bridge.uber.add_order(order)
    return order


def test_ubereats_sweep_lists_the_stores_orders_of_the_window_page_by_page(bridge, monkeypatch):
    from chalicelib.connectors import ubereats as module

    monkeypatch.setattr(module, "ORDERS_PAGE_SIZE", 2)
    for n in range(5):
        add_order(bridge, n, at(n * 5))
    add_order(bridge, 10, at(-1))  # before the window
    add_order(bridge, 11, at(30))  # at its end: the next window's
    add_order(bridge, 12, at(3), store=OTHER_STORE)

    events = list(connector("ubereats").sweep(STORE, window(), context()))

    assert [e.data for e in events] == [{"order_id": f"order-{n}"} for n in range(5)]
    assert {(e.kind, e.account_id) for e in events} == {("orders.notification", STORE)}
    assert [e.guest_key for e in events] == [f"order:order-{n}" for n in range(5)]  # the webhook's
    pages = bridge.uber.requests_matching("GET", f"/v1/delivery/store/{STORE}/orders")
    assert [page.query.get("next_page_token") for page in pages] == [None, "2", "4"]
    assert (pages[0].query["start_time"], pages[0].query["end_time"]) == ("2026-12-01T10:00:00Z", "2026-12-01T10:30:00Z")
    assert bridge.uber.token_requests == 1


def test_a_swept_order_is_fetched_and_mapped_as_the_webhooks(bridge):
    from chalicelib.connectors.base import WebhookRequest
    from sandbox.platforms.ubereats import make_notification

    add_order(bridge, 1, at(1))
    uber, ctx = connector("ubereats"), context()
    [swept] = uber.sweep(STORE, window(), ctx)
    body = json.dumps(make_notification("order-1", STORE)).encode()
    [received] = uber.parse(WebhookRequest("ubereats", body, {})).events

    assert (swept.kind, swept.account_id, swept.data, swept.guest_key) == (
        received.kind, received.account_id, received.data, received.guest_key)
    customers = [uber.map(uber.fetch(event, ctx), event, ctx) for event in (swept, received)]
    assert customers[0] == customers[1] and customers[0].ubereatsId == "eater-1"


def test_a_tenants_stores_are_its_listed_ones(bridge, tmp_path):
    bridge.configure(tenants_file=write_tenants(tmp_path, {"ubereats": {"accounts": {STORE: {}}}}))
    assert connector("ubereats").sweep_accounts(context("winterfell").tenant) == [STORE]


def test_without_the_apps_credentials_uber_eats_is_not_swept(bridge):
    bridge.configure(ubereats_client_secret=None)
    with pytest.raises(Held) as held:
        list(connector("ubereats").sweep(STORE, window(), context()))
    assert held.value.cause == "not_configured"
    assert bridge.uber.requests == []


def test_the_orders_list_is_configurable_and_can_be_turned_off(bridge):
    # Second-hand endpoint: the one configured is the one called (here one the emulator does not serve: 404).
    bridge.configure(ubereats_orders_list_path="/v1/eats/stores/{store_id}/listed-orders")
    with pytest.raises(PermanentError):
        list(connector("ubereats").sweep(STORE, window(), context()))
    assert [r.route for r in bridge.uber.requests if r.method == "GET"] == [f"/v1/eats/stores/{STORE}/listed-orders"]

    bridge.configure(ubereats_orders_list_path="none", ubereats_sweep_accounts=STORE)
    assert connector("ubereats").sweep_accounts(context().tenant) == []
    assert connector("ubereats").sweep(STORE, window(), context()) is None


# -- a declarative source ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def shop():
    server = ListApiEmulator(keys={"shop-1": SHOP_KEY, "shop-2": TENANT_SHOP_KEY})
    server.start()
    yield server
    server.stop()


def shop_source(shop: ListApiEmulator, **sweep) -> dict:
    """A source whose webhook carries ``{"event": "customer.updated", "customer": {...}}``, and whose API lists the
    customers updated since a time (the sandbox's ListApiEmulator)."""
    return {
        "name": "shop", "auth": {"type": "token", "header": "X-Shop-Token", "secret": "shop-webhook-secret"},
        "id_field": "comoId",
        "event_type": "event", "import_events": ["customer.created", "customer.updated"],
        "event_id": "join('/', [customer.id, customer.updated_at])", "account_id": "customer.account",
        "mapping": {"id": "customer.id", "firstName": "customer.first_name", "email": "customer.email"},
        "sweep": {"url": shop.url + CUSTOMERS_PATH + "?account={account}", "headers": {"X-Api-Key": "${SHOP_API_KEY}"},
                  "since_parameter": "updated_since", "until_parameter": "updated_before", "items": "customers",
                  "event": "{event: 'customer.updated', customer: @}", "next_page": "meta.next_cursor",
                  "accounts": ["shop-1"], **sweep},
    }


@pytest.fixture
def shop_bridge(bridge, shop, tmp_path):
    shop.reset()

    def configure(*, tenants: dict | None = None, **sweep):
        path = tmp_path / "sources.json"
        path.write_text(json.dumps({"sources": [shop_source(shop, **sweep)]}))
        bridge.configure(sources_file=str(path), shop_api_key=SHOP_KEY,
                         tenants_file=write_tenants(tmp_path, tenants) if tenants else None)

    configure()
    bridge.configure_shop = configure
    return bridge


def customer(n: int, updated: datetime, account: str = "shop-1") -> dict:
    return {"id": f"cust-{n}", "first_name": f"Guest{n}", "email": f"guest{n}@shop.example",
            "updated_at": updated.strftime("%Y-%m-%dT%H:%M:%SZ"), "account": account}


def shop_webhook_event(body: dict):
    from chalicelib.connectors.base import WebhookRequest

    [event] = connector("shop").parse(WebhookRequest("shop", json.dumps(body).encode(), {})).events
    return event


def test_a_declared_sweep_lists_the_window_page_by_page_as_the_webhook_events(shop_bridge, shop):
    for n in range(5):
        shop.add_customer("shop-1", customer(n, at(n * 5)))
    shop.add_customer("shop-1", customer(10, at(-1)))
    shop.add_customer("shop-1", customer(11, at(30)))
    shop.add_customer("shop-2", customer(12, at(3), account="shop-2"))
    source = connector("shop")

    assert source.sweep_accounts(context().tenant) == ["shop-1"]
    events = list(source.sweep("shop-1", window(), context()))

    expected = [shop_webhook_event({"event": "customer.updated", "customer": customer(n, at(n * 5))})
                for n in range(5)]
    assert [e.to_dict() for e in events] == [e.to_dict() for e in expected]
    assert events[0].event_id == "cust-0/2026-12-01T10:00:00Z" and events[0].guest_key == "id:cust-0"
    pages = shop.requests_matching("GET", CUSTOMERS_PATH)
    assert [page.query.get("cursor") for page in pages] == [None, "2", "4"]
    # The url's own query is kept, the window's bounds added to every page.
    assert {(p.query["account"], p.query["updated_since"], p.query["updated_before"]) for p in pages} == {
        ("shop-1", "2026-12-01T10:00:00Z", "2026-12-01T10:30:00Z")}
    customers = [source.map(source.fetch(event, context()), event, context()) for event in events]
    assert [(c.comoId, c.email) for c in customers] == [(f"cust-{n}", f"guest{n}@shop.example") for n in range(5)]


def test_item_time_keeps_only_the_windows_items_when_the_api_filters_by_day(shop_bridge, shop):
    shop_bridge.configure_shop(until_parameter=None, time_format="date", item_time="updated_at")
    for n, moment in enumerate((at(-120), at(2), at(29), at(45))):
        shop.add_customer("shop-1", customer(n, moment))

    events = list(connector("shop").sweep("shop-1", window(), context()))

    assert [e.data["customer"]["id"] for e in events] == ["cust-1", "cust-2"]
    assert {p.query["updated_since"] for p in shop.requests_matching("GET", CUSTOMERS_PATH)} == {"2026-12-01"}


def test_a_tenants_sweep_reads_its_account_entry_never_the_environment(shop_bridge, shop):
    shop_bridge.configure_shop(tenants={"shop": {"webhook_secret": "winterfell-hook", "accounts": {
        "shop-2": {"SHOP_API_KEY": TENANT_SHOP_KEY}, "shop-1": {}}}})
    shop.add_customer("shop-2", customer(1, at(1), account="shop-2"))
    shop.add_customer("shop-1", customer(2, at(2)))
    source, ctx = connector("shop"), context("winterfell")

    assert source.sweep_accounts(ctx.tenant) == ["shop-1", "shop-2"]
    assert [e.data["customer"]["id"] for e in source.sweep("shop-2", window(), ctx)] == ["cust-1"]
    [request] = shop.requests
    assert request.headers["x-api-key"] == TENANT_SHOP_KEY

    # shop-1's entry gives no SHOP_API_KEY: the environment's (which would open it) is not lent.
    shop.reset()
    with pytest.raises(Held) as held:
        list(source.sweep("shop-1", window(), ctx))
    assert held.value.cause == "not_configured" and "SHOP_API_KEY" in held.value.reason
    assert shop.requests == []


def test_the_default_tenant_without_its_variable_is_not_swept(shop_bridge, shop):
    shop_bridge.configure(shop_api_key=None)
    with pytest.raises(Held) as held:
        list(connector("shop").sweep("shop-1", window(), context()))
    assert held.value.cause == "not_configured" and "SHOP_API_KEY" in held.value.reason
    assert shop.requests == []


def test_values_from_an_account_or_an_answer_are_sent_as_data_never_expanded(shop_bridge, shop):
    shop_bridge.configure_shop(accounts=["${SHOP_API_KEY}"])
    with pytest.raises(Held):  # the API knows no such account: 401
        list(connector("shop").sweep("${SHOP_API_KEY}", window(), context()))
    [request] = shop.requests
    assert request.query["account"] == "${SHOP_API_KEY}" and SHOP_KEY not in request.path


def test_a_source_without_a_sweep_is_not_swept(shop_bridge, shop, tmp_path):
    entry = shop_source(shop)
    del entry["sweep"]
    path = tmp_path / "plain.json"
    path.write_text(json.dumps({"sources": [entry]}))
    shop_bridge.configure(sources_file=str(path))
    assert connector("shop").sweep("shop-1", window(), context()) is None
    assert connector("shop").sweep_accounts(context().tenant) == []


@pytest.mark.parametrize("sweep, message", [
    ({"headers": {"Authorization": "Bearer ${AWS_SECRET_ACCESS_KEY}"}}, "AWS_SECRET_ACCESS_KEY"),
    ({"headers": {"X-Api-Key": "${SHOP_WEBHOOK_SECRET}"}}, "webhook secret"),
    ({"url": "https://{account}.example.com/customers"}, "never in its host"),
    ({"items": "customers[?"}, "invalid JMESPath"),
    ({"since_parameter": "updated since"}, "since_parameter"),
    ({"time_format": "rfc822"}, "time_format"),
])
def test_the_sweep_declaration_is_checked_at_load(sweep, message, shop):
    from chalicelib.core.errors import SettingsError
    from chalicelib.domain.sources import parse_document

    entry = shop_source(shop, **sweep)
    entry["auth"] = {"type": "token", "header": "X-Shop-Token", "secret_env": "SHOP_WEBHOOK_SECRET"}
    with pytest.raises(SettingsError) as refused:
        parse_document(json.dumps({"sources": [entry]}), "test")
    assert message in str(refused.value)


# -- through the sweep run (the ``sweeps`` Lambda) --------------------------------------------------

def run_sweeps() -> dict:
    from chalice.local import LambdaContext

    from app import app

    event = {"version": "0", "id": "test", "detail-type": "Scheduled Event", "source": "aws.events",
             "account": "123456789012", "time": "2026-12-01T00:00:00Z", "region": "eu-west-3", "resources": [],
             "detail": {}}
    return app.handler_map["sweeps"](event, LambdaContext("sweeps", memory_size=512, max_runtime_ms=120_000))


def make_due(bridge, tenant: str, platform: str, account: str) -> None:
    """As if the account's SWEEP_MINUTES had passed since its last run."""
    import os

    from sandbox import aws as local_aws

    local_aws.client("dynamodb", bridge.endpoint).update_item(
        TableName=os.environ["IDENTITY_TABLE"], Key={"pk": {"S": f"sweep#{tenant}#{platform}#{account}"}},
        UpdateExpression="SET last_run = :old", ExpressionAttributeValues={":old": {"N": "0"}})


def log_lines(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{") and '"_aws"' not in line]


def just_now() -> datetime:
    return datetime.now(timezone.utc) - timedelta(seconds=1)


def test_the_run_recovers_a_tenants_reservation_and_says_why_a_venue_without_api_client_is_not_swept(
        sevenrooms_bridge, sevenrooms, tmp_path, capsys):
    bridge = sevenrooms_bridge
    sevenrooms.client_id, sevenrooms.client_secret = TENANT_CLIENT_ID, TENANT_CLIENT_SECRET
    bridge.configure(sweep_settle_seconds=0, sweep_minutes=15, tenants_file=write_tenants(tmp_path, {"sevenrooms": {
        "webhook_secret": "winterfell-hook", "accounts": {
            VENUE: {"client_id": TENANT_CLIENT_ID, "client_secret": TENANT_CLIENT_SECRET},
            OTHER_VENUE: {}}}}))
    run_sweeps()  # the first run starts the cursors at now
    sevenrooms.add_reservation(reservation(1, updated=just_now()))
    sevenrooms.add_reservation(reservation(2, updated=just_now(), venue=OTHER_VENUE))
    sevenrooms.add_client({**fixture_json("sevenrooms/client.json")["data"], "id": "client-1",
                           "email": "guest1@sevenrooms.example", "phone_number": None})
    for account in (VENUE, OTHER_VENUE):
        make_due(bridge, "winterfell", "sevenrooms", account)
    capsys.readouterr()

    result = run_sweeps()

    output = log_lines(capsys.readouterr().out)
    assert [c["sevenroomsId"] for c in bridge.customers("tenant-b-key")] == ["client-1"]
    assert [line["platform"] for line in output if line["outcome"] == "recovered"] == ["sevenrooms"]
    [skipped] = [line for line in output if line["outcome"] == "sweep_skipped"]
    assert (skipped["account_id"], skipped["reason"]) == (OTHER_VENUE, "not_configured")
    assert "client_id" in skipped["detail"] and result["accounts_swept"] == 1
    # Every call carried the tenant's own client; no list call was made for the venue without one.
    assert {r.query["venue_id"] for r in sevenrooms.requests_matching("GET", EXPORT_PATH)} == {VENUE}
    assert bridge.customers() == []  # nothing reached the deployment's Fullwhere account


def test_the_run_recovers_an_uber_eats_order_once(bridge, capsys):
    bridge.configure(sweep_settle_seconds=0, ubereats_sweep_accounts=STORE)
    run_sweeps()
    add_order(bridge, 1, just_now())
    make_due(bridge, "default", "ubereats", STORE)

    run_sweeps()
    make_due(bridge, "default", "ubereats", STORE)
    second = run_sweeps()  # the same order listed again (the windows overlap): no second import

    assert [c["ubereatsId"] for c in bridge.customers()] == ["eater-1"]
    assert bridge.fullwhere.import_count == 1 and second["unchanged"] == 1
    assert [line["event_id"] for line in log_lines(capsys.readouterr().out)
            if line["outcome"] == "recovered"] == ["sweep/order/order-1"]


def test_the_run_recovers_a_declarative_sources_guest(shop_bridge, shop, capsys):
    shop_bridge.configure(sweep_settle_seconds=0)
    run_sweeps()
    shop.add_customer("shop-1", customer(1, just_now()))
    make_due(shop_bridge, "default", "shop", "shop-1")

    run_sweeps()

    assert [(c["comoId"], c["email"]) for c in shop_bridge.customers()] == [("cust-1", "guest1@shop.example")]
    assert [line["platform"] for line in log_lines(capsys.readouterr().out)
            if line["outcome"] == "recovered"] == ["shop"]


def test_an_orders_list_path_without_the_store_is_refused(bridge):
    # It would list every store the app sees in each tenant's sweep.
    from chalicelib.connectors.ubereats import UberEatsSettings
    from chalicelib.core.errors import SettingsError
    from chalicelib.infra.settings import load_settings

    with pytest.raises((SettingsError, ValueError)) as refused:
        load_settings({"UBEREATS_ORDERS_LIST_PATH": "/v1/delivery/orders"}, UberEatsSettings)
    assert "store_id" in str(refused.value)
