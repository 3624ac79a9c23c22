"""Structured logs and CloudWatch metrics (Embedded Metric Format): what each line carries, what never
appears in one, and the metrics counted from them, written once per invocation."""

from __future__ import annotations

import io
import json

import pytest

from chalicelib.infra import logs, metrics
from sandbox.emulators.base import Fault
from tests.conftest import FULLWHERE_SECRET, MEWS_ENTERPRISE, fixture_bytes, fixture_json
from tests.support.log_leaks import bridge_log_lines, find_leaks, fixture_personal_data

EVENT_OUTCOMES = {"imported", "merged", "duplicate", "skipped", "queued", "retried", "dead_lettered"}
REQUEST_OUTCOMES = {"received", "verified", "acknowledged", "rejected", "ignored"}


def lines_of(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def outcome_lines(output: str) -> list[dict]:
    return [line for line in lines_of(output) if "outcome" in line and "_aws" not in line]


def emf_lines(output: str) -> list[dict]:
    return [line for line in lines_of(output) if "_aws" in line]


@pytest.fixture
def mews_guest(bridge):
    bridge.mews.add_customer(MEWS_ENTERPRISE, fixture_json("mews/customer.json"))
    return {"EnterpriseId": MEWS_ENTERPRISE, "Events": [
        {"Discriminator": "CustomerAdded", "Value": {"Id": "c2f1d888-232e-49eb-87ac-5f75363af13b"}}]}


def test_every_outcome_line_names_its_platform_tenant_event_attempt_and_latency(bridge, mews_guest, capsys):
    bridge.fullwhere.faults.add(Fault("status", status=503), times=2)  # inline fails, first retry fails
    assert bridge.send_mews(mews_guest).status_code == 200
    bridge.drain()
    assert bridge.send_mews(mews_guest).status_code == 200  # same email: Fullwhere merges (200, not 201)
    bridge.fullwhere.faults.always(Fault("status", status=400, body='{"message": "no"}'))
    assert bridge.send_deliveroo(fixture_bytes("deliveroo/order_new_loyalty.json")).status_code == 200
    assert bridge.send_deliveroo({"event": "rider.status_update"}).status_code == 200
    assert bridge.send_mews(mews_guest, token="forged").status_code == 401

    lines = outcome_lines(capsys.readouterr().out)
    seen = {line["outcome"] for line in lines}
    assert {"received", "verified", "queued", "retried", "imported", "merged", "dead_lettered", "acknowledged",
            "ignored", "rejected"} <= seen
    for line in lines:
        assert line["platform"] in ("mews", "deliveroo") and isinstance(line["latency_ms"], float), line
        if line["outcome"] in EVENT_OUTCOMES:
            assert line["tenant"] == "default" and line["event_id"] and line["attempt"] >= 1, line
    attempts = [line["attempt"] for line in lines if line["platform"] == "mews" and line["outcome"] in EVENT_OUTCOMES]
    assert attempts[0] == 1 and max(attempts) > 1  # queued inline, then retried and imported by the worker
    worker_lines = [line for line in lines if "message_id" in line]
    assert worker_lines and all(line["outcome"] in EVENT_OUTCOMES for line in worker_lines)


def test_a_line_written_deep_in_the_pipeline_still_says_which_event_it_is_about(bridge, mews_guest, capsys,
                                                                              monkeypatch):
    from chalicelib.connectors.mews import MewsConnector

    def broken_map(self, guest, event, context):
        raise KeyError("a payload shape nobody anticipated")

    monkeypatch.setattr(MewsConnector, "map", broken_map)
    assert bridge.send_mews(mews_guest).status_code == 200
    [failure] = [line for line in outcome_lines(capsys.readouterr().out) if line["outcome"] == "failed"]
    assert failure["message"] == "unexpected error in pipeline" and failure["exception"] == "KeyError"
    assert failure["platform"] == "mews" and failure["tenant"] == "default" and failure["attempt"] == 1
    assert failure["event_id"].endswith("c2f1d888-232e-49eb-87ac-5f75363af13b")
    assert "payload shape" not in json.dumps(failure)  # exception messages can quote payloads: never logged


def test_metrics_are_written_once_per_invocation_and_count_what_the_logs_say(bridge, mews_guest, capsys):
    assert bridge.send_mews(mews_guest).status_code == 200
    output = capsys.readouterr().out
    assert metrics.pending() == {}  # flushed when the webhook returned
    emitted = {(line["platform"], line["outcome"]): line["Events"] for line in emf_lines(output)}
    logged: dict[tuple[str, str], int] = {}
    for line in outcome_lines(output):
        logged[(line["platform"], line["outcome"])] = logged.get((line["platform"], line["outcome"]), 0) + 1
    assert emitted == logged == {("mews", "received"): 1, ("mews", "verified"): 1, ("mews", "imported"): 1,
                                 ("mews", "acknowledged"): 1}
    # the EMF lines come after the invocation's log lines, all together
    kinds = ["emf" if "_aws" in line else "log" for line in lines_of(output)]
    assert kinds == ["log"] * 4 + ["emf"] * 4


def test_counting_a_built_in_platform_loads_no_declarative_source(bridge, mews_guest, monkeypatch):
    """Bounding the platform dimension must not cost a cold start the sources document (or its secret)."""
    from chalicelib import connectors
    from chalicelib.domain import sources

    loads = []
    monkeypatch.setattr(connectors, "_declarative_cache", None)
    monkeypatch.setattr(sources, "get_sources", lambda: loads.append(1) or {})
    assert bridge.send_mews(mews_guest).status_code == 200
    assert loads == []


def test_emf_document_follows_the_specification():
    [document] = metrics.documents("mews", "imported", 3, [12.04, 40.0, 33.3])
    directive = document["_aws"]["CloudWatchMetrics"][0]
    assert directive["Namespace"] == "FullwhereBridge"
    assert directive["Dimensions"] == [["platform", "outcome"], ["outcome"]]
    assert {metric["Name"]: metric["Unit"] for metric in directive["Metrics"]} == {"Events": "Count",
                                                                                   "Latency": "Milliseconds"}
    assert isinstance(document["_aws"]["Timestamp"], int)
    # every dimension and metric named in the directive is a member of the root
    assert document["platform"] == "mews" and document["outcome"] == "imported"
    assert document["Events"] == 3 and document["Latency"] == [12.0, 40.0, 33.3]


def test_emf_document_with_a_reason_names_it_in_a_dimension_set_and_the_root():
    [document] = metrics.documents("deliveroo", "skipped", 2, [1.0, 2.0], reason="no_identity")
    directive = document["_aws"]["CloudWatchMetrics"][0]
    assert directive["Dimensions"] == [["platform", "outcome", "reason"], ["platform", "outcome"], ["outcome"]]
    assert (document["platform"], document["outcome"], document["reason"]) == ("deliveroo", "skipped", "no_identity")


def test_more_than_100_latencies_are_split_across_documents():
    documents = metrics.documents("zelty", "imported", 250, [float(i) for i in range(250)])
    assert [len(document.get("Latency", [])) for document in documents] == [100, 100, 50]
    assert [document.get("Events") for document in documents] == [250, None, None]


def test_an_unknown_platform_is_counted_as_unknown(bridge):
    response = bridge.post("no-such-platform-" + "x" * 30, b"{}")
    assert response.status_code == 404
    stream = io.StringIO()
    metrics.record("rejected", "another-made-up-platform")
    metrics.flush(stream)
    [document] = lines_of(stream.getvalue())
    assert document["platform"] == "unknown"


def test_flush_with_nothing_counted_writes_nothing():
    metrics.flush(io.StringIO())
    stream = io.StringIO()
    assert metrics.flush(stream) == 0 and stream.getvalue() == ""


def test_every_string_field_is_scrubbed_and_bounded(capsys):
    logs.log("ignored", platform="zelty", event_type="call jane.doe@example.com on +33 6 12 34 56 78",
             event_id="order-for-jane.doe@example.com", account_id="x" * 5000)
    [line] = outcome_lines(capsys.readouterr().out)
    assert "jane.doe@example.com" not in json.dumps(line) and "12 34 56" not in line["event_type"]
    assert line["event_id"] == "o***@e***.com"
    assert len(line["account_id"]) == logs.MAX_FIELD_LENGTH + 1
    metrics.flush(io.StringIO())


def test_log_context_fields_and_latency_reach_every_line_inside(capsys):
    with logs.log_context(platform="meta", tenant="t1", event_id="lead-1", attempt=2):
        logs.bind(message_id="m-1")
        logs.log("retried", reason="Meta Graph API answered 503")
        logs.log("imported", latency_ms=5.0, tenant="t2")
    logs.log("received", platform="meta")
    retried, imported, received = outcome_lines(capsys.readouterr().out)
    assert {key: retried[key] for key in ("platform", "tenant", "event_id", "attempt", "message_id")} == {
        "platform": "meta", "tenant": "t1", "event_id": "lead-1", "attempt": 2, "message_id": "m-1"}
    assert isinstance(retried["latency_ms"], float)
    assert imported["latency_ms"] == 5.0 and imported["tenant"] == "t2"  # a line's own fields win
    assert "event_id" not in received and "latency_ms" not in received  # outside: nothing inherited
    metrics.flush(io.StringIO())


def test_the_leak_scan_finds_what_it_must_and_nothing_else():
    personal = fixture_personal_data()
    assert {"jsnow@srdemo.com", "Arya.Stark@srdemo.com", "Durand", "+12125557056", "2125557056"} <= personal
    lines = bridge_log_lines("\n".join([
        json.dumps({"ts": 1712345678.123, "outcome": "imported", "platform": "mews", "email": "j***@s***.com"}),
        '{"_aws": {"Timestamp": 1}, "platform": "mews", "outcome": "imported", "Events": 1}',
        "not a log line jsnow@srdemo.com",
    ]))
    assert find_leaks(lines, personal | {FULLWHERE_SECRET}) == []
    leaky = bridge_log_lines("\n".join([
        json.dumps({"outcome": "failed", "reason": "Fullwhere said 2125557056 is taken"}),
        json.dumps({"outcome": "failed", "reason": f"key {FULLWHERE_SECRET}"}),
        json.dumps({"outcome": "failed", "reason": "guest7@zelty.sandbox.example"}),
    ]))
    assert find_leaks(leaky, personal | {FULLWHERE_SECRET}) == [
        "2125557056", "test-secret", "unmasked email guest7@zelty.sandbox.example"]


# -- why guests were not imported: the reason dimension ----------------------------------------

def test_a_skipped_guest_is_counted_with_its_reason(bridge, capsys):
    """A Deliveroo diner without a loyalty card has no identity: the metric says so, per platform."""
    assert bridge.send_deliveroo(fixture_bytes("deliveroo/order_new.json")).status_code == 200
    assert bridge.send_deliveroo({"event": "rider.status_update"}).status_code == 200
    output = capsys.readouterr().out
    [skipped] = [line for line in emf_lines(output) if line["outcome"] == "skipped"]
    assert (skipped["platform"], skipped["reason"], skipped["Events"]) == ("deliveroo", "no_identity", 1)
    assert skipped["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [
        ["platform", "outcome", "reason"], ["platform", "outcome"], ["outcome"]]
    [ignored] = [line for line in emf_lines(output) if line["outcome"] == "ignored"]
    assert ignored["reason"] == "event_not_imported"  # the handler's sentence, counted as its bounded value
    # other outcomes keep their two dimension sets and no reason
    assert all("reason" not in line for line in emf_lines(output) if line["outcome"] not in ("skipped", "ignored"))
    # the counts still add up to the log lines, per platform and outcome
    emitted: dict[tuple[str, str], int] = {}
    for line in emf_lines(output):
        emitted[(line["platform"], line["outcome"])] = emitted.get((line["platform"], line["outcome"]), 0) + line["Events"]
    logged: dict[tuple[str, str], int] = {}
    for line in outcome_lines(output):
        logged[(line["platform"], line["outcome"])] = logged.get((line["platform"], line["outcome"]), 0) + 1
    assert emitted == logged


def test_an_unknown_reason_is_counted_as_other():
    """A reason may be free text (an error, a payload's words): it must not create metrics at will."""
    stream = io.StringIO()
    metrics.record("skipped", "zelty", 3.0, reason="guest jane.doe@example.com was odd")
    metrics.record("skipped", "zelty", 4.0, reason="yet another made-up reason")
    metrics.record("skipped", "zelty", 5.0, reason="no_identity")
    metrics.record("skipped", "zelty", 6.0)
    metrics.record("imported", "zelty", 7.0, reason="no_identity")  # not a reasoned outcome
    metrics.flush(stream, platforms=("zelty",))
    counted = {(line["outcome"], line.get("reason")): line["Events"] for line in lines_of(stream.getvalue())}
    assert counted == {("skipped", "other"): 3, ("skipped", "no_identity"): 1, ("imported", None): 1}
    assert "jane" not in stream.getvalue()


def test_every_skip_reason_the_code_gives_is_a_known_dimension_value():
    """A new skip reason counted as "other" would hide it from the restaurant: add it to metrics.REASONS."""
    import pathlib
    import re

    root = pathlib.Path(metrics.__file__).parents[1]
    given = {match.group(2) for path in root.rglob("*.py")
             for match in re.finditer(r'Outcome\(\s*"(skipped|ignored)",\s*"([^"]+)"', path.read_text())}
    assert "no_identity" in given  # the scan finds what it must
    assert sorted(reason for reason in given if metrics.reason_dimension("skipped", reason) == metrics.OTHER) == []


# -- following one invocation: request_id and cold_start -----------------------------------------

def invocation_fields(lines: list[dict]) -> set[tuple]:
    return {(line.get("request_id"), line.get("cold_start")) for line in lines}


def test_every_line_of_a_webhook_carries_its_request_id_and_a_warm_start_after_the_first(bridge, mews_guest, capsys):
    assert bridge.send_mews(mews_guest).status_code == 200
    first = outcome_lines(capsys.readouterr().out)
    assert bridge.send_mews(mews_guest, token="forged").status_code == 401
    second = outcome_lines(capsys.readouterr().out)

    assert {line["outcome"] for line in first} >= {"received", "verified", "imported", "acknowledged"}
    [(first_id, _)] = invocation_fields(first)  # one request id on every line (and one cold_start flag)
    [(second_id, cold_start)] = invocation_fields(second)
    assert first_id and second_id and first_id != second_id
    assert cold_start is False  # a process's second invocation at least


def test_the_worker_lines_of_each_record_carry_the_worker_invocation_s_request_id(bridge, mews_guest, capsys):
    """The records of a batch are handled in threads of their own, which do not inherit context variables."""
    from chalice.local import LambdaContext

    from app import app
    from sandbox import aws as local_aws

    bridge.fullwhere.faults.always(Fault("status", status=503))
    for _ in range(2):
        assert bridge.send_mews(mews_guest).status_code == 200
    bridge.fullwhere.faults.reset()
    webhook_ids = {line["request_id"] for line in outcome_lines(capsys.readouterr().out)}
    contexts, batches = [], []

    def invoke(event: dict):
        contexts.append(LambdaContext("retry_worker", memory_size=512, max_runtime_ms=60_000))
        batches.append(len(event["Records"]))
        return app.handler_map["retry_worker"](event, contexts[-1])

    assert local_aws.LambdaSqsPoller(bridge.retry_url, invoke, endpoint_url=bridge.endpoint).poll_once() == 2
    lines = outcome_lines(capsys.readouterr().out)
    assert batches == [2]  # one batch of two records: two threads
    record_lines = [line for line in lines if "message_id" in line]
    assert len({line["message_id"] for line in record_lines}) == 2
    assert {line["outcome"] for line in record_lines} >= {"imported"}
    assert invocation_fields(lines) == {(contexts[0].aws_request_id, False)}
    assert contexts[0].aws_request_id not in webhook_ids


def test_the_scheduled_pull_s_lines_carry_its_request_id(bridge, capsys):
    from chalice.local import LambdaContext

    from app import app

    bridge.configure(oracle_hotel_ids="HOTEL1")  # no OHIP credentials: the pull says so, and what it did
    context = LambdaContext("oracle_pull", memory_size=512, max_runtime_ms=60_000)
    event = bridge.client.events.generate_cw_event("aws.events", "Scheduled Event", {}, [], region="eu-west-3")
    app.handler_map["oracle_pull"](event, context)
    lines = outcome_lines(capsys.readouterr().out)
    assert [line["outcome"] for line in lines] == ["failed", "pull_finished"]
    assert invocation_fields(lines) == {(context.aws_request_id, False)}


def test_only_the_first_invocation_of_a_process_is_a_cold_start():
    """In a process of its own, as a new Lambda container: its first invocation, then two more."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = ("from app import app\nfrom chalice.test import Client\nwith Client(app) as client:\n"
              "    for _ in range(3):\n        client.http.get('/health')\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True,
                            cwd=Path(__file__).parent.parent, env={"PATH": os.environ["PATH"]})
    lines = [line for line in outcome_lines(result.stdout) if line["outcome"] == "health"]
    assert [line["cold_start"] for line in lines] == [True, False, False]
    assert len({line["request_id"] for line in lines}) == 3


def test_lines_outside_an_invocation_carry_none_of_its_fields(capsys):
    with logs.invocation(request_id="12345678-1234-4abc-8def-123456789012", cold_start=True):
        logs.log("received", platform="meta")
    logs.log("received", platform="meta")
    inside, outside = outcome_lines(capsys.readouterr().out)
    assert (inside["request_id"], inside["cold_start"]) == ("12345678-1234-4abc-8def-123456789012", True)  # not a phone
    assert "request_id" not in outside and "cold_start" not in outside
    metrics.flush(io.StringIO())
