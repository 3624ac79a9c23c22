"""Deliveroo in the sandbox: the webhook carries the guest, so the bridge calls Deliveroo's API only to sweep
(docs/platforms.md, "Deliveroo"); an emulator of that call and its token endpoint, the sandbox's credentials,
webhook signing and the sample guest.

- POST /oauth2/token: OAuth client credentials, ``Authorization: Basic base64(client_id:client_secret)`` and a
  form-encoded ``grant_type=client_credentials`` (Deliveroo's "Authentication" page); tokens live 300 s.
- GET /order/v2/brand/{brand_id}/restaurant/{restaurant_id}/orders ("Get Orders", v2) with ``Authorization:
  Bearer``: ``?start_date=&end_date=`` (ISO 8601, both included; ``end_date`` defaults to now) or ``?cursor=``
  the previous page's ``next``; ``{"orders": [...], "next": cursor|null}``, at most 100 orders a page, oldest
  first, nothing placed more than 30 days ago; 5 requests a minute per restaurant, then 429 with
  ``Retry-After``. A client limited by ``access`` reads only the brands named there (403 otherwise).

Point ``DELIVEROO_API_URL`` and ``DELIVEROO_AUTH_URL`` at ``emulator.url``.
"""

from __future__ import annotations

import base64
import binascii
import copy
import hmac
import json
import math
import re
import secrets
import time
import uuid
from collections import deque
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from chalicelib.core.signatures import hmac_sha256_hex
from sandbox.emulators.base import EmulatorServer, Request
from sandbox.platforms import Sample, fixture, guest_uuid, required

if TYPE_CHECKING:
    from sandbox.stack import Sandbox

TOKEN_PATH = "/oauth2/token"
ORDERS_PREFIX = "/order/v2/brand/"
_ORDERS_PATH = re.compile(r"^/order/v2/brand/([^/]+)/restaurant/([^/]+)/orders$")
TOKEN_TTL_SECONDS = 300
PAGE_SIZE = 100
REACH = timedelta(days=30)
CALLS_PER_MINUTE = 5


class DeliverooEmulator(EmulatorServer):
    """Orders per (brand, restaurant), listed by time window with Deliveroo's paging and rate limit."""

    def __init__(self, clients: dict[str, str] | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.clients = dict(clients or {"deliveroo-client": "deliveroo-secret"})  # client id -> secret
        self.access: dict[str, set[str] | None] = {}  # client id -> brands it may read (None: every brand)
        self.calls_per_minute = CALLS_PER_MINUTE
        self.token_requests = 0
        self._tokens: dict[str, str] = {}  # token -> client id
        self._orders: dict[tuple[str, str], dict[str, tuple[datetime, dict[str, Any]]]] = {}
        self._calls: dict[str, deque[float]] = {}  # restaurant -> times of its recent list calls
        self.route("POST", TOKEN_PATH, self._token)
        self.route_prefix("GET", ORDERS_PREFIX, self._list)

    # -- test helpers ------------------------------------------------------------

    def add_order(self, brand: str, restaurant: str, order: dict[str, Any], placed: datetime | None = None) -> None:
        """An order of ``restaurant`` placed at ``placed`` (default: now), listed by the orders call."""
        with self.lock:
            self._orders.setdefault((brand, restaurant), {})[order["id"]] = (
                placed or datetime.now(timezone.utc), copy.deepcopy(order))

    def reset_state(self) -> None:
        self.access.clear()
        self.calls_per_minute = CALLS_PER_MINUTE
        self.token_requests = 0
        self._tokens.clear()
        self._orders.clear()
        self._calls.clear()

    # -- handlers ------------------------------------------------------------------

    def _token(self, request: Request):
        scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
        try:
            client_id, _, secret = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            client_id, secret = "", ""
        known = self.clients.get(client_id)
        if scheme.lower() != "basic" or known is None or not hmac.compare_digest(secret, known):
            return 401, {"error": "invalid_client"}
        if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded") \
                or request.form().get("grant_type") != "client_credentials":
            return 400, {"error": "unsupported_grant_type"}
        with self.lock:
            self.token_requests += 1
            token = secrets.token_urlsafe(24)
            self._tokens[token] = client_id
        return 200, {"access_token": token, "expires_in": TOKEN_TTL_SECONDS, "token_type": "Bearer"}

    def _list(self, request: Request):
        match = _ORDERS_PATH.match(request.route)
        if not match:
            return 404, {"message": "Not Found"}
        brand, restaurant = match.groups()
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        query = request.query
        with self.lock:
            client_id = self._tokens.get(token) if scheme.lower() == "bearer" else None
            if client_id is None:
                return 401, {"message": "Unauthorized"}
            allowed = self.access.get(client_id)
            if allowed is not None and brand not in allowed:
                return 403, {"message": "Forbidden"}
            now = time.monotonic()
            calls = self._calls.setdefault(restaurant, deque())
            while calls and calls[0] <= now - 60:
                calls.popleft()
            if len(calls) >= self.calls_per_minute:
                wait = math.ceil(calls[0] + 60 - now)
                return 429, {"message": "Too Many Requests"}, {"Retry-After": str(max(1, wait))}
            calls.append(now)
            try:
                if query.get("cursor"):
                    window = json.loads(base64.urlsafe_b64decode(query["cursor"]))
                    start, end, offset = _instant(window["start_date"]), _instant(window["end_date"]), window["offset"]
                else:
                    start = _instant(query["start_date"])
                    end = _instant(query["end_date"]) if query.get("end_date") else datetime.now(timezone.utc)
                    offset = 0
            except (KeyError, ValueError, TypeError, binascii.Error):
                return 400, {"message": "start_date (ISO 8601) or a cursor is required"}
            oldest = datetime.now(timezone.utc) - REACH
            listed = sorted((placed, order["id"], order) for placed, order in self._orders.get((brand, restaurant), {})
                            .values() if max(start, oldest) <= placed <= end)
        orders = [copy.deepcopy(order) for _, _, order in listed[offset:offset + PAGE_SIZE]]
        more = offset + PAGE_SIZE < len(listed)
        cursor = base64.urlsafe_b64encode(json.dumps({
            "start_date": _stamp(start), "end_date": _stamp(end), "offset": offset + PAGE_SIZE}).encode()).decode()
        return 200, {"orders": orders, "next": cursor if more else None}


def _instant(value: str) -> datetime:
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment


def _stamp(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat()


# -- the sandbox's Deliveroo ------------------------------------------------------------------------

SECRETS = {
    "deliveroo": "sandbox-deliveroo-webhook-secret",
    "deliveroo_client_id": "sandbox-deliveroo-client",
    "deliveroo_client_secret": "sandbox-deliveroo-api-secret",
}
BRAND, RESTAURANT = "bistro-uk", "1000"  # the sample order's brand_id and location_id


def emulator() -> DeliverooEmulator:
    return DeliverooEmulator(clients={SECRETS["deliveroo_client_id"]: SECRETS["deliveroo_client_secret"]})


def environment(emulator: DeliverooEmulator | None = None) -> dict[str, str]:
    variables = {"DELIVEROO_WEBHOOK_SECRET": SECRETS["deliveroo"]}
    if emulator is not None:
        variables.update({
            "DELIVEROO_CLIENT_ID": SECRETS["deliveroo_client_id"],
            "DELIVEROO_CLIENT_SECRET": SECRETS["deliveroo_client_secret"],
            "DELIVEROO_BRAND_ID": BRAND,
            "DELIVEROO_API_URL": emulator.url,
            "DELIVEROO_AUTH_URL": emulator.url,
            "DELIVEROO_SWEEP_ACCOUNTS": RESTAURANT,
        })
    return variables


def sign(body: bytes, environ: Mapping[str, str], guid: str | None = None) -> tuple[dict[str, str], dict[str, str]]:
    """``X-Deliveroo-Hmac-Sha256``: hex HMAC-SHA256 of ``<sequence guid> <body>``."""
    secret = required(environ, "DELIVEROO_WEBHOOK_SECRET")
    guid = guid or uuid.uuid4().hex
    return {"X-Deliveroo-Sequence-Guid": guid,
            "X-Deliveroo-Hmac-Sha256": hmac_sha256_hex(secret, guid.encode() + b" " + body)}, {}


def _build(sandbox: Sandbox, n: int) -> dict[str, Any]:
    payload = fixture("deliveroo/order_new_loyalty.json")
    order = payload["body"]["order"]
    order["id"] = f"gb:{guest_uuid('deliveroo-order', n)}"
    order["customer"]["first_name"] = f"Guest{n} D."
    order["customer"]["loyalty"] = {"loyalty_id": f"LOY-{n}", "card_number": f"{n:06d}"}
    server = sandbox.platforms.get("deliveroo")
    if server is not None:  # placed now: the sweeps list it too
        server.add_order(order["brand_id"], order["location_id"], order)
    return payload


SAMPLE = Sample("deliveroo", "deliverooId", _build, lambda n: f"loyalty:LOY-{n}")
