"""Mews Connector API General Webhooks (``CustomerAdded``, ``CustomerUpdated``, ``ServiceOrderUpdated``).

Mews signs nothing: it adds the token we chose to our URL (``?Token=``). Events carry ids only, so the
customer (or the reservation, then its owner) is read from the Connector API with the app's
ClientToken and the enterprise's AccessToken; see docs/platforms.md (Mews).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from chalicelib import __version__
from chalicelib.connectors.base import Connector, Context, Event, ParsedWebhook, WebhookRequest
from chalicelib.connectors.payload import PayloadModel, load_json, validate
from chalicelib.connectors.shared import answer_object, present
from chalicelib.core.errors import PermanentError
from chalicelib.core.normalise import clean_text, display_name, language_code, normalise_email, normalise_phone
from chalicelib.domain.fullwhere.models import CustomerImport
from chalicelib.infra.http import send
from chalicelib.infra.settings import SettingsModel, secret

CUSTOMER_EVENTS = ("CustomerAdded", "CustomerUpdated")
RESERVATION_EVENTS = ("ServiceOrderUpdated",)
WHAT = "Mews API"
CLIENT_NAME = f"FullwhereBridge {__version__}"

# Mews' Title enum; its docs say the value "should not be used as-is, but localized".
CIVILITIES = {"Mister": "Mr.", "Miss": "Ms.", "Misses": "Mrs."}


class MewsSettings(SettingsModel):
    env_prefix, title = "MEWS_", "Mews"

    webhook_token: str | None = secret("the token you gave Mews support for your webhook URL (`?Token=`)")
    client_token: str | None = secret("your Mews integration's `ClientToken`")
    access_token: str | None = secret("the enterprise `AccessToken`, for the default tenant (with a tenants "
                                      "document, each enterprise's `access_token` entry is used instead)")
    api_url: str = Field(default="https://api.mews.com",
                         description="Mews Connector API (`https://api.mews-demo.com` for the demo)")


class EntityRef(PayloadModel):
    Id: str = Field(min_length=1)


class WebhookEvent(PayloadModel):
    Discriminator: str
    Value: EntityRef | None = None


class GeneralWebhook(PayloadModel):
    EnterpriseId: str = Field(min_length=1)
    IntegrationId: str | None = None
    Events: list[WebhookEvent]


class MewsConnector(Connector, platform="mews", id_field="mewsId", settings=MewsSettings, secret="webhook_token"):

    def verify(self, request: WebhookRequest) -> None:
        self.query_token(request, "Token")

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
        settings: MewsSettings = self.platform_settings()
        access_token = context.credentials(self.name, event.account_id).get("access_token")
        if not access_token and context.tenant.owns_every_account:
            access_token = settings.access_token  # the default tenant's enterprises share MEWS_ACCESS_TOKEN
        if not settings.client_token or not access_token:
            raise PermanentError("Mews ClientToken or this enterprise's AccessToken is not configured")
        body = {
            "ClientToken": settings.client_token,
            "AccessToken": access_token,
            "Client": CLIENT_NAME,
            "Limitation": {"Count": 10},
            **filters,
        }
        url = f"{settings.api_url}/api/connector/v1/{operation}"
        response = send("POST", url, context.deadline, what=WHAT, json=body)
        items = answer_object(response, WHAT, key, list)
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
            # The guest's home (address) country, then nationality: the customer record names no venue country.
            phoneNumber=normalise_phone(guest.get("Phone"), *context.phone_regions(
                _address_country(guest.get("Address")), clean_text(guest.get("NationalityCode"), max_length=2))),
            # Options is Mews' explicit consent list: absent flag = no consent; no list = not stated.
            emailOptin=("SendMarketingEmails" in options) if isinstance(options, list) else None,
            mewsId=clean_text(guest.get("Id")),
            metadata=present(metadata),
        )


def _address_country(address: object) -> str | None:
    """The ISO 3166-1 alpha-2 ``CountryCode`` of the customer's ``Address``, when it has one."""
    code = clean_text(address.get("CountryCode"), max_length=2) if isinstance(address, dict) else None
    return code if code and len(code) == 2 and code.isalpha() else None
