"""Deliveroo Order Events webhooks (``order.new``, ``order.status_update``; legacy ``new_order``).

The guest is inside the signed webhook. Deliveroo shares no email, consent or customer id and its phone
is a relay line, so the diner's restaurant loyalty card is the only identity imported; the signature,
payload and mapping are described in docs/platforms.md (Deliveroo). A sweep lists each restaurant's recent
orders (Get Orders v2) to recover the loyalty-card diners whose webhook Deliveroo stopped retrying.
"""

from __future__ import annotations

import base64
import math
import re
import threading
import time
from collections import deque
from collections.abc import Hashable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

from pydantic import Field, ValidationError, field_validator

from chalicelib.connectors.base import Connector, Context, Event, ParsedWebhook, SweepWindow, WebhookRequest
from chalicelib.connectors.payload import PayloadModel, load_json, validate
from chalicelib.connectors.shared import answer_object, cursor_pages, path_segment, present
from chalicelib.core.errors import Held, RetryableError, malformed, unauthorized
from chalicelib.core.normalise import clean_text, display_name
from chalicelib.core.signatures import hex_signature_matches
from chalicelib.domain.fullwhere.models import CustomerImport
from chalicelib.domain.tenants import lends_settings
from chalicelib.infra.http import Deadline, send
from chalicelib.infra.settings import SettingsModel, secret, sweep_accounts_setting, sweep_minutes_setting
from chalicelib.infra.tokens import TokenCache, request_client_credentials

IMPORTED_EVENTS = ("order.new", "order.status_update", "new_order")
# The deprecated POS webhooks, signed with the " \n " separator.
LEGACY_EVENTS = ("new_order", "cancel_order")
# Order statuses whose guest is not imported: the restaurant never served them.
NOT_SERVED_STATUSES = ("rejected",)
# Sweeps read the Order API's "Get Orders" (v2) of each restaurant (docs/platforms.md, Deliveroo, "Sweep"): at most
# 100 orders a page, nothing older than 30 days, 5 requests a minute per restaurant [V].
WHAT = "Deliveroo API"
SWEEP_CALLS_PER_MINUTE = 5
SWEEP_MAX_PAGES = 100
ORDERS_PATH = "/order/v2/brand/{brand_id}/restaurant/{restaurant_id}/orders"
# Tokens last 300 s [V: api-docs.deliveroo.com "Authentication"].
TOKEN_LIFETIME_SECONDS = 300.0


class DeliverooSettings(SettingsModel):
    env_prefix, title = "DELIVEROO_", "Deliveroo"

    webhook_secret: str | None = secret("the webhook secret Deliveroo gives you (not the API secret)")
    # The webhook needs no API call; these are read by the sweeps only.
    client_id: str | None = Field(default=None, description="the Developer portal app's `client_id` (OAuth client "
                                  "credentials), with which the default tenant's restaurants are swept; a tenant's "
                                  "account entry carries its own `client_id`")
    client_secret: str | None = secret("the app's `client_secret`, with `DELIVEROO_CLIENT_ID`; a tenant's account "
                                       "entry carries its own `client_secret`")
    brand_id: str | None = Field(default=None, description="the default tenant's brand id (Deliveroo's integration "
                                 "team gives it), in whose restaurants' orders the sweeps look; a tenant's account "
                                 "entry carries its own `brand_id`")
    api_url: str = Field(default="https://api.developers.deliveroo.com",
                         description="Deliveroo's API host (`https://api-sandbox.developers.deliveroo.com` for their "
                                     "sandbox), to which `DELIVEROO_ORDERS_PATH` is appended")
    orders_path: str = Field(default=ORDERS_PATH, description="the Get Orders (v2) path the sweeps list a restaurant's "
                             "orders with; Deliveroo's page writes it `api/v2/brand/{brand_id}/restaurant/"
                             "{restaurant_id}/orders` without its host, and the `/order` prefix is second-hand")
    auth_url: str = Field(default="https://auth.developers.deliveroo.com",
                          description="Deliveroo's token endpoint host (`/oauth2/token`; `https://auth-sandbox."
                                      "developers.deliveroo.com` for their sandbox)")
    sweep_minutes: int | None = sweep_minutes_setting("Deliveroo")
    sweep_accounts: str | None = sweep_accounts_setting("Deliveroo", "restaurant ids (`order.location_id`, read "
                                                        "with `DELIVEROO_CLIENT_ID` in `DELIVEROO_BRAND_ID`)")

    @field_validator("orders_path")
    @classmethod
    def _orders_path(cls, value: str) -> str:
        if not value.startswith("/") or "{brand_id}" not in value or "{restaurant_id}" not in value:
            raise ValueError("must start with / and hold {brand_id} and {restaurant_id}")
        return value


class Loyalty(PayloadModel):
    loyalty_id: str | None = None
    card_number: str | None = None


class Customer(PayloadModel):
    first_name: str | None = None
    loyalty: Loyalty | None = None
    order_frequency_at_site: str | None = None


class Delivery(PayloadModel):
    customer_name: str | None = None


class Order(PayloadModel):
    id: str
    location_id: str | None = None
    restaurant_id: str | None = None
    brand_id: str | None = None
    display_id: str | None = None
    status: str | None = None
    fulfillment_type: str | None = None
    customer: Customer | None = None
    delivery: Delivery | None = None


class OrderBody(PayloadModel):
    order: Order | None = None


class Envelope(PayloadModel):
    event: str
    body: OrderBody | None = None
    order: Order | None = None  # order.status_update puts the order at the top level


class DeliverooConnector(Connector, platform="deliveroo", id_field="deliverooId",
                         settings=DeliverooSettings, secret="webhook_secret"):

    def verify(self, request: WebhookRequest) -> None:
        key = self.webhook_secret()
        guid = request.header("x-deliveroo-sequence-guid")
        signature = request.header("x-deliveroo-hmac-sha256")
        if not guid or not signature:
            raise unauthorized("missing X-Deliveroo-Sequence-Guid or X-Deliveroo-Hmac-Sha256")
        if hex_signature_matches(key, guid.encode() + b" " + request.body, signature):
            return
        if hex_signature_matches(key, guid.encode() + b" \n " + request.body, signature):
            # The legacy separator is only valid for the legacy events: don't let it sign anything else.
            document = load_json(request.body)
            if isinstance(document, dict) and document.get("event") in LEGACY_EVENTS:
                return
        raise unauthorized("Deliveroo signature does not match")

    def parse(self, request: WebhookRequest) -> ParsedWebhook:
        envelope = validate(Envelope, load_json(request.body), "Deliveroo webhook")
        if envelope.event not in IMPORTED_EVENTS:
            return ParsedWebhook(events=[], ignored=[envelope.event])
        order = envelope.order or (envelope.body.order if envelope.body else None)
        if order is None:
            raise malformed("Deliveroo webhook: no order in body.order or order")
        if order.status in NOT_SERVED_STATUSES:
            return ParsedWebhook(events=[], ignored=[f"{envelope.event}:{order.status}"])
        event = Event(
            event_id=f"{order.id}/{envelope.event}/{order.status or ''}",
            kind=envelope.event,
            account_id=order.location_id or order.restaurant_id,
            data=order.model_dump(exclude_none=True),
            guest_key=f"order:{order.id}",
        )
        return ParsedWebhook(events=[event])

    def map(self, guest: dict[str, Any], event: Event, context: Context) -> CustomerImport:
        order = Order.model_validate(guest)
        customer = order.customer or Customer()
        name = customer.first_name or (order.delivery.customer_name if order.delivery else None)
        first_name, last_initial = split_initial(clean_text(name))
        loyalty = customer.loyalty or Loyalty()
        loyalty_id = clean_text(loyalty.loyalty_id) or clean_text(loyalty.card_number)
        metadata = {
            "source": "deliveroo",
            "deliverooOrderId": order.id,
            "deliverooLocationId": order.location_id,
            "deliverooBrandId": order.brand_id,
            "deliverooFulfillmentType": order.fulfillment_type,
            "deliverooOrderFrequency": clean_text(customer.order_frequency_at_site),
        }
        return CustomerImport(
            firstName=first_name,
            lastName=last_initial,
            displayName=display_name(first_name, last_initial),
            # The loyalty card is the restaurant's own, entered by the diner: prefixed so nobody in the
            # CRM takes it for a Deliveroo account id.
            deliverooId=f"loyalty:{loyalty_id}" if loyalty_id else None,
            metadata=present(metadata),
        )

    # -- the sweep -----------------------------------------------------------------------------------
    # Deliveroo lists 30 days back; a window of 6 hours needs more than the 5 calls a minute allows only past
    # 500 orders, so even a backfill moves its cursor every few calls.
    sweep_reach = timedelta(days=30)
    sweep_max_interval = timedelta(hours=6)

    def sweep(self, account_id: str, window: SweepWindow, context: Context) -> Iterator[Event] | None:
        """The orders of a restaurant within ``window`` whose diner gave a loyalty card (the only ones imported),
        from Get Orders v2 [V], each as the order webhook names it; read with this account's own API client."""
        return self._sweep(account_id, window, context)

    def _sweep(self, account_id: str, window: SweepWindow, context: Context) -> Iterator[Event]:
        own: DeliverooSettings = self.platform_settings()
        entry = context.credentials(self.name, account_id)
        lent = lends_settings(entry)  # the deployment's settings only for the default tenant
        client_id = entry.get("client_id") or (own.client_id if lent else None)
        client_secret = entry.get("client_secret") or (own.client_secret if lent else None)
        brand = entry.get("brand_id") or (own.brand_id if lent else None)
        if not client_id or not client_secret or not brand:
            where = ("DELIVEROO_CLIENT_ID, DELIVEROO_CLIENT_SECRET and DELIVEROO_BRAND_ID" if lent else
                     "this restaurant's client_id, client_secret and brand_id in the tenants document")
            raise Held(f"no Deliveroo API client or brand to list orders with ({where})", "not_configured")
        restaurant = entry.get("restaurant_id") or account_id
        url = own.api_url + own.orders_path.replace("{brand_id}", path_segment(brand, "Deliveroo brand id")).replace(
            "{restaurant_id}", path_segment(restaurant, "Deliveroo restaurant id"))
        first = {"start_date": _iso(window.since, math.floor), "end_date": _iso(window.until, math.ceil)}

        def read_page(cursor: str | None) -> tuple[list[Any], str | None]:
            params = first if cursor is None else {"cursor": cursor}
            _calls.take((own.api_url, brand, restaurant))
            response = _tokens.authorised(
                (own.auth_url, client_id),
                lambda: _request_token(own.auth_url, client_id, client_secret, context.deadline),
                lambda token: send("GET", url, context.deadline, what=WHAT, params=params,
                                   headers={"Authorization": f"Bearer {token}", "Accept": "application/json"}),
                refused=f"{WHAT} refused a fresh token (401): check the API client's access to this brand",
            )
            body = answer_object(response, WHAT)
            orders = body.get("orders", [])
            if not isinstance(orders, list):
                raise RetryableError(f"{WHAT} answered orders that are not a list")
            cursor = body.get("next")
            return orders, cursor if isinstance(cursor, str) else None

        for orders in cursor_pages(read_page, WHAT, SWEEP_MAX_PAGES):
            for order in orders:
                event = _swept_order(order, account_id)
                if event is not None:
                    yield event


def _swept_order(order: Any, account_id: str) -> Event | None:
    """The event the order webhook gave ``order``: ``order.new`` while it is placed, else ``order.status_update``
    with its status (the same event id). None for an order the connector would not import: no loyalty card
    (no identity), or rejected (never served), or not an order."""
    try:
        model = Order.model_validate(order)
    except ValidationError:
        return None
    loyalty = model.customer.loyalty if model.customer else None
    if loyalty is None or not (clean_text(loyalty.loyalty_id) or clean_text(loyalty.card_number)):
        return None
    status = (model.status or "").lower()
    if status in NOT_SERVED_STATUSES:
        return None
    kind = "order.new" if status in ("", "placed") else "order.status_update"
    return Event(
        event_id=f"{model.id}/{kind}/{model.status or ''}",
        kind=kind,
        account_id=model.location_id or model.restaurant_id or account_id,
        data=model.model_dump(exclude_none=True),
        guest_key=f"order:{model.id}",
    )


def _iso(moment: datetime, rounding) -> str:
    """``moment`` as ISO 8601 UTC to the second (rounded down for a start, up for an end)."""
    seconds = rounding(moment.timestamp())
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _request_token(auth_url: str, client_id: str, client_secret: str, deadline: Deadline) -> tuple[str, float]:
    # Basic client_id:client_secret and a form-encoded grant, as Deliveroo's own example [V].
    basic = base64.b64encode(f"{client_id}:{client_secret}".encode()).decode()
    return request_client_credentials(f"{auth_url}/oauth2/token", deadline, what="Deliveroo token endpoint",
                                      form={"grant_type": "client_credentials"},
                                      headers={"Authorization": f"Basic {basic}"},
                                      default_lifetime=TOKEN_LIFETIME_SECONDS)


class CallBudget:
    """At most ``calls`` requests per ``period`` seconds per key, counted in this container: the sweep stops an
    account before Deliveroo would answer 429, and says when to come back (a 429 says it too)."""

    def __init__(self, calls: int, period: float = 60.0):
        self.calls, self.period = calls, period
        self._lock = threading.Lock()
        self._sent: dict[Hashable, deque[float]] = {}

    def take(self, key: Hashable) -> None:
        with self._lock:
            now = time.monotonic()
            sent = self._sent.setdefault(key, deque())
            while sent and sent[0] <= now - self.period:
                sent.popleft()
            if len(sent) >= self.calls:
                raise RetryableError(f"{WHAT} allows {self.calls} order lists a minute per restaurant",
                                     retry_after=sent[0] + self.period - now)
            sent.append(now)

    def clear(self) -> None:
        with self._lock:
            self._sent.clear()


# Tokens live 5 minutes: renewed 30 s before they expire.
_tokens = TokenCache(margin_seconds=30)
_calls = CallBudget(SWEEP_CALLS_PER_MINUTE)

_INITIAL = re.compile(r"^\w\.?$")


def split_initial(name: str | None) -> tuple[str | None, str | None]:
    """``"Omid M."`` → (``"Omid"``, ``"M."``): Deliveroo sends a first name plus a last-name initial."""
    if not name:
        return None, None
    parts = name.split(" ")
    if len(parts) >= 2 and _INITIAL.match(parts[-1]):
        return " ".join(parts[:-1]), parts[-1]
    return name, None
