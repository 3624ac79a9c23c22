"""Fixtures: the bridge wired to real loopback servers.

- moto's server (one per session) is the local SQS and DynamoDB; every test gets its own retry queue
  (with a redrive policy to its own dead-letter queue) and identity table;
- the Fullwhere, Uber Eats and Mews emulators are real HTTP servers on 127.0.0.1 (one per session,
  reset between tests);
- the bridge runs through ``chalice.test.Client`` with its settings in the process environment, and a
  poller stands in for Lambda's SQS event source mapping to drive the retry worker.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from chalice.local import LambdaContext
from chalice.test import Client

from sandbox import aws as local_aws
from sandbox.emulators.fullwhere import FullwhereEmulator
from sandbox.platforms.mews import MewsEmulator
from sandbox.platforms.ubereats import UberEatsEmulator
from sandbox.stack import reset_bridge_caches
from tests.support.signing import deliveroo_headers, ubereats_headers

ROOT = Path(__file__).parent.parent
FIXTURES = Path(__file__).parent / "fixtures"
WORKER_TIMEOUT_SECONDS = json.loads((ROOT / ".chalice" / "config.json").read_text())["stages"]["dev"][
    "lambda_functions"]["retry_worker"]["lambda_timeout"]

FULLWHERE_KEY, FULLWHERE_SECRET = "test-key", "test-secret"
DELIVEROO_SECRET = "deliveroo-webhook-secret"
UBER_CLIENT_ID, UBER_CLIENT_SECRET = "uber-client", "uber-secret"
MEWS_WEBHOOK_TOKEN = "mews-url-token-3f9a"
MEWS_CLIENT_TOKEN = "mews-client"
MEWS_ENTERPRISE = "851df8c8-90f2-4c4a-8e01-a4fc46b25178"
MEWS_ACCESS_TOKEN = "mews-access-851d"


def fixture_bytes(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def fixture_json(name: str) -> Any:
    return json.loads(fixture_bytes(name))


# Short budgets and immediate redelivery keep tests fast; the timings and the backoff are tested on their own.
FAST_RETRIES = {"INLINE_BUDGET_SECONDS": "2", "WORKER_CALL_TIMEOUT_SECONDS": "2",
                "RETRY_BASE_SECONDS": "0"}


def reset_bridge_state() -> None:
    """Forget everything the bridge caches per container (settings, tenants, clients, tokens), and the
    metrics of a handler called directly in an earlier test (only Chalice's middleware flushes them)."""
    import io

    from chalicelib.infra import metrics

    reset_bridge_caches()
    metrics.flush(io.StringIO())


@pytest.fixture(scope="module")
def sandbox():
    """The sandbox's emulators, one set per test module (a module may override it, e.g. with moto's queues):
    the queues and table a test needs are its own, on the suite's moto server (tests/support/sandbox_bridge.py)."""
    from sandbox.stack import Sandbox

    with Sandbox(with_aws=False) as running:
        yield running


@pytest.fixture(scope="session")
def moto_endpoint():
    server, endpoint = local_aws.start_moto()
    yield endpoint
    local_aws.stop_moto(server)


@pytest.fixture(scope="session")
def emulators():
    fullwhere = FullwhereEmulator(accounts={FULLWHERE_KEY: FULLWHERE_SECRET, "tenant-b-key": "tenant-b-secret"})
    uber = UberEatsEmulator(client_id=UBER_CLIENT_ID, client_secret=UBER_CLIENT_SECRET)
    mews = MewsEmulator(client_token=MEWS_CLIENT_TOKEN, access_tokens={MEWS_ENTERPRISE: MEWS_ACCESS_TOKEN})
    for server in (fullwhere, uber, mews):
        server.start()
    yield {"fullwhere": fullwhere, "uber": uber, "mews": mews}
    for server in (fullwhere, uber, mews):
        server.stop()


class Bridge:
    """The bridge under test plus handles on everything around it."""

    def __init__(self, client: Client, emulators: dict, endpoint: str, retry_url: str, dlq_url: str, monkeypatch):
        self.client = client
        self.fullwhere: FullwhereEmulator = emulators["fullwhere"]
        self.uber: UberEatsEmulator = emulators["uber"]
        self.mews: MewsEmulator = emulators["mews"]
        self.endpoint = endpoint
        self.retry_url = retry_url
        self.dlq_url = dlq_url
        self._monkeypatch = monkeypatch
        self.poller = local_aws.LambdaSqsPoller(retry_url, self.invoke_worker, endpoint_url=endpoint)

    # -- configuration -------------------------------------------------------------------------
    def configure(self, **settings: Any) -> None:
        """Change settings (``None`` removes one) and make the bridge re-read them."""
        for name, value in settings.items():
            if value is None:
                self._monkeypatch.delenv(name.upper(), raising=False)
            else:
                self._monkeypatch.setenv(name.upper(), str(value))
        reset_bridge_state()

    # -- sending webhooks ----------------------------------------------------------------------
    def post(self, platform: str, body: bytes, headers: dict[str, str] | None = None, query: str = ""):
        path = f"/webhooks/{platform}" + (f"?{query}" if query else "")
        return self.client.http.post(path, headers=headers or {}, body=body)

    def send_deliveroo(self, payload: Any, secret: str = DELIVEROO_SECRET, legacy: bool = False, guid: str | None = None):
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        return self.post("deliveroo", body, deliveroo_headers(body, secret, guid or uuid.uuid4().hex, legacy))

    def send_ubereats(self, payload: Any, secret: str = UBER_CLIENT_SECRET):
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        return self.post("ubereats", body, ubereats_headers(body, secret))

    def send_mews(self, payload: Any, token: str = MEWS_WEBHOOK_TOKEN, content_type: str | None = None):
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        headers = {"Content-Type": content_type} if content_type else {}
        return self.post("mews", body, headers, query=f"Token={token}")

    # -- the retry side ------------------------------------------------------------------------
    def invoke_worker(self, event: dict) -> Any:
        """Invoke the worker as Lambda does. (``client.lambda_.invoke`` would give it a context with a fixed
        3 s timeout instead of the configured one, and the worker plans its batch by that clock.)"""
        from app import app

        context = LambdaContext("retry_worker", memory_size=512, max_runtime_ms=WORKER_TIMEOUT_SECONDS * 1000)
        return app.handler_map["retry_worker"](event, context)

    def drain(self, timeout: float = 15.0) -> int:
        return self.poller.drain(timeout=timeout)

    def retry_jobs(self) -> list[dict]:
        return local_aws.queue_messages(self.endpoint, self.retry_url)

    def dead_letters(self) -> list[dict]:
        return local_aws.queue_messages(self.endpoint, self.dlq_url)

    def customers(self, api_key: str = FULLWHERE_KEY) -> list[dict]:
        return self.fullwhere.customers(api_key)


@pytest.fixture
def bridge(moto_endpoint, emulators, monkeypatch):
    for server in emulators.values():
        server.reset()
    name = f"bridge-{uuid.uuid4().hex[:10]}"
    retry_url, dlq_url = local_aws.create_queues(moto_endpoint, name, max_receive_count=5, visibility_timeout=30)
    local_aws.create_identity_table(moto_endpoint, name)
    environment = {
        **local_aws.aws_env(moto_endpoint),
        "FULLWHERE_API_URL": emulators["fullwhere"].url,
        "FULLWHERE_API_KEY": FULLWHERE_KEY,
        "FULLWHERE_API_SECRET": FULLWHERE_SECRET,
        "RETRY_QUEUE_URL": retry_url,
        "DEAD_LETTER_QUEUE_URL": dlq_url,
        "IDENTITY_TABLE": name,
        **FAST_RETRIES,
        "DELIVEROO_WEBHOOK_SECRET": DELIVEROO_SECRET,
        "UBEREATS_CLIENT_ID": UBER_CLIENT_ID,
        "UBEREATS_CLIENT_SECRET": UBER_CLIENT_SECRET,
        "UBEREATS_API_URL": emulators["uber"].url,
        "UBEREATS_AUTH_URL": emulators["uber"].url,
        "MEWS_WEBHOOK_TOKEN": MEWS_WEBHOOK_TOKEN,
        "MEWS_CLIENT_TOKEN": MEWS_CLIENT_TOKEN,
        "MEWS_ACCESS_TOKEN": MEWS_ACCESS_TOKEN,
        "MEWS_API_URL": emulators["mews"].url,
    }
    for key in ("SECRETS_ID", "TENANTS_FILE", "TENANTS_SECRET_ID"):
        monkeypatch.delenv(key, raising=False)
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    reset_bridge_state()
    from app import app

    with Client(app, project_dir=str(Path(__file__).parent.parent)) as client:
        yield Bridge(client, emulators, moto_endpoint, retry_url, dlq_url, monkeypatch)
    reset_bridge_state()


@pytest.fixture
def ledger(bridge):
    """The bridge's identity ledger, on moto's DynamoDB."""
    from chalicelib.domain.identity import IdentityLedger
    from chalicelib.infra.settings import get_settings

    return IdentityLedger(get_settings().identity_table)


# -- No secrets or personal data in logs, checked on every test's output ----------------------------
# Every value below appears in a fixture or a setting. The bridge's log lines (JSON on stdout) of every
# test in the suite are scanned for them, so any scenario that leaks one fails the test that ran it.
FORBIDDEN_IN_LOGS = (
    # sevenrooms
    "sevenrooms-hook-secret-5b1e", "sevenrooms-api-secret-c07d", "not-the-secret", "forged-token", "Jon", "Snow",
    "jsnow@srdemo.com", "212-555-7056", "2125557056", "555 7056", "Arya", "Stark", "arya.stark@srdemo.com",
    "Arya.Stark@srdemo.com", "jon.snow@winterfell.example", "JON.SNOW@Winterfell.example", "direwolves",
    # oracle (OPERA Cloud) and simphony
    "opera-client-secret-7c1", "opera-client-b-secret-93e", "41ecd082-8997-4c69-af34-2f72b83645ff",
    "5d1f2a3b-4c5d-4e6f-8a9b-0c1d2e3f4a5b", "c2ltcGhvbnktdGVzdC1rZXktMzItYnl0ZXMtbG9uZyEh", "Thomas", "Jonathan",
    "eg@example.com", "info@example.com", "415 555 0100", "4155550100", "anna.martin@example.fr", "Martin",
    # thefork
    "thefork-url-token-NN8ul7c3", "thefork-client-secret-7d2e", "thefork-tenant-secret-91ac", "wrong-token-value-42",
    "NN8ul7c3wRE0hYP2XPOhyYDRQnyHFMJq", "Camille.Durand@Exemple.fr", "camille.durand@exemple.fr", "Durand",
    "71 23 45 89", "671234589", "other@example.org", "7946 0958", "79460958", "030 901820", "30901820",
    # zelty
    "zelty-secret-key-7c41", "zelty-api-key-19ab", "Camille.Durand@Example.fr", "camille.durand@example.fr",
    "698765432", "98 76 54 32", "Hugo", "Bernard", "hugo.bernard@example.fr", "781234567", "81 23 45 67",
    # declarative sources
    "como-hook-secret", "partouche-url-token", "chr365-hmac-secret", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "como-key",
    "jane@email.com", "2128782328", "camille.moreau@example.fr", "Camille", "Moreau", "23 45 67 89", "623456789",
    "louis.garnier@example.fr", "Garnier", "781223344", "ines.roux@example.fr", "611223344", "hugo.petit@example.fr",
    # meta (names with accents are also listed by their ASCII part: logs escape non-ASCII characters)
    "meta-app-secret-5c1e", "meatyhamhock", "meta-page-token-77aa", "meta-page-token-other-31bf", "revoked-token",
    "Joe", "joe@example.com", "Élodie", "lodie", "Dupré", "Dupr", "Elodie.Dupre@Exemple.fr", "elodie.dupre@exemple.fr",
    "06 12 34 56 78", "Lucía", "Garc", "LUCIA@EXAMPLE.ES", "lucia@example.es", "871 23 45 67", "871234567", "Rossi",
    "anna@example.it", "a@example.com", "b@example.com", "guest@hotel.example", "Nobody",
    FULLWHERE_SECRET, "tenant-b-secret", DELIVEROO_SECRET, UBER_CLIENT_SECRET, MEWS_WEBHOOK_TOKEN,
    MEWS_CLIENT_TOKEN, MEWS_ACCESS_TOKEN,
    "j.smith@example.com", "J.Smith@Example.com", "first@example.com", "second@example.com", "jane@example.com",
    "guest-8z1@guest.booking.com", "601123456", "612345678", "3699 9999", "3195035", "555-555",
    "Smith", "Omid", "Larry", "Jane", "Anna",
)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Fail a passing test whose output holds a value listed above, any email, phone or name of the
    fixtures, a secret configured while it ran, or an unmasked email. Scanned: the bridge's log lines (and
    EMF metric lines), what Chalice's app logger printed (its tracebacks), stderr, and the records any logger
    passed to the root one (tests/support/log_leaks.py)."""
    outcome = yield
    report = outcome.get_result()
    from tests.support.log_leaks import (
        chalice_log_tap,
        configured_secrets,
        find_leaks,
        fixture_personal_data,
        scanned_output,
    )

    # Chalice's lines of this phase only (the tap is attached when the first test's setup ends).
    chalice_lines = chalice_log_tap().drain()
    if report.when != "call" or not report.passed:
        return
    log_lines = scanned_output(report.capstdout, report.capstderr, report.caplog, chalice_lines)
    leaks = find_leaks(log_lines, {*FORBIDDEN_IN_LOGS, *fixture_personal_data(), *configured_secrets()})
    if leaks:
        report.outcome = "failed"
        report.longrepr = f"the bridge's logs contain secrets or personal data: {leaks}"
