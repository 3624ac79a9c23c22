"""``make run`` (sandbox/local_stack.py) and the command-line tool (``python -m bridge_cli``) against it.

The stack is started once for the module, exactly as the README says (``make run``, in a subprocess, with
free ports and its own data directory), and every command-line test runs the tool in a subprocess against
it. The Ctrl-C test starts its own stack, since it stops it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from chalicelib.connectors import settings_models
from sandbox.emulators.fullwhere import FullwhereEmulator
from sandbox.samples import SAMPLES
from sandbox.stack import FULLWHERE_KEY, FULLWHERE_SECRET, SECRETS
from tests.support.make import make_command

# One worker for the whole module under `pytest -n 2` (pytest.ini: --dist loadgroup): one stack, not two.
pytestmark = pytest.mark.xdist_group("local_stack")

ROOT = Path(__file__).resolve().parent.parent
BRIDGE_SETTINGS = {model.variable(name) for model in settings_models() for name in model.model_fields}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _clean_environment(**extra: str) -> dict[str, str]:
    """This environment without any bridge or AWS setting: the stack and the tool start from nothing."""
    env = {key: value for key, value in os.environ.items()
           if key not in BRIDGE_SETTINGS and not key.startswith(("AWS_", "COMO_")) and key not in ("PORT", "LOCAL_STACK_DIR")}
    env.update(extra)
    return env


class RunningStack:
    """``make run`` in its own session (so a signal can reach its whole process group, as Ctrl-C does)."""

    def __init__(self, data_dir: Path, pull_every: float = 0, **settings: str):
        self.data_dir = data_dir
        self.pull_every = pull_every
        self.env = _clean_environment(LOCAL_STACK_DIR=str(data_dir), **settings)
        self.start()

    def start(self) -> None:
        self.port = _free_port()
        args = f"--fullwhere-port 0 --aws-port 0 --pull-every {self.pull_every:g}"
        self.process = subprocess.Popen(
            make_command("run", f"PORT={self.port}", f"ARGS={args}"),
            cwd=ROOT, env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, start_new_session=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.state = self._wait_until_up()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def _wait_until_up(self, timeout: float = 90) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"make run exited with {self.process.returncode}:\n{self.output}")
            if any(line.startswith("Try it:") for line in self.lines):
                return json.loads((self.data_dir / "stack.json").read_text())
            time.sleep(0.1)
        self.interrupt()
        raise AssertionError(f"make run did not come up within {timeout} s:\n{self.output}")

    def cli(self, *args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
        """``python -m bridge_cli ARGS`` against this stack, as a user would type it."""
        environment = {**_clean_environment(LOCAL_STACK_DIR=str(self.data_dir), COLUMNS="200"), **(env or {})}
        return subprocess.run([sys.executable, "-m", "bridge_cli", *args], cwd=ROOT, env=environment,
                              capture_output=True, text=True, timeout=timeout)

    def control(self, path: str, body: dict[str, Any]) -> Any:
        response = httpx.post(self.state["control_url"] + path, json=body, timeout=60)
        response.raise_for_status()
        return response.json()

    def customers(self) -> list[dict[str, Any]]:
        """Every customer of the stack's Fullwhere sandbox, read over HTTP with the sandbox's credentials."""
        customers, page = [], 1
        while True:
            response = httpx.post(self.state["fullwhere"]["url"] + "/partners/customer/list",
                                  json={"limit": 100, "page": page},
                                  headers={"X-API-KEY": FULLWHERE_KEY, "X-API-SECRET": FULLWHERE_SECRET}, timeout=10)
            response.raise_for_status()
            body = response.json()
            customers.extend(body["data"])
            if page * 100 >= body["total"]:
                return customers
            page += 1

    def wait_for_customer(self, field: str, value: str, timeout: float = 20) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [c for c in self.customers() if c.get(field) == value]
            if found:
                return found[0]
            time.sleep(0.2)
        raise AssertionError(f"no customer with {field}={value} after {timeout} s:\n{self.output[-3000:]}")

    def processes(self) -> set[int]:
        """make and every process under it."""
        children: dict[int, list[int]] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text()
                except OSError:
                    continue
                parent = int(stat.rsplit(")", 1)[1].split()[1])
                children.setdefault(parent, []).append(int(entry.name))
        found, todo = set(), [self.process.pid]
        while todo:
            pid = todo.pop()
            found.add(pid)
            todo.extend(children.get(pid, []))
        return found

    def interrupt(self, timeout: float = 30) -> int:
        """Ctrl-C in the terminal: SIGINT to the foreground process group (make and the supervisor)."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
        try:
            return self.process.wait(timeout=timeout)
        finally:
            self._reader.join(timeout=5)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    running = RunningStack(tmp_path_factory.mktemp("local-stack"), pull_every=1)
    yield running
    running.interrupt()


def _pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


# -- make run -----------------------------------------------------------------------------------

def test_make_run_starts_the_whole_bridge(stack):
    health = httpx.get(stack.state["bridge_url"] + "/health", timeout=5).json()
    assert set(health) == {"status", "version"} and health["status"] == "ok"
    # The details are in the bridge's log line, and the stack reads the platforms' from the connectors.
    [logged, *_] = [json.loads(line) for line in stack.lines if line.startswith("{") and '"outcome": "health"' in line]
    assert logged["retry_queue"] and logged["dead_letter_queue"] and logged["identity_ledger"]
    assert set(logged["configured"]) == set(SAMPLES)
    assert {name for name, entry in stack.state["platforms"].items() if entry["configured"]} == set(SAMPLES)

    # It says where every platform's webhook goes and where its settings come from, never a secret value.
    output = stack.output
    for platform in SAMPLES:
        entry = stack.state["platforms"][platform]
        assert entry["settings"] == "sandbox"
        assert (entry["webhook_url"] or entry["note"]) in output
    assert f"{stack.state['bridge_url']}/webhooks/mews?Token=<MEWS_WEBHOOK_TOKEN>" in output
    assert f"Fullwhere: the sandbox on {stack.state['fullwhere']['url']}" in output
    assert stack.state["fullwhere"]["db"] == str(stack.data_dir / "fullwhere.sqlite3")
    leaked = [name for name, value in SECRETS.items() if value in output or value in json.dumps(stack.state)]
    assert not leaked


def _resources_template() -> dict[str, Any]:
    class Loader(yaml.SafeLoader):
        pass

    # CloudFormation's short forms (!Ref, !GetAtt, ...): keep their value, the tag does not matter here.
    def any_tag(loader, suffix, node):
        if isinstance(node, yaml.ScalarNode):
            return loader.construct_scalar(node)
        if isinstance(node, yaml.SequenceNode):
            return loader.construct_sequence(node)
        return loader.construct_mapping(node)

    Loader.add_multi_constructor("!", any_tag)
    return yaml.load((ROOT / "deploy" / "resources.yaml").read_text(), Loader=Loader)


def test_local_queues_have_the_redrive_policy_of_the_aws_stack(stack):
    from sandbox.aws import client

    template = _resources_template()
    retry_queue = template["Resources"]["RetryQueue"]["Properties"]
    sqs = client("sqs", stack.state["aws"]["endpoint"])
    attributes = sqs.get_queue_attributes(QueueUrl=stack.state["aws"]["retry_queue_url"], AttributeNames=["All"])["Attributes"]
    assert int(attributes["VisibilityTimeout"]) == retry_queue["VisibilityTimeout"]
    assert int(attributes["MessageRetentionPeriod"]) == retry_queue["MessageRetentionPeriod"]
    redrive = json.loads(attributes["RedrivePolicy"])
    assert int(redrive["maxReceiveCount"]) == retry_queue["RedrivePolicy"]["maxReceiveCount"]
    dead_letter = sqs.get_queue_attributes(QueueUrl=stack.state["aws"]["dead_letter_queue_url"],
                                           AttributeNames=["QueueArn", "MessageRetentionPeriod"])["Attributes"]
    dead_letter_arn = dead_letter["QueueArn"]
    assert int(dead_letter["MessageRetentionPeriod"]) == \
        template["Resources"]["DeadLetterQueue"]["Properties"]["MessageRetentionPeriod"]
    assert redrive["deadLetterTargetArn"] == dead_letter_arn
    # The banner states the same figures.
    assert (f"(visibility {retry_queue['VisibilityTimeout']} s, retention {retry_queue['MessageRetentionPeriod'] / 86400:g} days, "
            f"maxReceiveCount {retry_queue['RedrivePolicy']['maxReceiveCount']})") in stack.output
    assert dead_letter_arn.endswith(":" + template["Resources"]["DeadLetterQueue"]["Properties"]["QueueName"])
    assert stack.state["aws"]["retry_queue_url"].endswith("/" + template["Resources"]["RetryQueue"]["Properties"]["QueueName"])


def test_the_scheduled_opera_pull_runs_on_its_timer(stack):
    # Seeding an OPERA event only queues it in the OHIP sandbox: nothing but the timer (every 1 s here) pulls it.
    prepared = stack.control("/samples", {"platforms": ["oracle"]})
    (oracle,) = prepared["deliveries"]
    stack.wait_for_customer("oracleId", oracle["guest_id"])


# -- python -m bridge_cli demo ------------------------------------------------------------------

def test_demo_sends_every_platform_and_shows_the_customers(stack):
    result = stack.cli("demo")
    assert result.returncode == 0, result.stdout + result.stderr
    n = int(result.stdout.split("Sample guest #", 1)[1].split()[0])
    customers = stack.customers()
    for sample in SAMPLES.values():
        assert sample.platform in result.stdout
        if sample.imports:
            assert any(c.get(sample.id_field) == sample.guest_id(n) for c in customers), sample.platform
            assert f"Guest{n} " in result.stdout
    # chalice local's access log quotes each request's path: its query values (tokens) are redacted.
    assert "/webhooks/mews?Token=REDACTED" in stack.output
    assert "/webhooks/partouche?token=REDACTED" in stack.output
    leaked = [name for name, value in SECRETS.items() if value in stack.output]
    assert not leaked


# -- dlq list / dlq redrive, and the retry worker behind them -------------------------------------

def test_dlq_list_shows_reasons_and_redrive_hands_jobs_back_to_the_worker(stack):
    from chalicelib.connectors import get_connector
    from chalicelib.connectors.base import WebhookRequest
    from chalicelib.domain.retry_queue import DeadLetter, RetryJob
    from sandbox.aws import client, queue_depth

    # A Mews guest that failed permanently (say Fullwhere refused it); the cause is now fixed.
    (mews,) = stack.control("/samples", {"platforms": ["mews"]})["deliveries"]
    request = WebhookRequest("mews", mews["body"].encode(), {})
    event = get_connector("mews").parse(request).events[0]  # CustomerAdded (CustomerUpdated follows)
    job = RetryJob(platform="mews", tenant="default", event_id=event.event_id, stage="fetch", event=event.to_dict(),
                   attempt=3, last_error="Fullwhere answered 400")
    letter = DeadLetter(kind="permanent", reason="Fullwhere answered 400: email jane.doe@example.org is refused", job=job)
    aws = stack.state["aws"]
    sqs = client("sqs", aws["endpoint"])
    sqs.send_message(QueueUrl=aws["dead_letter_queue_url"], MessageBody=letter.model_dump_json())
    sqs.send_message(QueueUrl=aws["dead_letter_queue_url"], MessageBody="not a job")

    listed = stack.cli("dlq", "list")
    assert listed.returncode == 0, listed.stderr
    assert "2 message(s) in the dead-letter queue" in listed.stdout
    rows = [json.loads(line) for line in stack.cli("dlq", "list", "--json").stdout.splitlines()]
    (row,) = [row for row in rows if row["kind"] == "permanent"]
    assert row["platform"] == "mews" and row["event_id"] == event.event_id and row["stage"] == "fetch"
    assert row["reason"].startswith("Fullwhere answered 400: email j***@e***.org")
    assert "jane.doe" not in listed.stdout
    assert {r["kind"] for r in rows} == {"permanent", "unreadable"}
    # Listing leaves the messages where they were, visible.
    assert queue_depth(aws["endpoint"], aws["dead_letter_queue_url"]) == 2

    redriven = stack.cli("dlq", "redrive", "--limit", "1")
    assert redriven.returncode == 0, redriven.stderr
    assert "Moved 1 message(s)" in redriven.stdout
    rest = stack.cli("dlq", "redrive")
    assert "Moved 1 message(s)" in rest.stdout, rest.stdout + rest.stderr
    # The worker resumes the Mews job (fetch, then import); the unreadable one comes back as "poisoned".
    stack.wait_for_customer("mewsId", mews["guest_id"])
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        rows = [json.loads(line) for line in stack.cli("dlq", "list", "--json").stdout.splitlines()]
        if rows:
            break
        time.sleep(0.5)
    assert [row["kind"] for row in rows] == ["poisoned"]


# -- sign / replay --------------------------------------------------------------------------------

def test_sign_with_the_environment_or_the_sandbox_makes_a_valid_webhook(stack, tmp_path):
    (deliveroo,) = stack.control("/samples", {"platforms": ["deliveroo"]})["deliveries"]
    body = tmp_path / "deliveroo.json"
    body.write_text(deliveroo["body"])

    def send_signed(result: subprocess.CompletedProcess) -> httpx.Response:
        assert result.returncode == 0, result.stderr
        first, *header_lines = result.stdout.splitlines()
        method, url = first.split(" ", 1)
        headers = dict(line.split(": ", 1) for line in header_lines)
        return httpx.post(url, content=body.read_bytes(), headers=headers, timeout=10)

    from_env = stack.cli("sign", "deliveroo", str(body), env={"DELIVEROO_WEBHOOK_SECRET": SECRETS["deliveroo"]})
    assert send_signed(from_env).status_code == 200
    from_sandbox = stack.cli("sign", "deliveroo", str(body), "--sandbox")
    assert send_signed(from_sandbox).status_code == 200
    stack.wait_for_customer("deliverooId", deliveroo["guest_id"])

    # A declarative source is signed with the sources document named by SOURCES_FILE.
    from sandbox.platforms import chr365 as chr365_sandbox

    document = tmp_path / "sources.json"
    document.write_text(json.dumps({"sources": [chr365_sandbox.source(None)]}))
    chr365 = tmp_path / "chr365.json"
    chr365.write_text(json.dumps({"customers": [{"client_id": "c-signed", "firstname": "Signed", "lastname": "Chr",
                                                 "mail": "signed@chr365.sandbox.example"}]}))
    signed = stack.cli("sign", "chr365", str(chr365), env={"SOURCES_FILE": str(document)})
    response = httpx.post(signed.stdout.splitlines()[0].split(" ", 1)[1], content=chr365.read_bytes(),
                          headers=dict(line.split(": ", 1) for line in signed.stdout.splitlines()[1:]), timeout=10)
    assert response.status_code == 200

    curl = stack.cli("sign", "mews", str(body), "--sandbox", "--curl")
    assert curl.stdout.startswith("curl -sS -X POST ") and "--data-binary @" in curl.stdout


def test_sign_and_replay_explain_user_mistakes_without_a_traceback(stack, tmp_path):
    body = tmp_path / "body.json"
    body.write_text("{}")
    cases = [
        (("sign", "deliveroo", str(body)), 1, "DELIVEROO_WEBHOOK_SECRET is not configured"),
        (("sign", "nowhere", str(body)), 2, "unknown platform 'nowhere'"),
        (("sign", "oracle", str(body), "--sandbox"), 1, "OPERA Cloud sends no webhooks"),
        (("replay", "mews", str(tmp_path / "missing.json")), 2, "cannot read"),
        (("replay", "mews", str(body), "--as-is", "-H", "no colon"), 2, "is not 'Name: value'"),
        (("replay", "mews", str(body), "--as-is", "--url", f"http://127.0.0.1:{_free_port()}"), 1, "cannot reach"),
        (("dlq", "list"), 1, "which dead-letter queue? Set DEAD_LETTER_QUEUE_URL"),
    ]
    for args, status, message in cases:
        env = {"LOCAL_STACK_DIR": str(tmp_path)} if args[0] == "dlq" else None
        result = stack.cli(*args, env=env)
        assert result.returncode == status, (args, result.stdout, result.stderr)
        assert message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr


def test_replay_signs_a_captured_webhook_unless_as_is(stack, tmp_path):
    (zenchef,) = stack.control("/samples", {"platforms": ["zenchef"]})["deliveries"]
    captured = tmp_path / "zenchef.json"
    captured.write_text(zenchef["body"])

    as_is = stack.cli("replay", "zenchef", str(captured), "--as-is")
    assert as_is.returncode == 1 and "401 Unauthorized" in as_is.stdout
    signed = stack.cli("replay", "zenchef", str(captured), "--sandbox", "--url", stack.state["bridge_url"])
    assert signed.returncode == 0, signed.stdout + signed.stderr
    assert "200 OK" in signed.stdout
    stack.wait_for_customer("zenchefId", zenchef["guest_id"])
    # A captured request's own headers, sent as they were (here: a Mews token in the URL).
    (mews,) = stack.control("/samples", {"platforms": ["mews"]})["deliveries"]
    captured.write_text(mews["body"])
    url = f"{stack.state['bridge_url']}/webhooks/mews?Token={SECRETS['mews_webhook_token']}"
    replayed = stack.cli("replay", "mews", str(captured), "--as-is", "--url", url, "-H", "X-Replay: yes")
    assert replayed.returncode == 0 and SECRETS["mews_webhook_token"] not in replayed.stdout


# -- backfill --------------------------------------------------------------------------------------

CSV_EXPORT = """email,phoneNumber,firstName,lastName,deliverooId,emailOptin,metadata.shop
ann@backfill.example,06 12 34 56 78,Ann,One,,true,paris
bob@backfill.example,,Bob,Two,,no,
not-an-email,,Bad,Row,,,
,,No,Identity,,,
ANN@Backfill.example,+33612345678,,,,,lyon
,,Loyal,Diner,D-backfill-1,,
"""


def test_backfill_through_the_batch_endpoint_with_a_summary(stack, tmp_path):
    export = tmp_path / "customers.csv"
    export.write_text(CSV_EXPORT)
    result = stack.cli("backfill", str(export))
    assert result.returncode == 0, result.stdout + result.stderr
    counts = json.loads((tmp_path / "customers.csv.backfill.json").read_text())["counts"]
    assert counts == {"created": 3, "merged": 1, "rejected": 2, "sent": 0}
    assert "line 4: email is not a valid address" in result.stdout
    assert "line 5: no email, phone number or platform id" in result.stdout
    ann = stack.wait_for_customer("email", "ann@backfill.example")
    assert ann["phoneNumber"] == "+33612345678" and ann["emailOptin"] is True
    assert ann["metadata"] == {"shop": "paris"}  # the merge only fills what was empty
    assert stack.wait_for_customer("deliverooId", "D-backfill-1")["firstName"] == "Loyal"

    again = stack.cli("backfill", str(export))
    assert "Nothing left to import" in again.stdout
    unknown = tmp_path / "bad.csv"
    unknown.write_text("email,favouriteDish\nx@example.org,soup\n")
    refused = stack.cli("backfill", str(unknown))
    assert refused.returncode == 2 and "unknown column(s) favouriteDish" in refused.stderr


def test_backfill_resumes_and_falls_back_to_single_imports_when_batches_are_refused(stack, tmp_path):
    # A Fullwhere that refuses batches of more than 2 (a 400), given by the environment as the real API would be.
    with FullwhereEmulator(accounts={"bf-key": "bf-secret"}, max_batch=2) as fullwhere:
        env = {"FULLWHERE_API_URL": fullwhere.url, "FULLWHERE_API_KEY": "bf-key", "FULLWHERE_API_SECRET": "bf-secret"}
        export = tmp_path / "customers.jsonl"
        rows = [{"email": f"guest{i}@jsonl.example", "firstName": f"G{i}"} for i in range(7)]
        rows[3] = {"email": "guest0@jsonl.example", "smsOptin": True}  # merges into row 0
        export.write_text("\n".join(json.dumps(row) for row in rows) + "\n{not json\n")

        first = stack.cli("backfill", str(export), "--batch-size", "3", "--max-rows", "4", env=env)
        assert first.returncode == 0, first.stdout + first.stderr
        assert "importing one customer at a time" in first.stdout
        assert "4 record(s) left" in first.stdout
        assert len(fullwhere.customers("bf-key")) == 3

        resumed = stack.cli("backfill", str(export), "--batch-size", "3", env=env)
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        assert "resuming after record 4" in resumed.stdout
        state = json.loads((tmp_path / "customers.jsonl.backfill.json").read_text())
        assert state["counts"] == {"created": 6, "merged": 1, "rejected": 1, "sent": 0}
        assert state["rejections"] == [{"line": 8, "reason": "not valid JSON"}]
        customers = fullwhere.customers("bf-key")
        assert sorted(c["email"] for c in customers) == sorted({row["email"] for row in rows})
        assert fullwhere.find("bf-key", email="guest0@jsonl.example")[0]["smsOptin"] is True
        # Each customer was sent once: the resumed run did not send the first run's records again.
        assert fullwhere.import_count == 7

        export.write_text(export.read_text() + json.dumps({"email": "late@jsonl.example"}) + "\n")
        changed = stack.cli("backfill", str(export), env=env)
        assert changed.returncode == 1 and "changed since" in changed.stderr


def test_with_a_fullwhere_key_the_stack_uses_that_api_and_the_environment_s_platform_settings(tmp_path):
    # The "real" Fullwhere API is an emulator here; Deliveroo is configured by the environment, the rest by sandboxes.
    with FullwhereEmulator(accounts={"real-key": "real-secret"}) as fullwhere:
        settings = {"FULLWHERE_API_URL": fullwhere.url, "FULLWHERE_API_KEY": "real-key",
                    "FULLWHERE_API_SECRET": "real-secret", "DELIVEROO_WEBHOOK_SECRET": "deliveroo-from-the-environment"}
        running = RunningStack(tmp_path, **settings)
        try:
            assert f"Fullwhere: {fullwhere.url} with FULLWHERE_API_KEY/FULLWHERE_API_SECRET from the environment" in running.output
            assert running.state["platforms"]["deliveroo"]["settings"] == "environment"
            assert running.state["platforms"]["mews"]["settings"] == "sandbox"
            assert "deliveroo-from-the-environment" not in running.output and "real-secret" not in running.output
            demo = running.cli("demo", "--platform", "mews", "--platform", "deliveroo", env=settings)
            assert demo.returncode == 0, demo.stdout + demo.stderr
            assert "deliveroo: skipped (its settings come from the environment" in demo.stdout
            n = int(demo.stdout.split("Sample guest #", 1)[1].split()[0])
            assert fullwhere.find("real-key", mewsId=SAMPLES["mews"].guest_id(n))
        finally:
            running.interrupt()


def test_the_stack_refuses_what_it_cannot_run_with_a_clear_error(tmp_path):
    from sandbox.local_stack import LocalStack, StackError

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # As the user sees it: one line on stderr, exit status 2, no traceback, nothing left running.
        result = subprocess.run([sys.executable, "-m", "sandbox.local_stack", "--port", str(port)], cwd=ROOT,
                                env=_clean_environment(LOCAL_STACK_DIR=str(tmp_path)), capture_output=True, text=True,
                                timeout=60)
        assert result.returncode == 2, result.stdout + result.stderr
        assert f"error: port {port} (the bridge's HTTP API) is in use" in result.stderr
        assert "Traceback" not in result.stderr
        cases = [
            ({}, {"aws_port": port}, f"port {port} (moto's server) is in use"),
            ({}, {"fullwhere_port": port}, f"port {port} (the Fullwhere sandbox) is in use"),
            ({"FULLWHERE_API_KEY": "k"}, {}, "set both FULLWHERE_API_KEY and FULLWHERE_API_SECRET"),
            ({"SECRETS_ID": "bridge"}, {}, "SECRETS_ID is set, but the local stack's AWS is moto"),
        ]
        for environ, options, message in cases:
            stack = LocalStack(port=_free_port(), data_dir=tmp_path, environ=environ, **options)
            with pytest.raises(StackError, match=re.escape(message)):
                stack.start()
            stack.stop()
            assert stack.sandbox is None  # refused before anything started


def test_platform_settings_come_from_the_environment_when_it_sets_their_secret():
    from sandbox.local_stack import bridge_environment
    from sandbox.stack import Sandbox

    with Sandbox(with_aws=False, with_fullwhere=False) as sandbox:
        environ = {"DELIVEROO_WEBHOOK_SECRET": "from-env", "SEVENROOMS_SMS_OPTIN_IS_MARKETING": "true",
                   "FULLWHERE_API_KEY": "real-key", "FULLWHERE_API_SECRET": "real-secret"}
        env, origins = bridge_environment(environ, sandbox)
    assert origins["deliveroo"] == "environment" and origins["fullwhere"] == "environment"
    assert {origins[name] for name in origins if name not in ("deliveroo", "fullwhere")} == {"sandbox"}
    assert env["DELIVEROO_WEBHOOK_SECRET"] == "from-env"
    assert env["FULLWHERE_API_KEY"] == "real-key" and "FULLWHERE_API_URL" not in env
    assert env["MEWS_WEBHOOK_TOKEN"] == SECRETS["mews_webhook_token"]  # Mews is not configured: its sandbox
    assert env["SEVENROOMS_SMS_OPTIN_IS_MARKETING"] == "true"  # tuning settings still apply to a sandboxed platform
    assert env["SEVENROOMS_WEBHOOK_SECRET"] == SECRETS["sevenrooms_webhook_secret"]


def test_every_command_has_help(capsys):
    from bridge_cli.__main__ import main

    for command in (["demo"], ["sign"], ["replay"], ["dlq"], ["dlq", "list"], ["dlq", "redrive"], ["backfill"]):
        with pytest.raises(SystemExit) as exit_:
            main([*command, "--help"])
        assert exit_.value.code == 0
        assert f"usage: python -m bridge_cli {' '.join(command)}" in capsys.readouterr().out


# -- Ctrl-C, and what survives a restart -----------------------------------------------------------

def test_ctrl_c_stops_everything_and_customers_survive_a_restart(stack):
    # Last in the module (it restarts the module's stack): a Ctrl-C, then `make run` again on the same data.
    demo = stack.cli("demo", "--platform", "ubereats", "--platform", "thefork")
    assert demo.returncode == 0, demo.stdout + demo.stderr
    n = int(demo.stdout.split("Sample guest #", 1)[1].split()[0])
    before = {c["id"] for c in stack.customers()}
    processes = stack.processes()
    assert len(processes) >= 3  # make, the supervisor, chalice local
    ports = [stack.port, int(stack.state["aws"]["endpoint"].rsplit(":", 1)[1]),
             int(stack.state["fullwhere"]["url"].rsplit(":", 1)[1])]

    stack.interrupt()
    assert "[stack] stopped" in stack.output
    deadline = time.monotonic() + 10
    while any(_pid_alive(pid) for pid in processes) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in processes if _pid_alive(pid)]
    assert not (stack.data_dir / "stack.json").exists()
    for port in ports:  # nothing listens there any more
        with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), timeout=2):
            pass

    stack.start()
    assert {c["id"] for c in stack.customers()} == before
    # The identity ledger came back too: the same contactless Uber Eats guest is a duplicate, not a new customer.
    (uber,) = stack.control("/samples", {"platforms": ["ubereats"], "n": n})["deliveries"]
    response = httpx.post(stack.state["bridge_url"] + uber["path"], content=uber["body"].encode(),
                          headers=uber["headers"], timeout=10)
    assert response.status_code == 200
    assert {c["id"] for c in stack.customers()} == before
