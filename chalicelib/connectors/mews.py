"""Mews Connector API General Webhooks (``CustomerAdded``, ``CustomerUpdated``, ``ServiceOrderUpdated``).

Mews signs nothing: it adds the token we chose to our URL (``?Token=``). Events carry ids only, so the
customer (or the reservation, then its owner) is read from the Connector API with the app's
ClientToken and the enterprise's AccessToken; see docs/platforms.md (Mews).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

from pydantic import Field

from chalicelib import __version__
from chalicelib.connectors.base import Connector, Context, Event, ParsedWebhook, SweepWindow, WebhookRequest
from chalicelib.connectors.payload import PayloadModel, load_json, validate
from chalicelib.connectors.shared import answer_object, present
from chalicelib.core.errors import Held, PermanentError, RetryableError
from chalicelib.core.normalise import clean_text, display_name, language_code, normalise_email, normalise_phone
from chalicelib.domain.fullwhere.models import CustomerImport
from chalicelib.infra.http import send
from chalicelib.infra.settings import SettingsModel, secret, sweep_accounts_setting, sweep_minutes_setting

CUSTOMER_EVENTS = ("CustomerAdded", "CustomerUpdated")
RESERVATION_EVENTS = ("ServiceOrderUpdated",)
WHAT = "Mews API"
CLIENT_NAME = f"FullwhereBridge {__version__}"

# customers/getAll's documented limits: "Count 1-1000"; each of CreatedUtc/UpdatedUtc/DeletedUtc "max length 3
# months" (89 days: the shortest three months in a row, so no window is refused whatever its dates).
PAGE_SIZE = 1000
MAX_INTERVAL = timedelta(days=89)

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
    sweep_minutes: int | None = sweep_minutes_setting("Mews")
    sweep_accounts: str | None = sweep_accounts_setting("Mews", "enterprise ids (`EnterpriseId`)")


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
    sweep_max_interval = MAX_INTERVAL

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
        listed = event.data.get("customer")
        if isinstance(listed, dict) and not listed.get("MergeTargetId"):
            return listed  # a sweep listed the customer as it is now: no need to read it again
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
        items, _ = self._call(operation, key, context, event.account_id, {"Count": 10}, **filters)
        return next((item for item in items if isinstance(item, dict)), None)

    def _tokens(self, context: Context, account_id: str | None) -> dict[str, str]:
        settings: MewsSettings = self.platform_settings()
        access_token = context.credentials(self.name, account_id).get("access_token")
        if not access_token and context.tenant.owns_every_account:
            access_token = settings.access_token  # the default tenant's enterprises share MEWS_ACCESS_TOKEN
        if not settings.client_token or not access_token:
            raise Held("Mews ClientToken or this enterprise's AccessToken is not configured", "not_configured")
        return {"ClientToken": settings.client_token, "AccessToken": access_token, "Client": CLIENT_NAME}

    def _call(self, operation: str, key: str, context: Context, account_id: str | None, limitation: dict[str, Any],
              **filters: Any) -> tuple[list[Any], str | None]:
        """One page of a getAll operation: its items and the answer's Cursor."""
        body = {**self._tokens(context, account_id), "Limitation": limitation, **filters}
        url = f"{self.platform_settings().api_url}/api/connector/v1/{operation}"
        response = send("POST", url, context.deadline, what=WHAT, json=body)
        answer = answer_object(response, WHAT)
        items = answer.get(key)
        if not isinstance(items, list):
            raise RetryableError(f"{WHAT} answered 2xx without {key}")
        cursor = answer.get("Cursor")
        return items, cursor if isinstance(cursor, str) and cursor else None

    def _list(self, context: Context, account_id: str, **filters: Any) -> Iterator[dict[str, Any]]:
        """Every customer customers/getAll returns for ``filters``, page by page (newest first: each answer's
        Cursor names its oldest item, and the next page starts after it)."""
        cursor: str | None = None
        while True:
            limitation = {"Count": PAGE_SIZE, **({"Cursor": cursor} if cursor else {})}
            items, next_cursor = self._call("customers/getAll", "Customers", context, account_id, limitation,
                                            Extent={"Customers": True, "Addresses": False}, **filters)
            yield from (item for item in items if isinstance(item, dict) and isinstance(item.get("Id"), str))
            if len(items) < PAGE_SIZE or next_cursor is None or next_cursor == cursor:
                return
            cursor = next_cursor

    def sweep(self, account_id: str, window: SweepWindow, context: Context) -> Iterator[Event]:
        """The customers of enterprise ``account_id`` updated within ``window`` (customers/getAll by UpdatedUtc,
        1,000 a page), each as the ``CustomerUpdated`` event the webhook sends for it (``CustomerAdded`` when it
        was created within the window), carrying the listed customer. Customers erased since (``DeletedUtc``
        within the window, or no longer active) are never yielded: a sweep must not bring back an erased guest."""
        self._tokens(context, account_id)  # no credentials: Held before anything is listed
        return self._sweep(account_id, window, context)

    def _sweep(self, account_id: str, window: SweepWindow, context: Context) -> Iterator[Event]:
        interval = {"StartUtc": _utc(window.since), "EndUtc": _utc(window.until, up=True)}
        # Listed first, so a guest erased while the window was read is not imported from the other list.
        erased = {customer["Id"] for customer in self._list(context, account_id, DeletedUtc=interval,
                                                                 ActivityStates=["Deleted"])}
        for customer in self._list(context, account_id, UpdatedUtc=interval, ActivityStates=["Active"]):
            customer_id = customer["Id"]
            if customer_id in erased or customer.get("IsActive") is False or customer.get("ActivityState") == "Deleted":
                continue
            created = _parse_utc(customer.get("CreatedUtc"))
            kind = "CustomerAdded" if created is not None and created >= window.since else "CustomerUpdated"
            yield Event(
                event_id=f"{account_id}/{kind}/{customer_id}",
                kind=kind,
                account_id=account_id,
                data={"customer_id": customer_id, "customer": customer},
                guest_key=f"customer:{customer_id}",
            )

    def check_credentials(self, account_id: str | None, context: Context) -> str | None:
        # configuration/get: the cheapest call, and it names the enterprise the AccessToken opens, which
        # must be the one the tenants document lists it under.
        body = self._tokens(context, account_id)
        response = send("POST", f"{self.platform_settings().api_url}/api/connector/v1/configuration/get",
                        context.deadline, what=WHAT, json=body)
        enterprise = answer_object(response, WHAT, "Enterprise").get("Id")
        if account_id and account_id != "*" and enterprise != account_id:
            raise Held(f"this AccessToken opens enterprise {str(enterprise)[:64]!r}, not {account_id!r}",
                       "credentials_rejected")
        return f"the ClientToken and AccessToken open enterprise {str(enterprise)[:64]}"

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


def _utc(moment: datetime, up: bool = False) -> str:
    """Whole seconds, as Mews writes times: rounded down, or ``up`` (a window is only ever widened)."""
    if up and moment.microsecond:
        moment += timedelta(seconds=1)
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_utc(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
