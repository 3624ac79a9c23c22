"""Unit tests of the small pure pieces: normalisation, masking, signatures, backoff, name splitting."""

from __future__ import annotations

import pytest

from chalicelib.connectors.deliveroo import split_initial
from chalicelib.connectors.shared import cursor_pages
from chalicelib.connectors.ubereats import eater_id
from chalicelib.core.errors import RetryableError
from chalicelib.core.normalise import clean_text, language_code, normalise_email, normalise_phone
from chalicelib.core.signatures import equal, hex_signature_matches, hmac_sha256_hex
from chalicelib.flow.dispatch import backoff_seconds
from chalicelib.infra.http import parse_retry_after
from chalicelib.infra.logs import mask_email, mask_phone, redact_url, scrub
from chalicelib.infra.settings import load_settings


@pytest.mark.parametrize(
    "raw, regions, expected",
    [
        ("06 12 34 56 78", ("FR",), "+33612345678"),
        ("+33 6 12 34 56 78", (), "+33612345678"),
        ("0033612345678", ("FR",), "+33612345678"),
        ("00420601123456", ("FR", "US"), "+420601123456"),
        ("(202) 555-0143", ("FR", "US"), "+12025550143"),
        ("12", ("FR",), None),
        ("call me", ("FR",), None),
        (None, ("FR",), None),
        (612345678, ("FR",), None),
    ],
)
def test_phone_normalisation_to_e164(raw, regions, expected):
    assert normalise_phone(raw, *regions) == expected


@pytest.mark.parametrize(
    "raw, expected",
    [
        (" Jane.Doe@Example.COM ", "jane.doe@example.com"),
        ("élodie@exemple.fr", "élodie@exemple.fr"),
        ("no-at-sign", None),
        ("a@b", None),
        ("a@@b.com", None),
        ("a b@c.com", None),
        ("a..b@c.com", None),
        ("", None),
        (42, None),
    ],
)
def test_email_normalisation(raw, expected):
    assert normalise_email(raw) == expected


def test_text_cleaning_and_language():
    assert clean_text("  Jean \t Dupont\x00 ") == "Jean Dupont"
    assert clean_text("   ") is None
    assert [language_code(v) for v in ("en-GB", "fr_FR", "DE", "eng", None)] == ["en", "fr", "de", None, None]


def test_masking_keeps_no_usable_personal_data():
    assert mask_email("jane.doe@example.com") == "j***@e***.com"
    assert mask_phone("+33612345678") == "+33*******78"
    assert "secret" not in redact_url("https://bridge/webhooks/mews?Token=secret&x=1")
    text = scrub("Fullwhere answered 400: jane@example.com already uses +33 6 12 34 56 78")
    assert "jane@example.com" not in text and "12 34 56" not in text


def test_signature_helpers_are_exact_and_refuse_empty_secrets():
    signature = hmac_sha256_hex("key", b"body")
    assert hex_signature_matches("key", b"body", signature.upper())
    assert not hex_signature_matches("key", b"body ", signature)
    assert not hex_signature_matches("", b"body", hmac_sha256_hex("", b"body"))
    assert not equal("", "") and not equal(None, None) and equal("a", "a")


def test_backoff_grows_exponentially_with_jitter_and_honours_retry_after():
    settings = load_settings({"RETRY_BASE_SECONDS": "10", "RETRY_MAX_SECONDS": "600"})
    for attempt, ceiling in [(1, 10), (2, 20), (3, 40), (8, 600), (20, 600), (5000, 600)]:  # 5000: a week held
        delays = [backoff_seconds(attempt, settings) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 1  # jittered
    assert backoff_seconds(1, settings, retry_after=120) == 120
    assert backoff_seconds(8, settings, retry_after=700) == 700  # a 429's wait beyond the cap is honoured...
    assert backoff_seconds(1, settings, retry_after=5000) == 900  # ...up to the longest delay SQS allows


def test_retry_after_parsing():
    assert parse_retry_after("120") == 120
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


@pytest.mark.parametrize(
    "name, expected",
    [("Omid M.", ("Omid", "M.")), ("HK A.", ("HK", "A.")), ("HK", ("HK", None)),
     ("Jean Paul", ("Jean Paul", None)), ("Anne Marie K", ("Anne Marie", "K")), (None, (None, None))],
)
def test_deliveroo_first_name_with_initial_is_split(name, expected):
    assert split_initial(name) == expected


def test_ubereats_eater_id_is_only_taken_when_unambiguous():
    assert eater_id({"eaters": [{"id": "a", "first_name": "Larry"}]}, "Larry") == "a"
    group = {"eaters": [{"id": "a", "first_name": "Larry"}, {"id": "b", "first_name": "Moe"}]}
    assert eater_id(group, "Moe") == "b"
    assert eater_id({"eaters": [{"id": "a", "first_name": "Larry"}, {"id": "b", "first_name": "Larry"}]}, "Larry") is None
    assert eater_id({"eaters": []}, "Larry") is None
    assert eater_id({}, "Larry") is None


def test_cursor_pages_follows_each_page_s_cursor_until_a_page_is_empty_or_gives_none():
    pages = {None: ([1, 2], "b"), "b": ([3], "c"), "c": ([], "d")}
    asked: list[str | None] = []

    def read_page(cursor):
        asked.append(cursor)
        return pages[cursor]

    assert list(cursor_pages(read_page, "API", 10)) == [[1, 2], [3], []]
    assert asked == [None, "b", "c"]
    assert list(cursor_pages(lambda cursor: ([1], None), "API", 10)) == [[1]]


def test_cursor_pages_refuses_a_looping_cursor_and_too_many_pages_as_retryable():
    looping = {None: ([1], "a"), "a": ([2], "b"), "b": ([3], "a")}
    with pytest.raises(RetryableError, match="API gave the same cursor twice"):
        list(cursor_pages(lambda cursor: looping[cursor], "API", 10))
    endless = cursor_pages(lambda cursor: ([1], str(int(cursor or 0) + 1)), "API", 3)
    with pytest.raises(RetryableError, match="API listed more than 3 pages in one window"):
        list(endless)
