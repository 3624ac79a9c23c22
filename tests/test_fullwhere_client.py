"""The Fullwhere client against the emulator: all four endpoints, and how each failure is classified."""

from __future__ import annotations

import time

import pytest

from chalicelib.core.errors import Held, OutcomeUnknown, PermanentError, RetryableError
from chalicelib.domain.fullwhere import CustomerImport, FullwhereClient
from chalicelib.infra.http import Deadline, reset_http_client
from sandbox.emulators.base import Fault


@pytest.fixture
def fullwhere(emulators):
    emulator = emulators["fullwhere"]
    emulator.reset()
    reset_http_client()
    yield emulator
    reset_http_client()


@pytest.fixture
def client(fullwhere):
    return FullwhereClient(fullwhere.url, "test-key", "test-secret")


def deadline(seconds: float = 2.0) -> Deadline:
    return Deadline(seconds, call_timeout=seconds)


JANE = CustomerImport(firstName="Jane", email="jane@example.com", phoneNumber="+33612345678", mewsId="m-1")


def test_import_creates_then_merges_only_null_fields(client, fullwhere):
    created = client.import_customer(JANE, deadline())
    merged = client.import_customer(
        CustomerImport(firstName="Janet", lastName="Doe", email="jane@example.com", phoneNumber="+33612345678"), deadline()
    )
    assert created.created is True and merged.created is False
    assert created.customer_id == merged.customer_id
    [stored] = fullwhere.customers()
    assert (stored["firstName"], stored["lastName"], stored["mewsId"]) == ("Jane", "Doe", "m-1")


def test_get_and_list_customers(client):
    result = client.import_customer(JANE, deadline())
    customer = client.get_customer(result.customer_id, deadline())
    assert customer.email == "jane@example.com" and customer.mewsId == "m-1"
    assert client.get_customer("00000000-0000-4000-8000-000000000000", deadline()) is None
    listing = client.list_customers(deadline(), page=1, limit=10)
    assert [c["id"] for c in listing["data"]] == [result.customer_id]
    with pytest.raises(ValueError):
        client.list_customers(deadline(), limit=101)


def test_batch_import_uses_the_assumed_envelope(client, fullwhere):
    response = client.import_batch([JANE, CustomerImport(email="other@example.com")], deadline())
    assert [r["status"] for r in response["results"]] == ["created", "created"]
    assert len(fullwhere.customers()) == 2


def test_null_fields_are_not_sent(client, fullwhere):
    client.import_customer(CustomerImport(email="a@example.com"), deadline())
    [request] = fullwhere.requests_matching(path="/partners/customer")
    assert request.body == {"email": "a@example.com"}
    assert request.headers["x-api-key"] == "test-key" and request.headers["x-api-secret"] == "test-secret"


@pytest.mark.parametrize("status", [408, 425, 429, 500, 502, 503, 504])
def test_retryable_statuses(client, fullwhere, status):
    fullwhere.faults.add(Fault("status", status=status, retry_after=7))
    with pytest.raises(RetryableError) as error:
        client.import_customer(JANE, deadline())
    assert str(status) in error.value.reason
    assert error.value.retry_after == 7


def test_dropped_connection_is_retryable_with_an_unknown_outcome(client, fullwhere):
    fullwhere.faults.add(Fault("drop"))
    with pytest.raises(OutcomeUnknown, match="closed the connection before answering"):
        client.import_customer(JANE, deadline())
    assert fullwhere.customers() == []


def test_timeout_is_retryable_even_though_the_import_may_still_land(client, fullwhere):
    """Why every retry must be idempotent: the server finishes the import after we gave up."""
    fullwhere.faults.add(Fault("delay", seconds=0.6))
    with pytest.raises(RetryableError, match="timed out"):
        client.import_customer(JANE, deadline(0.3))
    for _ in range(40):
        if fullwhere.customers():
            break
        time.sleep(0.05)
    assert len(fullwhere.customers()) == 1
    client.import_customer(JANE, deadline())  # the retry merges instead of duplicating
    assert len(fullwhere.customers()) == 1


def test_other_4xx_is_permanent_and_carries_fullwhere_text_truncated(client, fullwhere):
    fullwhere.faults.add(Fault("status", status=422, body="x" * 1000 + " invalid"))
    with pytest.raises(PermanentError) as error:
        client.import_customer(JANE, deadline())
    assert error.value.reason.startswith("Fullwhere answered 422: xxx")
    assert len(error.value.reason) < 350


def test_wrong_credentials_are_held_not_the_events_fault(fullwhere):
    with pytest.raises(Held, match="401") as refused:
        FullwhereClient(fullwhere.url, "test-key", "wrong").import_customer(JANE, deadline())
    assert refused.value.cause == "credentials_rejected"


def test_malformed_2xx_body_still_counts_as_imported(client, fullwhere):
    fullwhere.faults.add(Fault("malformed"))
    result = client.import_customer(JANE, deadline())
    assert result.status == 200 and result.customer_id is None


def test_missing_credentials_are_held_before_any_call():
    with pytest.raises(Held, match="not configured") as missing:
        FullwhereClient("http://127.0.0.1:9", None, "secret")
    assert missing.value.cause == "not_configured"


def test_spent_budget_raises_before_calling(client, fullwhere):
    with pytest.raises(RetryableError, match="budget"):
        client.import_customer(JANE, deadline(0.0))
    assert fullwhere.requests == []


def test_import_model_follows_the_documented_schema():
    fields = set(CustomerImport.model_fields)
    assert {"zenchefId", "ubereatsId", "deliverooId", "zeltyId", "sevenroomsId", "metaId", "mewsId", "oracleId",
            "partoucheId", "comoId", "theForkId", "chr365Id"} <= fields
    with pytest.raises(ValueError):
        CustomerImport(language="EN")
    with pytest.raises(ValueError):
        CustomerImport(metadata={"orders": 3})
    with pytest.raises(ValueError):
        CustomerImport(nickname="x")
    assert CustomerImport(emailOptin=None).payload() == {}
