"""TheFork Manager B2B API webhooks (customer and reservation events, created or updated).

TheFork signs nothing: the URL we give it carries a token we generate (``?token=``). Webhooks carry ids
only, so the customer (or the reservation, then its customer) is read from the B2B API with an Auth0
client-credentials token, kept for its whole life because TheFork asks not to renew early. Sources,
mapping and judgement calls: docs/platforms.md (TheFork).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from pydantic import Field

from chalicelib.connectors.base import Connector, Context, Event, ParsedWebhook, SweepWindow, WebhookRequest
from chalicelib.connectors.payload import PayloadModel, load_json, validate
from chalicelib.connectors.shared import answer_object, path_segment, present
from chalicelib.core.errors import Held, PermanentError, RetryableError, malformed
from chalicelib.core.normalise import clean_text, display_name, language_code, normalise_email, normalise_phone
from chalicelib.domain.fullwhere.models import CustomerImport
from chalicelib.domain.tenants import Tenant, lends_settings
from chalicelib.infra.http import Deadline, send
from chalicelib.infra.settings import SettingsModel, secret, sweep_accounts_setting, sweep_minutes_setting
from chalicelib.infra.tokens import TokenCache, request_client_credentials

# eventType → the entity it is about (and the API collection to fetch it from).
IMPORTED_EVENTS = {
    "customerCreated": "customer",
    "customerUpdated": "customer",
    "reservationCreated": "reservation",
    "reservationUpdated": "reservation",
}
AUDIENCE = "https://api.thefork.io"
WHAT = "TheFork API"
# TheFork ids are UUIDs; anything else in a URL path (slashes, dots) is refused.
UUID_PATTERN = r"^[0-9A-Za-z][0-9A-Za-z-]{0,63}$"
_UUID = re.compile(UUID_PATTERN)
# Sweeps list a group's customers "created or updated between two dates" [S], then each is fetched as its webhook
# would be (docs/platforms.md, TheFork, "Sweep"). The page size asked for (the API allows up to 10000, default 100),
# and how many pages one window may take before it is a loop.
SWEEP_PAGE_SIZE = 1000
SWEEP_MAX_PAGES = 200
# The dates are whole days in a time zone TheFork does not state: a window's first day is taken 12 hours earlier
# (a restaurant west of UTC may date it a day before) and its last day one day later (ahead of UTC, or an
# exclusive endDate), so that no time zone's day is left out [I].
SWEEP_DAY_BEFORE = timedelta(hours=12)
SWEEP_DAY_AFTER = timedelta(days=1)

# TheFork's civility codes (enum of the booking request body; the customer object leaves the values
# undocumented) → Fullwhere's style ("e.g., Mr., Ms."). Others (mr_and_mrs: two people; company; titles
# such as ambassador or duchess) are left null rather than guessed.
CIVILITIES = {
    "mr": "Mr.",
    "mrs": "Mrs.",
    "ms": "Ms.",
    "mx": "Mx.",
    "doctor": "Dr.",
    "dr": "Dr.",
    "professor": "Prof.",
}


class TheForkSettings(SettingsModel):
    env_prefix, title = "THEFORK_", "TheFork"

    webhook_token: str | None = secret("the token you generated and put in the webhook URL given to TheFork "
                                       "(`?token=`)")
    client_id: str | None = Field(default=None, description="the B2B API client id TheFork sends you (Auth0 client "
                                  "credentials), for the default tenant only; a tenant's account entry carries its "
                                  "own `client_id`")
    client_secret: str | None = secret("the B2B API client secret, with `THEFORK_CLIENT_ID`; a tenant's account "
                                       "entry carries its own `client_secret`")
    api_url: str = Field(default="https://api.thefork.io/manager",
                         description="TheFork B2B API (customers and reservations are read there)")
    auth_url: str = Field(default="https://auth.thefork.io", description="TheFork's token endpoint (`/oauth/token`)")
    sweep_minutes: int | None = sweep_minutes_setting("TheFork")
    sweep_accounts: str | None = sweep_accounts_setting("TheFork", "group uuids (`groupUuid`, read with "
                                                        "`THEFORK_CLIENT_ID`)")


class Notification(PayloadModel):
    entityType: str = Field(min_length=1)
    eventType: str = Field(min_length=1)
    uuid: str = Field(pattern=UUID_PATTERN)
    groupUuid: str | None = None
    restaurantUuid: str | None = None


class TheForkConnector(Connector, platform="thefork", id_field="theForkId",
                       settings=TheForkSettings, secret="webhook_token"):
    ack_body = '{"data":{}}'
    ack_content_type = "application/json"

    def verify(self, request: WebhookRequest) -> None:
        self.query_token(request, "token")

    def parse(self, request: WebhookRequest) -> ParsedWebhook:
        notification = validate(Notification, load_json(request.body), "TheFork webhook")
        entity = IMPORTED_EVENTS.get(notification.eventType)
        if entity is None:
            return ParsedWebhook(events=[], ignored=[f"{notification.entityType}:{notification.eventType}"])
        if notification.entityType.lower() != entity:
            raise malformed(f"TheFork webhook: entityType {notification.entityType[:40]!r} does not match "
                            f"eventType {notification.eventType!r}")
        group = clean_text(notification.groupUuid, max_length=64)
        restaurant = clean_text(notification.restaurantUuid, max_length=64)
        event = Event(
            event_id=f"{entity}/{notification.eventType}/{notification.uuid}",
            kind=notification.eventType,
            account_id=restaurant or group,
            data={"entity": entity, "uuid": notification.uuid, "groupUuid": group, "restaurantUuid": restaurant},
            guest_key=f"{entity}:{notification.uuid}",
        )
        return ParsedWebhook(events=[event])

    def fetch(self, event: Event, context: Context) -> dict[str, Any] | None:
        client = _Client(self.platform_settings(), context.deadline, context.credentials(self.name, event.account_id))
        if event.data["entity"] == "reservation":
            reservation = client.get("reservations", event.data["uuid"])
            customer_uuid = reservation.get("customerUuid")
            if not customer_uuid:
                return None  # a walk-in: no customer record behind the reservation
            if not isinstance(customer_uuid, str) or not _UUID.match(customer_uuid):
                raise PermanentError(f"{WHAT} gave a reservation whose customerUuid is not a uuid")
            customer = client.get("customers", customer_uuid)
            return {"customer": customer, "customer_uuid": customer_uuid, "reservation": {
                key: reservation.get(key)
                for key in ("reservationUuid", "restaurantUuid", "status", "reservationChannel")
            }}
        return {"customer": client.get("customers", event.data["uuid"]), "customer_uuid": event.data["uuid"]}

    def check_credentials(self, account_id: str | None, context: Context) -> str | None:
        # A token of the client this account's events are fetched with (TheFork would rather we kept tokens:
        # a check is a rare, deliberate act).
        client = _Client(self.platform_settings(), context.deadline, context.credentials(self.name, account_id))
        client._request_token()
        return "the B2B API client got a token"

    def map(self, guest: dict[str, Any], event: Event, context: Context) -> CustomerImport:
        customer = guest.get("customer") if isinstance(guest.get("customer"), dict) else {}
        reservation = guest.get("reservation") if isinstance(guest.get("reservation"), dict) else {}
        first_name = clean_text(customer.get("firstName"))
        last_name = clean_text(customer.get("lastName"))
        locale = clean_text(customer.get("locale"), max_length=20)
        optins = customer.get("optins")
        metadata = {
            "source": "thefork",
            "theForkGroupUuid": event.data.get("groupUuid"),
            "theForkRestaurantUuid": clean_text(reservation.get("restaurantUuid")) or event.data.get("restaurantUuid"),
            "theForkOriginRestaurantUuid": clean_text(customer.get("originRestaurantUuid")),
            "theForkReservationUuid": clean_text(reservation.get("reservationUuid")),
            "theForkReservationStatus": clean_text(reservation.get("status")),
            "theForkReservationChannel": clean_text(reservation.get("reservationChannel")),
            "theForkVip": "true" if customer.get("isVip") is True else None,
        }
        return CustomerImport(
            firstName=first_name,
            lastName=last_name,
            displayName=display_name(first_name, last_name),
            civility=civility(customer.get("civility")),
            language=language_code(locale),
            email=normalise_email(customer.get("email")),
            # The guest's address country, then the locale's (fr_FR → FR), before the tenant's region: the
            # customer and reservation name no restaurant country (their currencies are null in the example).
            phoneNumber=normalise_phone(customer.get("phone"), *context.phone_regions(
                clean_text(customer.get("country"), max_length=2), locale_region(locale))),
            # restaurantNewsletter defaults to false and a false "will not unsubscribe the diner": only true
            # states consent. No SMS consent is documented on the customer object.
            emailOptin=True if isinstance(optins, dict) and optins.get("restaurantNewsletter") is True else None,
            theForkId=clean_text(customer.get("customerUuid")) or clean_text(guest.get("customer_uuid")),
            metadata=present(metadata),
        )


    # -- the sweep -----------------------------------------------------------------------------------
    def sweep_accounts(self, tenant: Tenant) -> list[str]:
        # Customers are listed by group: a restaurant's entry that names its group (`group_uuid`) is left out,
        # its guests being listed with the group's own entry.
        accounts = super().sweep_accounts(tenant)
        if tenant.owns_every_account:
            return accounts
        return [account for account in accounts
                if (tenant.credentials(self.name, account).get("group_uuid") or account) == account]

    def sweep(self, account_id: str, window: SweepWindow, context: Context) -> Iterator[Event] | None:
        """The customers of a group created or updated within ``window`` (whole days, widened: see
        :data:`SWEEP_DAY_BEFORE`), from ``GET /v1/customers?groupUuid&startDate&endDate`` [S], each as a
        ``customerUpdated`` webhook names it, so that :meth:`fetch` reads it with this group's own client."""
        return self._sweep(account_id, window, context)

    def _sweep(self, account_id: str, window: SweepWindow, context: Context) -> Iterator[Event]:
        client = _Client(self.platform_settings(), context.deadline, context.credentials(self.name, account_id))
        if not _UUID.match(account_id):
            raise Held(f"TheFork account {account_id[:64]!r} is not a group uuid: its customers cannot be listed",
                       "not_configured")
        params = {"groupUuid": account_id,
                  "startDate": (window.since - SWEEP_DAY_BEFORE).date().isoformat(),
                  "endDate": (window.until + SWEEP_DAY_AFTER).date().isoformat(),
                  "limit": str(SWEEP_PAGE_SIZE)}
        for page in range(1, SWEEP_MAX_PAGES + 1):
            client.deadline = context.deadline  # the sweep run gives each batch of listed guests a fresh one
            body = client.list_page("customers", {**params, "page": str(page)})
            uuids = body.get("data")
            if not isinstance(uuids, list):
                raise RetryableError(f"{WHAT} answered a customers list without data")
            for uuid in dict.fromkeys(uuid for uuid in uuids if isinstance(uuid, str) and _UUID.match(uuid)):
                yield Event(
                    event_id=f"customer/customerUpdated/{uuid}",
                    kind="customerUpdated",
                    account_id=account_id,
                    data={"entity": "customer", "uuid": uuid, "groupUuid": account_id, "restaurantUuid": None},
                    guest_key=f"customer:{uuid}",
                )
            total = body.get("totalCount")
            counted = isinstance(total, (int, float)) and not isinstance(total, bool)
            if len(uuids) < SWEEP_PAGE_SIZE or (counted and page * SWEEP_PAGE_SIZE >= total):
                return
        raise RetryableError(f"{WHAT} listed more than {SWEEP_MAX_PAGES} pages of customers in one window")


def civility(value: object) -> str | None:
    text = clean_text(value, max_length=40)
    return CIVILITIES.get(text.lower().rstrip(".")) if text else None


def locale_region(locale: str | None) -> str | None:
    """``fr_FR`` → ``FR`` (TheFork's locale pattern is ``^([a-z]{2,3})(?:_([A-Z]{2}))?$``)."""
    match = re.fullmatch(r"[A-Za-z]{2,3}[-_]([A-Za-z]{2})", locale or "")
    return match.group(1).upper() if match else None


class _Client:
    """GETs on the B2B API with the cached bearer token of the credentials in use."""

    def __init__(self, settings: TheForkSettings, deadline: Deadline, account_credentials: dict[str, str]):
        self.deadline = deadline
        self.api_url = settings.api_url
        self.auth_url = settings.auth_url
        # An account's own API client from the tenants document; the settings' one only for the default tenant
        # (a named tenant's guests are never fetched with the deployment's client, which may see others').
        lent = lends_settings(account_credentials)
        self.client_id = account_credentials.get("client_id") or (settings.client_id if lent else None)
        self.client_secret = account_credentials.get("client_secret") or (settings.client_secret if lent else None)
        if not self.client_id or not self.client_secret:
            raise Held("TheFork client id or secret not configured" + (
                "" if lent else " (this account's client_id/client_secret in the tenants document)"), "not_configured")

    def get(self, collection: str, uuid: str) -> dict[str, Any]:
        url = f"{self.api_url}/v1/{collection}/{path_segment(uuid, f'TheFork {collection[:-1]} uuid')}"
        response = _tokens.authorised(
            (self.auth_url, self.client_id),
            self._request_token,
            lambda token: send("GET", url, self.deadline, what=WHAT,
                               headers={"Authorization": f"Bearer {token}", "Accept": "application/json"}),
            refused=f"{WHAT} refused a fresh token (401): check the client's access to this restaurant",
        )
        return answer_object(response, WHAT)

    def list_page(self, collection: str, params: dict[str, str]) -> dict[str, Any]:
        """One page of a list call (``GET /v1/customers?...``): ``{"data": [uuids], "totalCount", "page", "limit"}``."""
        url = f"{self.api_url}/v1/{collection}"
        response = _tokens.authorised(
            (self.auth_url, self.client_id),
            self._request_token,
            lambda token: send("GET", url, self.deadline, what=WHAT, params=params,
                               headers={"Authorization": f"Bearer {token}", "Accept": "application/json"}),
            refused=f"{WHAT} refused a fresh token (401): check the client's access to this group",
        )
        return answer_object(response, WHAT)

    def _request_token(self) -> tuple[str, float]:
        # Form-encoded, as in TheFork's own example (curl -d 'audience=...'); a token lives 8600 s.
        return request_client_credentials(
            f"{self.auth_url}/oauth/token", self.deadline, what="TheFork token endpoint",
            form={"audience": AUDIENCE, "grant_type": "client_credentials",
                  "client_id": self.client_id, "client_secret": self.client_secret},
            default_lifetime=8600.0)


# TheFork asks not to request a token before the previous one expires: renew one minute before.
_tokens = TokenCache(margin_seconds=60)
