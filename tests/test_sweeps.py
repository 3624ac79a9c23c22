"""Reconciliation sweeps (issue 16): the framework (cursors, windows, dedupe, ``recovered``) with Mews over real
HTTP: the Mews emulator lists customers by ``UpdatedUtc``, the bridge runs as the ``sweeps`` Lambda does, the
cursors and sent fingerprints live in moto's DynamoDB."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from chalice.local import LambdaContext

from chalicelib.infra import metrics
from sandbox import aws as local_aws
from sandbox.emulators.base import Fault
from sandbox.platforms.mews import CUSTOMERS_PATH, make_customer
from sandbox.scenarios import closed_port
from tests.conftest import MEWS_ACCESS_TOKEN, MEWS_CLIENT_TOKEN, MEWS_ENTERPRISE, MEWS_WEBHOOK_TOKEN

ROOT = Path(__file__).parent.parent
OTHER_ENTERPRISE = "4d0201db-36f6-4bd8-8d3c-7c3d1a6b2f10"


def now() -> datetime:
    return datetime.now(timezone.utc)


def parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def guest(bridge, n: int, at: datetime | None = None, enterprise: str = MEWS_ENTERPRISE, **fields) -> str:
    """A Mews customer updated ``at`` (default: a second ago: sweeps ask for whole seconds)."""
    at = at or now() - timedelta(seconds=1)
    customer_id = f"00000000-0000-4000-8000-{n:012d}"
    bridge.mews.add_customer(enterprise, make_customer(
        customer_id, FirstName=f"Guest{n}", LastName="Swept", Email=f"guest{n}@sweep.example", Phone=None, **fields),
        at=at)
    return customer_id


def run_sweeps(bridge) -> dict:
    """One invocation of the scheduled ``sweeps`` Lambda (its middleware writes the metrics)."""
    from app import app

    event = {"version": "0", "id": "test", "detail-type": "Scheduled Event", "source": "aws.events",
             "account": "123456789012", "time": "2026-12-01T00:00:00Z", "region": "eu-west-3", "resources": [],
             "detail": {}}
    return app.handler_map["sweeps"](event, LambdaContext("sweeps", memory_size=512, max_runtime_ms=120_000))


def dynamodb(bridge):
    return local_aws.client("dynamodb", bridge.endpoint)


def table(bridge) -> str:
    return os.environ["IDENTITY_TABLE"]


def cursor_item(bridge, tenant: str = "default", account: str = MEWS_ENTERPRISE) -> dict:
    key = f"sweep#{tenant}#mews#{account}"
    return dynamodb(bridge).get_item(TableName=table(bridge), Key={"pk": {"S": key}}, ConsistentRead=True).get(
        "Item", {})


def swept_until(bridge, **kwargs) -> datetime:
    return datetime.fromisoformat(cursor_item(bridge, **kwargs)["swept_until"]["S"])


def make_due(bridge, tenant: str = "default", account: str = MEWS_ENTERPRISE, retry_after_too: bool = False) -> None:
    """As if the account's SWEEP_MINUTES had passed since its last run (the tests do not wait 15 minutes)."""
    key = f"sweep#{tenant}#mews#{account}"
    expression = "SET last_run = :old" + (" REMOVE not_before" if retry_after_too else "")
    dynamodb(bridge).update_item(TableName=table(bridge), Key={"pk": {"S": key}}, UpdateExpression=expression,
                                 ExpressionAttributeValues={":old": {"N": "0"}})


def move_cursor(bridge, to: datetime, tenant: str = "default", account: str = MEWS_ENTERPRISE) -> None:
    key = f"sweep#{tenant}#mews#{account}"
    dynamodb(bridge).update_item(
        TableName=table(bridge), Key={"pk": {"S": key}}, UpdateExpression="SET swept_until = :to, last_run = :old",
        ExpressionAttributeValues={":to": {"S": to.strftime("%Y-%m-%dT%H:%M:%S.%fZ")}, ":old": {"N": "0"}})


def lines(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{") and '"_aws"' not in line]


def emf(output: str) -> dict[tuple[str, str], int]:
    return {(line["platform"], line["outcome"]): line["Events"] for line in map(json.loads, (
        raw for raw in output.splitlines() if raw.startswith("{") and '"_aws"' in raw)) if "Events" in line}


def imports(bridge) -> int:
    return len([r for r in bridge.fullwhere.requests if r.path.startswith("/partners/customer") and r.method == "POST"
                and not r.path.endswith("/list")])


@pytest.fixture
def swept(bridge):
    """The bridge with Mews swept by the default tenant (MEWS_SWEEP_ACCOUNTS), no settle delay."""
    bridge.configure(mews_sweep_accounts=MEWS_ENTERPRISE, sweep_settle_seconds=0)
    return bridge


# -- the cursor ------------------------------------------------------------------------------------

def test_a_first_sweep_starts_now_and_later_ones_recover_what_changed_since(swept, capsys):
    bridge = swept
    guest(bridge, 1, at=now() - timedelta(hours=1))  # before sweeps were turned on: never flooded to Fullwhere

    first = run_sweeps(bridge)

    assert first["accounts_swept"] == 1 and bridge.customers() == []
    assert abs((swept_until(bridge) - now()).total_seconds()) < 30
    [listed] = [r.body["UpdatedUtc"] for r in bridge.mews.requests_matching("POST", CUSTOMERS_PATH)
                if "UpdatedUtc" in r.body]  # reaching back SWEEP_OVERLAP_SECONDS only
    assert abs((swept_until(bridge) - parse(listed["StartUtc"])).total_seconds() - 600) < 2
    [started] = [line for line in lines(capsys.readouterr().out) if line["outcome"] == "swept"]
    assert started["account_id"] == MEWS_ENTERPRISE and "first sweep" in started["detail"]

    late = guest(bridge, 2)  # created after the cursor: its webhook never came
    assert run_sweeps(bridge)["accounts_not_due"] == 1  # SWEEP_MINUTES (15) have not passed
    make_due(bridge)
    result = run_sweeps(bridge)

    assert result["accounts_swept"] == 1 and result["sent"] == 1
    assert [c["mewsId"] for c in bridge.customers()] == [late]
    output = capsys.readouterr().out
    [recovered] = [line for line in lines(output) if line["outcome"] == "recovered"]
    assert recovered["platform"] == "mews" and recovered["event_id"] == f"{MEWS_ENTERPRISE}/CustomerAdded/{late}"
    assert emf(output)[("mews", "recovered")] == 1
    [account] = [line for line in lines(output) if line["outcome"] == "swept"]
    assert account["listed"] == 1 and account["sent"] == 1


def test_windows_overlap_the_cursor_by_sweep_overlap_seconds(swept):
    bridge = swept
    run_sweeps(bridge)
    cursor = swept_until(bridge)
    # Recorded by Mews after the last sweep, but stamped before its cursor (Mews' events lag minutes).
    lagging = guest(bridge, 1, at=cursor - timedelta(minutes=5))
    too_old = guest(bridge, 2, at=cursor - timedelta(minutes=15))  # beyond the 10 minutes of overlap
    make_due(bridge)

    run_sweeps(bridge)

    assert [c["mewsId"] for c in bridge.customers()] == [lagging]
    assert too_old not in {c["mewsId"] for c in bridge.customers()}
    call = [r.body for r in bridge.mews.requests_matching("POST", CUSTOMERS_PATH) if "UpdatedUtc" in r.body][-1]
    start = parse(call["UpdatedUtc"]["StartUtc"])
    assert abs((cursor - start).total_seconds() - 600) < 2


def test_what_changed_within_the_settle_time_is_left_to_the_next_sweep(swept):
    bridge = swept
    bridge.configure(sweep_settle_seconds=300)
    run_sweeps(bridge)
    move_cursor(bridge, now() - timedelta(hours=1))
    settled, fresh = guest(bridge, 1, at=now() - timedelta(minutes=30)), guest(bridge, 2)  # its webhook may be coming

    run_sweeps(bridge)

    assert [c["mewsId"] for c in bridge.customers()] == [settled]
    assert swept_until(bridge) < now() - timedelta(seconds=290)
    assert fresh


def test_the_cursor_does_not_move_while_a_guest_is_neither_imported_nor_queued(swept, monkeypatch):
    bridge = swept
    run_sweeps(bridge)
    before = swept_until(bridge)
    customer_id = guest(bridge, 1)
    make_due(bridge)
    bridge.fullwhere.faults.always(Fault("status", status=503))
    # The retry queue cannot take the guest either: nothing holds it but the platform's list.
    bridge.configure(aws_endpoint_url_sqs=f"http://127.0.0.1:{closed_port()}")

    result = run_sweeps(bridge)

    assert result["accounts_incomplete"] == 1 and swept_until(bridge) == before
    bridge.fullwhere.faults.clear()
    bridge.configure(aws_endpoint_url_sqs=bridge.endpoint)
    make_due(bridge)
    assert run_sweeps(bridge)["accounts_swept"] == 1  # the same window again, now all safe: the cursor moves
    assert [c["mewsId"] for c in bridge.customers()] == [customer_id]
    assert swept_until(bridge) >= before


def test_a_guest_queued_for_retry_is_safe_and_the_worker_counts_it_recovered(swept, capsys):
    bridge = swept
    run_sweeps(bridge)
    customer_id = guest(bridge, 1)
    make_due(bridge)
    bridge.fullwhere.faults.add(Fault("status", status=503))

    run_sweeps(bridge)

    assert swept_until(bridge) > now() - timedelta(seconds=30)  # queued is safe: the cursor moved on
    [job] = bridge.retry_jobs()
    assert job["stage"] == "import" and job["event"]["recovering"] is True
    bridge.drain()
    assert [c["mewsId"] for c in bridge.customers()] == [customer_id]
    assert [line["outcome"] for line in lines(capsys.readouterr().out)
            if line.get("event_id", "").endswith(customer_id)] == ["queued", "recovered"]


# -- no duplicate, little waste -------------------------------------------------------------------

def test_a_second_sweep_over_the_same_window_changes_nothing_and_costs_no_fullwhere_call(swept):
    bridge = swept
    run_sweeps(bridge)
    start = swept_until(bridge)
    guest(bridge, 1)
    guest(bridge, 2)
    make_due(bridge)
    run_sweeps(bridge)
    assert len(bridge.customers()) == 2
    calls = len(bridge.fullwhere.requests)

    move_cursor(bridge, start)  # the same window again
    result = run_sweeps(bridge)

    assert result["listed"] == 2 and result["unchanged"] == 2 and result.get("sent", 0) == 0
    assert len(bridge.fullwhere.requests) == calls
    assert len(bridge.customers()) == 2


def test_a_guest_the_webhook_delivered_costs_the_sweep_no_fullwhere_call_and_is_not_recovered(swept, capsys):
    bridge = swept
    run_sweeps(bridge)
    customer_id = guest(bridge, 1)
    assert bridge.send_mews({"EnterpriseId": MEWS_ENTERPRISE, "Events": [
        {"Discriminator": "CustomerAdded", "Value": {"Id": customer_id}}]}).status_code == 200
    changed = guest(bridge, 2)
    bridge.send_mews({"EnterpriseId": MEWS_ENTERPRISE, "Events": [
        {"Discriminator": "CustomerAdded", "Value": {"Id": changed}}]})
    # ... and its update's webhook was lost.
    bridge.mews.update_customer(MEWS_ENTERPRISE, changed, at=now() - timedelta(seconds=1), LastName="Renamed")
    calls = len(bridge.fullwhere.requests)
    capsys.readouterr()
    make_due(bridge)

    result = run_sweeps(bridge)

    assert result["unchanged"] == 1 and result["sent"] == 1
    assert len(bridge.fullwhere.requests) == calls + 1  # the changed guest only
    sent = [r.body for r in bridge.fullwhere.requests if r.path == "/partners/customer"][-1]
    assert (sent["mewsId"], sent["lastName"]) == (changed, "Renamed")  # Fullwhere's merge rule decides the rest
    outcomes = [line["outcome"] for line in lines(capsys.readouterr().out) if "event_id" in line]
    assert "recovered" not in outcomes and outcomes.count("merged") + outcomes.count("imported") == 1


def test_an_erased_guest_is_never_brought_back(swept):
    bridge = swept
    run_sweeps(bridge)
    kept, erased = guest(bridge, 1), guest(bridge, 2)
    bridge.mews.delete_customer(MEWS_ENTERPRISE, erased)
    make_due(bridge)

    run_sweeps(bridge)

    assert [c["mewsId"] for c in bridge.customers()] == [kept]
    filters = [r.body for r in bridge.mews.requests_matching("POST", CUSTOMERS_PATH)]
    assert any(body.get("DeletedUtc") and body.get("ActivityStates") == ["Deleted"] for body in filters)
    assert any(body.get("UpdatedUtc") and body.get("ActivityStates") == ["Active"] for body in filters)


# -- the Mews list: pages, limits, rate limit -----------------------------------------------------

def test_every_page_is_read_with_the_cursor_of_the_last(swept, monkeypatch):
    from chalicelib.connectors import mews

    bridge = swept
    monkeypatch.setattr(mews, "PAGE_SIZE", 2)
    run_sweeps(bridge)
    ids = [guest(bridge, n) for n in range(1, 6)]
    make_due(bridge)

    run_sweeps(bridge)

    assert sorted(c["mewsId"] for c in bridge.customers()) == sorted(ids)
    listed = [r.body for r in bridge.mews.requests_matching("POST", CUSTOMERS_PATH) if "UpdatedUtc" in r.body][1:]
    assert [body["Limitation"].get("Cursor") is not None for body in listed] == [False, True, True]
    assert all(body["Limitation"]["Count"] == 2 for body in listed)


def test_a_backfill_since_a_date_reads_every_window_within_mews_limits(swept, capsys):
    from bridge_cli.__main__ import main

    bridge = swept
    run_sweeps(bridge)  # sweeps were turned on today
    old = guest(bridge, 1, at=now() - timedelta(days=95))
    recent = guest(bridge, 2, at=now() - timedelta(hours=3))
    cursor = swept_until(bridge)

    since = (now() - timedelta(days=100)).strftime("%Y-%m-%d")
    assert main(["sweep", "--since", since, "--platform", "mews"]) == 0

    assert sorted(c["mewsId"] for c in bridge.customers()) == sorted([old, recent])
    listed = [r.body["UpdatedUtc"] for r in bridge.mews.requests_matching("POST", CUSTOMERS_PATH)
              if "UpdatedUtc" in r.body]
    spans = [parse(window["EndUtc"]) - parse(window["StartUtc"]) for window in listed]
    assert len(listed) >= 100 and max(spans) <= timedelta(days=1)  # within Mews' 3 months, in pieces of a day
    assert swept_until(bridge) >= cursor  # a backfill never moves the cursor back
    assert "recovered" in capsys.readouterr().out


def test_a_429_stops_the_account_and_its_retry_after_is_honoured(swept, capsys):
    bridge = swept
    run_sweeps(bridge)
    before = swept_until(bridge)
    customer_id = guest(bridge, 1)
    make_due(bridge)
    bridge.mews.faults.add(Fault("status", status=429, retry_after=600), path=CUSTOMERS_PATH)

    result = run_sweeps(bridge)

    assert result["accounts_skipped"] == 1 and swept_until(bridge) == before and bridge.customers() == []
    [skipped] = [line for line in lines(capsys.readouterr().out) if line["outcome"] == "sweep_skipped"]
    assert skipped["reason"] == "rate_limited" and skipped["retry_after_s"] == 600
    make_due(bridge)  # its interval has passed, its Retry-After has not
    calls = len(bridge.mews.requests)
    assert run_sweeps(bridge)["accounts_not_due"] == 1 and len(bridge.mews.requests) == calls
    make_due(bridge, retry_after_too=True)
    run_sweeps(bridge)
    assert [c["mewsId"] for c in bridge.customers()] == [customer_id]


# -- tenants: own credentials only ------------------------------------------------------------------

def test_an_account_without_list_credentials_is_skipped_and_logged(swept, tmp_path, capsys):
    bridge = swept
    document = {"tenants": [
        {"id": "hotel-a", "fullwhere_api_key": "test-key", "fullwhere_api_secret": "test-secret",
         "platforms": {"mews": {"accounts": {MEWS_ENTERPRISE: {"access_token": MEWS_ACCESS_TOKEN}}}}},
        {"id": "hotel-b", "fullwhere_api_key": "tenant-b-key", "fullwhere_api_secret": "tenant-b-secret",
         "platforms": {"mews": {"accounts": {OTHER_ENTERPRISE: {}}}}},
    ]}
    path = tmp_path / "tenants.json"
    path.write_text(json.dumps(document))
    bridge.configure(tenants_file=str(path))
    guest(bridge, 1)

    result = run_sweeps(bridge)

    assert result["accounts_swept"] == 1 and result["accounts_skipped"] == 1
    output = lines(capsys.readouterr().out)
    skipped = [line for line in output if line["outcome"] == "sweep_skipped"]
    assert {(line["tenant"], line["account_id"], line["reason"]) for line in skipped} == {
        ("hotel-b", OTHER_ENTERPRISE, "not_configured")}
    # The deployment's MEWS_ACCESS_TOKEN was never lent to hotel-b: every list call carried hotel-a's token.
    assert {r.body["AccessToken"] for r in bridge.mews.requests_matching("POST", CUSTOMERS_PATH)} == {MEWS_ACCESS_TOKEN}
    assert len(bridge.customers()) == 1 and bridge.customers("tenant-b-key") == []


def test_a_leased_cursor_is_left_to_the_run_that_holds_it(swept, capsys):
    from chalicelib.domain.sweep_state import CursorStore

    bridge = swept
    run_sweeps(bridge)
    make_due(bridge)
    assert CursorStore(table(bridge)).acquire(f"sweep#default#mews#{MEWS_ENTERPRISE}", "other-run", 300) is not None

    calls = bridge.mews.interval_calls
    result = run_sweeps(bridge)

    assert result["accounts_not_due"] == 1 and bridge.mews.interval_calls == calls


def test_sweep_minutes_zero_turns_sweeps_off_and_a_platform_can_override_it(swept):
    bridge = swept
    bridge.configure(sweep_minutes=0)
    assert run_sweeps(bridge) == {"status": "ok", "accounts": 0}
    bridge.configure(mews_sweep_minutes=5)
    assert run_sweeps(bridge)["accounts_swept"] == 1


# -- the webhook path's record, without boto3 -------------------------------------------------------

COLD_WEBHOOK = """
import json, sys
from app import app
from chalice.test import Client
with Client(app) as client:
    response = client.http.post("/webhooks/mews?Token=" + sys.argv[1], body=sys.stdin.read().encode())
print(json.dumps({"status": response.status_code, "boto3_loaded": "boto3" in sys.modules}))
"""


def test_a_cold_webhook_records_what_it_sent_without_loading_boto3(swept):
    bridge = swept
    customer_id = guest(bridge, 1)
    environment = {
        "PATH": os.environ["PATH"], **local_aws.aws_env(bridge.endpoint),
        **{key: os.environ[key] for key in ("FULLWHERE_API_URL", "FULLWHERE_API_KEY", "FULLWHERE_API_SECRET",
                                            "MEWS_API_URL", "RETRY_QUEUE_URL", "DEAD_LETTER_QUEUE_URL",
                                            "IDENTITY_TABLE", "MEWS_SWEEP_ACCOUNTS")},
        "MEWS_WEBHOOK_TOKEN": MEWS_WEBHOOK_TOKEN, "MEWS_CLIENT_TOKEN": MEWS_CLIENT_TOKEN,
        "MEWS_ACCESS_TOKEN": MEWS_ACCESS_TOKEN,
    }
    webhook = {"EnterpriseId": MEWS_ENTERPRISE,
               "Events": [{"Discriminator": "CustomerAdded", "Value": {"Id": customer_id}}]}
    result = subprocess.run([sys.executable, "-c", COLD_WEBHOOK, MEWS_WEBHOOK_TOKEN], input=json.dumps(webhook),
                            capture_output=True, text=True, cwd=ROOT, env=environment, timeout=60, check=True)

    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"status": 200, "boto3_loaded": False}
    item = dynamodb(bridge).get_item(TableName=table(bridge), Key={"pk": {"S": f"sent#default#mews#{customer_id}"}})
    assert len(item["Item"]["fingerprint"]["S"]) == 32
    # ... so the next sweep costs Fullwhere nothing for this guest.
    run_sweeps(bridge)
    move_cursor(bridge, now() - timedelta(minutes=5))
    calls = len(bridge.fullwhere.requests)
    assert run_sweeps(bridge)["unchanged"] == 1 and len(bridge.fullwhere.requests) == calls


def test_a_webhook_of_an_account_that_is_not_swept_records_nothing(bridge):
    bridge.configure(mews_sweep_accounts=OTHER_ENTERPRISE)
    customer_id = guest(bridge, 1)
    assert bridge.send_mews({"EnterpriseId": MEWS_ENTERPRISE, "Events": [
        {"Discriminator": "CustomerAdded", "Value": {"Id": customer_id}}]}).status_code == 200
    key = {"pk": {"S": f"sent#default#mews#{customer_id}"}}
    assert "Item" not in dynamodb(bridge).get_item(TableName=table(bridge), Key=key)
    bridge.configure(mews_sweep_accounts=MEWS_ENTERPRISE)  # the same webhook, for a swept account
    bridge.send_mews({"EnterpriseId": MEWS_ENTERPRISE, "Events": [
        {"Discriminator": "CustomerUpdated", "Value": {"Id": customer_id}}]})
    assert "Item" in dynamodb(bridge).get_item(TableName=table(bridge), Key=key)


def test_the_mews_emulator_refuses_an_interval_over_three_months(bridge):
    import httpx

    body = {"ClientToken": MEWS_CLIENT_TOKEN, "AccessToken": MEWS_ACCESS_TOKEN, "Client": "test",
            "Extent": {"Customers": True}, "Limitation": {"Count": 10}}
    for start, status in (("2026-01-31T00:00:00Z", 200), ("2026-01-29T23:59:59Z", 400)):
        interval = {"StartUtc": start, "EndUtc": "2026-04-30T00:00:00Z"}
        response = httpx.post(bridge.mews.url + CUSTOMERS_PATH, json={**body, "UpdatedUtc": interval})
        assert response.status_code == status, start


def test_the_hand_signed_dynamodb_request_is_signed_as_botocore_signs_it():
    import calendar
    import time

    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    from chalicelib.infra import signed_dynamodb

    environ = {"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
               "AWS_SESSION_TOKEN": "session-token", "AWS_REGION": "eu-west-3"}
    body = b'{"TableName":"t","Item":{"pk":{"S":"sent#a"}}}'
    for url in ("https://dynamodb.eu-west-3.amazonaws.com/", "http://127.0.0.1:5000/"):
        request = AWSRequest(method="POST", url=url, data=body, headers={
            "Content-Type": signed_dynamodb.CONTENT_TYPE, "X-Amz-Target": "DynamoDB_20120810.PutItem"})
        SigV4Auth(Credentials("AKIDEXAMPLE", environ["AWS_SECRET_ACCESS_KEY"], "session-token"), "dynamodb",
                  "eu-west-3").add_auth(request)
        moment = calendar.timegm(time.strptime(request.headers["X-Amz-Date"], "%Y%m%dT%H%M%SZ"))
        mine = signed_dynamodb.signed_headers(url, "DynamoDB_20120810.PutItem", body, environ, moment)
        assert mine["authorization"] == request.headers["Authorization"]


def test_metrics_of_a_sweep_count_recovered_per_platform(swept):
    bridge = swept
    run_sweeps(bridge)
    guest(bridge, 1)
    guest(bridge, 2)
    make_due(bridge)
    stream = io.StringIO()
    metrics.flush(stream)

    from chalicelib.connectors import all_connectors
    from chalicelib.domain.tenants import get_directory
    from chalicelib.flow import sweep
    from chalicelib.infra.settings import get_settings

    sweep.run(all_connectors(), get_directory(), get_settings(), 60)

    assert metrics.pending()[("mews", "recovered", "")] == 2
    metrics.flush(stream)


# -- make run: the sweeps on their timer, and bridge_cli sweep against the stack ---------------------

@pytest.mark.xdist_group("local_stack")
def test_make_run_sweeps_on_its_timer_and_bridge_cli_sweep_runs_one_now(tmp_path):
    from tests.test_local_stack import RunningStack

    class SweepingStack(RunningStack):
        """``make run`` sweeping every second, with no settle time (the guest is seeded a moment before)."""

        def start(self) -> None:
            original = subprocess.Popen

            def popen(command, *args, **kwargs):  # make run ARGS="... --sweep-every 1"
                command = [part + " --sweep-every 1" if part.startswith("ARGS=") else part for part in command]
                return original(command, *args, **kwargs)

            subprocess.Popen = popen
            try:
                super().start()
            finally:
                subprocess.Popen = original

    stack = SweepingStack(tmp_path, SWEEP_SETTLE_SECONDS="0")
    try:
        assert stack.state["sweep_seconds"] == 1
        # The guest exists in the Mews sandbox only: its webhook is never sent.
        (delivery,) = stack.control("/samples", {"platforms": ["mews"]})["deliveries"]
        stack.wait_for_customer("mewsId", delivery["guest_id"])
        # The import lands in Fullwhere a moment before the sweep's log line is read from make run's output.
        deadline = time.monotonic() + 10
        while '"outcome": "recovered"' not in stack.output and time.monotonic() < deadline:
            time.sleep(0.1)
        assert '"outcome": "recovered"' in stack.output

        since = (now() - timedelta(days=1)).strftime("%Y-%m-%d")
        result = stack.cli("sweep", "--since", since, "--platform", "mews")
        assert result.returncode == 0, result.stdout + result.stderr
        assert "mews" in result.stdout and "swept" in result.stdout
        assert len([c for c in stack.customers() if c.get("mewsId") == delivery["guest_id"]]) == 1
    finally:
        stack.interrupt()
