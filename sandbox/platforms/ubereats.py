"""Uber Eats in the sandbox: an emulator of the API pieces the bridge uses (docs/platforms.md, "Uber Eats"),
the sandbox's app credentials, webhook signing and the sample guest.

- POST /oauth/v2/token: client-credentials tokens (auth.uber.com in production).
- GET /v2/eats/order/{order_id}: order details, the only place eater data lives,
  since webhooks are thin notifications.
- GET /v1/delivery/store/{store_id}/orders?start_time&end_time&page_size&next_page_token: the store's orders
  placed in [start_time, end_time) (ISO 8601), oldest first, at most 50 a page, as ``{"data": [{id,
  current_state, placed_at, store}], "pagination_data": {"next_page_token"}}``: the sweep's list call, as public
  clients call it [S] (Uber's reference for it is not public; the emulator's shape is that second-hand one).

Point both base URLs of the bridge at `emulator.url`, and build notifications
with `make_notification(..., base_url=emulator.url)` so resource_href resolves here.
"""

from __future__ import annotations

import hmac
import secrets
import time
import uuid
from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from chalicelib.core.signatures import hmac_sha256_hex
from sandbox.emulators.base import EmulatorServer, Request, instant
from sandbox.platforms import Sample, fixture, guest_uuid, required

if TYPE_CHECKING:
    from sandbox.stack import Sandbox

TOKEN_PATH = "/oauth/v2/token"
ORDER_PREFIX = "/v2/eats/order/"
STORE_ORDERS_PREFIX = "/v1/delivery/store/"
STORE_ORDERS_SUFFIX = "/orders"
MAX_PAGE_SIZE = 50
TOKEN_TTL_SECONDS = 2_592_000  # 30 days [S]
DEFAULT_SCOPE = "eats.store.orders.read"

UNAUTHORIZED = {"code": "unauthorized", "message": "Invalid OAuth 2.0 credentials provided."}
ORDER_NOT_FOUND = {"code": "not_found", "message": "order not found"}


def make_order(
    order_id: str,
    store_id: str,
    eater_id: str,
    first_name: str = "Larry",
    last_name: str = "S",
    phone: str = "+1 555-555-5555",
    phone_code: str = "555 55 555",
) -> dict[str, Any]:
    """An order in the documented v2 shape. `phone` is an anonymised relay number
    and `last_name` an initial, as on the real platform."""
    return {
        "id": order_id,
        "display_id": order_id[-5:].upper(),
        "external_reference_id": f"Order-{order_id[:8]}",
        "current_state": "CREATED",
        "type": "DELIVERY_BY_UBER",
        "brand": "UBER_EATS",
        "store": {"id": store_id, "name": "Test Store"},
        "eater": {"first_name": first_name, "last_name": last_name, "phone": phone, "phone_code": phone_code},
        "eaters": [{"id": eater_id, "first_name": first_name}],
        "cart": {"items": [{"id": "item-1", "title": "Burger", "quantity": 1, "eater_id": eater_id}]},
        "payment": {"charges": {"total": {"amount": 1250, "currency_code": "EUR", "formatted_amount": "€12.50"}}},
        "placed_at": "2026-11-26T12:00:00Z",
    }


def make_notification(
    order_id: str,
    store_id: str,
    event_type: str = "orders.notification",
    event_id: str | None = None,
    base_url: str = "https://api.uber.com",
) -> dict[str, Any]:
    """A webhook body: a thin event pointing at the order through resource_href."""
    return {
        "event_id": event_id or str(uuid.uuid4()),
        "event_time": int(time.time()),
        "event_type": event_type,
        "meta": {"user_id": store_id, "resource_id": order_id, "status": "pos"},
        "resource_href": f"{base_url}/v2/eats/order/{order_id}",
    }


class UberEatsEmulator(EmulatorServer):
    """Token endpoint plus order lookup, with bearer-token checks."""

    def __init__(
        self,
        client_id: str = "uber-client",
        client_secret: str = "uber-secret",
        token_limit_per_hour: int | None = 100,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.client_id = client_id
        self.client_secret = client_secret
        # Uber answers 429 past 100 client-credentials token requests per hour.
        self.token_limit_per_hour = token_limit_per_hour
        self.token_requests = 0  # tokens issued: tests assert the bridge caches them
        self.list_requests = 0  # store order list pages answered 200
        self._issued_at: deque[float] = deque()
        self._tokens: dict[str, str] = {}  # token -> scope
        self._orders: dict[str, dict[str, Any]] = {}
        self.route("POST", TOKEN_PATH, self._token)
        self.route_prefix("GET", ORDER_PREFIX, self._order)
        self.route_prefix("GET", STORE_ORDERS_PREFIX, self._store_orders)

    # -- test helpers ------------------------------------------------------------

    def add_order(self, order: dict[str, Any]) -> None:
        with self.lock:
            self._orders[order["id"]] = order

    def revoke_tokens(self) -> None:
        """Invalidate every issued token (next order call gets 401), to test refresh."""
        with self.lock:
            self._tokens.clear()

    def reset_state(self) -> None:
        self.token_requests = 0
        self.list_requests = 0
        self._issued_at.clear()
        self._tokens.clear()
        self._orders.clear()

    # -- handlers ------------------------------------------------------------------

    def _token(self, request: Request):
        form = request.form()
        if not (
            hmac.compare_digest(form.get("client_id", ""), self.client_id)
            and hmac.compare_digest(form.get("client_secret", ""), self.client_secret)
        ):
            return 401, {"error": "invalid_client"}
        if form.get("grant_type") != "client_credentials":
            return 400, {"error": "unsupported_grant_type"}
        with self.lock:
            now = time.monotonic()
            while self._issued_at and now - self._issued_at[0] > 3600:
                self._issued_at.popleft()
            if self.token_limit_per_hour is not None and len(self._issued_at) >= self.token_limit_per_hour:
                return 429, {"error": "rate_limit_exceeded"}
            self._issued_at.append(now)
            self.token_requests += 1
            token = secrets.token_urlsafe(24)
            scope = form.get("scope") or DEFAULT_SCOPE
            self._tokens[token] = scope
        return 200, {"access_token": token, "token_type": "Bearer", "expires_in": TOKEN_TTL_SECONDS, "scope": scope}

    def _order(self, request: Request):
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        with self.lock:
            if scheme.lower() != "bearer" or token not in self._tokens:
                return 401, UNAUTHORIZED
            # Query strings such as ?expand=carts,deliveries,payment are accepted and ignored.
            order = self._orders.get(request.route[len(ORDER_PREFIX) :])
        if order is None:
            return 404, ORDER_NOT_FOUND
        return 200, order

    def _store_orders(self, request: Request):
        store_id, _, rest = request.route[len(STORE_ORDERS_PREFIX):].partition("/")
        if f"/{rest}" != STORE_ORDERS_SUFFIX or not store_id:
            return 404, {"code": "not_found", "message": "no such resource"}
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        query = request.query
        start, end = instant(query.get("start_time")), instant(query.get("end_time"))
        try:
            size = min(int(query.get("page_size") or MAX_PAGE_SIZE), MAX_PAGE_SIZE)
            offset = int(query.get("next_page_token") or 0)
        except ValueError:
            return 400, {"code": "invalid_request", "message": "invalid page_size or next_page_token"}
        with self.lock:
            if scheme.lower() != "bearer" or token not in self._tokens:
                return 401, UNAUTHORIZED
            placed = [(moment, order) for order in self._orders.values()
                      if (order.get("store") or {}).get("id") == store_id
                      and (moment := instant(order.get("placed_at"))) is not None
                      and (start is None or moment >= start) and (end is None or moment < end)]
            matching = [{"id": order["id"], "current_state": order.get("current_state"),
                         "placed_at": order.get("placed_at"), "store": {"id": store_id}}
                        for _, order in sorted(placed, key=lambda pair: (pair[0], pair[1]["id"]))]
            self.list_requests += 1
        more = offset + size < len(matching)
        return 200, {"data": matching[offset:offset + size],
                     "pagination_data": {"next_page_token": str(offset + size) if more else None}}


# -- the sandbox's Uber Eats --------------------------------------------------------------------------

SECRETS = {"uber_client_id": "sandbox-uber-client", "uber_client_secret": "sandbox-uber-secret"}
STORE = "c7f1dc2f-5d3b-4a4e-9f6e-2a1b3c4d5e6f"


def emulator() -> UberEatsEmulator:
    return UberEatsEmulator(client_id=SECRETS["uber_client_id"], client_secret=SECRETS["uber_client_secret"],
                            token_limit_per_hour=None)


def environment(emulator: UberEatsEmulator) -> dict[str, str]:
    return {
        "UBEREATS_CLIENT_ID": SECRETS["uber_client_id"],
        "UBEREATS_CLIENT_SECRET": SECRETS["uber_client_secret"],
        "UBEREATS_API_URL": emulator.url,
        "UBEREATS_AUTH_URL": emulator.url,
    }


def sign(body: bytes, environ: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """``X-Uber-Signature``: hex HMAC-SHA256 of the body with the app's client secret."""
    return {"X-Uber-Signature": hmac_sha256_hex(required(environ, "UBEREATS_CLIENT_SECRET"), body)}, {}


def _build(sandbox: Sandbox, n: int) -> dict[str, Any]:
    order_id = guest_uuid("ubereats-order", n)
    sandbox.platforms["ubereats"].add_order(make_order(order_id, STORE, f"eater-{n}", first_name=f"Guest{n}"))
    notification = fixture("ubereats/orders_notification.json")
    notification.update(event_id=guest_uuid("ubereats-event", n),
                        resource_href=f"https://api.uber.com/v2/eats/order/{order_id}")
    notification["meta"].update(resource_id=order_id, user_id=STORE)
    return notification


SAMPLE = Sample("ubereats", "ubereatsId", _build, lambda n: f"eater-{n}")
