"""Issue 16, shown: what the platforms gave up delivering while the bridge was down is recovered by the next sweep.

The bridge runs on the sandbox (Chalice's test client; the Mews, Meta Graph, TheFork, Deliveroo and Fullwhere
emulators over loopback HTTP; moto's SQS and DynamoDB). A bad deploy (its tenants document unreadable) makes every
webhook answer 503 for a while; guests are created on the four platforms meanwhile, and each platform re-sends
their webhooks until it gives up. Other guests arrive by webhook before and after. The next sweep imports every
missed guest exactly once, counted ``recovered``; the webhook's guests cost it no Fullwhere call; and a second
sweep over the same window changes nothing. The table of how long each platform retries and how far back each
sweep reaches: docs/reliability.md, "Recovering what a platform gave up (issue 16)".
"""

from __future__ import annotations

import json
import os
import re
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml
from chalice.local import LambdaContext

from sandbox import aws as local_aws
from sandbox import platforms
from sandbox.platforms import Sample
from tests.support.sandbox_bridge import sandbox_bridge

ROOT = Path(__file__).parent.parent
SWEPT = ("mews", "meta", "thefork", "deliveroo")
# How many times each platform sends a webhook the bridge refuses before it drops it. The counts stand for the
# policies of docs/reliability.md (Mews "after a few minutes ... repeated attempts", Meta over 36 hours, TheFork
# unpublished, Deliveroo for 6 minutes); what matters is that every send is refused and none comes after.
SENDS = {"mews": 3, "meta": 6, "thefork": 2, "deliveroo": 4}


@pytest.fixture
def stack(sandbox, moto_endpoint, monkeypatch):
    from chalicelib.connectors import deliveroo

    deliveroo._calls.clear()  # Deliveroo's 5 list calls a minute are counted per process: not other tests' calls
    with sandbox_bridge(sandbox, moto_endpoint, monkeypatch, "recovery") as bridge:
        # No settle time: the guests are created seconds before the sweep (in AWS it leaves the last 5 minutes to
        # the webhooks still coming; tests/test_sweeps.py shows it).
        bridge.configure(SWEEP_SETTLE_SECONDS="0")
        yield bridge
    deliveroo._calls.clear()


def run_sweeps() -> dict:
    """One invocation of the scheduled ``sweeps`` Lambda, as EventBridge starts it (its metrics are flushed)."""
    from app import app

    event = {"version": "0", "id": "recovery", "detail-type": "Scheduled Event", "source": "aws.events",
             "account": "123456789012", "time": "2026-12-01T00:00:00Z", "region": "eu-west-3", "resources": [],
             "detail": {}}
    return app.handler_map["sweeps"](event, LambdaContext("sweeps", memory_size=512, max_runtime_ms=120_000))


def table() -> str:
    return os.environ["IDENTITY_TABLE"]


def cursors(stack) -> dict[str, dict]:
    """Every sweep cursor of the test's table, by platform."""
    items = local_aws.client("dynamodb", stack.endpoint).scan(TableName=table())["Items"]
    return {item["pk"]["S"].split("#")[2]: item for item in items if item["pk"]["S"].startswith("sweep#")}


def rewind(stack, to: dict[str, dict] | None = None) -> None:
    """As if every account's SWEEP_MINUTES had passed (the test does not wait 15 minutes); ``to``: the cursors
    set back where they were then (the same window swept again)."""
    client = local_aws.client("dynamodb", stack.endpoint)
    for platform, item in cursors(stack).items():
        values = {":old": {"N": "0"}}
        expression = "SET last_run = :old"
        if to is not None:
            expression += ", swept_until = :until"
            values[":until"] = to[platform]["swept_until"]
        client.update_item(TableName=table(), Key={"pk": item["pk"]}, UpdateExpression=expression,
                           ExpressionAttributeValues=values)


def lines(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{") and '"_aws"' not in line]


def emf(output: str) -> Counter:
    """The ``Events`` count per (platform, outcome) of the EMF lines printed."""
    counts: Counter = Counter()
    for raw in output.splitlines():
        if raw.startswith("{") and '"_aws"' in raw:
            line = json.loads(raw)
            if "Events" in line:
                counts[(line["platform"], line["outcome"])] += line["Events"]
    return counts


def imports(stack) -> int:
    """Import calls Fullwhere received (``POST /partners/customer``)."""
    return len([r for r in stack.sandbox.fullwhere.requests if r.method == "POST" and r.path == "/partners/customer"])


def in_fullwhere(stack, sample: Sample, n: int) -> int:
    """How many Fullwhere customers are guest ``n`` of ``sample``'s platform."""
    return [customer.get(sample.id_field) for customer in stack.customers()].count(sample.guest_id(n))


def test_guests_created_while_every_webhook_was_refused_are_recovered_once_by_the_next_sweep(stack, monkeypatch,
                                                                                             tmp_path, capsys):
    samples = {name: platforms.module(name).SAMPLE for name in SWEPT}

    # Sweeps were on before: each account has a cursor.
    first = run_sweeps()
    assert first["accounts_swept"] == len(SWEPT), first
    before = cursors(stack)
    assert set(before) == set(SWEPT)

    # Guest 1 of each platform arrives by webhook.
    for sample in samples.values():
        assert stack.deliver(sample, 1).status_code == 200

    # A bad deploy: the tenants document cannot be read, so every webhook answers 503. Guests 2 and 3 are created
    # on each platform meanwhile, and each platform re-sends their webhooks until it gives up.
    monkeypatch.setenv("TENANTS_FILE", str(tmp_path / "missing-tenants.json"))
    stack.configure()
    refused = Counter()
    for name, sample in samples.items():
        for n in (2, 3):
            delivery = sample.prepare(stack.sandbox, n)
            for _ in range(SENDS[name]):
                response = stack.post(delivery)
                assert response.status_code == 503, (name, response.status_code)
                refused[name] += 1
    assert refused == {name: 2 * SENDS[name] for name in SWEPT}
    # Each refusal is logged (and counted: the MisconfiguredAlarm's metric), so the outage is seen.
    said = Counter(line["platform"] for line in lines(capsys.readouterr().out) if line["outcome"] == "misconfigured")
    assert said == refused
    # The same deploy runs the sweeps: they fail too, and no cursor moves.
    assert run_sweeps() == {"status": "misconfigured"}
    assert {name: item["swept_until"] for name, item in cursors(stack).items()} == {
        name: item["swept_until"] for name, item in before.items()}
    # Nothing of guests 2 and 3 reached the bridge's queues or Fullwhere: only the platforms' lists hold them.
    assert stack.retry_jobs() == [] and stack.dead_letters() == []
    assert all(in_fullwhere(stack, sample, n) == 0 for sample in samples.values() for n in (2, 3))

    # The bridge comes back; guest 4 of each platform arrives by webhook.
    monkeypatch.delenv("TENANTS_FILE")
    stack.configure()
    for sample in samples.values():
        assert stack.deliver(sample, 4).status_code == 200
    assert all(in_fullwhere(stack, sample, n) == 1 for sample in samples.values() for n in (1, 4))
    imported_by_webhooks = imports(stack)
    capsys.readouterr()

    # The next sweep (SWEEP_MINUTES later). Sweeps ask for whole seconds: the guests of this second are left out.
    time.sleep(max(0.0, 1.05 - datetime.now(timezone.utc).microsecond / 1e6))
    rewind(stack)
    result = run_sweeps()
    output = capsys.readouterr().out

    assert result["accounts_swept"] == len(SWEPT), result
    # Every guest of the window is listed (the 4 of each platform); only the 2 missed ones are sent, the webhook's 2
    # are unchanged (their sent fingerprints match what the sweep would send).
    per_account = {line["platform"]: (line.get("listed", 0), line.get("sent", 0), line.get("unchanged", 0))
                   for line in result["results"]}
    assert per_account == {name: (4, 2, 2) for name in SWEPT}, per_account
    for name, sample in samples.items():
        assert [in_fullwhere(stack, sample, n) for n in (1, 2, 3, 4)] == [1, 1, 1, 1], name
    # One import call per missed guest, none for the webhook's guests.
    assert imports(stack) - imported_by_webhooks == 2 * len(SWEPT)
    # Each missed guest, and only they, logged recovered (the line names the Fullwhere customer, no personal data).
    recovered = [line for line in lines(output) if line["outcome"] == "recovered"]
    missed = {customer["id"]: name for name, sample in samples.items() for customer in stack.customers()
              if customer.get(sample.id_field) in (sample.guest_id(2), sample.guest_id(3))}
    assert sorted((line["customer_id"], line["platform"]) for line in recovered) == sorted(missed.items())
    assert {line["reason"] for line in recovered} <= {"imported", "merged"}
    assert all(line["tenant"] == "default" for line in recovered)
    assert {(name, "recovered") for name in SWEPT} <= set(emf(output))
    assert {name: emf(output)[(name, "recovered")] for name in SWEPT} == {name: 2 for name in SWEPT}
    outcomes = Counter(line["outcome"] for line in lines(output) if "event_id" in line)
    assert outcomes["imported"] == outcomes["merged"] == outcomes["queued"] == 0, outcomes
    assert stack.retry_jobs() == [] and stack.dead_letters() == []
    # Each cursor moved past the outage.
    assert all(item["swept_until"]["S"] > before[name]["swept_until"]["S"] for name, item in cursors(stack).items())

    # A second sweep over the same window changes nothing: no Fullwhere call, nothing recovered.
    calls = imports(stack)
    rewind(stack, to=before)
    again = run_sweeps()
    output = capsys.readouterr().out

    assert again["accounts_swept"] == len(SWEPT), again
    per_account = {line["platform"]: (line.get("listed", 0), line.get("sent", 0), line.get("unchanged", 0))
                   for line in again["results"]}
    assert per_account == {name: (4, 0, 4) for name in SWEPT}, per_account
    assert imports(stack) == calls
    assert [line for line in lines(output) if line["outcome"] == "recovered"] == []
    assert not any(outcome == "recovered" for _, outcome in emf(output))
    assert len(stack.customers()) == 4 * len(SWEPT)


def test_the_dashboard_graphs_recovered_per_platform_from_the_metric_the_bridge_writes():
    """The widget's SEARCH names the namespace, dimension set and outcome a ``recovered`` line is counted under."""
    from chalicelib.infra import metrics

    class Loader(yaml.SafeLoader):
        pass

    # CloudFormation's short forms: the dashboard's body is the text of its !Sub.
    Loader.add_multi_constructor("!", lambda loader, suffix, node: loader.construct_scalar(node)
                                 if isinstance(node, yaml.ScalarNode) else None)
    resources = yaml.load((ROOT / "deploy" / "resources.yaml").read_text(), Loader=Loader)["Resources"]
    [text] = [resource["Properties"]["DashboardBody"] for resource in resources.values()
              if resource.get("Type") == "AWS::CloudWatch::Dashboard"]
    # "${X}" read as the string "X", a bare ${X} as 0 (as tests/test_package.py reads the packaged template).
    body = json.loads(re.sub(r"\$\{[^}]+\}", "0", re.sub(r'"\$\{([^}]+)\}"', r'"\1"', text)))
    widgets = [widget["properties"] for widget in body["widgets"]]
    [widget] = [widget for widget in widgets
                if any('outcome="recovered"' in item.get("expression", "")
                       for metric in widget.get("metrics", []) for item in metric if isinstance(item, dict))]
    [[search]] = widget["metrics"]
    assert "per platform" in widget["title"].lower() or "by platform" in widget["title"].lower()
    assert search["expression"].startswith(f"SEARCH('{{{metrics.NAMESPACE},platform,outcome}} "
                                           'MetricName="Events" outcome="recovered"\'')
    assert widget["stat"] == "Sum"
    # ... which is a dimension set of the EMF lines a recovered guest produces.
    [document] = metrics.documents("mews", "recovered", 1, [12.0])
    assert ["platform", "outcome"] in document["_aws"]["CloudWatchMetrics"][0]["Dimensions"]
    assert document["_aws"]["CloudWatchMetrics"][0]["Namespace"] == metrics.NAMESPACE
    assert document["Events"] == 1 and (document["platform"], document["outcome"]) == ("mews", "recovered")
