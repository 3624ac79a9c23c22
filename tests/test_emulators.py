"""Tests of the test infrastructure itself: emulators and the local AWS helpers."""

from __future__ import annotations

import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from sandbox import aws
from sandbox.emulators.base import Fault
from sandbox.emulators.fullwhere import FullwhereEmulator
from sandbox.platforms.mews import (
    CUSTOMERS_PATH,
    RESERVATIONS_PATH,
    MewsEmulator,
    make_customer,
    make_reservation,
    make_webhook,
)
from sandbox.platforms.ubereats import UberEatsEmulator, make_notification, make_order

AUTH = {"X-API-KEY": "test-key", "X-API-SECRET": "test-secret"}


@pytest.fixture(scope="module")
def transport():
    # One transport for the whole module: each new httpx transport loads the CA
    # bundle (~40 ms), which would dominate these millisecond tests.
    with httpx.HTTPTransport() as shared:
        yield shared


@pytest.fixture
def http(transport):
    # Not closed: closing a client closes its transport, which is shared.
    return httpx.Client(transport=transport, timeout=5)


@pytest.fixture
def fullwhere():
    with FullwhereEmulator(accounts={"test-key": "test-secret", "other-key": "other-secret"}) as server:
        yield server


@pytest.fixture
def fw(fullwhere, transport):
    return httpx.Client(base_url=fullwhere.url, headers=AUTH, timeout=5, transport=transport)


# -- Fullwhere --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [{}, {"X-API-KEY": "test-key"}, {"X-API-KEY": "test-key", "X-API-SECRET": "wrong"}],
)
def test_fullwhere_rejects_bad_credentials(fullwhere, http, headers):
    response = http.post(f"{fullwhere.url}/partners/customer", json={"email": "a@b.co"}, headers=headers)
    assert response.status_code == 401
    assert response.json() == {"statusCode": 401, "message": "Unauthorized"}
    assert fullwhere.customers() == []


def test_fullwhere_create_then_merge_fills_only_nulls(fullwhere, fw):
    first = fw.post(
        "/partners/customer",
        json={"email": "ann@example.com", "phoneNumber": "+33612345678", "firstName": "Ann",
              "emailOptin": True, "metadata": {"source": "zenchef"}},
    )  # fmt: skip
    assert first.status_code == 201
    created = first.json()
    assert created["firstName"] == "Ann" and created["lastName"] is None
    assert created["smsOptin"] is False and created["type"] == "Unknown" and created["tags"] == []
    assert created["feedbackCount"] == 0 and created["emailBounced"] is False

    second = fw.post(
        "/partners/customer",
        json={"email": "ann@example.com", "phoneNumber": "+33612345678", "firstName": "Anne",
              "lastName": "Martin", "emailOptin": False, "smsOptin": True, "zenchefId": "z-1",
              "metadata": {"source": "mews", "room": "12"}},
    )  # fmt: skip
    assert second.status_code == 200
    merged = second.json()
    assert merged["id"] == created["id"]
    assert merged["firstName"] == "Ann"  # not null before: unchanged
    assert merged["emailOptin"] is True  # an opt-out does not overwrite
    assert merged["lastName"] == "Martin" and merged["smsOptin"] is True and merged["zenchefId"] == "z-1"
    assert merged["metadata"] == {"source": "zenchef", "room": "12"}
    assert len(fullwhere.customers()) == 1
    assert fullwhere.import_count == 2


def test_fullwhere_pair_must_match_exactly_and_tenants_are_separate(fullwhere, fw):
    assert fw.post("/partners/customer", json={"email": "a@example.com"}).status_code == 201
    assert fw.post("/partners/customer", json={"email": "a@example.com"}).status_code == 200
    # Same email but a different phone is a different pair.
    pair = {"email": "a@example.com", "phoneNumber": "+33600000000"}
    assert fw.post("/partners/customer", json=pair).status_code == 201
    other = {"X-API-KEY": "other-key", "X-API-SECRET": "other-secret"}
    assert fw.post("/partners/customer", json=pair, headers=other).status_code == 201
    assert len(fullwhere.customers()) == 2
    assert len(fullwhere.customers("other-key")) == 1


def test_fullwhere_guest_without_contact_always_creates(fullwhere, fw):
    for _ in range(2):
        assert fw.post("/partners/customer", json={"ubereatsId": "eater-1", "firstName": "Larry"}).status_code == 201
    assert len(fullwhere.find(ubereatsId="eater-1")) == 2


def test_fullwhere_concurrent_imports_of_one_pair_make_one_customer(fullwhere, fw):
    body = {"email": "race@example.com", "phoneNumber": "+33611111111"}
    with ThreadPoolExecutor(max_workers=10) as pool:
        statuses = sorted(pool.map(lambda _: fw.post("/partners/customer", json=body).status_code, range(20)))
    assert statuses == [200] * 19 + [201]
    assert len(fullwhere.customers()) == 1


@pytest.mark.parametrize(
    "body, reason",
    [
        ({"email": "not-an-email"}, "email must be an email"),
        ({"phoneNumber": "06 12 34 56 78"}, "phoneNumber must be a valid phone number in E.164 format"),
        ({"language": "en-GB"}, "language must be a lower-case ISO 639-1 code"),
        ({"nickname": "x"}, "property nickname should not exist"),
        ({"firstName": 3}, "firstName must be a string"),
        ({"emailOptin": "yes"}, "emailOptin must be a boolean value"),
        ({"metadata": {"a": 1}}, "metadata must be an object whose keys and values are strings"),
        ([{"email": "a@b.co"}], "body must be a JSON object"),
    ],
)
def test_fullwhere_validation(fullwhere, fw, body, reason):
    response = fw.post("/partners/customer", json=body)
    assert response.status_code == 400
    assert response.json() == {"statusCode": 400, "message": [reason], "error": "Bad Request"}
    assert fullwhere.import_count == 0


def test_fullwhere_get(fw):
    created = fw.post("/partners/customer", json={"email": "g@example.com", "language": "fr"}).json()
    assert fw.get("/partners/customer", params={"id": created["id"]}).json() == created
    missing = fw.get("/partners/customer", params={"id": str(uuid.uuid4())})
    assert missing.status_code == 404
    assert missing.json() == {"statusCode": 404, "message": "Customer not found."}
    assert fw.get("/partners/customer", params={"id": "nope"}).status_code == 400
    assert fw.get("/partners/customer").status_code == 400


def test_fullwhere_list_pagination(fullwhere, fw):
    for i in range(5):
        fullwhere.add_customer(email=f"c{i}@example.com")
    page = fw.post("/partners/customer/list", json={"limit": 2, "page": 2}).json()
    assert [c["email"] for c in page["data"]] == ["c2@example.com", "c3@example.com"]
    assert (page["total"], page["page"], page["limit"]) == (5, 2, 2)
    assert len(fw.post("/partners/customer/list").json()["data"]) == 5  # defaults: limit 10, page 1
    for bad in ({"limit": 0}, {"limit": 101}, {"page": 0}, {"limit": "5"}):
        assert fw.post("/partners/customer/list", json=bad).status_code == 400


def test_fullwhere_batch(fullwhere, fw):
    fullwhere.add_customer(email="old@example.com")
    response = fw.post(
        "/partners/customer/batch",
        json={"customers": [{"email": "new@example.com"}, {"email": "old@example.com", "firstName": "Old"},
                            {"email": "bad"}]},
    )  # fmt: skip
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["status"] for r in results] == ["created", "merged", "rejected"]
    assert results[2] == {"index": 2, "status": "rejected", "id": None, "errors": ["email must be an email"]}
    assert fullwhere.find(email="old@example.com")[0]["firstName"] == "Old"
    assert fw.post("/partners/customer/batch", json=[{"email": "a@b.co"}]).status_code == 400
    assert fw.post("/partners/customer/batch", json={"customers": []}).status_code == 400


def test_fullwhere_sqlite_persistence_survives_restart(tmp_path, http):
    db = str(tmp_path / "fullwhere.sqlite")
    with FullwhereEmulator(db_path=db) as server:
        server.add_customer(email="keep@example.com")
        server.add_customer(email="keep@example.com", firstName="Kept")
        server.add_customer(firstName="second")
    restarted = FullwhereEmulator(db_path=db)
    assert [c["firstName"] for c in restarted.customers()] == ["Kept", "second"]
    with restarted:  # the merge index is rebuilt too
        response = http.post(f"{restarted.url}/partners/customer", json={"email": "keep@example.com"}, headers=AUTH)
        assert response.status_code == 200
    restarted.reset()
    assert FullwhereEmulator(db_path=db).customers() == []


# -- shared machinery: faults, latency, recording ------------------------------------------


def test_status_fault_with_retry_after_then_normal(fullwhere, fw):
    fullwhere.faults.add(Fault("status", 429, retry_after=2), times=2, path="/partners/customer")
    fullwhere.faults.add(Fault("status", 503, body="upstream down"))
    statuses = [fw.post("/partners/customer", json={}) for _ in range(4)]
    assert [r.status_code for r in statuses] == [429, 429, 503, 201]
    assert statuses[0].headers["retry-after"] == "2"
    assert statuses[2].text == "upstream down"
    assert fullwhere.fault_count == 3 and fullwhere.faults.pending == 0
    assert len(fullwhere.requests) == 4 and fullwhere.import_count == 1  # faulted requests are recorded


def test_fault_path_filter(fullwhere, fw):
    fullwhere.faults.add(Fault("status", 500), path="/partners/customer/batch")
    assert fw.post("/partners/customer", json={}).status_code == 201
    assert fw.post("/partners/customer/batch", json={"customers": [{}]}).status_code == 500


def test_drop_fault_raises_transport_error_and_connection_recovers(fullwhere, fw):
    fullwhere.faults.add(Fault("drop"))
    with pytest.raises(httpx.TransportError):
        fw.post("/partners/customer", json={})
    assert fw.post("/partners/customer", json={}).status_code == 201


def test_delay_fault_and_client_timeout(fullwhere, fw):
    fullwhere.faults.add(Fault("delay", seconds=0.5), times=2)
    with pytest.raises(httpx.ReadTimeout):
        fw.post("/partners/customer", json={}, timeout=0.1)
    started = time.monotonic()
    assert fw.post("/partners/customer", json={}).status_code == 201
    assert time.monotonic() - started >= 0.45


def test_malformed_fault(fullwhere, fw):
    fullwhere.faults.add(Fault("malformed"))
    response = fw.post("/partners/customer", json={})
    assert response.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        response.json()


def test_malformed_fault_after_handling_stores_the_import(fullwhere, fw):
    fullwhere.faults.add(Fault("malformed", handled=True))
    response = fw.post("/partners/customer", json={"email": "late@example.com"})
    assert response.status_code == 200 and response.text == '{"truncated": '
    assert [customer["email"] for customer in fullwhere.customers()] == ["late@example.com"]
    fullwhere.faults.add(Fault("malformed"))
    fw.post("/partners/customer", json={"email": "never@example.com"})
    assert len(fullwhere.customers()) == 1  # without handled=True nothing is stored


def test_always_fault_until_clear_and_reset(fullwhere, fw):
    fullwhere.faults.always(Fault("status", 502))
    assert [fw.get("/partners/customer", params={"id": "x"}).status_code for _ in range(3)] == [502] * 3
    fullwhere.faults.clear()
    assert fw.get("/partners/customer", params={"id": "x"}).status_code == 400
    fullwhere.latency = 0.01
    fullwhere.add_customer(email="x@example.com")
    fullwhere.reset()
    assert (fullwhere.customers(), fullwhere.requests, fullwhere.fault_count, fullwhere.latency) == ([], [], 0, 0)


def test_recorded_requests_and_unknown_route(fullwhere, fw):
    response = fw.put("/nowhere?x=1", content=b"\x00raw")
    assert response.status_code == 404 and response.headers["content-type"] == "application/json"
    recorded = fullwhere.requests[-1]
    assert (recorded.method, recorded.path, recorded.body) == ("PUT", "/nowhere?x=1", b"\x00raw")
    assert recorded.headers["x-api-key"] == "test-key"


def test_stop_does_not_hang_with_open_keepalive_and_delayed_requests():
    server = FullwhereEmulator().start()
    client = httpx.Client(base_url=server.url, headers=AUTH)
    assert client.post("/partners/customer", json={}).status_code == 201  # leaves a pooled connection
    server.faults.always(Fault("delay", seconds=30))
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 2
    client.close()


# -- Uber Eats -----------------------------------------------------------------------------


def test_uber_token_and_order(transport):
    with UberEatsEmulator() as uber:
        client = httpx.Client(base_url=uber.url, timeout=5, transport=transport)
        form = {"client_id": "uber-client", "client_secret": "uber-secret",
                "grant_type": "client_credentials", "scope": "eats.store.orders.read"}  # fmt: skip
        assert client.post("/oauth/v2/token", data={**form, "client_secret": "x"}).status_code == 401
        assert client.post("/oauth/v2/token", data={**form, "grant_type": "password"}).status_code == 400
        token = client.post("/oauth/v2/token", data=form).json()
        assert token["token_type"] == "Bearer" and token["expires_in"] == 2592000
        assert uber.token_requests == 1

        order = make_order("order-1", "store-1", "eater-1")
        uber.add_order(order)
        notification = make_notification("order-1", "store-1", base_url=uber.url)
        bearer = {"Authorization": f"Bearer {token['access_token']}"}
        fetched = client.get(notification["resource_href"], params={"expand": "carts"}, headers=bearer)
        assert fetched.status_code == 200 and fetched.json()["eaters"][0]["id"] == "eater-1"
        assert client.get("/v2/eats/order/order-1").status_code == 401
        assert client.get("/v2/eats/order/missing", headers=bearer).json()["code"] == "not_found"
        uber.revoke_tokens()
        assert client.get("/v2/eats/order/order-1", headers=bearer).status_code == 401


def test_uber_token_rate_limit(http):
    with UberEatsEmulator(token_limit_per_hour=1) as uber:
        form = {"client_id": "uber-client", "client_secret": "uber-secret", "grant_type": "client_credentials"}
        assert http.post(f"{uber.url}/oauth/v2/token", data=form).status_code == 200
        assert http.post(f"{uber.url}/oauth/v2/token", data=form).status_code == 429


# -- Mews ----------------------------------------------------------------------------------

ENTERPRISE = "ent-1"
MEWS_AUTH = {"ClientToken": "mews-client", "AccessToken": "access-1", "Client": "bridge 1.0"}


def test_mews_get_customers_and_reservations(http):
    with MewsEmulator(access_tokens={ENTERPRISE: "access-1", "ent-2": "access-2"}) as mews:
        mews.add_customer(ENTERPRISE, make_customer("c1", Email="ann@example.com"))
        mews.add_customer(ENTERPRISE, make_customer("c2"))
        mews.add_customer("ent-2", make_customer("c3"))
        mews.add_reservation(ENTERPRISE, make_reservation("r1", "c1"))
        body = {**MEWS_AUTH, "CustomerIds": ["c1", "c2", "c3"], "Extent": {"Customers": True},
                "Limitation": {"Count": 1}}  # fmt: skip
        first = http.post(mews.url + CUSTOMERS_PATH, json=body).json()
        assert [c["Id"] for c in first["Customers"]] == ["c1"] and first["Cursor"] == "c1"
        assert first["Customers"][0]["Email"] == "ann@example.com" and first["Documents"] is None
        body["Limitation"] = {"Count": 10, "Cursor": "c1"}
        rest = http.post(mews.url + CUSTOMERS_PATH, json=body).json()
        assert [c["Id"] for c in rest["Customers"]] == ["c2"]  # c3 belongs to another enterprise
        assert mews.get_customers_calls == 2

        reservations = http.post(
            mews.url + RESERVATIONS_PATH, json={**MEWS_AUTH, "ReservationIds": ["r1"], "Limitation": {"Count": 10}}
        ).json()
        assert reservations["Reservations"][0]["AccountId"] == "c1"


@pytest.mark.parametrize(
    "change, status, message",
    [
        ({"ClientToken": "bad"}, 401, "Invalid ClientToken."),
        ({"AccessToken": "bad"}, 401, "Invalid AccessToken."),
        ({"Client": None}, 400, None),
        ({"Extent": None}, 400, None),
        ({"Limitation": {"Count": 1001}}, 400, None),
        ({"CustomerIds": None}, 400, None),
    ],
)
def test_mews_rejections(http, change, status, message):
    with MewsEmulator(access_tokens={ENTERPRISE: "access-1"}) as mews:
        body = {**MEWS_AUTH, "CustomerIds": ["c1"], "Extent": {"Customers": True}, "Limitation": {"Count": 1}}
        response = http.post(mews.url + CUSTOMERS_PATH, json={**body, **change})
        assert response.status_code == status
        if message:
            assert response.json() == {"Message": message}


def test_mews_helpers():
    webhook = make_webhook(ENTERPRISE, [("CustomerAdded", "c1"), ("CustomerUpdated", "c1")])
    assert webhook["Events"][1] == {"Discriminator": "CustomerUpdated", "Value": {"Id": "c1"}}
    assert make_customer("c9", Email=None)["Email"] is None
    assert make_customer("c9")["Options"] == ["SendMarketingEmails"]
    assert make_reservation("r1", "co-1", account_type="Company")["BookerId"] is None


# -- moto: queues, table, ESM stand-in -----------------------------------------------------


@pytest.fixture(scope="module")
def moto_endpoint():
    server, endpoint = aws.start_moto()
    yield endpoint
    aws.stop_moto(server)


def test_aws_env_and_identity_table(moto_endpoint):
    env = aws.aws_env(moto_endpoint)
    assert env["AWS_ENDPOINT_URL_SQS"] == moto_endpoint and env["AWS_DEFAULT_REGION"] == "eu-west-3"
    aws.create_identity_table(moto_endpoint, "identities")
    table = aws.client("dynamodb", moto_endpoint).describe_table(TableName="identities")["Table"]
    assert table["KeySchema"] == [{"AttributeName": "pk", "KeyType": "HASH"}]


def test_poller_deletes_acked_keeps_failed_until_dlq(moto_endpoint):
    queue_url, dlq_url = aws.create_queues(moto_endpoint, "retry-a", max_receive_count=1, visibility_timeout=1)
    attributes = aws.client("sqs", moto_endpoint).get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=["RedrivePolicy"]
    )["Attributes"]
    assert json.loads(attributes["RedrivePolicy"])["maxReceiveCount"] in (1, "1")
    sqs = aws.client("sqs", moto_endpoint)
    for i in range(3):
        sqs.send_message(
            QueueUrl=queue_url,
            MessageBody=json.dumps({"n": i}),
            MessageAttributes={"tenant": {"DataType": "String", "StringValue": "t1"}},
        )

    seen = []

    def handler(event):
        seen.extend(event["Records"])
        return {"batchItemFailures": [
            {"itemIdentifier": r["messageId"]} for r in event["Records"] if json.loads(r["body"])["n"] == 1
        ]}  # fmt: skip

    poller = aws.LambdaSqsPoller(queue_url, handler, endpoint_url=moto_endpoint)
    assert poller.drain(timeout=5) == 3
    assert (poller.deleted, poller.failed) == (2, 1)
    record = seen[0]
    assert record["eventSource"] == "aws:sqs" and record["eventSourceARN"].endswith(":retry-a")
    assert record["attributes"]["ApproximateReceiveCount"] == "1"
    assert record["messageAttributes"]["tenant"]["stringValue"] == "t1"
    assert aws.queue_depth(moto_endpoint, queue_url) == 1  # the failed one, in flight

    time.sleep(1.2)  # visibility timeout: its next receive moves it to the DLQ (maxReceiveCount=1)
    assert poller.poll_once() == 0
    assert aws.queue_messages(moto_endpoint, dlq_url) == [{"n": 1}]
    assert aws.queue_depth(moto_endpoint, queue_url) == 0


@pytest.mark.parametrize(
    "outcome",
    [RuntimeError("boom"), {"batchItemFailures": [{"itemIdentifier": "unknown-id"}]}, "not a dict"],
)
def test_poller_whole_batch_failure(moto_endpoint, outcome):
    queue_url, _ = aws.create_queues(moto_endpoint, f"retry-{uuid.uuid4().hex[:8]}", visibility_timeout=30)
    aws.client("sqs", moto_endpoint).send_message(QueueUrl=queue_url, MessageBody="{}")

    def handler(event):
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    poller = aws.LambdaSqsPoller(queue_url, handler, endpoint_url=moto_endpoint)
    assert poller.poll_once() == 1
    assert (poller.invocations, poller.deleted, poller.failed) == (1, 0, 1)
    assert poller.errors == ([outcome] if isinstance(outcome, Exception) else [])
    assert aws.queue_depth(moto_endpoint, queue_url) == 1


def test_poller_success_responses_delete_everything(moto_endpoint):
    queue_url, _ = aws.create_queues(moto_endpoint, "retry-ok")
    sqs = aws.client("sqs", moto_endpoint)
    for response in (None, {}, {"batchItemFailures": []}):
        sqs.send_message(QueueUrl=queue_url, MessageBody="{}")
        poller = aws.LambdaSqsPoller(queue_url, lambda event, r=response: r, batch_size=1, endpoint_url=moto_endpoint)
        assert poller.poll_once() == 1 and poller.deleted == 1
    assert aws.queue_depth(moto_endpoint, queue_url) == 0
