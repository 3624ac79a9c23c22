"""Hostile input on every route: forged or mangled credentials, altered bodies, odd content types,
bytes that are not UTF-8, deeply nested or huge JSON, numbers where strings belong, unicode, SQL and
script text. Each request gets a clean answer (401, 400, 404, 405, 413 or the platform's ack), never a
500, and nothing forged reaches Fullwhere.

Routes: ``POST /webhooks/<platform>`` for every connector (the declarative sources and OPERA Cloud
included) and Meta's ``GET`` handshake. Requests go through Chalice's test client to the bridge, which
talks HTTP to the sandbox's emulators and to moto.
"""

from __future__ import annotations

import ast
import base64
import json
import re
import sys
from pathlib import Path

import pytest
from chalice.test import Client
from hypothesis import given

from sandbox.platforms import Delivery, fixture
from sandbox.platforms import delivery as sign
from sandbox.platforms.como import make_member
from sandbox.platforms.mews import ENTERPRISE as MEWS_ENTERPRISE
from sandbox.platforms.mews import make_customer
from sandbox.samples import SAMPLES, webhook_samples
from sandbox.stack import FULLWHERE_KEY, SECRETS, Sandbox, sources_document
from tests.support.fuzz import mutated
from tests.support.sandbox_bridge import bridge_client, own_aws

ROOT = Path(__file__).parent.parent
WEBHOOK_PLATFORMS = [sample.platform for sample in webhook_samples()]
# How each platform authenticates: a signature over the body, or a token in the URL we registered (those
# cannot protect the body: anyone holding the URL may send any body, which is the platform's design).
SIGNED_BODY = {"deliveroo", "ubereats", "meta", "zelty", "simphony", "como", "chr365", "zenchef"}
URL_TOKEN = {"mews", "thefork", "sevenrooms", "partouche"}
# Hex digests are compared case-insensitively on purpose (hex is case-insensitive); nothing else is.
HEX_SIGNATURE_HEADERS = {"x-deliveroo-hmac-sha256", "x-uber-signature", "x-zelty-hmac-sha256", "x-como-signature",
                         "x-chr365-signature"}


@pytest.fixture(scope="module")
def aws_settings(moto_endpoint):
    return own_aws(moto_endpoint, "hostile")


@pytest.fixture
def client(sandbox, aws_settings, monkeypatch):
    with bridge_client(monkeypatch, {**sandbox.environment(), **aws_settings}) as test_client:
        yield test_client


_guests = iter(range(10_000, 100_000))


def genuine(sandbox: Sandbox, platform: str) -> Delivery:
    """A new guest's webhook, signed as the platform signs it."""
    return SAMPLES[platform].prepare(sandbox, next(_guests))


def post(client: Client, delivery: Delivery, *, platform: str | None = None, body: bytes | None = None,
         headers: dict[str, str] | None = None, query: dict[str, str] | None = None):
    target = Delivery(platform or delivery.platform, delivery.body if body is None else body,
                      delivery.headers if headers is None else headers, delivery.query if query is None else query)
    return client.http.post(target.path, headers=target.headers, body=target.body)


def credentials(delivery: Delivery) -> list[tuple[str, str, str]]:
    """Every value that authenticates the request: ("header" | "query", name, value)."""
    found = [("header", name, value) for name, value in delivery.headers.items() if name.lower() != "content-type"]
    return found + [("query", name, value) for name, value in delivery.query.items()]


def replaced(delivery: Delivery, where: str, name: str, value: str | None) -> tuple[dict, dict]:
    """Headers and query with one credential changed (``None`` removes it)."""
    headers, query = dict(delivery.headers), dict(delivery.query)
    target = headers if where == "header" else query
    if value is None:
        target.pop(name)
    else:
        target[name] = value
    return headers, query


def assert_clean(response, *allowed: int) -> None:
    assert response.status_code in allowed, (response.status_code, response.body[:300])
    if response.status_code >= 400:
        assert response.json_body["error"] and response.json_body["reason"]


def test_the_platforms_are_classified():
    assert SIGNED_BODY | URL_TOKEN == set(WEBHOOK_PLATFORMS) and not SIGNED_BODY & URL_TOKEN


def test_genuine_requests_are_accepted_on_every_route(sandbox, client):
    for platform in WEBHOOK_PLATFORMS:
        assert post(client, genuine(sandbox, platform)).status_code == 200, platform


# -- forged credentials -------------------------------------------------------------------------------

def forged_secret(value: str) -> str:
    if value.startswith("whsec_"):
        return "whsec_" + base64.b64encode(b"forged-standard-webhooks-key-24b").decode()
    return value[:-1] + ("x" if value[-1] != "x" else "y")


def forged_delivery(sandbox: Sandbox, platform: str, body: bytes) -> Delivery:
    """``body`` signed the platform's way, but with a secret that is not the configured one."""
    from sandbox import platforms

    sandbox_secrets = set(SECRETS.values())
    environment = {name: forged_secret(value) if value in sandbox_secrets else value
                   for name, value in sandbox.environment().items()}
    environment["SIMPHONY_HMAC_KEYS"] = json.dumps({SECRETS["simphony_key_id"]: base64.b64encode(b"f" * 32).decode()})
    document = sources_document(sandbox.platforms)
    for source in document["sources"]:
        source["auth"]["secret"] = forged_secret(source["auth"]["secret"])
    forged_sources = sandbox.sources_file.with_name("forged-sources.json")
    forged_sources.write_text(json.dumps(document))
    environment["SOURCES_FILE"] = str(forged_sources)
    headers, query = platforms.sign_for(platform, body, environment)
    return Delivery(platform, body, {"Content-Type": "application/json", **headers}, query)


def test_a_request_signed_with_the_wrong_secret_is_401(sandbox, client):
    customers_before = len(sandbox.fullwhere.customers(FULLWHERE_KEY))
    for platform in WEBHOOK_PLATFORMS:
        delivery = genuine(sandbox, platform)
        forged = forged_delivery(sandbox, platform, delivery.body)
        assert credentials(forged) != credentials(delivery), platform
        assert post(client, forged).status_code == 401, platform
    assert len(sandbox.fullwhere.customers(FULLWHERE_KEY)) == customers_before


def test_a_request_signed_for_another_platform_is_401(sandbox, client):
    imports_before = len(sandbox.fullwhere.customers(FULLWHERE_KEY))
    deliveries = {platform: genuine(sandbox, platform) for platform in WEBHOOK_PLATFORMS}
    for target in [*WEBHOOK_PLATFORMS, "oracle"]:
        for source, delivery in deliveries.items():
            if source != target:
                assert post(client, delivery, platform=target).status_code == 401, (source, target)
    assert len(sandbox.fullwhere.customers(FULLWHERE_KEY)) == imports_before


def _flip(value: str) -> str:
    middle = len(value) // 2
    return value[:middle] + ("0" if value[middle] != "0" else "1") + value[middle + 1:]


MANGLINGS = {
    "one character changed": _flip,
    "truncated": lambda value: value[: len(value) // 2],
    "empty": lambda value: "",
    "removed": lambda value: None,
    "case swapped": str.swapcase,
    "another prefix": lambda value: (value.replace("sha256=", "sha1=") if value.startswith("sha256=")
                                     else value.replace("v1,", "v2,") if value.startswith("v1,")
                                     else "sha256=" + value),
    "padded with spaces": lambda value: f" {value} x",
}


@pytest.mark.parametrize("mangling", MANGLINGS)
def test_each_credential_mangled_is_401(sandbox, client, mangling):
    change = MANGLINGS[mangling]
    for platform in WEBHOOK_PLATFORMS:
        delivery = genuine(sandbox, platform)
        for where, name, value in credentials(delivery):
            new_value = change(value)
            if new_value == value:
                continue  # e.g. a digest without letters has no case to swap
            headers, query = replaced(delivery, where, name, new_value)
            response = post(client, delivery, headers=headers, query=query)
            # Hex digests may arrive in upper case: the same digest. Standard Webhooks' signature header is a
            # space-separated list of signatures: spaces and an extra item around the genuine one are allowed.
            expected = 200 if ((mangling == "case swapped" and name.lower() in HEX_SIGNATURE_HEADERS)
                               or (mangling == "padded with spaces" and name == "webhook-signature")) else 401
            assert response.status_code == expected, (platform, name, mangling, response.body[:200])


def test_no_credentials_at_all_is_401(sandbox, client):
    for platform in [*WEBHOOK_PLATFORMS, "oracle"]:
        delivery = genuine(sandbox, platform) if platform != "oracle" else Delivery("oracle", b"{}")
        response = post(client, delivery, headers={"Content-Type": "application/json"}, query={})
        assert response.status_code == 401 and response.json_body["error"] == "unauthorized", platform


def _altered(body: bytes) -> bytes:
    """One byte changed inside a JSON string (the first letter after the first colon): still valid JSON."""
    start = body.index(b":")
    position = next(i for i in range(start, len(body)) if chr(body[i]).isalpha())
    return body[:position] + bytes([body[position] ^ 0x20]) + body[position + 1:]


def test_one_flipped_byte_or_another_guest_s_body_breaks_the_signature(sandbox, client):
    for platform in WEBHOOK_PLATFORMS:
        delivery = genuine(sandbox, platform)
        other_guest = genuine(sandbox, platform).body
        for body in (_altered(delivery.body), other_guest, delivery.body + b" "):
            response = post(client, delivery, body=body)
            if platform in SIGNED_BODY:
                assert response.status_code == 401, platform
            else:  # a URL token authenticates the sender, not the body
                assert_clean(response, 200, 400)


# -- bodies -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x", "application/xml; charset=latin-1"])
def test_any_declared_content_type_is_read_from_the_raw_bytes(sandbox, client, content_type):
    for platform in WEBHOOK_PLATFORMS:
        delivery = genuine(sandbox, platform)
        headers = {name: value for name, value in delivery.headers.items() if name.lower() != "content-type"}
        if content_type:
            headers["Content-Type"] = content_type
        assert post(client, delivery, headers=headers).status_code == 200, (platform, content_type)


HOSTILE_BODIES = {
    "not UTF-8": b'{"event": "\xff\xfe\xfd"}',
    "UTF-16": '{"event": "order.new"}'.encode("utf-16"),
    "nested 100 000 deep": b"[" * 100_000 + b"]" * 100_000,
    "objects nested 40 000 deep": b'{"a":' * 40_000 + b"1" + b"}" * 40_000,
    "a 5000-digit number": b'{"event": ' + b"9" * 5000 + b"}",
    "NaN and Infinity": b'{"event": NaN, "id": Infinity, "body": -Infinity}',
    "a lone surrogate": b'{"event": "\\ud800"}',
    "truncated JSON": b'{"event": "order.new", "body": {',
    "empty": b"",
    "just whitespace": b" \n\t ",
    "a JSON string": b'"order.new"',
    "a JSON number": b"42",
    "null": b"null",
}


@pytest.mark.parametrize("name", HOSTILE_BODIES)
def test_hostile_bodies_correctly_signed_get_a_clean_answer(sandbox, client, name):
    body = HOSTILE_BODIES[name]
    for platform in WEBHOOK_PLATFORMS:
        response = post(client, sign(sandbox, platform, body))
        assert_clean(response, 200, 400)
        if name in ("not UTF-8", "UTF-16", "nested 100 000 deep", "a 5000-digit number", "truncated JSON", "empty"):
            assert response.status_code == 400, (platform, name)


def test_a_body_over_256_kib_is_413_before_anything_else(sandbox, client):
    body = b'{"event": "order.new", "padding": "' + b"x" * (256 * 1024) + b'"}'
    for platform in [*WEBHOOK_PLATFORMS, "oracle", "no-such-platform"]:
        response = client.http.post(f"/webhooks/{platform}", headers={}, body=body)
        assert response.status_code == (404 if platform == "no-such-platform" else 413), platform


def test_a_large_body_under_the_limit_is_handled(sandbox, client):
    for platform in WEBHOOK_PLATFORMS:
        delivery = genuine(sandbox, platform)
        document = json.loads(delivery.body)
        padded = ({**document, "padding": ["x" * 1000] * 200} if isinstance(document, dict)
                  else [*document, {"padding": "x" * 200_000}])
        response = post(client, sign(sandbox, platform, json.dumps(padded).encode()))
        assert_clean(response, 200, 400)


@pytest.mark.parametrize("platform", WEBHOOK_PLATFORMS)
def test_mangled_payloads_correctly_signed_never_break_the_bridge(sandbox, client, capsys, platform):
    """Numbers where strings belong, wrong types, hostile text, deleted fields: a 200 or a 400 with a reason,
    and no unexpected exception anywhere behind a 200 (fetch, mapping, import)."""
    document = json.loads(genuine(sandbox, platform).body)

    @given(payload=mutated(document))
    def answered_cleanly(payload):
        assert_clean(post(client, sign(sandbox, platform, json.dumps(payload).encode())), 200, 400)

    answered_cleanly()
    output = capsys.readouterr().out
    sys.stdout.write(output)  # back into the test's output, for the suite's scan of the logs
    assert [line for line in output.splitlines() if "unexpected error" in line] == []


# -- unicode, SQL and script text reach Fullwhere unchanged (invalid emails not at all, IDN domains as A-labels)

NAMES = [
    # (first name, last name, email sent, email imported)
    ("Zoë", "Ñúñez-Gómez", "Zoe.Nunez@Example.FR", "zoe.nunez@example.fr"),
    ("王", "小明", "xiaoming@例子.中国", "xiaoming@xn--fsqu00a.xn--fiqs8s"),  # IDN domain: sent as its A-label
    ("Robert'); DROP TABLE customers;--", "O'Brien", "robert@example.com'; DROP TABLE x;--", None),
    ("<script>alert(1)</script>", "<img src=x onerror=alert(1)>", "<script>@example.com", None),
    ("Ab\u202eevil", "\u0000Nul\u200b", "  MixedCase@Example.com  ", "mixedcase@example.com"),
]
# What the bridge keeps of a name: the text, without control and format characters.
CLEANED = {"Ab\u202eevil": "Abevil", "\u0000Nul\u200b": "Nul"}


def _webhook_with(sandbox: Sandbox, platform: str, n: int, first: str, last: str, email: str) -> tuple[bytes, str]:
    """A webhook (and the guest's platform id) carrying these name and email, for platforms whose webhook or
    API record holds them."""
    if platform == "zelty":
        document = fixture("zelty/order_ended.json")
        document["event_id"] = f"hostile-{n}"
        document["data"]["customer"].update(id=7_000_000 + n, fname=first, name=last, mail=email, phone=None)
        return json.dumps(document).encode(), str(7_000_000 + n)
    if platform == "partouche":
        return json.dumps({"event": "customer.created", "customer": {
            "player_id": 8_000_000 + n, "prenom": first, "nom": last, "email": email}}).encode(), str(8_000_000 + n)
    if platform == "chr365":
        return json.dumps({"customers": [{"client_id": f"h-{n}", "firstname": first, "lastname": last,
                                          "mail": email}]}).encode(), f"h-{n}"
    if platform == "zenchef":
        document = fixture("sources/zenchef_booking.json")
        document["booking"].update(uid=f"hb-{n}", customer_uid=f"hc-{n}", first_name=first, last_name=last,
                                   email=email, telephone=None)
        return json.dumps(document).encode(), f"hc-{n}"
    if platform == "mews":
        customer_id = f"00000000-0000-4000-8000-{n:012d}"
        sandbox.platforms["mews"].add_customer(MEWS_ENTERPRISE, make_customer(
            customer_id, FirstName=first, LastName=last, Email=email, Phone=None))
        return json.dumps({"EnterpriseId": MEWS_ENTERPRISE, "Events": [
            {"Discriminator": "CustomerAdded", "Value": {"Id": customer_id}}]}).encode(), customer_id
    if platform == "como":
        member_id = f"hostile-member-{n}"
        sandbox.platforms["como"].add_member(make_member(member_id, firstName=first, lastName=last, email=email,
                                                         phoneNumber=None))
        return json.dumps({"event": "member.updated", "id": f"hostile-{n}", "commonExtId": member_id}).encode(), member_id
    raise AssertionError(platform)


@pytest.mark.parametrize("platform", ["zelty", "partouche", "chr365", "zenchef", "mews", "como"])
def test_unicode_sql_and_script_text_is_imported_as_text(sandbox, client, platform):
    id_field = SAMPLES[platform].id_field
    for index, (first, last, email, imported_email) in enumerate(NAMES):
        n = next(_guests)
        body, guest_id = _webhook_with(sandbox, platform, n, first, last, email)
        assert post(client, sign(sandbox, platform, body)).status_code == 200, (platform, index)
        [customer] = [c for c in sandbox.fullwhere.customers(FULLWHERE_KEY) if c.get(id_field) == guest_id]
        assert customer["firstName"] == CLEANED.get(first, first)
        assert customer["lastName"] == CLEANED.get(last, last)
        assert customer["email"] == imported_email


def test_deliveroo_names_with_unicode_and_markup(sandbox, client):
    for name, first, initial in [("Zoë Ñ.", "Zoë", "Ñ."), ("王小明", "王小明", None),
                                 ("<b>Bob</b> '; DROP TABLE x;-- B.", "<b>Bob</b> '; DROP TABLE x;--", "B.")]:
        n = next(_guests)
        document = fixture("deliveroo/order_new_loyalty.json")
        document["body"]["order"].update(id=f"gb:hostile-{n}")
        document["body"]["order"]["customer"].update(first_name=name, loyalty={"loyalty_id": f"H-{n}"})
        assert post(client, sign(sandbox, "deliveroo", json.dumps(document).encode())).status_code == 200
        [customer] = sandbox.fullwhere.find(FULLWHERE_KEY, deliverooId=f"loyalty:H-{n}")
        assert (customer["firstName"], customer["lastName"]) == (first, initial)


# -- other routes -------------------------------------------------------------------------------------

META_TOKEN = SECRETS["meta_verify_token"]


@pytest.mark.parametrize("query, status", [
    ({"hub.mode": "subscribe", "hub.verify_token": META_TOKEN, "hub.challenge": "1158201444"}, 200),
    ({"hub.mode": "subscribe", "hub.verify_token": META_TOKEN.swapcase(), "hub.challenge": "1"}, 403),
    ({"hub.mode": "subscribe", "hub.verify_token": META_TOKEN[:-1], "hub.challenge": "1"}, 403),
    ({"hub.mode": "subscribe", "hub.verify_token": META_TOKEN + " ", "hub.challenge": "1"}, 403),
    ({"hub.mode": "subscribe", "hub.verify_token": "", "hub.challenge": "1"}, 403),
    ({"hub.mode": "subscribe", "hub.challenge": "1"}, 403),
    ({"hub.mode": "subscribe", "hub.verify_token": SECRETS["meta_app_secret"], "hub.challenge": "1"}, 403),
    ({"hub.mode": "unsubscribe", "hub.verify_token": META_TOKEN, "hub.challenge": "1"}, 403),
    ({"hub.verify_token": META_TOKEN, "hub.challenge": "1"}, 403),
    ({"hub.mode": "subscribe", "hub.verify_token": META_TOKEN}, 403),
    ({}, 403),
])
def test_meta_handshake_answers_only_the_verify_token(client, query, status):
    from urllib.parse import urlencode

    response = client.http.get("/webhooks/meta?" + urlencode(query))
    assert response.status_code == status
    if status == 200:
        assert response.body == b"1158201444" and response.headers["Content-Type"] == "text/plain"


def test_meta_handshake_echoes_markup_as_plain_text(client):
    from urllib.parse import urlencode

    challenge = "<script>alert(1)</script>"
    response = client.http.get("/webhooks/meta?" + urlencode(
        {"hub.mode": "subscribe", "hub.verify_token": META_TOKEN, "hub.challenge": challenge}))
    assert response.status_code == 200 and response.headers["Content-Type"] == "text/plain"


def test_get_on_any_other_route_is_405_or_404(client):
    for platform in [p for p in WEBHOOK_PLATFORMS if p != "meta"] + ["oracle"]:
        assert client.http.get(f"/webhooks/{platform}?hub.mode=subscribe").status_code == 405, platform
    assert client.http.get("/webhooks/no-such-platform").status_code == 404


@pytest.mark.parametrize("name", ["..%2F..%2Fetc%2Fpasswd", "x" * 4000, "%C3%A9v%C3%A9nement", "%00", "DELIVEROO",
                                  "deliveroo%20", "__proto__", "constructor", "%F0%9F%98%80"])
def test_unknown_or_odd_platform_names_are_404(client, name):
    response = client.http.post(f"/webhooks/{name}", headers={}, body=b"{}")
    assert response.status_code == 404
    assert response.json_body["error"] == "unknown_platform" and len(response.json_body["reason"]) < 200


# -- constant-time comparison -------------------------------------------------------------------------

SECRET_NAME = re.compile(r"(?i)secret|signature|digest|token|hmac|password|verify|api_key|app_key|given|expected")
# Comparisons of such names that involve no secret (checked by hand): a signature's public prefix, settings
# naming an encoding or a mode, None checks, and our own cached tokens compared with each other.
NOT_SECRET = {
    ("chalicelib/connectors/sevenrooms.py", "given[:7].lower() == 'sha256='"),
    ("chalicelib/domain/sources.py", "(self.secret is None) == (self.secret_env is None)"),
    ("chalicelib/infra/tokens.py", "value[0] != token"),
    # The name of the Secrets Manager secret the settings were read from, not a secret's value.
    ("chalicelib/infra/settings.py", "secrets_id == state.secrets_id"),
    # Platform names against the sets of platforms whose webhook secrets are per account or keyed.
    ("chalicelib/domain/tenants.py", "platform in KEYED_SECRETS"),
    ("chalicelib/domain/tenants.py", "platform in OWN_WEBHOOK_SECRETS"),
}


def _secret_comparisons(source: str, relative: str) -> list[str]:
    """``==``/``!=``/``in`` comparisons in ``source`` with an operand named like a secret."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Compare) or (relative, ast.unparse(node)) in NOT_SECRET:
            continue
        if not any(isinstance(op, (ast.Eq, ast.NotEq, ast.In, ast.NotIn)) for op in node.ops):
            continue
        for operand in [node.left, *node.comparators]:
            names = [n.id for n in ast.walk(operand) if isinstance(n, ast.Name)]
            names += [n.attr for n in ast.walk(operand) if isinstance(n, ast.Attribute)]
            if any(SECRET_NAME.search(name) for name in names):
                found.append(f"{relative}:{node.lineno}: {ast.unparse(node)}")
                break
    return found


def test_the_constant_time_scan_finds_a_plain_comparison():
    leaky = "def verify(request, secret):\n    if request.header('x') == secret:\n        return\n"
    assert _secret_comparisons(leaky, "chalicelib/connectors/leaky.py") == [
        "chalicelib/connectors/leaky.py:2: request.header('x') == secret"]
    assert _secret_comparisons("def verify(request, secret):\n    return equal(request.header('x'), secret)\n",
                               "chalicelib/connectors/leaky.py") == []


def test_every_secret_is_compared_in_constant_time():
    """Secrets, tokens and signatures are compared only through chalicelib.core.signatures.equal
    (hmac.compare_digest), never with ==, != or in."""
    offenders = [line for path in sorted((ROOT / "chalicelib").rglob("*.py"))
                 for line in _secret_comparisons(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))]
    assert offenders == []
    signatures = (ROOT / "chalicelib" / "core" / "signatures.py").read_text()
    assert "hmac.compare_digest(given_bytes, expected_bytes)" in signatures
    # Every verify() reaches a constant-time comparison (directly, through the signatures helpers, or through
    # Connector.query_token, which compares with equal()).
    connectors = ROOT / "chalicelib" / "connectors"
    assert re.search(r"def query_token\(.*\n.*\n\s+if not equal\(", (connectors / "base.py").read_text())
    for path in sorted(connectors.glob("*.py")):
        source = path.read_text()
        # (base: the abstract method; OPERA Cloud refuses every request outright)
        if "def verify(" in source and path.stem not in ("base", "oracle"):
            assert re.search(r"\bequal\(|hex_signature_matches\(|standard_webhooks_valid\(|_signature_matches\("
                             r"|self\.query_token\(", source), path.name
