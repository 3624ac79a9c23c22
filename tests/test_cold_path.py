"""boto3 costs ~170 ms to import: the common path (a guest with an email) must never load it."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import MEWS_ACCESS_TOKEN, MEWS_CLIENT_TOKEN, MEWS_ENTERPRISE, MEWS_WEBHOOK_TOKEN, fixture_json

ROOT = Path(__file__).parent.parent

SCRIPT = """
import json, sys
from app import app
app_pulls_botocore = any(m.startswith("botocore") for m in sys.modules)
from chalice.test import Client  # the test harness itself imports botocore (not boto3): checked before it
body = sys.stdin.read().encode()
with Client(app) as client:
    response = client.http.post("/webhooks/mews?Token=" + sys.argv[1], body=body)
print(json.dumps({"status": response.status_code,
                  "boto3_loaded": "boto3" in sys.modules, "app_pulls_botocore": app_pulls_botocore}))
"""


def test_successful_webhook_for_a_guest_with_an_email_never_imports_boto3(emulators):
    fullwhere, mews = emulators["fullwhere"], emulators["mews"]
    fullwhere.reset()
    mews.reset()
    mews.add_customer(MEWS_ENTERPRISE, fixture_json("mews/customer.json"))
    environment = {
        "PATH": os.environ["PATH"],
        "FULLWHERE_API_URL": fullwhere.url, "FULLWHERE_API_KEY": "test-key", "FULLWHERE_API_SECRET": "test-secret",
        "MEWS_WEBHOOK_TOKEN": MEWS_WEBHOOK_TOKEN, "MEWS_CLIENT_TOKEN": MEWS_CLIENT_TOKEN,
        "MEWS_ACCESS_TOKEN": MEWS_ACCESS_TOKEN, "MEWS_API_URL": mews.url,
        # Queues and ledger are configured, as in production: they simply must not be needed.
        "RETRY_QUEUE_URL": "http://127.0.0.1:9/queue/retry", "DEAD_LETTER_QUEUE_URL": "http://127.0.0.1:9/queue/dlq",
        "IDENTITY_TABLE": "ledger",
    }
    webhook = {"EnterpriseId": MEWS_ENTERPRISE, "Events": [
        {"Discriminator": "CustomerAdded", "Value": {"Id": "c2f1d888-232e-49eb-87ac-5f75363af13b"}}]}
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, MEWS_WEBHOOK_TOKEN], input=json.dumps(webhook), capture_output=True,
        text=True, cwd=ROOT, env=environment, timeout=60, check=True,
    )
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome == {"status": 200, "boto3_loaded": False, "app_pulls_botocore": False}
    assert [c["email"] for c in fullwhere.customers()] == ["j.smith@example.com"]


# Every platform whose sample guest has an email (Deliveroo and Uber Eats relay phones go through the
# identity ledger, so they need DynamoDB; Simphony imports nobody; OPERA is pulled, not a webhook).
PLATFORMS_WITH_AN_EMAIL = ("mews", "thefork", "meta", "sevenrooms", "zelty", "como", "partouche", "chr365", "zenchef")

SCRIPT_EVERY_PLATFORM = """
import base64, json, sys
from app import app
from chalice.test import Client
statuses = {}
with Client(app) as client:
    for delivery in json.loads(sys.stdin.read()):
        response = client.http.post(delivery["path"], headers=delivery["headers"], body=base64.b64decode(delivery["body"]))
        statuses[delivery["platform"]] = response.status_code
print(json.dumps({"statuses": statuses, "boto3_loaded": "boto3" in sys.modules}))
"""


def test_successful_webhooks_of_every_platform_never_import_boto3_for_guests_with_an_email():
    from sandbox.samples import SAMPLES
    from sandbox.stack import FULLWHERE_KEY, Sandbox

    with Sandbox(with_aws=False) as sandbox:
        deliveries = [SAMPLES[platform].prepare(sandbox, 1) for platform in PLATFORMS_WITH_AN_EMAIL]
        environment = {
            "PATH": os.environ["PATH"], **sandbox.environment(),
            "RETRY_QUEUE_URL": "http://127.0.0.1:9/queue/retry", "DEAD_LETTER_QUEUE_URL": "http://127.0.0.1:9/queue/dlq",
            "IDENTITY_TABLE": "ledger",
        }
        payload = [{"platform": d.platform, "path": d.path, "headers": d.headers,
                    "body": base64.b64encode(d.body).decode()} for d in deliveries]
        result = subprocess.run([sys.executable, "-c", SCRIPT_EVERY_PLATFORM], input=json.dumps(payload),
                                capture_output=True, text=True, cwd=ROOT, env=environment, timeout=120, check=True)
        outcome = json.loads(result.stdout.strip().splitlines()[-1])
        customers = sandbox.fullwhere.customers(FULLWHERE_KEY)

    assert outcome == {"statuses": {platform: 200 for platform in PLATFORMS_WITH_AN_EMAIL}, "boto3_loaded": False}
    for platform in PLATFORMS_WITH_AN_EMAIL:  # each guest really had an email, and was imported
        sample = SAMPLES[platform]
        imported = [c for c in customers if c[sample.id_field] == sample.guest_id(1)]
        assert len(imported) == 1 and imported[0]["email"], platform


def test_loading_app_builds_no_model_and_loads_no_connector():
    """``import app`` (every function's init) costs little more than Chalice: each handler loads its own code
    when first called. A module-level import of a model or a connector on that path fails here, without
    timing anything (the figures: docs/performance.md, "Cold start")."""
    script = ("import json, sys; import app; print(json.dumps(sorted(m for m in sys.modules if m.startswith("
              "('pydantic.fields', 'chalicelib.connectors', 'chalicelib.domain', 'chalicelib.flow', 'httpx', 'boto3')))))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=60,
                            check=True, env={"PATH": os.environ["PATH"]})
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
