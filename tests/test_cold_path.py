"""boto3 costs ~170 ms to import: the common path (a guest with an email) must never load it."""

from __future__ import annotations

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
