"""International email addresses (issue 14): internationalised domains (IDNA 2008 / UTS #46) leave as
their A-label, UTF-8 local parts (RFC 6531) in NFC, so one address written either way is one string and
one Fullwhere customer (docs/platforms.md, "Rules every connector follows")."""

from __future__ import annotations

import pytest

from chalicelib.core.normalise import normalise_email
from chalicelib.domain.fullwhere.models import CustomerImport
from sandbox.platforms.zelty import ZeltyEmulator
from tests.test_zelty import API_KEY, SECRET, order, register, send


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("anna@müller.de", "anna@xn--mller-kva.de"),
        ("anna@xn--mller-kva.de", "anna@xn--mller-kva.de"),
        ("Anna@MÜLLER.de", "anna@xn--mller-kva.de"),  # UTS #46 maps the domain to lower case
        ("ANNA@XN--MLLER-KVA.DE", "anna@xn--mller-kva.de"),
        ("иван@пример.рф", "иван@xn--e1afmkfd.xn--p1ai"),  # a Unicode top-level domain too
        ("Иван@ПРИМЕР.РФ", "иван@xn--e1afmkfd.xn--p1ai"),
        ("иван@xn--e1afmkfd.xn--p1ai", "иван@xn--e1afmkfd.xn--p1ai"),
        ("xiaoming@例子.中国", "xiaoming@xn--fsqu00a.xn--fiqs8s"),
        ("anna@ｍüller。de", "anna@xn--mller-kva.de"),  # full-width letter and ideographic full stop
        ("hans@straße.de", "hans@xn--strae-oqa.de"),  # IDNA 2008: "ß" is kept, not turned into "ss"
        ("josé@example.com", "josé@example.com"),
        ("José@Example.COM", "josé@example.com"),
        ("jose\u0301@example.com", "josé@example.com"),  # decomposed "é" (NFD) becomes the composed one
        ("  Jane.Doe@Example.COM ", "jane.doe@example.com"),
        ("a@b.xn--p1ai", "a@b.xn--p1ai"),
    ],
)
def test_international_addresses_are_kept_in_one_form(raw, expected):
    assert normalise_email(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "anna@xn--zz.de",  # not valid punycode
        "anna@xn--a.de",  # decodes to a label IDNA forbids
        "anna@-müller.de",  # hyphen at the start of a label
        "anna@müller-.de",
        "anna@mül_ler.de",  # "_" is not allowed in a host name
        "anna@müller..de",
        "anna@müller.de.",
        "anna@müller",  # no dot
        "anna@müller.123",  # numeric top-level domain
        "anna@" + "ü" * 64 + ".de",  # label longer than 63 octets once encoded
        "müller.de",  # no @
        "@müller.de",
        "josé@",
        "jo sé@müller.de",
        "josé@mül ler.de",
        "jo\"sé@müller.de",
        "a@@müller.de",
        "ü" * 33 + "@example.com",  # 66 octets: over RFC 5321's 64 for a local part
        "a@" + ".".join(["ü" * 20] * 11) + ".de",  # short in characters, over 254 once the domain is encoded
    ],
)
def test_what_is_not_an_address_is_refused(raw):
    assert normalise_email(raw) is None


def test_local_part_octets_are_counted_not_characters():
    assert normalise_email("ü" * 32 + "@example.com") == "ü" * 32 + "@example.com"  # 64 octets: the limit


def test_a_value_longer_than_an_address_is_refused_rather_than_cut():
    # Cut at 254 characters, this would be a valid-looking address in another domain.
    assert normalise_email("a@" + "b" * 60 + "." + "c" * 60 + "." + "d" * 60 + "." + "e" * 58 + ".example.com") is None


@pytest.mark.parametrize("raw", ["anna@müller.de", "Иван@ПРИМЕР.РФ", "José@Example.COM", "jose\u0301@straße.de"])
def test_normalising_twice_changes_nothing_and_the_model_accepts_it(raw):
    once = normalise_email(raw)
    assert once is not None and normalise_email(once) == once
    assert CustomerImport(email=once).email == once  # lower-case, as the model demands


# -- over HTTP: a Zelty guest with only an international email ----------------------------------

@pytest.fixture
def zb(bridge):
    zelty = ZeltyEmulator(api_key=API_KEY)
    zelty.start()
    try:
        register(zelty, "v2")
        bridge.configure(zelty_webhook_secret=SECRET)
        bridge.zelty = zelty
        yield bridge
    finally:
        zelty.stop()


def _guest(mail: str) -> dict:
    return {"id": 5550001, "fname": "Anna", "name": "Müller", "mail": mail, "phone": None}


def test_guest_with_only_an_idn_email_reaches_fullwhere_with_the_a_label(zb):
    assert send(zb, order(_guest("Anna@Müller.de"))).status_code == 200
    [customer] = zb.customers()
    assert customer["email"] == "anna@xn--mller-kva.de"
    assert customer["phoneNumber"] is None
    assert customer["zeltyId"] == "5550001"


def test_the_same_guest_spelled_both_ways_is_one_customer(zb):
    assert send(zb, order(_guest("иван@пример.рф"), event_id="idn-1")).status_code == 200
    assert send(zb, order(_guest("ИВАН@XN--E1AFMKFD.XN--P1AI"), event_id="idn-2")).status_code == 200
    sent = [r.body["email"] for r in zb.fullwhere.requests if r.path == "/partners/customer"]
    assert sent == ["иван@xn--e1afmkfd.xn--p1ai"] * 2
    [customer] = zb.customers()  # Fullwhere merged the second import into the first
    assert customer["email"] == "иван@xn--e1afmkfd.xn--p1ai"
