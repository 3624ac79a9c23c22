"""Issue 11: deeply nested JSON, and guests in tracebacks.

A correctly signed body of a few KB nesting a few hundred levels used to be accepted, then break where the
event was queued (pydantic's serialiser gives up near 255 levels, ``dataclasses.asdict`` near 1000): a 500,
and Chalice's traceback printed ``Interrupted``'s payload, the guest's name, email and phone. Now the body is
refused when read (400, ``connectors/payload.MAX_NESTING``), ``Interrupted`` shows its stage and reason only,
and the log scan of every test (tests/conftest.py) reads Chalice's own error output and stderr too.

Requests go through Chalice's test client to the bridge, which talks HTTP to the sandbox's emulators and to
moto's server.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import traceback
import uuid
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Any

import pytest

from sandbox import aws as local_aws
from sandbox.emulators.base import Fault
from sandbox.platforms import delivery, fixture
from sandbox.platforms.mews import ENTERPRISE as MEWS_ENTERPRISE
from sandbox.platforms.mews import make_customer, make_webhook
from sandbox.stack import FULLWHERE_KEY, Sandbox
from tests.support.sandbox_bridge import bridge_client, own_aws

ROOT = Path(__file__).parent.parent
# Chalice(app_name="fullwhere-bridge") logs through the logger of that name, in Chalice.FORMAT_STRING.
CHALICE_LOGGER = "fullwhere-bridge"
CHALICE_FORMAT = "%(name)s - %(levelname)s - %(message)s"


@pytest.fixture(scope="module")
def aws_settings(moto_endpoint):
    return own_aws(moto_endpoint, "nesting")


@pytest.fixture
def client(sandbox, aws_settings, monkeypatch):
    sandbox.reset()
    with bridge_client(monkeypatch, {**sandbox.environment(), **aws_settings}) as test_client:
        yield test_client
    sandbox.fullwhere.faults.clear()


@pytest.fixture
def chalice_log():
    """Every line Chalice's app logger prints while the test runs (tracebacks included), wherever its
    stream points."""
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.extend(self.format(record).splitlines())

    handler = Keep()
    handler.setFormatter(logging.Formatter(CHALICE_FORMAT))
    logger = logging.getLogger(CHALICE_LOGGER)
    logger.addHandler(handler)
    yield lines
    logger.removeHandler(handler)


def nested(depth: int) -> Any:
    """``depth`` levels of objects and arrays, alternately."""
    node: Any = "x"
    for level in range(depth):
        node = {"a": node} if level % 2 else [node]
    return node


# Each platform's documented guest, and a body carrying it plus a deep value where the platform allows
# extra fields. Zenchef and Chr365 are declarative sources (a signature over the body; the guest is in the
# body), Mews authenticates with a token in the URL and the bridge fetches the guest from its API.
def zenchef_body(sandbox: Sandbox, deep: Any) -> tuple[dict, list[str]]:
    document = fixture("sources/zenchef_booking.json")
    document["booking"]["comments"] = deep
    return document, ["Camille", "Moreau", "camille.moreau@example.fr", "Camille.Moreau@Example.fr", "623456789"]


def chr365_body(sandbox: Sandbox, deep: Any) -> tuple[dict, list[str]]:
    document = fixture("sources/chr365_customers.json")
    document["customers"][0]["preferences"] = deep
    return document, ["Roux", "ines.roux@example.fr", "611223344", "Hugo", "Petit", "hugo.petit@example.fr"]


def mews_body(sandbox: Sandbox, deep: Any) -> tuple[dict, list[str]]:
    customer_id = str(uuid.uuid4())
    sandbox.platforms["mews"].add_customer(MEWS_ENTERPRISE, make_customer(customer_id))
    document = make_webhook(MEWS_ENTERPRISE, [("CustomerAdded", customer_id)])
    document["Events"][0]["Value"]["Extra"] = deep
    return document, ["John", "Smith", "j.smith@example.com", "420123456789"]


BODIES = {"zenchef": zenchef_body, "chr365": chr365_body, "mews": mews_body}


def queued(moto_endpoint: str, aws_settings: dict[str, str]) -> int:
    return sum(local_aws.queue_depth(moto_endpoint, aws_settings[name])
               for name in ("RETRY_QUEUE_URL", "DEAD_LETTER_QUEUE_URL"))


@pytest.mark.parametrize("depth", [100, 300, 600])
@pytest.mark.parametrize("platform", sorted(BODIES))
def test_a_signed_body_nested_too_deeply_is_400_naming_the_depth_and_nothing_leaks(
        sandbox, client, moto_endpoint, aws_settings, chalice_log, capfd, platform, depth):
    """Fullwhere is down, so an accepted event would have had to be queued: the path that answered 500
    (PydanticSerializationError at 255-300 levels, RecursionError at 500) and printed the guest."""
    sandbox.fullwhere.faults.always(Fault("status", status=503, retry_after=0))
    document, guest = BODIES[platform](sandbox, nested(depth))
    body = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()
    assert len(body) < 8 * 1024  # a small body: the size limit (413) is no defence against this
    waiting = queued(moto_endpoint, aws_settings)

    signed = delivery(sandbox, platform, body)
    response = client.http.post(signed.path, headers=signed.headers, body=signed.body)

    captured = capfd.readouterr()
    output = "\n".join([captured.out, captured.err, *chalice_log])
    leaked = sorted(value for value in guest if value in output)
    assert (response.status_code, leaked) == (400, []), response.body[:300]
    assert response.json_body["error"] == "malformed"
    assert "nested too deeply (more than 64 levels" in response.json_body["reason"]
    assert chalice_log == []  # no traceback at all
    assert sandbox.fullwhere.requests == []  # nothing imported, not even tried
    if platform == "mews":
        assert sandbox.platforms["mews"].requests == []  # the guest was not even fetched
    assert queued(moto_endpoint, aws_settings) == waiting  # nothing queued or dead-lettered


@pytest.mark.parametrize("platform", sorted(BODIES))
def test_a_body_as_deep_as_the_limit_is_still_imported(sandbox, client, platform):
    """64 levels in all, the envelope included: accepted and imported (the limit is not off by one)."""
    document, _ = BODIES[platform](sandbox, {})
    envelope_depth = _depth(document)
    document, _ = BODIES[platform](sandbox, nested(64 - envelope_depth + 1))
    assert _depth(document) == 64
    signed = delivery(sandbox, platform, json.dumps(document).encode())
    response = client.http.post(signed.path, headers=signed.headers, body=signed.body)
    assert response.status_code == 200, response.body[:300]
    assert sandbox.fullwhere.customers(FULLWHERE_KEY)

    document, _ = BODIES[platform](sandbox, nested(64 - envelope_depth + 2))
    assert _depth(document) == 65
    signed = delivery(sandbox, platform, json.dumps(document).encode())
    response = client.http.post(signed.path, headers=signed.headers, body=signed.body)
    assert response.status_code == 400 and "more than 64 levels" in response.json_body["reason"]


def _depth(node: Any) -> int:
    children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else None
    if children is None:
        return 0
    return 1 + max((_depth(child) for child in children), default=0)


def test_the_real_payloads_nest_far_less_than_the_limit():
    """The limit leaves room: the deepest documented payload (an OPERA Cloud profile) nests 10 levels."""
    from chalicelib.connectors.payload import MAX_NESTING, load_json

    shared = ROOT.parent / "shared" / "real_payloads"
    paths = [*(ROOT / "tests" / "fixtures").rglob("*.json"), *(shared.rglob("*.json") if shared.is_dir() else [])]
    deepest = max(_depth(load_json(path.read_bytes())) for path in paths)
    assert deepest <= 10 < MAX_NESTING < 255 // 2


# -- Interrupted: the stage and the reason, never the guest -----------------------------------------------

GUEST = ["Camille", "Moreau", "camille.moreau@example.fr", "+33623456789", "33623456789"]


def shown(exc: BaseException) -> list[str]:
    """Every way an exception is printed: repr, str, its args, and a traceback (what Chalice's logger and
    the Lambda runtime print for an exception that leaves a handler)."""
    return [repr(exc), str(exc), repr(exc.args), "".join(traceback.format_exception(exc))]


def test_interrupted_shows_its_stage_and_reason_never_its_payload():
    from chalicelib.core.errors import RetryableError
    from chalicelib.flow.pipeline import Interrupted

    customer = {"firstName": "Camille", "lastName": "Moreau", "email": "camille.moreau@example.fr",
                "phoneNumber": "+33623456789", "zenchefId": "cust-5521"}
    interrupted = Interrupted(RetryableError("Fullwhere answered 503"), "import", {"customer": customer})
    for text in shown(interrupted):
        assert [value for value in GUEST if value in text] == [], text
        assert "import" in text and "Fullwhere answered 503" in text, text
    assert interrupted.payload == {"customer": customer}  # still there to resume from
    assert interrupted.retryable


def test_an_import_interrupted_against_fullwhere_prints_no_guest(sandbox, client):
    """The real pipeline, Fullwhere answering 400 with the guest's email in its message: the Interrupted it
    raises keeps the mapped guest to resume from, and prints neither it nor the email in the reason."""
    from chalicelib.connectors import get_connector
    from chalicelib.connectors.base import WebhookRequest
    from chalicelib.domain.tenants import get_directory
    from chalicelib.flow import pipeline
    from chalicelib.infra.http import Deadline
    from chalicelib.infra.settings import get_settings

    sandbox.fullwhere.faults.always(
        Fault("status", status=400, body='{"message": "email camille.moreau@example.fr is already taken"}'))
    signed = delivery(sandbox, "zenchef", json.dumps(fixture("sources/zenchef_booking.json")).encode())
    request = WebhookRequest("zenchef", signed.body, {k.lower(): v for k, v in signed.headers.items()}, signed.query)
    connector = get_connector("zenchef")
    connector.verify(request)
    event = connector.parse(request).events[0]
    tenant = get_directory().route("zenchef", event.account_id)

    with pytest.raises(pipeline.Interrupted) as caught:
        pipeline.run(connector, event, tenant, get_settings(), Deadline(2, call_timeout=2))

    interrupted = caught.value
    assert interrupted.payload["customer"]["email"] == "camille.moreau@example.fr"
    assert len(sandbox.fullwhere.requests_matching(method="POST", path="/partners/customer")) == 1
    for text in shown(interrupted):
        assert [value for value in GUEST if value in text] == [], text
        assert "import" in text and "Fullwhere answered 400" in text, text


# -- The log scan reads Chalice's error output and stderr ------------------------------------------------

# Throwaway tests run in a pytest of their own with the suite's conftest: each must pass on its own, and
# its output decides whether the scan fails it.
THROWAWAY = '''
import logging
import sys

from chalice import Chalice
from chalice.test import Client

ROOT = {root!r}


def test_chalice_traceback_of_an_exception_quoting_a_guest():
    # A route of an app with the bridge's name (so Chalice's logger is the bridge's) that raises: Chalice
    # answers 500 and its logger prints the traceback, the exception's message included.
    app = Chalice(app_name="fullwhere-bridge")

    @app.route("/boom")
    def boom():
        raise ValueError({{"customer": {{"email": "camille.moreau@example.fr"}}}})

    with Client(app, project_dir=ROOT) as client:
        assert client.http.get("/boom").status_code == 500


def test_the_app_logger_names_a_guest():
    from app import app

    app.log.error("could not import %s", "Camille Moreau")


def test_a_guest_on_stderr():
    sys.stderr.write("guest 06 23 45 67 89\\n")


def test_a_logger_passes_a_guest_to_the_root_logger():
    logging.getLogger("some.library").warning("sending %s", "ines.roux@example.fr")


def test_a_traceback_without_a_guest():
    from app import app

    try:
        raise RuntimeError("Fullwhere answered 503")
    except RuntimeError:
        app.log.error("Caught exception for path /webhooks/zenchef", exc_info=True)
    sys.stderr.write("nothing personal\\n")
'''


@pytest.fixture(scope="module")
def throwaway_results(tmp_path_factory) -> dict[str, str | None]:
    """Each throwaway test's failure message (``None`` when it passed)."""
    directory = tmp_path_factory.mktemp("throwaway")
    (directory / "test_throwaway.py").write_text(textwrap.dedent(THROWAWAY.format(root=str(ROOT))))
    report = directory / "report.xml"
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    finished = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.conftest", "-p", "no:cacheprovider", "-q",
         f"--junitxml={report}", "test_throwaway.py"],
        cwd=directory, env=environment, capture_output=True, text=True, timeout=120)
    assert report.exists(), finished.stdout[-2000:] + finished.stderr[-2000:]
    results = {}
    for case in ElementTree.parse(report).getroot().iter("testcase"):
        failure = case.find("failure")
        results[case.get("name")] = None if failure is None else (failure.get("message") or "") + (failure.text or "")
    return results


@pytest.mark.parametrize("name, leaked", [
    ("test_chalice_traceback_of_an_exception_quoting_a_guest", "camille.moreau@example.fr"),
    ("test_the_app_logger_names_a_guest", "Moreau"),
    ("test_a_guest_on_stderr", "23 45 67 89"),
    ("test_a_logger_passes_a_guest_to_the_root_logger", "ines.roux@example.fr"),
])
def test_a_guest_in_chalices_error_output_or_on_stderr_fails_the_test(throwaway_results, name, leaked):
    failure = throwaway_results[name]
    assert failure is not None, f"{name} passed: the scan did not read that output"
    assert "secrets or personal data" in failure and leaked in failure, failure[-600:]


def test_chalices_error_output_without_a_guest_passes_the_scan(throwaway_results):
    assert throwaway_results["test_a_traceback_without_a_guest"] is None
