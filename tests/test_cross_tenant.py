"""Tenants are walls, for every platform the bridge knows (issue 13): two tenants, A and B, each with its own
Fullwhere account on the sandbox's Fullwhere emulator, over real HTTP to the emulators.

(a) A request signed or tokened for tenant A that names tenant B's account reaches nothing of B: on a platform
    whose accounts each register their own webhook secret it is refused (401); on one whose secret is per
    integration (held by the platform alone, so no tenant can sign), the account in the body routes it.
(b) A guest id that only B's platform credentials open, sent through A's account, is never fetched with B's
    (or the deployment's) credentials: A's own are used, or the event is held; nothing reaches either CRM.

Nothing here names a platform where the sandbox can say it: samples, signing and emulators come from
``sandbox/platforms/<name>.py``. What a test cannot derive is in the tables below, which meta-tests hold to the
registry: which platforms have per-account secrets (the decision of docs/platforms.md, stated here independently
of the code, which is checked against it), how a body names an account, which account entry holds a platform's
API credentials. The module imports nothing the bridge added for this, so it also runs against older code.
"""

from __future__ import annotations

import base64
import copy
import json
import re
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from chalicelib.core.registry import builtin_names
from sandbox import platforms
from sandbox.platforms import Delivery, Sample
from tests.support.sandbox_bridge import sandbox_bridge

ROOT = Path(__file__).resolve().parent.parent
A_KEY, A_SECRET = "tenant-a-key", "tenant-a-fullwhere-secret"
B_KEY, B_SECRET = "tenant-b-key", "tenant-b-fullwhere-secret"
A_ACCOUNT = "a-own-account"

PLATFORMS = platforms.names()
_guests = iter(range(1, 1_000_000))


def _sample(name: str) -> Sample:
    return platforms.module(name).SAMPLE


def _sandbox_secret(name: str) -> dict[str, str]:
    return platforms.module(name).SECRETS


# -- what the tests cannot derive ------------------------------------------------------------------

# Built-in platforms whose accounts each register the webhook with their own secret (docs/platforms.md, "Webhook
# secrets: per integration or per account"); every declarative source is one too. Simphony's is a set of keys.
OWN_SECRET_BUILTINS = {"zelty", "sevenrooms", "simphony"}
KEYED_SECRETS = {"simphony"}


def has_own_webhook_secrets(name: str) -> bool:
    return name in OWN_SECRET_BUILTINS or name not in builtin_names()


def _declarative_credentials(name: str, environ: dict[str, str]) -> dict[str, str]:
    """A declarative source's fetch credentials: every ``${NAME}`` its fetch names, with the sandbox's values."""
    from chalicelib.domain.sources import get_sources

    source = get_sources()[name]
    return {variable: environ[variable] for variable in sorted(source.fetch.variables())} if source.fetch else {}


# A built-in platform → the account entry (tenants document) holding the sandbox's API credentials, i.e. B's.
# Empty: the bridge calls no API of it with per-account credentials (the guest is in the webhook, or the API
# credentials are one per integration, as Uber Eats' app).
BUILTIN_ACCOUNT_CREDENTIALS: dict[str, Callable[[], dict[str, str]]] = {
    "deliveroo": dict,
    "ubereats": dict,
    "mews": lambda: {"access_token": _sandbox_secret("mews")["mews_access_token"]},
    "thefork": lambda: {"client_id": _sandbox_secret("thefork")["thefork_client_id"],
                        "client_secret": _sandbox_secret("thefork")["thefork_client_secret"]},
    "meta": lambda: {"page_access_token": _sandbox_secret("meta")["meta_page_token"]},
    "sevenrooms": lambda: {"client_id": _sandbox_secret("sevenrooms")["sevenrooms_client_id"],
                           "client_secret": _sandbox_secret("sevenrooms")["sevenrooms_client_secret"]},
    "zelty": dict,
    "oracle": lambda: {key: _sandbox_secret("oracle")[f"oracle_{key}"]
                       for key in ("client_id", "client_secret", "app_key")},
    "simphony": dict,
}


def account_credentials(name: str, environ: dict[str, str]) -> dict[str, str]:
    if name in builtin_names():
        return BUILTIN_ACCOUNT_CREDENTIALS[name]()
    return _declarative_credentials(name, environ)


def _name_declarative(name: str, payload: Any, account: str) -> None:
    """Each event item of a declarative source names ``account`` at the first key of its ``account_id``."""
    from chalicelib.connectors.declarative import search
    from chalicelib.domain.sources import get_sources

    source = get_sources()[name]
    key = source.account_id.split("||")[0].strip()
    assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key), f"{name}: account_id {source.account_id!r} has no plain key"
    items = search(source.events, payload)
    for item in items if isinstance(items, list) else [items]:
        item[key] = account


def _name_simphony(payload: dict, account: str) -> None:
    for message in payload["messages"]:
        message.setdefault("resource", {})["orgShortName"] = account


# Platforms whose accounts each have their own webhook secret → how a body is made to name ``account``.
NAMERS: dict[str, Callable[[Any, str], None]] = {
    "zelty": lambda payload, account: payload.update(restaurant_id=account, brand_id=None),
    "sevenrooms": lambda payload, account: payload["entity"].update(venue_id=account, venue_group_id=None),
    "simphony": _name_simphony,
}


def name_account(name: str, payload: Any, account: str) -> None:
    if name in builtin_names():
        NAMERS[name](payload, account)
    else:
        _name_declarative(name, payload, account)


def two_accounts_body(name: str, payload: Any, other: Any) -> Any | None:
    """One body carrying the events of both payloads, or None when the platform's body holds one account only."""
    if name == "sevenrooms":
        return [payload, other]  # SevenRooms may send an array (docs/platforms.md)
    if name == "simphony":
        return {"messages": payload["messages"] + other["messages"]}
    if name not in builtin_names():
        from chalicelib.connectors.declarative import search
        from chalicelib.domain.sources import get_sources

        events = get_sources()[name].events
        key = events.split("||")[0].strip()
        if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):  # a list under a key, e.g. "customers || [...]"
            items = [*_items(search, events, payload), *_items(search, events, other)]
            return {key: items}
    return None


def _items(search, events: str, payload: Any) -> list:
    found = search(events, payload)
    return found if isinstance(found, list) else [found]


# -- the two tenants -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sandbox():
    from sandbox.stack import Sandbox

    with Sandbox(with_aws=False) as running:
        running.fullwhere.accounts.update({A_KEY: A_SECRET, B_KEY: B_SECRET})
        yield running


@pytest.fixture
def stack(sandbox, moto_endpoint, monkeypatch):
    with sandbox_bridge(sandbox, moto_endpoint, monkeypatch, "walls") as bridge:
        yield bridge


class Walls:
    """The bridge on the sandbox for one platform: a tenants document of A and B, requests signed with either's
    secret (or the deployment's), and what reached each one's Fullwhere account."""

    def __init__(self, stack, tmp_path: Path, platform: str):
        self.stack, self.tmp_path, self.platform = stack, tmp_path, platform
        self.environ = stack.sandbox.environment()

    def tenants(self, a_block: dict, b_block: dict) -> None:
        document = {"tenants": [
            {"id": "tenant-a", "fullwhere_api_key": A_KEY, "fullwhere_api_secret": A_SECRET,
             "platforms": {self.platform: a_block}},
            {"id": "tenant-b", "fullwhere_api_key": B_KEY, "fullwhere_api_secret": B_SECRET,
             "platforms": {self.platform: b_block}},
        ]}
        path = self.tmp_path / f"tenants-{secrets.token_hex(4)}.json"
        path.write_text(json.dumps(document))
        self.stack.configure(TENANTS_FILE=str(path))

    # -- secrets -----------------------------------------------------------------------------------
    def new_secret(self, tenant: str) -> tuple[dict, dict[str, str]]:
        """A fresh webhook secret for ``tenant``: (its fields in the platform block, the settings that sign with
        it: the sandbox's ``sign()`` reads the secret where the deployment keeps its own)."""
        name = self.platform
        if name in KEYED_SECRETS:
            key_id, key = f"{tenant}-key", base64.b64encode(secrets.token_bytes(32)).decode()
            return {"hmac_keys": {key_id: key}}, {self._secret_variable(): json.dumps({key_id: key})}
        secret = secrets.token_urlsafe(24)
        if name not in builtin_names():
            from chalicelib.domain.sources import StandardWebhooksAuth, get_sources

            if isinstance(get_sources()[name].auth, StandardWebhooksAuth):
                secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
            return {"webhook_secret": secret}, {"SOURCES_FILE": self._sources_signing_with(secret)}
        return {"webhook_secret": secret}, {self._secret_variable(): secret}

    def _secret_variable(self) -> str:
        from chalicelib.connectors import get_connector

        connector = get_connector(self.platform)
        return connector.settings_model.variable(connector.secret_setting)

    def _sources_signing_with(self, secret: str) -> str:
        """A copy of the sandbox's sources document whose source signs with ``secret`` (only for signing)."""
        document = json.loads(Path(self.environ["SOURCES_FILE"]).read_text())
        for source in document["sources"]:
            if source["name"] == self.platform:
                source["auth"] = {key: value for key, value in source["auth"].items() if key != "secret_env"}
                source["auth"]["secret"] = secret
        path = self.tmp_path / f"sources-{secrets.token_hex(4)}.json"
        path.write_text(json.dumps(document))
        return str(path)

    # -- requests ----------------------------------------------------------------------------------
    def signed(self, payload: Any, signing: dict[str, str] | None = None) -> Delivery:
        """``payload`` as the platform sends it, signed with the settings ``signing`` overrides (else the
        deployment's own secret)."""
        body = json.dumps(payload).encode()
        headers, query = platforms.sign_for(self.platform, body, {**self.environ, **(signing or {})})
        return Delivery(self.platform, body, {"Content-Type": "application/json", **headers}, query)

    def accounts_named(self, payload: Any) -> set[str | None]:
        from chalicelib.connectors import get_connector
        from chalicelib.connectors.base import WebhookRequest

        body = json.dumps(payload).encode()
        parsed = get_connector(self.platform).parse(WebhookRequest(self.platform, body, {}))
        return {event.account_id for event in parsed.events} | set(getattr(parsed, "ignored_accounts", ()))

    # -- what reached whom -------------------------------------------------------------------------
    def reached(self, key: str) -> list:
        fullwhere = self.stack.sandbox.fullwhere
        return fullwhere.customers(key) + [r for r in fullwhere.requests if r.headers.get("x-api-key") == key]

    def nothing_queued(self) -> bool:
        return self.stack.retry_jobs() == [] and self.stack.dead_letters() == []


@pytest.fixture
def walls(stack, tmp_path, request) -> Walls:
    return Walls(stack, tmp_path, request.param)


def _params(keep: Callable[[str], bool], reason: str) -> list:
    return [pytest.param(name, id=name, marks=[] if keep(name) else [pytest.mark.skip(reason=reason)])
            for name in PLATFORMS]


WEBHOOK_PLATFORMS = _params(lambda name: not _sample(name).pulled, "pulled: no webhook to sign (see (b))")
OWN_SECRET_PLATFORMS = _params(lambda name: has_own_webhook_secrets(name) and not _sample(name).pulled,
                               "one webhook secret per integration, which only the platform holds")


def _b_params() -> list:
    params = []
    for name in PLATFORMS:
        if name in builtin_names():
            own = bool(BUILTIN_ACCOUNT_CREDENTIALS[name]())
        else:  # a source whose API the bridge calls has an emulator; its credentials are its fetch's variables
            own = hasattr(platforms.module(name), "emulator")
        params.append(pytest.param(name, id=name, marks=[] if own else [pytest.mark.skip(
            reason="no per-account API credentials: its guest travels in the webhook, or its API credentials are "
                   "one per integration (Uber Eats' app)")]))
    return params


FETCHING_PLATFORMS = _b_params()


# -- (a) a request for A naming B's account --------------------------------------------------------

@pytest.mark.parametrize("walls", WEBHOOK_PLATFORMS, indirect=True)
def test_a_request_for_tenant_a_naming_tenant_bs_account_reaches_nothing_of_b(walls):
    sample, stack, n = _sample(walls.platform), walls.stack, next(_guests)
    payload = sample.build(stack.sandbox, n)
    [b_account] = walls.accounts_named(payload) - {None} or [f"b-{walls.platform}-account"]
    if walls.accounts_named(payload) != {b_account}:
        name_account(walls.platform, payload, b_account)
    assert walls.accounts_named(payload) == {b_account}
    b_credentials = account_credentials(walls.platform, walls.environ)

    if not has_own_webhook_secrets(walls.platform):
        # One secret per integration, held by the platform alone: no tenant can sign. The account in the body
        # routes the event, and B's own credentials fetch it.
        walls.tenants({"accounts": {A_ACCOUNT: {}}}, {"accounts": {b_account: b_credentials}})
        assert stack.post(walls.signed(payload)).status_code == 200
        assert walls.reached(A_KEY) == []
        assert [c[sample.id_field] for c in stack.sandbox.fullwhere.customers(B_KEY)] == [sample.guest_id(n)]
        return

    a_block, a_signing = walls.new_secret("tenant-a")
    b_block, b_signing = walls.new_secret("tenant-b")
    walls.tenants({**a_block, "accounts": {A_ACCOUNT: {}}}, {**b_block, "accounts": {b_account: b_credentials}})

    for signing, who in ((a_signing, "tenant A's secret"), (None, "the deployment's secret")):
        response = stack.post(walls.signed(payload, signing))
        assert response.status_code == 401, (who, response.body[:300])
    assert walls.reached(B_KEY) == [] and walls.reached(A_KEY) == []
    assert walls.nothing_queued()

    # B's own secret opens B's account: it is the secret that was refused, not the request.
    assert stack.post(walls.signed(payload, b_signing)).status_code == 200
    assert walls.reached(A_KEY) == []
    expected = [sample.guest_id(n)] if sample.imports else []
    assert [c[sample.id_field] for c in stack.sandbox.fullwhere.customers(B_KEY)] == expected


@pytest.mark.parametrize("walls", OWN_SECRET_PLATFORMS, indirect=True)
def test_a_body_naming_accounts_of_both_tenants_is_refused_whoever_signed_it(walls):
    stack = walls.stack
    payload = _sample(walls.platform).build(stack.sandbox, next(_guests))
    b_account = f"b-{walls.platform}-account"
    name_account(walls.platform, payload, b_account)
    other = copy.deepcopy(payload)
    name_account(walls.platform, other, A_ACCOUNT)
    body = two_accounts_body(walls.platform, payload, other)
    if body is None:
        pytest.skip(f"a {walls.platform} body names one account only")
    assert walls.accounts_named(body) == {A_ACCOUNT, b_account}
    a_block, a_signing = walls.new_secret("tenant-a")
    b_block, b_signing = walls.new_secret("tenant-b")
    walls.tenants({**a_block, "accounts": {A_ACCOUNT: {}}}, {**b_block, "accounts": {b_account: {}}})

    for signing in (a_signing, b_signing):
        response = stack.post(walls.signed(body, signing))
        assert response.status_code == 401 and "several tenants" in response.json_body["reason"]
    assert walls.reached(A_KEY) == [] and walls.reached(B_KEY) == [] and walls.nothing_queued()


@pytest.mark.parametrize("secret_of_b", ["its own", "none"])
@pytest.mark.parametrize("walls", OWN_SECRET_PLATFORMS, indirect=True)
def test_the_deployment_wide_secret_opens_no_named_tenants_account(walls, secret_of_b):
    """Before per-tenant secrets, every brand was given the deployment's one: a request signed with it must not
    reach a named tenant, whether that tenant has its own secret (401) or has none yet (503: misconfigured,
    the platform delivers again once it is set; never verified with the deployment's instead)."""
    stack = walls.stack
    payload = _sample(walls.platform).build(stack.sandbox, next(_guests))
    b_account = f"b-{walls.platform}-account"
    name_account(walls.platform, payload, b_account)
    b_block = walls.new_secret("tenant-b")[0] if secret_of_b == "its own" else {}
    walls.tenants({"accounts": {A_ACCOUNT: {}}},
                  {**b_block, "accounts": {b_account: account_credentials(walls.platform, walls.environ)}})

    response = stack.post(walls.signed(payload))

    reached_b = [{key: customer.get(key) for key in ("id", "email", "emailOptin", "smsOptin")}
                 for customer in stack.sandbox.fullwhere.customers(B_KEY)]
    assert reached_b == [] and walls.reached(B_KEY) == [], f"tenant B's Fullwhere account got {reached_b}"
    if secret_of_b == "its own":
        assert response.status_code == 401, response.body[:300]
    else:
        assert response.status_code == 503 and response.json_body["error"] == "misconfigured", response.body[:300]
    assert walls.reached(A_KEY) == [] and walls.nothing_queued()


# -- (b) an id only B's credentials open, sent through A -------------------------------------------

@pytest.mark.parametrize("a_credentials", ["none", "its own"])
@pytest.mark.parametrize("walls", FETCHING_PLATFORMS, indirect=True)
def test_an_id_only_tenant_bs_credentials_open_sent_through_a_is_never_fetched_with_them(walls, a_credentials):
    stack, sample, name = walls.stack, _sample(walls.platform), walls.platform
    b_credentials = account_credentials(name, walls.environ)
    # A's own credentials: the same keys, values the platform does not know.
    a_entry = ({key: f"a-own-{key.lower()}-{secrets.token_hex(4)}" for key in b_credentials}
               if a_credentials == "its own" else {})
    n = next(_guests)
    payload = sample.build(stack.sandbox, n)  # the guest, under the sandbox's credentials: B's
    if sample.pulled:
        [a_account] = walls.environ["ORACLE_HOTEL_IDS"].split(",")  # where the sample's event waits
    else:
        named = walls.accounts_named(payload) - {None}
        a_account = next(iter(named)) if named else A_ACCOUNT
        if not named:
            name_account(name, payload, a_account)
    a_block, a_signing, b_block = {}, None, {}
    if has_own_webhook_secrets(name):
        a_block, a_signing = walls.new_secret("tenant-a")
        b_block = walls.new_secret("tenant-b")[0]
    walls.tenants({**a_block, "accounts": {a_account: a_entry}},
                  {**b_block, "accounts": {f"b-{name}-account": b_credentials}})
    api = stack.sandbox.platforms[name]

    if sample.pulled:
        stack.pull(name)
        # A's hotel was never dequeued: OHIP still holds its event.
        assert api.queued(a_account) == 1
        assert not [r for r in api.requests if f"/hotels/{a_account}/" in r.path]
    else:
        response = stack.post(walls.signed(payload, a_signing))
        assert response.status_code == 200, response.body[:300]
        b_values = {value for value in b_credentials.values() if len(value) >= 6}
        for request in api.requests:
            sent = request.raw.decode(errors="replace") + request.path + json.dumps(request.headers)
            assert not [value for value in b_values if value in sent], f"{request.path} carried B's credentials"
        if a_credentials == "none":
            assert api.requests == [], "a tenant without its own credentials called the platform's API"
            assert stack.retry_jobs() != [], "the event is held until A's credentials are added, not dropped"
    assert walls.reached(A_KEY) == [] and walls.reached(B_KEY) == []
    assert stack.sandbox.fullwhere.customers("sandbox-key") == []


# -- the tables follow the registry, and the docs follow the code ----------------------------------

def test_the_tables_cover_every_platform_the_bridge_knows():
    assert set(BUILTIN_ACCOUNT_CREDENTIALS) == set(builtin_names())
    assert set(NAMERS) == OWN_SECRET_BUILTINS, "a body of each per-account platform must be made to name an account"


def test_the_bridge_decides_each_platform_as_the_docs_do():
    from chalicelib.domain import tenants

    for name in PLATFORMS:
        assert tenants.has_own_webhook_secrets(name) == has_own_webhook_secrets(name), name
    assert tenants.KEYED_SECRETS == KEYED_SECRETS


def test_docs_state_the_code_s_decision_for_every_platform():
    """docs/platforms.md, "Webhook secrets: per integration or per account": one row per platform."""
    text = (ROOT / "docs" / "platforms.md").read_text(encoding="utf-8")
    section = text.split("## Webhook secrets: per integration or per account", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    for name in PLATFORMS:
        [row] = [line for line in rows if f"`{name}`" in line.split("|")[1]] or [None]
        assert row is not None, f"{name} has no row"
        decision = row.split("|")[2].strip().lower()
        if _sample(name).pulled:
            assert "no webhook" in decision, row
        else:
            expected = "per account" if has_own_webhook_secrets(name) else "per integration"
            assert decision.startswith(expected), (name, decision)
