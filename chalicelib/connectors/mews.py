"""Mews Connector API General Webhooks (``CustomerAdded``, ``CustomerUpdated``, ``ServiceOrderUpdated``).

Authentication [vendor docs]: no signature; Mews adds the shared token we chose to our URL
(``?Token=...``). It is compared in constant time with ``MEWS_WEBHOOK_TOKEN`` and, like every query
value, redacted from logs. Mews sends no particular content type: the body is parsed from raw bytes.

Events carry ids only. ``CustomerAdded``/``CustomerUpdated`` → ``customers/getAll``;
``ServiceOrderUpdated`` → ``reservations/getAll/2023-06-06``, then the owner's customer record when
``AccountType`` is ``Customer`` (a company-owned reservation has no guest to import). Each request
needs ``ClientToken`` (the app's, ``MEWS_CLIENT_TOKEN``) and the enterprise's ``AccessToken`` (per
enterprise through the tenants document, or ``MEWS_ACCESS_TOKEN`` for the default tenant).

A new customer produces both ``CustomerAdded`` and ``CustomerUpdated``, often in the same message
[vendor docs]: both share a guest key, so the customer is fetched once.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from chalicelib import __version__
from chalicelib.connectors.base import (
    Connector,
    Context,
    Event,
    ParsedWebhook,
    PayloadModel,
    WebhookRequest,
    load_json,
    validate,
)
from chalicelib.core.errors import PermanentError, RetryableError, unauthorized
from chalicelib.core.normalise import clean_text, display_name, language_code, normalise_email, normalise_phone
from chalicelib.core.signatures import equal
from chalicelib.domain.fullwhere.models import CustomerImport
from chalicelib.infra.http import raise_for_status, send
from chalicelib.infra.settings import Settings

CUSTOMER_EVENTS = ("CustomerAdded", "CustomerUpdated")
RESERVATION_EVENTS = ("ServiceOrderUpdated",)
WHAT = "Mews API"
CLIENT_NAME = f"FullwhereBridge {__version__}"

# Mews' Title enum; its docs say the value "should not be used as-is, but localized".
CIVILITIES = {"Mister": "Mr.", "Miss": "Ms.", "Misses": "Mrs."}


class EntityRef(PayloadModel):
    Id: str = Field(min_length=1)


class WebhookEvent(PayloadModel):
    Discriminator: str
    Value: EntityRef | None = None


class GeneralWebhook(PayloadModel):
    EnterpriseId: str = Field(min_length=1)
    IntegrationId: str | None = None
    Events: list[WebhookEvent]


class MewsConnector(Connector):
    name = "mews"
    secret_setting = "mews_webhook_token"
    id_field = "mewsId"

    def verify(self, request: WebhookRequest, settings: Settings) -> None:
        if not equal(request.query.get("Token"), self.webhook_secret(settings)):
            raise unauthorized("Mews Token query parameter missing or wrong")

    def sign(self, body: bytes, settings: Settings) -> tuple[dict[str, str], dict[str, str]]:
        return {}, {"Token": self.webhook_secret(settings)}

    def parse(self, request: WebhookRequest) -> ParsedWebhook:
        document = load_json(request.body)
        if isinstance(document, dict) and "Action" in document and "Events" not in document:
            # An Integration Webhook (IntegrationCreated, ...) sent to the same URL: no guest in it.
            return ParsedWebhook(events=[], ignored=[f"integration:{document.get('Action')}"])
        webhook = validate(GeneralWebhook, document, "Mews webhook")
        events: list[Event] = []
        ignored: list[str] = []
        for item in webhook.Events:
            if item.Discriminator in CUSTOMER_EVENTS + RESERVATION_EVENTS and item.Value is None:
                ignored.append(f"{item.Discriminator}:no-id")
            elif item.Discriminator in CUSTOMER_EVENTS:
                events.append(self._event(webhook, item, "customer", {"customer_id": item.Value.Id}))
            elif item.Discriminator in RESERVATION_EVENTS:
                events.append(self._event(webhook, item, "reservation", {"reservation_id": item.Value.Id}))
            else:
                ignored.append(item.Discriminator)
        return ParsedWebhook(events=events, ignored=ignored)

    @staticmethod
    def _event(webhook: GeneralWebhook, item: WebhookEvent, entity: str, data: dict[str, str]) -> Event:
        return Event(
            event_id=f"{webhook.EnterpriseId}/{item.Discriminator}/{item.Value.Id}",
            kind=item.Discriminator,
            account_id=webhook.EnterpriseId,
            data=data,
            guest_key=f"{entity}:{item.Value.Id}",
        )

    def fetch(self, event: Event, context: Context) -> dict[str, Any] | None:
        customer_id = event.data.get("customer_id")
        if customer_id is None:
            reservation = self._first(
                "reservations/getAll/2023-06-06", "Reservations", context, event,
                ReservationIds=[event.data["reservation_id"]],
            )
            if reservation is None:
                raise PermanentError("Mews has no reservation with this id")
            if reservation.get("AccountType") != "Customer" or not reservation.get("AccountId"):
                return None  # owned by a company: no guest to import
            customer_id = reservation["AccountId"]
        customer = self._customer(customer_id, context, event)
        merge_target = customer.get("MergeTargetId")
        if merge_target and merge_target != customer_id:
            # The profile was merged into another: import the surviving one.
            customer = self._customer(merge_target, context, event)
        return customer

    def _customer(self, customer_id: str, context: Context, event: Event) -> dict[str, Any]:
        customer = self._first(
            "customers/getAll", "Customers", context, event,
            CustomerIds=[customer_id], Extent={"Customers": True, "Addresses": False},
        )
        if customer is None:
            raise PermanentError("Mews has no customer with this id")
        return customer

    def _first(self, operation: str, key: str, context: Context, event: Event, **filters: Any) -> dict[str, Any] | None:
        settings = context.settings
        access_token = context.credentials(self.name, event.account_id).get("access_token")
        if not settings.mews_client_token or not access_token:
            raise PermanentError("Mews ClientToken or this enterprise's AccessToken is not configured")
        body = {
            "ClientToken": settings.mews_client_token,
            "AccessToken": access_token,
            "Client": CLIENT_NAME,
            "Limitation": {"Count": 10},
            **filters,
        }
        response = send("POST", f"{settings.mews_api_url}/api/connector/v1/{operation}", context.deadline, what=WHAT, json=body)
        raise_for_status(response, WHAT)
        try:
            items = response.json().get(key)
        except (ValueError, AttributeError):
            raise RetryableError(f"{WHAT} answered 2xx with an unreadable body") from None
        if not isinstance(items, list):
            raise RetryableError(f"{WHAT} answered 2xx without {key}")
        return next((item for item in items if isinstance(item, dict)), None)

    def map(self, guest: dict[str, Any], event: Event, context: Context) -> CustomerImport:
        first_name = clean_text(guest.get("FirstName"))
        last_name = clean_text(guest.get("LastName"))
        options = guest.get("Options")
        # HasOtaEmail: a temporary relay address from a booking site, not the guest's.
        email = None if guest.get("HasOtaEmail") else normalise_email(guest.get("Email"))
        metadata = {
            "source": "mews",
            "mewsEnterpriseId": event.account_id,
            "mewsNationality": clean_text(guest.get("NationalityCode")),
            "mewsLoyaltyCode": clean_text(guest.get("LoyaltyCode")),
            "mewsClassifications": ",".join(c for c in guest.get("Classifications") or [] if isinstance(c, str)),
        }
        return CustomerImport(
            firstName=first_name,
            lastName=last_name,
            displayName=display_name(first_name, last_name),
            civility=CIVILITIES.get(guest["Title"]) if isinstance(guest.get("Title"), str) else None,
            language=language_code(guest.get("PreferredLanguageCode")) or language_code(guest.get("LanguageCode")),
            email=email,
            phoneNumber=normalise_phone(guest.get("Phone"), context.phone_region, guest.get("NationalityCode")),
            # Options is Mews' explicit consent list: absent flag = no consent; no list = not stated.
            emailOptin=("SendMarketingEmails" in options) if isinstance(options, list) else None,
            mewsId=clean_text(guest.get("Id")),
            metadata={key: value for key, value in metadata.items() if value},
        )
