"""Issue 11, volume: a webhook of thousands of events is answered within the platform's wait with every event
imported or queued, a job never outgrows an SQS message, and no exception leaves a handler as a 500."""

from __future__ import annotations

import base64
import json
import os
import threading
import time
import urllib.request
import uuid
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from chalice.local import LambdaContext

from chalicelib.domain import retry_queue
from sandbox.aws import client, queue_depth
from sandbox.emulators.base import Fault
from tests.conftest import MEWS_ENTERPRISE, ROOT, fixture_json
from tests.test_mews import webhook

API_TIMEOUT_SECONDS = json.loads((ROOT / ".chalice" / "config.json").read_text())["stages"]["dev"]["lambda_timeout"]
MEWS_WAITS_SECONDS = 5.0  # Mews drops the connection after 5 s (docs/platforms.md, Mews)
SQS_LIMIT = 256 * 1024  # body and attributes; deploy/resources.yaml states it as MaximumMessageSize
EVENTS = 2000
PARTOUCHE_TOKEN = "partouche-url-token"


def mews_ids(count: int = EVENTS) -> list[str]:
    return [str(uuid.UUID(int=index + 1)) for index in range(count)]


def add_mews_guests(bridge, ids: list[str]) -> None:
    base = fixture_json("mews/customer.json")
    for index, customer_id in enumerate(ids):
        bridge.mews.add_customer(MEWS_ENTERPRISE, {**base, "Id": customer_id, "Email": f"guest{index}@example.org",
                                                   "Phone": None})


def big_mews_webhook(ids: list[str]) -> bytes:
    return json.dumps(webhook(*[("CustomerAdded", customer_id) for customer_id in ids])).encode()


def lambda_clock(bridge, monkeypatch, seconds: float) -> None:
    """Give the API function's next invocations a clock of ``seconds`` (chalice's local gateway builds one
    context per request from the stage's lambda_timeout)."""
    gateway = bridge.client.http._local_gateway
    monkeypatch.setattr(gateway, "_generate_lambda_context",
                        lambda: LambdaContext("api_handler", 512, max_runtime_ms=int(seconds * 1000)))


def sqs_messages(bridge, url: str) -> list[dict]:
    """Every message of a queue with its attributes, each received once then made visible again."""
    sqs = client("sqs", bridge.endpoint)
    seen: dict[str, dict] = {}
    while True:
        batch = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=30,
                                    MessageAttributeNames=["All"]).get("Messages", [])
        if not batch:
            break
        for message in batch:
            seen.setdefault(message["MessageId"], message)
    messages = list(seen.values())
    for start in range(0, len(messages), 10):
        sqs.change_message_visibility_batch(QueueUrl=url, Entries=[
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0}
            for i, m in enumerate(messages[start:start + 10])])
    return messages


def message_size(message: dict) -> int:
    """What SQS counts against MaximumMessageSize: the body's bytes and each attribute's name, type and value."""
    size = len(message["Body"].encode())
    for name, value in (message.get("MessageAttributes") or {}).items():
        size += len(name.encode()) + len(value["DataType"].encode()) + len(value.get("StringValue", "").encode())
    return size


def queued_events(messages: list[dict]) -> list[str]:
    """The event ids of the jobs on a queue, bundles opened."""
    ids = []
    for message in messages:
        parsed = retry_queue.parse_message(message["Body"])
        ids += [job.event_id for job in (parsed if isinstance(parsed, list) else [parsed])]
    return ids


def drain_as_lambda(bridge, seconds: float = 120.0) -> None:
    """The worker, invoked as Lambda would with its configured timeout, until the retry queue is empty."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        bridge.drain(timeout=max(1.0, deadline - time.monotonic()))
        if queue_depth(bridge.endpoint, bridge.retry_url) == 0:
            return
        time.sleep(0.2)


# -- finding 3: one webhook of many events ---------------------------------------------------------

def test_a_webhook_of_2000_events_while_mews_is_down_is_answered_in_time_with_every_event_queued(bridge, monkeypatch):
    """Mews' API answers 503 after 5 ms: the events tried within the (default) inline budget fail, the rest
    are not tried; all of them are queued, in a few messages, before Mews gives up waiting."""
    ids = mews_ids()
    add_mews_guests(bridge, ids)
    body = big_mews_webhook(ids)
    assert 150_000 < len(body) <= 256 * 1024
    bridge.configure(inline_budget_seconds=None)  # the default, as deployed
    lambda_clock(bridge, monkeypatch, API_TIMEOUT_SECONDS)
    bridge.mews.faults.always(Fault("status", status=503))
    bridge.mews.latency = 0.005

    started = time.monotonic()
    response = bridge.send_mews(body)
    elapsed = time.monotonic() - started

    assert response.status_code == 200, response.body
    assert elapsed < MEWS_WAITS_SECONDS and elapsed < API_TIMEOUT_SECONDS, f"answered after {elapsed:.1f} s"
    messages = sqs_messages(bridge, bridge.retry_url)
    assert sorted(queued_events(messages)) == sorted(f"{MEWS_ENTERPRISE}/CustomerAdded/{i}" for i in ids)
    assert len(messages) <= 10, f"{len(messages)} messages for {EVENTS} events: not sent together"
    assert all(message_size(message) <= SQS_LIMIT for message in messages)
    assert bridge.customers() == [] and bridge.dead_letters() == []

    tried = len(bridge.mews.requests_matching(path="/api/connector/v1/customers/getAll"))
    assert 0 < tried < EVENTS  # some were tried inline, the others left to the worker

    bridge.mews.faults.clear()
    bridge.mews.latency = 0
    drain_as_lambda(bridge)

    imported = [customer["mewsId"] for customer in bridge.customers()]
    assert sorted(imported) == sorted(ids)  # every event, each once
    assert queue_depth(bridge.endpoint, bridge.retry_url) == 0 and bridge.dead_letters() == []


def test_a_bundle_the_worker_cannot_finish_goes_back_to_the_queue_at_each_job_s_new_stage(bridge, monkeypatch):
    """The worker meets Fullwhere down: every job of the bundle moves on to its import stage and goes back to
    the queue, together; the guests are not fetched again once Fullwhere is back."""
    ids = mews_ids(500)  # a bundle all the same: more than one SendMessageBatch call of jobs
    add_mews_guests(bridge, ids)
    bridge.mews.faults.always(Fault("status", status=503))
    assert bridge.send_mews(big_mews_webhook(ids)).status_code == 200
    bridge.mews.faults.clear()
    bridge.fullwhere.faults.always(Fault("status", status=503))
    assert queue_depth(bridge.endpoint, bridge.retry_url) == 1  # one bundle

    assert bridge.poller.poll_once() == 1 and bridge.poller.failed == 0

    messages = sqs_messages(bridge, bridge.retry_url)
    jobs = [job for message in messages for job in retry_queue.parse_message(message["Body"])]
    assert len(messages) <= 10 and len(jobs) == len(ids)
    assert {job.stage for job in jobs} == {"import"} and {job.attempt for job in jobs} == {2}
    fetched = bridge.mews.get_customers_calls
    bridge.fullwhere.faults.clear()
    drain_as_lambda(bridge)
    assert sorted(customer["mewsId"] for customer in bridge.customers()) == sorted(ids)
    assert bridge.mews.get_customers_calls == fetched  # resumed at the import: not fetched again


def test_a_worker_short_of_time_puts_the_rest_of_a_bundle_back(bridge):
    """With 4 s to go and Fullwhere slow, the worker imports what it can and queues the rest again, in time."""
    from chalicelib.handlers.retry_worker import handle_batch

    ids = mews_ids(500)  # a bundle all the same: more than one SendMessageBatch call of jobs
    add_mews_guests(bridge, ids)
    bridge.mews.faults.always(Fault("status", status=503))
    assert bridge.send_mews(big_mews_webhook(ids)).status_code == 200
    bridge.mews.faults.clear()
    bridge.fullwhere.latency = 0.2

    sqs = client("sqs", bridge.endpoint)
    messages = sqs.receive_message(QueueUrl=bridge.retry_url, MaxNumberOfMessages=10, AttributeNames=["All"])["Messages"]
    event = {"Records": [{"messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
                          "attributes": m["Attributes"]} for m in messages]}
    given = 7.0  # of which the worker keeps 3 s in reserve
    started = time.monotonic()
    assert handle_batch(event, remaining_ms=lambda: (given - (time.monotonic() - started)) * 1000) == {"batchItemFailures": []}
    elapsed = time.monotonic() - started

    assert elapsed < given - 1, f"the worker took {elapsed:.1f} s of {given}"
    done = len(bridge.customers())
    assert 0 < done < len(ids)
    sqs.delete_message_batch(QueueUrl=bridge.retry_url, Entries=[
        {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)])  # as Lambda does
    assert len(queued_events(sqs_messages(bridge, bridge.retry_url))) == len(ids) - done
    bridge.fullwhere.latency = 0
    drain_as_lambda(bridge)
    assert sorted(customer["mewsId"] for customer in bridge.customers()) == sorted(ids)


class SlowProxy(ThreadingHTTPServer):
    """An SQS endpoint that answers late: each request is forwarded to moto after ``delay`` seconds. After
    :meth:`cut`, requests are dropped at once (so code that sends one message at a time ends quickly)."""

    daemon_threads = True

    def __init__(self, target: str, delay: float):
        self.target, self.delay, self.cut_off = target, delay, threading.Event()
        self.requests = 0
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def cut(self) -> None:
        self.cut_off.set()


class _ProxyHandler(BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass

    def do_POST(self) -> None:
        proxy: SlowProxy = self.server
        proxy.requests += 1
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if proxy.cut_off.wait(proxy.delay):
            self.close_connection = True
            return
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
        request = urllib.request.Request(proxy.target + self.path, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                status, answer_headers, content = answer.status, answer.headers.items(), answer.read()
        except urllib.error.HTTPError as error:
            status, answer_headers, content = error.code, error.headers.items(), error.read()
        self.send_response(status)
        for key, value in answer_headers:
            if key.lower() not in ("content-length", "transfer-encoding", "connection", "server", "date"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)


def test_too_little_time_to_queue_every_event_answers_503_before_the_lambda_ends(bridge, monkeypatch):
    """SQS answers in 4 s and the invocation has 3 s left: 503 (the platform delivers again) before Lambda
    would kill it; delivered again with time and a healthy SQS, every guest is imported once."""
    ids = mews_ids()
    add_mews_guests(bridge, ids)
    body = big_mews_webhook(ids)
    bridge.mews.faults.always(Fault("status", status=503))
    proxy = SlowProxy(bridge.endpoint, delay=4.0)
    bridge.configure(aws_endpoint_url_sqs=proxy.url)
    given = 3.0
    lambda_clock(bridge, monkeypatch, given)

    answer: dict = {}

    def deliver() -> None:
        started = time.monotonic()
        answer["response"] = bridge.send_mews(body)
        answer["elapsed"] = time.monotonic() - started

    delivery = threading.Thread(target=deliver)
    delivery.start()
    delivery.join(given + 2)
    proxy.cut()  # whatever still waits on SQS now fails fast, so a handler that missed its deadline ends too
    delivery.join(120)
    try:
        assert answer["response"].status_code == 503, answer["response"].body
        assert answer["elapsed"] < given, f"answered after {answer['elapsed']:.1f} s; Lambda gave {given} s"
        assert json.loads(answer["response"].body)["error"] == "unavailable"
    finally:
        proxy.shutdown()

    # The platform delivers again; this time SQS is healthy and the invocation has its full clock.
    bridge.configure(aws_endpoint_url_sqs=bridge.endpoint)
    lambda_clock(bridge, monkeypatch, API_TIMEOUT_SECONDS)
    assert bridge.send_mews(body).status_code == 200
    bridge.mews.faults.clear()
    drain_as_lambda(bridge)
    assert sorted(customer["mewsId"] for customer in bridge.customers()) == sorted(ids)


def test_thousands_of_unrouted_events_are_held_on_the_retry_queue_in_time(bridge, tmp_path, monkeypatch):
    """An enterprise no tenant owns yet: 2,000 events held on the retry queue (a tenant may list it tomorrow),
    sent together, answered in time, none lost, none dead-lettered."""
    tenants = tmp_path / "tenants.json"
    tenants.write_text(json.dumps({"tenants": [{
        "id": "hotel", "fullwhere_api_key": "test-key", "fullwhere_api_secret": "test-secret",
        "platforms": {"mews": {"accounts": {"another-enterprise": {"access_token": "x"}}}}}]}))
    bridge.configure(tenants_file=tenants)
    ids = mews_ids()
    lambda_clock(bridge, monkeypatch, API_TIMEOUT_SECONDS)

    started = time.monotonic()
    response = bridge.send_mews(big_mews_webhook(ids))
    elapsed = time.monotonic() - started

    assert response.status_code == 200 and elapsed < MEWS_WAITS_SECONDS, f"{response.status_code} after {elapsed:.1f} s"
    assert queue_depth(bridge.endpoint, bridge.dlq_url) == 0
    messages = sqs_messages(bridge, bridge.retry_url)
    assert len(messages) <= 10 and all(message_size(message) <= SQS_LIMIT for message in messages)
    parsed = [retry_queue.parse_message(message["Body"]) for message in messages]
    jobs = [job for jobs in parsed for job in (jobs if isinstance(jobs, list) else [jobs])]
    assert {job.tenant for job in jobs} == {None}  # routed again by its enterprise on every attempt
    assert sorted(queued_events(messages)) == sorted(f"{MEWS_ENTERPRISE}/CustomerAdded/{i}" for i in ids)


def test_the_most_events_a_body_can_hold_are_answered_in_time_every_one_queued(partouche, monkeypatch):
    """A declarative body of 256 KiB holds some 11,400 guests. Fullwhere is down: those tried inline fail, the
    others are not tried, and every one of them is queued before Mews' 5 s (the tightest platform wait)."""
    each = len(json.dumps({"player_id": 100_000})) + 2  # six-digit ids, and ", " between them
    players = [{"player_id": 100_000 + index} for index in range((256 * 1024 - 20) // each)]
    body = json.dumps({"customers": players}).encode()
    assert 256 * 1024 - each < len(body) <= 256 * 1024
    partouche.configure(inline_budget_seconds=None)
    lambda_clock(partouche, monkeypatch, API_TIMEOUT_SECONDS)
    partouche.fullwhere.faults.always(Fault("status", status=503))
    proxy = SlowProxy(partouche.endpoint, delay=0)  # SQS as it is, until cut (for code that sends one by one)
    partouche.configure(aws_endpoint_url_sqs=proxy.url)

    answer: dict = {}

    def deliver() -> None:
        started = time.monotonic()
        answer["response"] = partouche.post("partouche", body, query=f"token={PARTOUCHE_TOKEN}")
        answer["elapsed"] = time.monotonic() - started

    delivery = threading.Thread(target=deliver)
    delivery.start()
    delivery.join(MEWS_WAITS_SECONDS + 5)
    proxy.cut()
    delivery.join(300)
    proxy.shutdown()
    assert answer["response"].status_code == 200, answer["response"].body
    assert answer["elapsed"] < MEWS_WAITS_SECONDS, f"answered after {answer['elapsed']:.1f} s"
    messages = sqs_messages(partouche, partouche.retry_url)
    assert len(messages) <= 10 and all(message_size(message) <= SQS_LIMIT for message in messages)
    queued = [job for message in messages for job in retry_queue.parse_message(message["Body"])]
    assert sorted(int(job.event["data"]["player_id"]) for job in queued) == [p["player_id"] for p in players]


# -- finding 4: a job never outgrows an SQS message -------------------------------------------------

@pytest.fixture
def partouche(bridge, tmp_path):
    """A declarative source without a fetch (the guest is in the body), and one whose fetch is unreachable."""
    path = tmp_path / "sources.json"
    path.write_text(json.dumps({"sources": [
        {"name": "partouche", "preset": "partouche", "auth": {"type": "token", "query": "token", "secret": PARTOUCHE_TOKEN}},
        {"name": "casino", "preset": "partouche", "auth": {"type": "token", "query": "token", "secret": PARTOUCHE_TOKEN},
         "fetch": {"url": "http://127.0.0.1:9/players/{id}", "id": "customer_id || player_id"}},
    ]}))
    bridge.configure(sources_file=path)
    return bridge


def declarative_body(player_id: int, filler: str, size: int = 262_110) -> bytes:
    """A customer event of exactly ``size`` bytes, most of it in ``filler`` (repeated and cut to fit)."""
    customer = {"event_id": f"evt-{player_id}", "player_id": player_id, "email": f"player{player_id}@example.org",
                "optin_email": True, "notes": ""}
    empty = len(json.dumps({"event": "customer.created", "casino_id": "forges-les-eaux", "customer": customer}).encode())
    customer["notes"] = (filler * (size // len(filler) + 1))[:size - empty]
    body = json.dumps({"event": "customer.created", "casino_id": "forges-les-eaux", "customer": customer}).encode()
    assert len(body) == size
    return body


def visits(count: int = 40) -> str:
    """Text like a guest's history: repetitive, as real data is."""
    return "".join(f"visit {day:03d}: table {day % 17}, 2 covers, slot machines; " for day in range(count))


def incompressible(length: int = 300_000) -> str:
    return base64.b64encode(os.urandom(length)).decode()


def test_a_job_from_a_262_kb_declarative_body_fits_an_sqs_message_and_is_imported(partouche):
    body = declarative_body(7001, visits())
    partouche.fullwhere.faults.always(Fault("status", status=503))

    assert partouche.post("partouche", body, query=f"token={PARTOUCHE_TOKEN}").status_code == 200

    [message] = sqs_messages(partouche, partouche.retry_url)
    assert message_size(message) <= SQS_LIMIT, f"{message_size(message)} bytes on the queue"
    job = retry_queue.parse_job(message["Body"])
    assert job.stage == "import" and job.dropped is None  # nothing left out: only packed
    assert len(json.dumps(job.event["data"]).encode()) > SQS_LIMIT - 2000  # the whole event travelled

    partouche.fullwhere.faults.clear()
    drain_as_lambda(partouche)
    [customer] = partouche.customers()
    assert customer["partoucheId"] == "7001"
    assert partouche.dead_letters() == []


def test_an_incompressible_body_keeps_what_the_import_needs_and_is_imported(partouche):
    body = declarative_body(7002, incompressible())
    partouche.fullwhere.faults.always(Fault("status", status=503))

    assert partouche.post("partouche", body, query=f"token={PARTOUCHE_TOKEN}").status_code == 200

    [message] = sqs_messages(partouche, partouche.retry_url)
    assert message_size(message) <= SQS_LIMIT
    job = retry_queue.parse_job(message["Body"])
    assert job.stage == "import" and job.dropped == "data"  # no stage after fetch reads the event's data
    assert job.payload["customer"]["partoucheId"] == "7002"

    partouche.fullwhere.faults.clear()
    drain_as_lambda(partouche)
    assert [customer["partoucheId"] for customer in partouche.customers()] == ["7002"]


def test_a_job_that_cannot_fit_at_all_is_dead_lettered_with_its_reason(partouche):
    """The guest must still be fetched (its API is down), and the event cannot be compressed below the limit:
    it is dead-lettered with a reason, its identity kept, and the letter fits too. Never silently dropped."""
    body = declarative_body(7003, incompressible())

    assert partouche.post("casino", body, query=f"token={PARTOUCHE_TOKEN}").status_code == 200

    assert queue_depth(partouche.endpoint, partouche.retry_url) == 0
    [message] = sqs_messages(partouche, partouche.dlq_url)
    assert message_size(message) <= SQS_LIMIT
    letter = json.loads(message["Body"])
    assert letter["kind"] == "permanent" and letter["reason"].startswith("too large for a queue message")
    assert letter["job"]["dropped"] == "all" and letter["job"]["platform"] == "casino"
    assert letter["job"]["event_id"] == letter["job"]["event"]["event_id"] == "evt-7003"

    # Redriven by mistake, it goes straight back to the dead-letter queue: there is nothing left to run.
    sqs = client("sqs", partouche.endpoint)
    sqs.send_message(QueueUrl=partouche.retry_url, MessageBody=message["Body"])
    sqs.delete_message(QueueUrl=partouche.dlq_url, ReceiptHandle=message["ReceiptHandle"])
    drain_as_lambda(partouche, 30)
    [again] = partouche.dead_letters()
    assert again["kind"] == "permanent" and "only the event's identity was kept" in again["reason"]


def test_a_poisoned_message_of_256_kib_is_dead_lettered_within_the_limit(bridge):
    sqs = client("sqs", bridge.endpoint)
    raw = '"' * 200_000  # escaped in JSON, each quote doubles: the letter would be twice the limit
    sqs.send_message(QueueUrl=bridge.retry_url, MessageBody=raw)
    bridge.drain()
    [message] = sqs_messages(bridge, bridge.dlq_url)
    assert message_size(message) <= SQS_LIMIT
    letter = json.loads(message["Body"])
    assert letter["kind"] == "poisoned"
    assert zlib.decompress(base64.b64decode(letter["raw_packed"])).decode() == raw  # kept whole, compressed


# -- finding 2 (handlers): never a 500 ---------------------------------------------------------------

SECRET_IN_PAYLOAD = "guest-notes-7c1f"  # stands for anything a payload holds


def test_an_unexpected_exception_parsing_answers_503_with_no_payload_in_the_logs(bridge, monkeypatch, capsys):
    from chalicelib.connectors.mews import MewsConnector

    def broken_parse(self, request):
        raise ValueError(f"cannot read {request.body.decode()}")

    monkeypatch.setattr(MewsConnector, "parse", broken_parse)
    body = {**webhook(("CustomerAdded", "c-1")), "Notes": SECRET_IN_PAYLOAD}
    response = bridge.send_mews(body)

    assert response.status_code == 503, response.body
    assert json.loads(response.body)["error"] == "unavailable"
    out = capsys.readouterr().out
    lines = [json.loads(text) for text in out.splitlines() if text.startswith("{")]
    [line] = [line for line in lines if line.get("outcome") == "failed" and "_aws" not in line]
    assert line["exception"] == "ValueError" and line["status"] == 503
    assert SECRET_IN_PAYLOAD not in out and "cannot read" not in out


def test_an_unexpected_exception_after_acceptance_answers_503_with_no_payload_in_the_logs(bridge, monkeypatch, capsys):
    from chalicelib.domain.tenants import TenantDirectory

    def broken_route(self, platform, account_id):
        raise KeyError(f"no route for {SECRET_IN_PAYLOAD}")

    monkeypatch.setattr(TenantDirectory, "route", broken_route)
    response = bridge.send_mews(webhook(("CustomerAdded", "c-1")))

    assert response.status_code == 503, response.body
    out = capsys.readouterr().out
    assert '"exception": "KeyError"' in out and SECRET_IN_PAYLOAD not in out


def test_an_unexpected_exception_in_a_handshake_answers_503(bridge, monkeypatch, capsys):
    from chalicelib.connectors.mews import MewsConnector

    def broken_handshake(self, request):
        raise RuntimeError(SECRET_IN_PAYLOAD)

    monkeypatch.setattr(MewsConnector, "handshake", broken_handshake)
    response = bridge.client.http.get("/webhooks/mews?Token=x")

    assert response.status_code == 503
    out = capsys.readouterr().out
    assert '"exception": "RuntimeError"' in out and SECRET_IN_PAYLOAD not in out


def test_a_worker_that_cannot_start_hands_every_record_back(bridge, monkeypatch, capsys):
    from chalicelib.handlers import retry_worker

    def broken_settings():
        raise RuntimeError(SECRET_IN_PAYLOAD)

    monkeypatch.setattr(retry_worker, "get_settings", broken_settings)
    event = {"Records": [{"messageId": "m-1", "body": "{}"}, {"messageId": "m-2", "body": "{}"}]}

    assert bridge.invoke_worker(event) == {"batchItemFailures": [{"itemIdentifier": "m-1"}, {"itemIdentifier": "m-2"}]}
    assert SECRET_IN_PAYLOAD not in capsys.readouterr().out
