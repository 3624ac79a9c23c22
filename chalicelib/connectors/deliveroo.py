"""Deliveroo Order Events webhooks (``order.new``, ``order.status_update``; legacy ``new_order``).

The guest is inside the signed webhook. Deliveroo shares no email, consent or customer id and its phone
is a relay line, so the diner's restaurant loyalty card is the only identity imported; the signature,
payload and mapping are described in docs/platforms.md (Deliveroo).
"""

from __future__ import annotations

import re
from typing import Any

from chalicelib.connectors.base import Connector, Context, Event, ParsedWebhook, WebhookRequest
from chalicelib.connectors.payload import PayloadModel, load_json, validate
from chalicelib.connectors.shared import present
from chalicelib.core.errors import malformed, unauthorized
from chalicelib.core.normalise import clean_text, display_name
from chalicelib.core.signatures import hex_signature_matches
from chalicelib.domain.fullwhere.models import CustomerImport
from chalicelib.infra.settings import SettingsModel, secret

IMPORTED_EVENTS = ("order.new", "order.status_update", "new_order")
# The deprecated POS webhooks, signed with the " \n " separator.
LEGACY_EVENTS = ("new_order", "cancel_order")
# Order statuses whose guest is not imported: the restaurant never served them.
NOT_SERVED_STATUSES = ("rejected",)


class DeliverooSettings(SettingsModel):
    env_prefix, title = "DELIVEROO_", "Deliveroo"

    webhook_secret: str | None = secret("the webhook secret Deliveroo gives you (not the API secret)")


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


_INITIAL = re.compile(r"^\w\.?$")


def split_initial(name: str | None) -> tuple[str | None, str | None]:
    """``"Omid M."`` → (``"Omid"``, ``"M."``): Deliveroo sends a first name plus a last-name initial."""
    if not name:
        return None, None
    parts = name.split(" ")
    if len(parts) >= 2 and _INITIAL.match(parts[-1]):
        return " ".join(parts[:-1]), parts[-1]
    return name, None
