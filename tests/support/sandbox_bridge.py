"""The bridge on a running sandbox, for tests that go through every platform: Chalice's test client, the
sandbox's emulators, and queues and an identity table of the test's own on the suite's moto server."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from chalice.local import LambdaContext
from chalice.test import Client

from sandbox import aws as local_aws
from sandbox import platforms
from sandbox.platforms import Delivery, Sample
from sandbox.stack import FULLWHERE_KEY, Sandbox
from tests.conftest import FAST_RETRIES, WORKER_TIMEOUT_SECONDS, reset_bridge_state

ROOT = Path(__file__).resolve().parent.parent.parent
PULL_TIMEOUT_SECONDS = json.loads((ROOT / ".chalice" / "config.json").read_text())["stages"]["dev"][
    "lambda_functions"]["oracle_pull"]["lambda_timeout"]
# Settings a test must not inherit from the process: the bridge then runs on the sandbox's defaults.
FOREIGN_SETTINGS = ("TENANTS_FILE", "TENANTS_SECRET_ID", "SECRETS_ID", "SOURCES_SECRET_ID", "LOG_LEVEL")


def own_aws(moto_endpoint: str, prefix: str) -> dict[str, str]:
    """A retry queue, its dead-letter queue and an identity table of their own, as the bridge's settings."""
    name = f"{prefix}-{uuid.uuid4().hex[:10]}"
    retry_url, dlq_url = local_aws.create_queues(moto_endpoint, name, max_receive_count=5, visibility_timeout=30)
    local_aws.create_identity_table(moto_endpoint, name)
    return {**local_aws.aws_env(moto_endpoint), "RETRY_QUEUE_URL": retry_url, "DEAD_LETTER_QUEUE_URL": dlq_url,
            "IDENTITY_TABLE": name}


def use_settings(monkeypatch, settings: dict[str, str]) -> None:
    """The bridge in this process configured by ``settings`` alone, as a new container would start."""
    for key in FOREIGN_SETTINGS:
        monkeypatch.delenv(key, raising=False)
    for key, value in settings.items():
        monkeypatch.setenv(key, value)
    reset_bridge_state()


@contextmanager
def bridge_client(monkeypatch, settings: dict[str, str]) -> Iterator[Client]:
    """Chalice's test client on the app, configured by ``settings`` alone; the bridge's caches reset after."""
    use_settings(monkeypatch, settings)
    from app import app

    try:
        with Client(app, project_dir=str(ROOT)) as client:
            yield client
    finally:
        reset_bridge_state()


class SandboxBridge:
    """The bridge (``client``), the sandbox around it, and this test's queues."""

    def __init__(self, client: Client, sandbox: Sandbox, endpoint: str, aws: dict[str, str], monkeypatch):
        self.client, self.sandbox, self.endpoint = client, sandbox, endpoint
        self.retry_url, self.dlq_url = aws["RETRY_QUEUE_URL"], aws["DEAD_LETTER_QUEUE_URL"]
        self._monkeypatch = monkeypatch

    def configure(self, **variables: str) -> None:
        for name, value in variables.items():
            self._monkeypatch.setenv(name, value)
        reset_bridge_state()

    def post(self, delivery: Delivery):
        return self.client.http.post(delivery.path, headers=delivery.headers, body=delivery.body)

    def send(self, platform: str, payload: dict[str, Any]):
        """``payload`` signed the way ``platform`` signs it, posted to its webhook."""
        return self.post(platforms.delivery(self.sandbox, platform, json.dumps(payload).encode()))

    def pull(self, platform: str) -> None:
        """The scheduled pull of ``platform`` runs once, with its configured timeout."""
        from app import app

        event = self.client.events.generate_cw_event("aws.events", "Scheduled Event", {}, [], region="eu-west-3")
        app.handler_map[f"{platform}_pull"](
            event, LambdaContext(f"{platform}_pull", 512, max_runtime_ms=PULL_TIMEOUT_SECONDS * 1000))

    def deliver(self, sample: Sample, n: int):
        """Guest ``n`` reaches the bridge as the platform sends it: its webhook (the response is returned), or
        for a pulled platform its event, read by the scheduled pull (None is returned)."""
        delivery = sample.prepare(self.sandbox, n)
        if delivery is not None:
            return self.post(delivery)
        assert sample.pulled, sample.platform
        self.pull(sample.platform)
        return None

    def drain(self) -> None:
        """The retry worker handles the queue, as Lambda's SQS event source mapping would run it."""
        from app import app

        def invoke(event: dict):
            context = LambdaContext("retry_worker", 512, max_runtime_ms=WORKER_TIMEOUT_SECONDS * 1000)
            return app.handler_map["retry_worker"](event, context)

        local_aws.LambdaSqsPoller(self.retry_url, invoke, endpoint_url=self.endpoint).drain(timeout=15)

    def customers(self) -> list[dict]:
        return self.sandbox.fullwhere.customers(FULLWHERE_KEY)

    def imported_ids(self, sample: Sample) -> list:
        return [customer.get(sample.id_field) for customer in self.customers()]

    def retry_jobs(self) -> list[dict]:
        return local_aws.queue_messages(self.endpoint, self.retry_url)

    def dead_letters(self) -> list[dict]:
        return local_aws.queue_messages(self.endpoint, self.dlq_url)


@contextmanager
def sandbox_bridge(sandbox: Sandbox, moto_endpoint: str, monkeypatch, prefix: str) -> Iterator[SandboxBridge]:
    """The bridge on ``sandbox`` (its emulators reset), with queues of its own and fast retries."""
    sandbox.reset()
    sandbox.fullwhere.faults.reset()
    aws = own_aws(moto_endpoint, prefix)
    try:
        with bridge_client(monkeypatch, {**sandbox.environment(), **aws, **FAST_RETRIES}) as client:
            yield SandboxBridge(client, sandbox, moto_endpoint, aws, monkeypatch)
    finally:
        sandbox.fullwhere.faults.reset()
