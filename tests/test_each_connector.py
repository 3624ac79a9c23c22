"""The same promises, checked for every platform the bridge knows: each built-in connector and each shipped
preset, as :func:`sandbox.platforms.names` lists them, so a new connector is covered without anyone adding it.

Nothing here knows a platform: each one's sample guest, payload and signing come from its sandbox module
(``sandbox/platforms/<name>.py``), and a forged request is the genuine one with every value ``sign()`` added
altered. The bridge runs through Chalice's test client and talks HTTP to the sandbox's emulators and to moto.
Every test's log lines are also scanned for personal data and secrets (``tests/conftest.py``).
"""

from __future__ import annotations

import string
import sys
from collections.abc import Callable

import pytest

from sandbox import platforms
from sandbox.emulators.base import Fault
from sandbox.platforms import Delivery, Sample
from tests.support.log_leaks import bridge_log_lines
from tests.support.sandbox_bridge import sandbox_bridge

PLATFORMS = platforms.names()


def _sample(name: str) -> Sample | None:
    try:
        return platforms.module(name).SAMPLE
    except (ImportError, AttributeError):
        return None  # its tests fail in the `sample` fixture, and the meta-test names it


def _params(*skips: tuple[Callable[[Sample], bool], str]) -> list:
    """Every platform; the ones a promise does not apply to are skipped with the reason.
    ``skips``: (true of the samples of those platforms, reason)."""
    params = []
    for name in PLATFORMS:
        sample = _sample(name)
        reasons = [reason for applies, reason in skips if sample is not None and applies(sample)]
        params.append(pytest.param(name, id=name, marks=[pytest.mark.skip(reason=reasons[0])] if reasons else []))
    return params


PULLED = (lambda sample: sample.pulled, "its events are pulled: there is no webhook request (nor HTTP answer)")
NOT_IMPORTING = (lambda sample: not sample.imports, "its webhooks are acknowledged but import nothing")
EVERY_PLATFORM = _params()
WEBHOOK_PLATFORMS = _params(PULLED)
IMPORTING_PLATFORMS = _params(NOT_IMPORTING)
IMPORTING_WEBHOOK_PLATFORMS = _params(NOT_IMPORTING, PULLED)

_guests = iter(range(1, 1_000_000))


# -- the bridge on the sandbox ---------------------------------------------------------------------

@pytest.fixture
def stack(sandbox, moto_endpoint, monkeypatch):
    with sandbox_bridge(sandbox, moto_endpoint, monkeypatch, "each") as bridge:
        yield bridge


@pytest.fixture
def sample(request) -> Sample:
    return platforms.module(request.param).SAMPLE


# -- forging, generically --------------------------------------------------------------------------

def credentials(delivery: Delivery) -> dict[tuple[str, str], str]:
    """Every value the platform's ``sign()`` added: its headers (Content-Type aside) and query values."""
    found = {("header", name): value for name, value in delivery.headers.items() if name.lower() != "content-type"}
    return {**found, **{("query", name): value for name, value in delivery.query.items()}}


def altered(value: str) -> str:
    """``value`` with its middle character replaced by the next one of the same kind (digit, hex digit,
    letter), so the value keeps its format but is wrong. Not the last character: that of a Base64 digest may
    hold only padding bits, which decode to the same bytes."""
    assert value, "an empty credential cannot be forged"
    middle = len(value) // 2
    character = value[middle]
    for alphabet in (string.digits, "abcdef", "ABCDEF", string.ascii_lowercase, string.ascii_uppercase):
        if character in alphabet:
            replacement = alphabet[(alphabet.index(character) + 1) % len(alphabet)]
            break
    else:
        replacement = "A"
    return value[:middle] + replacement + value[middle + 1:]


def forged(delivery: Delivery, only: tuple[str, str] | None = None) -> Delivery:
    """The same request with every credential altered (``only``: just that one, a key of :func:`credentials`)."""
    def forge(where: str, name: str, value: str) -> str:
        if (where == "header" and name.lower() == "content-type") or (only is not None and only != (where, name)):
            return value
        return altered(value)

    return Delivery(delivery.platform, delivery.body,
                    {name: forge("header", name, value) for name, value in delivery.headers.items()},
                    {name: forge("query", name, value) for name, value in delivery.query.items()})


def printed_again(capsys) -> str:
    """The test's stdout so far, written back so that the log scan of ``tests/conftest.py`` still sees it."""
    out = capsys.readouterr().out
    sys.stdout.write(out)
    return out


# -- the promises ----------------------------------------------------------------------------------

@pytest.mark.parametrize("sample", EVERY_PLATFORM, indirect=True)
def test_a_genuine_delivery_becomes_one_customer_with_the_platform_id(stack, sample, capsys):
    n = next(_guests)
    response = stack.deliver(sample, n)
    if response is not None:
        assert response.status_code == 200, response.body[:300]
    if not sample.imports:
        assert stack.customers() == [] and stack.sandbox.fullwhere.requests_matching("POST") == []
        return
    [customer] = stack.customers()
    assert customer[sample.id_field] == sample.guest_id(n)
    assert customer["metadata"]["source"] == sample.platform

    # Nothing personal in the logs (conftest scans them too, for the fixtures' data and the secrets).
    out = printed_again(capsys)
    assert any(sample.platform in line for line in bridge_log_lines(out)), "the bridge logged nothing"
    # (The sample's last names are not distinctive: Zenchef's guest is "Chef".)
    personal = [value for value in (customer.get("email"), customer.get("firstName")) if value]
    assert personal, customer
    for value in personal:
        assert value not in out and value.lower() not in out.lower(), f"{value!r} is in the logs"


@pytest.mark.parametrize("sample", WEBHOOK_PLATFORMS, indirect=True)
def test_a_forged_request_is_401_and_imports_nothing(stack, sample):
    genuine = sample.prepare(stack.sandbox, next(_guests))
    forgery = forged(genuine)
    signed, altered_values = credentials(genuine), credentials(forgery)
    assert signed, f"{sample.platform}: sign() added nothing to forge"
    assert signed.keys() == altered_values.keys()
    assert all(altered_values[key] != value for key, value in signed.items()), (signed, altered_values)

    response = stack.post(forgery)
    assert response.status_code == 401, response.body[:300]
    assert response.json_body["reason"]
    # Each credential alone is checked too (a signature's inputs included: a sequence id, a timestamp, a key id).
    for key in signed:
        response = stack.post(forged(genuine, only=key))
        assert response.status_code == 401, (key, response.body[:300])
    assert stack.customers() == [] and stack.sandbox.fullwhere.requests == []
    assert stack.retry_jobs() == []
    assert stack.post(genuine).status_code == 200  # so it is the alterations that were refused


@pytest.mark.parametrize("body", [b'{"not": "the platform\'s shape"', b'[{"not": "the platform\'s shape"}]'],
                         ids=["invalid-json", "json-array"])
@pytest.mark.parametrize("sample", WEBHOOK_PLATFORMS, indirect=True)
def test_a_malformed_body_signed_correctly_is_400_with_a_reason(stack, sample, body):
    response = stack.post(platforms.delivery(stack.sandbox, sample.platform, body))
    assert response.status_code == 400, response.body[:300]
    assert response.json_body["error"] == "malformed" and response.json_body["reason"]
    assert stack.customers() == [] and stack.retry_jobs() == []


@pytest.mark.parametrize("sample", IMPORTING_PLATFORMS, indirect=True)
def test_fullwhere_failing_queues_the_job_and_the_worker_imports_it_once_it_recovers(stack, sample):
    stack.sandbox.fullwhere.faults.always(Fault("status", status=503, retry_after=0))
    n = next(_guests)
    response = stack.deliver(sample, n)
    assert response is None or response.status_code == 200, response.body[:300]
    assert stack.customers() == []
    [job] = stack.retry_jobs()
    assert job["platform"] == sample.platform and job["stage"] == "import"

    stack.sandbox.fullwhere.faults.clear()
    stack.drain()

    assert stack.imported_ids(sample) == [sample.guest_id(n)]
    assert stack.retry_jobs() == [] and stack.dead_letters() == []


@pytest.mark.parametrize("sample", IMPORTING_PLATFORMS, indirect=True)
def test_a_permanent_rejection_lands_in_the_dead_letter_queue_with_fullwheres_reason(stack, sample):
    stack.sandbox.fullwhere.faults.always(Fault("status", status=400, body='{"message":"phoneNumber must be valid"}'))
    response = stack.deliver(sample, next(_guests))
    assert response is None or response.status_code == 200, response.body[:300]
    [letter] = stack.dead_letters()
    assert letter["kind"] == "permanent"
    assert letter["reason"] == 'Fullwhere answered 400: {"message":"phoneNumber must be valid"}'
    assert letter["job"]["platform"] == sample.platform
    assert stack.retry_jobs() == [] and stack.customers() == []


@pytest.mark.parametrize("sample", IMPORTING_WEBHOOK_PLATFORMS, indirect=True)
def test_fullwhere_down_and_the_queue_unreachable_is_503(stack, sample):
    stack.sandbox.fullwhere.faults.always(Fault("status", status=500))
    stack.configure(AWS_ENDPOINT_URL_SQS="http://127.0.0.1:9")
    response = stack.deliver(sample, next(_guests))
    assert response.status_code == 503, response.body[:300]
    assert response.json_body["error"] == "unavailable"
    assert stack.customers() == []


@pytest.mark.parametrize("sample", IMPORTING_PLATFORMS, indirect=True)
def test_a_delivery_repeated_is_one_customer(stack, sample):
    n = next(_guests)
    for _ in range(3):  # signed again each time, as a platform's redelivery is
        response = stack.deliver(sample, n)
        assert response is None or response.status_code == 200, response.body[:300]
    assert stack.imported_ids(sample) == [sample.guest_id(n)]


# -- the suite follows the registry ----------------------------------------------------------------

def test_the_suite_covers_every_builtin_connector_and_every_preset():
    """A connector or preset without a sandbox module (``sandbox/platforms/<name>.py``) fails here."""
    from chalicelib.core.registry import builtin_names
    from chalicelib.domain.sources import PRESETS_DIR

    expected = {*builtin_names(), *(path.stem for path in PRESETS_DIR.glob("*.json"))}
    covered = {param.values[0] for param in EVERY_PLATFORM}
    assert covered == expected, {"without a sandbox module": sorted(expected - covered),
                                 "not a platform": sorted(covered - expected)}
    for name in sorted(covered):
        sample = _sample(name)
        assert sample is not None and sample.platform == name, f"{name}: its sandbox module has no SAMPLE"
        # A declarative source is signed as the sources document declares; a code platform by its module.
        assert callable(getattr(platforms.module(name), "sign", None)) or name not in builtin_names(), name
    assert len(covered) == len(EVERY_PLATFORM)
