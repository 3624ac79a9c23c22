"""The sandbox (local stack, demo, scenarios, benchmarks) works for every platform out of the box."""

from __future__ import annotations

import json

import pytest
from chalice.local import LambdaContext
from chalice.test import Client

from sandbox.aws import LambdaSqsPoller
from sandbox.samples import SAMPLES, webhook_samples
from sandbox.stack import FULLWHERE_KEY, Sandbox
from tests.conftest import reset_bridge_state


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox() as running:
        yield running


@pytest.fixture
def bridge_on_sandbox(sandbox, monkeypatch):
    sandbox.reset()
    for key in ("TENANTS_FILE", "TENANTS_SECRET_ID", "SECRETS_ID", "SOURCES_SECRET_ID"):
        monkeypatch.delenv(key, raising=False)
    for key, value in sandbox.environment().items():
        monkeypatch.setenv(key, value)
    reset_bridge_state()
    from app import app

    with Client(app) as client:
        yield client
    reset_bridge_state()


def test_every_platform_sample_reaches_fullwhere(sandbox, bridge_on_sandbox):
    from app import app

    for sample in webhook_samples():
        for n in (1, 2):
            delivery = sample.prepare(sandbox, n)
            response = bridge_on_sandbox.http.post(delivery.path, headers=delivery.headers, body=delivery.body)
            assert response.status_code == 200, (sample.platform, response.body)
    SAMPLES["oracle"].prepare(sandbox, 1)
    event = bridge_on_sandbox.events.generate_cw_event("aws.events", "Scheduled Event", {}, [], region="eu-west-3")
    app.handler_map["oracle_pull"](event, LambdaContext("oracle_pull", 512, max_runtime_ms=60_000))
    LambdaSqsPoller(sandbox.retry_queue_url, lambda event: app.handler_map["retry_worker"](
        event, LambdaContext("retry_worker", 512, max_runtime_ms=120_000)), endpoint_url=sandbox.aws_endpoint).drain()

    customers = sandbox.fullwhere.customers(FULLWHERE_KEY)
    for sample in SAMPLES.values():
        if not sample.imports:
            continue
        expected = {sample.guest_id(n) for n in ((1,) if sample.pulled else (1, 2))}
        found = {c[sample.id_field] for c in customers if c["metadata"].get("source") == sample.platform}
        assert found == expected, sample.platform


def test_every_platform_has_its_sandbox_module():
    """Each built-in platform and each shipped preset: sandbox/platforms/<name>.py (see sandbox/platforms/__init__.py)."""
    from chalicelib.connectors import get_connector
    from chalicelib.core.registry import builtin_names
    from chalicelib.domain.sources import PRESETS_DIR
    from sandbox import platforms

    presets = sorted(path.stem for path in PRESETS_DIR.glob("*.json"))
    assert platforms.names() == [*builtin_names(), *presets]
    for name in platforms.names():
        module = platforms.module(name)
        assert callable(getattr(module, "sign", None)) or name in presets, name
        if hasattr(module, "emulator"):  # an emulator the bridge is pointed at
            assert callable(module.emulator) and callable(module.environment), name
        assert isinstance(module.SECRETS, dict) and module.SAMPLE.platform == name, name
        if name in presets:
            assert module.SAMPLE.id_field == json.loads((PRESETS_DIR / f"{name}.json").read_text())["id_field"], name
            assert callable(module.source), name
        else:
            assert module.SAMPLE.id_field == get_connector(name).id_field, name
